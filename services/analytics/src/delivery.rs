//! The http node's side of delivery latency: it measures, for every live event it hands to an
//! SSE stream, the time since the event was committed, and ships the histogram to the analytics
//! replicas.
//!
//! Why this shape:
//! - **Batched, never per event.** A delivery is one increment of a per-minute histogram under
//!   an uncontended lock. Every [`FLUSH`] the node broadcasts the minutes that changed recently:
//!   one small message per http node every two seconds, and none at all while it delivers
//!   nothing. Shipping each delivery would double the cluster's traffic for a statistic.
//! - **Broadcast to a group, not cast to the service.** A cast reaches one analytics replica, so
//!   replicas would disagree and a replica's death would lose its share. The `analytics.latency`
//!   group reaches every replica: each holds the whole histogram, any can answer, and one dying
//!   changes nothing.
//! - **Absolute counts, resent.** A report carries each minute's counts so far (not the change
//!   since the last report) and a minute is resent for [`RESEND`] after its last change.
//!   Broadcasts are best effort: a lost report is repaired by the next one, and a duplicate is
//!   harmless because replicas keep the largest count per minute ([`crate::latency`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use switchboard::AppContext;
use switchboard_proto::names;
use switchboard_proto::v1 as wire;

use crate::latency::{BUCKETS, bucket_of};
use crate::now_ms;

/// How often an http node ships its recent histograms.
pub const FLUSH: Duration = Duration::from_secs(2);
/// How long after its last change a minute keeps being resent.
const RESEND: Duration = Duration::from_secs(300);
const MINUTE_MS: i64 = 60_000;

/// One minute of deliveries on this node.
#[derive(Debug)]
struct Minute {
    counts: [u64; BUCKETS],
    changed_at_ms: i64,
}

/// The recorder an http node's live streams report their deliveries to. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct DeliveryLatency {
    minutes: Arc<Mutex<BTreeMap<i64, Minute>>>,
}

impl DeliveryLatency {
    /// A recorder that ships its histograms through `context`'s node every [`FLUSH`], and once
    /// more when its application starts stopping.
    pub fn start(context: &AppContext) -> Self {
        let recorder = Self::default();
        let flusher = recorder.clone();
        let node = context.node().clone();
        let draining = context.draining_token();
        context.spawn(async move {
            let mut tick = tokio::time::interval(FLUSH);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                let last = tokio::select! {
                    _ = tick.tick() => false,
                    _ = draining.cancelled() => true,
                };
                if let Some(report) = flusher.report(node.name(), node.incarnation(), now_ms()) {
                    // Statistics: background traffic, never ahead of calls.
                    node.broadcast_background(
                        names::ANALYTICS_LATENCY,
                        names::DELIVERY_LATENCY,
                        report.encode_to_vec(),
                    );
                }
                if last {
                    return;
                }
            }
        });
        recorder
    }

    /// Records one delivery, now, of an event committed at `committed_at_ms`.
    pub fn record(&self, committed_at_ms: i64) {
        let now = now_ms();
        let latency = u64::try_from(now - committed_at_ms).unwrap_or(0);
        let mut minutes = self.minutes.lock().unwrap_or_else(|p| p.into_inner());
        let minute = minutes
            .entry(now.div_euclid(MINUTE_MS) * MINUTE_MS)
            .or_insert(Minute {
                counts: [0; BUCKETS],
                changed_at_ms: now,
            });
        minute.counts[bucket_of(latency)] += 1;
        minute.changed_at_ms = now;
    }

    /// The minutes to ship at `now`, forgetting those past their resend period; `None` when
    /// there is nothing to ship.
    fn report(
        &self,
        node: &str,
        incarnation: u64,
        now: i64,
    ) -> Option<wire::DeliveryLatencyReport> {
        let mut minutes = self.minutes.lock().unwrap_or_else(|p| p.into_inner());
        let oldest = now - RESEND.as_millis() as i64;
        minutes.retain(|_, minute| minute.changed_at_ms >= oldest);
        if minutes.is_empty() {
            return None;
        }
        Some(wire::DeliveryLatencyReport {
            node: node.to_owned(),
            incarnation,
            minutes: minutes
                .iter()
                .map(|(minute_ms, minute)| wire::LatencyMinute {
                    minute_ms: *minute_ms,
                    counts: minute.counts.to_vec(),
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_carry_absolute_counts_until_the_resend_period_ends() {
        let recorder = DeliveryLatency::default();
        assert!(recorder.report("http", 1, now_ms()).is_none());
        recorder.record(now_ms() - 3);
        recorder.record(now_ms() - 3);
        recorder.record(now_ms() + 1000);
        let report = recorder.report("http", 1, now_ms()).unwrap();
        let total: u64 = report.minutes.iter().flat_map(|m| &m.counts).sum();
        assert_eq!(total, 3);
        assert_eq!(
            report
                .minutes
                .iter()
                .map(|m| m.counts[bucket_of(3)])
                .sum::<u64>(),
            2
        );
        assert_eq!(
            report.minutes.iter().map(|m| m.counts[0]).sum::<u64>(),
            1,
            "clock skew counts as 0 ms"
        );
        // Sent again unchanged: a lost report is repaired by the next.
        assert_eq!(recorder.report("http", 1, now_ms()).unwrap(), report);
        let later = now_ms() + RESEND.as_millis() as i64 + 1;
        assert!(recorder.report("http", 1, later).is_none());
    }
}
