//! The control socket: where it is, connecting to it, and the one framed request and
//! one framed response exchanged per connection.
//!
//! All platform-specific code of the CLI lives here, except `autostart` (the Windows Run
//! key); on Windows that includes checking who serves the pipe (`filesync-winuser`). A
//! frame is a 4-byte big-endian length and a payload made by
//! [`filesync_proto::control::encode`]; an answer longer than [`MAX_CONTROL_FRAME`] is
//! refused from its length alone, before any allocation.

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use filesync_proto::control::{self, EnvelopeError, Request, Response};
use filesync_proto::{FrameError, MAX_CONTROL_FRAME};
use interprocess::local_socket::GenericFilePath;
use interprocess::local_socket::tokio::{Stream, prelude::*};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// How long the daemon may take to accept a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the daemon may take to answer an ordinary request.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// The daemon could not be reached at all; the CLI exits with code 3 for these.
#[derive(Debug, thiserror::Error)]
pub enum Unreachable {
    #[error("the filesync daemon is not running (no control socket at {})", path.display())]
    NotRunning {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot connect to the filesync daemon's control socket at {}", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the filesync daemon did not accept a connection on {} within {}",
        path.display(),
        humantime::format_duration(CONNECT_TIMEOUT)
    )]
    Timeout { path: PathBuf },
    /// On Unix the socket's owner and its directory are not this user's; on Windows the
    /// process serving the pipe runs as another user.
    #[error("refusing the control socket at {}: {why}", path.display())]
    Untrusted { path: PathBuf, why: String },
}

impl Unreachable {
    /// What the user can do about it, printed under the error.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Unreachable::NotRunning { .. } => Some(START_HINT),
            Unreachable::Connect { source, .. }
                if source.kind() == io::ErrorKind::PermissionDenied =>
            {
                Some("the socket belongs to another user: run filesyncctl as that user")
            }
            Unreachable::Connect { .. } => None,
            Unreachable::Timeout { .. } => {
                Some("the daemon may be stuck; its log says more (run it with FILESYNC_LOG=debug)")
            }
            Unreachable::Untrusted { .. } => Some(UNTRUSTED_HINT),
        }
    }
}

/// What to do about a control socket that another user may be serving.
#[cfg(unix)]
const UNTRUSTED_HINT: &str = "another user may be listening there to read what you send (a \
     token) and answer for your daemon; remove that socket or directory, or set \
     XDG_RUNTIME_DIR or --socket to your own";
#[cfg(windows)]
const UNTRUSTED_HINT: &str = "another user's program holds that pipe name and could read what \
     you send (a token) and answer for your daemon; stop it, or give your daemon another \
     pipe (daemon.control_socket) and pass it with --socket";

/// How to start the daemon, for a user who found it not running.
#[cfg(unix)]
const START_HINT: &str = "start it with `systemctl --user start filesyncd` or `filesyncd`";
#[cfg(windows)]
const START_HINT: &str = "start it with `filesyncd`";

/// The socket path: `--socket`, else a non-empty `$FILESYNC_SOCKET`, else the
/// protocol's default for this user.
pub fn socket_path(flag: Option<PathBuf>) -> PathBuf {
    resolve_socket_path(
        flag,
        std::env::var_os("FILESYNC_SOCKET"),
        default_socket_path,
    )
}

fn resolve_socket_path(
    flag: Option<PathBuf>,
    env: Option<OsString>,
    default: impl FnOnce() -> PathBuf,
) -> PathBuf {
    flag.or_else(|| env.filter(|v| !v.is_empty()).map(PathBuf::from))
        .unwrap_or_else(default)
}

#[cfg(unix)]
fn default_socket_path() -> PathBuf {
    let xdg_runtime_dir = std::env::var("XDG_RUNTIME_DIR").ok();
    control::default_socket_path(xdg_runtime_dir.as_deref(), current_uid())
}

/// `\\.\pipe\filesync-USERNAME`.
#[cfg(windows)]
fn default_socket_path() -> PathBuf {
    control::default_pipe_path(&std::env::var("USERNAME").unwrap_or_default())
}

