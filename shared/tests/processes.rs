//! Failure handling across real OS processes on 127.0.0.1: providers killed with SIGKILL and
//! frozen with SIGSTOP while a caller keeps calling.

mod support;

use std::time::{Duration, Instant};

use support::*;
use switchboard::{CallOptions, NodeError, eventually};

const DEADLINE: Duration = Duration::from_secs(15);

#[tokio::test]
async fn killing_one_of_two_providers_loses_no_idempotent_call() {
    let caller = bare_node("caller@test", &[]).await;
    let mut first = Process::spawn("p1@test", &[caller.address()]);
    let second = Process::spawn("p2@test", &[caller.address()]);
    assert!(
        eventually(DEADLINE, || async {
            sees_up(&caller, &["p1@test", "p2@test"])
        })
        .await
    );
    let mut served_by = std::collections::HashMap::<String, usize>::new();
    for i in 0..2000u32 {
        if i == 500 {
            first.kill9();
        }
        let reply = caller
            .call(
                "echo",
                "say",
                i.to_string(),
                CallOptions::idempotent().timeout(DEADLINE),
            )
            .await
            .unwrap_or_else(|e| panic!("call {i} failed: {e}"));
        let reply = String::from_utf8(reply.to_vec()).unwrap();
        let (node, payload) = reply.split_once('|').unwrap();
        assert_eq!(payload, i.to_string());
        *served_by.entry(node.to_owned()).or_default() += 1;
    }
    assert!(
        served_by.get("p1@test").copied().unwrap_or(0) > 0,
        "{served_by:?}"
    );
    assert!(served_by["p2@test"] > 1500, "{served_by:?}");
    drop(second);
}

#[tokio::test]
async fn a_call_in_flight_to_a_node_that_dies_fails_fast_with_node_down() {
    let caller = bare_node("caller@test", &[]).await;
    let mut provider = Process::spawn("p1@test", &[caller.address()]);
    assert!(caller.wait_for_service("echo", DEADLINE).await);
    let call = {
        let caller = caller.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            // Not idempotent: the runtime must not retry it, and must not leave it hanging.
            let result = caller
                .call(
                    "echo",
                    "sleep",
                    "60000",
                    CallOptions::default().timeout(Duration::from_secs(60)),
                )
                .await;
            (result, started.elapsed())
        })
    };
    // Wait until the call is really in flight on the provider.
    assert!(eventually(DEADLINE, || async { provider.said("SLEEPING") }).await);
    provider.kill9();
    let (result, elapsed) = call.await.unwrap();
    match result {
        Err(NodeError::NodeDown { maybe_applied, .. }) => assert!(maybe_applied),
        other => panic!("expected NodeDown, got {other:?}"),
    }
    assert!(
        elapsed < Duration::from_secs(30),
        "failed fast, not by timeout: {elapsed:?}"
    );
}

#[tokio::test]
async fn a_frozen_peer_is_declared_down_within_the_heartbeat_window_and_rejoins() {
    let caller = bare_node("caller@test", &[]).await;
    let frozen = Process::spawn("p1@test", &[caller.address()]);
    let _other = Process::spawn("p2@test", &[caller.address()]);
    assert!(
        eventually(DEADLINE, || async {
            sees_up(&caller, &["p1@test", "p2@test"])
        })
        .await
    );
    let down = caller.monitor_node("p1@test");
    frozen.stop();
    let stopped = Instant::now();
    let reason = tokio::time::timeout(DEADLINE, down).await.unwrap().unwrap();
    let detected = stopped.elapsed();
    assert_eq!(reason, "heartbeat_timeout");
    eprintln!("frozen peer declared down after {detected:?}");
    // Default window: 250 ms heartbeats, down after 0.8 s of silence; allow scheduling slack.
    assert!(
        detected < Duration::from_millis(2500),
        "detected after {detected:?}"
    );
    // Calls route to the other provider, with no error.
    for i in 0..200 {
        let reply = caller
            .call(
                "echo",
                "say",
                "x",
                CallOptions::idempotent().timeout(DEADLINE),
            )
            .await
            .unwrap_or_else(|e| panic!("call {i}: {e}"));
        assert!(reply.starts_with(b"p2@test|"));
    }
    frozen.resume();
    assert!(
        eventually(DEADLINE, || async { sees_up(&caller, &["p1@test"]) }).await,
        "{:?}",
        caller.nodes()
    );
}

/// In a cluster of eight, a node is timed only by its four ring neighbours: the other three learn
/// of its hang from a neighbour's suspicion and their own unanswered probe, not by timing it.
#[tokio::test]
async fn a_frozen_node_is_declared_down_by_every_node_not_only_its_ring_neighbours() {
    let first = bare_node("obs-0@test", &[]).await;
    let seed = first.address().to_owned();
    let mut observers = vec![first];
    for i in 1..6 {
        observers.push(bare_node(&format!("obs-{i}@test"), &[&seed]).await);
    }
    // On the ring of names, p-frozen sits between obs-5 and p-other: obs-4, obs-5, p-other and
    // obs-0 time it; obs-1, obs-2 and obs-3 do not.
    let frozen = Process::spawn("p-frozen@test", &[&seed]);
    let _other = Process::spawn("p-other@test", &[&seed]);
    let everyone: Vec<String> = (0..6)
        .map(|i| format!("obs-{i}@test"))
        .chain(["p-frozen@test".into(), "p-other@test".into()])
        .collect();
    assert!(
        eventually(DEADLINE, || async {
            observers.iter().all(|o| {
                let others: Vec<&str> = everyone
                    .iter()
                    .map(String::as_str)
                    .filter(|n| *n != o.name())
                    .collect();
                sees_up(o, &others)
            })
        })
        .await,
        "no full mesh"
    );
    let downs: Vec<_> = observers
        .iter()
        .map(|o| o.monitor_node("p-frozen@test"))
        .collect();
    frozen.stop();
    let stopped = Instant::now();
    for (observer, down) in observers.iter().zip(downs) {
        let reason = tokio::time::timeout(DEADLINE, down)
            .await
            .unwrap_or_else(|_| panic!("{} never saw p-frozen down", observer.name()))
            .unwrap();
        assert_eq!(reason, "heartbeat_timeout", "{}", observer.name());
        eprintln!(
            "{} saw p-frozen down after {:?}",
            observer.name(),
            stopped.elapsed()
        );
    }
    // Neighbours time out after 0.8 s of silence, the rest after one more probe interval; allow
    // scheduling slack on a busy machine.
    let detected = stopped.elapsed();
    assert!(
        detected < Duration::from_secs(4),
        "every node after {detected:?}"
    );
    // The rest of the cluster stays whole: a suspicion takes only the silent node down.
    for observer in &observers {
        assert!(sees_up(observer, &["p-other@test"]), "{}", observer.name());
    }
    frozen.resume();
}
