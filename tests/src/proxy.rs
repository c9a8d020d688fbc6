//! A TCP relay between a client and the server that the test can turn into a bad
//! network (shared/test-matrix.md, section b, F6–F8): pass bytes, stall them (a silent
//! partition: connections stay open, nothing arrives), refuse new connections, reset
//! every live connection, or throttle. It counts the bytes and connections it carries.
//!
//! The relay is plain threads over std sockets: one accept thread and two pumps per
//! connection. Every loop in it ends when the relay is dropped or the connection closes,
//! and every blocking read wakes at least every [`TICK`] to look at the mode.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often a pump that waits (on a read, on a stall, on the rate limit) looks again.
const TICK: Duration = Duration::from_millis(20);

/// How the relay treats bytes and connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Bytes pass (subject to the rate limit).
    Pass,
    /// A silent partition: connections are accepted and kept, but no byte passes in
    /// either direction until the mode changes.
    Stall,
    /// New connections are closed at once; live ones carry on (call
    /// [`FaultProxy::reset_all`] to cut them too).
    Refuse,
    /// Bytes from the client pass; the server's wait until the mode changes (a path
    /// back that is congested): the server takes a device's requests, the device hears
    /// nothing yet.
    HoldDown,
}

/// Bytes and connections the relay has seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Bytes from the client to the server.
    pub up: u64,
    /// Bytes from the server to the client.
    pub down: u64,
    /// Connections accepted and relayed (refused ones are not counted).
    pub connections: u64,
    /// Connections refused in [`Mode::Refuse`].
    pub refused: u64,
}

struct Shared {
    target: Mutex<SocketAddr>,
    mode: Mutex<Mode>,
    /// Bytes per second in each direction; 0 is unlimited.
    rate: AtomicU64,
    stop: AtomicBool,
    up: AtomicU64,
    down: AtomicU64,
    connections: AtomicU64,
    refused: AtomicU64,
    live: Mutex<Vec<Live>>,
}

/// Both sockets of a relayed connection, kept so that the test can cut them.
struct Live {
    client: TcpStream,
    server: TcpStream,
    cut: Arc<AtomicBool>,
}

