//! A raw gRPC client against a node's `switchboard.v1.Node` service: what an unauthenticated or
//! misbehaving peer gets. Nothing here may make the node panic or serve it.

mod support;

use std::time::Duration;

use support::*;
use switchboard::handshake::{self, Party, Role, Transcript};
use switchboard::{Bytes, CallOptions, Node, eventually};
use switchboard_proto::v1::{self as wire, frame::Kind, node_client::NodeClient};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const DEADLINE: Duration = Duration::from_secs(10);

async fn client(node: &Node) -> NodeClient<tonic::transport::Channel> {
    NodeClient::connect(format!("http://{}", node.address()))
        .await
        .unwrap()
}

fn batch(kind: Kind) -> wire::Batch {
    wire::Batch {
        frames: vec![wire::Frame { kind: Some(kind) }],
    }
}

fn hello(nonce: Vec<u8>) -> Kind {
    Kind::Hello(wire::Hello {
        version: handshake::PROTOCOL_VERSION,
        name: "raw@test".into(),
        incarnation: 42,
        nonce: nonce.into(),
        lane: wire::Lane::Data as i32,
        address: String::new(),
        hidden: true,
        advertisement: None,
        introduce: false,
    })
}

/// Opens a lane, sends `first`, and returns the sender and the response stream.
async fn open(
    node: &Node,
    first: Kind,
) -> (mpsc::Sender<wire::Batch>, tonic::Streaming<wire::Batch>) {
    let (tx, rx) = mpsc::channel(8);
    tx.send(batch(first)).await.unwrap();
    let response = client(node)
        .await
        .link(ReceiverStream::new(rx))
        .await
        .unwrap();
    (tx, response.into_inner())
}

async fn next_frame(stream: &mut tonic::Streaming<wire::Batch>) -> Result<Kind, tonic::Status> {
    loop {
        match stream.message().await? {
            Some(batch) => {
                if let Some(frame) = batch.frames.into_iter().next() {
                    return Ok(frame.kind.unwrap());
                }
            }
            None => return Err(tonic::Status::cancelled("stream ended")),
        }
    }
}

fn call_frame() -> Kind {
    Kind::Call(wire::Call {
        id: 1,
        service: "echo".into(),
        method: "say".into(),
        payload: Bytes::from("sneaky"),
        idempotent: true,
        timeout_ms: 1000,
        trace_id: Bytes::new(),
    })
}

#[tokio::test]
async fn a_call_without_the_handshake_is_unauthenticated() {
    let node = echo_node("a@test", &[]).await;
    let (_tx, mut stream) = open(&node, call_frame()).await;
    let status = next_frame(&mut stream).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
}

#[tokio::test]
async fn a_wrong_proof_is_unauthenticated_and_nothing_is_served() {
    let node = echo_node("a@test", &[]).await;
    let (tx, mut stream) = open(&node, hello(handshake::fresh_nonce())).await;
    assert!(matches!(
        next_frame(&mut stream).await,
        Ok(Kind::Challenge(_))
    ));
    tx.send(batch(Kind::Proof(wire::Proof {
        proof: vec![0u8; 32].into(),
    })))
    .await
    .unwrap();
    let _ = tx.send(batch(call_frame())).await;
    let status = next_frame(&mut stream).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
}

#[tokio::test]
async fn a_replayed_handshake_transcript_is_refused() {
    let node = echo_node("a@test", &[]).await;
    let cookie = cookie();
    let nonce = handshake::fresh_nonce();
    // A genuine handshake, recorded.
    let (tx, mut stream) = open(&node, hello(nonce.clone())).await;
    let Ok(Kind::Challenge(challenge)) = next_frame(&mut stream).await else {
        panic!("expected a challenge")
    };
    let transcript = Transcript {
        version: handshake::PROTOCOL_VERSION,
        lane: wire::Lane::Data,
        dialer: Party {
            name: "raw@test".into(),
            incarnation: 42,
            nonce: nonce.clone(),
        },
        acceptor: Party {
            name: challenge.name.clone(),
            incarnation: challenge.incarnation,
            nonce: challenge.nonce.to_vec(),
        },
    };
    transcript
        .verify(&cookie, Role::Acceptor, &challenge.proof)
        .expect("the node proves the cookie");
    let recorded_proof = transcript.prove(&cookie, Role::Dialer);
    tx.send(batch(Kind::Proof(wire::Proof {
        proof: recorded_proof.clone().into(),
    })))
    .await
    .unwrap();
    assert!(matches!(
        next_frame(&mut stream).await,
        Ok(Kind::Welcome(_))
    ));
    // The genuine lane is served.
    tx.send(batch(call_frame())).await.unwrap();
    assert!(matches!(next_frame(&mut stream).await, Ok(Kind::Reply(_))));
    // Replaying the same hello and proof: the node's fresh nonce makes the old proof worthless.
    let (replay, mut replayed) = open(&node, hello(nonce)).await;
    assert!(matches!(
        next_frame(&mut replayed).await,
        Ok(Kind::Challenge(_))
    ));
    replay
        .send(batch(Kind::Proof(wire::Proof {
            proof: recorded_proof.into(),
        })))
        .await
        .unwrap();
    let _ = replay.send(batch(call_frame())).await;
    let status = next_frame(&mut replayed).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
}

