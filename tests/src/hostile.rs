//! A hostile peer for the security tests: it speaks the real protocol with the
//! `filesync-proto` types, and can also send bytes no honest peer would.
//!
//! * [`connect_with`] is the only place that opens a device connection (TCP, the frozen
//!   handshake, Hello for a folder); a change to how devices connect changes it alone.
//! * [`Device`] sends messages or raw bytes on such a connection and reads the answers.
//! * [`accept_device`] plays the server for a real client ([`ServerEnd`]).
//! * [`Raw`] is a bare TCP connection for what goes wrong before Hello.
//! * [`splice_path`] puts any bytes where a message holds a path, since a `RelPath` that
//!   fails validation cannot be built.
//! * [`file_entry`] describes content as a device would push it.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use filesync_proto::frame::encode_payload;
use filesync_proto::wire::{
    BlockInfo, BlockRequest, Change, ClientMsg, Entry, EntryKind, Hello, MAX_BLOCK_SIZE,
    PushOutcome, ServerMsg, Welcome,
};
use filesync_proto::{
    DeviceId, FolderName, FrameCodec, Handshake, HandshakeReply, Hash, MAX_WIRE_FRAME, RelPath,
};
use sha2::{Digest, Sha256};
use tokio_util::codec::{Decoder, Encoder};

/// How long one read waits before the peer is taken to be silent.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A path no test uses, put into a message and then replaced by [`splice_path`].
pub const PLACEHOLDER: &str = "hostile-placeholder-path";

/// Opens a device connection to the server at `addr` for `folder` as `device`, knowing
/// nothing yet ([`connect_with`]).
pub fn connect(addr: &str, device: &str, folder: &str) -> Result<(Device, Welcome), String> {
    connect_with(
        addr,
        Hello {
            device: DeviceId::new(device).map_err(|e| e.to_string())?,
            device_name: "hostile".into(),
            folder: FolderName::new(folder).map_err(|e| e.to_string())?,
            since_seq: 0,
            epoch: 0,
        },
    )
}

/// Opens a device connection to the server at `addr`: TCP, handshake, then `hello`.
/// Returns the connection and the Welcome.
pub fn connect_with(addr: &str, hello: Hello) -> Result<(Device, Welcome), String> {
    let mut raw = Raw::connect(addr)?;
    let mut hs = FrameCodec::<HandshakeReply, Handshake>::new(1024);
    let mut out = BytesMut::new();
    hs.encode(Handshake::current(), &mut out)
        .map_err(|e| e.to_string())?;
    raw.write(&out)?;
    let mut buf = BytesMut::new();
    let reply = read_frame(&mut raw.stream, &mut hs, &mut buf)?
        .ok_or("the server closed the connection during the handshake")?;
    reply.check()?;
    let mut conn = Device {
        raw,
        codec: FrameCodec::new(MAX_WIRE_FRAME),
        buf,
    };
    conn.send(ClientMsg::Hello(hello))?;
    match conn.recv()? {
        Some(ServerMsg::Welcome(w)) => Ok((conn, w)),
        other => Err(format!("expected Welcome, got {other:?}")),
    }
}

