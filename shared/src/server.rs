//! The acceptor side: the listener, and the `switchboard.v1.Node` gRPC service behind it.
//!
//! The listener sorts accepted connections by their first bytes: a bulk connection (one that
//! opens with [`bulk::PREFACE`]) is served on the node's bulk thread, everything else on the
//! node's runtime. A node with TLS runs the TLS handshake after sorting, on the runtime that
//! serves the connection ([`crate::tls`] says why), and refuses a peer that fails it. Every
//! `Link` stream on either must complete the cookie handshake before anything else happens on
//! it; a peer that fails is answered with `UNAUTHENTICATED`, logged with its address, and gets
//! nothing more.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use switchboard_proto::v1::{self as wire, frame::Kind, node_server};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::admission::{Admitted, Ticket};
use crate::bulk::{self, Opening};
use crate::dispatch::{CallLimit, LaneContext, run_lane};
use crate::handshake::{self, HandshakeError, Party, Role};
use crate::lane::{BatchingStream, FrameReader, LaneSender, Tally};
use crate::link::DIAL_TIMEOUT;
use crate::node::NodeInner;
use crate::tls::Stream as Connection;

/// Accepted connections waiting for their server to take them.
const ACCEPT_QUEUE: usize = 64;

/// Serves the inter-node listener until the node shuts down: the gRPC health service and the
/// `Node` service on the node's runtime, and the `Node` service again on the bulk thread for
/// bulk connections.
pub(crate) fn spawn(node: Arc<NodeInner>, listener: TcpListener) -> tokio::task::JoinHandle<()> {
    let max = node.config.max_frame_bytes;
    let service = node_server::NodeServer::new(NodeService { node: node.clone() })
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let shutdown = node.shutdown.clone();
    let span = tracing::info_span!("node", node = %node.name);
    let (ordinary, ordinary_incoming) = mpsc::channel(ACCEPT_QUEUE);
    let (bulk, mut bulk_sockets) = mpsc::channel::<std::net::TcpStream>(ACCEPT_QUEUE);
    let (bulk_accepted, bulk_incoming) = mpsc::channel(ACCEPT_QUEUE);
    // Bulk sockets arrive sorted but before TLS; each is made the bulk thread's and its TLS
    // handshake runs there, in a task of its own so a slow peer holds up no other.
    node.bulk.spawn(
        {
            let node = node.clone();
            async move {
                while let Some(socket) = bulk_sockets.recv().await {
                    let socket = match node.bulk.adopt(socket) {
                        Ok(socket) => socket,
                        Err(error) => {
                            tracing::debug!(%error, "a bulk connection could not be adopted");
                            continue;
                        }
                    };
                    let accepted = bulk_accepted.clone();
                    let node = node.clone();
                    tokio::spawn(
                        async move {
                            if let Some(stream) = secure(&node, socket).await {
                                let stream = admitted(&node, stream);
                                let _ = accepted.send(Ok::<_, io::Error>(stream)).await;
                            }
                        }
                        .in_current_span(),
                    );
                }
            }
        }
        .instrument(span.clone()),
    );
    let bulk_incoming = ReceiverStream::new(bulk_incoming);
    node.bulk.spawn(
        {
            let service = service.clone();
            let shutdown = shutdown.clone();
            async move {
                let result = builder()
                    .add_service(service)
                    .serve_with_incoming_shutdown(bulk_incoming, shutdown.cancelled_owned())
                    .await;
                if let Err(error) = result {
                    tracing::error!(%error, "inter-node bulk server failed");
                }
            }
        }
        .instrument(span.clone()),
    );
    tokio::spawn(
        async move {
            let (reporter, health) = tonic_health::server::health_reporter();
            reporter
                .set_serving::<node_server::NodeServer<NodeService>>()
                .await;
            tokio::spawn(accept_connections(node, listener, ordinary, bulk).in_current_span());
            let result = builder()
                .add_service(health)
                .add_service(service)
                .serve_with_incoming_shutdown(
                    ReceiverStream::new(ordinary_incoming),
                    shutdown.cancelled_owned(),
                )
                .await;
            if let Err(error) = result {
                tracing::error!(%error, "inter-node server failed");
            }
        }
        .instrument(span),
    )
}

/// The server settings both servers share.
fn builder() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(4 * 1024 * 1024))
        .initial_connection_window_size(Some(16 * 1024 * 1024))
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
}

/// `socket` with the handshake deadline of its connection ([`crate::admission`]); a connection
/// closed for it counts as a refused handshake.
fn admitted(node: &Arc<NodeInner>, socket: Connection) -> Admitted {
    let node = node.clone();
    Admitted::new(socket, move |remote| {
        let remote = remote.map_or_else(|| "unknown".to_owned(), |a| a.to_string());
        node.handshake_refused(
            &remote,
            &HandshakeError::Unexpected("no lane authenticated in time"),
        );
    })
}

