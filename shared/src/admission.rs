//! Admission of inbound connections: a connection to the inter-node port must carry a lane that
//! completes the cookie handshake within [`crate::link::DIAL_TIMEOUT`] of being accepted (of its
//! TLS handshake, when the node has TLS, which has a deadline of its own), or the node closes it.
//!
//! Why at the connection and not only per lane: each lane (a gRPC stream) already has that
//! deadline for its own handshake, but a peer that completes the HTTP/2 preface and then opens no
//! stream at all would otherwise hold its connection, its buffers and a task until HTTP/2
//! keepalive gave up on it (half a minute), and a thousand such peers cost a thousand of each.
//! With the deadline on the connection, whatever an unauthenticated peer does costs the node a
//! bounded amount for at most two seconds. A connection used only for the gRPC health service
//! (which needs no handshake) is closed after the deadline too; a health checker reconnects.
//!
//! How: the accepted connection (after its TLS handshake, when the node has TLS) is wrapped in
//! [`Admitted`], which fails its reads once the deadline
//! passes unless the [`Ticket`] it shares with the server was proven; the server reads the
//! ticket from the request's extensions ([`tonic::transport::server::Connected`]) and proves it
//! when a lane's handshake succeeds. A failed read makes the HTTP/2 server close the connection.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;
use tonic::transport::server::Connected;

use crate::link::DIAL_TIMEOUT;
use crate::tls::Stream;

/// What a connection's requests carry: where the peer is, and the proof that one of its lanes
/// authenticated.
#[derive(Debug, Clone)]
pub(crate) struct Ticket {
    remote: Option<SocketAddr>,
    proven: Arc<AtomicBool>,
}

impl Ticket {
    /// The peer's address, for logs.
    pub(crate) fn remote(&self) -> Option<SocketAddr> {
        self.remote
    }

    /// A lane on this connection completed the handshake: the connection stays open.
    pub(crate) fn prove(&self) {
        self.proven.store(true, Ordering::Release);
    }

    fn is_proven(&self) -> bool {
        self.proven.load(Ordering::Acquire)
    }
}

/// Called once when a connection is closed for its deadline, with the peer's address.
type OnExpiry = Box<dyn FnOnce(Option<SocketAddr>) + Send>;

/// An accepted socket that stops reading once the handshake deadline passes unproven.
pub(crate) struct Admitted {
    socket: Stream,
    ticket: Ticket,
    /// Until the ticket is proven: the deadline, and what to do when it passes.
    pending: Option<(Pin<Box<Sleep>>, Option<OnExpiry>)>,
}

impl std::fmt::Debug for Admitted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admitted")
            .field("ticket", &self.ticket)
            .finish_non_exhaustive()
    }
}

impl Admitted {
    /// Starts `socket`'s deadline now. Must be called inside the runtime that serves it (the
    /// deadline is a timer of that runtime). `on_expiry` runs once if the deadline passes.
    pub(crate) fn new(
        socket: Stream,
        on_expiry: impl FnOnce(Option<SocketAddr>) + Send + 'static,
    ) -> Self {
        let ticket = Ticket {
            remote: socket.tcp().peer_addr().ok(),
            proven: Arc::new(AtomicBool::new(false)),
        };
        Self {
            socket,
            ticket,
            pending: Some((
                Box::pin(tokio::time::sleep(DIAL_TIMEOUT)),
                Some(Box::new(on_expiry)),
            )),
        }
    }
}

impl Connected for Admitted {
    type ConnectInfo = Ticket;

    fn connect_info(&self) -> Ticket {
        self.ticket.clone()
    }
}

impl AsyncRead for Admitted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some((deadline, on_expiry)) = &mut this.pending {
            if this.ticket.is_proven() {
                this.pending = None;
            } else if deadline.as_mut().poll(cx).is_ready() {
                if let Some(on_expiry) = on_expiry.take() {
                    on_expiry(this.ticket.remote);
                }
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no lane completed the handshake in time",
                )));
            }
        }
        Pin::new(&mut this.socket).poll_read(cx, buf)
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.socket).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.socket).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_shutdown(cx)
    }
}
