//! A client folder's connection to its server: connect (TLS, handshake and credentials,
//! through [`super::trust::TrustStore::login`]), say hello, then
//! store every index batch the server sends ([`super::stream`]), route block responses,
//! serve the server's block requests, and keep the connection alive. Reconnects with
//! backoff.
//!
//! The session writes only the `remote` table and the received sequence; the folder
//! task owns everything else and learns what happened through [`SessionEvent`]s.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use filesync_proto::control::FolderMode;
use filesync_proto::wire::{
    BlockError, BlockRequest, Change, ClientMsg, Entry, Hello, MAX_BATCH, PushOutcome, ServerMsg,
    VersionInfo,
};
use filesync_proto::{AccountName, DeviceId, FolderName, RelPath};
use futures::{SinkExt, StreamExt};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::offered::{self, Offers};
use super::stream;
use super::trust::TrustStore;
use crate::conn::received;
use crate::conn::{self, Counters, Pending};
use crate::fs::ignore::IgnoreRules;
use crate::index::{Index, Meta};

/// A block request the server answered with "not available": the entry we asked about
/// is not what the server holds (any more). Once is a race with a newer version on its
/// way; again, and this device's view of the server may have drifted (see
/// [`stream::request_refresh`]).
#[derive(Debug, thiserror::Error)]
#[error("the server no longer has that content")]
pub struct ServerLacks;

/// What the session tells its folder task.
pub enum SessionEvent {
    Connected(SessionHandle),
    /// New entries are in the `remote` table; `caught_up` once the backlog is through.
    IndexUpdated {
        caught_up: bool,
    },
    PushResult {
        id: u64,
        outcomes: Vec<PushOutcome>,
    },
    Disconnected {
        reason: String,
    },
}

/// Where a session's events go, tagged with the session's generation so that the task
/// can ignore what a session it already stopped still had in flight.
#[derive(Clone)]
pub struct SessionEvents {
    pub tx: mpsc::UnboundedSender<(u64, SessionEvent)>,
    pub generation: u64,
}

impl SessionEvents {
    /// False once the folder task is gone.
    fn send(&self, ev: SessionEvent) -> bool {
        self.tx.send((self.generation, ev)).is_ok()
    }
}

/// How the folder task talks to the current connection. Cheap to clone; dead once the
/// connection drops (its sends fail and block requests error).
#[derive(Clone)]
pub struct SessionHandle {
    out: mpsc::Sender<ClientMsg>,
    pending: Arc<Pending>,
    /// Calls other than block requests (versions, restore), answered by id.
    calls: Arc<Pending<ServerMsg>>,
    /// The server said the folder is shared read-only with this device's account.
    pub read_only: bool,
    /// The pushes under way, whose blocks the server may ask for.
    offers: Arc<Offers>,
}

impl SessionHandle {
    pub async fn request_block(&self, request: BlockRequest) -> Result<Vec<u8>> {
        let asked = self.pending.ask(
            &self.out,
            |id| ClientMsg::BlockRequest { id, request },
            "the server",
        );
        match asked.await? {
            Ok(data) => Ok(data),
            Err(BlockError::NotAvailable) => Err(ServerLacks.into()),
            Err(BlockError::Refused(why)) => bail!(
                "the server refused a block request: {}",
                conn::peer_text(&why)
            ),
        }
    }

    /// The server's kept versions of `path`, newest first.
    pub async fn list_versions(&self, path: RelPath) -> Result<Vec<VersionInfo>> {
        match self.call(|id| ClientMsg::ListVersions { id, path }).await? {
            ServerMsg::Versions { result, .. } => result.map_err(|e| anyhow!(conn::peer_text(&e))),
            other => bail!(
                "protocol error: expected Versions, got {}",
                conn::unexpected(&other)
            ),
        }
    }

    /// Asks the server to bring back a kept version; returns its new sequence number.
    pub async fn restore(&self, path: RelPath, version: Option<u64>) -> Result<u64> {
        match self
            .call(|id| ClientMsg::Restore { id, path, version })
            .await?
        {
            ServerMsg::Restored { result, .. } => result.map_err(|e| anyhow!(conn::peer_text(&e))),
            other => bail!(
                "protocol error: expected Restored, got {}",
                conn::unexpected(&other)
            ),
        }
    }

    async fn call(&self, make: impl FnOnce(u64) -> ClientMsg) -> Result<ServerMsg> {
        self.calls.ask(&self.out, make, "the server").await
    }

