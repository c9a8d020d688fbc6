//! `filesyncd`, the filesync daemon, as a library: [`run`] wires the whole process.
//!
//! The data path, one module per arrow: local change → [`fs::watch`]/[`scan`] → [`index`]
//! → [`client`] session → wire ([`filesync_proto::wire`]) → [`server`] session →
//! sequencer → [`index`] + [`fs::temp`] → fan-out → other clients → [`client`] apply.
//! [`client::plan`] decides, without I/O, what a client does about each path.
//!
//! # Layout
//!
//! The groups, in the order data flows through them:
//!
//! * [`fs`]: files on disk, for both roles: the reserved names, confined access below a
//!   folder root, stat, writing through verified temp files, tree operations, chunking,
//!   free space and a full disk, owner-only files, ignore rules, the watcher. It imports
//!   nothing else from the crate, and it is the only module that calls the platform's
//!   file APIs; the others keep to `std::fs` and `fs`'s functions.
//! * [`index`]: one folder's SQLite, for both roles: the schema, local rows and blocks,
//!   the client's copy of the server's index, the server's history.
//! * [`scan`]: the disk compared with the index, into changed rows.
//! * [`transfer`]: a file's content, block by block, into a temp file, at either end.
//! * [`conn`]: what both ends of a device-to-server connection share: counters, pending
//!   block requests, serving blocks, keepalive, TLS identities, checks on received entries.
//! * [`client`]: the device role: a task per folder, its session, the planner, applying.
//! * [`server`]: the server role: sessions, the sequencer, history, kept versions,
//!   accounts and shares.
//! * The process around them: [`config`], [`supervisor`], [`control`], [`events`],
//!   [`lifecycle`]. Two of them keep Unix calls of their own: [`control`] for its
//!   socket (the socket file, its directory, the peer's credentials) and [`lifecycle`]
//!   for the process (signals, `--daemon`'s fork, the journal check, malloc tuning).

pub mod client;
pub mod config;
pub mod conn;
pub mod control;
pub mod events;
pub mod fs;
pub mod index;
pub mod lifecycle;
pub mod scan;
pub mod server;
pub mod supervisor;
pub mod transfer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use filesync_proto::DeviceId;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::client::ClientIdentity;
use crate::config::Config;
use crate::fs::private;
use crate::supervisor::Supervisor;

/// How long shutdown waits for tasks to finish before giving up on them.
const GRACE: Duration = Duration::from_secs(8);

/// Runs the daemon until `shutdown` is cancelled; `reload` requests a config re-read.
/// Start-up failures are returned; nothing after start-up ends the process.
pub async fn run(
    config: Config,
    socket: PathBuf,
    shutdown: CancellationToken,
    reload: mpsc::Receiver<()>,
) -> Result<()> {
    fs::durable::at_start();
    let state_dir = &config.daemon.state_dir;
    private::create_dir(state_dir).with_context(|| {
        format!(
            "cannot create state directory {} (config key daemon.state_dir)",
            state_dir.display()
        )
    })?;
    let device = device_id(state_dir)?;
    let identity = ClientIdentity {
        device: device.clone(),
        device_name: host_name(),
        state_dir: state_dir.clone(),
        trust: std::sync::Arc::new(client::trust::TrustStore::new(state_dir)),
    };
    let tracker = TaskTracker::new();
    let control = control::bind(&socket).await?;
    let server = match &config.server {
        Some(cfg) => {
            let (server, listener) =
                server::Server::bind(cfg, device.clone(), tracker.clone(), shutdown.child_token())
                    .await?;
            tracing::info!(listen = %cfg.listen, data_dir = %cfg.data_dir.display(), "server role listening");
            tracker.spawn(server::serve(
                server.clone(),
                listener,
                shutdown.child_token(),
            ));
            Some(server)
        }
        None => None,
    };
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let metrics = match config.daemon.metrics_listen {
        Some(addr) => {
            let (endpoint, listener) = lifecycle::metrics::bind(addr).await;
            if let Some(listener) = listener {
                let serve =
                    lifecycle::metrics::serve(listener, cmd_tx.clone(), shutdown.child_token());
                tracker.spawn(serve);
            }
            Some(endpoint)
        }
        None => None,
    };
    let events = events::Events::default();
    let (web, sessions) = match config.daemon.web_listen {
        Some(addr) => {
            let (endpoint, bound) = lifecycle::web::bind(addr, state_dir).await;
            let sessions = bound.map(|bound| {
                let sessions = bound.sessions.clone();
                let serve = lifecycle::web::serve(
                    bound,
                    cmd_tx.clone(),
                    events.clone(),
                    tracker.clone(),
                    shutdown.child_token(),
                );
                tracker.spawn(serve);
                sessions
            });
            (Some(endpoint), sessions)
        }
        None => (None, None),
    };
    tracker.spawn(control::serve(
        control,
        socket.clone(),
        control::Served {
            supervisor: cmd_tx,
            events: events.clone(),
            web: sessions,
        },
        shutdown.child_token(),
    ));
    let supervisor = Supervisor::new(
        config,
        identity,
        server,
        events,
        tracker.clone(),
        shutdown.child_token(),
    )
    .with_endpoints(metrics, web);
    let summary = supervisor.summary();
    tracker.spawn(supervisor.run(cmd_rx, reload));
    tracker.close();
    // Both sockets are bound: a client connecting from now on is queued, then answered.
    // Logged first, so that whoever is told it is ready (`--daemon`'s parent, systemd)
    // finds the line in the log.
    tracing::info!(device = %device, socket = %socket.display(), "filesyncd ready");
    lifecycle::ready(&summary)?;
    shutdown.cancelled().await;
    if tokio::time::timeout(GRACE, tracker.wait()).await.is_err() {
        tracing::warn!("some tasks did not stop within {}s", GRACE.as_secs());
    }
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

/// This daemon's device id: made once, kept in the state directory.
pub(crate) fn device_id(state_dir: &Path) -> Result<DeviceId> {
    let file = state_dir.join("device_id");
    if let Ok(text) = std::fs::read_to_string(&file)
        && let Ok(id) = DeviceId::new(text.trim())
    {
        return Ok(id);
    }
    let id = DeviceId::new(format!("{:016X}", rand::random::<u64>())).expect("hex is a valid id");
    private::write_file(&file, id.as_str().as_bytes())?;
    Ok(id)
}

/// The device's name for servers to show: its host name, with any character a server
/// would refuse (controls, invisible format characters) replaced, so that a host name
/// with escapes in it still enrols.
fn host_name() -> String {
    let raw = std::fs::read("/proc/sys/kernel/hostname").unwrap_or_default();
    filesync_proto::names::device_name_from(&String::from_utf8_lossy(&raw))
}
