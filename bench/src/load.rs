//! The load generators. [`closed_loop`] is the one every request/response throughput scenario
//! uses: `in_flight` tasks, each looping "start an operation, await it", first for a warm-up,
//! then for the measured window. One call measures one window (a slice of a point); [`Tally`]
//! adds slices up. Only operations that start and finish inside the measured window are counted
//! and timed, so a rate is never inflated by work done during the warm-up, and the few
//! operations straddling a boundary (at most `in_flight` at each end) are left out rather than
//! half counted. Every operation is timed, except that a loop whose operations take under a
//! microsecond times one in 16 (reading the clock would otherwise be a large part of what it
//! measures); rates always count every operation.
//!
//! [`open_loop`] is for scenarios that fault a server under load: operations are issued at a
//! fixed rate, each in a task of its own, whatever earlier ones are doing, and every one is
//! recorded (issued, completed, outcome). A closed loop would hide a fault: its tasks stop
//! issuing while they wait on a stuck call, so fewer calls meet the fault and none queues up
//! behind it.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::stats::Tally;

/// An operation timed under this many nanoseconds makes its loop time only one operation in
/// [`SAMPLE_EVERY`] until a timed one takes longer: reading the clock twice costs tens of
/// nanoseconds, a large part of an operation that short (a local call), and would otherwise
/// be measured as part of it. Slower operations are each timed.
const FAST_NANOS: u64 = 1_000;

/// One operation in this many is timed while operations are fast (see [`FAST_NANOS`]).
const SAMPLE_EVERY: u32 = 16;

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
    closed_loop_per_client(load, move |_| operation()).await
}

/// [`closed_loop`] for operations that belong to a client: task `i` (0..`in_flight`) makes its
/// operations with `operation(i)`, so that each loop can be its own user or own connection, as
/// real clients are.
pub(crate) async fn closed_loop_per_client<F, Fut>(
    load: Load,
    operation: F,
) -> anyhow::Result<Tally>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let phase = Arc::new(AtomicU8::new(WARMING));
    let tasks: Vec<_> = (0..load.in_flight.max(1))
        .map(|client| {
            let operation = operation.clone();
            let phase = phase.clone();
            tokio::spawn(async move {
                let mut samples: Vec<u64> = Vec::with_capacity(4096);
                let mut ops: u64 = 0;
                // Operations to run untimed before the next timed one (see `SAMPLE_EVERY`).
                let mut untimed: u32 = 0;
                loop {
                    let started_in = phase.load(Ordering::Relaxed);
                    if started_in == STOPPED {
                        return Ok::<_, anyhow::Error>((ops, samples));
                    }
                    let started = (untimed == 0).then(Instant::now);
                    operation(client).await?;
                    let counted =
                        started_in == MEASURING && phase.load(Ordering::Relaxed) == MEASURING;
                    ops += u64::from(counted);
                    match started {
                        Some(started) => {
                            let nanos = started.elapsed().as_nanos() as u64;
                            if counted {
                                samples.push(nanos);
                            }
                            untimed = if nanos < FAST_NANOS {
                                SAMPLE_EVERY - 1
                            } else {
                                0
                            };
                        }
                        None => untimed -= 1,
                    }
                    // An operation that completes without ever waiting (a local call) would
                    // otherwise keep the worker forever, and with it the timer this loop's
                    // window depends on: hand the worker back once the task's budget is spent.
                    tokio::task::consume_budget().await;
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
    let mut ops = 0;
    for task in tasks {
        let (task_ops, task_samples) = task.await.context("a load task panicked")??;
        ops += task_ops;
        samples.extend(task_samples);
    }
    Ok(Tally::sampled(ops, samples, elapsed))
}

/// One operation of an open-loop run.
#[derive(Debug, Clone)]
pub(crate) struct Timed<T> {
    pub(crate) issued: Instant,
    pub(crate) completed: Instant,
    /// What the operation returned, or its error (with causes).
    pub(crate) outcome: Result<T, String>,
}

/// An open-loop run in progress; [`OpenLoop::finish`] ends it.
#[derive(Debug)]
pub(crate) struct OpenLoop<T> {
    stop: oneshot::Sender<()>,
    issuer: JoinHandle<Vec<JoinHandle<Timed<T>>>>,
}

/// Issues `operation` `per_second` times a second, each in a task of its own, until finished.
pub(crate) fn open_loop<F, Fut, T>(per_second: u32, operation: F) -> OpenLoop<T>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let (stop, mut stopped) = oneshot::channel::<()>();
    let period = Duration::from_secs(1) / per_second.max(1);
    let issuer = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period);
        // Ticks missed while the worker was busy are issued at once, back to back, so the rate
        // holds over any stretch longer than the hiccup: the schedule never waits for the load.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let mut operations = Vec::new();
        loop {
            tokio::select! {
                biased;
                _ = &mut stopped => return operations,
                _ = ticks.tick() => {}
            }
            let operation = operation();
            let issued = Instant::now();
            operations.push(tokio::spawn(async move {
                let outcome = operation.await.map_err(|e| format!("{e:#}"));
                Timed {
                    issued,
                    completed: Instant::now(),
                    outcome,
                }
            }));
        }
    });
    OpenLoop { stop, issuer }
}

impl<T> OpenLoop<T> {
    /// Stops issuing, waits for every operation issued so far to complete, and returns them in
    /// the order they were issued.
    pub(crate) async fn finish(self) -> anyhow::Result<Vec<Timed<T>>> {
        let _ = self.stop.send(());
        let tasks = self.issuer.await.context("the open-loop issuer panicked")?;
        let mut done = Vec::with_capacity(tasks.len());
        for task in tasks {
            done.push(task.await.context("an open-loop operation panicked")?);
        }
        Ok(done)
    }
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

    #[tokio::test]
    async fn an_open_loop_keeps_its_rate_while_operations_wait() {
        // Every operation takes 50 ms, far longer than the 1 ms between them: a closed loop
        // would issue one at a time, an open loop keeps issuing on schedule.
        let run = open_loop(1000, || async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(())
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let done = run.finish().await.unwrap();
        assert!((100..=260).contains(&done.len()), "{}", done.len());
        assert!(done.windows(2).all(|w| w[0].issued <= w[1].issued));
        let first = &done[0];
        let overlapping = done.iter().filter(|d| d.issued < first.completed).count();
        assert!(overlapping >= 20, "{overlapping}");
        assert!(done.iter().all(|d| d.outcome.is_ok()));
    }

    #[tokio::test]
    async fn an_open_loop_records_failures_without_stopping() {
        let run = open_loop(1000, || async { anyhow::bail!("refused") });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let done: Vec<Timed<()>> = run.finish().await.unwrap();
        assert!(!done.is_empty());
        assert!(
            done.iter()
                .all(|d| d.outcome.as_ref().unwrap_err() == "refused")
        );
    }
}
