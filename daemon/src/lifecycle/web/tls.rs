//! HTTPS for a web page on an address other than loopback: the key and self-signed
//! certificate are made once in `STATE_DIR/web-tls/` by the same code as the server
//! role's ([`ServerIdentity`]), and each connection's handshake runs in `accept`,
//! bounded by [`HANDSHAKE_TIMEOUT`].

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::conn::tls::ServerIdentity;
use crate::lifecycle::metrics::listener::{Bounded, Limited};

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

/// A [`Limited`] listener whose connections speak TLS.
pub struct Listener {
    inner: Limited,
    acceptor: TlsAcceptor,
}

impl Listener {
    pub fn new(inner: Limited, config: Arc<rustls::ServerConfig>) -> Listener {
        Listener {
            inner,
            acceptor: TlsAcceptor::from(config),
        }
    }
}

impl axum::serve::Listener for Listener {
    type Io = TlsStream<Bounded>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, SocketAddr) {
        loop {
            let (io, addr) = self.inner.accept().await;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(io)).await {
                Ok(Ok(stream)) => return (stream, addr),
                Ok(Err(e)) => tracing::debug!(peer = %addr, "web page: TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(peer = %addr, "web page: no TLS handshake in time"),
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}
