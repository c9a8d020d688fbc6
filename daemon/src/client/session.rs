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
    BlockError, BlockRequest, Change, ClientMsg, Entry, EntryKind, Hello, INLINE_BUDGET, Inline,
    MAX_BATCH, PushOutcome, ServerMsg, VersionInfo, Want,
};
use filesync_proto::{AccountName, DeviceId, FolderName, RelPath};
use futures::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::inline::InlineStore;
use super::offered::{self, Offers};
use super::stream;
use super::trust::TrustStore;
use crate::conn::received;
use crate::conn::{self, Counters, Link, Pending};
use crate::fs::ignore::IgnoreRules;
use crate::index::{Index, Meta};
use crate::lifecycle::metrics;

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
        match conn::request_block(&self.out, &self.pending, request, "the server").await? {
            Some(data) => Ok(data),
            None => Err(ServerLacks.into()),
        }
    }

    /// The whole content of each of `files` (small files, see [`ClientMsg::Fetch`]), in
    /// order; a file the server no longer has as asked is [`ServerLacks`].
    pub async fn fetch(&self, files: Vec<Want>) -> Result<Vec<Result<Vec<u8>>>> {
        let asked: Vec<(RelPath, u64)> = files.iter().map(|w| (w.path.clone(), w.size)).collect();
        let answer = self.call(|id| ClientMsg::Fetch { id, files }).await?;
        let ServerMsg::Fetched { files, .. } = answer else {
            bail!(
                "protocol error: expected Fetched, got {}",
                conn::unexpected(&answer)
            );
        };
        if files.len() != asked.len() {
            bail!(
                "protocol error: the server answered a Fetch of {} files with {}",
                asked.len(),
                files.len()
            );
        }
        Ok(files
            .into_iter()
            .zip(asked)
            .map(|(got, (path, size))| match got.result {
                Ok(data) if data.len() as u64 == size => Ok(data),
                Ok(data) => Err(anyhow!(
                    "the server sent {} bytes for {path} of {size} bytes",
                    data.len()
                )),
                Err(BlockError::NotAvailable) => Err(ServerLacks.into()),
                Err(BlockError::Refused(why)) => Err(anyhow!(
                    "the server refused to send {path}: {}",
                    conn::peer_text(&why)
                )),
            })
            .collect())
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

/// Fails a connection's waiting calls however its session stops (its [`Link`] does the
/// same for block requests).
struct FailCalls(Arc<Pending<ServerMsg>>);

impl Drop for FailCalls {
    fn drop(&mut self) {
        self.0.fail_all();
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
    /// Where the content that comes with index batches waits for the pull.
    pub inline: Arc<InlineStore>,
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
        metrics::recorded::reconnecting(cfg.folder.as_str(), &cfg.server);
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

    let (sink, stream) = framed.split();
    let (root, counters) = (cfg.root.clone(), cfg.counters.clone());
    let reader: conn::Reader = Arc::new(move |request| conn::serve_block_from(&root, request));
    let mut link = Link::<ServerMsg, ClientMsg>::new(
        sink,
        stream,
        format!("server {}", cfg.server),
        CancellationToken::new(),
        reader,
        Some(counters),
    );
    let calls = Arc::new(Pending::default());
    let offers = Arc::new(Offers::default());
    let handle = SessionHandle {
        out: link.sender(),
        pending: link.pending(),
        calls: calls.clone(),
        read_only: welcome.read_only,
        offers: offers.clone(),
    };
    if welcome.read_only {
        tracing::info!(folder = %cfg.folder, server = %cfg.server, "the folder is shared read-only with this account: receiving only");
    }
    // Cancelling the session drops this future mid-await: the link and this guard still
    // fail every waiting request at once and stop the writer, so nothing waits for a dead
    // socket.
    let _calls = FailCalls(calls.clone());
    events.send(SessionEvent::Connected(handle));
    // What the server may read back follows the mode this session learnt: a read-only
    // grant makes the folder receive-only from this welcome on, not from the next one.
    let mode = if welcome.read_only {
        FolderMode::ReceiveOnly
    } else {
        cfg.mode
    };
    read_loop(
        (cfg, mode),
        &index,
        refreshing,
        &mut link,
        (&calls, &offers),
        events,
    )
    .await
}

/// `refreshing`: a refresh is under way (see [`stream::request_refresh`]).
async fn read_loop(
    (cfg, mode): (&SessionConfig, FolderMode),
    index: &Index,
    mut refreshing: bool,
    link: &mut Link<ServerMsg, ClientMsg>,
    (calls, offers): (&Pending<ServerMsg>, &Offers),
    events: &SessionEvents,
) -> Result<()> {
    let check = |request: &BlockRequest| {
        let owed = offered::check(request, mode, &cfg.rules.borrow(), offers, index);
        if let Err(why) = &owed {
            tracing::warn!(folder = %cfg.folder, server = %cfg.server, path = ?request.path.as_str(), "refused the server's request for a block, closing the connection: {why}");
        }
        owed
    };
    let named = |e: anyhow::Error| match e.downcast_ref::<conn::Stuck>() {
        Some(stuck) => anyhow!("server {}: {stuck}", cfg.server),
        None => e,
    };
    while let Some(msg) = link.next(&check).await.map_err(named)? {
        match msg {
            ServerMsg::Index {
                entries,
                inline,
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
                let bytes = check_inline(&entries, &inline)
                    .map_err(|why| anyhow!("protocol error from server {}: {why}", cfg.server))?;
                Counters::add(&cfg.counters.content_received, bytes as u64);
                hold_inline(&cfg.inline, &entries, inline);
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
            ServerMsg::Versions { id, .. }
            | ServerMsg::Restored { id, .. }
            | ServerMsg::Fetched { id, .. } => calls.complete(id, msg),
            ServerMsg::Error(e) => bail!("server error: {}", conn::peer_text(&e.message)),
            ServerMsg::Welcome(_) => bail!("protocol error: unexpected second Welcome"),
            ServerMsg::Invite(_) => bail!("protocol error: unexpected Invite"),
            ServerMsg::Sharing(_) => bail!("protocol error: unexpected Sharing"),
            // Handled by the link.
            ServerMsg::Ping { .. }
            | ServerMsg::Pong { .. }
            | ServerMsg::BlockRequest { .. }
            | ServerMsg::BlockResponse { .. }
            | ServerMsg::BlockList(_) => {}
        }
    }
    Ok(())
}

/// Checks the content that came with an index batch: each for an entry of the batch,
/// as long as that entry says, at most [`INLINE_BUDGET`] bytes together. Returns how
/// many bytes that is.
fn check_inline(entries: &[Entry], inline: &[Inline]) -> Result<usize, String> {
    let mut total = 0usize;
    for content in inline {
        let Some(entry) = entries.get(content.entry as usize) else {
            return Err(format!(
                "content for entry {} of an index batch of {} entries",
                content.entry,
                entries.len()
            ));
        };
        if content.data.len() as u64 != entry.size {
            return Err(format!(
                "{} bytes of content for {} of {} bytes",
                content.data.len(),
                entry.path,
                entry.size
            ));
        }
        total += content.data.len();
    }
    if total > INLINE_BUDGET {
        return Err(format!(
            "an index batch with {total} bytes of content, over the limit of {INLINE_BUDGET}"
        ));
    }
    Ok(total)
}

/// Holds the checked content of an index batch's live files until the pull applies
/// them (it verifies their hashes then).
fn hold_inline(store: &InlineStore, entries: &[Entry], inline: Vec<Inline>) {
    for content in inline {
        let entry = &entries[content.entry as usize];
        if entry.kind == EntryKind::File && !entry.deleted {
            store.put(entry.path.clone(), entry.hash, content.data);
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
