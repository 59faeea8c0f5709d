//! Moderation end to end: content reports with an audit trail, anomalies detected from the live
//! event streams (floods, spam, spikes, failed-login bursts, a killed node), the summary report,
//! and a reporting replica going away without changing any answer.
//!
//! Activity reaches the reporting nodes through the log service, so this binary installs the
//! process-wide tracing subscriber with the activity layer, as every node binary does; it holds
//! a single test.

mod support;

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::*;
use switchboard::testing::{ChildNode, child_main};

#[tokio::test]
#[ignore = "runs only as the child process of the moderation test"]
async fn bare_node_process() {
    child_main(|config, cookie| switchboard::NodeBuilder::new("victim", config, cookie).start())
        .await;
}

fn thresholds() -> switchboard_reporting::Thresholds {
    switchboard_reporting::Thresholds {
        flood_posts: 6,
        spam_repeats: 3,
        spam_rooms: 2,
        spike_min: 12,
        failed_logins: 3,
        ..Default::default()
    }
}

async fn anomalies(admin: &Api) -> Vec<Value> {
    let reply = admin.get("/v1/admin/anomalies").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body["anomalies"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn kinds(admin: &Api) -> BTreeSet<String> {
    anomalies(admin)
        .await
        .iter()
        .map(|a| a["kind"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn wait_for_kind(admin: &Api, kind: &str) {
    let found =
        switchboard::eventually(DEADLINE, || async { kinds(admin).await.contains(kind) }).await;
    assert!(found, "no {kind} anomaly; have {:?}", kinds(admin).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moderation_end_to_end() {
    let receiver = record_activity();
    let mut cluster = Cluster::start(Backend::Sqlite, 1, 0).await.unwrap();
    cluster.add_log().await;
    let first_replica = cluster.add_reporting(thresholds()).await;
    cluster.add_reporting(thresholds()).await;
    cluster.add_http(http_settings()).await;
    let http = cluster.ship_activity(receiver).await;
    assert!(http.wait_for_service("reporting", DEADLINE).await);
    let api = cluster.api(0);
    let admin = Api {
        token: Some(ADMIN_TOKEN.into()),
        ..api.clone()
    };

    // Ordinary traffic: a few people chatting. No anomaly.
    let alice = api.register("alice").await;
    let bob = api.register("bob").await;
    let lobby = alice.create_room("lobby").await;
    let side = alice.create_room("side").await;
    for room in [lobby, side] {
        bob.post(&format!("/v1/rooms/{room}/join"), json!({})).await;
    }
    for i in 0..4 {
        alice.post_message(lobby, &format!("hi {i}"), None).await;
        bob.post_message(side, &format!("hello {i}"), None).await;
    }
    // Wait until the replicas have certainly seen that traffic, then check it raised nothing.
    let summary_sees_it = switchboard::eventually(DEADLINE, || async {
        admin.get("/v1/admin/report").await.body["messages"].as_i64() == Some(8)
    })
    .await;
    assert!(summary_sees_it);
    assert!(
        anomalies(&admin).await.is_empty(),
        "{:?}",
        anomalies(&admin).await
    );

    // Content reports: members only; resolving deletes the message and keeps the trail.
    let message = alice.post_message(lobby, "something offensive", None).await;
    let message_id = message.body["id"].as_i64().unwrap();
    let outsider = api.register("outsider").await;
    let refused = outsider
        .post(
            &format!("/v1/rooms/{lobby}/messages/{message_id}/report"),
            json!({ "reason": "rude" }),
        )
        .await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::FORBIDDEN, "not_a_member")
    );
    let filed = bob
        .post(
            &format!("/v1/rooms/{lobby}/messages/{message_id}/report"),
            json!({ "reason": "rude" }),
        )
        .await;
    assert_eq!(filed.status, StatusCode::CREATED, "{}", filed.body);
    assert_eq!(filed.body["status"], "open");
    let report_id = filed.body["id"].as_i64().unwrap();
    let open = admin.get("/v1/admin/reports?status=open").await;
    assert_eq!(open.body["reports"][0]["id"], report_id);
    let bad = admin
        .post(
            &format!("/v1/admin/reports/{report_id}/resolve"),
            json!({ "action": "shrug" }),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let missing = admin
        .post(
            "/v1/admin/reports/999999/resolve",
            json!({ "action": "dismiss" }),
        )
        .await;
    assert_eq!(
        (missing.status, missing.code()),
        (StatusCode::NOT_FOUND, "report_not_found")
    );
    let resolved = admin
        .post(
            &format!("/v1/admin/reports/{report_id}/resolve"),
            json!({ "action": "delete_message", "note": "violates the rules" }),
        )
        .await;
    assert_eq!(resolved.status, StatusCode::OK, "{}", resolved.body);
    assert_eq!(
        (
            resolved.body["status"].as_str(),
            resolved.body["action"].as_str()
        ),
        (Some("resolved"), Some("delete_message"))
    );
    let history = alice
        .get(&format!(
            "/v1/rooms/{lobby}/messages?after={}",
            message.body["seq"].as_i64().unwrap() - 1
        ))
        .await;
    assert_eq!(history.body["messages"][0]["deleted"], true);
    let trail = admin.get("/v1/admin/reports?status=resolved").await;
    assert_eq!(trail.body["reports"][0]["note"], "violates the rules");

    // Flooding: one user, many posts in a few seconds.
    let flooder = api.register("flooder").await;
    let flood_room = flooder.create_room("flood").await;
    for i in 0..8 {
        flooder
            .post_message(flood_room, &format!("flood {i}"), None)
            .await;
    }
    wait_for_kind(&admin, "flooding").await;
    // Spam: the same text in several rooms.
    for (i, room) in [lobby, side, lobby].into_iter().enumerate() {
        let who = if i % 2 == 0 { &alice } else { &bob };
        who.post_message(room, "Cheap watches at example dot com", None)
            .await;
    }
    wait_for_kind(&admin, "spam").await;
    // A spike: a quiet room suddenly busy, from many users (so it is not a flood).
    let busy = alice.create_room("busy").await;
    let mut crowd = Vec::new();
    for i in 0..12 {
        let member = api.register(&format!("crowd{i}")).await;
        member
            .post(&format!("/v1/rooms/{busy}/join"), json!({}))
            .await;
        crowd.push(member);
    }
    for (i, member) in crowd.iter().enumerate() {
        member.post_message(busy, &format!("wow {i}"), None).await;
    }
    wait_for_kind(&admin, "spike").await;
    // A burst of failed logins for one username.
    for _ in 0..3 {
        let failed = api
            .post(
                "/v1/auth/login",
                json!({ "username": "alice", "password": "not her password" }),
            )
            .await;
        assert_eq!(failed.status, StatusCode::UNAUTHORIZED);
    }
    wait_for_kind(&admin, "failed_logins").await;
    // A node killed with SIGKILL.
    let mut victim = ChildNode::spawn(
        "bare_node_process",
        "victim@test",
        http.address(),
        &cluster.cookie,
        &[],
    );
    let joined = switchboard::eventually(DEADLINE, || async {
        http.nodes()
            .iter()
            .any(|n| n.name == "victim@test" && n.state == switchboard::PeerState::Up)
    })
    .await;
    assert!(joined);
    victim.kill();
    wait_for_kind(&admin, "node_down").await;
    let down = anomalies(&admin)
        .await
        .into_iter()
        .find(|a| a["kind"] == "node_down")
        .unwrap();
    assert_eq!(down["subject"], "node:victim@test");
    assert_eq!(down["severity"], "high");

    // The summary report, as JSON and as HTML.
    let summary = admin.get("/v1/admin/report").await;
    assert_eq!(summary.status, StatusCode::OK);
    assert!(
        summary.body["top_anomalies"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    );
    assert_eq!(summary.body["reports"]["resolved"], 1);
    assert!(summary.body["busiest_rooms"][0]["name"].is_string());
    assert_eq!(summary.body["failed_logins"][0]["name"], "alice");
    let page = admin
        .send(
            admin
                .request(Method::GET, "/v1/admin/report")
                .header("accept", "text/html"),
        )
        .await;
    assert_eq!(page.status, StatusCode::OK);
    let html = admin
        .client
        .get(format!("{}/v1/admin/report", admin.base))
        .bearer_auth(ADMIN_TOKEN)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("<svg") && html.contains("Top anomalies"),
        "{html}"
    );

    // One replica goes away: the other answers with the same anomalies.
    let before: BTreeSet<String> = anomalies(&admin)
        .await
        .iter()
        .map(|a| a["id"].to_string())
        .collect();
    first_replica.shutdown().await;
    let after: BTreeSet<String> = anomalies(&admin)
        .await
        .iter()
        .map(|a| a["id"].to_string())
        .collect();
    assert_eq!(before, after);
}
