//! Binding the daemon's HTTP endpoints (`/metrics`, the web page) and the bounds on
//! their connections: at most a number open at once (more wait in the socket's backlog)
//! and each closed a while after it was accepted. axum's server sets neither, so a
//! client that opens connections and sends nothing would otherwise hold a task and a
//! socket each for as long as it likes.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::serve::Listener;
use filesync_proto::control::Endpoint;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

/// Binds `addr` for the endpoint `what` (`/metrics`), which config key `key` sets. A
/// failure does not stop the daemon: it is logged, and the returned [`Endpoint`]
/// carries it into status (the daemon runs on without `without`). The endpoint names
/// the address really bound, a port chosen by the system included.
pub async fn bind(
    addr: SocketAddr,
    what: &str,
    without: &str,
    key: &str,
) -> (Endpoint, Option<TcpListener>) {
    match TcpListener::bind(addr).await {
        Ok(listener) => {
            let listen = listener.local_addr().unwrap_or(addr).to_string();
            let endpoint = Endpoint {
                listen,
                error: None,
            };
            (endpoint, Some(listener))
        }
        Err(e) => {
            let error = format!(
                "cannot listen on {addr} for {what}: {e}; the daemon runs on without \
                 {without} (choose another port in {key} and restart it)"
            );
            tracing::warn!("{error}");
            let endpoint = Endpoint {
                listen: addr.to_string(),
                error: Some(error),
            };
            (endpoint, None)
        }
    }
}

/// A TCP listener that hands out [`Bounded`] connections.
pub struct Limited {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    lifetime: Duration,
}

impl Limited {
    pub fn new(listener: TcpListener, max: usize, lifetime: Duration) -> Limited {
        Limited {
            listener,
            permits: Arc::new(Semaphore::new(max)),
            lifetime,
        }
    }
}

impl Listener for Limited {
    type Io = Bounded;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Bounded, SocketAddr) {
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            unreachable!("the semaphore is never closed")
        };
        // TcpListener's own accept logs and retries errors.
        let (stream, addr) = Listener::accept(&mut self.listener).await;
        let io = Bounded {
            stream,
            deadline: Box::pin(tokio::time::sleep(self.lifetime)),
            _permit: permit,
        };
        (io, addr)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// A connection that fails every read and write once its deadline has passed, which
/// makes the HTTP server close it, and gives its permit back when dropped.
pub struct Bounded {
    stream: TcpStream,
    deadline: Pin<Box<Sleep>>,
    _permit: OwnedSemaphorePermit,
}

impl Bounded {
    fn expired(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the connection has reached its lifetime",
            )),
            Poll::Pending => Ok(()),
        }
    }
}

impl AsyncRead for Bounded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.expired(cx)?;
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Bounded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.expired(cx)?;
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    const LIFETIME: Duration = Duration::from_secs(60);

    async fn limited(max: usize) -> (Limited, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (Limited::new(listener, max, LIFETIME), addr)
    }

    /// A connection that sends nothing is closed once its lifetime is over.
    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_closed_after_its_lifetime() {
        let (mut listener, addr) = limited(1).await;
        let _client = TcpStream::connect(addr).await.unwrap();
        let (mut io, _) = Listener::accept(&mut listener).await;
        let started = tokio::time::Instant::now();
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(LIFETIME * 2, io.read(&mut byte)).await;
        let err = read.expect("still open").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), LIFETIME);
    }

    /// Past the limit a connection waits in the backlog until one is closed.
    #[tokio::test(start_paused = true)]
    async fn connections_past_the_limit_wait() {
        let (mut listener, addr) = limited(1).await;
        let _first_client = TcpStream::connect(addr).await.unwrap();
        let (first, _) = Listener::accept(&mut listener).await;
        let _second_client = TcpStream::connect(addr).await.unwrap();
        let waiting = tokio::time::timeout(Duration::from_secs(1), async {
            Listener::accept(&mut listener).await
        })
        .await;
        assert!(waiting.is_err(), "a second connection was accepted");
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(1), async {
            Listener::accept(&mut listener).await
        })
        .await;
        assert!(second.is_ok(), "the freed permit was not used");
    }
}
