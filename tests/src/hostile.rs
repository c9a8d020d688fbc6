//! A hostile peer for the security tests: it speaks the real protocol with the
//! `filesync-proto` types, and can also send bytes no honest peer would.
//!
//! * [`connect_with`] is the only place that opens a device connection (TCP, TLS, the
//!   frozen handshake, open registration, Hello for a folder); a change to how devices
//!   connect changes it alone.
//! * [`Device`] sends messages or raw bytes on such a connection and reads the answers.
//! * [`accept_device`] plays the server for a real client ([`ServerEnd`]); with a
//!   [`FakeIdentity`] kept across connections, each login can land in another account.
//! * [`Raw`] is a bare connection, plain TCP or inside TLS, for what goes wrong before
//!   Hello.
//! * [`splice_path`] puts any bytes where a message holds a path, since a `RelPath` that
//!   fails validation cannot be built.
//! * [`file_entry`], [`dir_entry`] and [`link_entry`] describe what a device would push.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use filesync_proto::auth::{AuthReply, AuthRequest, InviteToken, MAX_AUTH_FRAME, Secret};
use filesync_proto::frame::encode_payload;
use filesync_proto::wire::{
    BlockError, BlockInfo, BlockRequest, Change, ClientMsg, Entry, EntryKind, Hello,
    MAX_BLOCK_SIZE, PushOutcome, ServerMsg, Welcome,
};
use filesync_proto::{
    AccountName, DeviceId, FolderName, FrameCodec, Handshake, HandshakeReply, Hash, MAX_WIRE_FRAME,
    RelPath,
};
use filesyncd::conn::tls;
use rustls::{ClientConnection, ServerConnection, StreamOwned};
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

/// Opens a device connection to the server at `addr`: TCP, TLS (any certificate), the
/// handshake, open registration as `hello.device`, then `hello`. Returns the connection
/// and the Welcome.
pub fn connect_with(addr: &str, hello: Hello) -> Result<(Device, Welcome), String> {
    let register = AuthRequest::Register {
        device: hello.device.clone(),
        device_name: hello.device_name.clone(),
    };
    connect_as(addr, register, hello)
}

/// Opens a device connection for `folder` that enrols by redeeming the invite token
/// `token` (the account is the token's), as [`connect_with`] does by registering.
pub fn connect_with_token(
    addr: &str,
    token: &str,
    device: &str,
    folder: &str,
) -> Result<(Device, Welcome), String> {
    let secret = InviteToken::parse(token).map_err(|e| e.to_string())?.secret;
    let device = DeviceId::new(device).map_err(|e| e.to_string())?;
    let redeem = AuthRequest::Redeem {
        secret,
        device: device.clone(),
        device_name: "hostile".into(),
    };
    let hello = Hello {
        device,
        device_name: "hostile".into(),
        folder: FolderName::new(folder).map_err(|e| e.to_string())?,
        since_seq: 0,
        epoch: 0,
    };
    connect_as(addr, redeem, hello)
}

/// [`connect_with`], enrolling under `device_name` whatever name `hello` gives.
pub fn connect_enrolled_as(
    addr: &str,
    device_name: &str,
    hello: Hello,
) -> Result<(Device, Welcome), String> {
    let register = AuthRequest::Register {
        device: hello.device.clone(),
        device_name: device_name.to_owned(),
    };
    connect_as(addr, register, hello)
}

/// TCP, TLS, the handshake, `credentials`, then `hello`.
fn connect_as(
    addr: &str,
    credentials: AuthRequest,
    hello: Hello,
) -> Result<(Device, Welcome), String> {
    let (raw, buf) = handshaken(addr)?;
    let mut auth = Conn {
        raw,
        codec: FrameCodec::<AuthReply, AuthRequest>::new(MAX_AUTH_FRAME),
        buf,
    };
    auth.send(credentials)?;
    match auth.recv()? {
        Some(AuthReply::Accepted { .. }) => {}
        other => return Err(format!("expected to be accepted, got {other:?}")),
    }
    let mut conn = Device {
        raw: auth.raw,
        codec: FrameCodec::new(MAX_WIRE_FRAME),
        buf: auth.buf,
    };
    conn.send(ClientMsg::Hello(hello))?;
    match conn.recv()? {
        Some(ServerMsg::Welcome(w)) => Ok((conn, w)),
        other => Err(format!("expected Welcome, got {other:?}")),
    }
}

