//! The `cluster` scenario family: what membership and failure detection cost as a cluster grows.
//! Every node links to every other and watches each link, so the cost at rest grows with the
//! number of pairs; this family measures where that stops being acceptable, at N = 5, 16, 32, 64
//! and 128 nodes (`--quick`: 5 and 16; `--nodes` picks), each a process of its own on this
//! machine, hosting `echo` with one tokio worker, all seeded from the first.
//!
//! Per size, in one run: the time from the last node's start to a full mesh (every node says
//! every other is up); each node's CPU at rest over a window (`utime` + `stime`), its resident
//! memory and its established TCP connections; then, under a steady 1,000 idempotent calls/s
//! from the bench's own (hidden) node to `echo` across the cluster, `kill -9` of one node, then of
//! the seed, then `SIGSTOP` of a third, each timed until every other node has said it is down,
//! and, after `SIGCONT`, until the hung node is back in a full mesh; the calls' p99 and how many
//! failed. The same sizes are then measured at rest as Erlang clusters (see [`otp`]), with the
//! default `net_ticktime` and with the lowest. The floors are checked at 64 nodes.
//!
//! Every time comes from what the nodes themselves logged (see [`journal`]), on the wall clock
//! all processes share, against the bench's wall clock at the fault: not from when the bench
//! read the line, which with a hundred processes on two CPUs can be much later. The bench's
//! own node is hidden, so it is no member: it is neither in the mesh nor gossiped, and it
//! connects only after the idle window, so the figures at rest are the cluster's alone.

mod chart;
mod journal;
mod member;
mod otp;
mod procfs;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail, ensure};
use nix::sys::signal::Signal;
use switchboard::{
    CallOptions, Cookie, Node, NodeBuilder, NodeConfig, PeerState, eventually, telemetry,
};
use tokio::sync::watch;

use crate::cli::RunOptions;
use crate::echo_node::{self, ECHO, PAYLOAD_BYTES, fresh_cookie};
use crate::load::{Timed, open_loop};
use crate::server_process::{announce, is_executable, sibling};
use crate::stats::{Bound, Check, percentile};
use crate::table::{
    Grid, MIB, Section, duration, mebibytes, percent, progress, seconds, thousands,
};
use journal::{Down, Journal};
use member::Member;
use otp::{ErlangCluster, Otp};

const TITLE: &str = "cluster: membership and failure detection from 5 to 128 nodes (one process \
                     per node, loopback)";

/// The cluster sizes measured by default, and under `--quick`.
const SIZES: [usize; 5] = [5, 16, 32, 64, 128];
const QUICK_SIZES: [usize; 2] = [5, 16];

/// How long CPU is measured at rest; shorter under `--quick`, to keep CI's run short.
const IDLE_WINDOW: Duration = Duration::from_secs(10);
const QUICK_IDLE_WINDOW: Duration = Duration::from_secs(5);

/// Between the full mesh and the idle window: the formation's last gossip and advertisements
/// are not rest.
const SETTLE: Duration = Duration::from_secs(1);

/// How long every member may take to start, and a Switchboard cluster to become a full mesh.
const START_DEADLINE: Duration = Duration::from_secs(60);
const MESH_DEADLINE: Duration = Duration::from_secs(120);

/// How long every other node has to say a faulted node is down, and a resumed one to be back in
/// the mesh. Far beyond the floors; past them the time reads "not within".
const DETECT_DEADLINE: Duration = Duration::from_secs(10);
const REJOIN_DEADLINE: Duration = Duration::from_secs(20);

/// How long the bench's node may take to link to every member.
const LINK_DEADLINE: Duration = Duration::from_secs(30);

/// Steady load before the first fault, between faults and after the last.
const STEADY: Duration = Duration::from_secs(1);

/// The steady load, calls per second.
const RATE: u32 = 1000;

/// The bench's own node: hidden, so no member counts it.
const CLIENT: &str = "bench-cluster-client";

/// What the members log: warnings, and the runtime's membership decisions (`info`).
const LOG_FILTER: &str = "warn,switchboard=info";

/// The chart's file name beside the Markdown report when `--svg` names none.
const DEFAULT_SVG: &str = "cluster-scaling.svg";

/// The floors, held at [`FLOOR_SIZE`] nodes.
const FLOOR_SIZE: usize = 64;
const MESH_FLOOR: Duration = Duration::from_secs(3);
const CPU_FLOOR: f64 = 1.0;
const HANG_FLOOR: Duration = Duration::from_millis(1500);
const KILL_FLOOR: Duration = Duration::from_millis(100);
/// Idle CPU per node may grow less than this much from [`GROWTH_FROM`] to [`FLOOR_SIZE`] nodes
/// (a cost per pair would grow 4x).
const GROWTH_FLOOR: f64 = 3.0;
const GROWTH_FROM: usize = 16;

/// Memory assumed per member before any has been measured, and the headroom over the largest
/// measured: a size is skipped, saying so, when the machine has less available.
const MEMBER_GUESS: u64 = 48 * 1024 * 1024;
const HEADROOM: u64 = 2;

/// `serve-cluster-node`: a member of a measured cluster, until killed. It hosts `echo` (as
/// `serve-node` does) and is seeded from `SWITCHBOARD_SEEDS`, and its log is its report: the
/// runtime's JSON lines on stdout at [`LOG_FILTER`], which the bench reads.
pub(crate) async fn serve_member() -> anyhow::Result<()> {
    telemetry::init(telemetry::LogFormat::Json, Vec::new());
    let cookie = Cookie::from_env()?;
    let name = std::env::var("SWITCHBOARD_NODE_NAME").context("SWITCHBOARD_NODE_NAME is unset")?;
    let seeds = std::env::var("SWITCHBOARD_SEEDS")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let config = NodeConfig {
        node_name: Some(name.clone()),
        seeds,
        ..NodeConfig::loopback()
    };
    let node = NodeBuilder::new(name.as_str(), config, cookie)
        .service(ECHO, echo_node::service(&name, Arc::new(AtomicU64::new(0))))
        .start()
        .await?;
    announce(node.address());
    node.run_until_signal().await;
    Ok(())
}

