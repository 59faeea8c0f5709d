//! Command-line parsing for the bench: the public subcommands (one per scenario family, plus
//! `all`) and the hidden `serve-*` subcommands the bench re-executes itself with to run a
//! server in a process of its own. Hand-rolled because the surface is a handful of flags.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::placement::Placement;

/// Shown by `help`, `--help` and on no arguments.
pub(crate) const USAGE: &str = "\
switchboard-bench: the Switchboard runtime against plain tonic and JSON/HTTP, across OS processes

USAGE:
    switchboard-bench <SCENARIOS> [OPTIONS]

SCENARIOS:
    runtime     remote call, cast and local call vs tonic unary, tonic stream and JSON/HTTP
    failover    kill -9 and SIGSTOP of one of two providers under 1,000 idempotent calls/s
    hol         small calls beside 1 MiB transfers on the same link (head-of-line blocking)
    erlang      round trips at 1 and 64 in flight and one-way messages vs two Erlang nodes
                (skipped, saying so, when `erl` is not installed: apt-get install erlang-base)
    footprint   idle memory (VmRSS, VmHWM) of each service binary, run as one cluster; needs
                `cargo build --release --workspace` (skipped, saying so, without them)
    chat        chat posts end to end (http + database node binaries, PostgreSQL) vs raw
                single-row INSERTs at 64 and 256 clients, and SSE delivery to 1,000 subscribers;
                needs `cargo build --release --workspace` and PostgreSQL (SWITCHBOARD_BENCH_POSTGRES,
                or .ci/postgres.sh starts one); skipped, saying so, without either
    fanout      small calls alone and beside one-way casts at full rate to the server's group
                (fan-out to the log and analytics groups): delivered msgs/s, call p99, peak RSS
    cluster     N echo nodes (N = 5, 16, 32, 64, 128) in one cluster: time to a full mesh, idle
                CPU, RSS and TCP connections per node, kill -9 and SIGSTOP seen down by every
                node under 1,000 idempotent calls/s, and idle Erlang clusters of the same sizes
    codec       the hand-written batch encoder and decoder vs prost on batches of 16 calls and
                of 16 replies, in this process
    all         every scenario family implemented so far
    chaos       a docker compose cluster (or, without Docker, processes in network namespaces)
                under keyed posts, SSE clients and seeded faults, its history checked afterwards
                (`switchboard-bench chaos --help`; not part of `all`)

OPTIONS:
    --seconds N             measure each point for N seconds (default 3)
    --quick                 measure each point for 1 second (chat: 200 SSE subscribers)
    --markdown PATH         also write the report as Markdown to PATH
    --client-workers N      tokio worker threads of the bench (client) process (default 1)
    --server-workers N      tokio worker threads of each server process (default 1)
    --only TEXT             measure only the points whose 'scenario @in-flight' contains TEXT
                            (e.g. 'remote call @64'), for profiling one point; checks whose
                            points were not measured read n/a
    --no-pin                leave CPU placement to the kernel (by default the bench pins itself
                            and its servers to disjoint CPUs with taskset)
    --testnode              serve Switchboard from the switchboard-testnode binary next to the
                            bench executable instead of re-executing the bench itself
    --nodes N,N,...         cluster: the cluster sizes to measure (default 5,16,32,64,128;
                            --quick: 5,16)
    --svg PATH              cluster: write the scaling chart there (default: cluster-scaling.svg
                            beside the --markdown report; without either, no chart)
";

/// The length each point's slices aim at: short enough that every point sees the machine in
/// the same states, long enough that a slice's start and end cost nothing measurable.
const SLICE_SECONDS: f64 = 0.5;

/// A family of scenarios: one module, one section of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    /// The runtime's call, cast and local-call costs against the transport baselines.
    Runtime,
    /// A provider killed or hung under load: how long until calls are served elsewhere.
    Failover,
    /// Small calls beside 1 MiB transfers on the same link.
    Hol,
    /// Round trips and one-way messages against two Erlang nodes doing the same.
    Erlang,
    /// Idle memory of each service binary.
    Footprint,
    /// The chat end to end against raw PostgreSQL inserts, and live delivery over SSE.
    Chat,
    /// Small calls beside one-way casts to a group at full rate.
    Fanout,
    /// The hand-written batch codec against prost on the same batches.
    Codec,
    /// The cost of membership and failure detection as a cluster grows from 5 to 128 nodes.
    Cluster,
}

