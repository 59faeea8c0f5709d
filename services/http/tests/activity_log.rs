//! The activity log through the API: chat activity from the http node reaches the log service,
//! `/v1/admin/logs` filters it, `/v1/admin/logs/stream` tails it live, and no secret — cookie,
//! password, bearer token, admin token, Authorization header — ever reaches it.
//!
//! This binary installs the process-wide tracing subscriber with the activity layer, exactly as
//! `switchboard::startup::run` does in every node binary, so it holds a single test.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::*;

const PASSWORD: &str = "very-secret-password-123";

async fn all_entries(admin: &Api) -> Vec<Value> {
    let reply = admin.get("/v1/admin/logs?limit=1000").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body["entries"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_is_logged_filterable_tailable_and_free_of_secrets() {
    let receiver = record_activity();
    let mut cluster = Cluster::start(Backend::Sqlite, 1, 0).await.unwrap();
    cluster.add_log().await;
    cluster.add_http(http_settings()).await;
    let http = cluster.ship_activity(receiver).await;
    let api = cluster.api(0);
    let admin = Api {
        token: Some(ADMIN_TOKEN.into()),
        ..api.clone()
    };

    // Tail before acting, to see entries arrive live.
    let stream = admin
        .request(Method::GET, "/v1/admin/logs/stream?kind=message_posted")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);

    let registered = api
        .post(
            "/v1/auth/register",
            json!({ "username": "dana", "password": PASSWORD }),
        )
        .await;
    let token = registered.body["token"].as_str().unwrap().to_owned();
    let user = Api {
        token: Some(token.clone()),
        user_id: 0,
        ..api.clone()
    };
    let failed = api
        .post(
            "/v1/auth/login",
            json!({ "username": "dana", "password": "wrong-but-secret-pw" }),
        )
        .await;
    assert_eq!(failed.status, StatusCode::UNAUTHORIZED);
    let room = user.create_room("logged").await;
    assert_eq!(
        user.post_message(room, "hello log", None).await.status,
        StatusCode::CREATED
    );
    // A request whose path carries a credential-looking string, and a bad bearer token.
    let forged = Api {
        token: Some("Bearer-ish-forged-token-xyz".into()),
        ..api.clone()
    };
    assert_eq!(forged.get("/v1/me").await.status, StatusCode::UNAUTHORIZED);

    // Every kind of chat activity arrives.
    for kind in [
        "user_registered",
        "login_failed",
        "room_created",
        "message_posted",
    ] {
        let seen = switchboard::eventually(DEADLINE, || async {
            let reply = admin.get(&format!("/v1/admin/logs?kind={kind}")).await;
            reply.body["entries"]
                .as_array()
                .is_some_and(|e| !e.is_empty())
        })
        .await;
        assert!(seen, "no {kind} entry in the log");
    }
    let failed_login = admin.get("/v1/admin/logs?kind=login_failed").await;
    let entry = &failed_login.body["entries"][0];
    assert_eq!(entry["fields"]["username"], "dana");
    assert_eq!(entry["fields"]["address"], "127.0.0.1");
    assert_eq!(entry["node"], http.name());

    // The tail delivered the post live.
    let mut body = String::new();
    let mut stream = stream;
    let tailed = tokio::time::timeout(DEADLINE, async {
        while let Ok(Some(chunk)) = stream.chunk().await {
            body.push_str(&String::from_utf8_lossy(&chunk));
            if body.contains("event: log") && body.contains("message_posted") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(tailed, Ok(true), "{body}");

    // Filters and paging.
    let warn_or_worse = admin.get("/v1/admin/logs?level=warn").await;
    for entry in warn_or_worse.body["entries"].as_array().unwrap() {
        assert!(
            matches!(entry["level"].as_str(), Some("WARN" | "ERROR")),
            "{entry}"
        );
    }
    let page = admin.get("/v1/admin/logs?limit=1").await;
    assert_eq!(page.body["entries"].as_array().unwrap().len(), 1);
    let cursor = page.body["next_cursor"].as_str().unwrap();
    let next = admin
        .get(&format!("/v1/admin/logs?limit=1&cursor={cursor}"))
        .await;
    assert_ne!(next.body["entries"][0]["id"], page.body["entries"][0]["id"]);
    let bad = admin.get("/v1/admin/logs?level=loud").await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);

    // No secret anywhere in the stored log.
    let text = Value::Array(all_entries(&admin).await).to_string();
    for secret in [
        PASSWORD,
        "wrong-but-secret-pw",
        token.as_str(),
        ADMIN_TOKEN,
        cluster.cookie.as_str(),
        "forged-token-xyz",
    ] {
        assert!(!text.contains(secret), "a secret reached the log: {secret}");
    }
}