/// A relay on `127.0.0.1:<free port>` to `target`; stops and cuts everything on drop.
pub struct FaultProxy {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accept: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts relaying to `target` (usually the server's listen address).
    pub fn start(target: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("fault proxy: cannot bind");
        let addr = listener
            .local_addr()
            .expect("fault proxy: no local address");
        let shared = Arc::new(Shared {
            target: Mutex::new(target),
            mode: Mutex::new(Mode::Pass),
            rate: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            live: Mutex::new(Vec::new()),
        });
        let accept = {
            let shared = shared.clone();
            std::thread::spawn(move || accept_loop(listener, shared))
        };
        FaultProxy {
            shared,
            addr,
            accept: Some(accept),
        }
    }

    /// Relays new connections to `target` from now on (what a balancer does when it
    /// sends a client to another node); live ones stay where they are.
    pub fn set_target(&self, target: SocketAddr) {
        *self.shared.target.lock().unwrap_or_else(|e| e.into_inner()) = target;
    }

    /// Where clients connect: `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn mode(&self) -> Mode {
        *self.shared.mode.lock().unwrap()
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    /// Limits each direction of each connection to `bytes_per_second` (0: no limit).
    pub fn set_rate(&self, bytes_per_second: u64) {
        self.shared.rate.store(bytes_per_second, Ordering::SeqCst);
    }

    /// Resets every live connection (RST to both ends, as a dropped NAT entry or a
    /// rebooted router does) and returns how many there were.
    pub fn reset_all(&self) -> usize {
        let live = std::mem::take(&mut *self.shared.live.lock().unwrap());
        let n = live.len();
        for conn in live {
            cut(&conn);
        }
        n
    }

    /// Connections being relayed now.
    pub fn live(&self) -> usize {
        let mut live = self.shared.live.lock().unwrap();
        live.retain(|c| !c.cut.load(Ordering::SeqCst));
        live.len()
    }

    pub fn traffic(&self) -> Traffic {
        Traffic {
            up: self.shared.up.load(Ordering::SeqCst),
            down: self.shared.down.load(Ordering::SeqCst),
            connections: self.shared.connections.load(Ordering::SeqCst),
            refused: self.shared.refused.load(Ordering::SeqCst),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept with a connection of our own.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        self.reset_all();
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = stream else { continue };
        if *shared.mode.lock().unwrap() == Mode::Refuse {
            shared.refused.fetch_add(1, Ordering::SeqCst);
            reset(&client);
            continue;
        }
        let target = *shared.target.lock().unwrap_or_else(|e| e.into_inner());
        let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
            reset(&client);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let cut = Arc::new(AtomicBool::new(false));
        let (Ok(c2), Ok(s2), Ok(c3), Ok(s3)) = (
            client.try_clone(),
            server.try_clone(),
            client.try_clone(),
            server.try_clone(),
        ) else {
            continue;
        };
        shared.connections.fetch_add(1, Ordering::SeqCst);
        shared.live.lock().unwrap().push(Live {
            client: c3,
            server: s3,
            cut: cut.clone(),
        });
        let (up, down) = (shared.clone(), shared.clone());
        let (cut_up, cut_down) = (cut.clone(), cut);
        std::thread::spawn(move || pump(client, server, &up, Way::Up, &cut_up));
        std::thread::spawn(move || pump(s2, c2, &down, Way::Down, &cut_down));
    }
}

/// Which way a pump copies.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    /// Client to server.
    Up,
    /// Server to client.
    Down,
}

impl Shared {
    /// Whether bytes going `way` wait now.
    fn held(&self, way: Way) -> bool {
        match *self.mode.lock().unwrap() {
            Mode::Stall => true,
            Mode::HoldDown => way == Way::Down,
            Mode::Pass | Mode::Refuse => false,
        }
    }
}

/// Copies `from` to `to` until either end closes, the connection is cut or the relay
/// stops; holds the bytes while the mode holds `way` ([`Mode::Stall`], [`Mode::HoldDown`]).
fn pump(mut from: TcpStream, mut to: TcpStream, shared: &Shared, way: Way, cut: &AtomicBool) {
    let count = match way {
        Way::Up => &shared.up,
        Way::Down => &shared.down,
    };
    let _ = from.set_read_timeout(Some(TICK));
    let mut buf = vec![0u8; 16 * 1024];
    let mut window = (Instant::now(), 0u64);
    let stopped = || shared.stop.load(Ordering::SeqCst) || cut.load(Ordering::SeqCst);
    while !stopped() {
        if shared.held(way) {
            std::thread::park_timeout(TICK);
            continue;
        }
        let rate = shared.rate.load(Ordering::SeqCst);
        let want = if rate == 0 {
            buf.len()
        } else {
            buf.len().min((rate as usize / 10).max(1))
        };
        let n = match from.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        // A read that was under way when the stall began holds its bytes until it ends.
        while shared.held(way) && !stopped() {
            std::thread::park_timeout(TICK);
        }
        if stopped() {
            break;
        }
        // Counted before they are written, so that a peer that has read them sees them
        // counted.
        count.fetch_add(n as u64, Ordering::SeqCst);
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        if rate > 0 {
            window.1 += n as u64;
            let due = Duration::from_secs_f64(window.1 as f64 / rate as f64);
            let elapsed = window.0.elapsed();
            if due > elapsed {
                std::thread::park_timeout(due - elapsed);
            }
            if elapsed > Duration::from_secs(1) {
                window = (Instant::now(), 0);
            }
        }
    }
    // One direction ending ends the connection: half-open relays only confuse peers.
    cut.store(true, Ordering::SeqCst);
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

fn cut(conn: &Live) {
    conn.cut.store(true, Ordering::SeqCst);
    reset(&conn.client);
    reset(&conn.server);
}

/// Closes `stream` with an RST rather than a FIN (SO_LINGER on, timeout 0).
fn reset(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own, with a correctly sized `linger`.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    let _ = stream.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on loopback that answers every byte it gets, until dropped.
    fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(8) {
                let Ok(mut s) = stream else { return };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    while let Ok(n @ 1..) = s.read(&mut buf) {
                        if s.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    fn round_trip(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
        stream.write_all(bytes)?;
        let mut back = vec![0u8; bytes.len()];
        stream.read_exact(&mut back)?;
        Ok(back)
    }

    #[test]
    fn passes_stalls_resets_and_refuses() {
        let proxy = FaultProxy::start(echo());
        let mut c = TcpStream::connect(proxy.addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(round_trip(&mut c, b"hello").unwrap(), b"hello");

        proxy.set_mode(Mode::Stall);
        c.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        assert!(
            round_trip(&mut c, b"held").is_err(),
            "a stalled relay passed bytes"
        );
        proxy.set_mode(Mode::Pass);
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut back = [0u8; 4];
        c.read_exact(&mut back).unwrap();
        assert_eq!(
            &back, b"held",
            "bytes held during the stall arrive after it"
        );

        assert_eq!(proxy.reset_all(), 1);
        let mut buf = [0u8; 1];
        assert!(
            matches!(c.read(&mut buf), Ok(0) | Err(_)),
            "a reset connection stays open"
        );

        proxy.set_mode(Mode::Refuse);
        let mut refused = TcpStream::connect(proxy.addr()).unwrap();
        refused
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        assert!(matches!(refused.read(&mut buf), Ok(0) | Err(_)));
        let t = proxy.traffic();
        assert_eq!((t.connections, t.refused), (1, 1));
        assert_eq!((t.up, t.down), (9, 9));
    }

    #[test]
    fn holding_the_way_down_passes_the_clients_bytes_only() {
        let proxy = FaultProxy::start(echo());
        let mut c = TcpStream::connect(proxy.addr()).unwrap();
        proxy.set_mode(Mode::HoldDown);
        c.write_all(b"ask").unwrap();
        crate::poll_until(Duration::from_secs(5), || {
            let up = proxy.traffic().up;
            if up == 3 {
                Ok(())
            } else {
                Err(format!("{up} bytes went up"))
            }
        })
        .unwrap();
        c.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut back = [0u8; 3];
        assert!(c.read_exact(&mut back).is_err(), "the answer was not held");
        proxy.set_mode(Mode::Pass);
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"ask", "the held answer arrives after the hold");
    }
}
