//! `switchboard up`: a whole cluster on this machine, supervised the Erlang way.
//!
//! Each node is its own OS process running its own binary (found next to this one), talking to
//! the others over the real inter-node protocol; the database is SQLite in the data directory.
//! With `--single`, one process (`switchboard-node`) hosts all five applications instead: the
//! smallest deployment, with the same code, API and commands.
//! Every node keeps one inter-node address for the life of the cluster, chosen before anything
//! starts, and every node has every other as a seed: a node restarted after a crash (the first
//! one too) listens where its peers already dial and dials them all itself, so it is back in the
//! mesh at once. The addresses are written to `<data dir>/seeds`, where the other commands find
//! the cluster through any live member.
//!
//! A node that exits unexpectedly is restarted at once, then with a growing pause if it keeps
//! failing (at most [`MAX_RESTARTS`] times a minute, after which the whole cluster stops, as an
//! Erlang supervisor gives up). Every node's log is printed with its name as a prefix. Ctrl-C (or
//! SIGTERM) stops every node gracefully.

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};

use crate::secrets;

/// Restarts allowed per node per minute before the cluster gives up.
const MAX_RESTARTS: usize = 5;
/// The longest pause before restarting a node that keeps failing.
const MAX_RESTART_PAUSE: Duration = Duration::from_secs(2);
/// How long nodes get to stop gracefully before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// The services in start order: the database first, as every other service needs it.
const SERVICES: [&str; 5] = ["database", "log", "reporting", "analytics", "http"];
/// The one node of `up --single`, hosting every application (`switchboard-node`).
const SINGLE: &str = "node";
/// The file in the data directory that lists every node's inter-node address while `up` runs.
pub(crate) const SEEDS_FILE: &str = "seeds";

/// Options of `switchboard up`.
#[derive(Debug, Args)]
pub(crate) struct UpArgs {
    /// Where the HTTP API listens; with `--scale http=N` replica k listens on the k-th port from
    /// this one (8080, 8081, ...). Port 0 gives each replica a free port of its own.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// Where the cluster keeps its database, cookie and node data.
    #[arg(long, default_value_os_t = crate::default_data_dir())]
    data_dir: PathBuf,
    /// Replicas per service, e.g. `http=2,database=2,analytics=2` (default one each).
    #[arg(long, value_parser = parse_scale, default_value = "", conflicts_with = "single")]
    scale: Scale,
    /// Runs one process hosting all five applications (`switchboard-node --apps all`) instead
    /// of one process per service.
    #[arg(long)]
    single: bool,
}

/// Replica counts.
#[derive(Debug, Clone, Default)]
struct Scale(Vec<(String, usize)>);

impl Scale {
    fn of(&self, service: &str) -> usize {
        self.0
            .iter()
            .find(|(s, _)| s == service)
            .map_or(1, |(_, n)| *n)
    }
}

fn parse_scale(text: &str) -> Result<Scale, String> {
    let mut scale = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (service, count) = part
            .split_once('=')
            .ok_or_else(|| format!("expected service=count, got {part}"))?;
        if !SERVICES.contains(&service) {
            return Err(format!(
                "unknown service {service} (one of {})",
                SERVICES.join(", ")
            ));
        }
        let count: usize = count
            .parse()
            .map_err(|_| format!("{count} is not a replica count"))?;
        if !(1..=16).contains(&count) {
            return Err(format!("{service}={count}: between 1 and 16 replicas"));
        }
        scale.push((service.to_owned(), count));
    }
    Ok(Scale(scale))
}

/// Everything a node process needs to (re)start.
#[derive(Debug, Clone)]
struct NodeSpec {
    name: String,
    binary: PathBuf,
    env: Vec<(String, String)>,
}

/// One node of the cluster as planned before anything starts.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Planned {
    service: &'static str,
    name: String,
    /// Its inter-node address, kept across restarts.
    address: SocketAddr,
    /// Its HTTP API address (http nodes only).
    api: Option<SocketAddr>,
}

