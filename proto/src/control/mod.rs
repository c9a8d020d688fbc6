//! Messages between `filesyncctl` and the local daemon over the control socket.
//!
//! One request per connection, one response. Errors come back as data
//! ([`Response::Error`]) with a kind the CLI maps to its exit code.

use serde::{Deserialize, Serialize};

mod status;

pub use status::{
    AccountUsage, ConnectedDevice, Counters, DaemonStatus, Endpoint, FolderProblem, FolderState,
    FolderStatus, LOCAL_CHANGES_LISTED, LocalChanges, ScanReport, ServerFolderStatus, ServerStatus,
    ServerTrust, Unsyncable,
};

/// Version of the control protocol; the CLI refuses to talk to a daemon of another.
/// The encoding is not self-describing, so a new field in any message is a new version.
pub const CONTROL_VERSION: u32 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FolderMode {
    TwoWay,
    SendOnly,
    ReceiveOnly,
}

impl FolderMode {
    pub fn as_str(self) -> &'static str {
        match self {
            FolderMode::TwoWay => "two-way",
            FolderMode::SendOnly => "send-only",
            FolderMode::ReceiveOnly => "receive-only",
        }
    }

    pub fn parse(s: &str) -> Option<FolderMode> {
        [
            FolderMode::TwoWay,
            FolderMode::SendOnly,
            FolderMode::ReceiveOnly,
        ]
        .into_iter()
        .find(|m| m.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddFolder {
    /// Absolute path of the local folder.
    pub path: String,
    /// `HOST:PORT` of the server.
    pub server: String,
    /// Folder name on the server; defaults to the local directory's name.
    pub name: Option<String>,
    pub token: Option<String>,
    pub mode: Option<FolderMode>,
    /// The account the folder syncs as, among this device's credentials for the server;
    /// needed once the device holds more than one there.
    #[serde(default)]
    pub account: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Status {
        folder: Option<String>,
    },
    Add(AddFolder),
    Remove {
        folder: String,
    },
    /// `None` means every folder.
    Pause {
        folder: Option<String>,
    },
    /// With `confirm_deletes`, also sends the deletes the mass-delete guard holds back.
    Resume {
        folder: Option<String>,
        confirm_deletes: bool,
    },
    /// With `recreate_marker`, first writes the folder marker again: the user says the
    /// directory is really the folder (see [`FolderState::Error`]).
    Rescan {
        folder: Option<String>,
        recreate_marker: bool,
    },
    /// Scan now and answer once the scan is done, so that a following status reflects
    /// every change made before this request. Used by `wait`.
    Flush {
        folder: Option<String>,
    },
    Reload,
    Conflicts {
        folder: Option<String>,
    },
    /// Settle the conflicts whose original path matches `pattern` (a path or a glob).
    Resolve {
        folder: String,
        pattern: String,
        keep: Keep,
    },
    Versions {
        folder: String,
        path: String,
    },
    Restore {
        folder: String,
        path: String,
        version: Option<u64>,
    },
    /// Server role: a one-time token enrolling a device into `account` (created if
    /// new), valid for `expires_secs` (the server's default when `None`).
    ServerInvite {
        account: String,
        expires_secs: Option<u64>,
    },
    /// Server role: every account, with its devices.
    ServerDevices,
    /// Server role: refuse `device` from now on and close its connections.
    ServerRevoke {
        device: String,
    },
    /// Server role: set how many bytes `account` may store.
    ServerQuota {
        account: String,
        quota: QuotaChange,
    },
    /// Client role: ask `server` for a token enrolling another device into this
    /// device's account there (`account`, when it holds credentials for several).
    DeviceInvite {
        server: String,
        #[serde(default)]
        account: Option<String>,
    },
    /// Client role: pin `server`'s certificate fingerprint, replacing any earlier pin.
    Trust {
        server: String,
        fingerprint: String,
    },
    /// The recent events of every folder (or of one, by name or path), answered with one
    /// [`Response::Event`] per event and then [`Response::Ok`]; with `follow`, new events
    /// keep coming on the same connection until the client closes it.
    Events {
        folder: Option<String>,
        follow: bool,
    },
    /// Client role: ask the server of this device's `folder` (name or path) to share it
    /// with account `with`; answered with [`Response::Shares`] of that folder.
    Share {
        folder: String,
        with: String,
        read_only: bool,
    },
    /// Client role: take `with`'s access to `folder` back at once.
    Unshare {
        folder: String,
        with: String,
    },
    /// Client role: the grants of `folder`, or of every folder this device syncs as
    /// their owner's account.
    Shares {
        folder: Option<String>,
    },
    /// Server role: share `owner`'s folder `folder` with account `with`.
    ServerShare {
        owner: String,
        folder: String,
        with: String,
        read_only: bool,
    },
    /// Server role: take `with`'s access to `owner`'s folder `folder` back at once.
    ServerUnshare {
        owner: String,
        folder: String,
        with: String,
    },
    /// Server role: every grant, or those of one `OWNER/FOLDER`.
    ServerShares {
        folder: Option<String>,
    },
    /// Put the server's version back in a receive-only folder: locally changed and
    /// deleted paths get the server's version again, local-only files are moved aside
    /// (never deleted). Refused for a folder that sends its changes.
    Revert {
        folder: String,
    },
    /// Server role: the invite tokens that can still enrol a device.
    ServerInvites,
    /// Server role: cancel the pending invite token `id` (as `ServerInvites` lists it).
    ServerCancelInvite {
        id: String,
    },
    /// A one-time URL that logs a browser in to the web page, answered as
    /// [`Response::Ok`] with the URL as its message.
    WebLogin,
    /// Server role, cluster backend: write the current tree of `folder`
    /// (`ACCOUNT/FOLDER`) into `dir`, an absolute path on the node, absent or empty.
    ServerExport {
        folder: String,
        dir: String,
    },
}

/// What happened, for `filesyncctl events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// A scan found local changes; `detail` says how many.
    Scanned,
    /// A file's content was accepted by the server.
    Uploaded,
    /// A file from the server was written here.
    Downloaded,
    /// A delete was applied here (`detail`: "by the server") or accepted by the server
    /// (`detail`: "sent to the server").
    Deleted,
    /// Both sides changed a file; `detail` names the conflict copy.
    Conflict,
    /// Something failed; `detail` says what, in plain words.
    Error,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Scanned => "scanned",
            EventKind::Uploaded => "uploaded",
            EventKind::Downloaded => "downloaded",
            EventKind::Deleted => "deleted",
            EventKind::Conflict => "conflict",
            EventKind::Error => "error",
        }
    }
}

