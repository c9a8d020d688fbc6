//! Plumbing shared by both ends of a device-to-server connection: byte counting,
//! matching block responses to requests, serving blocks from a folder, and keepalive
//! timing, assembled into [`Link`], the connection both ends hold after the hello.
//! Neither end's policy lives here. Beside it: the server's certificate and the
//! device's pin ([`tls`]) and the checks on what arrives from the network ([`received`]).

mod counters;
mod link;
pub mod lists;
pub mod received;
pub mod tls;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use filesync_proto::FrameError;
use filesync_proto::wire::{BlockError, BlockRequest, Entry, MAX_BLOCK_SIZE};
use tokio::sync::{mpsc, oneshot};

use crate::fs::beneath::Root;
use crate::fs::chunk;
use crate::fs::is_reserved;
use crate::fs::tree;

pub use counters::{Counted, Counters};
pub use link::{Link, Reader, Stuck, request_block};

/// A peer that sends no whole message for this long is considered gone: a silent
/// partition (a dropped NAT entry, a cable pulled on the far side) shows as this.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often each end pings the other, so that a live peer is never silent for
/// [`IDLE_TIMEOUT`]: three pings fit in it, so losing one or two to a slow moment
/// is not enough to drop a healthy connection.
pub const PING_INTERVAL: Duration = Duration::from_secs(10);
/// How long a connection may take from accept (or connect) to its Hello, whatever the
/// pace of its bytes, before it is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long we wait for one block.
pub const BLOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// A generous estimate of an entry's size in a wire message: what both ends cut their
/// batches by, so that one message stays well under the frame limit.
pub fn entry_size(entry: &Entry) -> usize {
    256 + entry.blocks.len() * 40
}

/// How long a connection's peer has been silent: [`Silence::expired`] completes once no
/// message has arrived for [`IDLE_TIMEOUT`]; [`Silence::heard`] restarts the count.
///
/// One deadline for the life of the read loop, not a timeout around each read: the loop
/// also wakes to send pings, and a timeout made anew at each wake-up would never expire
/// while pings go out, so a silent partition would never be noticed.
pub(super) struct Silence {
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl Silence {
    pub fn new() -> Silence {
        Silence {
            deadline: Box::pin(tokio::time::sleep(IDLE_TIMEOUT)),
        }
    }

    /// A message arrived.
    pub fn heard(&mut self) {
        self.deadline
            .as_mut()
            .reset(tokio::time::Instant::now() + IDLE_TIMEOUT);
    }

    /// Completes when the peer has been silent for [`IDLE_TIMEOUT`].
    pub async fn expired(&mut self) {
        self.deadline.as_mut().await
    }
}

impl Default for Silence {
    fn default() -> Silence {
        Silence::new()
    }
}

/// What a failed read from `peer` (e.g. "server HOST:PORT") means, in words for logs and
/// status: a connection that broke (cut by the network, reset, the peer gone) is told
/// apart from a message that does not decode.
pub fn read_failed(peer: &str, error: FrameError) -> anyhow::Error {
    use std::io::ErrorKind;
    match error {
        FrameError::Io(io) => match io.kind() {
            ErrorKind::UnexpectedEof => {
                anyhow::anyhow!("the connection to {peer} was cut (it ended without a TLS goodbye)")
            }
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
                anyhow::anyhow!("the connection to {peer} was reset")
            }
            _ => anyhow::anyhow!("the connection to {peer} failed: {io}"),
        },
        other => anyhow::Error::new(other).context(format!("bad message from {peer}")),
    }
}

/// Most messages written between two flushes: a long burst still reaches the peer in
/// pieces, and the sink's own buffer limit flushes sooner when messages are big.
const BURST: usize = 64;

