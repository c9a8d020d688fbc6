//! The listener: accepts device connections and gives each its own session task, within
//! the server's budgets (connections in all, per source address, and not yet
//! authenticated), so that one host or a crowd of silent connections cannot take every
//! slot.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::lock::lock;
use super::{Server, session};

/// Connections served at once; further ones wait in the kernel's backlog. From one
/// source address, at most `server.max_connections_per_address` of them (default 32);
/// further ones are closed at once with a logged reason, so that one host cannot take
/// every slot.
const MAX_CONNECTIONS: usize = crate::config::MAX_CONNECTIONS as usize;
/// Of those, connections that have not authenticated yet (TLS, handshake, credentials,
/// each within [`crate::conn::HANDSHAKE_TIMEOUT`]); further ones are closed at once, so
/// that silent or slow connections, which cost nothing to open, can hold at most this
/// many slots and only for that long, and never the ones devices sync through.
const MAX_UNAUTHENTICATED: usize = 128;
/// Accepts connections until `cancel`; each is served by its own task.
pub async fn serve(server: Arc<Server>, listener: TcpListener, cancel: CancellationToken) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // A permit per connection until it has authenticated (see [`MAX_UNAUTHENTICATED`]).
    let unauthenticated = Arc::new(Semaphore::new(MAX_UNAUTHENTICATED));
    let per_address = PerAddress::new(server.max_connections_per_address);
    loop {
        let permit = tokio::select! {
            _ = cancel.cancelled() => return,
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let (tcp, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors, usually: give sessions time to end.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(slot) = per_address.take(peer.ip()) else {
            tracing::warn!(
                %peer,
                "connection refused: {} connections from that address already \
                 (config key server.max_connections_per_address); an IPv6 /64 counts as \
                 one address",
                per_address.limit
            );
            continue;
        };
        let Ok(unauthenticated) = unauthenticated.clone().try_acquire_owned() else {
            tracing::warn!(
                %peer,
                "connection refused: {MAX_UNAUTHENTICATED} connections are authenticating \
                 already (each has {}s)",
                crate::conn::HANDSHAKE_TIMEOUT.as_secs()
            );
            continue;
        };
        let server = server.clone();
        server.tracker.clone().spawn(async move {
            session::serve(server, tcp, peer, unauthenticated).await;
            drop((slot, permit));
        });
    }
}

/// Connections open per source ([`crate::server::accounts::source_key`]), each counted by the
/// [`AddressSlot`] its session holds, and at most `limit` of them from one source.
#[derive(Clone)]
struct PerAddress {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    limit: usize,
}

impl PerAddress {
    fn new(limit: usize) -> Self {
        PerAddress {
            open: Arc::default(),
            limit,
        }
    }

    /// A slot for one more connection from `ip` (counted by its source key), or `None`
    /// at the limit.
    fn take(&self, ip: IpAddr) -> Option<AddressSlot> {
        let ip = crate::server::accounts::source_key(ip);
        let mut open = lock(&self.open);
        let n = open.entry(ip).or_default();
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            counts: self.clone(),
            ip,
        })
    }
}

/// One connection's place in its address's count, given back on drop.
struct AddressSlot {
    counts: PerAddress,
    ip: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = lock(&self.counts.open);
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_has_its_own_limit_and_slots_come_back() {
        let counts = PerAddress::new(3);
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "::1".parse().unwrap());
        let mut held: Vec<_> = (0..3)
            .map(|_| counts.take(a).expect("under the limit"))
            .collect();
        assert!(counts.take(a).is_none(), "one over the limit");
        assert!(counts.take(b).is_some(), "another address is not affected");
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        let one_64: Vec<_> = ["2001:db8::1", "2001:db8::2", "2001:db8::ffff:1"]
            .into_iter()
            .map(|ip| counts.take(v6(ip)).expect("under the limit"))
            .collect();
        assert!(
            counts.take(v6("2001:db8::3")).is_none(),
            "the addresses of one /64 share its limit"
        );
        assert!(counts.take(v6("2001:db8:0:1::1")).is_some());
        drop(one_64);
        held.pop();
        assert!(
            counts.take(a).is_some(),
            "a closed connection frees its slot"
        );
        drop(held);
        assert!(
            lock(&counts.open).is_empty(),
            "no address is remembered for ever"
        );
    }
}