/// Runs the family and returns its section of the report (none when `--only` names another
/// family's points).
pub(crate) async fn run(options: &RunOptions) -> anyhow::Result<Option<Section>> {
    if !options.selects("cluster", "") {
        return Ok(None);
    }
    let sizes = match &options.nodes {
        Some(sizes) => sizes.clone(),
        None if options.quick => QUICK_SIZES.to_vec(),
        None => SIZES.to_vec(),
    };
    let window = if options.quick {
        QUICK_IDLE_WINDOW
    } else {
        IDLE_WINDOW
    };
    let otp = Otp::find()?;
    let mut measured = Vec::new();
    let mut skipped = Vec::new();
    let mut largest_member = MEMBER_GUESS;
    for &n in &sizes {
        if let Some(why) = too_big(n, largest_member) {
            progress(format_args!("cluster: {n} nodes skipped: {why}"));
            skipped.push(format!("{n} nodes skipped: {why}"));
            continue;
        }
        progress(format_args!("cluster: {n} Switchboard nodes"));
        let switchboard = switchboard(n, options, window)
            .await
            .with_context(|| format!("the cluster of {n} Switchboard nodes"))?;
        let erlang = match &otp {
            Ok(otp) => {
                progress(format_args!("cluster: {n} Erlang nodes"));
                let cluster = otp
                    .measure(n, options, SETTLE, window)
                    .await
                    .with_context(|| format!("the cluster of {n} Erlang nodes"))?;
                Some(cluster)
            }
            Err(_) => None,
        };
        let size = Size {
            n,
            switchboard,
            erlang,
        };
        largest_member = largest_member.max(size.largest_rss());
        measured.push(size);
    }
    let chart = write_chart(options, &measured)?;
    let mut notes = notes(options, window, &otp);
    notes.extend(skipped);
    notes.extend(fault_notes(&measured));
    if let Some(path) = chart {
        notes.push(format!("chart: {path}"));
    }
    Ok(Some(Section {
        title: TITLE.into(),
        notes,
        grids: grids(&measured),
        checks: checks(&measured),
        ..Section::default()
    }))
}

/// Why `n` members would not fit in the memory available now, each allowed [`HEADROOM`] times
/// `per_member` bytes; `None` if they would.
fn too_big(n: usize, per_member: u64) -> Option<String> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let available = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())?
        * 1024;
    let needed = n as u64 * per_member * HEADROOM;
    (needed > available).then(|| {
        format!(
            "{n} processes of up to {} each, with {HEADROOM}x headroom, need {} and {} is \
             available (MemAvailable)",
            mebibytes(per_member as f64 / MIB),
            mebibytes(needed as f64 / MIB),
            mebibytes(available as f64 / MIB),
        )
    })
}

/// Everything measured at one cluster size.
#[derive(Debug)]
struct Size {
    n: usize,
    switchboard: Switchboard,
    /// The Erlang cluster of the same size; none without Erlang.
    erlang: Option<ErlangCluster>,
}

impl Size {
    /// The largest resident set of any member measured at this size.
    fn largest_rss(&self) -> u64 {
        let switchboard = self.switchboard.idle.iter();
        let erlang = self
            .erlang
            .iter()
            .flat_map(|c| c.idle.iter().chain(c.tuned.iter()));
        switchboard
            .chain(erlang)
            .flat_map(|idle| idle.rss.iter().copied())
            .max()
            .unwrap_or(0)
    }

    /// The Erlang cluster at rest with the default `net_ticktime` (`tuned` false) or with 1.
    fn erlang_idle(&self, tuned: bool) -> Option<&Idle> {
        let cluster = self.erlang.as_ref()?;
        if tuned {
            cluster.tuned.as_ref()
        } else {
            cluster.idle.as_ref()
        }
    }
}

/// A Switchboard cluster of one size: formed, at rest, and faulted under load.
#[derive(Debug)]
struct Switchboard {
    /// Last start -> full mesh; `None` if not within [`MESH_DEADLINE`] (nothing else is then
    /// measured).
    mesh: Option<Duration>,
    /// Why there is no mesh, if there is none.
    unformed: Option<String>,
    idle: Option<Idle>,
    faults: Option<Faults>,
}

/// A cluster at rest: per member, CPU as a percentage of one core over the window, resident
/// memory, and established TCP connections.
#[derive(Debug, Clone)]
struct Idle {
    cpu: Vec<f64>,
    rss: Vec<u64>,
    tcp: Vec<usize>,
}

impl Idle {
    fn cpu_mean(&self) -> f64 {
        self.cpu_total() / self.cpu.len().max(1) as f64
    }

    fn cpu_max(&self) -> f64 {
        self.cpu.iter().copied().fold(0.0, f64::max)
    }

    fn cpu_total(&self) -> f64 {
        self.cpu.iter().sum()
    }
}

/// Mean and largest of some counts.
fn mean_max(values: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let count = values.clone().count().max(1) as f64;
    (
        values.clone().sum::<f64>() / count,
        values.fold(0.0, f64::max),
    )
}

/// The faults of one size, under load.
#[derive(Debug)]
struct Faults {
    kill: Detection,
    kill_seed: Detection,
    hang: Detection,
    /// SIGCONT -> the hung node back in a full mesh (fresh ups both ways).
    rejoin: Option<Duration>,
    /// What kept the mesh from re-forming, if it did not.
    rejoin_missing: Option<String>,
    calls: Calls,
}