#[tokio::test]
async fn health_answers_without_the_handshake() {
    let node = bare_node("a@test", &[]).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", node.address()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let reply = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(
        reply.into_inner().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

/// A message whose field 1 is a varint where `Batch` has a length-delimited field: bytes that
/// cannot decode as a batch.
#[derive(Clone, PartialEq, prost::Message)]
struct Garbage {
    #[prost(uint64, tag = "1")]
    junk: u64,
}

/// A hello whose name alone is `name_bytes` long: past any frame limit when large enough.
fn oversized_hello(name_bytes: usize) -> Kind {
    Kind::Hello(wire::Hello {
        version: handshake::PROTOCOL_VERSION,
        name: "x".repeat(name_bytes),
        incarnation: 1,
        nonce: handshake::fresh_nonce().into(),
        lane: 0,
        address: String::new(),
        hidden: true,
        advertisement: None,
        introduce: false,
    })
}

#[tokio::test]
async fn malformed_and_oversized_frames_close_the_lane_without_a_panic() {
    let mut node_config = config("a@test", &[]);
    node_config.max_frame_bytes = 64 * 1024;
    let node = switchboard::NodeBuilder::new("test", node_config, cookie())
        .service("echo", echo("a@test"))
        .start()
        .await
        .unwrap();
    // Malformed: a body that does not decode.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", node.address()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let codec: tonic_prost::ProstCodec<Garbage, wire::Batch> = tonic_prost::ProstCodec::default();
    let path = http::uri::PathAndQuery::from_static("/switchboard.v1.Node/Link");
    let garbage = tokio_stream::iter(vec![Garbage { junk: 7 }]);
    let response = grpc
        .streaming(tonic::Request::new(garbage), path, codec)
        .await
        .unwrap();
    let mut stream = response.into_inner();
    assert!(
        stream.message().await.is_err(),
        "a malformed frame ends the lane with an error"
    );
    // Oversized: one batch larger than the node's maximum.
    let huge = oversized_hello(200 * 1024);
    let (_tx, mut stream) = open(&node, huge).await;
    assert!(next_frame(&mut stream).await.is_err());
    // The node is still healthy and serving.
    let other = bare_node("b@test", &[node.address()]).await;
    assert!(other.wait_for_service("echo", DEADLINE).await);
    let reply = other
        .call("echo", "say", "still here", CallOptions::default())
        .await
        .unwrap();
    assert_eq!(reply, Bytes::from("a@test|still here"));
}

/// Peers that connect and never authenticate: silent connections, and connections that speak
/// HTTP/2 but open no stream.
const UNAUTHENTICATED_PEERS: usize = 1_000;

/// The HTTP/2 client preface and an empty SETTINGS frame: a connection the node's HTTP/2 server
/// accepts, which then never opens a stream.
const HTTP2_PREFACE: &[u8] =
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// The node's count of refused handshakes, from its metrics.
fn handshake_failures(node: &Node) -> u64 {
    node.metrics()
        .render()
        .lines()
        .find(|l| l.starts_with("switchboard_handshake_failures_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

/// Waits until the node closes `socket` (end of stream or a reset), reading and dropping
/// whatever it sends first (its HTTP/2 settings).
async fn closed_by_the_node(mut socket: tokio::net::TcpStream) {
    use tokio::io::AsyncReadExt;
    let mut buffer = [0u8; 1024];
    while let Ok(read) = socket.read(&mut buffer).await {
        if read == 0 {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_connections_that_never_authenticate_are_closed_at_the_handshake_deadline() {
    use tokio::io::AsyncWriteExt;
    let node = bare_node("a@test", &[]).await;
    let failures_before = handshake_failures(&node);
    let mut sockets = Vec::new();
    for i in 0..UNAUTHENTICATED_PEERS {
        let mut socket = tokio::net::TcpStream::connect(node.address())
            .await
            .unwrap();
        if i % 2 == 0 {
            socket.write_all(HTTP2_PREFACE).await.unwrap();
        }
        sockets.push(socket);
    }
    // A real peer joins and is served while they wait.
    let other = bare_node("b@test", &[node.address()]).await;
    assert!(eventually(DEADLINE, || async { sees_up(&node, &["b@test"]) }).await);
    // Every one is closed by the node: the silent ones for sending nothing, the others for
    // authenticating no lane, both within the 2 s handshake deadline of their connection.
    let closing = futures::future::join_all(sockets.into_iter().map(closed_by_the_node));
    tokio::time::timeout(DEADLINE, closing)
        .await
        .expect("every unauthenticated connection closed by the node");
    assert!(
        handshake_failures(&node) >= failures_before + UNAUTHENTICATED_PEERS as u64,
        "each counted as a refused handshake"
    );
    // The peer that authenticated keeps its connections.
    assert!(sees_up(&node, &["b@test"]) && sees_up(&other, &["a@test"]));
}

#[tokio::test]
async fn a_hundred_mebibyte_hello_is_refused_and_the_node_serves_on() {
    let node = bare_node("a@test", &[]).await;
    let huge = oversized_hello(100 * 1024 * 1024);
    let (_tx, mut stream) = open(&node, huge).await;
    assert!(next_frame(&mut stream).await.is_err());
    let other = bare_node("b@test", &[node.address()]).await;
    assert!(eventually(DEADLINE, || async { sees_up(&node, &["b@test"]) }).await);
    assert!(sees_up(&other, &["a@test"]));
}
