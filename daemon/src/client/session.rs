//! A client folder's connection to its server: connect (TLS, handshake and credentials,
//! through [`super::trust::TrustStore::login`]), say hello, then
//! store every index batch the server sends, route block responses, serve the
//! server's block requests, and keep the connection alive. Reconnects with backoff.
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
use super::trust::TrustStore;
use crate::conn::received;
use crate::conn::{self, Counters, Pending};
use crate::fs::ignore::IgnoreRules;
use crate::index::{Index, Meta};

/// A block request the server answered with "not available": the entry we asked about
/// is not what the server holds (any more). Once is a race with a newer version on its
/// way; again, and this device's view of the server may have drifted (see
/// [`request_refresh`]).
#[derive(Debug, thiserror::Error)]
#[error("the server no longer has that content")]
pub struct ServerLacks;

/// Asks the next session to read the server's whole index again. The folder task calls
/// it with no session running, so that no index batch lands in between.
///
/// The session that starts it marks every server entry we hold unconfirmed and says
/// hello from sequence 0 (the server then sends every entry it has, at its current
/// path); renames this device already took in are skipped as always. Once caught up,
/// what was not sent again is what the server no longer has: dropped, or a tombstone
/// where a local copy derives from it ([`Index::end_refresh`]). A refresh cut off by a
/// disconnect goes on from where it was.
pub fn request_refresh(index: &Index) -> Result<()> {
    index.set_meta(Meta::Refresh, REFRESH_ASKED)
}

/// Starts the refresh asked for, if any: every remote entry unconfirmed, the stream back
/// to sequence 0, where rename records stand kept. True if it started.
fn begin_refresh(index: &Index) -> Result<bool> {
    if index.meta(Meta::Refresh)? != Some(REFRESH_ASKED) {
        return Ok(false);
    }
    index.batch(|ix| {
        ix.start_refresh()?;
        ix.set_meta(Meta::Renamed, renamed(ix)? as i64)?;
        ix.set_meta(Meta::Refresh, REFRESH_UNDER_WAY)?;
        ix.set_meta(Meta::Since, 0)
    })?;
    Ok(true)
}

