//! One device-to-server connection as both ends hold it, after the hello: the writer
//! task and its queue, the requests waiting for an answer, pings and the silence that
//! ends a connection, and the serving of the peer's block requests. [`Link::next`]
//! yields only the messages the role must decide on; dropping the link fails every
//! waiting request and stops the writer, so teardown is the same at both ends and safe
//! when the session's future is dropped mid-await.

use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use anyhow::{Result, anyhow, bail};
use filesync_proto::FrameError;
use filesync_proto::wire::{BlockError, BlockListPiece, BlockRequest, ClientMsg, Entry, ServerMsg};
use futures::{Sink, Stream, StreamExt};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::lists::Joiner;
use super::{BlockResult, Counters, IDLE_TIMEOUT, PING_INTERVAL, Pending, Silence, write_queue};

/// Block requests of the peer served at once. Serving must never stall reading, or a
/// push waiting for blocks would wait for ever: they run as tasks, this many at once.
const SERVING: usize = 16;

/// What a link needs of one direction's message type: the messages it sends itself,
/// and which arriving ones it handles.
pub trait Message: Send + Sized + 'static {
    fn ping() -> Self;
    fn pong(nonce: u64) -> Self;
    fn block_request(id: u64, request: BlockRequest) -> Self;
    fn block_response(id: u64, result: BlockResult) -> Self;
    fn block_list(piece: BlockListPiece) -> Self;
    /// The entries the message carries, whose block lists may be long.
    fn entries(&mut self) -> Vec<&mut Entry>;
    /// The message as the link sorts it.
    fn sort(self) -> Sorted<Self>;
}

/// An arriving message: plumbing the link handles, or one for the role.
pub enum Sorted<M> {
    Ping(u64),
    Pong,
    BlockRequest { id: u64, request: BlockRequest },
    BlockResponse { id: u64, result: BlockResult },
    BlockList(BlockListPiece),
    Role(M),
}

impl Message for ClientMsg {
    fn ping() -> Self {
        ClientMsg::Ping { nonce: 0 }
    }
    fn pong(nonce: u64) -> Self {
        ClientMsg::Pong { nonce }
    }
    fn block_request(id: u64, request: BlockRequest) -> Self {
        ClientMsg::BlockRequest { id, request }
    }
    fn block_response(id: u64, result: BlockResult) -> Self {
        ClientMsg::BlockResponse { id, result }
    }
    fn block_list(piece: BlockListPiece) -> Self {
        ClientMsg::BlockList(piece)
    }
    fn entries(&mut self) -> Vec<&mut Entry> {
        match self {
            ClientMsg::Push { changes, .. } => changes.iter_mut().map(|c| &mut c.entry).collect(),
            _ => Vec::new(),
        }
    }
    fn sort(self) -> Sorted<Self> {
        match self {
            ClientMsg::Ping { nonce } => Sorted::Ping(nonce),
            ClientMsg::Pong { .. } => Sorted::Pong,
            ClientMsg::BlockRequest { id, request } => Sorted::BlockRequest { id, request },
            ClientMsg::BlockResponse { id, result } => Sorted::BlockResponse { id, result },
            ClientMsg::BlockList(piece) => Sorted::BlockList(piece),
            other => Sorted::Role(other),
        }
    }
}

impl Message for ServerMsg {
    fn ping() -> Self {
        ServerMsg::Ping { nonce: 0 }
    }
    fn pong(nonce: u64) -> Self {
        ServerMsg::Pong { nonce }
    }
    fn block_request(id: u64, request: BlockRequest) -> Self {
        ServerMsg::BlockRequest { id, request }
    }
    fn block_response(id: u64, result: BlockResult) -> Self {
        ServerMsg::BlockResponse { id, result }
    }
    fn block_list(piece: BlockListPiece) -> Self {
        ServerMsg::BlockList(piece)
    }
    fn entries(&mut self) -> Vec<&mut Entry> {
        match self {
            ServerMsg::Index { entries, .. } => entries.iter_mut().collect(),
            _ => Vec::new(),
        }
    }
    fn sort(self) -> Sorted<Self> {
        match self {
            ServerMsg::Ping { nonce } => Sorted::Ping(nonce),
            ServerMsg::Pong { .. } => Sorted::Pong,
            ServerMsg::BlockRequest { id, request } => Sorted::BlockRequest { id, request },
            ServerMsg::BlockResponse { id, result } => Sorted::BlockResponse { id, result },
            ServerMsg::BlockList(piece) => Sorted::BlockList(piece),
            other => Sorted::Role(other),
        }
    }
}