    pub async fn push(&self, id: u64, changes: Vec<Change>) -> Result<()> {
        self.offers.pushed(id, &changes);
        self.out
            .send(ClientMsg::Push { id, changes })
            .await
            .map_err(|_| anyhow!("connection to the server closed"))
    }
}

/// Ends a connection's waiters and writer however its session stops.
struct Cleanup {
    pending: Arc<Pending>,
    calls: Arc<Pending<ServerMsg>>,
    writer: tokio::task::JoinHandle<()>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.pending.fail_all();
        self.calls.fail_all();
        self.writer.abort();
    }
}

/// Everything a session needs; owned by the folder task and handed to each attempt.
#[derive(Clone)]
pub struct SessionConfig {
    pub server: String,
    pub folder: FolderName,
    pub root: PathBuf,
    pub index_file: PathBuf,
    pub device: DeviceId,
    pub device_name: String,
    pub counters: Arc<Counters>,
    pub trust: Arc<TrustStore>,
    /// The account the folder syncs as: only that account's credential is used, and a
    /// login that lands elsewhere ends the attempt before the hello. `None` for a folder
    /// of an old config, which takes the device's only credential for the server.
    pub account: Option<AccountName>,
    /// What the server may read back depends on both (see [`offered`]).
    pub mode: FolderMode,
    pub rules: watch::Receiver<IgnoreRules>,
}

/// The wait before the first retry, and after any session the server welcomed.
const RETRY_FIRST: Duration = Duration::from_millis(250);
/// The longest wait between two attempts; failed attempts double the wait up to it.
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Up to this much is added to each wait, so that the devices of a restarted server
/// do not all come back at the same instant.
const RETRY_JITTER_MS: u64 = 250;

/// Connects and reconnects until `cancel`, reporting to `events`.
///
/// A session the server welcomed proves the server and the path to it work, so however
/// briefly it lasted (a flapping link), the next attempt comes after [`RETRY_FIRST`].
/// Attempts that fail before the welcome (server down, refusing, unreachable) wait twice
/// as long each time, up to [`RETRY_MAX`]: a handful of attempts in the first few
/// seconds, then two a minute, never a tight loop.
pub async fn run(cfg: SessionConfig, events: SessionEvents, cancel: CancellationToken) {
    let mut backoff = RETRY_FIRST;
    loop {
        let mut welcomed = false;
        let reason = tokio::select! {
            _ = cancel.cancelled() => return,
            r = connect_once(&cfg, &events, &mut welcomed) => match r {
                Ok(()) => "the server closed the connection".to_string(),
                Err(e) => crate::fs::space::explain(&e, cfg.folder.as_str(), &cfg.root),
            },
        };
        tracing::info!(folder = %cfg.folder, server = %cfg.server, "disconnected: {reason}");
        if !events.send(SessionEvent::Disconnected { reason }) {
            return;
        }
        if welcomed {
            backoff = RETRY_FIRST;
        }
        let jitter = Duration::from_millis(rand::random::<u64>() % RETRY_JITTER_MS);
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff + jitter) => {}
        }
        backoff = (backoff * 2).min(RETRY_MAX);
    }
}