#[cfg(unix)]
fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Talks to the daemon at one socket path, one connection per request.
pub struct Client {
    path: PathBuf,
}

impl Client {
    pub fn new(path: PathBuf) -> Client {
        Client { path }
    }

    /// Sends `request` on a new connection and reads the one response. Connecting is
    /// bounded by [`CONNECT_TIMEOUT`]; sending and waiting for the answer by
    /// `response_timeout`, or not at all when it is `None`.
    pub async fn call(
        &self,
        request: &Request,
        response_timeout: Option<Duration>,
    ) -> Result<Response> {
        let mut answer = None;
        self.stream(request, response_timeout, |response| {
            answer = Some(response);
            Ok(false)
        })
        .await?;
        answer.context("the daemon closed the connection without answering")
    }

    /// Sends `request` and hands every answer frame to `each` until it returns `false`
    /// or fails. The whole exchange is bounded by `limit` when there is one.
    pub async fn stream(
        &self,
        request: &Request,
        limit: Option<Duration>,
        mut each: impl FnMut(Response) -> Result<bool>,
    ) -> Result<()> {
        let frame = encode_frame(request)?;
        let mut stream = self.connect().await?;
        let exchange = async {
            stream
                .write_all(&frame)
                .await
                .context("cannot send the request to the daemon")?;
            while each(decode_response(&read_frame(&mut stream).await?)?)? {}
            Ok(())
        };
        match limit {
            Some(limit) => tokio::time::timeout(limit, exchange).await.map_err(|_| {
                anyhow!(
                    "the daemon did not answer within {}",
                    humantime::format_duration(limit)
                )
            })?,
            None => exchange.await,
        }
    }

    async fn connect(&self) -> Result<Stream, Unreachable> {
        check_socket(&self.path)?;
        let connect_error = |source| Unreachable::Connect {
            path: self.path.clone(),
            source,
        };
        let name = self
            .path
            .as_path()
            .to_fs_name::<GenericFilePath>()
            .map_err(connect_error)?;
        match tokio::time::timeout(CONNECT_TIMEOUT, Stream::connect(name)).await {
            Ok(Ok(stream)) => check_server(&self.path, stream),
            Ok(Err(source)) if is_not_running(&source) => Err(Unreachable::NotRunning {
                path: self.path.clone(),
                source,
            }),
            Ok(Err(source)) => Err(connect_error(source)),
            Err(_) => Err(Unreachable::Timeout {
                path: self.path.clone(),
            }),
        }
    }
}

/// Refuses a socket that someone other than this user or root could have put there: the
/// socket itself (never followed if a link) owned by another user, or its directory owned
/// by another user or writable by others. Without `XDG_RUNTIME_DIR` the socket is in
/// `/tmp/filesync-UID`, a name any local user can take first. A path with nothing there
/// is left to `connect`, which says the daemon is not running.
#[cfg(unix)]
fn check_socket(path: &std::path::Path) -> Result<(), Unreachable> {
    use std::os::unix::fs::MetadataExt;
    let untrusted = |why: String| Unreachable::Untrusted {
        path: path.to_owned(),
        why,
    };
    let Ok(socket) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = std::fs::metadata(dir.unwrap_or(std::path::Path::new(".")))
        .map_err(|e| untrusted(format!("cannot look at its directory: {e}")))?;
    let owners = Owners {
        me: current_uid(),
        socket: socket.uid(),
        dir: dir.uid(),
        dir_mode: dir.mode(),
    };
    owners.check().map_err(untrusted)
}

#[cfg(not(unix))]
fn check_socket(_path: &std::path::Path) -> Result<(), Unreachable> {
    Ok(())
}

/// On Unix the socket was checked before connecting ([`check_socket`]).
#[cfg(unix)]
fn check_server(_path: &std::path::Path, stream: Stream) -> Result<Stream, Unreachable> {
    Ok(stream)
}