/// How long every other member took to say a faulted member is down.
#[derive(Debug, Clone, PartialEq)]
struct Detection {
    /// How many members were to see it.
    observers: usize,
    /// Each observer's time from the fault to its `node down`, `None` if not within the
    /// deadline.
    times: Vec<Option<Duration>>,
    /// Each reason given, with how many observers gave it.
    reasons: BTreeMap<String, usize>,
}

impl Detection {
    fn of(fault: SystemTime, downs: &[Option<&Down>]) -> Self {
        let mut reasons = BTreeMap::new();
        let times = downs
            .iter()
            .map(|down| {
                let down = (*down)?;
                *reasons.entry(down.reason.clone()).or_insert(0) += 1;
                Some(down.at.duration_since(fault).unwrap_or_default())
            })
            .collect();
        Self {
            observers: downs.len(),
            times,
            reasons,
        }
    }

    /// The `p`th percentile over observers; one that never saw it counts as forever, so the max
    /// is `None` unless every observer saw it.
    fn percentile(&self, p: f64) -> Option<Duration> {
        let mut nanos: Vec<u64> = self
            .times
            .iter()
            .map(|t| t.map_or(u64::MAX, |t| t.as_nanos() as u64))
            .collect();
        if nanos.is_empty() {
            return None;
        }
        nanos.sort_unstable();
        match percentile(&nanos, p) {
            u64::MAX => None,
            n => Some(Duration::from_nanos(n)),
        }
    }

    fn max(&self) -> Option<Duration> {
        self.percentile(100.0)
    }

    fn p50(&self) -> Option<Duration> {
        self.percentile(50.0)
    }

    /// `noconnection ×15`, for the notes.
    fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .reasons
            .iter()
            .map(|(reason, count)| format!("{reason} ×{count}"))
            .collect();
        let missing = self.times.iter().filter(|t| t.is_none()).count();
        if missing > 0 {
            parts.push(format!("not seen ×{missing}"));
        }
        parts.join(", ")
    }
}

/// What the steady load saw over the faults.
#[derive(Debug, Clone, PartialEq)]
struct Calls {
    issued: usize,
    failed: usize,
    first_error: Option<String>,
    p50: Option<Duration>,
    p99: Option<Duration>,
    max: Option<Duration>,
}

impl Calls {
    fn of(calls: &[Timed<()>]) -> Self {
        let mut latencies: Vec<u64> = calls
            .iter()
            .filter(|c| c.outcome.is_ok())
            .map(|c| (c.completed - c.issued).as_nanos() as u64)
            .collect();
        latencies.sort_unstable();
        let at = |p: f64| {
            (!latencies.is_empty()).then(|| Duration::from_nanos(percentile(&latencies, p)))
        };
        let failed: Vec<&Timed<()>> = calls.iter().filter(|c| c.outcome.is_err()).collect();
        Self {
            issued: calls.len(),
            failed: failed.len(),
            first_error: failed
                .first()
                .and_then(|c| c.outcome.as_ref().err().cloned()),
            p50: at(50.0),
            p99: at(99.0),
            max: at(100.0),
        }
    }
}

/// The members of one cluster, Switchboard's or Erlang's, and what they have said.
#[derive(Debug)]
struct Cluster {
    members: Vec<Member>,
    names: Vec<String>,
    /// False once a member has been killed.
    alive: Vec<bool>,
    journal: Arc<watch::Sender<Journal>>,
    /// Last start -> full mesh, if it formed within the deadline.
    formed: Option<Duration>,
    /// If it did not: how far from a mesh it was at the deadline.
    unformed: Option<String>,
}

impl Cluster {
    /// Starts the first of `names` and waits until it has started, then the rest at once, each
    /// seeded from it (`command(name, seed)`, where `seed` is the first member's address if it
    /// gave one, else its name), waits until every one has started, and then for a full mesh
    /// at most `mesh_deadline`.
    async fn start(
        names: Vec<String>,
        command: impl Fn(&str, Option<&str>) -> anyhow::Result<Command>,
        mesh_deadline: Duration,
    ) -> anyhow::Result<Self> {
        let journal = Arc::new(watch::Sender::new(Journal::default()));
        let mut cluster = Self {
            members: Vec::with_capacity(names.len()),
            alive: vec![true; names.len()],
            names,
            journal,
            formed: None,
            unformed: None,
        };
        let first = cluster.names[0].clone();
        cluster.members.push(Member::spawn(
            command(&first, None)?,
            &first,
            &cluster.journal,
        )?);
        let seed = cluster
            .wait(START_DEADLINE, |j| {
                j.started(&first)
                    .map(|(_, address)| address.clone().unwrap_or_else(|| first.clone()))
            })
            .await;
        let Some(seed) = seed else {
            bail!("{first} did not start{}", cluster.exits());
        };
        for name in &cluster.names[1..] {
            let member = Member::spawn(command(name, Some(&seed))?, name, &cluster.journal)?;
            cluster.members.push(member);
        }
        let names = cluster.names.clone();
        let Some(last_start) = cluster.wait(START_DEADLINE, |j| j.last_start(&names)).await else {
            bail!("not every node started{}", cluster.exits());
        };
        cluster.formed = cluster
            .wait(mesh_deadline, |j| j.mesh(&names, None))
            .await
            .map(|mesh| mesh.duration_since(last_start).unwrap_or_default());
        if cluster.formed.is_none() {
            let (count, pairs) = cluster.journal.borrow().unmeshed(&names, None, 4);
            let unformed = format!(
                "no full mesh within {} s: {count} of {} pairs not up at the deadline (e.g. \
                 {}){}",
                seconds(mesh_deadline),
                names.len() * (names.len() - 1),
                pairs.join("; "),
                cluster.exits()
            );
            progress(format_args!("cluster: {} nodes: {unformed}", names.len()));
            cluster.unformed = Some(unformed);
        }
        Ok(cluster)
    }

