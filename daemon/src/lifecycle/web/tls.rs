//! HTTPS for a web page on an address other than loopback: the key and self-signed
//! certificate are made once in `STATE_DIR/web-tls/` by the same code as the server
//! role's ([`ServerIdentity`]), and each connection's handshake runs in a task of its
//! own, bounded by [`HANDSHAKE_TIMEOUT`], before the HTTP server gets the connection.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::conn::tls::ServerIdentity;
use crate::lifecycle::http_listener::{Bounded, Limited};

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS config of the web page, its key and certificate made the first time.
pub fn config(state_dir: &Path) -> Result<Arc<rustls::ServerConfig>> {
    let identity = ServerIdentity::load_or_create(&state_dir.join("web-tls"))?;
    tracing::info!(
        fingerprint = %identity.fingerprint,
        "the web page's certificate (self-signed; check this SHA-256 when the browser asks)"
    );
    Ok(identity.config)
}

/// A [`Limited`] listener whose connections speak TLS. Handshakes run side by side (a
/// slow one holds up no other), at most as many as the listener admits connections.
pub struct Listener {
    inner: Limited,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<Option<(TlsStream<Bounded>, SocketAddr)>>,
}

impl Listener {
    pub fn new(inner: Limited, config: Arc<rustls::ServerConfig>) -> Listener {
        Listener {
            inner,
            acceptor: TlsAcceptor::from(config),
            handshakes: JoinSet::new(),
        }
    }
}

/// The handshake of one connection; `None` when it fails or takes too long.
async fn handshake(
    acceptor: TlsAcceptor,
    io: Bounded,
    addr: SocketAddr,
) -> Option<(TlsStream<Bounded>, SocketAddr)> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
        Ok(Ok(stream)) => Some((stream, addr)),
        Ok(Err(e)) => {
            tracing::debug!(peer = %addr, "web page: TLS handshake failed: {e}");
            None
        }
        Err(_) => {
            tracing::debug!(peer = %addr, "web page: no TLS handshake in time");
            None
        }
    }
}

impl axum::serve::Listener for Listener {
    type Io = TlsStream<Bounded>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, SocketAddr) {
        loop {
            tokio::select! {
                (io, addr) = self.inner.accept() => {
                    self.handshakes.spawn(handshake(self.acceptor.clone(), io, addr));
                }
                Some(done) = self.handshakes.join_next() => {
                    if let Ok(Some(accepted)) = done {
                        return accepted;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}
