//! The `failover` scenario family: what callers see when one of two providers of a service dies
//! (`kill -9`) or hangs (`SIGSTOP`) under a steady 1,000 idempotent calls/s. The floors:
//! after a kill, calls are served by the survivor within 100 ms and no idempotent call fails;
//! after a hang, routing moves away within 1 s and no idempotent call fails. Erlang's default
//! detection of a hung node (`net_ticktime` 60 s: 45–75 s) is printed beside ours.
//!
//! Each run stands up a fresh pair of providers (the bench re-executed as `serve-node`, one
//! process each, told apart by node name), links the bench's own node to both and drives an
//! open loop of calls ([`crate::load::open_loop`]) recording when each call was issued and
//! completed and which provider served it (the echo reply is `<node name>|<payload>`). After a
//! steady period one provider is faulted, and [`Impact::of`] works out from the records and the
//! bench node's [`ClusterEvent`]s what the fault cost.
//!
//! With power of two choices the survivor already serves about half the calls, so "the first
//! call served by the survivor after the fault" is near-instant whatever the runtime does. What
//! a caller actually risks is being routed to the faulty provider and waiting there, so the
//! floors are held to the time until routing *settled*: the bench's node has seen the provider
//! down (after which nothing can be routed to it) and every call that could have been routed to
//! it has been answered.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::Signal;
use switchboard::{CallOptions, ClusterEvent, Node};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::cli::RunOptions;
use crate::echo_node::{self, PAYLOAD_BYTES, fresh_cookie};
use crate::load::{OpenLoop, Timed, open_loop};
use crate::server_process::ServerProcess;
use crate::stats::Check;
use crate::table::{Observation, Quantity, Section, progress, seconds, thousands};

/// The steady load, calls per second.
const RATE: u32 = 1000;

/// The provider that is faulted, and the one that survives.
const VICTIM: &str = "bench-provider-a";
const SURVIVOR: &str = "bench-provider-b";

/// The floors: routing settled after a kill, and after a hang.
const KILL_FLOOR: Duration = Duration::from_millis(100);
const HANG_FLOOR: Duration = Duration::from_secs(1);

/// How long the bench waits for its node to see the faulty provider down. Far beyond the
/// floors; past it the detection is reported as not seen.
const DETECT_DEADLINE: Duration = Duration::from_secs(10);

/// How long a resumed provider has to serve calls again (it is redialed with backoff).
const REJOIN_DEADLINE: Duration = Duration::from_secs(10);

/// How long a fresh pair has to get both providers serving.
const START_DEADLINE: Duration = Duration::from_secs(10);

/// Erlang/OTP's default, for comparison with our detection of a hang.
const ERLANG_HANG: &str = "Erlang/OTP default: 45–75 s (net_ticktime 60 s)";

/// The runs as `--only` sees them (`<scenario> @<in flight>`).
const KILL: &str = "failover kill -9";
const HANG: &str = "failover SIGSTOP";
const LOAD: &str = "1000/s";

/// One call of a run: issued, completed, and the node that served it or the error.
type Call = Timed<String>;

/// How long each run loads the pair before and after the fault.
#[derive(Debug, Clone, Copy)]
struct Timing {
    steady: Duration,
    after: Duration,
}

impl Timing {
    /// The point duration of steady load before the fault and twice that after it (at least
    /// 2 s, to leave a hang's detection room): 1 s and 2 s under `--quick`.
    fn of(options: &RunOptions) -> Self {
        Self {
            steady: options.measure,
            after: (options.measure * 2).max(Duration::from_secs(2)),
        }
    }
}

/// Runs the family and returns its section of the report (none when `--only` selects neither
/// run).
pub(crate) async fn run(options: &RunOptions) -> anyhow::Result<Option<Section>> {
    let timing = Timing::of(options);
    let (kill, hang) = (options.selects(KILL, LOAD), options.selects(HANG, LOAD));
    if !kill && !hang {
        return Ok(None);
    }
    let kill = if kill {
        Some(kill_run(options, timing).await.context("the kill -9 run")?)
    } else {
        None
    };
    let hang = if hang {
        Some(hang_run(options, timing).await.context("the SIGSTOP run")?)
    } else {
        None
    };
    let mut observations = Vec::new();
    if let Some(kill) = &kill {
        observations.extend(kill.observations("kill -9", "connection closed", None));
    }
    if let Some((hang, rejoin)) = &hang {
        observations.extend(hang.observations("SIGSTOP", "heartbeat timeout", Some(ERLANG_HANG)));
        observations.extend(rejoin.observations());
    }
    Ok(Some(Section {
        title: format!(
            "failover: one of two providers killed or hung under {} idempotent calls/s",
            thousands(RATE.into())
        ),
        notes: notes(
            options,
            timing,
            kill.as_ref(),
            hang.as_ref().map(|(h, _)| h),
        ),
        observations,
        checks: checks(kill.as_ref(), hang.as_ref()),
        ..Section::default()
    }))
}

