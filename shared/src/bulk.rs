//! The bulk thread: one OS thread per node, running a current-thread tokio runtime at a low CPU
//! priority (nice 13), that carries the bulk lane of every link: large frames and background
//! broadcasts. Its connections'
//! I/O, the encoding and decoding of its frames and the handlers of what arrives on it all run
//! there, on both ends of the link.
//!
//! Why a thread of its own: a separate connection keeps a 1 MiB frame out of the small calls'
//! socket, but not off their CPU. Copying, encoding and decoding a large frame takes hundreds of
//! microseconds, and on the worker that also serves small calls every one of them waits for it.
//! At a low priority the kernel runs the bulk thread mostly on what the node's other threads
//! leave over, and switches to a worker the moment it has work, so large transfers and
//! background fan-out soak up idle CPU instead of delaying small calls.
//!
//! Why nice 13: an idle-class (`SCHED_IDLE`) thread gets nothing while the node is busy, so a
//! transfer could stall for as long as the load lasts. Nice 19 keeps about 1.5% beside one busy
//! nice-0 thread, which held background fan-out to ~55k messages/s beside calls at full rate
//! (the bench's `fanout` family); nice 13 keeps about 5% (~125k/s there) and measured the same
//! small-call latency within this machine's noise (BENCHMARKS.md). The link's heartbeats travel
//! on the control lane, on the node's own runtime, so a slow bulk lane never makes a peer look
//! dead.
//!
//! How an acceptor tells a bulk connection from the rest: the dialer writes [`PREFACE`] before
//! its HTTP/2 preface (and before TLS, when the node has it), and the acceptor's classifier
//! ([`crate::server`]'s accept loop) strips it and hands the socket to the bulk thread's server,
//! which runs the TLS handshake there. The preface only routes; every lane still runs TLS (when
//! configured) and the cookie handshake.

use std::future::Future;
use std::io;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::tls::{Stream, Tls};

/// What a dialer writes first on a bulk connection. No HTTP/2 connection starts with it (those
/// start with `PRI * HTTP/2.0`), so anything else is served as before.
pub(crate) const PREFACE: &[u8] = b"SWITCHBOARD-BULK/1\n";

/// The niceness of the bulk thread (see the module docs for why not 19).
const NICENESS: i32 = 13;

/// The bulk thread of one node. Dropping it stops the thread and drops its tasks.
#[derive(Debug)]
pub(crate) struct BulkThread {
    handle: Handle,
    _stop: oneshot::Sender<()>,
}

impl BulkThread {
    /// Starts the thread, named after the node so it can be told apart in `top -H`.
    pub(crate) fn start(node: &str) -> io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("bulk {node}"))
            .spawn(move || {
                lower_priority();
                // Ends when the sender is dropped with the node; the runtime and its tasks go
                // with it.
                let _ = runtime.block_on(stopped);
                runtime.shutdown_timeout(Duration::from_millis(100));
            })?;
        Ok(Self {
            handle,
            _stop: stop,
        })
    }

    /// Runs `future` on the bulk thread.
    pub(crate) fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(future)
    }

    /// Makes a socket accepted on another runtime this thread's, so its I/O is done here.
    pub(crate) fn adopt(&self, socket: std::net::TcpStream) -> io::Result<TcpStream> {
        let _inside = self.handle.enter();
        TcpStream::from_std(socket)
    }
}

/// Drops this thread to the bulk priority. Linux keeps a niceness per thread, which is what
/// `setpriority` with a thread id sets. Failing is not fatal: the lane still works, only
/// without the priority.
fn lower_priority() {
    let thread = rustix::thread::gettid();
    if let Err(error) = rustix::process::setpriority_process(Some(thread), NICENESS) {
        tracing::warn!(%error, "cannot lower the bulk thread's priority");
    }
}

/// Opens a bulk connection to `authority` (`host:port`): TCP, no Nagle delay, the preface, and
/// then TLS when the node has it (the preface goes first, in the clear, so the acceptor can
/// sort the connection before its TLS handshake: see [`crate::tls`]).
pub(crate) async fn connect(authority: String, tls: Option<Tls>) -> io::Result<TokioIo<Stream>> {
    let mut stream = TcpStream::connect(authority).await?;
    stream.set_nodelay(true)?;
    stream.write_all(PREFACE).await?;
    let stream = match tls {
        Some(tls) => tls.connect(stream).await?,
        None => Stream::Plain(stream),
    };
    Ok(TokioIo::new(stream))
}

/// What the first bytes of an accepted connection say it is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Opening {
    /// The whole preface: a bulk connection.
    Bulk,
    /// Too few bytes to tell yet, all of them the start of the preface.
    Undecided,
    /// Anything else: served as it is.
    Other,
}

/// Classifies a connection by the bytes peeked from it so far.
pub(crate) fn classify(peeked: &[u8]) -> Opening {
    if peeked.len() >= PREFACE.len() {
        if peeked.starts_with(PREFACE) {
            Opening::Bulk
        } else {
            Opening::Other
        }
    } else if PREFACE.starts_with(peeked) {
        Opening::Undecided
    } else {
        Opening::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_whole_preface_makes_a_bulk_connection() {
        assert_eq!(classify(PREFACE), Opening::Bulk);
        assert_eq!(
            classify(&[PREFACE, b"PRI * HTTP/2.0"].concat()),
            Opening::Bulk
        );
        assert_eq!(classify(&PREFACE[..5]), Opening::Undecided);
        assert_eq!(
            classify(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            Opening::Other
        );
        assert_eq!(classify(b"SWITCHBOARD-BULK/2\n"), Opening::Other);
        assert_eq!(classify(b"S"), Opening::Undecided);
        assert_eq!(classify(b"X"), Opening::Other);
    }

    #[test]
    fn the_bulk_thread_runs_what_it_is_given() {
        let bulk = BulkThread::start("test@here").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        bulk.spawn(async move {
            tx.send(std::thread::current().name().map(str::to_owned))
                .unwrap();
        });
        let name = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(name.as_deref(), Some("bulk test@here"));
    }
}
