//! Operations endpoints: liveness, readiness, Prometheus metrics, the OpenAPI document, and the
//! admin view of the cluster.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use prost::Message;
use serde_json::json;
use switchboard_proto::v1 as wire;

use crate::auth::Admin;
use crate::error::{ApiError, ErrorBody};
use crate::model::{Cluster, ClusterApp, ClusterNode};
use crate::state::AppState;

/// How long the cluster view waits for one node's list of applications.
const APPS_TIMEOUT: Duration = Duration::from_secs(1);

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200)))]
pub(crate) async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// This node can reach a `database` provider.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses((status = 200), (status = 503, body = ErrorBody)))]
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    if state.database.ping(Duration::from_secs(1)).await {
        Ok(Json(json!({ "status": "ready" })))
    } else {
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "no database node answers",
        ))
    }
}

/// Prometheus metrics of this node: the runtime's and the API's.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, content_type = "text/plain")))]
pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.node.metrics().render(),
    )
}

/// Every node this http node knows: name, address, state, services, groups and applications.
#[utoipa::path(get, path = "/v1/admin/cluster", tag = "admin", security(("admin" = [])),
    responses((status = 200, body = Cluster), (status = 403, body = ErrorBody)))]
pub(crate) async fn cluster(State(state): State<AppState>, _admin: Admin) -> Json<Cluster> {
    let members = state.node.nodes();
    let apps = futures::future::join_all(members.iter().map(|node| {
        let up = node.is_self || node.state == switchboard::PeerState::Up;
        apps_of(&state.node, &node.name, up)
    }))
    .await;
    let nodes = members
        .into_iter()
        .zip(apps)
        .map(|(node, apps)| ClusterNode {
            state: match (&node.state, node.is_self) {
                (_, true) => "self".into(),
                (switchboard::PeerState::Up, _) => "up".into(),
                (switchboard::PeerState::Down { reason }, _) => format!("down ({reason})"),
            },
            name: node.name,
            address: node.address,
            incarnation: format!("{:016x}", node.incarnation),
            services: node.services,
            groups: node.groups,
            apps,
        })
        .collect();
    Json(Cluster { nodes })
}

/// The applications `node` runs or has given up on, as its built-in service reports them.
async fn apps_of(node: &switchboard::Node, name: &str, up: bool) -> Vec<ClusterApp> {
    if !up {
        return Vec::new();
    }
    let options = switchboard::CallOptions::default().timeout(APPS_TIMEOUT);
    let Ok(reply) = node
        .call_on(
            name,
            switchboard::system::SERVICE,
            "apps",
            Vec::new(),
            options,
        )
        .await
    else {
        return Vec::new();
    };
    let Ok(reply) = wire::AppsReply::decode(reply) else {
        return Vec::new();
    };
    reply
        .apps
        .into_iter()
        .filter(|app| app.state != "stopped")
        .map(|app| ClusterApp {
            name: app.name,
            state: app.state,
            since_ms: app.since_ms,
            restarts: app.restarts,
            last_failure: app.last_failure,
            services: app.services,
        })
        .collect()
}