/// A device connection to the server at `addr` that got in by open registration as
/// `device` and has sent nothing since: the server waits for its Hello (or
/// `CreateInvite`). Returns the connection and the device id the server gave it.
pub fn registered(addr: &str, device: &str) -> Result<(Device, DeviceId), String> {
    let (raw, buf) = handshaken(addr)?;
    let mut auth = Conn {
        raw,
        codec: FrameCodec::<AuthReply, AuthRequest>::new(MAX_AUTH_FRAME),
        buf,
    };
    auth.send(AuthRequest::Register {
        device: DeviceId::new(device).map_err(|e| e.to_string())?,
        device_name: "hostile".into(),
    })?;
    let id = match auth.recv()? {
        Some(AuthReply::Accepted { device, .. }) => device,
        other => return Err(format!("expected to be accepted, got {other:?}")),
    };
    let conn = Device {
        raw: auth.raw,
        codec: FrameCodec::new(MAX_WIRE_FRAME),
        buf: auth.buf,
    };
    Ok((conn, id))
}

/// TCP, TLS and the frozen handshake to the server at `addr`: the connection where the
/// server now waits for credentials, and what it already sent after the handshake.
pub fn handshaken(addr: &str) -> Result<(Raw, BytesMut), String> {
    let mut raw = Raw::connect_tls(addr)?;
    let mut hs = FrameCodec::<HandshakeReply, Handshake>::new(1024);
    let mut out = BytesMut::new();
    hs.encode(Handshake::current(), &mut out)
        .map_err(|e| e.to_string())?;
    raw.write(&out)?;
    let mut buf = BytesMut::new();
    let reply = read_frame(&mut raw.stream, &mut hs, &mut buf)?
        .ok_or("the server closed the connection during the handshake")?;
    reply.check()?;
    Ok((raw, buf))
}

/// A fake server's key and certificate, in a temp dir that lives as long as it does:
/// kept across connections, so that a client pins it once.
pub struct FakeIdentity {
    identity: tls::ServerIdentity,
    _dir: tempfile::TempDir,
}

