//! Provider choice and retry: how a call finds a provider and survives one failing.
//!
//! A local provider is used in-process. Otherwise one remote provider is picked by power of two
//! choices on in-flight calls. When it fails before replying (node down, draining, overloaded),
//! an idempotent call is retried on another provider within the same deadline; a non-idempotent
//! call is retried only when it certainly never ran, and otherwise returns the error, so the
//! caller is never misled into applying a request twice.
//!
//! A call that finds no provider at all waits for one, within its deadline (gRPC's
//! wait-for-ready): the only database node restarting under its supervisor is a pause, not an
//! error, for every call made meanwhile. Nothing has been sent while a call waits, so waiting is
//! safe for any call; one that must not wait sets [`CallOptions::fail_fast`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use rand::Rng;
use switchboard_proto::v1::{self as wire, frame::Kind};

use crate::error::NodeError;
use crate::events::ClusterEvent;
use crate::lane::Urgency;
use crate::methods::Method;
use crate::metrics::{CallSeries, Locality};
use crate::node::NodeInner;
use crate::registry;
use crate::routes::Route;
use crate::service::{Answer, ByteString, Request, ServiceFuture, SharedService};

/// How a call behaves.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// Deadline for the whole call, failovers included; default `SWITCHBOARD_CALL_TIMEOUT_MS`.
    pub timeout: Option<Duration>,
    /// Safe to run more than once: may be retried on another provider after a failure.
    pub idempotent: bool,
    /// Trace id to carry; a fresh one is made when empty.
    pub trace_id: Option<ByteString>,
    /// Fail with `NoProvider` at once when no provider is up, instead of waiting (within the
    /// deadline) for one to come up. Calls to one named node never wait.
    pub fail_fast: bool,
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
    pub fn trace(mut self, trace_id: impl Into<ByteString>) -> Self {
        self.trace_id = Some(trace_id.into());
        self
    }

    /// Fails at once when no provider is up (see [`CallOptions::fail_fast`]).
    pub fn fail_fast(mut self) -> Self {
        self.fail_fast = true;
        self
    }
}

/// A fresh random trace id: 16 lowercase hex digits.
pub fn new_trace_id() -> String {
    fresh_trace_id().to_string()
}

/// A fresh random trace id as it travels in a call.
///
/// Every remote call makes one, so it must cost next to nothing: a per-thread fast generator
/// (seeded once from the OS-backed thread RNG: trace ids need uniqueness, not secrecy) and a
/// table lookup per hex digit, instead of `format!` or `hex` over a cryptographic RNG. Ids are
/// written [`TRACE_IDS_PER_BLOCK`] at a time into one shared buffer and handed out as slices of
/// it, so an id costs a reference count rather than an allocation and a free, and the copy on the
/// wire is a reference to the same digits.
fn fresh_trace_id() -> ByteString {
    thread_local! {
        static TRACE_IDS: std::cell::RefCell<(rand::rngs::SmallRng, Bytes)> =
            std::cell::RefCell::new((rand::SeedableRng::from_rng(&mut rand::rng()), Bytes::new()));
    }
    TRACE_IDS.with(|ids| {
        let (rng, block) = &mut *ids.borrow_mut();
        if block.is_empty() {
            *block = trace_id_block(rng);
        }
        // Hex digits are ASCII, so this never falls back to the empty default.
        ByteString::try_from(block.split_to(TRACE_ID_DIGITS)).unwrap_or_default()
    })
}

/// Hex digits in a trace id (64 random bits).
const TRACE_ID_DIGITS: usize = 16;

/// Trace ids written at once into one buffer.
const TRACE_IDS_PER_BLOCK: usize = 256;

/// [`TRACE_IDS_PER_BLOCK`] fresh trace ids, back to back.
fn trace_id_block(rng: &mut rand::rngs::SmallRng) -> Bytes {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut block = Vec::with_capacity(TRACE_ID_DIGITS * TRACE_IDS_PER_BLOCK);
    for _ in 0..TRACE_IDS_PER_BLOCK {
        let bits = rng.random::<u64>();
        block.extend(
            (0..TRACE_ID_DIGITS).map(|index| DIGITS[((bits >> (60 - 4 * index)) & 0xf) as usize]),
        );
    }
    Bytes::from(block)
}

