//! Activity shipping: every node's notable events reach the cluster's `log` service.
//!
//! It is a tracing layer, not a second logging API: an event is activity when it carries a
//! `kind` field (`tracing::info!(kind = "login_failed", ...)`) or is a warning or an error. The
//! layer turns each into a [`LogEntry`] with a unique id and secrets redacted, and queues it in a
//! bounded buffer without ever blocking the code that logged it; a full buffer drops the entry and
//! counts it (`switchboard_activity_dropped_total`). The [`ship`] task drains the buffer in batches
//! and calls `log.append` until some log node acknowledges (the runtime fails over between log
//! replicas); the entry ids make a retried batch harmless, since the store ignores ids it has.

use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounter;
use rand::Rng;
use serde_json::{Map, Value};
use switchboard_proto::names;
use switchboard_proto::v1::{AppendReply, LogBatch, LogEntry};
use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{FilterFn, Filtered, LevelFilter};
use tracing_subscriber::layer::Context;

use crate::clock::now_ms;
use crate::failover::CallOptions;
use crate::node::Node;

/// Entries buffered per node before new ones are dropped.
pub const BUFFER: usize = 10_000;
/// Entries per shipped batch.
const BATCH: usize = 500;
/// How long a batch waits to fill before it is shipped anyway.
const LINGER: Duration = Duration::from_millis(200);
/// Deadline of one `log.append`.
const SHIP_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline of one `log.append` once the node is shutting down.
const DRAINING_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest message kept; longer ones are cut.
const MAX_MESSAGE: usize = 4096;

/// The tracing layer that records activity into the buffer.
#[derive(Debug, Clone)]
pub struct ActivityLayer {
    tx: mpsc::Sender<LogEntry>,
    dropped: IntCounter,
}

/// The other end of the buffer, drained by [`ship`].
#[derive(Debug)]
pub struct ActivityReceiver {
    rx: mpsc::Receiver<LogEntry>,
    dropped: IntCounter,
}

/// A bounded activity buffer: the layer to install and the receiver to ship from.
pub fn buffer(capacity: usize) -> (ActivityLayer, ActivityReceiver) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let dropped = IntCounter::new(
        "activity_dropped_total",
        "Activity entries dropped because the shipping buffer was full",
    )
    .expect("valid metric");
    (
        ActivityLayer {
            tx,
            dropped: dropped.clone(),
        },
        ActivityReceiver { rx, dropped },
    )
}

