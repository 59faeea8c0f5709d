//! The chaos run's faults: a schedule drawn from a seed (so `--seed N` replays it), and the
//! [`Target`] that applies each to one container of a compose cluster ([`super::compose`]) or one
//! process of the cluster in network namespaces ([`super::netns`]), records it and heals it.

use std::process::Command;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::compose::ComposeCluster;
use super::history::History;
use super::netns::NetnsCluster;

/// The kinds of fault, in the order the table lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Kind {
    Kill,
    Pause,
    Disconnect,
    RestartHttp,
    RestartPostgres,
    Netem,
}

impl Kind {
    pub(crate) const ALL: [Kind; 6] = [
        Kind::Kill,
        Kind::Pause,
        Kind::Disconnect,
        Kind::RestartHttp,
        Kind::RestartPostgres,
        Kind::Netem,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Kill => "kill+start",
            Kind::Pause => "pause 1-5 s",
            Kind::Disconnect => "net disconnect 2-10 s",
            Kind::RestartHttp => "restart http",
            Kind::RestartPostgres => "restart postgres",
            Kind::Netem => "delay 200ms, 5% loss",
        }
    }
}

/// The services whose containers a fault may hit.
pub(crate) const NODE_SERVICES: [&str; 5] = ["http", "database", "log", "reporting", "analytics"];

/// One scheduled fault: when (from the start of the load), what, on which service (and which of
/// its replicas, an index taken modulo their count), and how long before it heals.
#[derive(Debug, Clone)]
pub(crate) struct Fault {
    pub(crate) at: Duration,
    pub(crate) kind: Kind,
    pub(crate) service: &'static str,
    pub(crate) replica: usize,
    pub(crate) hold: Duration,
}

/// The schedule for a run of `duration`: every kind once in a random order, then (full run) a
/// `kill -9` of each node service in a random order, then more random faults, spaced so that each
/// heals before the next, the last healed with a fifth of the run to spare.
pub(crate) fn schedule(seed: u64, duration: Duration) -> Vec<Fault> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut kinds = Kind::ALL.to_vec();
    shuffle(&mut kinds, &mut rng);
    let mut kills = NODE_SERVICES.to_vec();
    shuffle(&mut kills, &mut rng);
    let budget = duration.as_secs_f64() * 0.8;
    let slot = if duration < Duration::from_secs(60) {
        budget / kinds.len() as f64
    } else {
        12.0
    };
    let count = (budget / slot).floor().max(1.0) as usize;
    let mut faults = Vec::new();
    for i in 0..count {
        let (kind, service) = if i < kinds.len() {
            (kinds[i], None)
        } else if let Some(service) = kills.get(i - kinds.len()) {
            (Kind::Kill, Some(*service))
        } else {
            (Kind::ALL[rng.random_range(0..Kind::ALL.len())], None)
        };
        let service = match kind {
            Kind::RestartHttp => "http",
            Kind::RestartPostgres => "postgres",
            _ => service.unwrap_or_else(|| NODE_SERVICES[rng.random_range(0..NODE_SERVICES.len())]),
        };
        let max_hold = (slot * 0.6).max(1.0);
        let hold = match kind {
            Kind::Pause => rng.random_range(1.0..=5.0f64.min(max_hold)),
            Kind::Disconnect => rng.random_range(2.0f64.min(max_hold)..=10.0f64.min(max_hold)),
            Kind::Netem => rng.random_range(2.0..=4.0f64.min(max_hold).max(2.0)),
            Kind::Kill => rng.random_range(0.5..=2.0),
            Kind::RestartHttp | Kind::RestartPostgres => 0.0,
        };
        faults.push(Fault {
            at: Duration::from_secs_f64(1.0 + slot * i as f64 + rng.random_range(0.0..slot * 0.2)),
            kind,
            service,
            replica: rng.random_range(0..8),
            hold: Duration::from_secs_f64(hold),
        });
    }
    faults
}

/// Fisher-Yates, from the schedule's own generator so that a seed replays it.
fn shuffle<T>(items: &mut [T], rng: &mut StdRng) {
    for i in (1..items.len()).rev() {
        items.swap(i, rng.random_range(0..=i));
    }
}

/// Runs a command, returning its trimmed stdout, or an error with its stderr.
pub(crate) fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program).args(args).output()?;
    anyhow::ensure!(
        output.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Runs a command off the async runtime.
pub(crate) async fn run_async(program: &'static str, args: Vec<String>) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(program, &args)
    })
    .await?
}

/// The cluster a run's faults hit.
pub(crate) enum Target {
    Compose(ComposeCluster),
    Netns(NetnsCluster),
}

impl Target {
    /// Applies `fault`, holds it, heals it; records the start and the end in the history, with
    /// the container or process it hit.
    pub(crate) async fn apply(&self, fault: &Fault, history: &History) -> anyhow::Result<()> {
        let instance = match self {
            Target::Compose(cluster) => cluster.instance(fault).await?,
            Target::Netns(cluster) => cluster.instance(fault)?,
        };
        history.record(
            "faults",
            "fault_start",
            json!({ "kind": fault.kind.name(), "service": fault.service, "instance": instance }),
        );
        let result = match self {
            Target::Compose(cluster) => cluster.inflict(fault, &instance).await,
            Target::Netns(cluster) => cluster.inflict(fault, &instance).await,
        };
        history.record(
            "faults",
            "fault_end",
            json!({
                "kind": fault.kind.name(),
                "service": fault.service,
                "instance": instance,
                "error": result.as_ref().err().map(|e| format!("{e:#}")),
            }),
        );
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_its_schedule_and_the_quick_run_has_every_kind() {
        let a = schedule(7, Duration::from_secs(20));
        let b = schedule(7, Duration::from_secs(20));
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        for kind in Kind::ALL {
            assert!(a.iter().any(|f| f.kind == kind), "{kind:?} missing");
        }
        let last = a.last().unwrap();
        assert!(last.at + last.hold < Duration::from_secs(20));
        let full = schedule(7, Duration::from_secs(180));
        assert!(full.len() >= 11);
        for service in NODE_SERVICES {
            assert!(
                full.iter()
                    .any(|f| f.kind == Kind::Kill && f.service == service),
                "no kill of {service}"
            );
        }
        assert!(
            full.iter()
                .all(|f| f.at + f.hold < Duration::from_secs(180))
        );
    }
}