impl Family {
    /// Every family, in the order `all` runs them.
    pub(crate) const ALL: [Family; 9] = [
        Family::Runtime,
        Family::Failover,
        Family::Hol,
        Family::Erlang,
        Family::Footprint,
        Family::Chat,
        Family::Fanout,
        Family::Cluster,
        Family::Codec,
    ];
}

/// Which server a hidden `serve-*` subcommand runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServerKind {
    /// A Switchboard node hosting `echo` and joining group `echo`, as `switchboard-testnode`.
    Node,
    /// The tonic echo service (unary and bidirectional stream).
    Tonic,
    /// The axum JSON echo endpoint.
    JsonHttp,
    /// A member of the cluster family's clusters: an `echo` node seeded from
    /// `SWITCHBOARD_SEEDS`, logging its membership decisions as JSON lines on stdout.
    ClusterNode,
}

impl ServerKind {
    /// The hidden subcommand that runs this server.
    pub(crate) fn subcommand(self) -> &'static str {
        match self {
            ServerKind::Node => "serve-node",
            ServerKind::Tonic => "serve-tonic",
            ServerKind::JsonHttp => "serve-http",
            ServerKind::ClusterNode => "serve-cluster-node",
        }
    }
}

/// Settings shared by every scenario of a run.
#[derive(Debug, Clone)]
pub(crate) struct RunOptions {
    /// How long each point is measured, after its warm-up.
    pub(crate) measure: Duration,
    /// `--quick`: families that size their load (not only their time) scale it down too.
    pub(crate) quick: bool,
    /// Load applied before measuring each point, so connections, pools and caches are warm.
    pub(crate) warmup: Duration,
    /// How many slices each point is measured in. A family measures every point's first slice,
    /// then every point's second, and so on, so that whatever else the machine does during the
    /// run (another build, a CPU's idle state) affects all points alike.
    pub(crate) rounds: usize,
    pub(crate) markdown: Option<PathBuf>,
    pub(crate) client_workers: usize,
    pub(crate) server_workers: usize,
    /// Serve Switchboard from `switchboard-testnode` rather than `serve-node`.
    pub(crate) testnode: bool,
    /// Whether to pin client and servers to disjoint CPUs (`--no-pin` turns it off).
    pub(crate) pin: bool,
    /// Where client and servers run; decided in `main` before the runtime starts.
    pub(crate) placement: Placement,
    /// CPUs this process could use when it started, before any pinning.
    pub(crate) cpus: usize,
    /// `--only`: measure only the points whose `scenario @in-flight` contains this.
    pub(crate) only: Option<String>,
    /// `--nodes`: the cluster sizes the cluster family measures, if not its defaults.
    pub(crate) nodes: Option<Vec<usize>>,
    /// `--svg`: where the cluster family writes its chart, if not beside the Markdown report.
    pub(crate) svg: Option<PathBuf>,
    /// The command line as typed, for the Markdown report.
    pub(crate) command_line: String,
}

impl RunOptions {
    /// Whether the point `scenario` at `in_flight` is to be measured (see `--only`).
    pub(crate) fn selects(&self, scenario: &str, in_flight: &str) -> bool {
        self.only.as_deref().is_none_or(|only| {
            format!("{scenario} @{in_flight}")
                .to_lowercase()
                .contains(&only.to_lowercase())
        })
    }
}

/// What the process was asked to do.
#[derive(Debug)]
pub(crate) enum Command {
    Help,
    Run {
        families: Vec<Family>,
        options: Box<RunOptions>,
    },
    Serve {
        kind: ServerKind,
        workers: usize,
    },
    /// `chaos`: a cluster under load and faults, its history checked.
    Chaos(Box<crate::chaos::ChaosOptions>),
}