impl FakeIdentity {
    pub fn new() -> Result<FakeIdentity, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let identity = tls::ServerIdentity::load_or_create(&dir.path().join("tls"))
            .map_err(|e| format!("{e:#}"))?;
        Ok(FakeIdentity {
            identity,
            _dir: dir,
        })
    }

    /// Accepts one connection on `listener` and plays the server up to the credentials,
    /// whatever they are, which it accepts into `account`.
    pub fn admit_one(
        &self,
        listener: &std::net::TcpListener,
        account: &str,
    ) -> Result<ServerEnd, String> {
        let (tcp, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
        tcp.set_read_timeout(Some(READ_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let tls = ServerConnection::new(self.identity.config.clone()).map_err(|e| e.to_string())?;
        let raw = Raw {
            stream: Stream::Server(Box::new(StreamOwned::new(tls, tcp))),
        };
        admit(raw, account)
    }
}

/// Plays the server on `listener` for a real client that trusts it on first use: TLS
/// with a new certificate, the handshake, credentials accepted whatever they are, and
/// Hello answered by a Welcome as `server` with `current_seq`. A connection the client
/// closes after its credentials (the enrolment of `filesyncctl add`) is followed by the
/// next one. Returns the connection and the Hello.
pub fn accept_device(
    listener: &std::net::TcpListener,
    server: &str,
    current_seq: u64,
) -> Result<(ServerEnd, Hello), String> {
    accept_device_as(&FakeIdentity::new()?, listener, server, current_seq, "fake")
}

/// [`accept_device`] with the fake server's `identity`, accepting every login into
/// `account`.
pub fn accept_device_as(
    identity: &FakeIdentity,
    listener: &std::net::TcpListener,
    server: &str,
    current_seq: u64,
    account: &str,
) -> Result<(ServerEnd, Hello), String> {
    // Bounded by count: a client enrols once, then opens its session.
    for _ in 0..4 {
        let mut conn = identity.admit_one(listener, account)?;
        match conn.recv()? {
            Some(ClientMsg::Hello(hello)) => {
                conn.send(ServerMsg::Welcome(Welcome {
                    server: DeviceId::new(server).map_err(|e| e.to_string())?,
                    epoch: 1,
                    current_seq,
                    read_only: false,
                }))?;
                return Ok((conn, hello));
            }
            None => {}
            other => return Err(format!("expected Hello, got {other:?}")),
        }
    }
    Err("no Hello on 4 connections".into())
}

/// The server's side of the handshake and of any credentials, on `raw`, accepted into
/// `account`: an enrolment gets a new credential.
fn admit(mut raw: Raw, account: &str) -> Result<ServerEnd, String> {
    let mut hs = FrameCodec::<Handshake, HandshakeReply>::new(1024);
    let mut buf = BytesMut::new();
    read_frame(&mut raw.stream, &mut hs, &mut buf)?
        .ok_or("the client closed the connection during the handshake")?
        .check()?;
    let mut out = BytesMut::new();
    hs.encode(HandshakeReply::accept(), &mut out)
        .map_err(|e| e.to_string())?;
    raw.write(&out)?;
    let mut auth = Conn {
        raw,
        codec: FrameCodec::<AuthRequest, AuthReply>::new(MAX_AUTH_FRAME),
        buf,
    };
    let (device, credential) = match auth.recv()? {
        Some(AuthRequest::Credential { device, .. }) => (device, None),
        Some(AuthRequest::Redeem { device, .. } | AuthRequest::Register { device, .. }) => {
            (device, Some(Secret([7; 32])))
        }
        None => return Err("the client closed the connection before its credentials".into()),
    };
    auth.send(AuthReply::Accepted {
        account: AccountName::new(account).map_err(|e| e.to_string())?,
        device,
        credential,
    })?;
    Ok(ServerEnd {
        raw: auth.raw,
        codec: FrameCodec::new(MAX_WIRE_FRAME),
        buf: auth.buf,
    })
}

/// The bytes under a connection: plain TCP, or TLS over it as either end.
enum Stream {
    Plain(TcpStream),
    Client(Box<StreamOwned<ClientConnection, TcpStream>>),
    Server(Box<StreamOwned<ServerConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Client(s) => &s.sock,
            Stream::Server(s) => &s.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Client(s) => s.read(buf),
            Stream::Server(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Client(s) => s.write(buf),
            Stream::Server(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Client(s) => s.flush(),
            Stream::Server(s) => s.flush(),
        }
    }
}

/// A bare connection to a server, for raw bytes: plain TCP ([`Raw::connect`]) or inside
/// TLS ([`Raw::connect_tls`]), where the server's decoders see them.
pub struct Raw {
    stream: Stream,
}

fn tcp(addr: &str) -> Result<TcpStream, String> {
    let stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .map_err(|e| e.to_string())?;
    Ok(stream)
}

/// Errors that mean the peer closed the connection (TLS without its close message).
fn is_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::BrokenPipe
    )
}

impl Raw {
    /// Plain TCP, no TLS.
    pub fn connect(addr: &str) -> Result<Raw, String> {
        Ok(Raw {
            stream: Stream::Plain(tcp(addr)?),
        })
    }

    /// Plain TCP from the loopback address `source` (any of 127.0.0.0/8 on Linux), so
    /// that the server counts it apart from connections of other sources.
    pub fn connect_from(addr: &str, source: IpAddr) -> Result<Raw, String> {
        let to: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(to),
            socket2::Type::STREAM,
            None,
        )
        .map_err(|e| format!("socket: {e}"))?;
        socket
            .bind(&SocketAddr::new(source, 0).into())
            .map_err(|e| format!("bind {source}: {e}"))?;
        socket
            .connect_timeout(&to.into(), READ_TIMEOUT)
            .map_err(|e| format!("connect {addr} from {source}: {e}"))?;
        let stream: TcpStream = socket.into();
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .map_err(|e| e.to_string())?;
        Ok(Raw {
            stream: Stream::Plain(stream),
        })
    }

    /// TCP, then a finished TLS handshake that accepts any certificate.
    pub fn connect_tls(addr: &str) -> Result<Raw, String> {
        let tcp = tcp(addr)?;
        let (config, _) = tls::client_config(None).map_err(|e| format!("{e:#}"))?;
        let conn =
            ClientConnection::new(config, tls::server_name()).map_err(|e| format!("TLS: {e}"))?;
        let mut tls = StreamOwned::new(conn, tcp);
        // Bounded by the read timeout: each round moves handshake bytes or fails.
        while tls.conn.is_handshaking() {
            tls.conn
                .complete_io(&mut tls.sock)
                .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
        }
        Ok(Raw {
            stream: Stream::Client(Box::new(tls)),
        })
    }

    /// Our end's address, which the server logs as the peer.
    pub fn local_addr(&self) -> SocketAddr {
        self.stream.tcp().local_addr().expect("a connected socket")
    }

    /// Sends `bytes`; an error means the server already closed the connection.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream
            .write_all(bytes)
            .and_then(|()| self.stream.flush())
            .map_err(|e| format!("write: {e}"))
    }

    /// Sends `chunk` again and again without reading anything, until the peer stops
    /// taking bytes (a write waits more than a second); returns how many were sent.
    /// `Err` if the peer still takes them after `max_rounds`.
    pub fn fill(&mut self, chunk: &[u8], max_rounds: usize) -> Result<usize, String> {
        self.stream
            .tcp()
            .set_write_timeout(Some(Duration::from_secs(1)))
            .map_err(|e| e.to_string())?;
        for round in 0..max_rounds {
            if let Err(e) = self.stream.write_all(chunk) {
                return match e.kind() {
                    io::ErrorKind::WouldBlock
                    | io::ErrorKind::TimedOut
                    | io::ErrorKind::WriteZero => Ok(round),
                    _ => Err(format!("write: {e}")),
                };
            }
        }
        Err(format!("the peer still reads after {max_rounds} rounds"))
    }

    /// Closes our sending side: the server reads EOF (after TLS's close message).
    pub fn shutdown_write(&mut self) {
        match &mut self.stream {
            Stream::Plain(_) => {}
            Stream::Client(s) => s.conn.send_close_notify(),
            Stream::Server(s) => s.conn.send_close_notify(),
        }
        let _ = self.stream.flush();
        let _ = self.stream.tcp().shutdown(std::net::Shutdown::Write);
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
                .tcp()
                .set_read_timeout(Some(left))
                .map_err(|e| e.to_string())?;
            match self.stream.read(&mut sink) {
                Ok(0) => return Ok(start.elapsed()),
                Ok(_) => {}
                Err(e) if is_closed(&e) => return Ok(start.elapsed()),
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

/// One end of a connection after the handshake, reading `In` and writing `Out`.
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

impl ServerEnd {
    /// Reads what the client sends until a push, and returns it; pings are answered,
    /// everything else is dropped.
    pub fn next_push(&mut self) -> Result<(u64, Vec<Change>), String> {
        // Bounded by count: a client that sends this much before pushing is a bug.
        for _ in 0..10_000 {
            match self.recv()? {
                Some(ClientMsg::Push { id, changes }) => return Ok((id, changes)),
                Some(ClientMsg::Ping { nonce }) => self.send(ServerMsg::Pong { nonce })?,
                Some(_) => {}
                None => return Err("the client closed the connection before pushing".into()),
            }
        }
        Err("no push after 10000 messages".into())
    }

    /// Asks the client for a block as request `id`, and returns its answer, or `None`
    /// when the client closed the connection instead.
    pub fn ask_block(
        &mut self,
        id: u64,
        request: BlockRequest,
    ) -> Result<Option<Result<Vec<u8>, BlockError>>, String> {
        self.send(ServerMsg::BlockRequest { id, request })?;
        // Bounded by count and by the read timeout of each message.
        for _ in 0..10_000 {
            match self.recv()? {
                Some(ClientMsg::BlockResponse { id: got, result }) if got == id => {
                    return Ok(Some(result));
                }
                Some(ClientMsg::Ping { nonce }) => self.send(ServerMsg::Pong { nonce })?,
                Some(_) => {}
                None => return Ok(None),
            }
        }
        Err("no block response after 10000 messages".into())
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
    stream: &mut impl Read,
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
            Err(e) if is_closed(&e) => return Ok(None),
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

/// A new directory at `path`, as a device would push it.
pub fn dir_entry(path: &str) -> Entry {
    Entry {
        kind: EntryKind::Dir,
        ..file_entry(path, b"")
    }
}

/// A new symlink at `path` to `target`, as a device would push it.
pub fn link_entry(path: &str, target: &str) -> Entry {
    Entry {
        kind: EntryKind::Symlink,
        target: target.to_owned(),
        ..file_entry(path, b"")
    }
}

/// A change that creates `entry`'s path (never seen on the server).
pub fn create(entry: Entry) -> Change {
    Change {
        entry,
        base_seq: 0,
        data: None,
    }
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
