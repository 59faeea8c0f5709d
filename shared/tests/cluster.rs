//! The runtime across several nodes in one process, over the real protocol on loopback:
//! membership, authentication, transparent calls, broadcasts, shutdown and restarts, and the
//! frames links count.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::*;
use switchboard::{
    Bytes, CallOptions, ClusterEvent, Cookie, NodeBuilder, NodeError, Request, eventually,
};

const DEADLINE: Duration = Duration::from_secs(10);

#[tokio::test]
async fn three_nodes_form_a_full_mesh_from_one_seed() {
    let a = bare_node("a@test", &[]).await;
    let b = bare_node("b@test", &[a.address()]).await;
    let c = bare_node("c@test", &[a.address()]).await;
    // b and c only know a; gossip must introduce them to each other.
    for (node, others) in [
        (&a, ["b@test", "c@test"]),
        (&b, ["a@test", "c@test"]),
        (&c, ["a@test", "b@test"]),
    ] {
        assert!(
            eventually(DEADLINE, || async { sees_up(node, &others) }).await,
            "{} sees {:?}",
            node.name(),
            node.nodes()
        );
        assert_eq!(node.nodes().len(), 3, "no duplicates: {:?}", node.nodes());
    }
}

/// The heartbeats a node's metrics count so far.
fn heartbeats(node: &switchboard::Node) -> u64 {
    node.metrics()
        .render()
        .lines()
        .find(|l| l.starts_with("switchboard_heartbeats_sent_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn of_an_idle_pair_only_the_first_by_name_sends_heartbeats() {
    let a = bare_node("a@test", &[]).await;
    let b = bare_node("b@test", &[a.address()]).await;
    assert!(
        eventually(DEADLINE, || async {
            sees_up(&a, &["b@test"]) && sees_up(&b, &["a@test"])
        })
        .await
    );
    // Eight of a's heartbeats: two seconds with nothing else on the links.
    assert!(eventually(DEADLINE, || async { heartbeats(&a) >= 8 }).await);
    assert_eq!(
        heartbeats(&b),
        0,
        "b hears a's heartbeats and only acknowledges them"
    );
    assert!(
        sees_up(&a, &["b@test"]) && sees_up(&b, &["a@test"]),
        "both still up"
    );
}

#[tokio::test]
async fn a_node_with_another_cookie_is_refused_by_every_member() {
    let a = bare_node("a@test", &[]).await;
    let b = bare_node("b@test", &[a.address()]).await;
    assert!(eventually(DEADLINE, || async { sees_up(&a, &["b@test"]) }).await);
    let mut refusals = a.subscribe();
    let intruder = NodeBuilder::new(
        "test",
        config("intruder@test", &[a.address(), b.address()]),
        Cookie::new("a-completely-different-cookie").unwrap(),
    )
    .start()
    .await
    .unwrap();
    // a logs the refusal with the intruder's address.
    let refused = tokio::time::timeout(DEADLINE, async {
        loop {
            if let Ok(ClusterEvent::HandshakeRefused { .. }) = refusals.recv().await {
                return;
            }
        }
    })
    .await;
    assert!(refused.is_ok(), "a published a refusal");
    // Give discovery several rounds to (wrongly) succeed, then check nobody admitted anybody.
    let admitted = eventually(Duration::from_secs(1), || async {
        [&a, &b, &intruder].iter().any(|n| {
            n.nodes()
                .iter()
                .any(|m| !m.is_self && (m.name == "intruder@test" || n.name() == "intruder@test"))
        })
    })
    .await;
    assert!(!admitted, "a: {:?} b: {:?}", a.nodes(), b.nodes());
    assert!(
        a.metrics()
            .render()
            .contains("switchboard_handshake_failures_total")
    );
}

#[tokio::test]
async fn the_same_call_gives_the_same_result_locally_and_remotely() {
    let a = echo_node("a@test", &[]).await;
    let b = bare_node("b@test", &[a.address()]).await;
    assert!(b.wait_for_service("echo", DEADLINE).await);
    let local = a
        .call("echo", "say", "hello", CallOptions::default())
        .await
        .unwrap();
    let remote = b
        .call("echo", "say", "hello", CallOptions::default())
        .await
        .unwrap();
    assert_eq!(local, remote);
    assert_eq!(local, Bytes::from("a@test|hello"));
    let local_error = a
        .call("echo", "fail", "", CallOptions::default())
        .await
        .unwrap_err();
    let remote_error = b
        .call("echo", "fail", "", CallOptions::default())
        .await
        .unwrap_err();
    match (local_error, remote_error) {
        (NodeError::Service(l), NodeError::Service(r)) => {
            assert_eq!(l, r);
            assert_eq!(l.code, "asked_to_fail");
        }
        other => panic!("expected service errors, got {other:?}"),
    }
    let missing = b
        .call("nowhere", "x", "", CallOptions::default().fail_fast())
        .await
        .unwrap_err();
    assert!(
        matches!(missing, NodeError::NoProvider { .. }),
        "{missing:?}"
    );
}

#[tokio::test]
async fn the_frames_calls_carry_are_counted_by_both_nodes_and_the_callers_link() {
    use prost::Message as _;
    let a = echo_node("a@test", &[]).await;
    let b = bare_node("b@test", &[a.address()]).await;
    assert!(b.wait_for_service("echo", DEADLINE).await);
    // a asks b for its stats below, over a's own link to b, which a dials once b has said hello.
    assert!(eventually(DEADLINE, || async { sees_up(&a, &["b@test"]) }).await);
    const CALLS: u64 = 50;
    let (a0, b0) = (a.metrics().frames(), b.metrics().frames());
    for _ in 0..CALLS {
        b.call("echo", "say", "x", CallOptions::default())
            .await
            .unwrap();
    }
    // A call returns once its reply was read, so both ends have counted both frames by then.
    let (a1, b1) = (a.metrics().frames(), b.metrics().frames());
    assert!(b1.sent >= b0.sent + CALLS, "calls out: {b0:?} -> {b1:?}");
    assert!(
        a1.received >= a0.received + CALLS,
        "calls in: {a0:?} -> {a1:?}"
    );
    assert!(a1.sent >= a0.sent + CALLS, "replies out: {a0:?} -> {a1:?}");
    assert!(
        b1.received >= b0.received + CALLS,
        "replies in: {b0:?} -> {b1:?}"
    );
    // b's `stats`, asked by a: the link b dialed to a carried the calls out and the replies in.
    let reply = a
        .call_on(
            "b@test",
            switchboard::system::SERVICE,
            "stats",
            Bytes::new(),
            CallOptions::default(),
        )
        .await
        .unwrap();
    let stats = switchboard_proto::v1::NodeStats::decode(reply).unwrap();
    assert!(stats.frames_sent >= b1.sent && stats.frames_received >= b1.received);
    let link = stats
        .links
        .iter()
        .find(|l| l.peer == "a@test")
        .expect("b's link to a is listed");
    assert!(
        link.frames_sent >= CALLS && link.frames_received >= CALLS,
        "{link:?}"
    );
}

#[tokio::test]
async fn a_call_with_no_provider_waits_for_one_within_its_deadline() {
    let a = bare_node("a@test", &[]).await;
    let b = bare_node("b@test", &[a.address()]).await;
    assert!(eventually(DEADLINE, || async { sees_up(&b, &["a@test"]) }).await);
    // Nobody provides echo yet: the call waits, and a provider that comes up answers it.
    let waiting = tokio::spawn({
        let b = b.clone();
        async move {
            let options = CallOptions::idempotent().timeout(DEADLINE);
            b.call("echo", "say", "late", options).await
        }
    });
    assert!(
        eventually(DEADLINE, || async {
            b.metrics()
                .render()
                .contains("switchboard_provider_waits_total{service=\"echo\",node=\"b@test\"} 1")
        })
        .await,
        "the wait is counted: {}",
        b.metrics().render()
    );
    assert!(!waiting.is_finished(), "still waiting for a provider");
    a.register_service("echo", echo("a@test"));
    let reply = tokio::time::timeout(DEADLINE, waiting)
        .await
        .expect("answered within the deadline")
        .unwrap()
        .expect("served by the provider that came up");
    assert_eq!(&reply[..], b"a@test|late");

    // With no provider ever, the call fails when its deadline passes, and not before.
    let started = std::time::Instant::now();
    let options = CallOptions::idempotent().timeout(Duration::from_millis(300));
    let missing = b.call("nowhere", "x", "", options).await.unwrap_err();
    assert!(
        matches!(missing, NodeError::NoProvider { .. }),
        "{missing:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(b.metrics().render().contains(
        "switchboard_provider_waits_expired_total{service=\"nowhere\",node=\"b@test\"} 1"
    ));
    // A call that must not wait says so.
    let started = std::time::Instant::now();
    let options = CallOptions::idempotent().timeout(DEADLINE).fail_fast();
    let missing = b.call("nowhere", "x", "", options).await.unwrap_err();
    assert!(
        matches!(missing, NodeError::NoProvider { .. }),
        "{missing:?}"
    );
    assert!(started.elapsed() < DEADLINE / 2, "failed fast");
}

#[tokio::test]
async fn broadcast_reaches_every_member_of_a_group_on_every_node() {
    let received = Arc::new(AtomicUsize::new(0));
    let member = |counter: Arc<AtomicUsize>| {
        move |message: Request| {
            assert_eq!(message.payload, Bytes::from("tick"));
            counter.fetch_add(1, Ordering::SeqCst);
        }
    };
    let a = NodeBuilder::new("test", config("a@test", &[]), cookie())
        .group("listeners", member(received.clone()))
        .start()
        .await
        .unwrap();
    let b = NodeBuilder::new("test", config("b@test", &[a.address()]), cookie())
        .group("listeners", member(received.clone()))
        .start()
        .await
        .unwrap();
    let c = bare_node("c@test", &[a.address()]).await;
    assert!(eventually(DEADLINE, || async { sees_up(&c, &["a@test", "b@test"]) }).await);
    assert!(
        eventually(DEADLINE, || async {
            c.nodes()
                .iter()
                .filter(|n| n.groups.contains(&"listeners".to_owned()))
                .count()
                == 2
        })
        .await
    );
    assert_eq!(c.broadcast("listeners", "tick", "tick"), 2);
    assert!(eventually(DEADLINE, || async { received.load(Ordering::SeqCst) == 2 }).await);
    drop(b);
}

#[tokio::test]
async fn graceful_shutdown_moves_calls_away_and_tells_monitors_why() {
    let a = bare_node("a@test", &[]).await;
    let b = echo_node("b@test", &[a.address()]).await;
    let c = echo_node("c@test", &[a.address()]).await;
    assert!(eventually(DEADLINE, || async { sees_up(&a, &["b@test", "c@test"]) }).await);
    let down = a.monitor_node("b@test");
    b.shutdown().await;
    assert_eq!(
        tokio::time::timeout(DEADLINE, down).await.unwrap().unwrap(),
        "shutdown"
    );
    for _ in 0..20 {
        let reply = a
            .call("echo", "say", "x", CallOptions::idempotent())
            .await
            .unwrap();
        assert_eq!(reply, Bytes::from("c@test|x"));
    }
    drop(c);
}

#[tokio::test]
async fn a_node_restarted_under_the_same_name_replaces_its_old_incarnation() {
    let a = bare_node("a@test", &[]).await;
    let old = echo_node("b@test", &[a.address()]).await;
    assert!(eventually(DEADLINE, || async { sees_up(&a, &["b@test"]) }).await);
    let old_incarnation = old.incarnation();
    let down = a.monitor_node("b@test");
    // The old process vanishes without a goodbye's help to the new one; the new one joins at once.
    old.shutdown().await;
    let new = echo_node("b@test", &[a.address()]).await;
    assert_ne!(new.incarnation(), old_incarnation);
    assert!(tokio::time::timeout(DEADLINE, down).await.is_ok());
    assert!(
        eventually(DEADLINE, || async {
            a.nodes().iter().any(|n| {
                n.name == "b@test"
                    && n.incarnation == new.incarnation()
                    && n.state == switchboard::PeerState::Up
            })
        })
        .await,
        "{:?}",
        a.nodes()
    );
    let reply = a
        .call(
            "echo",
            "say",
            "again",
            CallOptions::default().timeout(DEADLINE),
        )
        .await
        .unwrap();
    assert_eq!(reply, Bytes::from("b@test|again"));
}

#[tokio::test]
async fn an_oversized_call_is_refused_before_it_is_sent() {
    let mut config_a = config("a@test", &[]);
    config_a.max_frame_bytes = 64 * 1024;
    let a = NodeBuilder::new("test", config_a, cookie())
        .service("echo", echo("a@test"))
        .start()
        .await
        .unwrap();
    let mut config_b = config("b@test", &[a.address()]);
    config_b.max_frame_bytes = 64 * 1024;
    let b = NodeBuilder::new("test", config_b, cookie())
        .start()
        .await
        .unwrap();
    assert!(b.wait_for_service("echo", DEADLINE).await);
    let big = vec![7u8; 128 * 1024];
    let error = b
        .call("echo", "say", big, CallOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(error, NodeError::FrameTooLarge { .. }),
        "{error:?}"
    );
    // The link is unharmed.
    let reply = b
        .call("echo", "say", "ok", CallOptions::default())
        .await
        .unwrap();
    assert_eq!(reply, Bytes::from("a@test|ok"));
}

#[tokio::test]
async fn a_call_past_its_deadline_is_a_timeout_naming_the_service() {
    let a = NodeBuilder::new("test", config("a@test", &[]), cookie())
        .service("slow", |_request: Request| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(Bytes::new())
        })
        .start()
        .await
        .unwrap();
    let b = bare_node("b@test", &[a.address()]).await;
    assert!(b.wait_for_service("slow", DEADLINE).await);
    for node in [&a, &b] {
        let started = std::time::Instant::now();
        let error = node
            .call(
                "slow",
                "wait",
                "",
                CallOptions::default().timeout(Duration::from_millis(300)),
            )
            .await
            .unwrap_err();
        match error {
            NodeError::Timeout { service, .. } => assert_eq!(service, "slow"),
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
}

/// Frames over 64 KiB travel on the bulk lane, whose connection and handlers live on the
/// serving node's bulk thread (a low-priority thread of their own); small ones never do.
#[tokio::test]
async fn a_large_call_is_served_on_the_bulk_thread_and_a_small_one_is_not() {
    let thread_name = |_request: Request| async {
        let name = std::thread::current().name().unwrap_or("").to_owned();
        Ok::<_, switchboard::ServiceError>(Bytes::from(name))
    };
    let a = NodeBuilder::new("test", config("a@test", &[]), cookie())
        .service("where", thread_name)
        .start()
        .await
        .unwrap();
    let b = bare_node("b@test", &[a.address()]).await;
    assert!(b.wait_for_service("where", DEADLINE).await);
    let large = b
        .call("where", "run", vec![1u8; 1 << 20], CallOptions::default())
        .await
        .unwrap();
    assert_eq!(large, Bytes::from("bulk a@test"));
    let small = b
        .call("where", "run", "hi", CallOptions::default())
        .await
        .unwrap();
    assert_ne!(small, Bytes::from("bulk a@test"));
}

/// Established TCP connections whose local end is `address` (a node's listening address): the
/// connections other nodes dialed to it, counted from /proc/net/tcp.
fn accepted_connections(address: &str) -> usize {
    let port: u16 = address.rsplit(':').next().unwrap().parse().unwrap();
    let local = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // State 01 is ESTABLISHED.
            fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"01")
        })
        .count()
}

