//! Health, readiness, metrics, the OpenAPI document and the admin view of the cluster.

mod support;

use reqwest::StatusCode;
use support::*;

#[tokio::test]
async fn health_readiness_and_metrics() {
    let cluster = Cluster::start(Backend::Sqlite, 1, 1).await.unwrap();
    let api = cluster.api(0);
    assert_eq!(api.get("/healthz").await.status, StatusCode::OK);
    assert_eq!(api.get("/readyz").await.status, StatusCode::OK);
    api.register("metered").await;
    let metrics = api
        .client
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in [
        "switchboard_calls_total",
        "switchboard_links_up",
        "switchboard_http_requests_total",
        "switchboard_http_request_duration_seconds",
    ] {
        assert!(metrics.contains(series), "{series} missing from /metrics");
    }
    // Secrets never show up in metrics.
    assert!(!metrics.contains(&cluster.cookie) && !metrics.contains(ADMIN_TOKEN));
}

#[tokio::test]
async fn the_openapi_document_lists_every_route() {
    let cluster = Cluster::start(Backend::Sqlite, 1, 1).await.unwrap();
    let document = cluster.api(0).get("/openapi.json").await;
    assert_eq!(document.status, StatusCode::OK);
    assert!(document.body["openapi"].as_str().unwrap().starts_with("3."));
    let expected = [
        ("/v1/auth/register", "post"),
        ("/v1/auth/login", "post"),
        ("/v1/auth/logout", "post"),
        ("/v1/me", "get"),
        ("/v1/rooms", "post"),
        ("/v1/rooms", "get"),
        ("/v1/rooms/{room_id}", "get"),
        ("/v1/rooms/{room_id}/join", "post"),
        ("/v1/rooms/{room_id}/leave", "post"),
        ("/v1/rooms/{room_id}/members", "get"),
        ("/v1/rooms/{room_id}/messages", "post"),
        ("/v1/rooms/{room_id}/messages", "get"),
        ("/v1/rooms/{room_id}/messages/{message_id}", "patch"),
        ("/v1/rooms/{room_id}/messages/{message_id}", "delete"),
        ("/v1/rooms/{room_id}/events", "get"),
        ("/v1/rooms/{room_id}/analytics", "get"),
        ("/v1/admin/analytics", "get"),
        ("/v1/admin/cluster", "get"),
        ("/v1/admin/nodes", "get"),
        ("/v1/admin/rooms/{room_id}/analytics", "get"),
        ("/v1/admin/logs", "get"),
        ("/v1/admin/logs/stream", "get"),
        ("/v1/rooms/{room_id}/messages/{message_id}/report", "post"),
        ("/v1/admin/reports", "get"),
        ("/v1/admin/reports/{report_id}/resolve", "post"),
        ("/v1/admin/anomalies", "get"),
        ("/v1/admin/anomalies/stream", "get"),
        ("/v1/admin/report", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ];
    let paths = document.body["paths"].as_object().unwrap();
    for (path, method) in expected {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing"
        );
    }
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(documented, expected.len(), "no undocumented extras either");
}

#[tokio::test]
async fn the_admin_view_of_the_cluster() {
    let cluster = Cluster::start(Backend::Sqlite, 2, 1).await.unwrap();
    let api = cluster.api(0);
    assert_eq!(api.get("/v1/admin/cluster").await.code(), "unauthorized");
    let wrong = Api {
        token: Some("not-the-admin-token".into()),
        ..api.clone()
    };
    assert_eq!(
        wrong.get("/v1/admin/cluster").await.status,
        StatusCode::FORBIDDEN
    );
    let admin = Api {
        token: Some(ADMIN_TOKEN.into()),
        ..api.clone()
    };
    let view = admin.get("/v1/admin/cluster").await;
    assert_eq!(view.status, StatusCode::OK);
    assert_eq!(view.body["nodes"][0]["state"], "self");
    // The http node waited for one database provider at start; the view must list both.
    cluster.wait_for_mesh().await;
    let view = admin.get("/v1/admin/cluster").await;
    let nodes = view.body["nodes"].as_array().unwrap();
    let databases = nodes
        .iter()
        .filter(|n| {
            n["services"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s == "database")
                && n["state"] == "up"
        })
        .count();
    assert_eq!(databases, 2, "{}", view.body);
}

#[tokio::test]
async fn admin_routes_are_403_when_no_admin_token_is_configured() {
    let settings = switchboard_http::HttpSettings {
        admin_token: None,
        ..http_settings()
    };
    let cluster = Cluster::start_with(Backend::Sqlite, 1, 1, settings)
        .await
        .unwrap();
    let anyone = Api {
        token: Some(ADMIN_TOKEN.into()),
        ..cluster.api(0)
    };
    let reply = anyone.get("/v1/admin/cluster").await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::FORBIDDEN, "admin_disabled")
    );
}

#[tokio::test]
async fn every_response_names_the_http_node_that_served_it() {
    let cluster = Cluster::start(Backend::Sqlite, 1, 2).await.unwrap();
    for (node, base) in &cluster.https {
        let api = Api::new(base);
        let user = api
            .register(&format!("served_{}", node.name().replace('@', "_")))
            .await;
        // A success, a client error from a handler, the fallback and a refused method.
        let replies = [
            api.get("/healthz").await,
            user.get("/v1/rooms").await,
            api.get("/v1/rooms").await,
            api.get("/no/such/route").await,
            api.send(api.request(reqwest::Method::PUT, "/healthz"))
                .await,
        ];
        for reply in replies {
            assert_eq!(
                reply
                    .headers
                    .get("x-served-by")
                    .and_then(|v| v.to_str().ok()),
                Some(node.name()),
                "a {} answer",
                reply.status
            );
        }
    }
    assert_ne!(cluster.https[0].0.name(), cluster.https[1].0.name());
}