/// One event of one folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When it happened, Unix milliseconds.
    pub time_ms: i64,
    /// The folder's name and its local path.
    pub folder: String,
    pub folder_path: String,
    pub kind: EventKind,
    /// The path inside the folder, when the event is about one.
    pub path: Option<String>,
    pub detail: Option<String>,
}

/// Which side of a conflict to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Keep {
    /// The conflict copy's content (the version that lost the race).
    Local,
    /// The content at the original path (the server's version).
    Remote,
    /// Whichever of the two has the later modification time.
    Newer,
}

/// One unresolved conflict, as recorded in a folder's index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictInfo {
    pub folder: String,
    /// The path whose server version won; its current content is there.
    pub path: String,
    /// The conflict copy holding the other version.
    pub copy: String,
    /// Device that wrote the winning version, and its server sequence number.
    pub winner: String,
    pub winner_seq: u64,
    /// Device that wrote the version kept in the copy.
    pub loser: String,
    /// When the copy was made, Unix seconds.
    pub made_at: i64,
    pub copy_size: u64,
    pub copy_mtime_ns: i64,
}

/// One version of a file kept on the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionEntry {
    pub version: u64,
    pub size: u64,
    pub mtime_ns: i64,
    /// When it was replaced or deleted, Unix seconds.
    pub kept_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ControlErrorKind {
    /// The request is malformed or names nothing we know.
    BadRequest,
    /// The operation was understood but failed.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Ok {
        message: String,
    },
    Status(Box<DaemonStatus>),
    Conflicts(Vec<ConflictInfo>),
    Versions(Vec<VersionEntry>),
    Accounts(Vec<AccountInfo>),
    Shares(Vec<ShareInfo>),
    Event(Event),
    Invites(Vec<InviteInfo>),
    Error {
        kind: ControlErrorKind,
        message: String,
    },
}

/// A request as framed on the socket: the control version first, so that a daemon can
/// name a version mismatch instead of failing to decode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Envelope<T> {
    version: u32,
    body: T,
}

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error(
        "control protocol mismatch: filesyncctl speaks version {theirs}, the daemon speaks version {ours}; \
         restart filesyncd after an upgrade"
    )]
    Version { ours: u32, theirs: u32 },
    #[error("malformed control message: {0}")]
    Malformed(#[from] postcard::Error),
}

/// Encodes a request or response with the control version in front.
pub fn encode<T: Serialize>(body: &T) -> Vec<u8> {
    // Serialising plain data into a Vec cannot fail.
    postcard::to_stdvec(&Envelope {
        version: CONTROL_VERSION,
        body,
    })
    .unwrap_or_default()
}

