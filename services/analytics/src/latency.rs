//! The delivery-latency histogram: its bucket bounds (shared by the http nodes that measure and
//! the replicas that aggregate) and the replica's store of every http node's per-minute counts.
//!
//! Http nodes ship *absolute* per-minute counts, resent for a while after each change (see
//! [`crate::delivery`]). A replica keeps, per (node, incarnation, minute), the report with the
//! most deliveries: counts only ever grow, so the largest is the newest, and merging is
//! idempotent and order-free. That is what lets a lost broadcast be repaired by the next one, a
//! duplicate be harmless, and a starting replica copy a running one's state and merge it with
//! whatever arrives meanwhile.

use std::collections::{BTreeMap, HashMap};

use switchboard_proto::v1 as wire;

/// Upper bounds (inclusive, milliseconds) of the histogram's buckets; one overflow bucket
/// follows.
pub(crate) const BOUNDS_MS: [u64; 14] = [
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 30_000,
];

/// Buckets in a histogram: one per bound and the overflow bucket.
pub(crate) const BUCKETS: usize = BOUNDS_MS.len() + 1;

/// The bucket a latency falls in.
pub(crate) fn bucket_of(latency_ms: u64) -> usize {
    BOUNDS_MS.partition_point(|&bound| bound < latency_ms)
}

/// Per-minute histograms of one http node incarnation.
type Minutes = BTreeMap<i64, [u64; BUCKETS]>;

/// Every http node's per-minute histograms a replica knows.
#[derive(Debug, Default)]
pub(crate) struct LatencyStore {
    sources: HashMap<(String, u64), Minutes>,
}

impl LatencyStore {
    /// Merges a report, ignoring minutes before `oldest_ms` and reports whose histograms do not
    /// have this build's bucket count.
    pub(crate) fn merge(&mut self, report: &wire::DeliveryLatencyReport, oldest_ms: i64) {
        let minutes = self
            .sources
            .entry((report.node.clone(), report.incarnation))
            .or_default();
        for minute in &report.minutes {
            let Ok(counts) = <[u64; BUCKETS]>::try_from(minute.counts.as_slice()) else {
                continue;
            };
            if minute.minute_ms < oldest_ms {
                continue;
            }
            let kept = minutes.entry(minute.minute_ms).or_insert([0; BUCKETS]);
            if counts.iter().sum::<u64>() > kept.iter().sum::<u64>() {
                *kept = counts;
            }
        }
    }

    /// The histogram summed over every source and the minutes in `[from_ms, until_ms)`.
    pub(crate) fn sum(&self, from_ms: i64, until_ms: i64) -> [u64; BUCKETS] {
        let mut total = [0; BUCKETS];
        for minutes in self.sources.values() {
            for counts in minutes.range(from_ms..until_ms).map(|(_, c)| c) {
                for (sum, count) in total.iter_mut().zip(counts) {
                    *sum += count;
                }
            }
        }
        total
    }

    /// Forgets minutes before `oldest_ms`, and sources left with none.
    pub(crate) fn prune(&mut self, oldest_ms: i64) {
        for minutes in self.sources.values_mut() {
            *minutes = minutes.split_off(&oldest_ms);
        }
        self.sources.retain(|_, minutes| !minutes.is_empty());
    }

    /// Everything held, for a replica that is starting.
    pub(crate) fn state(&self) -> wire::LatencyState {
        let sources = self
            .sources
            .iter()
            .map(
                |((node, incarnation), minutes)| wire::DeliveryLatencyReport {
                    node: node.clone(),
                    incarnation: *incarnation,
                    minutes: minutes
                        .iter()
                        .map(|(minute_ms, counts)| wire::LatencyMinute {
                            minute_ms: *minute_ms,
                            counts: counts.to_vec(),
                        })
                        .collect(),
                },
            )
            .collect();
        wire::LatencyState { sources }
    }
}

/// The report's form of a histogram: buckets, count, and the bucket bounds holding the
/// nearest-rank 50th and 99th percentiles.
pub(crate) fn stats(histogram: &[u64; BUCKETS]) -> wire::LatencyStats {
    let count: u64 = histogram.iter().sum();
    let bound = |index: usize| BOUNDS_MS.get(index).map(|&b| b as i64);
    let percentile = |p: u64| {
        let rank = crate::aggregates::nearest_rank(p, count)?;
        let mut seen = 0;
        let index = histogram.iter().position(|&c| {
            seen += c;
            seen >= rank
        })?;
        bound(index)
    };
    wire::LatencyStats {
        buckets: histogram
            .iter()
            .enumerate()
            .map(|(index, &count)| wire::LatencyBucket {
                le_ms: bound(index),
                count: count as i64,
            })
            .collect(),
        count: count as i64,
        p50_ms: percentile(50),
        p99_ms: percentile(99),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(node: &str, minute_ms: i64, counts: [u64; BUCKETS]) -> wire::DeliveryLatencyReport {
        wire::DeliveryLatencyReport {
            node: node.into(),
            incarnation: 1,
            minutes: vec![wire::LatencyMinute {
                minute_ms,
                counts: counts.to_vec(),
            }],
        }
    }

    #[test]
    fn latencies_fall_in_the_bucket_of_their_upper_bound() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1), 0);
        assert_eq!(bucket_of(2), 1);
        assert_eq!(bucket_of(3), 2);
        assert_eq!(bucket_of(30_000), BUCKETS - 2);
        assert_eq!(bucket_of(30_001), BUCKETS - 1);
    }

    #[test]
    fn merging_keeps_the_largest_report_per_minute_in_any_order() {
        let mut older = [0; BUCKETS];
        older[2] = 3;
        let mut newer = older;
        newer[4] = 2;
        let mut store = LatencyStore::default();
        store.merge(&report("http0", 60_000, newer), 0);
        store.merge(&report("http0", 60_000, older), 0);
        store.merge(&report("http0", 60_000, newer), 0);
        store.merge(&report("http1", 60_000, older), 0);
        let sum = store.sum(0, 120_000);
        assert_eq!((sum[2], sum[4]), (6, 2));
        assert_eq!(store.sum(120_000, 180_000), [0; BUCKETS]);
        let mut copy = LatencyStore::default();
        for source in store.state().sources {
            copy.merge(&source, 0);
        }
        assert_eq!(copy.sum(0, 120_000), sum);
        store.prune(120_000);
        assert!(store.sources.is_empty());
    }

    #[test]
    fn percentiles_are_bucket_bounds() {
        let mut histogram = [0; BUCKETS];
        histogram[bucket_of(4)] = 50;
        histogram[bucket_of(80)] = 49;
        histogram[BUCKETS - 1] = 1;
        let stats = stats(&histogram);
        assert_eq!(stats.count, 100);
        assert_eq!((stats.p50_ms, stats.p99_ms), (Some(5), Some(100)));
        assert_eq!(stats.buckets.len(), BUCKETS);
        assert_eq!(stats.buckets[BUCKETS - 1].le_ms, None);
        assert_eq!(super::stats(&[0; BUCKETS]).p50_ms, None);
    }
}