/// Accepts connections until shutdown and sorts each by its opening bytes.
async fn accept_connections(
    node: Arc<NodeInner>,
    listener: TcpListener,
    ordinary: mpsc::Sender<io::Result<Admitted>>,
    bulk: mpsc::Sender<std::net::TcpStream>,
) {
    let shutdown = node.shutdown.clone();
    loop {
        let socket = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(error) => {
                    // Out of descriptors, or a connection reset before it was accepted: back
                    // off briefly rather than spin, then keep serving.
                    tracing::debug!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let ordinary = ordinary.clone();
        let bulk = bulk.clone();
        let node = node.clone();
        tokio::spawn(
            async move {
                // Replies to a peer's calls go out on accepted sockets too.
                let _ = socket.set_nodelay(true);
                let remote = socket
                    .peer_addr()
                    .map_or_else(|_| "unknown".to_owned(), |a| a.to_string());
                match sort(&node, socket, ordinary, bulk).await {
                    Ok(()) => {}
                    Err(error) if error.kind() == io::ErrorKind::TimedOut => {
                        node.handshake_refused(&remote, &HandshakeError::Unexpected("nothing sent"))
                    }
                    Err(error) => {
                        tracing::debug!(%error, "a connection closed before it could be served")
                    }
                }
            }
            .in_current_span(),
        );
    }
}

/// Hands `socket` to the server its opening bytes ask for: a bulk connection to the bulk thread
/// as it is (its TLS handshake runs there), any other after its TLS handshake when the node has
/// TLS. A connection that sends nothing within the dial timeout is dropped.
async fn sort(
    node: &Arc<NodeInner>,
    mut socket: TcpStream,
    ordinary: mpsc::Sender<io::Result<Admitted>>,
    bulk: mpsc::Sender<std::net::TcpStream>,
) -> io::Result<()> {
    let opening = tokio::time::timeout(DIAL_TIMEOUT, opening(&socket))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "nothing sent"))??;
    let closed = || io::Error::new(io::ErrorKind::BrokenPipe, "the node is shutting down");
    if opening == Opening::Bulk {
        let mut preface = [0u8; bulk::PREFACE.len()];
        socket.read_exact(&mut preface).await?;
        bulk.send(socket.into_std()?).await.map_err(|_| closed())
    } else {
        match secure(node, socket).await {
            Some(stream) => ordinary
                .send(Ok(admitted(node, stream)))
                .await
                .map_err(|_| closed()),
            None => Ok(()),
        }
    }
}

/// Runs the acceptor's TLS handshake on `socket` if the node has TLS, within the dial timeout.
/// A peer that fails it (a plaintext node, whose first bytes are no ClientHello, or one without
/// a certificate from the cluster's CA) is refused like one that fails the cookie handshake:
/// counted, logged with its address, and published; `None` then.
async fn secure(node: &NodeInner, socket: TcpStream) -> Option<Connection> {
    let Some(tls) = &node.tls else {
        return Some(Connection::Plain(socket));
    };
    let remote = socket
        .peer_addr()
        .map_or_else(|_| "unknown".to_owned(), |a| a.to_string());
    match tokio::time::timeout(DIAL_TIMEOUT, tls.accept(socket)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(error)) => {
            tracing::debug!(%remote, %error, "TLS handshake failed");
            node.handshake_refused(&remote, &HandshakeError::Tls);
            None
        }
        Err(_) => {
            node.handshake_refused(&remote, &HandshakeError::Tls);
            None
        }
    }
}

/// Peeks at a connection's first bytes until they say whether it is a bulk connection.
async fn opening(socket: &TcpStream) -> io::Result<Opening> {
    let mut peeked = [0u8; bulk::PREFACE.len()];
    loop {
        let read = socket.peek(&mut peeked).await?;
        if read == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        match bulk::classify(&peeked[..read]) {
            // Only a preface split across TCP segments gets here; peeking again at once would
            // return the same bytes, so wait a moment for the rest.
            Opening::Undecided => tokio::time::sleep(Duration::from_millis(1)).await,
            decided => return Ok(decided),
        }
    }
}

/// The gRPC service, holding the node it serves.
#[derive(Debug, Clone)]
pub(crate) struct NodeService {
    pub(crate) node: Arc<NodeInner>,
}

type LaneStream = Pin<Box<dyn Stream<Item = Result<wire::Batch, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl node_server::Node for NodeService {
    type LinkStream = LaneStream;

    async fn link(
        &self,
        request: tonic::Request<tonic::Streaming<wire::Batch>>,
    ) -> Result<tonic::Response<Self::LinkStream>, tonic::Status> {
        let ticket = request.extensions().get::<Ticket>().cloned();
        // The peer's link to this node: its frames count in this node's totals; the link's own
        // counters are the peer's to keep.
        let tally = Tally::new(&self.node.metrics, None);
        let reader = FrameReader::new(request.into_inner(), tally.clone());
        let (tx, rx) = mpsc::channel(self.node.config.link_queue.max(16));
        let closed = self.node.shutdown.child_token();
        tokio::spawn(accept(
            self.node.clone(),
            ticket,
            reader,
            tx,
            closed.clone(),
        ));
        Ok(tonic::Response::new(Box::pin(BatchingStream::new(
            rx, closed, tally,
        ))))
    }
}

