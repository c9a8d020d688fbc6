//! The local control socket: one framed request in, one framed response out.
//!
//! All platform-specific socket code is here. On Unix the socket's directory is made
//! 0700 (an existing one must belong to the daemon's user and be writable by nobody
//! else) and the socket 0600, so only the daemon's user can reach it; on top of that
//! every connection's peer uid (SO_PEERCRED) must be the daemon's own or root. A live
//! socket at the path means another daemon is running, a dead one is stale and
//! replaced, and anything else there (a symbolic link, a file) stops the start. On
//! Windows the channel is a named pipe, `\\.\pipe\filesync-USERNAME` by default; a pipe
//! that answers means another daemon is running. The pipe admits only its owner and
//! SYSTEM ([`owner_only`]), and each client's process must run as the daemon's user or
//! SYSTEM (`filesync-winuser`); `filesyncctl` checks the other way round that the pipe
//! is served by its own user.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use filesync_proto::MAX_CONTROL_REQUEST;
use filesync_proto::control::{self, Request, Response};
use interprocess::local_socket::tokio::{Listener, Stream, prelude::*};
use interprocess::local_socket::{GenericFilePath, ListenerOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::events::{self, Events};
use crate::lifecycle::web::Sessions;
use crate::supervisor::{ControlCmd, bad, failed};

/// A client that has not sent its whole request by then is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// At most this many control connections are served at once (an `events --follow` holds
/// one for as long as it runs); further ones wait in the socket's backlog.
const MAX_CONNECTIONS: usize = 64;
/// How long a refused peer's request is drained before the connection is closed.
const REFUSED_DRAIN: Duration = Duration::from_secs(2);

/// The control socket's path when neither `--socket` nor the config names one.
#[cfg(unix)]
pub fn default_path() -> PathBuf {
    control::default_socket_path(
        std::env::var("XDG_RUNTIME_DIR").ok().as_deref(),
        nix::unistd::geteuid().as_raw(),
    )
}

/// `\\.\pipe\filesync-USERNAME`.
#[cfg(windows)]
pub fn default_path() -> PathBuf {
    control::default_pipe_path(&std::env::var("USERNAME").unwrap_or_default())
}

/// Binds the control socket at `path`, refusing to start if another daemon answers there
/// or if the socket's directory or path could let another user in.
#[cfg(unix)]
pub async fn bind(path: &Path) -> Result<Listener> {
    let dir = path
        .parent()
        .context("control socket path has no directory")?;
    ensure_private_dir(dir)?;
    if let Some(kind) = existing_kind(path)? {
        if kind != Existing::Socket {
            bail!(
                "{} is in the way of the control socket ({}); remove it or choose another \
                 daemon.control_socket",
                path.display(),
                kind.describe()
            );
        }
        let name = path.to_fs_name::<GenericFilePath>()?;
        if Stream::connect(name).await.is_ok() {
            bail!(
                "filesyncd is already running (its control socket {} answers); stop it first \
                 or give this one another --socket",
                path.display()
            );
        }
        tracing::info!(socket = %path.display(), "replacing a stale control socket");
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove stale control socket {}", path.display()))?;
    }
    let name = path.to_fs_name::<GenericFilePath>()?;
    let listener = ListenerOptions::new()
        .name(name)
        .create_tokio()
        .with_context(|| {
            format!(
                "cannot create control socket {} (config key daemon.control_socket)",
                path.display()
            )
        })?;
    restrict(path, 0o600)?;
    Ok(listener)
}

/// Creates the control pipe `path` (`\\.\pipe\NAME`), refusing to start if another
/// daemon answers there or if `path` is not a pipe name.
#[cfg(windows)]
pub async fn bind(path: &Path) -> Result<Listener> {
    if !path.to_str().is_some_and(|p| p.starts_with(r"\\.\pipe\")) {
        bail!(
            "{} is not a named pipe; on Windows the control socket is a pipe \\\\.\\pipe\\NAME \
             (config key daemon.control_socket, or --socket)",
            path.display()
        );
    }
    use interprocess::os::windows::local_socket::ListenerOptionsExt;
    let name = path.to_fs_name::<GenericFilePath>()?;
    if Stream::connect(name.clone()).await.is_ok() {
        bail!(
            "filesyncd is already running (its control pipe {} answers); stop it first \
             or give this one another --socket",
            path.display()
        );
    }
    ListenerOptions::new()
        .name(name)
        .security_descriptor(owner_only()?)
        .create_tokio()
        .with_context(|| {
            format!(
                "cannot create control pipe {} (config key daemon.control_socket)",
                path.display()
            )
        })
}

/// The control pipe's access: the owner of the pipe and SYSTEM, nobody else, not even
/// for reading (`P`: nothing inherited). The owner is the daemon's user, or the
/// Administrators group when the daemon runs elevated.
#[cfg(windows)]
fn owner_only() -> Result<interprocess::os::windows::security_descriptor::SecurityDescriptor> {
    use interprocess::os::windows::security_descriptor::SecurityDescriptor;
    SecurityDescriptor::deserialize(widestring::u16cstr!("D:P(A;;GA;;;OW)(A;;GA;;;SY)"))
        .context("cannot make the control pipe's security descriptor")
}

/// What already sits at the control socket's path.
#[cfg(unix)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Existing {
    Socket,
    Symlink,
    Other,
}

#[cfg(unix)]
impl Existing {
    fn describe(self) -> &'static str {
        match self {
            Existing::Socket => "a socket",
            Existing::Symlink => "a symbolic link, which filesyncd never follows",
            Existing::Other => "not a socket",
        }
    }
}