/// The values of [`Meta::Refresh`]: asked for, or under way.
const REFRESH_ASKED: i64 = 1;
const REFRESH_UNDER_WAY: i64 = 2;

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
    if begin_refresh(&index)? {
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
    let refreshing = index.meta(Meta::Refresh)? == Some(REFRESH_UNDER_WAY);
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

/// `refreshing`: a refresh is under way (see [`request_refresh`]).
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
                let batch = Batch {
                    up_to,
                    as_of,
                    caught_up,
                };
                let dropped = index.batch(|ix| store_batch(ix, &entries, batch, refreshing))?;
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

/// Where an index batch brings the device (see [`ServerMsg::Index`]).
#[derive(Debug, Clone, Copy)]
struct Batch {
    up_to: u64,
    as_of: u64,
    caught_up: bool,
}

/// Where the rename records taken in stand: before this layout kept it, the received
/// sequence.
fn renamed(ix: &Index) -> Result<u64> {
    match ix.meta(Meta::Renamed)? {
        Some(r) => Ok(r as u64),
        None => Ok(ix.meta(Meta::Since)?.unwrap_or(0) as u64),
    }
}

/// Stores an index batch in `ix`: the rename records not taken in yet, then the entries
/// (at their paths as of after those renames), then where the stream stands. With
/// `refreshing`, the batch that catches up ends the refresh, and then the number of
/// entries it dropped is returned.
fn store_batch(
    ix: &Index,
    entries: &[Entry],
    batch: Batch,
    refreshing: bool,
) -> Result<Option<usize>> {
    let renamed = renamed(ix)?;
    for e in entries {
        if let Some(src) = &e.renamed_from
            && e.seq > renamed
        {
            ix.take_remote_rename(e.seq, src, &e.path)?;
        }
    }
    for e in entries.iter().filter(|e| e.renamed_from.is_none()) {
        ix.put_remote(e, batch.as_of)?;
    }
    ix.set_meta(Meta::Renamed, renamed.max(batch.as_of) as i64)?;
    ix.set_meta(Meta::Since, batch.up_to as i64)?;
    if batch.caught_up && refreshing {
        ix.delete_meta(Meta::Refresh)?;
        return ix.end_refresh(batch.as_of).map(Some);
    }
    Ok(None)
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

#[cfg(test)]
mod tests {
    use filesync_proto::wire::EntryKind;

    use super::*;
    use crate::index::LocalRow;
    use crate::index::tests::file_entry;
    use crate::server::sequencer::commit::may_rename;
    use crate::server::stream::Cursor;

    fn path(p: &str) -> RelPath {
        RelPath::new(p).unwrap()
    }

    fn open(name: &str) -> (tempfile::TempDir, Index) {
        let dir = tempfile::tempdir().unwrap();
        let ix = Index::open(&dir.path().join(name)).unwrap();
        (dir, ix)
    }

    /// A server folder's index, changed the way the sequencer changes it.
    struct Server {
        _dir: tempfile::TempDir,
        ix: Index,
        next: u64,
    }

    impl Server {
        fn new() -> Server {
            let (dir, ix) = open("server.db");
            Server {
                _dir: dir,
                ix,
                next: 1,
            }
        }

        fn commit(&mut self, at: &str, kind: EntryKind, deleted: bool) {
            let mut entry = file_entry(at, self.next, at.as_bytes());
            if kind == EntryKind::Dir {
                entry.kind = kind;
                entry.blocks.clear();
                entry.size = 0;
            }
            entry.deleted = deleted;
            self.next += 1;
            let row = LocalRow {
                entry,
                inode: 0,
                dirty: false,
            };
            self.ix.put_local(&row).unwrap();
        }

        /// `Sequencer::try_rename`, refusing what [`may_rename`] refuses.
        fn rename(&mut self, from: &str, to: &str) {
            let (from, to) = (path(from), path(to));
            let mut target = file_entry(to.as_str(), 0, b"");
            target.kind = EntryKind::Dir;
            if !may_rename(&self.ix, &from, &target).unwrap() {
                return;
            }
            let seq = self.next;
            self.next += 1;
            self.ix
                .batch(|ix| {
                    ix.move_local(&from, &to)?;
                    ix.add_rename(seq, &from, &to)
                })
                .unwrap();
            self.commit(to.as_str(), EntryKind::Dir, false);
        }

        fn live(&self, kind: Option<EntryKind>) -> Vec<String> {
            let mut live: Vec<String> = (self.ix.all_local().unwrap().into_values())
                .filter(|r| !r.entry.deleted && kind.is_none_or(|k| r.entry.kind == k))
                .map(|r| r.entry.path.to_string())
                .collect();
            live.sort();
            live
        }
    }

    /// A device's index and its connection's place in the server's stream.
    struct Device {
        _dir: tempfile::TempDir,
        ix: Index,
        stream: Option<Cursor>,
        refreshing: bool,
    }

    impl Device {
        fn new() -> Device {
            let (dir, ix) = open("device.db");
            Device {
                _dir: dir,
                ix,
                stream: None,
                refreshing: false,
            }
        }

        /// Takes in what the stream sends next, connecting first if need be; false once
        /// there is nothing more to read.
        fn receive(&mut self, server: &Server) -> bool {
            let since = self.ix.meta(Meta::Since).unwrap().unwrap_or(0) as u64;
            let cursor = self.stream.get_or_insert_with(|| Cursor::new(since));
            let (messages, more) = cursor.next(&server.ix).unwrap();
            for msg in messages {
                let ServerMsg::Index {
                    entries,
                    up_to,
                    as_of,
                    caught_up: done,
                } = msg
                else {
                    panic!("not an index batch: {msg:?}");
                };
                let batch = Batch {
                    up_to,
                    as_of,
                    caught_up: done,
                };
                let refreshing = self.refreshing;
                let dropped = (self.ix)
                    .batch(|ix| store_batch(ix, &entries, batch, refreshing))
                    .unwrap();
                self.refreshing &= dropped.is_none();
            }
            more
        }

        fn catch_up(&mut self, server: &Server) {
            for _ in 0..10_000 {
                if !self.receive(server) {
                    return;
                }
            }
            panic!("the device never caught up");
        }

        /// The server entries this device holds as live (it has no local rows, or only
        /// ones that match, so every other one is needed).
        fn live(&self, kind: Option<EntryKind>) -> Vec<String> {
            let mut live: Vec<String> = (self.ix.needed(100_000).unwrap().into_iter())
                .filter(|e| !e.deleted && kind.is_none_or(|k| e.kind == k))
                .map(|e| e.path.to_string())
                .collect();
            live.sort();
            live
        }
    }

    /// The soak's failure in its smallest form: a directory renamed away, another one
    /// renamed into its old name. A device that joins afterwards gets the second one's
    /// entries at their new paths, with numbers from before the first rename.
    #[test]
    fn a_rename_does_not_move_entries_read_after_it() {
        let mut server = Server::new();
        server.commit("a", EntryKind::Dir, false);
        server.commit("a/x", EntryKind::File, false);
        server.commit("c", EntryKind::Dir, false);
        server.commit("c/y", EntryKind::File, false);
        let mut following = Device::new();
        following.catch_up(&server);
        server.rename("a", "b");
        server.rename("c", "a");
        following.catch_up(&server);
        let mut joining = Device::new();
        joining.catch_up(&server);
        let want = ["a", "a/y", "b", "b/x"];
        assert_eq!(server.live(None), want);
        assert_eq!(following.live(None), want, "a device that followed");
        assert_eq!(joining.live(None), want, "a device that joined after");
    }

    /// Random directory moves, creates and deletes among a few names, with devices
    /// reading the stream and reconnecting in between: every device ends with exactly
    /// the server's live entries.
    #[test]
    fn devices_follow_any_mix_of_renames() {
        let names = ["a", "b", "c"];
        let dirs: Vec<String> = (names.iter().map(|n| n.to_string()))
            .chain(
                names
                    .iter()
                    .flat_map(|p| names.iter().map(move |n| format!("{p}/{n}"))),
            )
            .collect();
        for seed in 1..=40u64 {
            let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let mut next = |n: usize| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                (rng % n as u64) as usize
            };
            let mut server = Server::new();
            let mut devices = [Device::new(), Device::new()];
            for _ in 0..200 {
                let live_dirs = server.live(Some(EntryKind::Dir));
                let parent_ok = |p: &str| {
                    path(p)
                        .parent()
                        .is_none_or(|d| live_dirs.contains(&d.to_string()))
                };
                match next(8) {
                    0 | 1 => {
                        let dir = &dirs[next(dirs.len())];
                        if !live_dirs.contains(dir) && parent_ok(dir) {
                            server.commit(dir, EntryKind::Dir, false);
                        }
                    }
                    2 if !live_dirs.is_empty() => {
                        let dir = &live_dirs[next(live_dirs.len())];
                        server.commit(&format!("{dir}/f{}", next(2)), EntryKind::File, false);
                    }
                    3 => {
                        let files = server.live(Some(EntryKind::File));
                        if !files.is_empty() {
                            server.commit(&files[next(files.len())], EntryKind::File, true);
                        }
                    }
                    4 if !live_dirs.is_empty() => {
                        let from = &live_dirs[next(live_dirs.len())];
                        let to = &dirs[next(dirs.len())];
                        if parent_ok(to) {
                            server.rename(from, to);
                        }
                    }
                    5 => devices[next(2)].stream = None,
                    _ => {
                        devices[next(2)].receive(&server);
                    }
                }
            }
            for (i, device) in devices.iter_mut().enumerate() {
                device.catch_up(&server);
                assert_eq!(
                    device.live(None),
                    server.live(None),
                    "seed {seed}, device {i}"
                );
            }
        }
    }

    /// A device whose view of the server drifted (entries the server never had) reads
    /// the whole index again: what the server lacks goes, as a tombstone where a local
    /// copy derives from it, and renames it took in before are not queued again.
    #[test]
    fn a_refresh_drops_what_the_server_lacks() {
        let mut server = Server::new();
        server.commit("a", EntryKind::Dir, false);
        server.commit("a/x", EntryKind::File, false);
        server.rename("a", "b");
        let mut device = Device::new();
        device.catch_up(&server);
        device.ix.remove_rename(3).unwrap();
        let mut ghost_dir = file_entry("g", 2, b"");
        ghost_dir.kind = EntryKind::Dir;
        ghost_dir.blocks.clear();
        device.ix.put_remote(&ghost_dir, 2).unwrap();
        device
            .ix
            .put_remote(&file_entry("g/f", 2, b"f"), 2)
            .unwrap();
        let row = LocalRow {
            entry: ghost_dir,
            inode: 0,
            dirty: false,
        };
        device.ix.put_local(&row).unwrap();

        request_refresh(&device.ix).unwrap();
        assert!(begin_refresh(&device.ix).unwrap());
        device.stream = None;
        device.refreshing = true;
        device.catch_up(&server);
        assert!(!device.refreshing, "the refresh ended");
        assert_eq!(device.ix.meta(Meta::Refresh).unwrap(), None);
        assert_eq!(device.live(None), server.live(None));
        let ghost = device.ix.remote(&path("g")).unwrap().unwrap();
        assert!(ghost.deleted && ghost.seq > 2, "{ghost:?}");
        assert_eq!(device.ix.remote(&path("g/f")).unwrap(), None);
        assert!(
            device.ix.renames(0, u64::MAX).unwrap().is_empty(),
            "a rename taken in before the refresh is not queued again"
        );
    }
}
