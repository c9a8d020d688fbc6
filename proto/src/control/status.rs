//! What `filesyncctl status` shows: the daemon's status, each folder's state, counters
//! and last scan, and the server role's folders, devices, quotas and problems.

use serde::{Deserialize, Serialize};

use super::FolderMode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FolderState {
    Scanning,
    Syncing,
    Idle,
    Paused,
    Offline,
    Error,
    /// One scan found a large share of the folder deleted: those deletes wait for
    /// `filesyncctl resume FOLDER --confirm-deletes`; other changes still flow.
    Held,
}

impl FolderState {
    pub fn as_str(self) -> &'static str {
        match self {
            FolderState::Scanning => "scanning",
            FolderState::Syncing => "syncing",
            FolderState::Idle => "idle",
            FolderState::Paused => "paused",
            FolderState::Offline => "offline",
            FolderState::Error => "error",
            FolderState::Held => "held",
        }
    }
}

/// Byte and item counters of one folder since the daemon started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Every byte written to / read from the server connection, frames included.
    pub wire_bytes_sent: u64,
    pub wire_bytes_received: u64,
    /// File content sent to / received from the server.
    pub content_bytes_sent: u64,
    pub content_bytes_received: u64,
    /// File content that was copied from local files instead of crossing the wire.
    pub content_bytes_reused: u64,
    pub files_uploaded: u64,
    pub files_downloaded: u64,
    pub deletes_applied: u64,
    /// File content read by scans to hash it, and the files it came from: a rescan of an
    /// unchanged folder adds nothing, and a change is hashed once.
    pub bytes_hashed: u64,
    pub files_hashed: u64,
    /// Push messages sent to the server (each carries up to a batch of changes).
    pub pushes: u64,
}

/// The last full scan of a folder: how long it took and what it found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanReport {
    /// When it finished, Unix milliseconds.
    pub at_ms: i64,
    /// Why it ran: `start-up`, `periodic`, `requested`, or what the watcher could not see.
    pub reason: String,
    /// Paths it looked at (stat), and the files among them it read to hash.
    pub entries: u64,
    pub hashed_files: u64,
    pub hashed_bytes: u64,
    pub millis: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unsyncable {
    pub path: String,
    pub reason: String,
}

/// How many paths [`LocalChanges::paths`] lists at most, so that a status answer stays
/// small whatever the folder holds.
pub const LOCAL_CHANGES_LISTED: usize = 50;

/// The local changes of a folder that does not send them (receive-only): edits, new
/// files and deletes the server never gets. Not pending: the folder is in sync without
/// them, and `filesyncctl revert` puts the server's version back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalChanges {
    pub count: u64,
    /// The first [`LOCAL_CHANGES_LISTED`] of them, in path order.
    pub paths: Vec<String>,
    /// Why they are not sent, e.g. "this folder is receive-only"; empty without any.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderStatus {
    pub name: String,
    pub path: String,
    pub server: String,
    pub mode: FolderMode,
    pub state: FolderState,
    pub connected: bool,
    /// The start-up scan has finished.
    pub scanned: bool,
    pub files: u64,
    pub bytes: u64,
    pub pending_up_files: u64,
    pub pending_up_bytes: u64,
    pub pending_down_files: u64,
    pub pending_down_bytes: u64,
    /// The server sequence number applied locally.
    pub seq: u64,
    /// Unix time (seconds) when the folder was last fully in sync.
    pub last_sync: Option<i64>,
    pub conflicts: u64,
    pub last_error: Option<String>,
    pub unsyncable: Vec<Unsyncable>,
    pub counters: Counters,
    /// File content sent to / received from the server, in bytes per second over the
    /// last few seconds; zero when nothing is moving.
    #[serde(default)]
    pub rate_up_bps: u64,
    #[serde(default)]
    pub rate_down_bps: u64,
    /// Size of the folder's index on disk (database and write-ahead log), bytes.
    pub index_bytes: u64,
    pub last_scan: Option<ScanReport>,
    /// Why the watcher does not see every change (and what is done meanwhile), or `None`
    /// when it does.
    pub watch_problem: Option<String>,
    /// The account the folder syncs as (its `account` key); `None` until a folder of an
    /// old config learns it from the device's only credential for its server.
    #[serde(default)]
    pub account: Option<String>,
    /// The account that owns the folder: the `OWNER` of a shared `OWNER/FOLDER` name,
    /// else the folder's own account.
    #[serde(default)]
    pub owner: Option<String>,
    /// Local changes a receive-only folder keeps to itself; never counted as pending.
    #[serde(default)]
    pub local_changes: LocalChanges,
}

impl FolderStatus {
    /// In sync: connected, scanned, nothing pending either way, no error.
    pub fn is_in_sync(&self) -> bool {
        self.state == FolderState::Idle
            && self.connected
            && self.scanned
            && self.pending_up_files == 0
            && self.pending_down_files == 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerFolderStatus {
    pub account: String,
    pub name: String,
    pub seq: u64,
    pub files: u64,
    pub bytes: u64,
    /// Size of the folder's index on disk (database and write-ahead log), bytes.
    pub index_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectedDevice {
    pub device: String,
    pub name: String,
    pub account: String,
    pub folder: String,
    pub address: String,
}

/// What this device knows of a server it talks to: the pinned certificate and, once
/// enrolled, an account and its device id there; one entry per account it holds a
/// credential for. Never the credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerTrust {
    pub server: String,
    /// The pinned certificate fingerprint (SHA-256, hex).
    pub fingerprint: String,
    /// How the pin was made: `token`, `first-use` or `manual`.
    pub pinned_by: String,
    pub account: Option<String>,
    pub device: Option<String>,
}

/// How much of its quota an account uses on the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountUsage {
    pub account: String,
    /// Bytes of the account's files in its folders, of its unfinished uploads, and of
    /// the pushes being received now (counted at their declared size).
    pub used: u64,
    /// `None`: no limit.
    pub quota: Option<u64>,
}

/// A folder found on disk that the server could not open: it is skipped, the others
/// are served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderProblem {
    pub account: String,
    pub name: String,
    pub path: String,
    pub error: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStatus {
    pub listen: String,
    /// What invite tokens carry: `server.public_address`, else the listen address.
    pub public_address: String,
    pub data_dir: String,
    /// The SHA-256 of the server's certificate, hex: what devices pin.
    pub fingerprint: String,
    pub registration: String,
    pub folders: Vec<ServerFolderStatus>,
    pub devices: Vec<ConnectedDevice>,
    /// Every account's usage and quota.
    pub usage: Vec<AccountUsage>,
    /// Folders that could not be opened, with why.
    pub folder_problems: Vec<FolderProblem>,
    /// Bytes available on the filesystem of `data_dir`, when it could be read.
    pub free_bytes: Option<u64>,
    /// `server.min_free_space`: pushes that would leave less free are refused.
    pub min_free_space: u64,
}

/// An HTTP endpoint of the daemon (`/metrics`, the web page): where the config asks it to listen and,
/// when it could not, why; the daemon runs on without it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub listen: String,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub version: String,
    pub device: String,
    pub config: String,
    pub folders: Vec<FolderStatus>,
    pub server: Option<ServerStatus>,
    /// The servers this device has pinned or enrolled with.
    pub servers: Vec<ServerTrust>,
    /// The last config reload that failed, if the running config is older than the file.
    pub config_error: Option<String>,
    /// `/metrics` (`daemon.metrics_listen`), when the config turns it on.
    pub metrics: Option<Endpoint>,
    /// The web page (`daemon.web_listen`), unless the config turns it off.
    pub web: Option<Endpoint>,
}
