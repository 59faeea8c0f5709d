//! Provider choice and retry: how a call finds a provider and survives one failing.
//!
//! A local provider is used in-process. Otherwise one remote provider is picked by power of two
//! choices on in-flight calls. When it fails before replying (node down, draining, overloaded),
//! an idempotent call is retried on another provider within the same deadline; a non-idempotent
//! call is retried only when it certainly never ran, and otherwise returns the error, so the
//! caller is never misled into applying a request twice.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use rand::Rng;
use switchboard_proto::v1::{self as wire, frame::Kind};

use crate::error::NodeError;
use crate::events::ClusterEvent;
use crate::metrics::{CallSeries, Locality};
use crate::node::NodeInner;
use crate::registry;
use crate::service::Request;

/// How a call behaves.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// Deadline for the whole call, failovers included; default `SWITCHBOARD_CALL_TIMEOUT_MS`.
    pub timeout: Option<Duration>,
    /// Safe to run more than once: may be retried on another provider after a failure.
    pub idempotent: bool,
    /// Trace id to carry; a fresh one is made when empty.
    pub trace_id: Option<String>,
}

impl CallOptions {
    /// Options for an idempotent call.
    pub fn idempotent() -> Self {
        Self {
            idempotent: true,
            ..Self::default()
        }
    }

    /// Sets the deadline.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Carries an existing trace id.
    pub fn trace(mut self, trace_id: impl Into<String>) -> Self {
        self.trace_id = Some(trace_id.into());
        self
    }
}

/// A fresh random trace id.
pub fn new_trace_id() -> String {
    format!("{:016x}", rand::rng().random::<u64>())
}

pub(crate) async fn call(
    node: &Arc<NodeInner>,
    only: Option<&str>,
    service: &str,
    method: &str,
    payload: Bytes,
    options: CallOptions,
) -> Result<Bytes, NodeError> {
    let timeout = options
        .timeout
        .unwrap_or_else(|| node.config.call_timeout());
    let started = std::time::Instant::now();
    let series = node.metrics.call_series(service);
    if only.is_none_or(|o| o == node.name)
        && let Some(local) = node.local_service(service)
    {
        // In-process: no trace id is made up (the handler's own calls make theirs), and a
        // handler that answers on its first poll never touches the timer wheel.
        let request = Request {
            method: method.to_owned(),
            payload,
            trace_id: options.trace_id.unwrap_or_default(),
        };
        let mut future = local.handle(request);
        let result = match future.as_mut().now_or_never() {
            Some(result) => result.map_err(NodeError::Service),
            None => match tokio::time::timeout(timeout, future).await {
                Ok(result) => result.map_err(NodeError::Service),
                Err(_) => Err(NodeError::Timeout {
                    service: service.to_owned(),
                    timeout,
                }),
            },
        };
        record(&series[Locality::Local as usize], &result, started);
        return result;
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let trace_id = options.trace_id.unwrap_or_else(new_trace_id);
    let mut excluded: Vec<(String, u64)> = Vec::new();
    loop {
        let providers = node.remote_providers(service, only, &excluded);
        let Some(link) = registry::choose(&providers) else {
            // During a failover, wait (within the deadline) for a provider to appear or return.
            if !excluded.is_empty() && tokio::time::Instant::now() < deadline {
                let changed = node.registry_changed.notified();
                let pause = tokio::time::sleep(Duration::from_millis(20));
                tokio::select! {
                    _ = changed => {}
                    _ = pause => {}
                    _ = tokio::time::sleep_until(deadline) => {}
                }
                if !node.remote_providers(service, only, &[]).is_empty() {
                    excluded.clear();
                }
                continue;
            }
            let error = NodeError::NoProvider {
                service: service.to_owned(),
            };
            let result = Err(error);
            record(&series[Locality::Remote as usize], &result, started);
            return result;
        };
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let request = wire::Call {
            id: 0,
            service: service.to_owned(),
            method: method.to_owned(),
            payload: payload.clone(),
            idempotent: options.idempotent,
            timeout_ms: remaining.as_millis().min(u32::MAX as u128) as u32,
            trace_id: trace_id.clone(),
        };
        let result = link.call(request, deadline).await.map_err(|e| match e {
            NodeError::NoProvider { .. } => NodeError::NoProvider {
                service: service.to_owned(),
            },
            NodeError::Timeout { .. } => NodeError::Timeout {
                service: service.to_owned(),
                timeout,
            },
            other => other,
        });
        match result {
            Err(error)
                if only.is_none()
                    && tokio::time::Instant::now() < deadline
                    && error.is_retryable()
                    && (options.idempotent || error.never_applied()) =>
            {
                tracing::info!(kind = "failover", service, from = %link.peer, %error, trace_id = %trace_id, "failing over to another provider");
                node.metrics.failovers.with_label_values(&[service]).inc();
                let _ = node.events.send(ClusterEvent::Failover {
                    service: service.to_owned(),
                    from: link.peer.clone(),
                });
                excluded.push((link.peer.clone(), link.incarnation));
            }
            result => {
                record(&series[Locality::Remote as usize], &result, started);
                return result;
            }
        }
    }
}

fn record(series: &CallSeries, result: &Result<Bytes, NodeError>, started: std::time::Instant) {
    let outcome = match result {
        Ok(_) => 0,
        Err(NodeError::Service(_)) => 1,
        Err(NodeError::Timeout { .. }) => 2,
        Err(NodeError::NoProvider { .. }) => 3,
        Err(NodeError::NodeDown { .. }) => 4,
        Err(NodeError::Overloaded(_)) => 5,
        Err(_) => 6,
    };
    series.observe(outcome, started.elapsed().as_secs_f64());
}

pub(crate) fn cast(
    node: &Arc<NodeInner>,
    service: &str,
    method: &str,
    payload: Bytes,
) -> Result<(), NodeError> {
    let request = Request {
        method: method.to_owned(),
        payload,
        trace_id: new_trace_id(),
    };
    if node.local_service(service).is_some() {
        node.serve_cast(service, request);
        node.metrics.casts.with_label_values(&["cast", "ok"]).inc();
        return Ok(());
    }
    let providers = node.remote_providers(service, None, &[]);
    let Some(link) = registry::choose(&providers) else {
        node.metrics
            .casts
            .with_label_values(&["cast", "no_provider"])
            .inc();
        return Err(NodeError::NoProvider {
            service: service.to_owned(),
        });
    };
    let result = link.send_now(Kind::Cast(wire::Cast {
        service: service.to_owned(),
        method: request.method,
        payload: request.payload,
        trace_id: request.trace_id,
    }));
    let outcome = if result.is_ok() { "ok" } else { "dropped" };
    node.metrics
        .casts
        .with_label_values(&["cast", outcome])
        .inc();
    result
}
