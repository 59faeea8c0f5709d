//! A node's own Prometheus endpoint on `SWITCHBOARD_METRICS_LISTEN`, for nodes that serve no
//! HTTP API of their own (the http node serves `/metrics` on its API port instead). It also
//! answers `GET /healthz` (the process is alive and serving), for container health checks.

use std::sync::Arc;

use axum::Router;
use axum::routing::get;

use crate::error::NodeError;
use crate::node::NodeInner;

pub(crate) async fn spawn(node: Arc<NodeInner>, listen: &str) -> Result<(), NodeError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| NodeError::Config(format!("cannot listen on {listen} for metrics: {e}")))?;
    let metrics = node.metrics.clone();
    let shutdown = node.shutdown.clone();
    let app = Router::new()
        .route("/metrics", get(move || async move { metrics.render() }))
        .route("/healthz", get(|| async { "ok" }));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
    });
    Ok(())
}