/// A role's check of a block request as it arrives: an `Err` is sent back as a refusal
/// and ends the connection.
pub type Check<'a> = &'a (dyn Fn(&BlockRequest) -> Result<(), String> + Sync);

/// Reads one block the peer asked for, off the runtime.
pub type Reader = Arc<dyn Fn(&BlockRequest) -> BlockResult + Send + Sync>;

/// The peer stopped reading: a message to it could not be written within
/// [`IDLE_TIMEOUT`]. Typed because the roles word it differently: the server logs it as
/// it is, the device names the server in it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Stuck(String);

/// One connection: `In` arrives, `Out` is sent.
pub struct Link<In, Out> {
    stream: Pin<Box<dyn Stream<Item = Result<In, FrameError>> + Send>>,
    out: mpsc::Sender<Out>,
    /// Our block requests waiting for the peer's answer.
    pending: Arc<Pending>,
    writer: JoinHandle<()>,
    /// Cancelled when the writer ends, and by whoever ends the connection; `next` then
    /// yields nothing more.
    closed: CancellationToken,
    /// Why the writer gave up, if it did: the peer stopped reading.
    stuck: Arc<Mutex<Option<String>>>,
    ping: tokio::time::Interval,
    silence: Silence,
    serving: Arc<Semaphore>,
    reader: Reader,
    /// Where the content bytes of blocks are counted, for a device's status.
    counters: Option<Arc<Counters>>,
    /// The other end as errors name it ("device", "server HOST:PORT").
    peer: String,
    /// The pieces of long block lists waiting for their message.
    joiner: Joiner,
    _in: PhantomData<fn() -> In>,
}

impl<In: Message, Out: Message> Link<In, Out> {
    /// Starts the writer of `sink`. `closed` ends the link when cancelled, and is
    /// cancelled when the writer ends.
    pub fn new<Si, St>(
        sink: Si,
        stream: St,
        peer: String,
        closed: CancellationToken,
        reader: Reader,
        counters: Option<Arc<Counters>>,
    ) -> Link<In, Out>
    where
        Si: Sink<Out> + Unpin + Send + 'static,
        St: Stream<Item = Result<In, FrameError>> + Send + 'static,
    {
        let (out, queue) = mpsc::channel::<Out>(64);
        let stuck = Arc::new(Mutex::new(None));
        let (why, stop) = (stuck.clone(), closed.clone());
        let writer = tokio::spawn(async move {
            if let Err(e) = write_queue(sink, queue).await {
                *why.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
            }
            stop.cancel();
        });
        Link {
            stream: Box::pin(stream),
            out,
            pending: Arc::new(Pending::default()),
            writer,
            closed,
            stuck,
            ping: tokio::time::interval(PING_INTERVAL),
            silence: Silence::new(),
            serving: Arc::new(Semaphore::new(SERVING)),
            reader,
            counters,
            peer,
            joiner: Joiner::default(),
            _in: PhantomData,
        }
    }

    /// The queue to the writer, for the role's flows that send.
    pub fn sender(&self) -> mpsc::Sender<Out> {
        self.out.clone()
    }

    /// Our requests waiting for an answer, for [`request_block`].
    pub fn pending(&self) -> Arc<Pending> {
        self.pending.clone()
    }