/// Decodes what [`encode`] made, checking the version before the body.
pub fn decode<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, EnvelopeError> {
    let (version, rest): (u32, _) = postcard::take_from_bytes(payload)?;
    if version != CONTROL_VERSION {
        return Err(EnvelopeError::Version {
            ours: CONTROL_VERSION,
            theirs: version,
        });
    }
    let (body, rest) = postcard::take_from_bytes(rest)?;
    if !rest.is_empty() {
        return Err(EnvelopeError::Malformed(
            postcard::Error::DeserializeBadEncoding,
        ));
    }
    Ok(body)
}

/// The control pipe on Windows when neither the command line, `FILESYNC_SOCKET` nor the
/// config names one: `\\.\pipe\filesync-USER`, one per user, as pipes have no per-user
/// directory to hold them.
pub fn default_pipe_path(user: &str) -> std::path::PathBuf {
    format!(r"\\.\pipe\filesync-{user}").into()
}

/// The control socket path when neither the command line, `FILESYNC_SOCKET` nor the
/// config names one: under `$XDG_RUNTIME_DIR` for a user session, `/run/filesyncd` for
/// root, and a per-uid directory under `/tmp` otherwise.
pub fn default_socket_path(xdg_runtime_dir: Option<&str>, uid: u32) -> std::path::PathBuf {
    match xdg_runtime_dir {
        Some(dir) if !dir.is_empty() => std::path::Path::new(dir).join("filesync/filesyncd.sock"),
        _ if uid == 0 => "/run/filesyncd/filesyncd.sock".into(),
        _ => format!("/tmp/filesync-{uid}/filesyncd.sock").into(),
    }
}

/// One account's access to a folder of another account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareInfo {
    /// The account that owns the folder, and the folder's name in that account.
    pub owner: String,
    pub folder: String,
    /// The account it is shared with; its devices add it as `OWNER/FOLDER`.
    pub member: String,
    pub read_only: bool,
    /// When it was granted (or last changed), Unix seconds.
    pub granted_at: i64,
}

/// One account of the server and its devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountInfo {
    pub account: String,
    /// Unix seconds.
    pub created: i64,
    pub devices: Vec<DeviceInfo>,
    /// Bytes the account stores (see [`AccountUsage::used`]).
    pub used: u64,
    /// `None`: no limit.
    pub quota: Option<u64>,
}

/// One enrolled device, as the server's account store knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub account: String,
    pub device: String,
    pub name: String,
    /// Unix seconds.
    pub enrolled: i64,
    /// When it last authenticated, Unix seconds.
    pub last_seen: Option<i64>,
    pub revoked: bool,
    /// Connections it has open now.
    pub connections: u32,
}

/// One invite token that can still enrol a device (not used, cancelled or expired).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteInfo {
    /// What `filesyncctl server invites cancel` takes: 16 hex digits of the token's
    /// hash (the token itself is never stored).
    pub id: String,
    /// The account the token enrols into.
    pub account: String,
    /// `admin` (`filesyncctl server invite`), `device` (`filesyncctl device invite`, by
    /// `device`), or `unknown` for tokens made before the server recorded makers.
    pub made_by: String,
    pub device: Option<String>,
    /// Unix seconds.
    pub created: i64,
    pub expires: i64,
}