/// Plays the server for one connection from a real client on `listener`: reads its
/// handshake and Hello, accepts them and welcomes it as `server` with `current_seq`.
pub fn accept_device(
    listener: &std::net::TcpListener,
    server: &str,
    current_seq: u64,
) -> Result<(ServerEnd, Hello), String> {
    let (stream, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut raw = Raw { stream };
    let mut hs = FrameCodec::<Handshake, HandshakeReply>::new(1024);
    let mut buf = BytesMut::new();
    read_frame(&mut raw.stream, &mut hs, &mut buf)?
        .ok_or("the client closed the connection during the handshake")?
        .check()?;
    let mut out = BytesMut::new();
    hs.encode(HandshakeReply::accept(), &mut out)
        .map_err(|e| e.to_string())?;
    raw.write(&out)?;
    let mut conn = ServerEnd {
        raw,
        codec: FrameCodec::new(MAX_WIRE_FRAME),
        buf,
    };
    let hello = match conn.recv()? {
        Some(ClientMsg::Hello(h)) => h,
        other => return Err(format!("expected Hello, got {other:?}")),
    };
    conn.send(ServerMsg::Welcome(Welcome {
        server: DeviceId::new(server).map_err(|e| e.to_string())?,
        epoch: 1,
        current_seq,
    }))?;
    Ok((conn, hello))
}

/// A bare TCP connection to a server, for raw bytes.
pub struct Raw {
    stream: TcpStream,
}

impl Raw {
    pub fn connect(addr: &str) -> Result<Raw, String> {
        let stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .map_err(|e| e.to_string())?;
        Ok(Raw { stream })
    }

    /// Our end's address, which the server logs as the peer.
    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().expect("a connected socket")
    }

    /// Sends `bytes`; an error means the server already closed the connection.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream
            .write_all(bytes)
            .map_err(|e| format!("write: {e}"))
    }

    /// Sends `chunk` again and again without reading anything, until the peer stops
    /// taking bytes (a write waits more than a second); returns how many were sent.
    /// `Err` if the peer still takes them after `max_rounds`.
    pub fn fill(&mut self, chunk: &[u8], max_rounds: usize) -> Result<usize, String> {
        self.stream
            .set_write_timeout(Some(Duration::from_secs(1)))
            .map_err(|e| e.to_string())?;
        for round in 0..max_rounds {
            if let Err(e) = self.stream.write_all(chunk) {
                return match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Ok(round),
                    _ => Err(format!("write: {e}")),
                };
            }
        }
        Err(format!("the peer still reads after {max_rounds} rounds"))
    }

    /// Closes our sending side: the server reads EOF.
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
    }

    /// Reads and drops whatever the server sends until it closes the connection, and
    /// returns how long that took; `Err` if it is still open after `timeout`.
    pub fn wait_closed(&mut self, timeout: Duration) -> Result<Duration, String> {
        let start = Instant::now();
        let mut sink = [0u8; 4096];
        // Bounded by the deadline: each read waits at most the time left.
        loop {
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(format!(
                    "the server kept the connection open for {timeout:?}"
                ));
            }
            self.stream
                .set_read_timeout(Some(left))
                .map_err(|e| e.to_string())?;
            match self.stream.read(&mut sink) {
                Ok(0) => return Ok(start.elapsed()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return Ok(start.elapsed());
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }
}

/// One end of a device connection after Hello, reading `In` and writing `Out`.
pub struct Conn<In, Out> {
    raw: Raw,
    codec: FrameCodec<In, Out>,
    buf: BytesMut,
}

/// The device's end: it reads what a server sends.
pub type Device = Conn<ServerMsg, ClientMsg>;
/// The server's end, for a fake server that talks to a real client.
pub type ServerEnd = Conn<ClientMsg, ServerMsg>;

impl<In, Out> Conn<In, Out>
where
    FrameCodec<In, Out>: Decoder<Item = In, Error = filesync_proto::FrameError>
        + Encoder<Out, Error = filesync_proto::FrameError>,
{
    pub fn local_addr(&self) -> SocketAddr {
        self.raw.local_addr()
    }

    pub fn send(&mut self, msg: Out) -> Result<(), String> {
        let mut out = BytesMut::new();
        self.codec
            .encode(msg, &mut out)
            .map_err(|e| e.to_string())?;
        self.raw.write(&out)
    }

    /// Sends bytes as they are: frames no honest peer would write.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.raw.write(bytes)
    }

    /// The next message, `None` when the peer closed the connection.
    pub fn recv(&mut self) -> Result<Option<In>, String> {
        read_frame(&mut self.raw.stream, &mut self.codec, &mut self.buf)
    }

    /// The raw connection, to wait for the peer to close it.
    pub fn into_raw(self) -> Raw {
        self.raw
    }
}

impl Device {
    /// The paths of the index the server streams until it says the device is caught up.
    pub fn read_index(&mut self) -> Result<Vec<String>, String> {
        let mut paths = Vec::new();
        // Bounded by count: an index longer than this is a bug in the test.
        for _ in 0..10_000 {
            match self.recv()? {
                Some(ServerMsg::Index {
                    entries, caught_up, ..
                }) => {
                    paths.extend(entries.iter().map(|e| e.path.to_string()));
                    if caught_up {
                        return Ok(paths);
                    }
                }
                Some(ServerMsg::Ping { nonce }) => self.send(ClientMsg::Pong { nonce })?,
                Some(_) => {}
                None => return Err("the server closed the connection".into()),
            }
        }
        Err("no caught-up index after 10000 messages".into())
    }