    /// Waits until `what` finds something in the journal, at most `deadline`; what it finds
    /// then, if anything.
    async fn wait<T>(&self, deadline: Duration, what: impl Fn(&Journal) -> Option<T>) -> Option<T> {
        let mut journal = self.journal.subscribe();
        let _ = tokio::time::timeout(deadline, journal.wait_for(|j| what(j).is_some())).await;
        what(&self.journal.borrow())
    }

    /// Members that have exited, and why, as the end of an error message.
    fn exits(&mut self) -> String {
        let exits: Vec<String> = self
            .members
            .iter_mut()
            .zip(&self.alive)
            .filter(|(_, alive)| **alive)
            .filter_map(|(member, _)| member.exited())
            .collect();
        if exits.is_empty() {
            String::new()
        } else {
            format!("; {}", exits.join("; "))
        }
    }

    /// The names of the members not killed, but for `except`.
    fn others(&self, except: usize) -> Vec<String> {
        (0..self.names.len())
            .filter(|&i| i != except && self.alive[i])
            .map(|i| self.names[i].clone())
            .collect()
    }

    /// Measures the live members at rest for `window`.
    async fn idle(&self, window: Duration) -> anyhow::Result<Idle> {
        let pids: Vec<u32> = self
            .members
            .iter()
            .zip(&self.alive)
            .filter(|(_, alive)| **alive)
            .map(|(m, _)| m.pid())
            .collect();
        let cpu = |pids: &[u32]| {
            pids.iter()
                .map(|&pid| procfs::cpu_time(pid))
                .collect::<anyhow::Result<Vec<Duration>>>()
        };
        let before = cpu(&pids)?;
        let started = Instant::now();
        // The measurement itself: the members are left alone for the window.
        tokio::time::sleep(window).await;
        let after = cpu(&pids)?;
        let elapsed = started.elapsed().as_secs_f64();
        let tcp = procfs::TcpTable::read()?;
        Ok(Idle {
            cpu: before
                .iter()
                .zip(&after)
                .map(|(b, a)| a.saturating_sub(*b).as_secs_f64() / elapsed * 100.0)
                .collect(),
            rss: pids
                .iter()
                .map(|&pid| procfs::rss(pid))
                .collect::<anyhow::Result<_>>()?,
            tcp: pids
                .iter()
                .map(|&pid| tcp.established(pid))
                .collect::<anyhow::Result<_>>()?,
        })
    }

    /// `kill -9` of member `index`, timed until every other live member has said it is down.
    async fn kill(&mut self, index: usize) -> anyhow::Result<Detection> {
        let fault = SystemTime::now();
        self.members[index].kill()?;
        self.alive[index] = false;
        Ok(self.seen_down(index, fault).await)
    }

    /// `SIGSTOP` of member `index`, timed until every other member has said it is down; then
    /// `SIGCONT`, timed until it is back in a full mesh, or what kept the mesh from re-forming.
    async fn hang(
        &mut self,
        index: usize,
    ) -> anyhow::Result<(Detection, Result<Duration, String>)> {
        let fault = SystemTime::now();
        self.members[index].signal(Signal::SIGSTOP)?;
        let detection = self.seen_down(index, fault).await;
        let resumed = SystemTime::now();
        self.members[index].signal(Signal::SIGCONT)?;
        let live = self.others(usize::MAX);
        let name = self.names[index].clone();
        let rejoined = self
            .wait(REJOIN_DEADLINE, |j| j.mesh(&live, Some((&name, resumed))))
            .await;
        let rejoin = match rejoined {
            Some(at) => Ok(at.duration_since(resumed).unwrap_or_default()),
            None => {
                let (count, pairs) =
                    self.journal
                        .borrow()
                        .unmeshed(&live, Some((&name, resumed)), 4);
                Err(format!(
                    "no full mesh within {} s: {count} pairs short, e.g. {}",
                    seconds(REJOIN_DEADLINE),
                    pairs.join("; ")
                ))
            }
        };
        Ok((detection, rejoin))
    }

    /// Waits until every live member but `index` has said `index` is down since `fault`.
    async fn seen_down(&self, index: usize, fault: SystemTime) -> Detection {
        let observers = self.others(index);
        let peer = &self.names[index];
        self.wait(DETECT_DEADLINE, |j| {
            j.downs_of(peer, &observers, fault)
                .iter()
                .all(Option::is_some)
                .then_some(())
        })
        .await;
        Detection::of(
            fault,
            &self.journal.borrow().downs_of(peer, &observers, fault),
        )
    }

    /// The seed's inter-node address, as it logged it.
    fn seed_address(&self) -> anyhow::Result<String> {
        self.journal
            .borrow()
            .started(&self.names[0])
            .and_then(|(_, address)| address.clone())
            .context("the seed logged no address")
    }
}

