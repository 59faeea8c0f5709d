//! The chat's applications as units: `database` stopped and started on one of two database
//! nodes while clients post with idempotency keys (no post fails, none is lost or doubled), the
//! admin cluster view agreeing with each node's own `apps`, and one node hosting all five
//! applications serving the whole chat.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use prost::Message;
use reqwest::StatusCode;
use serde_json::json;
use support::*;
use switchboard::application::SharedApplication;
use switchboard::{Applications, CallOptions, Node, NodeConfig, PeerState, system};
use switchboard_proto::v1 as wire;

/// Calls `app_start` or `app_stop` on `on` from `from`, through the protocol.
async fn control(from: &Node, on: &str, method: &str, app: &str) -> Vec<wire::AppInfo> {
    let request = wire::AppControl {
        app: app.into(),
        force: false,
    };
    let reply = from
        .call_on(
            on,
            system::SERVICE,
            method.to_owned(),
            request.encode_to_vec(),
            CallOptions::default().timeout(DEADLINE),
        )
        .await
        .unwrap_or_else(|e| panic!("{method} {app} on {on}: {e}"));
    wire::AppsReply::decode(reply).unwrap().apps
}

fn provides(viewer: &Node, provider: &str, service: &str) -> bool {
    viewer.nodes().iter().any(|n| {
        n.name == provider && n.state == PeerState::Up && n.services.iter().any(|s| s == service)
    })
}

on_both_backends!(
    stopping_database_on_one_of_two_nodes_under_load_fails_no_keyed_post,
    one_node_with_every_application_serves_the_whole_chat,
);

