//! The client role: one task per configured folder keeps it in sync with its server.
//!
//! The folder task owns the folder's index and is the only writer of its local rows. It
//! reacts to watcher events, periodic rescans, control commands and what its session
//! reports, and after each event runs one [`FolderTask::step`]: scan what is dirty,
//! apply what the server has that we lack, push what we have that the server lacks.
//! Decisions come from [`plan`]; the session lives in [`session`].

pub mod account;
mod conflicts;
pub mod connect;
mod guard;
mod inline;
mod meter;
mod offered;
pub mod plan;
pub mod session;
pub mod share;
mod stream;
mod task;
pub mod trust;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use filesync_proto::DeviceId;
use filesync_proto::control::{ConflictInfo, FolderState, FolderStatus, Keep, VersionEntry};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::FolderConfig;
use crate::conn::Counters;
use crate::events::Events;

/// Commands the supervisor sends to a folder task.
#[derive(Debug)]
pub enum FolderCmd {
    Pause,
    Resume,
    /// Send the deletes the mass-delete guard holds back.
    ConfirmDeletes,
    Rescan,
    /// Write the folder marker again and scan; answers what was done.
    RecreateMarker(oneshot::Sender<Result<String, String>>),
    /// Scan now; answer once the scan is done.
    Flush(oneshot::Sender<()>),
    /// Put the server's version back in a receive-only folder; answers what was done.
    Revert(oneshot::Sender<Result<String, String>>),
    Conflicts(oneshot::Sender<Result<Vec<ConflictInfo>, String>>),
    Resolve {
        pattern: String,
        keep: Keep,
        reply: oneshot::Sender<Result<String, String>>,
    },
    Versions {
        path: String,
        reply: oneshot::Sender<Result<Vec<VersionEntry>, String>>,
    },
    Restore {
        path: String,
        version: Option<u64>,
        reply: oneshot::Sender<Result<String, String>>,
    },
}

/// The identity a client presents to its servers.
#[derive(Clone)]
pub struct ClientIdentity {
    pub device: DeviceId,
    pub device_name: String,
    pub state_dir: PathBuf,
    /// Pins and credentials, shared by every folder.
    pub trust: Arc<trust::TrustStore>,
}

/// The supervisor's handle on a running folder task.
pub struct FolderHandle {
    pub config: FolderConfig,
    /// Commands in; bounded, the task answers each quickly.
    pub cmd: mpsc::Sender<FolderCmd>,
    /// The latest status, published by the task after every step.
    pub status: watch::Receiver<FolderStatus>,
    /// Cancelling stops this folder's task and its session.
    pub cancel: CancellationToken,
}

/// Where a folder's index lives: one file per folder path, so that re-adding a folder
/// finds its history.
pub fn index_file(state_dir: &Path, cfg: &FolderConfig) -> PathBuf {
    let digest = crate::fs::chunk::sha256(cfg.path.as_os_str().as_encoded_bytes());
    state_dir.join("folders").join(format!(
        "{}-{}.db",
        cfg.name.file_stem(),
        &digest.to_hex()[..12]
    ))
}

/// Starts the task for `cfg` under `parent`; it ends when the handle's token is cancelled.
pub fn spawn(
    cfg: FolderConfig,
    id: &ClientIdentity,
    events: &Events,
    tracker: &TaskTracker,
    parent: &CancellationToken,
) -> FolderHandle {
    let cancel = parent.child_token();
    let (cmd_tx, cmd_rx) = mpsc::channel(16);
    let (status_tx, status_rx) = watch::channel(initial_status(&cfg));
    let task = task::FolderTask::new(
        cfg.clone(),
        id.clone(),
        Arc::new(Counters::default()),
        status_tx,
        events.clone(),
    );
    tracker.spawn(task.run(cmd_rx, cancel.clone()));
    FolderHandle {
        config: cfg,
        cmd: cmd_tx,
        status: status_rx,
        cancel,
    }
}

fn initial_status(cfg: &FolderConfig) -> FolderStatus {
    FolderStatus {
        name: cfg.name.to_string(),
        path: cfg.path.display().to_string(),
        server: cfg.server.clone(),
        mode: cfg.mode,
        state: if cfg.paused {
            FolderState::Paused
        } else {
            FolderState::Scanning
        },
        connected: false,
        scanned: false,
        files: 0,
        bytes: 0,
        pending_up_files: 0,
        pending_up_bytes: 0,
        pending_down_files: 0,
        pending_down_bytes: 0,
        seq: 0,
        last_sync: None,
        conflicts: 0,
        last_error: None,
        unsyncable: Vec::new(),
        counters: Default::default(),
        rate_up_bps: 0,
        rate_down_bps: 0,
        index_bytes: 0,
        last_scan: None,
        watch_problem: None,
        account: cfg.account.as_ref().map(ToString::to_string),
        owner: account::owner(&cfg.name, cfg.account.as_ref()),
        local_changes: Default::default(),
    }
}
