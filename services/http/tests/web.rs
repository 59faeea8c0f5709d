//! The web client and the dashboard as an http node serves them: the pages at `/` and
//! `/dashboard` with a Content-Security-Policy that allows no inline script or style, every
//! asset a page links with its right content type, and the admin endpoints only the dashboard
//! uses (`/v1/admin/nodes` with its round trips and frame counters,
//! `/v1/admin/rooms/{room_id}/analytics`). The pages' behaviour is
//! tested in a real browser by `tests/browser/run.sh`.

mod support;

use reqwest::StatusCode;
use support::*;

const PAGES: [&str; 2] = ["/", "/dashboard"];

async fn cluster() -> (Cluster, Api) {
    let cluster = Cluster::start(Backend::Sqlite, 1, 1).await.unwrap();
    let api = cluster.api(0);
    (cluster, api)
}

/// The `/assets/...` paths a page links.
fn assets(page: &str) -> Vec<String> {
    page.split('"')
        .filter(|part| part.starts_with("/assets/"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn pages_are_served_with_a_policy_that_allows_no_inline_script() {
    let (_cluster, api) = cluster().await;
    for path in PAGES {
        let response = api
            .client
            .get(format!("{}{path}", api.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers().clone();
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(header("content-type"), "text/html; charset=utf-8", "{path}");
        let policy = header("content-security-policy");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
        ] {
            assert!(policy.contains(directive), "{path}: {policy}");
        }
        assert!(!policy.contains("unsafe-inline"), "{path}: {policy}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        let page = response.text().await.unwrap();
        assert!(page.starts_with("<!doctype html>"), "{path}");
        assert!(
            !page.contains("{version}"),
            "{path}: the asset version was not stamped"
        );
    }
}

#[tokio::test]
async fn every_linked_asset_is_served_with_its_content_type() {
    let (_cluster, api) = cluster().await;
    let mut seen = Vec::new();
    for path in PAGES {
        let page = api
            .client
            .get(format!("{}{path}", api.base))
            .send()
            .await
            .unwrap();
        let page = page.text().await.unwrap();
        let linked = assets(&page);
        assert!(
            linked.iter().any(|a| a.ends_with(".js")),
            "{path} links no script"
        );
        assert!(
            linked.iter().any(|a| a.ends_with(".css")),
            "{path} links no style"
        );
        seen.extend(linked);
    }
    // The modules the pages load import these by relative paths.
    let version = seen[0].split('/').nth(2).unwrap().to_owned();
    for module in ["api.js", "sse.js", "dom.js", "charts.js"] {
        seen.push(format!("/assets/{version}/{module}"));
    }
    for asset in seen {
        let response = api
            .client
            .get(format!("{}{asset}", api.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{asset}");
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        let expected = match asset.rsplit('.').next() {
            Some("js") => "text/javascript; charset=utf-8",
            Some("css") => "text/css; charset=utf-8",
            Some("svg") => "image/svg+xml",
            other => panic!("unexpected asset kind {other:?}"),
        };
        assert_eq!(content_type, expected, "{asset}");
        assert!(response.headers().contains_key("content-security-policy"));
        assert!(
            !response.bytes().await.unwrap().is_empty(),
            "{asset} is empty"
        );
    }
}

#[tokio::test]
async fn an_unknown_asset_is_a_json_not_found() {
    let (_cluster, api) = cluster().await;
    let reply = api.get("/assets/0/nothing.js").await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::NOT_FOUND, "not_found")
    );
}

#[tokio::test]
async fn the_dashboards_node_view_has_uptime_and_round_trips() {
    let (cluster, api) = cluster().await;
    cluster.wait_for_mesh().await;
    let admin = Api {
        token: Some(ADMIN_TOKEN.to_owned()),
        ..api.clone()
    };
    assert_eq!(
        api.get("/v1/admin/nodes").await.status,
        StatusCode::UNAUTHORIZED
    );
    let reply = admin.get("/v1/admin/nodes").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let nodes = reply.body["nodes"].as_array().unwrap();
    assert_eq!(nodes[0]["state"], "self");
    assert_eq!(reply.body["served_by"], nodes[0]["name"]);
    let database = nodes
        .iter()
        .find(|n| {
            n["services"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s == "database")
        })
        .expect("the database node is listed");
    assert_eq!(database["state"], "up");
    assert!(
        database["rtt_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        "{database}"
    );
    assert!(database["uptime_seconds"].as_u64().is_some(), "{database}");
    assert!(database["up_since"].as_str().is_some(), "{database}");
}

/// The frame counters of the node hosting `service`, from one `/v1/admin/nodes` reply.
fn frames(nodes: &serde_json::Value, service: &str) -> (u64, u64) {
    let node = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| {
            n["services"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s == service)
        })
        .unwrap_or_else(|| panic!("no node hosts {service}: {nodes}"));
    let count = |field: &str| {
        node[field]
            .as_u64()
            .unwrap_or_else(|| panic!("{service}: no {field} in {node}"))
    };
    (count("frames_sent"), count("frames_received"))
}

#[tokio::test]
async fn the_node_view_counts_the_frames_calls_carry() {
    let (cluster, api) = cluster().await;
    cluster.wait_for_mesh().await;
    let admin = Api {
        token: Some(ADMIN_TOKEN.to_owned()),
        ..api.clone()
    };
    let before = admin.get("/v1/admin/nodes").await;
    assert_eq!(before.status, StatusCode::OK, "{}", before.body);
    let (db_sent, db_received) = frames(&before.body, "database");
    let (http_sent, http_received) = frames(&before.body, "http.sessions");
    // Each post is at least one call from the http node to the database node and its reply.
    const POSTS: u64 = 20;
    let alice = api.register("frames_alice").await;
    let room = alice.create_room("frames").await;
    for i in 0..POSTS {
        let posted = alice.post_message(room, &format!("frame {i}"), None).await;
        assert_eq!(posted.status, StatusCode::CREATED, "{}", posted.body);
    }
    let last = std::sync::Mutex::new(serde_json::Value::Null);
    let risen = switchboard::eventually(DEADLINE, || async {
        let now = admin.get("/v1/admin/nodes").await.body;
        let (sent, received) = frames(&now, "database");
        let (own_sent, own_received) = frames(&now, "http.sessions");
        *last.lock().unwrap() = now;
        received >= db_received + POSTS
            && sent >= db_sent + POSTS
            && own_sent >= http_sent + POSTS
            && own_received >= http_received + POSTS
    })
    .await;
    assert!(
        risen,
        "the counters did not rise by {POSTS} calls: before {}, after {}",
        before.body,
        last.lock().unwrap()
    );
}

#[tokio::test]
async fn a_rooms_figures_for_operators_name_the_room() {
    let (_cluster, api) = cluster().await;
    let admin = Api {
        token: Some(ADMIN_TOKEN.to_owned()),
        ..api.clone()
    };
    let unknown = admin.get("/v1/admin/rooms/999/analytics?window=1h").await;
    assert_eq!(
        (unknown.status, unknown.code()),
        (StatusCode::NOT_FOUND, "room_not_found")
    );
    let zero = admin.get("/v1/admin/rooms/0/analytics").await;
    assert_eq!(
        (zero.status, zero.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed")
    );
}
