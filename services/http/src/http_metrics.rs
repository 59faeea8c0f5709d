//! Prometheus metrics of the HTTP API (requests by route, method and status; latency by route),
//! registered in the node's registry so `/metrics` shows them beside the runtime's.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};

/// The API's metrics.
#[derive(Debug, Clone)]
pub(crate) struct HttpMetrics {
    requests: IntCounterVec,
    seconds: HistogramVec,
}

impl HttpMetrics {
    /// Creates the metrics and registers them with `registry`.
    pub(crate) fn register(registry: &prometheus::Registry) -> Self {
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let seconds = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency by route",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["route"],
        )
        .expect("valid metric");
        // Registration fails only for a duplicate name: a second API on one node (tests) shares
        // the first one's series, which is what it should count into anyway.
        let _ = registry.register(Box::new(requests.clone()));
        let _ = registry.register(Box::new(seconds.clone()));
        Self { requests, seconds }
    }
}

/// The counter of connections dropped because the client stopped reading (see
/// `stalled_writes.rs`), registered with `registry`.
pub(crate) fn stalled_connections(registry: &prometheus::Registry) -> prometheus::IntCounter {
    let counter = prometheus::IntCounter::new(
        "http_stalled_connections_dropped_total",
        "HTTP connections dropped because a write waited too long for the client to read",
    )
    .expect("valid metric");
    // Fails only for a second API on one node (tests), whose drops then go uncounted.
    let _ = registry.register(Box::new(counter.clone()));
    counter
}

/// Middleware: counts and times every request.
pub(crate) async fn track(
    State(metrics): State<HttpMetrics>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    metrics
        .requests
        .with_label_values(&[route.as_str(), method.as_str(), response.status().as_str()])
        .inc();
    metrics
        .seconds
        .with_label_values(&[route.as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}
