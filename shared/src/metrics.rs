//! Prometheus metrics of one node: calls and casts by service and outcome, call latency, links,
//! reconnects, handshake failures, queue depths and the frames its lanes carried.
//!
//! Each [`Node`](crate::Node) owns its own registry, so several nodes in one test process keep
//! separate figures. Services add their own metrics to [`Metrics::registry`].

use std::sync::{Arc, RwLock};

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// The runtime's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    pub(crate) calls: IntCounterVec,
    pub(crate) call_seconds: HistogramVec,
    pub(crate) casts: IntCounterVec,
    pub(crate) links_up: IntGauge,
    pub(crate) reconnects: IntCounter,
    pub(crate) handshake_failures: IntCounter,
    pub(crate) node_down: IntCounterVec,
    pub(crate) failovers: IntCounterVec,
    pub(crate) provider_waits: IntCounterVec,
    pub(crate) heartbeats: IntCounter,
    pub(crate) provider_waits_expired: IntCounterVec,
    pub(crate) queued_frames: IntGauge,
    /// Frames written and read on every lane of every link, both ends (`frames_total`). Lanes
    /// add each batch's frames at once ([`crate::lane::Tally`]); the dashboard's message rates
    /// are these counters' differences over time.
    pub(crate) frames_sent: IntCounter,
    pub(crate) frames_received: IntCounter,
    /// Resolved call series per service, so the call path does no label lookups.
    series: Arc<RwLock<crate::routes::FastMap<String, Arc<[CallSeries; 2]>>>>,
}

/// Frames a node's links carried since it started, every lane, both ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Frames {
    /// Frames written to peers.
    pub sent: u64,
    /// Frames read from peers.
    pub received: u64,
}

/// Where a call was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Locality {
    /// In-process.
    Local = 0,
    /// Over a link.
    Remote = 1,
}

/// The outcomes a call is counted under.
pub(crate) const OUTCOMES: [&str; 7] = [
    "ok",
    "service_error",
    "timeout",
    "no_provider",
    "node_down",
    "overloaded",
    "error",
];

/// The call counters and latency histogram of one service and locality.
#[derive(Debug)]
pub(crate) struct CallSeries {
    outcomes: [IntCounter; 7],
    seconds: Histogram,
}

impl CallSeries {
    /// Counts one call with outcome `OUTCOMES[outcome]` that took `seconds`.
    pub(crate) fn observe(&self, outcome: usize, seconds: f64) {
        self.count(outcome);
        self.seconds.observe(seconds);
    }

    /// Counts one call with outcome `OUTCOMES[outcome]` without timing it (a local call that
    /// answered at once: reading the clock would cost more than the call).
    pub(crate) fn count(&self, outcome: usize) {
        self.outcomes[outcome.min(OUTCOMES.len() - 1)].inc();
    }
}

impl Metrics {
    /// The call series of `service` (index them by [`Locality`]), created on first use.
    pub(crate) fn call_series(&self, service: &str) -> Arc<[CallSeries; 2]> {
        if let Some(series) = self
            .series
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(service)
        {
            return series.clone();
        }
        let make = |locality: &str| CallSeries {
            outcomes: OUTCOMES
                .map(|outcome| self.calls.with_label_values(&[service, locality, outcome])),
            seconds: self.call_seconds.with_label_values(&[service, locality]),
        };
        let series = Arc::new([make("local"), make("remote")]);
        self.series
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(service.to_owned())
            .or_insert(series)
            .clone()
    }

    pub(crate) fn new(node: &str) -> Self {
        let registry =
            Registry::new_custom(Some("switchboard".into()), Some(labels(node))).expect("registry");
        let calls = IntCounterVec::new(
            Opts::new(
                "calls_total",
                "Calls made, by service, locality and outcome",
            ),
            &["service", "locality", "outcome"],
        )
        .expect("metric");
        let call_seconds = HistogramVec::new(
            HistogramOpts::new("call_duration_seconds", "Call latency seen by the caller").buckets(
                vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    0.5, 1.0, 2.5, 5.0,
                ],
            ),
            &["service", "locality"],
        )
        .expect("metric");
        let casts = IntCounterVec::new(
            Opts::new(
                "casts_total",
                "Casts and broadcasts sent, by kind and outcome",
            ),
            &["kind", "outcome"],
        )
        .expect("metric");
        let links_up = IntGauge::new("links_up", "Peers with an open link").expect("metric");
        let reconnects =
            IntCounter::new("reconnects_total", "Link re-establishments").expect("metric");
        let handshake_failures = IntCounter::new(
            "handshake_failures_total",
            "Handshakes refused or failed, either side",
        )
        .expect("metric");
        let node_down = IntCounterVec::new(
            Opts::new("node_down_total", "Peers declared down, by reason"),
            &["reason"],
        )
        .expect("metric");
        let failovers = IntCounterVec::new(
            Opts::new("failovers_total", "Calls retried on another provider"),
            &["service"],
        )
        .expect("metric");
        let provider_waits = IntCounterVec::new(
            Opts::new(
                "provider_waits_total",
                "Calls that found no provider up and waited for one within their deadline",
            ),
            &["service"],
        )
        .expect("metric");
        let provider_waits_expired = IntCounterVec::new(
            Opts::new(
                "provider_waits_expired_total",
                "Calls whose deadline passed while they waited for a provider",
            ),
            &["service"],
        )
        .expect("metric");
        let heartbeats = IntCounter::new(
            "heartbeats_sent_total",
            "Heartbeats sent, all links (of each pair of nodes, one sends them while both are heard)",
        )
        .expect("metric");
        let queued_frames = IntGauge::new(
            "queued_frames",
            "Frames waiting in outbound lane queues, all links",
        )
        .expect("metric");
        let frames = IntCounterVec::new(
            Opts::new(
                "frames_total",
                "Frames written (sent) and read (received) on every lane of every link",
            ),
            &["direction"],
        )
        .expect("metric");
        let frames_sent = frames.with_label_values(&["sent"]);
        let frames_received = frames.with_label_values(&["received"]);
        for collector in [
            Box::new(calls.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(call_seconds.clone()),
            Box::new(casts.clone()),
            Box::new(links_up.clone()),
            Box::new(reconnects.clone()),
            Box::new(handshake_failures.clone()),
            Box::new(node_down.clone()),
            Box::new(failovers.clone()),
            Box::new(provider_waits.clone()),
            Box::new(heartbeats.clone()),
            Box::new(provider_waits_expired.clone()),
            Box::new(queued_frames.clone()),
            Box::new(frames),
        ] {
            registry.register(collector).expect("unique metric names");
        }
        Self {
            registry,
            calls,
            call_seconds,
            casts,
            links_up,
            reconnects,
            handshake_failures,
            node_down,
            failovers,
            provider_waits,
            provider_waits_expired,
            heartbeats,
            queued_frames,
            frames_sent,
            frames_received,
            series: Arc::default(),
        }
    }

    /// Frames this node's links carried so far (a snapshot of `frames_total`).
    pub fn frames(&self) -> Frames {
        Frames {
            sent: self.frames_sent.get(),
            received: self.frames_received.get(),
        }
    }

    /// The registry, for services to add metrics of their own.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Everything in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}

fn labels(node: &str) -> std::collections::HashMap<String, String> {
    [("node".to_owned(), node.to_owned())].into_iter().collect()
}
