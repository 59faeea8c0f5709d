//! A database node killed with SIGKILL while a client posts with idempotency keys: every
//! acknowledged message is stored exactly once and the client sees no error.
//!
//! The database nodes are real OS processes: this test binary re-runs itself as a database node
//! (`switchboard::testing`: the ignored `database_node_process` test runs
//! `switchboard_database::start`, exactly what the `switchboard-database` binary's `main` runs).

mod support;

use std::collections::HashSet;

use reqwest::StatusCode;
use support::*;
use switchboard::PeerState;
use switchboard::testing::{ChildNode, child_main};

#[tokio::test]
#[ignore = "runs only as the child process of the failover tests"]
async fn database_node_process() {
    child_main(switchboard_database::start).await;
}

fn spawn_database(
    name: &str,
    cluster: &Cluster,
    seed: &str,
    data_dir: &std::path::Path,
) -> ChildNode {
    let env = [
        ("SWITCHBOARD_DATA_DIR", data_dir.display().to_string()),
        ("DATABASE_URL", cluster.url.clone()),
    ];
    ChildNode::spawn("database_node_process", name, seed, &cluster.cookie, &env)
}

on_both_backends!(killing_one_of_two_database_nodes_loses_and_duplicates_nothing);

async fn killing_one_of_two_database_nodes_loses_and_duplicates_nothing(backend: Backend) {
    // An http node alone first; the database processes join it as their seed.
    let Some(mut cluster) = Cluster::start(backend, 0, 1).await else {
        return;
    };
    let http = cluster.https[0].0.clone();
    let dir = tempfile::tempdir().unwrap();
    // Migrate once up front so the two processes race only on the migrator's lock, not on a
    // half-created SQLite file.
    switchboard_database::Store::connect(&cluster.url, 2)
        .await
        .unwrap();
    let mut first = spawn_database("db-a@test", &cluster, http.address(), dir.path());
    let _second = spawn_database("db-b@test", &cluster, http.address(), dir.path());
    let both_up = switchboard::eventually(DEADLINE, || async {
        http.nodes()
            .iter()
            .filter(|n| n.state == PeerState::Up && n.services.iter().any(|s| s == "database"))
            .count()
            == 2
    })
    .await;
    assert!(both_up, "{:?}", http.nodes());
    cluster.seed = http.address().to_owned();
    let user = cluster.api(0).register("steadfast").await;
    let room = user.create_room("failover").await;
    let mut acknowledged = HashSet::new();
    for i in 0..300 {
        if i == 100 {
            first.kill(); // SIGKILL
        }
        let key = format!("post-{i}");
        let reply = user
            .post_message(room, &format!("message {i}"), Some(&key))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "post {i}: {}",
            reply.body
        );
        assert!(acknowledged.insert(reply.body["id"].as_i64().unwrap()));
    }
    let stored = user.stored(room).await;
    let ids: HashSet<i64> = stored.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        stored.len(),
        300,
        "each acknowledged message stored exactly once"
    );
    assert_eq!(ids, acknowledged);
    let seqs: Vec<i64> = stored.iter().map(|(_, seq)| *seq).collect();
    assert_eq!(seqs, (1..=300).collect::<Vec<_>>(), "gapless");
}
