//! A connection that fails once a write has waited too long for the client to read.
//!
//! hyper has no write timeout: a client that opens a live stream and never reads keeps its
//! connection, with the events queued for it, for as long as it likes. Its memory is bounded
//! (the stream's queue, hyper's buffer and the socket's), but a thousand such clients hold a
//! thousand of each. Wrapped in [`StalledWrites`], a write (or flush) that cannot proceed for the
//! stall timeout fails with `TimedOut`, hyper drops the connection, and everything it held is
//! freed. A client that was merely slow reconnects with `Last-Event-ID` and is served from the
//! room's event log, or told to `reset` if it fell further behind than the log keeps.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// An IO whose writes fail after waiting `limit` without progress.
pub(crate) struct StalledWrites<T> {
    inner: T,
    limit: Duration,
    /// Set while a write is waiting: when it gives up.
    stalled: Option<Pin<Box<Sleep>>>,
    /// Counts the connections dropped this way.
    dropped: IntCounter,
}

impl<T> StalledWrites<T> {
    pub(crate) fn new(inner: T, limit: Duration, dropped: IntCounter) -> Self {
        Self {
            inner,
            limit,
            stalled: None,
            dropped,
        }
    }

    /// What a write that returned `poll` comes to: its result, or `TimedOut` once it has been
    /// pending for the limit.
    fn watch<R>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let limit = self.limit;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if stalled.as_mut().poll(cx).is_ready() {
            self.dropped.inc();
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading",
            )));
        }
        Poll::Pending
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for StalledWrites<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for StalledWrites<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_write_the_peer_never_reads_fails_after_the_limit_and_is_counted() {
        // An in-memory pipe of 64 bytes whose far end is never read.
        let (near, _far) = tokio::io::duplex(64);
        let dropped = IntCounter::new("dropped", "dropped").unwrap();
        let mut io = StalledWrites::new(near, Duration::from_secs(30), dropped.clone());
        let error = io.write_all(&[0; 1024]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(dropped.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_the_peer_reads_in_time_succeeds() {
        let (near, mut far) = tokio::io::duplex(64);
        let dropped = IntCounter::new("dropped", "dropped").unwrap();
        let mut io = StalledWrites::new(near, Duration::from_secs(30), dropped.clone());
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            let mut chunk = [0; 64];
            while all.len() < 1024 {
                // A reader that takes a while, but less than the limit, between reads.
                tokio::time::sleep(Duration::from_secs(10)).await;
                let n = tokio::io::AsyncReadExt::read(&mut far, &mut chunk)
                    .await
                    .unwrap();
                all.extend_from_slice(&chunk[..n]);
            }
            all.len()
        });
        io.write_all(&[0; 1024]).await.unwrap();
        assert_eq!(reader.await.unwrap(), 1024);
        assert_eq!(dropped.get(), 0);
    }
}