/// Looks at `path` without following a symbolic link.
#[cfg(unix)]
fn existing_kind(path: &Path) -> Result<Option<Existing>> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", path.display())),
    };
    Ok(Some(if meta.file_type().is_symlink() {
        Existing::Symlink
    } else if is_socket(&meta) {
        Existing::Socket
    } else {
        Existing::Other
    }))
}

#[cfg(unix)]
fn is_socket(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    meta.file_type().is_socket()
}

/// Makes `dir` 0700 when it does not exist. An existing one must be a real directory
/// (not a symbolic link) owned by this user that no other user can write to, or another
/// user could swap the socket for one of their own.
#[cfg(unix)]
fn ensure_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    if std::fs::symlink_metadata(dir).is_err() {
        crate::fs::private::create_dir(dir)
            .with_context(|| format!("cannot create control socket directory {}", dir.display()))?;
    }
    let meta = std::fs::symlink_metadata(dir)
        .with_context(|| format!("cannot inspect control socket directory {}", dir.display()))?;
    let uid = nix::unistd::geteuid().as_raw();
    let problem = if !meta.is_dir() {
        Some("is not a directory (a symbolic link is not accepted)".to_owned())
    } else if meta.uid() != uid {
        Some(format!("is owned by uid {}, not by uid {uid}", meta.uid()))
    } else if meta.mode() & 0o022 != 0 {
        Some(format!(
            "has mode {:o}: group or others may write in it",
            meta.mode() & 0o7777
        ))
    } else {
        None
    };
    if let Some(problem) = problem {
        bail!(
            "control socket directory {} {problem}; make it a directory of this user with \
             mode 0700 (chmod 700), or choose another daemon.control_socket",
            dir.display()
        );
    }
    Ok(())
}

#[cfg(unix)]
fn restrict(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot restrict permissions of {}", path.display()))
}

/// Whether the peer of `stream` may control this daemon: only its own user and root,
/// which also makes every server administration request theirs alone. A refusal is
/// logged with the peer's uid and pid.
#[cfg(unix)]
fn peer_allowed(stream: &Stream) -> bool {
    let ours = nix::unistd::geteuid().as_raw();
    match stream.peer_creds() {
        Ok(creds) => match creds.euid() {
            Some(uid) if uid == ours || uid == 0 => true,
            uid => {
                tracing::warn!(
                    peer_uid = ?uid,
                    peer_pid = ?creds.pid(),
                    "refused a control connection: only uid {ours} and root may control this daemon"
                );
                false
            }
        },
        Err(e) => {
            tracing::warn!("refused a control connection: cannot read its credentials: {e}");
            false
        }
    }
}

/// Whether the client at the other end of the pipe may control this daemon: a process
/// of the daemon's own user or of SYSTEM (the pipe's access list admits no one else
/// either). A refusal is logged with the client's process id.
#[cfg(windows)]
fn peer_allowed(stream: &Stream) -> bool {
    use filesync_winuser::{Owner, owner_of};
    let pid = match stream.peer_creds().map(|creds| creds.pid()) {
        Ok(Some(pid)) => pid,
        Ok(None) => {
            tracing::warn!("refused a control connection: the pipe names no client process");
            return false;
        }
        Err(e) => {
            tracing::warn!("refused a control connection: cannot ask for its client process: {e}");
            return false;
        }
    };
    match owner_of(pid) {
        Ok(Owner::Me | Owner::System) => true,
        Ok(Owner::Other) => {
            tracing::warn!(
                peer_pid = pid,
                "refused a control connection: only this daemon's user and SYSTEM may control it"
            );
            false
        }
        Err(e) => {
            tracing::warn!(
                peer_pid = pid,
                "refused a control connection: cannot tell which user runs its client: {e}"
            );
            false
        }
    }
}

/// Who else may control the daemon besides its own user, for the refusal's message.
#[cfg(unix)]
const ADMIN: &str = "root";
#[cfg(windows)]
const ADMIN: &str = "SYSTEM";

/// What the control socket hands requests to.
#[derive(Clone)]
pub struct Served {
    /// Every request but the two below.
    pub supervisor: mpsc::Sender<ControlCmd>,
    /// `Events`: streamed from the bus.
    pub events: Events,
    /// `WebLogin`: the web page's sessions; `None` when there is no page.
    pub web: Option<Arc<Sessions>>,
}