/// Measures a Switchboard cluster of `n` nodes.
async fn switchboard(
    n: usize,
    options: &RunOptions,
    window: Duration,
) -> anyhow::Result<Switchboard> {
    let cookie = fresh_cookie();
    let names: Vec<String> = (0..n).map(|i| format!("member-{i:03}")).collect();
    let command = |name: &str, seed: Option<&str>| member_command(options, &cookie, name, seed);
    let mut cluster = Cluster::start(names, command, MESH_DEADLINE).await?;
    let Some(mesh) = cluster.formed else {
        return Ok(Switchboard {
            mesh: None,
            unformed: cluster.unformed.take(),
            idle: None,
            faults: None,
        });
    };
    progress(format_args!(
        "cluster: {n} nodes meshed {} after the last start; at rest for {} s",
        duration(mesh),
        seconds(window)
    ));
    tokio::time::sleep(SETTLE).await;
    let idle = cluster.idle(window).await?;
    let faults = faults(&mut cluster, &cookie).await?;
    Ok(Switchboard {
        mesh: Some(mesh),
        unformed: None,
        idle: Some(idle),
        faults: Some(faults),
    })
}

/// The command that runs member `name` of a Switchboard cluster, seeded from `seed`: the bench
/// re-executed as `serve-cluster-node`, or `switchboard-testnode` under `--testnode`.
fn member_command(
    options: &RunOptions,
    cookie: &str,
    name: &str,
    seed: Option<&str>,
) -> anyhow::Result<Command> {
    let workers = options.server_workers.to_string();
    let mut command = if options.testnode {
        let path = sibling("switchboard-testnode")?;
        ensure!(
            is_executable(&path),
            "{} does not exist; build it with `cargo build --release -p switchboard --bin \
             switchboard-testnode`",
            path.display()
        );
        options.placement.shared_command(path)
    } else {
        let exe = std::env::current_exe().context("finding the bench's own executable")?;
        let mut command = options.placement.shared_command(exe);
        command
            .arg(crate::cli::ServerKind::ClusterNode.subcommand())
            .arg("--workers")
            .arg(&workers);
        command
    };
    // The run measures the runtime's defaults, whatever the caller's shell sets.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SWITCHBOARD_") {
            command.env_remove(key);
        }
    }
    if options.testnode {
        command
            .env("SWITCHBOARD_LISTEN", "127.0.0.1:0")
            .env("SWITCHBOARD_LOG_FORMAT", "json")
            .env("SWITCHBOARD_TESTNODE_WORKERS", &workers);
    }
    command
        .env("SWITCHBOARD_COOKIE", cookie)
        .env("SWITCHBOARD_NODE_NAME", name)
        .env("SWITCHBOARD_SEEDS", seed.unwrap_or(""))
        .env("RUST_LOG", LOG_FILTER);
    Ok(command)
}

/// The faults, under a steady load from the bench's hidden node: `kill -9` of the last member,
/// then of the seed, then `SIGSTOP` and `SIGCONT` of the member in the middle.
async fn faults(cluster: &mut Cluster, cookie: &str) -> anyhow::Result<Faults> {
    let n = cluster.names.len();
    let node = client(cookie, &cluster.seed_address()?, n).await?;
    let payload = echo_node::payload(PAYLOAD_BYTES);
    let caller = node.clone();
    let load = open_loop(RATE, move || {
        let (node, payload) = (caller.clone(), payload.clone());
        async move {
            echo_node::call(&node, payload, CallOptions::idempotent()).await?;
            Ok(())
        }
    });
    // Paced load between the faults, so each meets a cluster in its steady state.
    tokio::time::sleep(STEADY).await;
    let kill = cluster.kill(n - 1).await?;
    tokio::time::sleep(STEADY).await;
    let kill_seed = cluster.kill(0).await?;
    tokio::time::sleep(STEADY).await;
    let (hang, rejoin) = cluster.hang(n / 2).await?;
    tokio::time::sleep(STEADY).await;
    let calls = Calls::of(&load.finish().await?);
    node.shutdown().await;
    Ok(Faults {
        kill,
        kill_seed,
        hang,
        rejoin: rejoin.as_ref().ok().copied(),
        rejoin_missing: rejoin.err(),
        calls,
    })
}

/// The bench's own node, hidden, linked through the seed to all `n` members and seeing `echo`.
async fn client(cookie: &str, seed: &str, n: usize) -> anyhow::Result<Node> {
    let config = NodeConfig {
        node_name: Some(CLIENT.into()),
        ..NodeConfig::loopback()
    };
    let node = NodeBuilder::new(CLIENT, config, Cookie::new(cookie)?)
        .hidden(true)
        .start()
        .await?;
    node.connect(seed)
        .await
        .with_context(|| format!("connecting the bench's node to the seed at {seed}"))?;
    let linked = eventually(LINK_DEADLINE, || {
        let up = node
            .nodes()
            .iter()
            .filter(|info| !info.is_self && info.state == PeerState::Up)
            .count();
        async move { up >= n }
    })
    .await;
    ensure!(
        linked,
        "the bench's node did not link to all {n} members within {} s",
        seconds(LINK_DEADLINE)
    );
    Ok(node)
}