/// How a call to a provider on this node began.
pub(crate) enum LocalCall {
    /// The handler answered at once: the call's result, counted.
    Answered(Result<Bytes, NodeError>),
    /// The handler has to wait: finish the call with [`finish_local`].
    Waiting(ServiceFuture),
}

/// Starts a call to `local`, the provider of `route` on this node.
///
/// In-process: no trace id is made up (the handler's own calls make theirs), and a handler that
/// answers on its first poll never touches the timer wheel or the clock: such a call is counted
/// but not timed, because reading the clock twice would cost more than the call itself.
///
/// A plain function, not part of the future of a remote call: a local call answered at once
/// never builds that future (nor drops it), which was a sixth of what such a call cost.
pub(crate) fn start_local(
    route: &Route,
    local: &SharedService,
    method: Method,
    payload: Bytes,
    trace_id: Option<ByteString>,
) -> LocalCall {
    let request = Request {
        method: method.into_name(),
        payload,
        trace_id: trace_id.unwrap_or_default(),
    };
    let mut future = match local.answer(request) {
        Answer::Now(result) => return LocalCall::Answered(counted(&route.series, result)),
        Answer::Later(future) => future,
    };
    match future.as_mut().now_or_never() {
        Some(result) => LocalCall::Answered(counted(&route.series, result)),
        None => LocalCall::Waiting(future),
    }
}

/// The rest of a local call whose handler has to wait: the wait within the call's deadline,
/// timed. Boxed, as the cold paths of a remote call are, so that a caller's future holds only a
/// pointer to it.
pub(crate) fn finish_local<'a>(
    node: &'a NodeInner,
    service: &'a str,
    route: &'a Route,
    future: ServiceFuture,
    timeout: Option<Duration>,
) -> Pin<Box<dyn Future<Output = Result<Bytes, NodeError>> + Send + 'a>> {
    Box::pin(async move {
        let started = std::time::Instant::now();
        let timeout = timeout.unwrap_or_else(|| node.config.call_timeout());
        let result = match tokio::time::timeout(timeout, future).await {
            Ok(result) => result.map_err(NodeError::Service),
            Err(_) => Err(NodeError::Timeout {
                service: service.to_owned(),
                timeout,
            }),
        };
        record(&route.series[Locality::Local as usize], &result, started);
        result
    })
}