/// The filter that keeps a layer to activity alone (see [`is_activity`]).
pub type ActivityFilter = FilterFn<fn(&Metadata<'_>) -> bool>;

impl ActivityLayer {
    /// Queues an entry directly (the layer does this for tracing events); never blocks.
    pub fn record(&self, entry: LogEntry) {
        if self.tx.try_send(entry).is_err() {
            self.dropped.inc();
        }
    }

    /// The layer behind its own filter, as a process installs it.
    ///
    /// The filter decides once per callsite, and tells tracing that nothing below INFO is
    /// wanted. Without it this layer would want every span and event, so the subscriber's
    /// level would be TRACE and each trace span of h2 (several per frame read or written) and
    /// each of sqlx's statement logs would be built and recorded on every node, to be dropped.
    pub fn filtered<S: Subscriber>(self) -> Filtered<Self, ActivityFilter, S> {
        let filter: ActivityFilter = FilterFn::new(is_activity as fn(&Metadata<'_>) -> bool)
            .with_max_level_hint(LevelFilter::INFO);
        self.with_filter(filter)
    }
}

/// Whether a callsite is activity: an event that is a warning or an error, or carries a `kind`
/// field, and not one of this module's own (which would feed back into the buffer).
fn is_activity(metadata: &Metadata<'_>) -> bool {
    metadata.is_event()
        && (*metadata.level() <= Level::WARN || metadata.fields().field("kind").is_some())
        && !metadata.target().starts_with(module_path!())
}

impl<S: Subscriber> Layer<S> for ActivityLayer {
    /// Records an event the filter let through (see [`ActivityLayer::filtered`]).
    fn on_event(&self, event: &Event<'_>, _context: Context<'_, S>) {
        let metadata = event.metadata();
        let mut visitor = Fields::default();
        event.record(&mut visitor);
        let mut message = visitor.message;
        if message.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        self.record(LogEntry {
            id: new_id(),
            at_ms: now_ms(),
            node: String::new(),
            level: metadata.level().to_string(),
            kind: visitor.kind.unwrap_or_else(|| "log".into()),
            message,
            fields_json: Value::Object(visitor.fields).to_string(),
        });
    }
}

/// 128 random bits, hex.
pub fn new_id() -> String {
    format!("{:032x}", rand::rng().random::<u128>())
}

/// Field names whose values are never kept.
const SENSITIVE: [&str; 7] = [
    "password",
    "token",
    "cookie",
    "secret",
    "authorization",
    "credential",
    "api_key",
];

/// Whether a field of this name holds a secret.
pub fn is_sensitive(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SENSITIVE.iter().any(|s| name.contains(s))
}

/// Removes what looks like a credential from free text (`Bearer <token>`).
pub fn scrub(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.to_ascii_lowercase().find("bearer ") {
        out.push_str(&rest[..at + 7]);
        out.push_str("[redacted]");
        let tail = &rest[at + 7..];
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Redacts an entry in place: sensitive fields and bearer credentials anywhere. The log service
/// applies it again on arrival, so an entry from an older or misbehaving node is cleaned too.
pub fn redact(entry: &mut LogEntry) {
    entry.message = scrub(&entry.message);
    let fields = match serde_json::from_str::<Value>(&entry.fields_json) {
        Ok(Value::Object(fields)) => fields,
        _ => Map::new(),
    };
    let cleaned: Map<String, Value> = fields
        .into_iter()
        .map(|(name, value)| {
            let value = if is_sensitive(&name) {
                Value::String("[redacted]".into())
            } else {
                match value {
                    Value::String(s) => Value::String(scrub(&s)),
                    other => other,
                }
            };
            (name, value)
        })
        .collect();
    entry.fields_json = Value::Object(cleaned).to_string();
}

/// Collects an event's fields, redacting sensitive ones as they are recorded.
#[derive(Default)]
struct Fields {
    message: String,
    kind: Option<String>,
    fields: Map<String, Value>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        match field.name() {
            "message" => {
                self.message = match value {
                    Value::String(s) => scrub(&s),
                    other => other.to_string(),
                }
            }
            "kind" => {
                self.kind = Some(match value {
                    Value::String(s) => s,
                    other => other.to_string(),
                })
            }
            name if is_sensitive(name) => {
                self.fields
                    .insert(name.to_owned(), Value::String("[redacted]".into()));
            }
            name => {
                let value = match value {
                    Value::String(s) => Value::String(scrub(&s)),
                    other => other,
                };
                self.fields.insert(name.to_owned(), value);
            }
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_owned()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
}

/// Ships the buffer to the `log` service from `node` until the node stops. Entries are stamped
/// with the node's name.
///
/// The shipper is part of the node's in-flight work: when graceful shutdown begins it ships what
/// is buffered (and what the work still in flight logs) and ends once nothing has arrived for
/// [`LINGER`], so a graceful stop loses no activity while a log node answers. A batch that
/// cannot be shipped while draining is given up after one attempt of [`DRAINING_TIMEOUT`], so a
/// missing log service delays a shutdown by at most that.
pub fn ship(node: &Node, receiver: ActivityReceiver) {
    let ActivityReceiver { mut rx, dropped } = receiver;
    let registry = node.metrics().registry();
    let _ = registry.register(Box::new(dropped));
    let shipped = IntCounter::new(
        "activity_shipped_total",
        "Activity entries acknowledged by the log service",
    )
    .expect("valid metric");
    let _ = registry.register(Box::new(shipped.clone()));
    let stop = node.shutdown_token();
    let draining = node.draining_token();
    let shipper = node.clone();
    node.spawn_tracked(async move {
        let node = shipper;
        let name: Arc<str> = node.name().into();
        loop {
            let first = tokio::select! {
                entry = rx.recv() => match entry { Some(entry) => entry, None => return },
                _ = stop.cancelled() => return,
                () = draining.cancelled(), if !draining.is_cancelled() => continue,
                () = tokio::time::sleep(LINGER), if draining.is_cancelled() => return,
            };
            let mut entries = vec![first];
            let linger = tokio::time::sleep(LINGER);
            tokio::pin!(linger);
            while entries.len() < BATCH {
                tokio::select! {
                    entry = rx.recv() => match entry { Some(entry) => entries.push(entry), None => break },
                    _ = &mut linger => break,
                }
            }
            for entry in &mut entries {
                entry.node = name.to_string();
            }
            let batch = LogBatch { entries };
            let mut backoff = Duration::from_millis(100);
            loop {
                let timeout = if draining.is_cancelled() {
                    DRAINING_TIMEOUT
                } else {
                    SHIP_TIMEOUT
                };
                let options = CallOptions::idempotent().timeout(timeout);
                let result = node
                    .call_message::<_, AppendReply>(names::LOG, "append", &batch, options)
                    .await;
                match result {
                    Ok(_) => {
                        shipped.inc_by(batch.entries.len() as u64);
                        break;
                    }
                    Err(_) if stop.is_cancelled() || draining.is_cancelled() => break,
                    Err(_) => {
                        // No log node has it yet: keep the batch and try again; new entries wait
                        // in the bounded buffer meanwhile.
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = stop.cancelled() => return,
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_notable_and_kind_events_reach_the_buffer_and_spans_below_info_are_skipped() {
        use tracing_subscriber::layer::SubscriberExt;
        let (layer, mut receiver) = buffer(16);
        let layer = layer.filtered();
        // Below INFO nothing is wanted, so tracing can skip such callsites where they are written.
        assert_eq!(
            Layer::<tracing_subscriber::Registry>::max_level_hint(&layer),
            Some(LevelFilter::INFO)
        );
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            assert!(!tracing::enabled!(Level::DEBUG));
            // This module's own events are never activity, so these name another target.
            tracing::info!(target: "chat", "plain information");
            tracing::debug!(target: "chat", kind = "too_quiet", "below the level");
            tracing::info!(target: "chat", kind = "room_created", "a kind");
            tracing::warn!(target: "chat", "a warning");
            tracing::warn!("from the activity module itself");
        });
        let mut kinds = Vec::new();
        while let Ok(entry) = receiver.rx.try_recv() {
            kinds.push(entry.kind);
        }
        assert_eq!(kinds, ["room_created", "log"]);
    }

    #[test]
    fn secrets_are_redacted_by_name_and_by_shape() {
        let mut entry = LogEntry {
            message: "auth failed for header Bearer abc123def".into(),
            fields_json: r#"{"password":"hunter22","user":"alice","header":"Bearer xyz789","api_token":"t0k3n"}"#.into(),
            ..LogEntry::default()
        };
        redact(&mut entry);
        for secret in ["hunter22", "abc123def", "xyz789", "t0k3n"] {
            assert!(
                !entry.message.contains(secret) && !entry.fields_json.contains(secret),
                "{entry:?}"
            );
        }
        assert!(entry.fields_json.contains("alice"));
    }

    #[test]
    fn a_full_buffer_drops_and_counts_instead_of_blocking() {
        let (layer, _receiver) = buffer(2);
        for _ in 0..5 {
            layer.record(LogEntry::default());
        }
        assert_eq!(layer.dropped.get(), 3);
    }

    #[test]
    fn ids_are_unique() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_id()).collect();
        assert_eq!(ids.len(), 1000);
    }
}
