//! The closed-loop load generator every request/response scenario uses: `in_flight` tasks, each
//! looping "start an operation, await it", first for a warm-up, then for the measured window.
//! One call measures one window (a slice of a point); [`Tally`] adds slices up.
//!
//! Only operations that start and finish inside the measured window are counted and timed, so a
//! rate is never inflated by work done during the warm-up, and the few operations straddling a
//! boundary (at most `in_flight` at each end) are left out rather than half counted.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::stats::Tally;

const WARMING: u8 = 0;
const MEASURING: u8 = 1;
const STOPPED: u8 = 2;

/// How much load to apply, and for how long.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Load {
    /// Concurrent operations (tasks each looping one operation at a time).
    pub(crate) in_flight: usize,
    pub(crate) warmup: Duration,
    pub(crate) measure: Duration,
}

/// Runs `operation` in a closed loop under `load` and returns the latencies of the operations
/// of the measured window. `operation` makes one operation's future; it is cloned into each
/// task. The first error aborts the measurement.
pub(crate) async fn closed_loop<F, Fut>(load: Load, operation: F) -> anyhow::Result<Tally>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let phase = Arc::new(AtomicU8::new(WARMING));
    let tasks: Vec<_> = (0..load.in_flight.max(1))
        .map(|_| {
            let operation = operation.clone();
            let phase = phase.clone();
            tokio::spawn(async move {
                let mut samples: Vec<u64> = Vec::with_capacity(4096);
                // One clock read per operation: an operation starts when the previous one ended,
                // unless the task gave the worker up in between.
                let mut started = Instant::now();
                loop {
                    let started_in = phase.load(Ordering::Relaxed);
                    if started_in == STOPPED {
                        return Ok::<_, anyhow::Error>(samples);
                    }
                    operation().await?;
                    let finished = Instant::now();
                    if started_in == MEASURING && phase.load(Ordering::Relaxed) == MEASURING {
                        samples.push((finished - started).as_nanos() as u64);
                    }
                    // An operation that completes without ever waiting (a local call) would
                    // otherwise keep the worker forever, and with it the timer this loop's
                    // window depends on: hand the worker back once the task's budget is spent.
                    let yields = !tokio::task::coop::has_budget_remaining();
                    tokio::task::consume_budget().await;
                    started = if yields { Instant::now() } else { finished };
                }
            })
        })
        .collect();
    tokio::time::sleep(load.warmup).await;
    phase.store(MEASURING, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(load.measure).await;
    phase.store(STOPPED, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let mut samples = Vec::new();
    for task in tasks {
        samples.extend(task.await.context("a load task panicked")??);
    }
    Ok(Tally::timed(samples, elapsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_only_the_measured_window() {
        let load = Load {
            in_flight: 4,
            warmup: Duration::from_millis(50),
            measure: Duration::from_millis(200),
        };
        let measurement = closed_loop(load, || async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok(())
        })
        .await
        .unwrap()
        .measurement();
        // 4 loops of ~10 ms over 200 ms: at most 80 operations, and timer slack only lowers it.
        assert!((20..=80).contains(&measurement.ops), "{}", measurement.ops);
        assert!(measurement.latency.unwrap().p50 >= Duration::from_millis(10));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn operations_that_never_wait_still_end_on_time() {
        let load = Load {
            in_flight: 1,
            warmup: Duration::from_millis(20),
            measure: Duration::from_millis(50),
        };
        let task = tokio::spawn(closed_loop(load, || async { Ok(()) }));
        let measurement = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the window ends")
            .unwrap()
            .unwrap()
            .measurement();
        assert!(measurement.ops > 0);
    }

    #[tokio::test]
    async fn an_error_aborts_the_measurement() {
        let load = Load {
            in_flight: 2,
            warmup: Duration::ZERO,
            measure: Duration::from_millis(20),
        };
        let result = closed_loop(load, || async { anyhow::bail!("refused") }).await;
        assert!(result.is_err());
    }
}