/// Writes the messages queued on `rx` to `sink`, in order, until the queue closes or
/// the sink fails (`Ok`), or until one message cannot be written within
/// [`IDLE_TIMEOUT`]: the peer stopped reading, and the error says so. Either way the
/// caller then ends the connection, so that a peer that reads nothing cannot hold it,
/// nor every task waiting to queue a message to it, for ever. A block list too long
/// for one frame goes in pieces right before its message ([`lists`]).
///
/// Messages already queued when one is written go with it and the sink is flushed once
/// per burst: one TLS record and one `write` for many small messages, not one each.
/// The timeout is per message and per flush, never per burst, so that a slow but
/// reading peer is not taken for one that stopped.
pub(super) async fn write_queue<M, S>(mut sink: S, mut rx: mpsc::Receiver<M>) -> Result<(), String>
where
    M: link::Message,
    S: futures::Sink<M> + Unpin,
{
    use futures::SinkExt;
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut burst = 0;
        while let Some(mut msg) = next {
            let pieces = lists::split(msg.entries().into_iter(), lists::piece_blocks());
            for part in pieces.into_iter().map(M::block_list).chain([msg]) {
                if !in_time(sink.feed(part)).await? {
                    return Ok(());
                }
            }
            burst += 1;
            next = if burst < BURST {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        if !in_time(sink.flush()).await? {
            return Ok(());
        }
    }
    Ok(())
}

/// Runs one write of [`write_queue`]: true if it was done, false if the sink failed (the
/// connection is gone), an error if it took over [`IDLE_TIMEOUT`].
async fn in_time<E>(
    write: impl std::future::Future<Output = Result<(), E>>,
) -> Result<bool, String> {
    match tokio::time::timeout(IDLE_TIMEOUT, write).await {
        Ok(done) => Ok(done.is_ok()),
        Err(_) => Err(format!(
            "the peer read nothing for {}s",
            IDLE_TIMEOUT.as_secs()
        )),
    }
}

pub type BlockResult = Result<Vec<u8>, BlockError>;

/// Requests we sent and are waiting for, by id: block requests, and calls such as
/// listing versions. Once its connection is gone ([`Pending::fail_all`]) it takes no
/// new waiter: a request made through a handle that outlived its connection fails at
/// once instead of waiting [`BLOCK_TIMEOUT`] for an answer that cannot come.
pub struct Pending<T = BlockResult> {
    next: AtomicU64,
    /// `None` once the connection is gone.
    waiting: Mutex<Option<HashMap<u64, oneshot::Sender<T>>>>,
}

impl<T> Default for Pending<T> {
    fn default() -> Self {
        Pending {
            next: AtomicU64::new(0),
            waiting: Mutex::new(Some(HashMap::new())),
        }
    }
}

impl<T> Pending<T> {
    /// A fresh id and the receiver of its answer; `None` if the connection is gone.
    pub fn register(&self) -> Option<(u64, oneshot::Receiver<T>)> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.lock().as_mut()?.insert(id, tx);
        Some((id, rx))
    }

    /// Delivers a response; a response nobody asked for is ignored.
    pub fn complete(&self, id: u64, result: T) {
        if let Some(tx) = self.lock().as_mut().and_then(|w| w.remove(&id)) {
            let _ = tx.send(result);
        }
    }

    pub fn forget(&self, id: u64) {
        if let Some(w) = self.lock().as_mut() {
            w.remove(&id);
        }
    }

    /// Sends the request `make` builds around a fresh id on `out`, and waits at most
    /// [`BLOCK_TIMEOUT`] for its answer. `peer` names the other end in errors.
    pub async fn ask<M>(
        &self,
        out: &mpsc::Sender<M>,
        make: impl FnOnce(u64) -> M,
        peer: &str,
    ) -> anyhow::Result<T> {
        let closed = || anyhow::anyhow!("connection to {peer} closed");
        let (id, rx) = self.register().ok_or_else(closed)?;
        if out.send(make(id)).await.is_err() {
            self.forget(id);
            return Err(closed());
        }
        match tokio::time::timeout(BLOCK_TIMEOUT, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(closed()),
            Err(_) => {
                self.forget(id);
                anyhow::bail!("{peer} did not answer within {}s", BLOCK_TIMEOUT.as_secs())
            }
        }
    }

    /// The connection is gone: drops every waiter (their receivers see it) and refuses
    /// new ones.
    pub fn fail_all(&self) {
        self.lock().take();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<HashMap<u64, oneshot::Sender<T>>>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The longest part of a peer's text the daemon keeps, in characters: a message that
/// fills a frame must not make a status answer too big for the control socket.
const MAX_PEER_TEXT: usize = 1024;

/// A peer's text (an error message, a refusal's reason) as the daemon logs and shows
/// it: quoted, with control characters escaped, so that a CR or LF in it cannot forge a
/// log line, and cut to [`MAX_PEER_TEXT`] characters.
pub fn peer_text(text: &str) -> String {
    match text.char_indices().nth(MAX_PEER_TEXT) {
        Some((end, _)) => format!("{:?}…", &text[..end]),
        None => format!("{text:?}"),
    }
}

/// A message a peer sent where another was due, as an error names it: its `Debug` form
/// (which escapes the strings in it), cut to [`MAX_PEER_TEXT`] characters, since a
/// whole index batch would not fit in a status answer.
pub fn unexpected(msg: &impl std::fmt::Debug) -> String {
    let text = format!("{msg:?}");
    match text.char_indices().nth(MAX_PEER_TEXT) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text,
    }
}

/// Whether `req` names one block of `entry`: the offset where one starts, with its size
/// and hash.
pub fn is_block_of(entry: &Entry, req: &BlockRequest) -> bool {
    let mut at = 0u64;
    for block in &entry.blocks {
        if at == req.offset {
            return block.size == req.size && block.hash == req.hash;
        }
        if at > req.offset {
            return false;
        }
        at += u64::from(block.size);
    }
    false
}

/// [`serve_block`] from the folder whose root is at `root`.
pub fn serve_block_from(root: &std::path::Path, req: &BlockRequest) -> BlockResult {
    let root = Root::open(root).map_err(|_| BlockError::NotAvailable)?;
    serve_block(&root, req)
}

/// Answers a peer's block request from the folder at `root`: only regular files inside
/// the folder, never through a symlink, and only if the bytes still hash as asked.
pub fn serve_block(root: &Root, req: &BlockRequest) -> BlockResult {
    if req.size == 0 || req.size > MAX_BLOCK_SIZE {
        return Err(BlockError::Refused(format!(
            "block size {} is outside 1..={MAX_BLOCK_SIZE}",
            req.size
        )));
    }
    if req.path.components().any(is_reserved) {
        return Err(BlockError::Refused(format!(
            "{} is not a synced path",
            req.path
        )));
    }
    let data = tree::read_block(root, &req.path, req.offset, req.size)
        .map_err(|_| BlockError::NotAvailable)?;
    if chunk::sha256(&data) != req.hash {
        return Err(BlockError::NotAvailable);
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use filesync_proto::wire::ClientMsg;
    #[cfg(unix)]
    use filesync_proto::{Hash, RelPath};
    use std::task::{Context, Poll};

    /// Peer text is quoted with its control characters escaped, and cut.
    #[test]
    fn peer_text_is_quoted_and_bounded() {
        assert_eq!(peer_text("no\r\nforged line"), r#""no\r\nforged line""#);
        let long = "x".repeat(5000);
        assert_eq!(peer_text(&long).chars().count(), MAX_PEER_TEXT + 3);
        assert_eq!(unexpected(&long).chars().count(), MAX_PEER_TEXT + 1);
    }

    // Makes a symlink, a FIFO or a mode with Unix calls.
    #[cfg(unix)]
    #[test]
    fn serve_block_checks_hash_size_and_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::write(root.join("d/f"), b"0123456789").unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("out")).unwrap();
        std::fs::write(dir.path().join("secret"), b"0123456789").unwrap();
        std::os::unix::fs::symlink(root.join("d/f"), root.join("d/link")).unwrap();
        let root = Root::open(&root).unwrap();
        let req = |path: &str, size: u32, hash: Hash| BlockRequest {
            path: RelPath::new(path).unwrap(),
            offset: 2,
            size,
            hash,
        };
        let good = chunk::sha256(b"2345");
        assert_eq!(serve_block(&root, &req("d/f", 4, good)).unwrap(), b"2345");
        assert_eq!(
            serve_block(&root, &req("d/f", 4, Hash::ZERO)),
            Err(BlockError::NotAvailable)
        );
        assert!(matches!(
            serve_block(&root, &req("d/f", 0, good)),
            Err(BlockError::Refused(_))
        ));
        assert!(matches!(
            serve_block(&root, &req("d/f", MAX_BLOCK_SIZE + 1, good)),
            Err(BlockError::Refused(_))
        ));
        for through_a_link in ["out/secret", "d/link"] {
            assert_eq!(
                serve_block(&root, &req(through_a_link, 4, good)),
                Err(BlockError::NotAvailable)
            );
        }
        assert!(matches!(
            serve_block(&root, &req(".filesync-tmp-1", 4, good)),
            Err(BlockError::Refused(_))
        ));
    }

    /// A read loop that wakes every PING_INTERVAL to send a ping still notices a
    /// silent peer after IDLE_TIMEOUT, and a message postpones that by IDLE_TIMEOUT.
    #[tokio::test(start_paused = true)]
    async fn silence_expires_however_often_the_loop_wakes_to_ping() {
        let silent_for = |heard_at: Option<Duration>| async move {
            let start = tokio::time::Instant::now();
            let mut silence = Silence::new();
            let mut ping = tokio::time::interval(PING_INTERVAL);
            let mut heard = heard_at.map(|at| Box::pin(tokio::time::sleep(at)));
            loop {
                tokio::select! {
                    _ = ping.tick() => {}
                    () = async { heard.as_mut().unwrap().await }, if heard.is_some() => {
                        heard = None;
                        silence.heard();
                    }
                    () = silence.expired() => return start.elapsed(),
                }
            }
        };
        assert_eq!(silent_for(None).await, IDLE_TIMEOUT);
        let at = Duration::from_secs(12);
        assert_eq!(silent_for(Some(at)).await, at + IDLE_TIMEOUT);
    }

    #[test]
    fn a_broken_connection_is_not_called_a_bad_message() {
        use std::io::{Error, ErrorKind};
        let check = |error: FrameError, expected: &str| {
            let got = format!("{:#}", read_failed("server h:1", error));
            assert!(got.contains(expected), "{got:?} lacks {expected:?}");
        };
        let io = |kind: ErrorKind| FrameError::Io(Error::new(kind, "detail"));
        check(
            io(ErrorKind::UnexpectedEof),
            "connection to server h:1 was cut",
        );
        check(
            io(ErrorKind::ConnectionReset),
            "connection to server h:1 was reset",
        );
        check(
            io(ErrorKind::InvalidData),
            "connection to server h:1 failed: detail",
        );
        check(
            FrameError::Truncated,
            "bad message from server h:1: connection closed",
        );
        check(
            FrameError::TooLarge { len: 9, max: 8 },
            "bad message from server h:1: frame of 9 bytes",
        );
    }

    /// A sink that records what it was given and how often it was flushed.
    #[derive(Default)]
    struct Recorder {
        items: Vec<u64>,
        flushes: usize,
    }

    /// A message that stands for any: its nonce tells which it was.
    fn numbered(n: u64) -> ClientMsg {
        ClientMsg::Pong { nonce: n }
    }

    impl futures::Sink<ClientMsg> for Recorder {
        type Error = std::convert::Infallible;
        fn poll_ready(self: Pin<&mut Self>, _: &mut Context) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn start_send(self: Pin<&mut Self>, item: ClientMsg) -> Result<(), Self::Error> {
            if let ClientMsg::Pong { nonce } = item {
                self.get_mut().items.push(nonce);
            }
            Ok(())
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context) -> Poll<Result<(), Self::Error>> {
            self.get_mut().flushes += 1;
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A sink that takes `IDLE_TIMEOUT * 2 / 3` to take each message: a slow reader.
    #[derive(Default)]
    struct Slow {
        wait: Option<Pin<Box<tokio::time::Sleep>>>,
        taken: usize,
    }

    impl futures::Sink<ClientMsg> for Slow {
        type Error = std::convert::Infallible;
        fn poll_ready(self: Pin<&mut Self>, cx: &mut Context) -> Poll<Result<(), Self::Error>> {
            let me = self.get_mut();
            let wait = me
                .wait
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(IDLE_TIMEOUT * 2 / 3)));
            std::task::ready!(wait.as_mut().poll(cx));
            me.wait = None;
            Poll::Ready(Ok(()))
        }
        fn start_send(self: Pin<&mut Self>, _: ClientMsg) -> Result<(), Self::Error> {
            self.get_mut().taken += 1;
            Ok(())
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A burst that takes longer than IDLE_TIMEOUT to write, each message within it, is
    /// a slow peer, not one that stopped reading.
    #[tokio::test(start_paused = true)]
    async fn a_slow_burst_is_not_taken_for_a_peer_that_stopped_reading() {
        let (tx, rx) = mpsc::channel(4);
        for i in 0..3 {
            tx.try_send(numbered(i)).unwrap();
        }
        drop(tx);
        let mut sink = Slow::default();
        write_queue(&mut sink, rx).await.unwrap();
        assert_eq!(sink.taken, 3);
    }

    #[tokio::test]
    async fn queued_messages_go_out_in_order_with_one_flush_per_burst() {
        let (tx, rx) = mpsc::channel(2 * BURST);
        let n = BURST as u64 + 10;
        for i in 0..n {
            tx.try_send(numbered(i)).unwrap();
        }
        drop(tx);
        let mut sink = Recorder::default();
        write_queue(&mut sink, rx).await.unwrap();
        assert_eq!(sink.items, (0..n).collect::<Vec<_>>());
        assert_eq!(sink.flushes, 2, "one flush per burst of at most BURST");
    }

    #[tokio::test]
    async fn ask_gets_its_answer_and_fails_at_once_on_a_closed_connection() {
        let p: Pending<u64> = Pending::default();
        let (tx, mut rx) = mpsc::channel(4);
        let peer = async {
            let id = rx.recv().await.unwrap();
            p.complete(id, id + 100);
        };
        let (answer, ()) = tokio::join!(p.ask(&tx, |id| id, "the peer"), peer);
        assert_eq!(answer.unwrap(), 100);
        drop(rx);
        let err = p.ask(&tx, |id| id, "the peer").await.unwrap_err();
        assert_eq!(err.to_string(), "connection to the peer closed");
        assert!(
            p.lock().as_ref().is_some_and(|w| w.is_empty()),
            "a failed request is forgotten"
        );
    }

    /// A handle can outlive its connection by a moment (the folder task learns of the
    /// end after the session has failed its waiters): a request made then must fail at
    /// once, even though its message still fits in the dead writer's queue.
    #[tokio::test]
    async fn a_request_made_after_the_connection_ended_fails_at_once() {
        let p: Pending<u64> = Pending::default();
        let (tx, _rx_still_open) = mpsc::channel(4);
        p.fail_all();
        let err = tokio::time::timeout(Duration::from_secs(5), p.ask(&tx, |id| id, "the peer"))
            .await
            .expect("the request does not wait for an answer")
            .unwrap_err();
        assert_eq!(err.to_string(), "connection to the peer closed");
    }

    #[test]
    fn pending_routes_by_id() {
        let p: Pending = Pending::default();
        let (a, mut rx_a) = p.register().unwrap();
        let (b, rx_b) = p.register().unwrap();
        p.complete(b, Ok(vec![1]));
        p.complete(999, Ok(vec![]));
        assert_eq!(rx_b.blocking_recv().unwrap(), Ok(vec![1]));
        assert!(rx_a.try_recv().is_err());
        p.fail_all();
        assert!(rx_a.blocking_recv().is_err());
        assert!(
            p.register().is_none(),
            "a closed connection takes no new waiter"
        );
        let _ = a;
    }
}