/// Writes the chart where `--svg` says, or beside the Markdown report; returns where, if
/// anywhere.
fn write_chart(options: &RunOptions, sizes: &[Size]) -> anyhow::Result<Option<String>> {
    let path = match (&options.svg, &options.markdown) {
        (Some(path), _) => path.clone(),
        (None, Some(markdown)) => markdown.with_file_name(DEFAULT_SVG),
        (None, None) => return Ok(None),
    };
    if sizes.is_empty() {
        return Ok(None);
    }
    let ns: Vec<usize> = sizes.iter().map(|s| s.n).collect();
    let series = |label: &str, colour, value: &dyn Fn(&Size) -> Option<f64>| chart::Series {
        label: label.to_owned(),
        colour,
        points: sizes.iter().map(|s| (s.n, value(s))).collect(),
    };
    let erlang_cpu = |tuned: bool| move |s: &Size| s.erlang_idle(tuned).map(Idle::cpu_mean);
    let mut cpu = vec![series("Switchboard (mean per node)", "#1f5fa8", &|s| {
        s.switchboard.idle.as_ref().map(Idle::cpu_mean)
    })];
    let mut mesh = vec![series("Switchboard", "#1f5fa8", &|s| {
        s.switchboard.mesh.map(|d| d.as_secs_f64() * 1e3)
    })];
    if sizes.iter().any(|s| s.erlang.is_some()) {
        cpu.push(series(
            "Erlang, net_ticktime 60 (default)",
            "#7a7a7a",
            &erlang_cpu(false),
        ));
        cpu.push(series(
            "Erlang, net_ticktime 1",
            "#d9731a",
            &erlang_cpu(true),
        ));
        mesh.push(series("Erlang (net_ticktime 60)", "#7a7a7a", &|s| {
            s.erlang
                .as_ref()
                .and_then(|c| c.mesh)
                .map(|d| d.as_secs_f64() * 1e3)
        }));
    }
    let svg = chart::render(
        "Switchboard and Erlang clusters on one machine (one process per node, 2 CPUs)",
        &ns,
        &[
            chart::Panel {
                title: "idle CPU per node".into(),
                unit: "% of one core",
                series: cpu,
                floor: Some((CPU_FLOOR, format!("floor {CPU_FLOOR}%"))),
            },
            chart::Panel {
                title: "last node's start -> full mesh".into(),
                unit: "ms",
                series: mesh,
                floor: Some((
                    MESH_FLOOR.as_secs_f64() * 1e3,
                    format!("floor {} s at {FLOOR_SIZE} nodes", seconds(MESH_FLOOR)),
                )),
            },
        ],
    );
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&path, svg).with_context(|| format!("writing {}", path.display()))?;
    Ok(Some(path.display().to_string()))
}

/// A duration, or why there is none.
fn time_or(d: Option<Duration>, absent: &str) -> String {
    d.map_or_else(|| absent.to_owned(), duration)
}

/// The section's tables: the cluster at rest, the faults, and Erlang beside Switchboard.
fn grids(sizes: &[Size]) -> Vec<Grid> {
    let strings = |cells: &[&str]| cells.iter().map(|c| (*c).to_owned()).collect::<Vec<_>>();
    let never = format!("not within {} s", seconds(MESH_DEADLINE));
    let late = format!("not within {} s", seconds(DETECT_DEADLINE));
    let mut rest = Grid {
        caption: "Switchboard at rest: formation, then idle CPU (% of one core), memory and TCP \
                  connections per node"
            .into(),
        header: strings(&[
            "nodes",
            "last start -> full mesh",
            "CPU/node mean",
            "CPU/node max",
            "CPU, whole cluster",
            "RSS/node mean",
            "RSS/node max",
            "TCP conns/node mean",
            "TCP conns/node max",
        ]),
        rows: Vec::new(),
    };
    let mut faults = Grid {
        caption: format!(
            "Switchboard faulted under {} idempotent calls/s: time until every other node said \
             the node was down (max and p50 over them), and what the calls saw",
            thousands(RATE.into())
        ),
        header: strings(&[
            "nodes",
            "kill -9: max",
            "p50",
            "kill -9 of the seed: max",
            "p50",
            "SIGSTOP: max",
            "p50",
            "SIGCONT -> full mesh again",
            "calls",
            "failed",
            "p50",
            "p99",
            "max",
        ]),
        rows: Vec::new(),
    };
    let mut beside = Grid {
        caption: "Erlang beside Switchboard at rest: `erl -sname` nodes, one scheduler each, \
                  full mesh (-connect_all), formed at net_ticktime 60 then changed to 1 on every \
                  node; idle CPU per node, % of one core (mean / max)"
            .into(),
        header: strings(&[
            "nodes",
            "Switchboard CPU/node",
            "Erlang: last start -> mesh",
            "Erlang CPU/node, net_ticktime 60",
            "RSS/node",
            "TCP conns/node",
            "Erlang CPU/node, net_ticktime 1",
        ]),
        rows: Vec::new(),
    };
    for size in sizes {
        let n = size.n.to_string();
        let sb = &size.switchboard;
        let cpu = |idle: Option<&Idle>| {
            idle.map_or_else(
                || "—".to_owned(),
                |i| format!("{} / {}", percent(i.cpu_mean()), percent(i.cpu_max())),
            )
        };
        match &sb.idle {
            Some(idle) => {
                let (rss_mean, rss_max) = mean_max(idle.rss.iter().map(|&r| r as f64 / MIB));
                let (tcp_mean, tcp_max) = mean_max(idle.tcp.iter().map(|&t| t as f64));
                rest.rows.push(vec![
                    n.clone(),
                    time_or(sb.mesh, &never),
                    percent(idle.cpu_mean()),
                    percent(idle.cpu_max()),
                    percent(idle.cpu_total()),
                    mebibytes(rss_mean),
                    mebibytes(rss_max),
                    format!("{tcp_mean:.1}"),
                    format!("{tcp_max:.0}"),
                ]);
            }
            None => {
                let mut row = vec![n.clone(), time_or(sb.mesh, &never)];
                row.resize(rest.header.len(), "—".to_owned());
                rest.rows.push(row);
            }
        }
        if let Some(f) = &sb.faults {
            faults.rows.push(vec![
                n.clone(),
                time_or(f.kill.max(), &late),
                time_or(f.kill.p50(), &late),
                time_or(f.kill_seed.max(), &late),
                time_or(f.kill_seed.p50(), &late),
                time_or(f.hang.max(), &late),
                time_or(f.hang.p50(), &late),
                time_or(
                    f.rejoin,
                    &format!("not within {} s", seconds(REJOIN_DEADLINE)),
                ),
                thousands(f.calls.issued as f64),
                thousands(f.calls.failed as f64),
                time_or(f.calls.p50, "—"),
                time_or(f.calls.p99, "—"),
                time_or(f.calls.max, "—"),
            ]);
        }
        if let Some(otp) = &size.erlang {
            let never = format!("not within {} s", seconds(Duration::from_secs(120)));
            let slow = otp.idle.as_ref();
            beside.rows.push(vec![
                n,
                cpu(sb.idle.as_ref()),
                time_or(otp.mesh, &never),
                cpu(slow),
                slow.map_or_else(
                    || "—".to_owned(),
                    |i| mebibytes(mean_max(i.rss.iter().map(|&r| r as f64 / MIB)).0),
                ),
                slow.map_or_else(
                    || "—".to_owned(),
                    |i| format!("{:.1}", mean_max(i.tcp.iter().map(|&t| t as f64)).0),
                ),
                cpu(otp.tuned.as_ref()),
            ]);
        }
    }
    vec![rest, faults, beside]
}