/// The nodes to run: names, inter-node addresses for life, and each http replica's API address.
///
/// Every address is checked free here, so a port that is taken is one clear error before any
/// node starts, never a node that crash-loops.
fn plan(scale: &Scale, http: SocketAddr, single: bool) -> Result<Vec<Planned>> {
    let mut held = Vec::new();
    let mut planned = Vec::new();
    let services: &[&'static str] = if single { &[SINGLE] } else { &SERVICES };
    for &service in services {
        for replica in 1..=scale.of(service) {
            let name = if replica == 1 {
                format!("{service}@localhost")
            } else {
                format!("{service}-{replica}@localhost")
            };
            // Bound and held until every port is chosen, so no two nodes get the same one.
            let listener = TcpListener::bind("127.0.0.1:0")
                .context("finding a free inter-node port on 127.0.0.1")?;
            let address = listener.local_addr()?;
            held.push(listener);
            let api = if service == "http" || service == SINGLE {
                let wanted = api_address(http, replica)?;
                let listener = TcpListener::bind(wanted).map_err(|error| {
                    anyhow::anyhow!(
                        "cannot listen on {wanted} for {name}: {error}; is another `switchboard up` \
                         running? Choose other ports with --http ADDRESS:PORT"
                    )
                })?;
                let bound = listener.local_addr()?;
                held.push(listener);
                Some(bound)
            } else {
                None
            };
            planned.push(Planned {
                service,
                name,
                address,
                api,
            });
        }
    }
    Ok(planned)
}

/// The API address of http replica `replica` (from 1): the next ports up from `--http`, or a free
/// port of its own when `--http` names port 0.
fn api_address(http: SocketAddr, replica: usize) -> Result<SocketAddr> {
    if http.port() == 0 {
        return Ok(http);
    }
    let port = usize::from(http.port()) + replica - 1;
    let port = u16::try_from(port).context("--http: the replicas' ports run past 65535")?;
    Ok(SocketAddr::new(http.ip(), port))
}

#[allow(clippy::print_stdout, reason = "a command's output is its job")]
pub(crate) async fn up(args: UpArgs) -> Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let data_dir = args.data_dir.canonicalize()?;
    let cookie_file = data_dir.join("cookie");
    secrets::load_or_create(&cookie_file)?;
    let admin_token = secrets::load_or_create(&data_dir.join("admin-token"))?;
    let here = std::env::current_exe()?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    for service in SERVICES.iter().chain([&SINGLE]) {
        let binary = here.join(format!("switchboard-{service}"));
        if !binary.exists() {
            bail!(
                "{} not found next to this binary; build the whole workspace first: cargo build --release",
                binary.display()
            );
        }
    }
    let planned = plan(&args.scale, args.http, args.single)?;
    let addresses: Vec<String> = planned.iter().map(|p| p.address.to_string()).collect();
    let seeds_file = data_dir.join(SEEDS_FILE);
    std::fs::write(&seeds_file, addresses.join("\n") + "\n")
        .with_context(|| format!("writing {}", seeds_file.display()))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (gave_up_tx, mut gave_up_rx) = mpsc::channel(64);
    let mut tasks = Vec::new();
    for node in &planned {
        let seeds: Vec<&str> = addresses
            .iter()
            .map(String::as_str)
            .filter(|a| *a != node.address.to_string())
            .collect();
        let mut env = vec![
            ("SWITCHBOARD_NODE_NAME".into(), node.name.clone()),
            (
                "SWITCHBOARD_COOKIE_FILE".into(),
                cookie_file.display().to_string(),
            ),
            ("SWITCHBOARD_LISTEN".into(), node.address.to_string()),
            ("SWITCHBOARD_LOG_FORMAT".into(), "json".into()),
            (
                "SWITCHBOARD_DATA_DIR".into(),
                data_dir
                    .join("nodes")
                    .join(&node.name)
                    .display()
                    .to_string(),
            ),
            ("SWITCHBOARD_SEEDS".into(), seeds.join(",")),
        ];
        if matches!(node.service, "database" | SINGLE) {
            env.push((
                "DATABASE_URL".into(),
                format!(
                    "sqlite://{}?mode=rwc",
                    data_dir.join("switchboard.db").display()
                ),
            ));
        }
        if matches!(node.service, "http" | SINGLE) {
            let api = node.api.map(|a| a.to_string()).unwrap_or_default();
            env.push(("SWITCHBOARD_HTTP_LISTEN".into(), api));
            env.push(("SWITCHBOARD_ADMIN_TOKEN".into(), admin_token.clone()));
        }
        if node.service == SINGLE {
            env.push(("SWITCHBOARD_APPS".into(), "all".into()));
        }
        let spec = NodeSpec {
            name: node.name.clone(),
            binary: here.join(format!("switchboard-{}", node.service)),
            env,
        };
        tasks.push(tokio::spawn(supervise(
            spec,
            gave_up_tx.clone(),
            stop_rx.clone(),
        )));
    }
    let urls: Vec<String> = planned
        .iter()
        .filter_map(|p| p.api.map(|api| format!("http://{api}")))
        .collect();
    tokio::select! {
        ready = wait_until_ready(&urls) => {
            ready?;
            println!();
            println!("  Switchboard is up:");
            for (node, url) in planned.iter().filter(|p| p.api.is_some()).zip(&urls) {
                println!("    {url}  ({})", node.name);
            }
            println!("  Admin token: {admin_token}  (also in {})", data_dir.join("admin-token").display());
            println!("  Try: curl -s {}/readyz", urls[0]);
            println!("  Ctrl-C stops the cluster.");
            println!();
        }
        name = gave_up(&mut gave_up_rx) => {
            let _ = stop_tx.send(true);
            join(tasks).await;
            let _ = std::fs::remove_file(&seeds_file);
            bail!("{name} keeps failing; the cluster was stopped");
        }
    }
    let reason = tokio::select! {
        _ = switchboard::signal::terminated() => None,
        name = gave_up(&mut gave_up_rx) => Some(name),
    };
    println!("stopping every node...");
    let _ = stop_tx.send(true);
    join(tasks).await;
    let _ = std::fs::remove_file(&seeds_file);
    match reason {
        None => Ok(()),
        Some(name) => bail!("{name} keeps failing; the cluster was stopped"),
    }
}

