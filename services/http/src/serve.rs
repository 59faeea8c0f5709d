//! The HTTP server loop: accepts connections and serves the router on each, HTTP/1.1 and HTTP/2,
//! until shutdown, then waits for the connections in flight to finish.
//!
//! Written out rather than `axum::serve` for one reason: `axum::serve` installs no timer in
//! hyper, so hyper's header read timeout never fires, and a client that sends its request head
//! a byte at a time (slowloris) holds a connection forever. Here a request head must arrive
//! within the header timeout, or the connection is closed. And a connection whose writes wait
//! for the client to read for longer than the write stall timeout is dropped
//! ([`StalledWrites`]).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::stalled_writes::StalledWrites;

/// Bytes of kernel send buffer per connection (Linux doubles what it is asked for).
const SEND_BUFFER: usize = 128 * 1024;

/// How connections are cut off: a request head slower than `header`, or a write that waits
/// longer than `write_stall` for the client to read (counted in `stalled`).
pub(crate) struct Limits {
    pub(crate) header: Duration,
    pub(crate) write_stall: Duration,
    pub(crate) stalled: prometheus::IntCounter,
}

/// Serves `app` on `listener` until `shutdown` completes, closing connections past `limits`.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (socket, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors, or a connection reset before it was accepted: back off
                    // briefly rather than spin.
                    tracing::debug!(%error, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = socket.set_nodelay(true);
        // A fixed send buffer, not the kernel's autotuned one (up to 4 MiB on loopback): a client
        // that stops reading then holds at most this much kernel memory, and its writes stall
        // soon enough for the write stall timeout to drop it. 256 KiB in flight per round trip
        // is far more than a chat answer or a live stream needs.
        let _ = socket2::SockRef::from(&socket).set_send_buffer_size(SEND_BUFFER);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request
                .extensions_mut()
                .insert(ConnectInfo::<SocketAddr>(remote));
            app.clone().oneshot(request)
        });
        let connection = builder
            .serve_connection_with_upgrades(
                TokioIo::new(StalledWrites::new(
                    socket,
                    limits.write_stall,
                    limits.stalled.clone(),
                )),
                service,
            )
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, %remote, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