/// The floors, at [`FLOOR_SIZE`] nodes, or, when that size was not measured (`--quick`), at the
/// largest measured, saying so.
fn checks(sizes: &[Size]) -> Vec<Check> {
    let floor = sizes
        .iter()
        .find(|s| s.n == FLOOR_SIZE)
        .or_else(|| sizes.iter().max_by_key(|s| s.n));
    let at = match floor {
        Some(s) if s.n == FLOOR_SIZE => format!("@{FLOOR_SIZE} nodes"),
        Some(s) => format!("@{} nodes ({FLOOR_SIZE} not measured)", s.n),
        None => format!("@{FLOOR_SIZE} nodes (not measured)"),
    };
    let sb = floor.map(|s| &s.switchboard);
    let idle = sb.and_then(|s| s.idle.as_ref());
    let faults = sb.and_then(|s| s.faults.as_ref());
    let ran = |check: Check, measured: bool| if measured { check } else { check.not_run() };
    let cpu_of = |n: usize| {
        sizes
            .iter()
            .find(|s| s.n == n)
            .and_then(|s| s.switchboard.idle.as_ref())
            .map(Idle::cpu_mean)
    };
    let growth = match (cpu_of(GROWTH_FROM), cpu_of(FLOOR_SIZE)) {
        (Some(from), Some(to)) if from > 0.0 => to / from,
        _ => f64::NAN,
    };
    vec![
        ran(
            Check::within(
                format!("{at}: last start -> full mesh"),
                sb.and_then(|s| s.mesh),
                MESH_FLOOR,
            ),
            sb.is_some(),
        ),
        Check::percent(
            format!("{at}: idle CPU per node (max over nodes, % of one core)"),
            idle.map(Idle::cpu_max),
            Bound::AtMost(CPU_FLOOR),
        ),
        ran(
            Check::within(
                format!("{at}: SIGSTOP seen down by every other node"),
                faults.and_then(|f| f.hang.max()),
                HANG_FLOOR,
            ),
            faults.is_some(),
        ),
        ran(
            Check::within(
                format!("{at}: kill -9 seen down by every other node"),
                faults.and_then(|f| f.kill.max()),
                KILL_FLOOR,
            ),
            faults.is_some(),
        ),
        ran(
            Check::within(
                format!("{at}: kill -9 of the seed seen down by every other node"),
                faults.and_then(|f| f.kill_seed.max()),
                KILL_FLOOR,
            ),
            faults.is_some(),
        ),
        ran(
            Check::none(
                format!("{at}: failed idempotent calls over the faults"),
                faults.map_or(0, |f| f.calls.failed as u64),
            ),
            faults.is_some(),
        ),
        Check::new(
            format!("idle CPU per node, {FLOOR_SIZE} nodes / {GROWTH_FROM} nodes (means)"),
            growth,
            Bound::AtMost(GROWTH_FLOOR),
        ),
    ]
}

/// The section's notes: set-up and definitions.
fn notes(options: &RunOptions, window: Duration, otp: &Result<Otp, String>) -> Vec<String> {
    let defaults = NodeConfig::loopback();
    let mut notes = vec![
        format!(
            "each node a process of its own: {}, hosting `echo`, {} tokio worker(s), the \
             runtime's defaults (heartbeats every {} ms, a peer down after {} ms of silence), \
             seeded from the first node (member-000); the nodes run {}",
            if options.testnode {
                "switchboard-testnode"
            } else {
                "the bench re-executed as `serve-cluster-node`"
            },
            options.server_workers,
            defaults.heartbeat_interval_ms,
            defaults.heartbeat_timeout_ms,
            options.placement.describe_shared(),
        ),
        "times come from the nodes' own JSON logs (`node started`, `node_up`, `node_down` with \
         its peer and reason), on the wall clock every process shares; a fault's instant is the \
         bench's wall clock just before the signal. Full mesh: every node's last word on every \
         other is `up`; the bench's own node is hidden and connects only for the faults"
            .into(),
        format!(
            "at rest: {} s after the mesh formed, CPU (utime + stime of /proc/<pid>/stat, all \
             threads) over {} s as a share of one core; RSS (VmRSS) and established TCP \
             connections (socket inodes of /proc/<pid>/fd in /proc/net/tcp) at its end",
            seconds(SETTLE),
            seconds(window),
        ),
        format!(
            "faults, under an open loop of {} idempotent `echo` calls/s from the bench's node \
             (linked to every node; payload {PAYLOAD_BYTES} B): {} s of load, kill -9 of the last \
             node, {} s, kill -9 of the seed, {} s, SIGSTOP of the middle node until every other \
             node said it down, SIGCONT until it is back in a full mesh (both ways, fresh), {} s; \
             each fault waits at most {} s for every observer",
            thousands(RATE.into()),
            seconds(STEADY),
            seconds(STEADY),
            seconds(STEADY),
            seconds(STEADY),
            seconds(DETECT_DEADLINE),
        ),
    ];
    notes.push(match otp {
        Ok(otp) => format!(
            "Erlang: OTP {} (erlang-base), `erl -sname` nodes with `+S 1:1`, each seeded from \
             the first (net_kernel:connect_node, then -connect_all makes the mesh), placed as \
             the Switchboard nodes; at rest at `net_ticktime` 60 (the default: a hang found in \
             45–75 s), then again after net_kernel:set_net_ticktime(1, 5) on every node (0.75–1.25 \
             s; formed at 1, 64 nodes starting at once on 2 CPUs never became a full mesh); \
             beam.smp's CPU only (epmd, shared by all, is not counted)",
            otp.release
        ),
        Err(why) => why.clone(),
    });
    notes
}