/// The name of the first node whose supervisor gives up.
async fn gave_up(reports: &mut mpsc::Receiver<String>) -> String {
    match reports.recv().await {
        Some(name) => name,
        None => std::future::pending().await,
    }
}

async fn join(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for task in tasks {
        let _ = task.await;
    }
}

/// Waits until every http replica's `/readyz` answers 200.
async fn wait_until_ready(urls: &[String]) -> Result<()> {
    let client = reqwest::Client::new();
    for url in urls {
        let ready = switchboard::eventually(Duration::from_secs(120), || async {
            client
                .get(format!("{url}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        if !ready {
            bail!("{url}/readyz did not answer 200 within 120 s");
        }
    }
    Ok(())
}

/// The pause before restart number `recent` (counted within the last minute): none for the
/// first, as an Erlang supervisor restarts at once, then doubling from 100 ms for a node that
/// keeps failing.
fn restart_pause(recent: usize) -> Duration {
    match recent {
        0 | 1 => Duration::ZERO,
        n => (Duration::from_millis(100) * (1 << (n - 2).min(8))).min(MAX_RESTART_PAUSE),
    }
}

/// Runs one node, restarting it when it exits unexpectedly, until the cluster stops. Sends the
/// node's name on `gave_up` when it keeps failing.
async fn supervise(spec: NodeSpec, gave_up: mpsc::Sender<String>, mut stop: watch::Receiver<bool>) {
    let mut restarts: VecDeque<Instant> = VecDeque::new();
    loop {
        let mut child = match start(&spec) {
            Ok(child) => child,
            Err(error) => {
                print_line(&spec.name, &format!("cannot start: {error:#}"));
                let _ = gave_up.send(spec.name.clone()).await;
                return;
            }
        };
        tokio::select! {
            status = child.wait() => {
                let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                if *stop.borrow() {
                    return;
                }
                restarts.push_back(Instant::now());
                while restarts.front().is_some_and(|t| t.elapsed() > Duration::from_secs(60)) {
                    restarts.pop_front();
                }
                if restarts.len() > MAX_RESTARTS {
                    print_line(&spec.name, &format!("exited ({status}); too many restarts, giving up"));
                    let _ = gave_up.send(spec.name.clone()).await;
                    return;
                }
                let pause = restart_pause(restarts.len());
                print_line(&spec.name, &format!("exited ({status}); restarting in {}", humantime::format_duration(pause)));
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.changed() => return,
                }
            }
            _ = stop.changed() => {
                stop_gracefully(&spec.name, &mut child).await;
                return;
            }
        }
    }
}

fn start(spec: &NodeSpec) -> Result<Child> {
    let mut child = Command::new(&spec.binary)
        .envs(spec.env.iter().cloned())
        .env_remove("SWITCHBOARD_COOKIE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawning {}", spec.binary.display()))?;
    let name: Arc<str> = spec.name.as_str().into();
    if let Some(stdout) = child.stdout.take() {
        let name = name.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                print_line(&name, &render(&line));
            }
        });
    }
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                print_line(&name, &line);
            }
        });
    }
    Ok(child)
}