/// Calls `service` (whose cached route is `route`) on a remote provider, or only on node
/// `only`, failing over as the module says.
pub(crate) async fn call_remote(
    node: &Arc<NodeInner>,
    only: Option<&str>,
    route: Arc<Route>,
    service: &str,
    method: Method,
    payload: Bytes,
    options: CallOptions,
) -> Result<Bytes, NodeError> {
    let series = &route.series;
    let timeout = options
        .timeout
        .unwrap_or_else(|| node.config.call_timeout());
    let started = std::time::Instant::now();
    let deadline = tokio::time::Instant::from_std(started) + timeout;
    let trace_id = options.trace_id.unwrap_or_else(fresh_trace_id);
    let method = method.into_name();
    let mut excluded: Vec<(String, u64)> = Vec::new();
    // Set once the call has waited for a provider: from then on it resolves afresh.
    let mut waited = false;
    loop {
        // The first attempt takes the cached route; a failover, a wait for a provider (or a call
        // to one named node) resolves afresh, leaving out the providers that already failed.
        let resolved;
        let providers = if only.is_none() && excluded.is_empty() && !waited {
            &route.remote
        } else {
            resolved = node.remote_providers(service, only, &excluded);
            &resolved
        };
        let Some(link) = registry::choose(providers) else {
            // Wait (within the deadline) for a provider to appear or return: during a failover,
            // and, unless the call is to one named node or fails fast, when there was none to
            // begin with.
            let may_wait = !excluded.is_empty() || (only.is_none() && !options.fail_fast);
            if may_wait && tokio::time::Instant::now() < deadline {
                if !waited {
                    waited = true;
                    node.metrics
                        .provider_waits
                        .with_label_values(&[service])
                        .inc();
                }
                Box::pin(registry_change(node, deadline)).await;
                if !node.remote_providers(service, only, &[]).is_empty() {
                    excluded.clear();
                }
                continue;
            }
            if waited {
                node.metrics
                    .provider_waits_expired
                    .with_label_values(&[service])
                    .inc();
            }
            let error = NodeError::NoProvider {
                service: service.to_owned(),
            };
            let result = Err(error);
            record(&series[Locality::Remote as usize], &result, started);
            return result;
        };
        // The first attempt has (all but nanoseconds of) the whole timeout; spare it a clock read.
        let remaining = if excluded.is_empty() && !waited {
            timeout
        } else {
            deadline.saturating_duration_since(tokio::time::Instant::now())
        };
        let request = wire::Call {
            id: 0,
            service: route.name.clone(),
            method: method.as_bytes().clone(),
            payload: payload.clone(),
            idempotent: options.idempotent,
            timeout_ms: remaining.as_millis().min(u32::MAX as u128) as u32,
            trace_id: trace_id.as_bytes().clone(),
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

/// Waits for the registry to change, for at most 20 ms, and never past `deadline`.
///
/// A call awaits it boxed: it runs only during a failover, and its three futures held in the
/// call's own future would make every call's future larger, to be built and moved each time.
async fn registry_change(node: &NodeInner, deadline: tokio::time::Instant) {
    let changed = node.registry_changed.notified();
    let pause = tokio::time::sleep(Duration::from_millis(20));
    tokio::select! {
        _ = changed => {}
        _ = pause => {}
        _ = tokio::time::sleep_until(deadline) => {}
    }
}

/// A local call's result, counted but not timed (it never waited).
fn counted(
    series: &[CallSeries; 2],
    result: Result<Bytes, crate::ServiceError>,
) -> Result<Bytes, NodeError> {
    let result = result.map_err(NodeError::Service);
    series[Locality::Local as usize].count(outcome(&result));
    result
}

fn record(series: &CallSeries, result: &Result<Bytes, NodeError>, started: std::time::Instant) {
    series.observe(outcome(result), started.elapsed().as_secs_f64());
}

/// The index in [`crate::metrics::OUTCOMES`] a call's result is counted under.
fn outcome(result: &Result<Bytes, NodeError>) -> usize {
    match result {
        Ok(_) => 0,
        Err(NodeError::Service(_)) => 1,
        Err(NodeError::Timeout { .. }) => 2,
        Err(NodeError::NoProvider { .. }) => 3,
        Err(NodeError::NodeDown { .. }) => 4,
        Err(NodeError::Overloaded(_)) => 5,
        Err(_) => 6,
    }
}

pub(crate) fn cast(
    node: &Arc<NodeInner>,
    service: &str,
    method: Method,
    payload: Bytes,
) -> Result<(), NodeError> {
    let request = Request {
        method: method.into_name(),
        payload,
        trace_id: fresh_trace_id(),
    };
    let route = node.route(service);
    if route.local.is_some() {
        node.serve_cast(service, request);
        node.metrics.casts.with_label_values(&["cast", "ok"]).inc();
        return Ok(());
    }
    let Some(link) = registry::choose(&route.remote) else {
        node.metrics
            .casts
            .with_label_values(&["cast", "no_provider"])
            .inc();
        return Err(NodeError::NoProvider {
            service: service.to_owned(),
        });
    };
    let result = link.send_now(
        Kind::Cast(wire::Cast {
            service: route.name.clone(),
            method: request.method.into_bytes(),
            payload: request.payload,
            trace_id: request.trace_id.into_bytes(),
        }),
        Urgency::Prompt,
    );
    let outcome = if result.is_ok() { "ok" } else { "dropped" };
    node.metrics
        .casts
        .with_label_values(&["cast", outcome])
        .inc();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_are_sixteen_fresh_hex_digits_across_blocks() {
        let count = 3 * TRACE_IDS_PER_BLOCK + 1;
        let ids: std::collections::HashSet<ByteString> =
            (0..count).map(|_| fresh_trace_id()).collect();
        assert_eq!(ids.len(), count, "every id is fresh");
        for id in &ids {
            assert_eq!(id.len(), 16);
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
        }
        assert_eq!(new_trace_id().len(), 16);
    }
}