/// Per size, what the observers gave as reasons, and the first failed call if any.
fn fault_notes(sizes: &[Size]) -> Vec<String> {
    let mut notes = Vec::new();
    for size in sizes {
        if let Some(why) = size.erlang.as_ref().and_then(|c| c.tuned_missing.as_ref()) {
            notes.push(format!("{} Erlang nodes at net_ticktime 1: {why}", size.n));
        }
        let Some(f) = &size.switchboard.faults else {
            if let Some(why) = &size.switchboard.unformed {
                notes.push(format!("{} nodes: {why}; nothing else measured", size.n));
            }
            continue;
        };
        notes.push(format!(
            "{} nodes, reasons given: kill -9: {}; kill -9 of the seed: {}; SIGSTOP: {}",
            size.n,
            f.kill.describe(),
            f.kill_seed.describe(),
            f.hang.describe()
        ));
        if let Some(why) = &f.rejoin_missing {
            notes.push(format!("{} nodes, after SIGCONT: {why}", size.n));
        }
        if let Some(error) = &f.calls.first_error {
            notes.push(format!("{} nodes: first failed call: {error}", size.n));
        }
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn detection_is_over_every_observer() {
        let fault = UNIX_EPOCH + Duration::from_secs(100);
        let down = |observer: &str, after: u64, reason: &str| Down {
            observer: observer.into(),
            peer: "v".into(),
            at: fault + ms(after),
            reason: reason.into(),
        };
        let (a, b, c) = (
            down("a", 850, "heartbeat_timeout"),
            down("b", 900, "heartbeat_timeout"),
            down("c", 40, "noconnection"),
        );
        let all = Detection::of(fault, &[Some(&a), Some(&b), Some(&c)]);
        assert_eq!(all.max(), Some(ms(900)));
        assert_eq!(all.p50(), Some(ms(850)));
        assert_eq!(all.describe(), "heartbeat_timeout ×2, noconnection ×1");
        let partial = Detection::of(fault, &[Some(&a), None, Some(&c)]);
        assert_eq!(partial.max(), None, "one observer never saw it");
        assert_eq!(partial.p50(), Some(ms(850)));
        assert!(partial.describe().ends_with("not seen ×1"));
        assert_eq!(Detection::of(fault, &[]).max(), None);
    }

    #[test]
    fn calls_count_failures_and_time_successes() {
        let base = Instant::now();
        let call = |issued: u64, took: u64, ok: bool| Timed {
            issued: base + ms(issued),
            completed: base + ms(issued + took),
            outcome: if ok {
                Ok(())
            } else {
                Err("timed out".to_owned())
            },
        };
        let mut calls: Vec<Timed<()>> = (0..99).map(|i| call(i, 1, true)).collect();
        calls.push(call(100, 900, true));
        calls.push(call(101, 5000, false));
        let summary = Calls::of(&calls);
        assert_eq!((summary.issued, summary.failed), (101, 1));
        assert_eq!(summary.first_error.as_deref(), Some("timed out"));
        assert_eq!(summary.p50, Some(ms(1)));
        assert_eq!(summary.p99, Some(ms(1)));
        assert_eq!(summary.max, Some(ms(900)));
    }

    fn size(n: usize, cpu: f64, mesh: u64) -> Size {
        Size {
            n,
            switchboard: Switchboard {
                mesh: Some(ms(mesh)),
                unformed: None,
                idle: Some(Idle {
                    cpu: vec![cpu, cpu],
                    rss: vec![10 << 20, 12 << 20],
                    tcp: vec![6, 6],
                }),
                faults: None,
            },
            erlang: None,
        }
    }

    #[test]
    fn floors_hold_at_64_or_at_the_largest_size_measured() {
        let quick = checks(&[size(5, 0.2, 100), size(16, 0.3, 400)]);
        assert!(quick[0].what.starts_with("@16 nodes (64 not measured)"));
        assert_eq!(quick[0].verdict(), "PASS");
        assert_eq!(quick[1].verdict(), "PASS");
        assert_eq!(quick[2].verdict(), "n/a", "no faults were measured");
        assert_eq!(quick[6].verdict(), "n/a", "64 not measured");
        let full = checks(&[size(16, 0.3, 400), size(64, 1.0, 3500)]);
        assert!(full[0].what.starts_with("@64 nodes:"));
        assert_eq!(full[0].verdict(), "MISS");
        assert_eq!(full[1].verdict(), "PASS", "1% is within the floor");
        assert_eq!(full[6].verdict(), "MISS", "3.33x growth");
        let grids = grids(&[size(16, 0.3, 400)]);
        assert_eq!(grids[0].rows[0][2], "0.30%");
        assert_eq!(grids[0].rows[0][7], "6.0");
        assert!(grids[1].rows.is_empty());
        assert!(grids[2].rows.is_empty());
    }
}