/// Refuses a pipe whose server process does not run as this user, before anything is
/// sent on it: a pipe name is first come, first served, so another user could create it
/// while the daemon is not running.
#[cfg(windows)]
fn check_server(path: &std::path::Path, stream: Stream) -> Result<Stream, Unreachable> {
    use filesync_winuser::{Owner, owner_of};
    let untrusted = |why: String| Unreachable::Untrusted {
        path: path.to_owned(),
        why,
    };
    let pid = stream
        .peer_creds()
        .map_err(|e| untrusted(format!("cannot ask which process serves it: {e}")))?
        .pid()
        .ok_or_else(|| untrusted("the pipe names no server process".to_owned()))?;
    match owner_of(pid) {
        Ok(Owner::Me) => Ok(stream),
        Ok(Owner::System | Owner::Other) => Err(untrusted(format!(
            "it is served by process {pid}, which runs as another user"
        ))),
        Err(e) => Err(untrusted(format!(
            "cannot tell which user runs process {pid}, which serves it: {e}"
        ))),
    }
}

/// Who owns a control socket and its directory, and who this user is.
#[cfg_attr(not(unix), allow(dead_code))]
struct Owners {
    me: u32,
    socket: u32,
    dir: u32,
    dir_mode: u32,
}

#[cfg_attr(not(unix), allow(dead_code))]
impl Owners {
    /// The socket and its directory must be this user's or root's, and the directory
    /// writable by its owner alone.
    fn check(&self) -> Result<(), String> {
        let trusted = |uid: u32| uid == self.me || uid == 0;
        if !trusted(self.socket) {
            return Err(format!("it belongs to user {}, not to you", self.socket));
        }
        if !trusted(self.dir) {
            return Err(format!(
                "its directory belongs to user {}, not to you",
                self.dir
            ));
        }
        if self.dir_mode & 0o022 != 0 {
            return Err(format!(
                "other users can write to its directory (mode {:o})",
                self.dir_mode & 0o7777
            ));
        }
        Ok(())
    }
}

/// No socket file, or a stale one nobody listens on: both mean no daemon.
fn is_not_running(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
    )
}

fn encode_frame(request: &Request) -> Result<Vec<u8>> {
    let payload = control::encode(request);
    if payload.len() > MAX_CONTROL_FRAME {
        return Err(FrameError::TooLarge {
            len: payload.len(),
            max: MAX_CONTROL_FRAME,
        })
        .context("the request is too large to send");
    }
    // The check above keeps the length well inside a u32.
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&payload);
    Ok(frame)
}

async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Vec<u8>> {
    let mut prefix = [0u8; 4];
    match reader.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            bail!("the daemon closed the connection without answering (its log may say why)")
        }
        Err(e) => return Err(e).context("cannot read the daemon's answer"),
    }
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_CONTROL_FRAME {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_CONTROL_FRAME,
        })
        .context("the daemon's answer was refused");
    }
    let mut payload = vec![0u8; len];
    match reader.read_exact(&mut payload).await {
        Ok(_) => Ok(payload),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            Err(FrameError::Truncated).context("the daemon's answer was cut short")
        }
        Err(e) => Err(e).context("cannot read the daemon's answer"),
    }
}

