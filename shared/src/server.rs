//! The acceptor side: the `switchboard.v1.Node` gRPC service. Every `Link` stream must complete
//! the cookie handshake before anything else happens on it; a peer that fails is answered with
//! `UNAUTHENTICATED`, logged with its address, and gets nothing more.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use switchboard_proto::v1::{self as wire, frame::Kind, node_server};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::dispatch::{LaneContext, run_lane};
use crate::handshake::{self, HandshakeError, Party, Role, Transcript};
use crate::lane::{BatchingStream, FrameReader, LaneSender};
use crate::link::DIAL_TIMEOUT;
use crate::node::NodeInner;

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
        let remote = request.remote_addr();
        let reader = FrameReader::new(request.into_inner());
        let (tx, rx) = mpsc::channel(self.node.config.link_queue.max(16));
        let closed = self.node.shutdown.child_token();
        tokio::spawn(accept(
            self.node.clone(),
            remote,
            reader,
            tx,
            closed.clone(),
        ));
        Ok(tonic::Response::new(Box::pin(BatchingStream::new(
            rx, closed,
        ))))
    }
}

/// Runs the acceptor's half of the handshake, then serves the lane.
async fn accept(
    node: Arc<NodeInner>,
    remote: Option<SocketAddr>,
    mut reader: FrameReader,
    tx: LaneSender,
    closed: CancellationToken,
) {
    let remote = remote.map_or_else(|| "unknown".to_owned(), |a| a.to_string());
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
    node.inbound_lane_opened(&hello);
    let context = LaneContext {
        peer: hello.name.as_str().into(),
        incarnation: hello.incarnation,
        reply: tx,
        link: None,
        inbound_calls: Arc::new(Semaphore::new(node.config.max_inbound_calls.max(1))),
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
    handshake::check_peer(hello.version, &hello.name, &hello.nonce)?;
    if hello.name == node.name && hello.incarnation == node.incarnation {
        return Err(HandshakeError::SelfConnection);
    }
    let lane = wire::Lane::try_from(hello.lane).map_err(|_| HandshakeError::Unexpected("lane"))?;
    let nonce = handshake::fresh_nonce();
    let transcript = Transcript {
        version: handshake::PROTOCOL_VERSION,
        lane,
        dialer: Party {
            name: hello.name.clone(),
            incarnation: hello.incarnation,
            nonce: hello.nonce.to_vec(),
        },
        acceptor: Party {
            name: node.name.clone(),
            incarnation: node.incarnation,
            nonce: nonce.clone(),
        },
    };
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
    let welcome = wire::Welcome {
        advertisement: Some(node.advertisement()),
        gossip: Some(node.gossip()),
    };
    send(tx, Kind::Welcome(welcome)).await?;
    Ok(hello)
}

async fn send(tx: &LaneSender, kind: Kind) -> Result<(), HandshakeError> {
    tx.send(Ok(wire::Frame { kind: Some(kind) }))
        .await
        .map_err(|_| HandshakeError::Unexpected("stream closed"))
}
