//! Plain tonic baselines: a unary echo and a bidirectional-stream echo on one service
//! (`proto/echo.proto`), with the HTTP/2 settings the runtime's links use (TCP_NODELAY, 4 MiB
//! stream and 16 MiB connection windows), so the comparison isolates what the runtime adds.
//!
//! The stream client pipelines: any number of requests go down one stream without waiting, and
//! replies, which come back in request order, are matched to their callers first-in first-out.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};

use anyhow::{Context, ensure};
use bytes::Bytes;
use futures::Stream;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};

use crate::server_process::announce;

/// The generated code of `proto/echo.proto`.
#[allow(unreachable_pub, missing_debug_implementations, clippy::all)]
pub(crate) mod proto {
    tonic::include_proto!("switchboard.bench.v1");
}

use proto::EchoMessage;
use proto::echo_client::EchoClient;
use proto::echo_server::{Echo, EchoServer};

/// The windows the runtime configures on its links (`shared/src/node.rs`, `link.rs`).
const STREAM_WINDOW: u32 = 4 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;

/// The echo service: replies with the request's payload.
#[derive(Debug, Default)]
struct Echoer;

#[tonic::async_trait]
impl Echo for Echoer {
    async fn unary(
        &self,
        request: tonic::Request<EchoMessage>,
    ) -> Result<tonic::Response<EchoMessage>, tonic::Status> {
        Ok(tonic::Response::new(request.into_inner()))
    }

    type StreamStream = Pin<Box<dyn Stream<Item = Result<EchoMessage, tonic::Status>> + Send>>;

    async fn stream(
        &self,
        request: tonic::Request<tonic::Streaming<EchoMessage>>,
    ) -> Result<tonic::Response<Self::StreamStream>, tonic::Status> {
        // The inbound stream is already a stream of messages: hand it back as the replies.
        Ok(tonic::Response::new(Box::pin(request.into_inner())))
    }
}

/// `serve-tonic`: the echo service on a loopback port, until killed.
pub(crate) async fn serve() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    announce(listener.local_addr()?);
    // `Server::tcp_nodelay` is ignored for a caller-supplied listener; the incoming sets it.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    Server::builder()
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .initial_connection_window_size(Some(CONNECTION_WINDOW))
        .add_service(EchoServer::new(Echoer))
        .serve_with_incoming(incoming)
        .await
        .context("the tonic echo server failed")
}

/// A client on one HTTP/2 connection to the echo server at `address`.
pub(crate) async fn connect(address: &str) -> anyhow::Result<EchoClient<Channel>> {
    let channel = Endpoint::from_shared(format!("http://{address}"))?
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .initial_connection_window_size(Some(CONNECTION_WINDOW))
        .connect()
        .await
        .with_context(|| format!("connecting to the tonic echo server at {address}"))?;
    Ok(EchoClient::new(channel))
}

/// One unary round trip, checking the echo.
pub(crate) async fn unary(mut client: EchoClient<Channel>, payload: Bytes) -> anyhow::Result<()> {
    let expected = payload.len();
    let reply = client.unary(EchoMessage { payload }).await?.into_inner();
    ensure!(reply.payload.len() == expected, "a wrong unary echo");
    Ok(())
}

/// Requests queued on the stream, and the callers waiting for their replies in the same order.
#[derive(Debug)]
struct Pending {
    requests: mpsc::UnboundedSender<EchoMessage>,
    waiting: VecDeque<oneshot::Sender<Bytes>>,
}

/// One bidirectional stream shared by every caller; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Pipeline {
    pending: Arc<Mutex<Pending>>,
}

impl Pipeline {
    /// Opens the stream and starts the task that hands replies to their callers. The stream
    /// ends once every clone of the pipeline is dropped.
    pub(crate) async fn open(mut client: EchoClient<Channel>) -> anyhow::Result<Self> {
        let (requests, outbound) = mpsc::unbounded_channel();
        let mut replies = client
            .stream(UnboundedReceiverStream::new(outbound))
            .await
            .context("opening the echo stream")?
            .into_inner();
        let pending = Arc::new(Mutex::new(Pending {
            requests,
            waiting: VecDeque::new(),
        }));
        let weak: Weak<Mutex<Pending>> = Arc::downgrade(&pending);
        tokio::spawn(async move {
            while let Ok(Some(reply)) = replies.message().await {
                let Some(pending) = weak.upgrade() else {
                    return;
                };
                let caller = pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .waiting
                    .pop_front();
                if let Some(caller) = caller {
                    let _ = caller.send(reply.payload);
                }
            }
        });
        Ok(Self { pending })
    }

    /// Sends one request down the stream and waits for its reply, checking the echo.
    pub(crate) async fn echo(&self, payload: Bytes) -> anyhow::Result<()> {
        let expected = payload.len();
        let (tx, rx) = oneshot::channel();
        {
            // Queue the caller and the request under one lock, so their orders agree.
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending.waiting.push_back(tx);
            pending
                .requests
                .send(EchoMessage { payload })
                .context("the echo stream is closed")?;
        }
        let reply = rx.await.context("the echo stream ended")?;
        ensure!(reply.len() == expected, "a wrong stream echo");
        Ok(())
    }
}