fn decode_response(payload: &[u8]) -> Result<Response> {
    match control::decode::<Response>(payload) {
        Ok(response) => Ok(response),
        // Named here rather than through EnvelopeError's text, which is worded from the
        // daemon's side of the socket.
        Err(EnvelopeError::Version { ours, theirs }) => bail!(
            "control protocol mismatch: filesyncctl speaks version {ours}, the daemon speaks \
             version {theirs}; restart filesyncd after an upgrade, or use the filesyncctl \
             installed with it"
        ),
        Err(e) => Err(e).context("the daemon's answer could not be read"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket and directory of this user or root, private: trusted; anyone else's,
    /// or a directory others can write to: refused with the reason.
    #[test]
    fn only_own_or_roots_private_sockets_are_trusted() {
        let check = |socket, dir, dir_mode| {
            Owners {
                me: 1000,
                socket,
                dir,
                dir_mode,
            }
            .check()
        };
        assert_eq!(check(1000, 1000, 0o40700), Ok(()));
        assert_eq!(check(0, 0, 0o40755), Ok(()));
        assert_eq!(check(1000, 0, 0o40700), Ok(()));
        for (socket, dir, mode, why) in [
            (1001, 1000, 0o40700, "belongs to user 1001"),
            (1000, 1001, 0o40700, "directory belongs to user 1001"),
            (1000, 1000, 0o40777, "mode 777"),
            (1000, 0, 0o41777, "mode 1777"),
            (1000, 1000, 0o40770, "mode 770"),
        ] {
            let err = check(socket, dir, mode).unwrap_err();
            assert!(err.contains(why), "{socket} {dir} {mode:o}: {err}");
        }
    }
    use filesync_proto::control::{CONTROL_VERSION, ControlErrorKind};
    use std::path::Path;

    #[test]
    fn socket_path_precedence() {
        let check = |flag: Option<&str>, env: Option<&str>, xdg: Option<&str>, want: &str| {
            let got = resolve_socket_path(flag.map(PathBuf::from), env.map(OsString::from), || {
                control::default_socket_path(xdg, 1000)
            });
            assert_eq!(
                got,
                Path::new(want),
                "flag {flag:?} env {env:?} xdg {xdg:?}"
            );
        };
        check(
            Some("/a.sock"),
            Some("/b.sock"),
            Some("/run/user/1000"),
            "/a.sock",
        );
        check(None, Some("/b.sock"), Some("/run/user/1000"), "/b.sock");
        check(
            None,
            Some(""),
            Some("/run/user/1000"),
            "/run/user/1000/filesync/filesyncd.sock",
        );
        check(
            None,
            None,
            Some("/run/user/1000"),
            "/run/user/1000/filesync/filesyncd.sock",
        );
        check(None, None, None, "/tmp/filesync-1000/filesyncd.sock");
    }

    async fn read_bytes(bytes: &[u8]) -> Result<Vec<u8>> {
        let mut reader = bytes;
        read_frame(&mut reader).await
    }

    #[tokio::test]
    async fn frames_round_trip() {
        let request = Request::Status {
            folder: Some("docs".into()),
        };
        let frame = encode_frame(&request).unwrap();
        let payload = read_bytes(&frame).await.unwrap();
        assert_eq!(control::decode::<Request>(&payload).unwrap(), request);
    }

    #[tokio::test]
    async fn bad_frames_are_refused() {
        let check = |bytes: Vec<u8>, want: &'static str| async move {
            let err = read_bytes(&bytes).await.expect_err("must be refused");
            let text = format!("{err:#}");
            assert!(text.contains(want), "{bytes:?} gave {text}");
        };
        // An announced length above the limit is refused without reading further.
        check(u32::MAX.to_be_bytes().to_vec(), "larger than the limit").await;
        let over = (MAX_CONTROL_FRAME as u32 + 1).to_be_bytes().to_vec();
        check(over, "larger than the limit").await;
        check(vec![], "without answering").await;
        check(vec![0, 0], "without answering").await;
        check(vec![0, 0, 0, 9, 1, 2], "cut short").await;
    }

    #[test]
    fn responses_decode_and_versions_are_named_from_our_side() {
        let ok = Response::Error {
            kind: ControlErrorKind::Failed,
            message: "no".into(),
        };
        assert_eq!(decode_response(&control::encode(&ok)).unwrap(), ok);
        let mut newer = control::encode(&ok);
        newer[0] = (CONTROL_VERSION + 1) as u8;
        let text = decode_response(&newer).unwrap_err().to_string();
        let want = format!(
            "filesyncctl speaks version {CONTROL_VERSION}, the daemon speaks version {}",
            CONTROL_VERSION + 1
        );
        assert!(text.contains(&want), "{text}");
        let text = format!(
            "{:#}",
            decode_response(&[CONTROL_VERSION as u8, 0x7f]).unwrap_err()
        );
        assert!(text.contains("could not be read"), "{text}");
    }

    #[tokio::test]
    async fn a_missing_socket_means_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none.sock");
        let err = Client::new(path.clone())
            .call(&Request::Reload, Some(RESPONSE_TIMEOUT))
            .await
            .unwrap_err();
        let unreachable = err.downcast_ref::<Unreachable>().expect("unreachable");
        assert!(matches!(unreachable, Unreachable::NotRunning { .. }));
        assert!(unreachable.hint().is_some());
        assert!(err.to_string().contains(&path.display().to_string()));
    }
}