async fn stop_gracefully(name: &str, child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    if tokio::time::timeout(STOP_GRACE, child.wait())
        .await
        .is_err()
    {
        print_line(name, "did not stop in time; killing it");
        let _ = child.kill().await;
    }
}

/// A JSON log line as one readable line: level, message, then the other fields.
fn render(line: &str) -> String {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
        return line.to_owned();
    };
    let level = value["level"].as_str().unwrap_or("");
    let fields = value["fields"].as_object();
    let message = fields
        .and_then(|f| f.get("message"))
        .and_then(|m| m.as_str())
        .unwrap_or("");
    let rest: Vec<String> = fields
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.as_str() != "message")
        .map(|(k, v)| match v.as_str() {
            Some(s) => format!("{k}={s}"),
            None => format!("{k}={v}"),
        })
        .collect();
    format!("{level:<5} {message} {}", rest.join(" "))
}

#[allow(clippy::print_stdout, reason = "printing the nodes' logs is the point")]
fn print_line(name: &str, line: &str) {
    println!("{name:>22} | {line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_parses_and_refuses_nonsense() {
        let scale = parse_scale("database=2, analytics=3").unwrap();
        assert_eq!(
            (
                scale.of("database"),
                scale.of("analytics"),
                scale.of("http")
            ),
            (2, 3, 1)
        );
        assert!(parse_scale("nosuch=2").is_err());
        assert!(parse_scale("database=0").is_err());
        assert!(parse_scale("database").is_err());
        assert_eq!(parse_scale("").unwrap().of("log"), 1);
    }

    #[test]
    fn renders_a_json_log_line_on_one_line() {
        let line = r#"{"timestamp":"t","level":"INFO","fields":{"message":"node started","node":"database@localhost","address":"127.0.0.1:4000","incarnation":7},"target":"switchboard::node"}"#;
        assert!(render(line).starts_with("INFO  node started"));
        assert_eq!(render("plain text"), "plain text");
    }

    #[test]
    fn every_node_gets_its_own_ports_and_a_taken_api_port_is_refused() {
        let scale = parse_scale("http=3,database=2").unwrap();
        let planned = plan(&scale, "127.0.0.1:0".parse().unwrap(), false).unwrap();
        assert_eq!(planned.len(), 8);
        let mut ports: Vec<u16> = planned.iter().map(|p| p.address.port()).collect();
        ports.extend(planned.iter().filter_map(|p| p.api.map(|a| a.port())));
        let count = ports.len();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), count, "every port is different: {planned:?}");
        assert_eq!(planned.iter().filter(|p| p.api.is_some()).count(), 3);
        assert_eq!(planned[0].name, "database@localhost");
        assert_eq!(planned[1].name, "database-2@localhost");

        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let error = plan(&Scale::default(), taken.local_addr().unwrap(), false).unwrap_err();
        assert!(error.to_string().contains("cannot listen on"), "{error:#}");
    }

    #[test]
    fn replicas_take_the_next_ports_up() {
        let http: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(api_address(http, 1).unwrap().port(), 8080);
        assert_eq!(api_address(http, 3).unwrap().port(), 8082);
        assert!(api_address("127.0.0.1:65535".parse().unwrap(), 2).is_err());
    }

    #[test]
    fn a_crashing_node_is_restarted_at_once_then_with_growing_pauses() {
        assert_eq!(restart_pause(1), Duration::ZERO);
        assert_eq!(restart_pause(2), Duration::from_millis(100));
        assert_eq!(restart_pause(3), Duration::from_millis(200));
        assert_eq!(restart_pause(20), MAX_RESTART_PAUSE);
    }
}
