//! What a folder's connection and task count: bytes on the wire and of content, files
//! and deletes, hashing; and [`Counted`], the stream wrapper that counts wire bytes.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Byte and item counters of one folder, shared by its task and its connection.
#[derive(Debug, Default)]
pub struct Counters {
    pub wire_sent: AtomicU64,
    pub wire_received: AtomicU64,
    pub content_sent: AtomicU64,
    pub content_received: AtomicU64,
    pub content_reused: AtomicU64,
    pub files_uploaded: AtomicU64,
    pub files_downloaded: AtomicU64,
    pub deletes_applied: AtomicU64,
    pub bytes_hashed: AtomicU64,
    pub files_hashed: AtomicU64,
    pub pushes: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> filesync_proto::control::Counters {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        filesync_proto::control::Counters {
            wire_bytes_sent: g(&self.wire_sent),
            wire_bytes_received: g(&self.wire_received),
            content_bytes_sent: g(&self.content_sent),
            content_bytes_received: g(&self.content_received),
            content_bytes_reused: g(&self.content_reused),
            files_uploaded: g(&self.files_uploaded),
            files_downloaded: g(&self.files_downloaded),
            deletes_applied: g(&self.deletes_applied),
            bytes_hashed: g(&self.bytes_hashed),
            files_hashed: g(&self.files_hashed),
            pushes: g(&self.pushes),
        }
    }
}

/// A stream that counts the bytes through it into shared counters.
pub struct Counted<S> {
    inner: S,
    counters: Arc<Counters>,
}

impl<S> Counted<S> {
    pub fn new(inner: S, counters: Arc<Counters>) -> Self {
        Counted { inner, counters }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        Counters::add(
            &self.counters.wire_received,
            (buf.filled().len() - before) as u64,
        );
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = &r {
            Counters::add(&self.counters.wire_sent, *n as u64);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