/// Serves connections until `cancel`, each request handed to the supervisor.
pub async fn serve(listener: Listener, path: PathBuf, served: Served, cancel: CancellationToken) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = cancel.cancelled() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("control socket accept failed: {e}");
                    continue;
                }
            },
        };
        if !peer_allowed(&stream) {
            tokio::spawn(async move {
                refuse(stream).await;
                drop(permit);
            });
            continue;
        }
        let served = served.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, served, cancel).await {
                tracing::debug!("control connection: {e:#}");
            }
            drop(permit);
        });
    }
    let _ = std::fs::remove_file(&path);
}

/// Tells a refused peer why, then drains what it sent for a moment without keeping it:
/// closing with unread data would reset the connection before the peer reads the answer.
async fn refuse(mut stream: Stream) {
    let response = failed(format!(
        "permission denied: this daemon accepts control requests only from its own user \
         and {ADMIN}"
    ));
    if write_frame(&mut stream, &response).await.is_err() {
        return;
    }
    let drain = async {
        let mut sink = [0u8; 4096];
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    };
    let _ = tokio::time::timeout(REFUSED_DRAIN, drain).await;
}

async fn handle(mut stream: Stream, served: Served, cancel: CancellationToken) -> Result<()> {
    let payload = match tokio::time::timeout(REQUEST_TIMEOUT, read_frame(&mut stream)).await {
        Ok(r) => r?,
        Err(_) => bail!("no complete request within {}s", REQUEST_TIMEOUT.as_secs()),
    };
    let response = match control::decode::<Request>(&payload) {
        Ok(Request::Events { folder, follow }) => {
            let folder = folder.as_deref();
            return stream_events(stream, &served.events, folder, follow, cancel).await;
        }
        Ok(Request::WebLogin) => match &served.web {
            Some(sessions) => Response::Ok {
                message: sessions.login_url(),
            },
            None => failed(
                "this daemon serves no web page: daemon.web_listen is \"\" or its port \
                 could not be bound (see `filesyncctl status`)",
            ),
        },
        Err(e) => bad(e.to_string()),
        Ok(request) => ControlCmd::ask(&served.supervisor, request).await,
    };
    write_frame(&mut stream, &response).await
}

/// Sends the recent events of `folder` (all when `None`), then `Ok` — or, with
/// `follow`, every new one until the client goes away or the daemon stops.
async fn stream_events(
    mut stream: Stream,
    events: &Events,
    folder: Option<&str>,
    follow: bool,
    cancel: CancellationToken,
) -> Result<()> {
    let (recent, mut live) = events.subscribe();
    for event in recent.into_iter().filter(|e| events::matches(e, folder)) {
        write_frame(&mut stream, &Response::Event(event)).await?;
    }
    if !follow {
        let done = Response::Ok {
            message: String::new(),
        };
        return write_frame(&mut stream, &done).await;
    }
    // The client sends nothing after its request: a read that ends means it went away,
    // and its connection (and its permit) must not wait for the next matching event.
    let mut probe = [0u8; 1];
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = stream.read(&mut probe) => return Ok(()),
            r = live.recv() => r,
        };
        let response = match event {
            Ok(event) if events::matches(&event, folder) => Response::Event(event),
            Ok(_) => continue,
            Err(broadcast::error::RecvError::Lagged(n)) => failed(format!(
                "{n} events were missed: they came faster than they were read"
            )),
            Err(broadcast::error::RecvError::Closed) => return Ok(()),
        };
        write_frame(&mut stream, &response).await?;
    }
}

async fn write_frame(stream: &mut Stream, response: &Response) -> Result<()> {
    let body = control::encode(response);
    stream.write_all(&(body.len() as u32).to_be_bytes()).await?;
    stream.write_all(&body).await?;
    stream.flush().await?;
    Ok(())
}

async fn read_frame(stream: &mut Stream) -> Result<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_CONTROL_REQUEST {
        bail!("request of {len} bytes is over the limit of {MAX_CONTROL_REQUEST}");
    }
    let mut buf = vec![0; len];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A follower still lets go of its connection when the client leaves, though no
    /// event comes to make it write.
    #[tokio::test]
    async fn a_follower_that_leaves_is_let_go_without_an_event() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run").join("ctl.sock");
        let listener = bind(&path).await.unwrap();
        let events = Events::default();
        let server = tokio::spawn({
            let events = events.clone();
            async move {
                let stream = listener.accept().await.unwrap();
                stream_events(
                    stream,
                    &events,
                    Some("quiet"),
                    true,
                    CancellationToken::new(),
                )
                .await
            }
        });
        let client = Stream::connect(path.to_fs_name::<GenericFilePath>().unwrap())
            .await
            .unwrap();
        drop(client);
        let ended = tokio::time::timeout(Duration::from_secs(10), server).await;
        assert!(ended.is_ok(), "the follower kept its connection");
    }
}