/// Parses the arguments after the program name.
pub(crate) fn parse(args: &[String]) -> anyhow::Result<Command> {
    let Some((first, rest)) = args.split_first() else {
        return Ok(Command::Help);
    };
    let families = match first.as_str() {
        "help" | "--help" | "-h" => return Ok(Command::Help),
        "runtime" => vec![Family::Runtime],
        "failover" => vec![Family::Failover],
        "hol" => vec![Family::Hol],
        "erlang" => vec![Family::Erlang],
        "footprint" => vec![Family::Footprint],
        "chat" => vec![Family::Chat],
        "fanout" => vec![Family::Fanout],
        "cluster" => vec![Family::Cluster],
        "codec" => vec![Family::Codec],
        "chaos" if rest.iter().any(|a| a == "--help" || a == "-h") => {
            crate::table::write_stdout(crate::chaos::USAGE)?;
            std::process::exit(0)
        }
        "chaos" => return Ok(Command::Chaos(Box::new(crate::chaos::parse(rest)?))),
        "all" => Family::ALL.to_vec(),
        "serve-node" => return serve(ServerKind::Node, rest),
        "serve-tonic" => return serve(ServerKind::Tonic, rest),
        "serve-http" => return serve(ServerKind::JsonHttp, rest),
        "serve-cluster-node" => return serve(ServerKind::ClusterNode, rest),
        other => bail!("unknown scenario family {other:?}\n\n{USAGE}"),
    };
    let mut options = RunOptions {
        measure: Duration::from_secs(3),
        quick: false,
        warmup: Duration::ZERO,
        rounds: 1,
        markdown: None,
        client_workers: 1,
        server_workers: 1,
        testnode: false,
        pin: true,
        placement: Placement::Unpinned("not decided yet".into()),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        only: None,
        nodes: None,
        svg: None,
        command_line: command_line(args),
    };
    let mut rest = rest.iter();
    while let Some(flag) = rest.next() {
        let mut value = || {
            rest.next()
                .with_context(|| format!("{flag} needs a value"))
                .cloned()
        };
        match flag.as_str() {
            "--quick" => {
                options.measure = Duration::from_secs(1);
                options.quick = true;
            }
            "--seconds" => {
                let seconds: f64 = value()?.parse().context("--seconds takes a number")?;
                if !(seconds > 0.0 && seconds.is_finite()) {
                    bail!("--seconds must be positive");
                }
                options.measure = Duration::from_secs_f64(seconds);
            }
            "--markdown" => options.markdown = Some(PathBuf::from(value()?)),
            "--client-workers" => options.client_workers = workers(&value()?)?,
            "--server-workers" => options.server_workers = workers(&value()?)?,
            "--testnode" => options.testnode = true,
            "--no-pin" => options.pin = false,
            "--only" => options.only = Some(value()?),
            "--nodes" => options.nodes = Some(node_counts(&value()?)?),
            "--svg" => options.svg = Some(PathBuf::from(value()?)),
            other => bail!("unknown option {other:?}\n\n{USAGE}"),
        }
    }
    // A quarter of the measuring time, at most a second, warms each point up.
    options.warmup = (options.measure / 4).min(Duration::from_secs(1));
    options.rounds = ((options.measure.as_secs_f64() / SLICE_SECONDS).round() as usize).max(1);
    Ok(Command::Run {
        families,
        options: Box::new(options),
    })
}

fn serve(kind: ServerKind, args: &[String]) -> anyhow::Result<Command> {
    match args {
        [flag, n] if flag == "--workers" => Ok(Command::Serve {
            kind,
            workers: workers(n)?,
        }),
        _ => bail!("usage: switchboard-bench {} --workers N", kind.subcommand()),
    }
}

fn workers(value: &str) -> anyhow::Result<usize> {
    match value.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => bail!("a worker count is a positive integer, not {value:?}"),
    }
}

/// `--nodes 5,16`: cluster sizes, each at least 4: the family kills two nodes and hangs a third,
/// and at least one must be left to see it.
fn node_counts(value: &str) -> anyhow::Result<Vec<usize>> {
    let counts = value
        .split(',')
        .map(|n| match n.trim().parse::<usize>() {
            Ok(n) if n >= 4 => Ok(n),
            _ => bail!("--nodes takes cluster sizes of at least 4, like 5,16, not {n:?}"),
        })
        .collect::<anyhow::Result<Vec<usize>>>()?;
    if counts.is_empty() {
        bail!("--nodes needs at least one cluster size");
    }
    Ok(counts)
}