/// One session: log in, hello, then serve the connection until it ends. `welcomed` is
/// set once the server has accepted the hello.
async fn connect_once(
    cfg: &SessionConfig,
    events: &SessionEvents,
    welcomed: &mut bool,
) -> Result<()> {
    let auth = cfg
        .trust
        .login(
            &cfg.server,
            None,
            cfg.account.as_ref(),
            (&cfg.device, &cfg.device_name),
            cfg.counters.clone(),
        )
        .await
        .map_err(|e| super::account::explain(e, &cfg.folder, &cfg.root))?;
    let mut framed = auth.framed;

    let index = Index::open(&cfg.index_file)?;
    let epoch = index.meta(Meta::ServerEpoch)?.unwrap_or(0) as u64;
    let mut since = index.meta(Meta::Since)?.unwrap_or(0) as u64;
    if stream::begin_refresh(&index)? {
        tracing::info!(folder = %cfg.folder, server = %cfg.server, "reading the server's whole index again");
        since = 0;
    }
    framed
        .send(ClientMsg::Hello(Hello {
            device: auth.device.clone(),
            device_name: cfg.device_name.clone(),
            folder: cfg.folder.clone(),
            since_seq: since,
            epoch,
        }))
        .await?;
    let welcome = match tokio::time::timeout(conn::HANDSHAKE_TIMEOUT, framed.next()).await {
        Ok(Some(Ok(ServerMsg::Welcome(w)))) => w,
        Ok(Some(Ok(ServerMsg::Error(e)))) => {
            bail!(
                "server refused folder {}: {}",
                cfg.folder,
                conn::peer_text(&e.message)
            )
        }
        Ok(Some(Ok(other))) => bail!(
            "protocol error: expected Welcome, got {}",
            conn::unexpected(&other)
        ),
        Ok(Some(Err(e))) => return Err(e.into()),
        Ok(None) => bail!("server closed the connection after hello"),
        Err(_) => bail!(
            "server did not answer hello within {}s",
            conn::HANDSHAKE_TIMEOUT.as_secs()
        ),
    };
    // A server whose history is not the one we followed (restored or re-created: a new
    // epoch; or, from a server that did not notice, one that has not reached what we
    // saw): forget what we knew of it and merge without deleting anything.
    let went_back = welcome.epoch == epoch && welcome.current_seq < since;
    if welcome.epoch != epoch || went_back {
        if epoch != 0 {
            tracing::warn!(folder = %cfg.folder, server = %cfg.server, "the server's copy of the folder has another history than the one this device followed (epoch {epoch} -> {}, sequence {since} -> {}): restored from a backup or re-created; merging without deleting anything, differences become conflict copies", welcome.epoch, welcome.current_seq);
            index.reset_to_unsynced()?;
        }
        index.set_meta(Meta::ServerEpoch, welcome.epoch as i64)?;
        index.set_meta(Meta::Since, 0)?;
        index.delete_meta(Meta::Renamed)?;
    }
    *welcomed = true;
    let refreshing = stream::refresh_under_way(&index)?;
    tracing::info!(folder = %cfg.folder, server = %cfg.server, seq = welcome.current_seq, "connected");

    let (sink, mut stream) = framed.split();
    let (out_tx, out_rx) = mpsc::channel::<ClientMsg>(64);
    let pending = Arc::new(Pending::default());
    let calls = Arc::new(Pending::default());
    let offers = Arc::new(Offers::default());
    let (stuck_tx, stuck) = oneshot::channel();
    let writer = tokio::spawn(async move {
        if let Err(why) = conn::write_queue(sink, out_rx).await {
            let _ = stuck_tx.send(why);
        }
    });
    let handle = SessionHandle {
        out: out_tx.clone(),
        pending: pending.clone(),
        calls: calls.clone(),
        read_only: welcome.read_only,
        offers: offers.clone(),
    };
    if welcome.read_only {
        tracing::info!(folder = %cfg.folder, server = %cfg.server, "the folder is shared read-only with this account: receiving only");
    }
    // Cancelling the session drops this future mid-await: the guard still fails every
    // waiting request at once and stops the writer, so nothing waits for a dead socket.
    let _cleanup = Cleanup {
        pending: pending.clone(),
        calls: calls.clone(),
        writer,
    };
    events.send(SessionEvent::Connected(handle));
    tokio::select! {
        r = read_loop(cfg, &index, refreshing, &mut stream, &out_tx, (&pending, &calls, &offers), events) => r,
        Ok(why) = stuck => bail!("server {}: {why}", cfg.server),
    }
}