    /// The next message the role must decide on; `None` once the connection ended
    /// (closed by the peer, or `closed` cancelled). Pings, pongs, the peer's block
    /// requests and its answers to ours are handled here.
    pub async fn next(&mut self, check: Check<'_>) -> Result<Option<In>> {
        loop {
            let msg = tokio::select! {
                // The writer's verdict first: a peer that stops reading also falls
                // silent, and while a reply waited for room both come due at once.
                biased;
                _ = self.closed.cancelled() => {
                    let stuck = self.stuck.lock().unwrap_or_else(|e| e.into_inner()).take();
                    return match stuck {
                        Some(why) => Err(Stuck(why).into()),
                        None => Ok(None),
                    };
                }
                _ = self.ping.tick() => {
                    let _ = self.out.try_send(Out::ping());
                    continue;
                }
                () = self.silence.expired() => {
                    bail!("{} sent nothing for {}s", self.peer, IDLE_TIMEOUT.as_secs())
                }
                msg = self.stream.next() => msg,
            };
            self.silence.heard();
            let msg = match msg {
                None => return Ok(None),
                Some(m) => m.map_err(|e| super::read_failed(&self.peer, e))?,
            };
            let sorted = msg.sort();
            if self.joiner.waiting() && !matches!(sorted, Sorted::BlockList(_) | Sorted::Role(_)) {
                bail!(
                    "protocol error: {} sent another message between the pieces of a block list and their message",
                    self.peer
                );
            }
            match sorted {
                Sorted::BlockList(piece) => {
                    let added = self.joiner.add(piece);
                    added.map_err(|why| anyhow!("protocol error from {}: {why}", self.peer))?;
                }
                Sorted::Ping(nonce) => {
                    let _ = self.out.send(Out::pong(nonce)).await;
                }
                Sorted::Pong => {}
                Sorted::BlockResponse { id, result } => {
                    if let (Ok(data), Some(c)) = (&result, &self.counters) {
                        Counters::add(&c.content_received, data.len() as u64);
                    }
                    self.pending.complete(id, result);
                }
                Sorted::BlockRequest { id, request } => self.serve(id, request, check).await?,
                Sorted::Role(mut msg) => {
                    let joined = self.joiner.join(msg.entries().into_iter());
                    joined.map_err(|why| anyhow!("protocol error from {}: {why}", self.peer))?;
                    return Ok(Some(msg));
                }
            }
        }
    }

    async fn serve(&mut self, id: u64, request: BlockRequest, check: Check<'_>) -> Result<()> {
        if let Err(why) = check(&request) {
            let result = Err(BlockError::Refused(why.clone()));
            let _ = self.out.send(Out::block_response(id, result)).await;
            bail!(
                "{} asked for content this device never offered: {why}",
                self.peer
            );
        }
        let permit = self.serving.clone().acquire_owned().await?;
        let (out, reader, counters) =
            (self.out.clone(), self.reader.clone(), self.counters.clone());
        tokio::spawn(async move {
            let result = tokio::task::spawn_blocking(move || reader(&request))
                .await
                .unwrap_or(Err(BlockError::NotAvailable));
            if let (Ok(data), Some(c)) = (&result, &counters) {
                Counters::add(&c.content_sent, data.len() as u64);
            }
            let _ = out.send(Out::block_response(id, result)).await;
            drop(permit);
        });
        Ok(())
    }

    /// Ends the link, letting the writer send what is queued (such as why the connection
    /// ends) for at most `within`, once every other sender is gone.
    pub async fn flush(mut self, within: std::time::Duration) {
        let (out, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.out, out));
        if tokio::time::timeout(within, &mut self.writer)
            .await
            .is_err()
        {
            self.writer.abort();
        }
    }
}

impl<In, Out> Drop for Link<In, Out> {
    fn drop(&mut self) {
        self.closed.cancel();
        self.pending.fail_all();
        self.writer.abort();
    }
}

/// Asks the peer for a block through `out`, waiting in `pending`; `peer` names it
/// ("the device", "the server") in errors. `None`: the peer no longer has it
/// ([`BlockError::NotAvailable`]), which each role words its own way.
pub async fn request_block<Out: Message>(
    out: &mpsc::Sender<Out>,
    pending: &Pending,
    request: BlockRequest,
    peer: &str,
) -> Result<Option<Vec<u8>>> {
    let asked = pending.ask(out, |id| Out::block_request(id, request), peer);
    match asked.await? {
        Ok(data) => Ok(Some(data)),
        Err(BlockError::NotAvailable) => Ok(None),
        Err(BlockError::Refused(why)) => {
            bail!("{peer} refused a block request: {}", super::peer_text(&why))
        }
    }
}