/// `switchboard-bench <args>`, as it would be typed again.
fn command_line(args: &[String]) -> String {
    std::iter::once("switchboard-bench")
        .chain(args.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn all_runs_every_family_with_quick_timing() {
        let Command::Run { families, options } = parse(&args("all --quick")).unwrap() else {
            panic!("expected a run");
        };
        assert_eq!(families, Family::ALL.to_vec());
        assert_eq!(options.measure, Duration::from_secs(1));
        assert!(options.quick);
        assert_eq!(options.warmup, Duration::from_millis(250));
        assert_eq!(options.rounds, 2);
        assert_eq!(options.command_line, "switchboard-bench all --quick");
    }

    #[test]
    fn seconds_markdown_and_workers() {
        let Command::Run { options, .. } = parse(&args(
            "runtime --seconds 5 --markdown out.md --client-workers 2 --server-workers 3",
        ))
        .unwrap() else {
            panic!("expected a run");
        };
        assert_eq!(options.measure, Duration::from_secs(5));
        assert_eq!(options.warmup, Duration::from_secs(1));
        assert_eq!(options.rounds, 10);
        assert_eq!(options.markdown, Some(PathBuf::from("out.md")));
        assert_eq!((options.client_workers, options.server_workers), (2, 3));
        assert!(options.pin);
        let Command::Run { options, .. } = parse(&args("all --no-pin")).unwrap() else {
            panic!("expected a run");
        };
        assert!(!options.pin);
        assert!(options.selects("Switchboard remote call", "64"));
        let Command::Run { options, .. } = parse(&args("all --only remote")).unwrap() else {
            panic!("expected a run");
        };
        assert!(options.selects("Switchboard remote call", "64"));
        assert!(!options.selects("tonic unary echo", "64"));
    }

    #[test]
    fn hidden_servers_and_errors() {
        assert!(matches!(
            parse(&args("serve-tonic --workers 2")).unwrap(),
            Command::Serve {
                kind: ServerKind::Tonic,
                workers: 2
            }
        ));
        assert!(matches!(
            parse(&args("failover --quick")).unwrap(),
            Command::Run { families, .. } if families == [Family::Failover]
        ));
        assert!(matches!(
            parse(&args("hol")).unwrap(),
            Command::Run { families, .. } if families == [Family::Hol]
        ));
        assert!(matches!(
            parse(&args("chat --seconds 1")).unwrap(),
            Command::Run { families, options } if families == [Family::Chat] && !options.quick
        ));
        assert!(parse(&args("runtime --seconds 0")).is_err());
        assert!(parse(&args("runtime --bogus")).is_err());
        assert!(parse(&args("serve-node --workers 0")).is_err());
        assert!(parse(&args("nonsense")).is_err());
        for (name, family) in [
            ("erlang", Family::Erlang),
            ("footprint", Family::Footprint),
            ("fanout", Family::Fanout),
            ("cluster", Family::Cluster),
        ] {
            let Command::Run { families, .. } = parse(&args(name)).unwrap() else {
                panic!("expected a run");
            };
            assert_eq!(families, vec![family]);
            assert!(Family::ALL.contains(&family));
        }
    }

    #[test]
    fn cluster_sizes_and_chart_path() {
        let Command::Run { families, options } =
            parse(&args("cluster --nodes 5,16 --svg docs/c.svg")).unwrap()
        else {
            panic!("expected a run");
        };
        assert_eq!(families, vec![Family::Cluster]);
        assert_eq!(options.nodes, Some(vec![5, 16]));
        assert_eq!(options.svg, Some(PathBuf::from("docs/c.svg")));
        assert!(parse(&args("cluster --nodes 3")).is_err());
        assert!(parse(&args("cluster --nodes 5,x")).is_err());
        assert!(matches!(
            parse(&args("serve-cluster-node --workers 1")).unwrap(),
            Command::Serve {
                kind: ServerKind::ClusterNode,
                workers: 1
            }
        ));
    }
}