/// `refreshing`: a refresh is under way (see [`stream::request_refresh`]).
async fn read_loop<S>(
    cfg: &SessionConfig,
    index: &Index,
    mut refreshing: bool,
    stream: &mut S,
    out: &mpsc::Sender<ClientMsg>,
    (pending, calls, offers): (&Pending, &Pending<ServerMsg>, &Offers),
    events: &SessionEvents,
) -> Result<()>
where
    S: futures::Stream<Item = Result<ServerMsg, filesync_proto::FrameError>> + Unpin,
{
    // Serving the server's block requests must never stall reading, or a push waiting
    // for blocks would wait forever: they run as tasks, a bounded number at once.
    let serving = Arc::new(Semaphore::new(16));
    let mut ping = tokio::time::interval(conn::PING_INTERVAL);
    let mut silence = conn::Silence::new();
    loop {
        let msg = tokio::select! {
            _ = ping.tick() => {
                let _ = out.try_send(ClientMsg::Ping { nonce: 0 });
                continue;
            }
            () = silence.expired() => bail!(
                "server {} sent nothing for {}s",
                cfg.server,
                conn::IDLE_TIMEOUT.as_secs()
            ),
            msg = stream.next() => msg,
        };
        silence.heard();
        let msg = match msg {
            None => return Ok(()),
            Some(m) => m.map_err(|e| conn::read_failed(&format!("server {}", cfg.server), e))?,
        };
        match msg {
            ServerMsg::Index {
                entries,
                up_to,
                as_of,
                caught_up,
            } => {
                if entries.len() > MAX_BATCH {
                    bail!(
                        "protocol error: an index batch of {} entries is over the limit of {MAX_BATCH}",
                        entries.len()
                    );
                }
                let entries = accepted(cfg, entries);
                let batch = stream::Batch {
                    up_to,
                    as_of,
                    caught_up,
                };
                let dropped =
                    index.batch(|ix| stream::store_batch(ix, &entries, batch, refreshing))?;
                if let Some(dropped) = dropped {
                    refreshing = false;
                    tracing::info!(folder = %cfg.folder, server = %cfg.server, dropped, "read the server's whole index again");
                }
                events.send(SessionEvent::IndexUpdated { caught_up });
            }
            ServerMsg::PushResult { id, outcomes } => {
                offers.settled(id);
                events.send(SessionEvent::PushResult { id, outcomes });
            }
            ServerMsg::BlockResponse { id, result } => {
                if let Ok(data) = &result {
                    Counters::add(&cfg.counters.content_received, data.len() as u64);
                }
                pending.complete(id, result);
            }
            ServerMsg::BlockRequest { id, request } => {
                let owed = offered::check(&request, cfg.mode, &cfg.rules.borrow(), offers, index);
                if let Err(why) = owed {
                    tracing::warn!(folder = %cfg.folder, server = %cfg.server, path = ?request.path.as_str(), "refused the server's request for a block, closing the connection: {why}");
                    let result = Err(BlockError::Refused(why.clone()));
                    let _ = out.send(ClientMsg::BlockResponse { id, result }).await;
                    bail!(
                        "server {} asked for content this device never offered: {why}",
                        cfg.server
                    );
                }
                let permit = serving.clone().acquire_owned().await?;
                let (root, out, counters) = (cfg.root.clone(), out.clone(), cfg.counters.clone());
                tokio::spawn(async move {
                    let result = tokio::task::spawn_blocking(move || {
                        conn::serve_block_from(&root, &request)
                    })
                    .await
                    .unwrap_or(Err(BlockError::NotAvailable));
                    if let Ok(data) = &result {
                        Counters::add(&counters.content_sent, data.len() as u64);
                    }
                    let _ = out.send(ClientMsg::BlockResponse { id, result }).await;
                    drop(permit);
                });
            }
            ServerMsg::Ping { nonce } => {
                let _ = out.send(ClientMsg::Pong { nonce }).await;
            }
            ServerMsg::Pong { .. } => {}
            ServerMsg::Versions { id, .. } | ServerMsg::Restored { id, .. } => {
                calls.complete(id, msg)
            }
            ServerMsg::Error(e) => bail!("server error: {}", conn::peer_text(&e.message)),
            ServerMsg::Welcome(_) => bail!("protocol error: unexpected second Welcome"),
            ServerMsg::Invite(_) => bail!("protocol error: unexpected Invite"),
            ServerMsg::Sharing(_) => bail!("protocol error: unexpected Sharing"),
        }
    }
}

/// The server's entries this client can take: one that fails [`received::check_entry`]
/// is logged and left out, never applied, and the rest of the batch goes on. A conflict
/// note that could aim `resolve` at another path than the copy's original (an ignored
/// one, say) is dropped and logged ([`received::check_note`]).
fn accepted(cfg: &SessionConfig, entries: Vec<Entry>) -> Vec<Entry> {
    let rules = cfg.rules.borrow();
    entries
        .into_iter()
        .filter_map(|mut e| match received::check_entry(&mut e) {
            Ok(()) => {
                if let Some(why) = received::check_note(&mut e, |p| rules.is_ignored(p, false)) {
                    tracing::warn!(folder = %cfg.folder, server = %cfg.server, "{why}");
                }
                Some(e)
            }
            Err(reason) => {
                tracing::warn!(folder = %cfg.folder, server = %cfg.server, "ignored an entry from the server: {reason}");
                None
            }
        })
        .collect()
}