/// A link dials its bulk connection only for its first frame over 64 KiB: an idle link holds one
/// connection (control and data lanes), and a large call adds the second.
#[tokio::test]
async fn a_link_opens_its_bulk_connection_with_its_first_large_frame() {
    let echo =
        |request: Request| async move { Ok::<_, switchboard::ServiceError>(request.payload) };
    let a = NodeBuilder::new("test", config("a@test", &[]), cookie())
        .service("echo", echo)
        .start()
        .await
        .unwrap();
    let b = bare_node("b@test", &[a.address()]).await;
    assert!(b.wait_for_service("echo", DEADLINE).await);
    assert!(eventually(DEADLINE, || async { sees_up(&a, &["b@test"]) }).await);
    let small = b
        .call("echo", "run", "hi", CallOptions::default())
        .await
        .unwrap();
    assert_eq!(small, Bytes::from("hi"));
    assert_eq!(accepted_connections(a.address()), 1, "b's link to a, idle");
    let large = vec![7u8; 1 << 20];
    let echoed = b
        .call("echo", "run", large.clone(), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(echoed, Bytes::from(large));
    assert_eq!(accepted_connections(a.address()), 2, "and its bulk lane");
    assert_eq!(accepted_connections(b.address()), 1, "a's link to b, idle");
}

/// A background broadcast reaches a remote member like any other, but is handed to the group
/// on the receiving node's bulk thread.
#[tokio::test]
async fn a_background_broadcast_is_delivered_on_the_bulk_thread() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let a = NodeBuilder::new("test", config("a@test", &[]), cookie())
        .group("stats", move |message: Request| {
            let thread = std::thread::current().name().unwrap_or("").to_owned();
            let _ = tx.send((message.payload, thread));
        })
        .start()
        .await
        .unwrap();
    let b = bare_node("b@test", &[a.address()]).await;
    assert!(
        eventually(DEADLINE, || async {
            b.nodes()
                .iter()
                .any(|n| n.groups.contains(&"stats".to_owned()))
        })
        .await
    );
    assert_eq!(b.broadcast_background("stats", "tick", "quiet"), 1);
    let (payload, thread) = tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(payload, Bytes::from("quiet"));
    assert_eq!(thread, "bulk a@test");
    assert_eq!(b.broadcast("stats", "tick", "prompt"), 1);
    let (payload, thread) = tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(payload, Bytes::from("prompt"));
    assert_ne!(thread, "bulk a@test");
}