    /// Pushes `changes` and answers the server's block requests with `block` until the
    /// push's result arrives; other messages (index, pings) are read and dropped.
    pub fn push(
        &mut self,
        id: u64,
        changes: Vec<Change>,
        block: &dyn Fn(&BlockRequest) -> Vec<u8>,
    ) -> Result<Vec<PushOutcome>, String> {
        self.send(ClientMsg::Push { id, changes })?;
        // Bounded by count: a push answered by more messages than this is a bug.
        for _ in 0..100_000 {
            match self.recv()? {
                Some(ServerMsg::PushResult { id: got, outcomes }) if got == id => {
                    return Ok(outcomes);
                }
                Some(ServerMsg::BlockRequest { id, request }) => {
                    let data = block(&request);
                    self.send(ClientMsg::BlockResponse {
                        id,
                        result: Ok(data),
                    })?;
                }
                Some(ServerMsg::Ping { nonce }) => self.send(ClientMsg::Pong { nonce })?,
                Some(ServerMsg::Error(e)) => return Err(format!("server error: {}", e.message)),
                Some(_) => {}
                None => return Err("the server closed the connection during a push".into()),
            }
        }
        Err("no push result after 100000 messages".into())
    }
}

fn read_frame<In, Out>(
    stream: &mut TcpStream,
    codec: &mut FrameCodec<In, Out>,
    buf: &mut BytesMut,
) -> Result<Option<In>, String>
where
    FrameCodec<In, Out>: Decoder<Item = In, Error = filesync_proto::FrameError>,
{
    let mut chunk = [0u8; 64 * 1024];
    // Bounded by the frame limit: each round reads at least one byte or ends.
    loop {
        if let Some(msg) = codec.decode(buf).map_err(|e| e.to_string())? {
            return Ok(Some(msg));
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(None),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(None),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

/// A frame: the length prefix, then `payload`.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// The encoded `msg` with the [`PLACEHOLDER`] path replaced by `bad`, length included:
/// a message holding a path that no `RelPath` could hold.
pub fn splice_path<T: serde::Serialize>(msg: &T, bad: &[u8]) -> Vec<u8> {
    let mut bytes = encode_payload(msg).expect("encodable");
    let mut needle = vec![PLACEHOLDER.len() as u8];
    needle.extend_from_slice(PLACEHOLDER.as_bytes());
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the message holds the placeholder path");
    bytes.splice(
        at..at + needle.len(),
        varint(bad.len()).into_iter().chain(bad.iter().copied()),
    );
    bytes
}

/// Postcard's length prefix.
fn varint(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

pub fn sha256(bytes: &[u8]) -> Hash {
    Hash(Sha256::digest(bytes).into())
}

/// A new file at `path` holding `content`, cut into blocks of at most the block limit,
/// as a device would push it.
pub fn file_entry(path: &str, content: &[u8]) -> Entry {
    Entry {
        path: RelPath::new(path).expect("a valid test path"),
        kind: EntryKind::File,
        deleted: false,
        size: content.len() as u64,
        mtime_ns: 1_700_000_000_000_000_000,
        mode: 0o644,
        hash: sha256(content),
        blocks: content
            .chunks(MAX_BLOCK_SIZE as usize)
            .map(|b| BlockInfo {
                hash: sha256(b),
                size: b.len() as u32,
            })
            .collect(),
        target: String::new(),
        seq: 0,
        origin: DeviceId::new("hostile").expect("a valid device id"),
        conflict: None,
        renamed_from: None,
    }
}

/// A change that creates `entry`'s path (never seen on the server).
pub fn create(entry: Entry) -> Change {
    Change { entry, base_seq: 0 }
}

/// Answers a block request from `content` (the bytes it asks for, if it holds them).
pub fn serve_from(content: &[u8], request: &BlockRequest) -> Vec<u8> {
    let start = (request.offset as usize).min(content.len());
    let end = (start + request.size as usize).min(content.len());
    content[start..end].to_vec()
}

/// Every path under `root`, daemon files included, without following symlinks: to
/// compare a tree before and after an attack.
pub fn all_paths(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut todo = vec![root.to_path_buf()];
    // Bounded by the tree: each directory is listed once.
    while let Some(dir) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let rel = path.strip_prefix(root).unwrap_or(&path);
            out.insert(rel.to_string_lossy().into_owned());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(path);
            }
        }
    }
    out
}

/// Waits until `log()` has a line holding every one of `needles`, and returns it.
pub fn wait_for_log_line(
    log: impl Fn() -> String,
    needles: &[&str],
    timeout: Duration,
) -> Result<String, String> {
    crate::poll_until(timeout, || {
        log()
            .lines()
            .find(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_owned)
            .ok_or_else(|| format!("no log line holds all of {needles:?}"))
    })
}