/// A fresh pair under load: both providers serving, then the steady period before `fault`.
async fn steady_pair(
    options: &RunOptions,
    timing: Timing,
    fault: &str,
) -> anyhow::Result<(Pair, OpenLoop<String>)> {
    let pair = Pair::start(options).await?;
    let load = pair.load();
    pair.both_serving().await?;
    progress(format_args!(
        "failover: {fault} of {VICTIM} after {} s of steady load",
        seconds(timing.steady)
    ));
    tokio::time::sleep(timing.steady).await;
    Ok((pair, load))
}

/// `kill -9` of one provider under load.
async fn kill_run(options: &RunOptions, timing: Timing) -> anyhow::Result<Impact> {
    let (mut pair, load) = steady_pair(options, timing, "kill -9").await?;
    let fault = Instant::now();
    pair.victim.kill()?;
    let down = pair.seen_down(fault).await;
    tokio::time::sleep_until((fault + timing.after).into()).await;
    let calls = load.finish().await?;
    let impact = Impact::of(&calls, fault, down, pair.rerouted(fault));
    pair.finish().await?;
    Ok(impact)
}

/// `SIGSTOP` of one provider under load, then `SIGCONT` and its return.
async fn hang_run(options: &RunOptions, timing: Timing) -> anyhow::Result<(Impact, Rejoin)> {
    let (pair, load) = steady_pair(options, timing, "SIGSTOP").await?;
    let fault = Instant::now();
    pair.victim.signal(Signal::SIGSTOP)?;
    let down = pair.seen_down(fault).await;
    tokio::time::sleep_until((fault + timing.after).into()).await;
    progress(format_args!(
        "failover: SIGCONT of {VICTIM}, waiting for it to serve again"
    ));
    let resumed = Instant::now();
    pair.victim.signal(Signal::SIGCONT)?;
    let up = pair
        .events
        .first(
            resumed,
            REJOIN_DEADLINE,
            |event| matches!(event, ClusterEvent::NodeUp { node, .. } if node == VICTIM),
        )
        .await;
    // Keep the load on until it serves again; when is read from the call records below.
    pair.serves(VICTIM, resumed, REJOIN_DEADLINE).await;
    let calls = load.finish().await?;
    let impact = Impact::of(&calls, fault, down, pair.rerouted(fault));
    let rejoin = Rejoin {
        seen_up: up.map(|at| at - resumed),
        serving: first_served(&calls, resumed, VICTIM).map(|at| at - resumed),
    };
    pair.finish().await?;
    Ok((impact, rejoin))
}

/// Two providers of `echo` in processes of their own, and the bench's node linked to both.
#[derive(Debug)]
struct Pair {
    victim: ServerProcess,
    survivor: ServerProcess,
    node: Node,
    events: EventLog,
    /// When each provider last served a call, for waiting on "it serves (again)".
    served: Arc<watch::Sender<HashMap<String, Instant>>>,
}

impl Pair {
    async fn start(options: &RunOptions) -> anyhow::Result<Self> {
        let cookie = fresh_cookie();
        let victim = echo_node::start_server(options, VICTIM, &cookie)?;
        let survivor = echo_node::start_server(options, SURVIVOR, &cookie)?;
        let node = echo_node::client_node(&cookie, &[&victim, &survivor]).await?;
        let events = EventLog::start(node.subscribe());
        Ok(Self {
            victim,
            survivor,
            node,
            events,
            served: Arc::new(watch::Sender::new(HashMap::new())),
        })
    }

    /// Starts the open loop of idempotent calls.
    fn load(&self) -> OpenLoop<String> {
        let node = self.node.clone();
        let served = self.served.clone();
        let payload = echo_node::payload(PAYLOAD_BYTES);
        open_loop(RATE, move || {
            let node = node.clone();
            let served = served.clone();
            let payload = payload.clone();
            async move {
                let reply = echo_node::call(&node, payload, CallOptions::idempotent()).await?;
                let server = echo_node::served_by(&reply)
                    .context("an echo reply without its server's name")?
                    .to_owned();
                let now = Instant::now();
                served.send_modify(|last| {
                    last.insert(server.clone(), now);
                });
                Ok(server)
            }
        })
    }