/// Runs the acceptor's half of the handshake, then serves the lane; a lane that authenticates
/// admits its connection for good.
async fn accept(
    node: Arc<NodeInner>,
    ticket: Option<Ticket>,
    mut reader: FrameReader,
    tx: LaneSender,
    closed: CancellationToken,
) {
    let remote = ticket
        .as_ref()
        .and_then(Ticket::remote)
        .map_or_else(|| "unknown".to_owned(), |a| a.to_string());
    let hello = match tokio::time::timeout(DIAL_TIMEOUT, handshake(&node, &mut reader, &tx)).await {
        Ok(Ok(hello)) => hello,
        Ok(Err(error)) => {
            refuse(&node, &remote, &tx, error).await;
            return;
        }
        Err(_) => {
            refuse(
                &node,
                &remote,
                &tx,
                HandshakeError::Unexpected("handshake timed out"),
            )
            .await;
            return;
        }
    };
    if let Some(ticket) = &ticket {
        ticket.prove();
    }
    node.inbound_lane_opened(&hello);
    if hello.lane == wire::Lane::Control as i32 {
        // The peer reads its lanes in separate tasks (the bulk lane on another thread), so the
        // end of one could reach it before the goodbye on our own link; a goodbye on this
        // stream is read before this stream's end.
        let tx = tx.clone();
        let departing = node.departing.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = departing.cancelled() => {
                    let _ = tx.try_send(Ok(wire::Frame {
                        kind: Some(Kind::Goodbye(wire::Goodbye { reason: "shutdown".into() })),
                    }));
                }
                _ = tx.closed() => {}
            }
        });
    }
    let context = LaneContext {
        peer: hello.name.as_str().into(),
        incarnation: hello.incarnation,
        reply: tx,
        link: None,
        inbound_calls: Arc::new(CallLimit::new(node.config.max_inbound_calls)),
    };
    tokio::select! {
        _ = run_lane(node.clone(), context, reader) => {}
        _ = closed.cancelled() => {}
    }
}

async fn refuse(node: &NodeInner, remote: &str, tx: &LaneSender, error: HandshakeError) {
    if error == HandshakeError::SelfConnection {
        let _ = tx
            .send(Err(tonic::Status::failed_precondition(
                "the peer is this node",
            )))
            .await;
        return;
    }
    node.handshake_refused(remote, &error);
    let _ = tx
        .send(Err(tonic::Status::unauthenticated("handshake failed")))
        .await;
}

async fn handshake(
    node: &NodeInner,
    reader: &mut FrameReader,
    tx: &LaneSender,
) -> Result<wire::Hello, HandshakeError> {
    let hello = match reader.next().await {
        Ok(Some(wire::Frame {
            kind: Some(Kind::Hello(hello)),
        })) => hello,
        Ok(_) => return Err(HandshakeError::Unexpected("expected hello")),
        Err(_) => return Err(HandshakeError::Unexpected("stream failed before hello")),
    };
    let nonce = handshake::fresh_nonce();
    let me = Party {
        name: node.name.clone(),
        incarnation: node.incarnation,
        nonce: nonce.clone(),
    };
    let transcript = handshake::hello_transcript(&hello, me)?;
    let challenge = wire::Challenge {
        version: handshake::PROTOCOL_VERSION,
        name: node.name.clone(),
        incarnation: node.incarnation,
        nonce: nonce.into(),
        proof: transcript.prove(&node.cookie, Role::Acceptor).into(),
        address: node.address.clone(),
    };
    send(tx, Kind::Challenge(challenge)).await?;
    let proof = match reader.next().await {
        Ok(Some(wire::Frame {
            kind: Some(Kind::Proof(proof)),
        })) => proof,
        Ok(_) => return Err(HandshakeError::Unexpected("expected proof")),
        Err(_) => return Err(HandshakeError::Unexpected("stream failed before proof")),
    };
    transcript.verify(&node.cookie, Role::Dialer, &proof.proof)?;
    // The dialer reads the members from the control lane's welcome only.
    let welcome = wire::Welcome {
        advertisement: Some(node.advertisement()),
        gossip: (transcript.lane == wire::Lane::Control).then(|| node.gossip()),
    };
    send(tx, Kind::Welcome(welcome)).await?;
    Ok(hello)
}

async fn send(tx: &LaneSender, kind: Kind) -> Result<(), HandshakeError> {
    tx.send(Ok(wire::Frame { kind: Some(kind) }))
        .await
        .map_err(|_| HandshakeError::Unexpected("stream closed"))
}