/// A new quota for an account (`filesyncctl server quota ACCOUNT SIZE|none|default`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum QuotaChange {
    /// At most this many bytes.
    Bytes(u64),
    /// No limit for this account, whatever `server.default_quota` says.
    Unlimited,
    /// Back to `server.default_quota`.
    Default,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{decode_payload, encode_payload};

    #[test]
    fn requests_round_trip() {
        let add = AddFolder {
            path: "/home/a/Docs".into(),
            server: "host:7101".into(),
            name: Some("docs".into()),
            token: None,
            mode: Some(FolderMode::SendOnly),
            account: Some("home".into()),
        };
        for req in [
            Request::Status { folder: None },
            Request::Add(add),
            Request::Remove {
                folder: "docs".into(),
            },
            Request::Pause { folder: None },
            Request::Resume {
                folder: Some("docs".into()),
                confirm_deletes: true,
            },
            Request::Rescan {
                folder: None,
                recreate_marker: false,
            },
            Request::Flush { folder: None },
            Request::Reload,
            Request::Conflicts { folder: None },
            Request::Resolve {
                folder: "docs".into(),
                pattern: "*.txt".into(),
                keep: Keep::Newer,
            },
            Request::Versions {
                folder: "docs".into(),
                path: "a/b".into(),
            },
            Request::Restore {
                folder: "docs".into(),
                path: "a/b".into(),
                version: None,
            },
            Request::Events {
                folder: Some("docs".into()),
                follow: true,
            },
            Request::Share {
                folder: "docs".into(),
                with: "bob".into(),
                read_only: true,
            },
            Request::Unshare {
                folder: "docs".into(),
                with: "bob".into(),
            },
            Request::Shares { folder: None },
            Request::ServerShare {
                owner: "alice".into(),
                folder: "docs".into(),
                with: "bob".into(),
                read_only: false,
            },
            Request::ServerUnshare {
                owner: "alice".into(),
                folder: "docs".into(),
                with: "bob".into(),
            },
            Request::ServerShares {
                folder: Some("alice/docs".into()),
            },
            Request::Revert {
                folder: "docs".into(),
            },
            Request::ServerInvites,
            Request::ServerCancelInvite {
                id: "0123456789abcdef".into(),
            },
        ] {
            let back: Request = decode_payload(&encode_payload(&req).unwrap()).unwrap();
            assert_eq!(back, req);
            let back: Request = decode(&encode(&req)).unwrap();
            assert_eq!(back, req);
        }
    }

    #[test]
    fn responses_round_trip() {
        let conflict = ConflictInfo {
            folder: "docs".into(),
            path: "a.txt".into(),
            copy: "a.sync-conflict-20260101-000000-ABCDEFG.txt".into(),
            winner: "DEV2".into(),
            winner_seq: 4,
            loser: "ABCDEFG".into(),
            made_at: 1_700_000_000,
            copy_size: 3,
            copy_mtime_ns: -1,
        };
        let version = VersionEntry {
            version: 3,
            size: 5,
            mtime_ns: 1,
            kept_at: 1_700_000_000,
        };
        let status = DaemonStatus {
            version: "0.1.0".into(),
            device: "DEV1".into(),
            config: "/etc/filesync/filesyncd.toml".into(),
            folders: Vec::new(),
            server: None,
            servers: Vec::new(),
            config_error: None,
            metrics: None,
            web: None,
        };
        for resp in [
            Response::Ok {
                message: "done".into(),
            },
            Response::Status(Box::new(status)),
            Response::Conflicts(vec![conflict]),
            Response::Versions(vec![version]),
            Response::Shares(vec![ShareInfo {
                owner: "alice".into(),
                folder: "docs".into(),
                member: "bob".into(),
                read_only: true,
                granted_at: 1_700_000_000,
            }]),
            Response::Invites(vec![InviteInfo {
                id: "0123456789abcdef".into(),
                account: "alice".into(),
                made_by: "device".into(),
                device: Some("DEV1".into()),
                created: 1_700_000_000,
                expires: 1_700_086_400,
            }]),
            Response::Event(Event {
                time_ms: 1_700_000_000_000,
                folder: "docs".into(),
                folder_path: "/home/a/Docs".into(),
                kind: EventKind::Conflict,
                path: Some("a.txt".into()),
                detail: Some("a.sync-conflict-20260101-000000-ABCDEFG.txt".into()),
            }),
            Response::Error {
                kind: ControlErrorKind::BadRequest,
                message: "no folder named x".into(),
            },
        ] {
            let back: Response = decode(&encode(&resp)).unwrap();
            assert_eq!(back, resp);
        }
    }

    #[test]
    fn version_is_checked_before_the_body() {
        let mut bytes = encode(&Request::Reload);
        bytes[0] = (CONTROL_VERSION + 1) as u8;
        let err = decode::<Request>(&bytes).unwrap_err();
        assert!(
            matches!(err, EnvelopeError::Version { theirs, .. } if theirs == CONTROL_VERSION + 1)
        );
        assert!(err.to_string().contains("restart filesyncd"));
        assert!(matches!(
            decode::<Request>(&[CONTROL_VERSION as u8, 0x7f]),
            Err(EnvelopeError::Malformed(_))
        ));
        assert!(matches!(
            decode::<Request>(&[]),
            Err(EnvelopeError::Malformed(_))
        ));
    }

    #[test]
    fn default_socket_paths() {
        assert_eq!(
            default_socket_path(Some("/run/user/1000"), 1000),
            std::path::Path::new("/run/user/1000/filesync/filesyncd.sock")
        );
        assert_eq!(
            default_socket_path(None, 0),
            std::path::Path::new("/run/filesyncd/filesyncd.sock")
        );
        assert_eq!(
            default_socket_path(Some(""), 5),
            std::path::Path::new("/tmp/filesync-5/filesyncd.sock")
        );
        assert_eq!(
            default_pipe_path("alice").to_str(),
            Some(r"\\.\pipe\filesync-alice")
        );
    }

    #[test]
    fn modes_parse_their_config_names() {
        for m in [
            FolderMode::TwoWay,
            FolderMode::SendOnly,
            FolderMode::ReceiveOnly,
        ] {
            assert_eq!(FolderMode::parse(m.as_str()), Some(m));
        }
        assert_eq!(FolderMode::parse("both"), None);
    }
}