    /// Waits (under load) until both providers have served a call.
    async fn both_serving(&self) -> anyhow::Result<()> {
        let mut served = self.served.subscribe();
        let both = served.wait_for(|last| last.contains_key(VICTIM) && last.contains_key(SURVIVOR));
        tokio::time::timeout(START_DEADLINE, both)
            .await
            .context("both providers never served a call")?
            .context("the call records closed")?;
        Ok(())
    }

    /// Waits until `provider` serves a call completed after `since`, at most `deadline`.
    async fn serves(&self, provider: &str, since: Instant, deadline: Duration) {
        let mut served = self.served.subscribe();
        let again = served.wait_for(|last| last.get(provider).is_some_and(|&at| at > since));
        let _ = tokio::time::timeout(deadline, again).await;
    }

    /// When the bench's node saw the victim down after `fault`, if within [`DETECT_DEADLINE`].
    async fn seen_down(&self, fault: Instant) -> Option<Instant> {
        self.events
            .first(
                fault,
                DETECT_DEADLINE,
                |event| matches!(event, ClusterEvent::NodeDown { node, .. } if node == VICTIM),
            )
            .await
    }

    /// Calls retried on the survivor after failing on the victim since `fault`: the runtime
    /// publishes one `Failover` event for each.
    fn rerouted(&self, fault: Instant) -> usize {
        self.events.count(
            fault,
            |event| matches!(event, ClusterEvent::Failover { from, .. } if from == VICTIM),
        )
    }

    /// Fails if the survivor died, then stops the bench's node; the victim is reaped on drop.
    async fn finish(mut self) -> anyhow::Result<()> {
        self.survivor.check_alive()?;
        self.node.shutdown().await;
        Ok(())
    }
}

/// The cluster events the bench's node published, each with the time a task of the bench
/// received it.
#[derive(Debug)]
struct EventLog {
    events: watch::Receiver<Vec<(Instant, ClusterEvent)>>,
    task: JoinHandle<()>,
}