async fn stopping_database_on_one_of_two_nodes_under_load_fails_no_keyed_post(backend: Backend) {
    let Some(cluster) = Cluster::start(backend, 2, 1).await else {
        return;
    };
    cluster.wait_for_mesh().await;
    let http = cluster.https[0].0.clone();
    let first = cluster.databases[0].name().to_owned();
    let user = cluster.api(0).register("steady").await;
    let room = user.create_room("moving").await;

    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::new()));
    let failures = Arc::new(AtomicUsize::new(0));
    let posted = Arc::new(AtomicUsize::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let mut clients = Vec::new();
    for client in 0..4 {
        let (user, acknowledged, failures, posted, stop) = (
            user.clone(),
            acknowledged.clone(),
            failures.clone(),
            posted.clone(),
            stop.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.is_cancelled() {
                let key = format!("client{client}-post{i}");
                let reply = user.post_message(room, &key, Some(&key)).await;
                if reply.status == StatusCode::CREATED {
                    let id = reply.body["id"].as_i64().unwrap();
                    acknowledged.lock().unwrap().push(id);
                    posted.fetch_add(1, Ordering::Relaxed);
                } else {
                    eprintln!("post {key}: {} {}", reply.status, reply.body);
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
        }));
    }
    for _ in 0..3 {
        let before = posted.load(Ordering::Relaxed);
        assert!(
            switchboard::eventually(DEADLINE, || async {
                posted.load(Ordering::Relaxed) > before + 20
            })
            .await
        );
        let apps = control(&http, &first, "app_stop", "database").await;
        assert!(
            apps.iter()
                .any(|a| a.name == "database" && a.state == "stopped")
        );
        assert!(
            switchboard::eventually(DEADLINE, || async { !provides(&http, &first, "database") })
                .await
        );
        let before = posted.load(Ordering::Relaxed);
        assert!(
            switchboard::eventually(DEADLINE, || async {
                posted.load(Ordering::Relaxed) > before + 20
            })
            .await,
            "posts stopped flowing with database stopped on {first}"
        );
        control(&http, &first, "app_start", "database").await;
        assert!(
            switchboard::eventually(DEADLINE, || async { provides(&http, &first, "database") })
                .await
        );
    }
    stop.cancel();
    for client in clients {
        client.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert_eq!(failures.load(Ordering::Relaxed), 0, "failed keyed posts");
    let stored = user.stored(room).await;
    let ids: HashSet<i64> = stored.iter().map(|(id, _)| *id).collect();
    assert_eq!(stored.len(), acknowledged.len(), "each post stored once");
    assert_eq!(ids, acknowledged.iter().copied().collect::<HashSet<_>>());
    let seqs: Vec<i64> = stored.iter().map(|(_, seq)| *seq).collect();
    assert_eq!(
        seqs,
        (1..=stored.len() as i64).collect::<Vec<_>>(),
        "gapless"
    );
}

#[tokio::test]
async fn the_admin_cluster_view_shows_what_each_node_says_it_runs() {
    let Some(cluster) = Cluster::start(Backend::Sqlite, 1, 1).await else {
        return;
    };
    cluster.wait_for_mesh().await;
    let http = cluster.https[0].0.clone();
    let admin = Api {
        token: Some(ADMIN_TOKEN.into()),
        ..cluster.api(0)
    };
    let view = admin.get("/v1/admin/cluster").await;
    assert_eq!(view.status, StatusCode::OK, "{}", view.body);
    for node in [cluster.databases[0].name(), http.name()] {
        let reply = http
            .call_on(
                node,
                system::SERVICE,
                "apps",
                Vec::new(),
                CallOptions::default(),
            )
            .await
            .unwrap();
        let said: Vec<(String, String)> = wire::AppsReply::decode(reply)
            .unwrap()
            .apps
            .into_iter()
            .filter(|a| a.state != "stopped")
            .map(|a| (a.name, a.state))
            .collect();
        let shown: Vec<(String, String)> = view.body["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == node)
            .unwrap()["apps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["name"].as_str().unwrap().to_owned(),
                    a["state"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(shown, said, "{node}");
        assert_eq!(shown.len(), 1, "{node} runs one application: {shown:?}");
    }
}

async fn one_node_with_every_application_serves_the_whole_chat(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(url) = database_url(backend, dir.path()).await else {
        return;
    };
    let store = switchboard_database::Store::connect(&url, 8).await.unwrap();
    let http = Arc::new(switchboard_http::HttpApp::with_settings(http_settings()));
    let catalog: Vec<SharedApplication> = vec![
        Arc::new(switchboard_database::DatabaseApp::with_store(
            store,
            switchboard_database::configuration::DatabaseSettings::default(),
        )),
        Arc::new(switchboard_log::LogApp),
        Arc::new(switchboard_reporting::ReportingApp::with_thresholds(
            switchboard_reporting::Thresholds::default(),
        )),
        Arc::new(switchboard_analytics::AnalyticsApp::with_settings(
            switchboard_analytics::AnalyticsSettings::default(),
        )),
        http.clone(),
    ];
    let names: Vec<&str> = catalog.iter().map(|a| a.name()).collect();
    let config = NodeConfig {
        node_name: Some("node@test".into()),
        ..NodeConfig::loopback()
    };
    let cookie =
        switchboard::Cookie::new(format!("single-node-cookie-{}", std::process::id())).unwrap();
    let (node, applications) = Applications::boot("node", config, cookie, catalog, &names)
        .await
        .unwrap();
    assert!(
        applications.list().iter().all(|a| a.state == "running"),
        "{:?}",
        applications.list()
    );
    let api = Api::new(&format!("http://127.0.0.1:{}", http.port().unwrap()));
    assert_eq!(api.get("/readyz").await.status, StatusCode::OK);

    let alice = api.register("alice").await;
    let bob = api.register("bob").await;
    let room = alice.create_room("lobby").await;
    let joined = bob.post(&format!("/v1/rooms/{room}/join"), json!({})).await;
    assert!(joined.status.is_success(), "{}", joined.body);
    for i in 0..5 {
        let key = format!("alice-{i}");
        let reply = alice
            .post_message(room, &format!("hello {i}"), Some(&key))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    }
    // A retry with the same key is the same message.
    let again = alice.post_message(room, "hello 0", Some("alice-0")).await;
    assert_eq!(again.body["seq"], 1, "{}", again.body);
    let page = bob.get(&format!("/v1/rooms/{room}/messages")).await;
    assert_eq!(page.seqs().len(), 5, "{}", page.body);

    // Reporting: a member reports a message and an admin sees it.
    let message = page.body["messages"][0]["id"].as_i64().unwrap();
    let filed = bob
        .post(
            &format!("/v1/rooms/{room}/messages/{message}/report"),
            json!({ "reason": "rude" }),
        )
        .await;
    assert_eq!(filed.status, StatusCode::CREATED, "{}", filed.body);
    let admin = Api {
        token: Some(ADMIN_TOKEN.into()),
        ..api.clone()
    };
    let open = admin.get("/v1/admin/reports?status=open").await;
    assert_eq!(open.body["reports"][0]["id"], filed.body["id"]);

    // Analytics counts what was posted, once bootstrapped.
    let counted = switchboard::eventually(DEADLINE, || async {
        let figures = alice
            .get(&format!("/v1/rooms/{room}/analytics?window=1h"))
            .await;
        figures.status == StatusCode::OK && figures.body["messages"]["total"] == 5
    })
    .await;
    assert!(counted, "analytics never counted the 5 messages");

    // The admin view shows one node running all five.
    let view = admin.get("/v1/admin/cluster").await;
    let nodes = view.body["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{}", view.body);
    let apps: Vec<&str> = nodes[0]["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(apps, names);
    node.shutdown().await;
}
