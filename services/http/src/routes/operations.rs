//! Operations endpoints: liveness, readiness, Prometheus metrics, the OpenAPI document, and the
//! admin view of the cluster.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use crate::auth::Admin;
use crate::error::{ApiError, ErrorBody};
use crate::model::{Cluster, ClusterNode};
use crate::state::AppState;

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

/// Every node this http node knows: name, address, state, services and groups.
#[utoipa::path(get, path = "/v1/admin/cluster", tag = "admin", security(("admin" = [])),
    responses((status = 200, body = Cluster), (status = 403, body = ErrorBody)))]
pub(crate) async fn cluster(State(state): State<AppState>, _admin: Admin) -> Json<Cluster> {
    let nodes = state
        .node
        .nodes()
        .into_iter()
        .map(|node| ClusterNode {
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
        })
        .collect();
    Json(Cluster { nodes })
}