impl EventLog {
    fn start(mut subscription: broadcast::Receiver<ClusterEvent>) -> Self {
        let (log, events) = watch::channel(Vec::new());
        let task = tokio::spawn(async move {
            loop {
                match subscription.recv().await {
                    Ok(event) => {
                        let at = Instant::now();
                        log.send_modify(|events| events.push((at, event)));
                    }
                    // The node's channel holds 1,024 events and a run publishes a few dozen.
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Self { events, task }
    }

    /// When the first event since `since` that is `wanted` arrived, waiting for it at most
    /// `deadline`.
    async fn first(
        &self,
        since: Instant,
        deadline: Duration,
        wanted: impl Fn(&ClusterEvent) -> bool,
    ) -> Option<Instant> {
        let find = |events: &Vec<(Instant, ClusterEvent)>| {
            events
                .iter()
                .find(|(at, event)| *at >= since && wanted(event))
                .map(|(at, _)| *at)
        };
        let mut events = self.events.clone();
        let _ = tokio::time::timeout(deadline, events.wait_for(|e| find(e).is_some())).await;
        find(&self.events.borrow())
    }

    /// How many events since `since` are `wanted`.
    fn count(&self, since: Instant, wanted: impl Fn(&ClusterEvent) -> bool) -> usize {
        self.events
            .borrow()
            .iter()
            .filter(|(at, event)| *at >= since && wanted(event))
            .count()
    }
}

impl Drop for EventLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a fault did to the calls of a run.
#[derive(Debug, Clone, PartialEq)]
struct Impact {
    /// Calls issued over the whole run.
    issued: usize,
    /// Calls that returned an error, over the whole run.
    failed: usize,
    /// The first failure, to explain a miss.
    first_error: Option<String>,
    /// Calls in flight at the fault or issued before the bench's node saw the provider down:
    /// the only calls that can have been routed to it.
    exposed: usize,
    /// Calls retried on the survivor after failing on the faulty provider (`Failover` events).
    rerouted: usize,
    /// Fault -> the bench's node saw the provider down; `None` if not within the deadline.
    detected: Option<Duration>,
    /// Fault -> routing settled: the later of the detection and the last exposed call's
    /// completion. From then on no caller can be waiting on the faulty provider. `None` if the
    /// provider was never seen down.
    settled: Option<Duration>,
    /// The longest an exposed call waited after the fault (completion - max(issue, fault)).
    worst_wait: Option<Duration>,
    /// Fault -> the first call served by the survivor that completed after it.
    first_by_survivor: Option<Duration>,
    /// Fault -> the issue of the last call routed to the faulty provider (zero if only calls
    /// in flight at the fault were); `None` if no call was rerouted.
    last_routed: Option<Duration>,
}

impl Impact {
    /// Works the impact out from every call of the run, the fault's time, when the bench's
    /// node saw the provider down, and how many calls the runtime rerouted.
    fn of(calls: &[Call], fault: Instant, down: Option<Instant>, rerouted: usize) -> Self {
        let failed: Vec<&Call> = calls.iter().filter(|c| c.outcome.is_err()).collect();
        // Without a detection, every call still running at the fault or issued after it was
        // exposed.
        let exposed: Vec<&Call> = calls
            .iter()
            .filter(|c| c.completed > fault && down.is_none_or(|down| c.issued < down))
            .collect();
        let last_answer = exposed.iter().map(|c| c.completed).max();
        let settled = down.map(|down| last_answer.map_or(down, |last| last.max(down)) - fault);
        let worst_wait = exposed
            .iter()
            .map(|c| c.completed - c.issued.max(fault))
            .max();
        let first_by_survivor = first_served(calls, fault, SURVIVOR).map(|at| at - fault);
        // The calls the runtime rerouted were on the faulty provider until it was seen down, so
        // they are among the exposed calls still waiting then; of those, any beyond that many
        // are calls to the survivor that happened to straddle the detection, and were issued
        // after the rerouted ones except within one round trip of it.
        let last_routed = down.and_then(|down| {
            let mut waiting: Vec<Instant> = exposed
                .iter()
                .filter(|c| c.completed >= down)
                .map(|c| c.issued.max(fault))
                .collect();
            waiting.sort_unstable();
            waiting.truncate(rerouted);
            waiting.last().map(|&issued| issued - fault)
        });
        Self {
            issued: calls.len(),
            failed: failed.len(),
            first_error: failed
                .first()
                .and_then(|c| c.outcome.as_ref().err().cloned()),
            exposed: exposed.len(),
            rerouted,
            detected: down.map(|down| down - fault),
            settled,
            worst_wait,
            first_by_survivor,
            last_routed,
        }
    }

    /// The report's rows for this run: `fault` names it, `detection` says how the runtime
    /// sees it, and `anchor` is shown beside our detection.
    fn observations(&self, fault: &str, detection: &str, anchor: Option<&str>) -> Vec<Observation> {
        let time = |d: Option<Duration>, absent: &str| {
            d.map_or_else(|| Quantity::Absent(absent.to_owned()), Quantity::Time)
        };
        let never_down = format!("not within {} s", seconds(DETECT_DEADLINE));
        let mut detected = Observation::new(
            format!("{fault} -> bench node saw it down (NodeDown: {detection})"),
            time(self.detected, &never_down),
        );
        if let Some(anchor) = anchor {
            detected = detected.beside(anchor);
        }
        vec![
            Observation::new(
                format!(
                    "{fault}: calls issued (open loop, {}/s)",
                    thousands(RATE.into())
                ),
                Quantity::Count(self.issued as u64),
            ),
            Observation::new(
                format!("{fault}: calls failed"),
                Quantity::Count(self.failed as u64),
            ),
            detected,
            Observation::new(
                format!(
                    "{fault}: exposed calls (in flight at the fault or issued before NodeDown)"
                ),
                Quantity::Count(self.exposed as u64),
            ),
            Observation::new(
                format!("{fault}: calls rerouted from it to the survivor (Failover events)"),
                Quantity::Count(self.rerouted as u64),
            ),
            Observation::new(
                format!("{fault} -> last call routed to it (issue time)"),
                time(self.last_routed, "none rerouted"),
            ),
            Observation::new(
                format!("{fault} -> routing settled (seen down, every exposed call answered)"),
                time(self.settled, &never_down),
            ),
            Observation::new(
                format!("{fault}: longest wait of an exposed call after the fault"),
                time(self.worst_wait, "no exposed call"),
            ),
            Observation::new(
                format!("{fault} -> first call served by the survivor"),
                time(self.first_by_survivor, "none"),
            ),
        ]
    }
}

/// A hung provider's return after `SIGCONT`.
#[derive(Debug, Clone, PartialEq)]
struct Rejoin {
    /// SIGCONT -> the bench's node saw it up again.
    seen_up: Option<Duration>,
    /// SIGCONT -> the first call it served again completed.
    serving: Option<Duration>,
}

impl Rejoin {
    fn observations(&self) -> Vec<Observation> {
        let late = format!("not within {} s", seconds(REJOIN_DEADLINE));
        let time =
            |d: Option<Duration>| d.map_or_else(|| Quantity::Absent(late.clone()), Quantity::Time);
        vec![
            Observation::new(
                "SIGCONT -> bench node saw it up again (NodeUp)",
                time(self.seen_up),
            ),
            Observation::new("SIGCONT -> first call it served again", time(self.serving)),
        ]
    }
}

/// When the first call served by `provider` that completed after `since` completed.
fn first_served(calls: &[Call], since: Instant, provider: &str) -> Option<Instant> {
    calls
        .iter()
        .filter(|c| c.completed > since && c.outcome.as_deref() == Ok(provider))
        .map(|c| c.completed)
        .min()
}

/// The floors. A run that `--only` left out reads n/a.
fn checks(kill: Option<&Impact>, hang: Option<&(Impact, Rejoin)>) -> Vec<Check> {
    let held = |check: Check, ran: bool| if ran { check } else { check.not_run() };
    let kill_ran = kill.is_some();
    let hang_ran = hang.is_some();
    let (hang, rejoin) = hang.map_or((None, None), |(h, r)| (Some(h), Some(r)));
    vec![
        held(
            Check::within(
                "kill -9 -> routing settled (survivor serving every exposed call)",
                kill.and_then(|k| k.settled),
                KILL_FLOOR,
            ),
            kill_ran,
        ),
        held(
            Check::none(
                "kill -9: failed idempotent calls",
                kill.map_or(0, |k| k.failed as u64),
            ),
            kill_ran,
        ),
        held(
            Check::within(
                "SIGSTOP -> routing settled (survivor serving every exposed call)",
                hang.and_then(|h| h.settled),
                HANG_FLOOR,
            ),
            hang_ran,
        ),
        held(
            Check::none(
                "SIGSTOP: failed idempotent calls",
                hang.map_or(0, |h| h.failed as u64),
            ),
            hang_ran,
        ),
        held(
            Check::within(
                "SIGCONT -> the provider serves again (deadline)",
                rejoin.and_then(|r| r.serving),
                REJOIN_DEADLINE,
            ),
            hang_ran,
        ),
    ]
}

/// The section's notes: set-up, definitions, and what went wrong if anything did.
fn notes(
    options: &RunOptions,
    timing: Timing,
    kill: Option<&Impact>,
    hang: Option<&Impact>,
) -> Vec<String> {
    let mut notes = vec![
        format!(
            "two providers of `echo`, {VICTIM} (faulted) and {SURVIVOR}, and the bench's node \
             linked to both; payload {PAYLOAD_BYTES} B; each provider a process of its own: {}",
            echo_node::server_description(options)
        ),
        format!(
            "an open loop issues {} idempotent calls/s (`CallOptions::idempotent()`, default \
             5 s deadline), each in a task of its own, and records per call its issue and \
             completion time and the node that served it (the reply is `<node>|<payload>`)",
            thousands(RATE.into())
        ),
        format!(
            "each run uses a fresh pair: both serving, then {} s of steady load, the fault, \
             {} s more; the SIGSTOP run then sends SIGCONT and keeps the load on until the \
             provider serves again (deadline {} s)",
            seconds(timing.steady),
            seconds(timing.after),
            seconds(REJOIN_DEADLINE)
        ),
        "exposed calls: in flight at the fault or issued before the bench's node saw the \
         provider down (NodeDown), the only calls that can have been routed to it; routing \
         settled: fault -> the later of NodeDown and the last exposed call's completion, after \
         which no caller can be waiting on the faulty provider; the floors are held to this"
            .into(),
        "rerouted: the runtime's `Failover` events from the faulty provider, one per call that \
         failed there and was retried on the survivor; last call routed to it: the latest issue \
         time among that many exposed calls still waiting at NodeDown (0 = only calls already in \
         flight at the fault)"
            .into(),
        "first call served by the survivor: near-instant by construction, since power of two \
         choices already sends the survivor about half the calls; shown because the issue names \
         it, not checked"
            .into(),
        {
            let defaults = switchboard::NodeConfig::loopback();
            format!(
                "runtime defaults: heartbeats every {} ms, a peer is down after {} ms without a \
                 frame, checked every {} ms; a killed process's connections close at once. Times \
                 are taken on the bench's clock: the fault just before the signal, an event when a \
                 task of the bench received it, a call when its task saw the reply",
                defaults.heartbeat_interval_ms,
                defaults.heartbeat_timeout_ms,
                defaults.heartbeat_interval_ms / 5,
            )
        },
    ];
    for (fault, impact) in [("kill -9", kill), ("SIGSTOP", hang)] {
        if let Some(error) = impact.and_then(|i| i.first_error.as_ref()) {
            notes.push(format!("{fault}: first failed call: {error}"));
        }
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call issued `issued` ms and completed `completed` ms after `base`.
    fn call(base: Instant, issued: u64, completed: u64, outcome: Result<&str, &str>) -> Call {
        Timed {
            issued: base + Duration::from_millis(issued),
            completed: base + Duration::from_millis(completed),
            outcome: outcome.map(str::to_owned).map_err(str::to_owned),
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_hang_settles_when_the_stuck_calls_are_served_by_the_survivor() {
        let base = Instant::now();
        let fault = base + ms(1000);
        let down = base + ms(2100);
        let calls = vec![
            // Before the fault: not exposed.
            call(base, 10, 11, Ok(VICTIM)),
            call(base, 998, 999, Ok(SURVIVOR)),
            // In flight at the fault on the victim, rerouted at detection.
            call(base, 999, 2101, Ok(SURVIVOR)),
            // Routed to the victim after the fault, rerouted.
            call(base, 1003, 2102, Ok(SURVIVOR)),
            // Routed to the survivor meanwhile.
            call(base, 1002, 1003, Ok(SURVIVOR)),
            call(base, 1500, 1501, Ok(SURVIVOR)),
            // Straddles the detection on the survivor: exposed, waiting at NodeDown, but
            // not one of the rerouted calls.
            call(base, 2099, 2103, Ok(SURVIVOR)),
            // After the detection: not exposed.
            call(base, 2200, 2201, Ok(SURVIVOR)),
        ];
        let impact = Impact::of(&calls, fault, Some(down), 2);
        assert_eq!(impact.issued, 8);
        assert_eq!(impact.failed, 0);
        assert_eq!(impact.exposed, 5);
        assert_eq!(impact.detected, Some(ms(1100)));
        assert_eq!(impact.settled, Some(ms(1103)));
        assert_eq!(impact.worst_wait, Some(ms(1101)));
        assert_eq!(impact.first_by_survivor, Some(ms(3)));
        assert_eq!(impact.last_routed, Some(ms(3)));
    }

    #[test]
    fn a_kill_with_no_exposed_call_settles_at_detection() {
        let base = Instant::now();
        let fault = base + ms(100);
        let calls = vec![
            call(base, 99, 99, Ok(VICTIM)),
            call(base, 101, 102, Ok(SURVIVOR)),
        ];
        let down = fault + Duration::from_micros(400);
        let impact = Impact::of(&calls, fault, Some(down), 0);
        assert_eq!(impact.exposed, 0);
        assert_eq!(impact.settled, Some(Duration::from_micros(400)));
        assert_eq!(impact.worst_wait, None);
        assert_eq!(impact.last_routed, None);
        assert_eq!(impact.first_by_survivor, Some(ms(2)));
    }

    #[test]
    fn without_a_detection_nothing_settles_and_failures_count() {
        let base = Instant::now();
        let fault = base + ms(100);
        let calls = vec![
            call(base, 101, 5101, Err("timed out")),
            call(base, 102, 103, Ok(SURVIVOR)),
        ];
        let impact = Impact::of(&calls, fault, None, 0);
        assert_eq!(impact.failed, 1);
        assert_eq!(impact.first_error.as_deref(), Some("timed out"));
        assert_eq!(impact.exposed, 2);
        assert_eq!(impact.detected, None);
        assert_eq!(impact.settled, None);
        assert_eq!(impact.worst_wait, Some(ms(5000)));
        let checks = checks(Some(&impact), None);
        assert_eq!(checks[0].verdict(), "MISS");
        assert_eq!(checks[1].verdict(), "MISS");
        assert_eq!(checks[2].verdict(), "n/a");
    }
}
