//! `switchboard up`: a whole cluster on this machine, supervised the Erlang way.
//!
//! Each node is its own OS process running its own binary (found next to this one), talking to
//! the others over the real inter-node protocol; the database is SQLite in the data directory.
//! A node that exits unexpectedly is restarted (at most [`MAX_RESTARTS`] times a minute, after
//! which the whole cluster stops, as an Erlang supervisor gives up). Every node's log is printed
//! with its name as a prefix. Ctrl-C (or SIGTERM) stops every node gracefully.

use std::collections::VecDeque;
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
/// How long nodes get to stop gracefully before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// The services in start order: the database first, its address is everyone's seed.
const SERVICES: [&str; 5] = ["database", "log", "reporting", "analytics", "http"];

/// Options of `switchboard up`.
#[derive(Debug, Args)]
pub(crate) struct UpArgs {
    /// Where the HTTP API listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: String,
    /// Where the cluster keeps its database, cookie and node data.
    #[arg(long, default_value_os_t = crate::default_data_dir())]
    data_dir: PathBuf,
    /// Replicas per service, e.g. `database=2,analytics=2` (default one each).
    #[arg(long, value_parser = parse_scale, default_value = "")]
    scale: Scale,
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
    /// Reports its inter-node address when it starts (the first node: everyone's seed).
    announce: bool,
    binary: PathBuf,
    env: Vec<(String, String)>,
}

/// What the node tasks report to the supervisor.
#[derive(Debug)]
enum Report {
    /// A node printed its inter-node address.
    Listening { address: String },
    /// A node kept failing; the cluster must stop.
    GaveUp { name: String },
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
    let (stop_tx, stop_rx) = watch::channel(false);
    let (report_tx, mut report_rx) = mpsc::channel(64);
    let mut tasks = Vec::new();
    let mut seed: Option<String> = None;
    for service in SERVICES {
        let binary = here.join(format!("switchboard-{service}"));
        if !binary.exists() {
            bail!(
                "{} not found next to this binary; build the whole workspace first: cargo build --release",
                binary.display()
            );
        }
        for replica in 1..=args.scale.of(service) {
            let name = if replica == 1 {
                format!("{service}@localhost")
            } else {
                format!("{service}-{replica}@localhost")
            };
            let mut env = vec![
                ("SWITCHBOARD_NODE_NAME".into(), name.clone()),
                (
                    "SWITCHBOARD_COOKIE_FILE".into(),
                    cookie_file.display().to_string(),
                ),
                ("SWITCHBOARD_LISTEN".into(), "127.0.0.1:0".into()),
                ("SWITCHBOARD_LOG_FORMAT".into(), "json".into()),
                (
                    "SWITCHBOARD_DATA_DIR".into(),
                    data_dir.join("nodes").join(&name).display().to_string(),
                ),
                ("SWITCHBOARD_SEEDS".into(), seed.clone().unwrap_or_default()),
            ];
            match service {
                "database" => env.push((
                    "DATABASE_URL".into(),
                    format!(
                        "sqlite://{}?mode=rwc",
                        data_dir.join("switchboard.db").display()
                    ),
                )),
                "http" => {
                    env.push(("SWITCHBOARD_HTTP_LISTEN".into(), args.http.clone()));
                    env.push(("SWITCHBOARD_ADMIN_TOKEN".into(), admin_token.clone()));
                }
                _ => {}
            }
            let spec = NodeSpec {
                announce: seed.is_none(),
                name,
                binary: binary.clone(),
                env,
            };
            tasks.push(tokio::spawn(supervise(
                spec,
                report_tx.clone(),
                stop_rx.clone(),
            )));
            if seed.is_none() {
                // Every other node seeds from the first database node: wait for its address.
                seed = Some(wait_for_address(&mut report_rx).await?);
                std::fs::write(data_dir.join("seed"), seed.as_deref().unwrap_or_default())?;
            }
        }
    }
    let url = format!("http://{}", args.http);
    tokio::select! {
        ready = wait_until_ready(&url) => {
            ready?;
            println!();
            println!("  Switchboard is up: {url}");
            println!("  Admin token: {admin_token}  (also in {})", data_dir.join("admin-token").display());
            println!("  Try: curl -s {url}/readyz");
            println!("  Ctrl-C stops the cluster.");
            println!();
        }
        name = gave_up(&mut report_rx) => {
            let _ = stop_tx.send(true);
            join(tasks).await;
            let _ = std::fs::remove_file(data_dir.join("seed"));
            bail!("{name} keeps failing; the cluster was stopped");
        }
    }
    let reason = tokio::select! {
        _ = switchboard::signal::terminated() => None,
        name = gave_up(&mut report_rx) => Some(name),
    };
    println!("stopping every node...");
    let _ = stop_tx.send(true);
    join(tasks).await;
    let _ = std::fs::remove_file(data_dir.join("seed"));
    match reason {
        None => Ok(()),
        Some(name) => bail!("{name} keeps failing; the cluster was stopped"),
    }
}

/// The name of the first node whose supervisor gives up.
async fn gave_up(reports: &mut mpsc::Receiver<Report>) -> String {
    loop {
        match reports.recv().await {
            Some(Report::GaveUp { name }) => return name,
            Some(Report::Listening { .. }) => {}
            None => std::future::pending::<()>().await,
        }
    }
}

async fn join(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for task in tasks {
        let _ = task.await;
    }
}

async fn wait_for_address(reports: &mut mpsc::Receiver<Report>) -> Result<String> {
    let wait = async {
        match reports.recv().await {
            Some(Report::Listening { address }) => Ok(address),
            Some(Report::GaveUp { name }) => bail!("{name} could not start"),
            None => bail!("the first node stopped before it listened"),
        }
    };
    tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .context("the first database node did not start within 60 s")?
}

async fn wait_until_ready(url: &str) -> Result<()> {
    let client = reqwest::Client::new();
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
    Ok(())
}

/// Runs one node, restarting it when it exits unexpectedly, until the cluster stops.
async fn supervise(spec: NodeSpec, reports: mpsc::Sender<Report>, mut stop: watch::Receiver<bool>) {
    let mut restarts: VecDeque<Instant> = VecDeque::new();
    loop {
        let mut child = match start(&spec, reports.clone()) {
            Ok(child) => child,
            Err(error) => {
                print_line(&spec.name, &format!("cannot start: {error:#}"));
                let _ = reports
                    .send(Report::GaveUp {
                        name: spec.name.clone(),
                    })
                    .await;
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
                    let _ = reports.send(Report::GaveUp { name: spec.name.clone() }).await;
                    return;
                }
                print_line(&spec.name, &format!("exited ({status}); restarting in 1 s"));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            _ = stop.changed() => {
                stop_gracefully(&spec.name, &mut child).await;
                return;
            }
        }
    }
}

fn start(spec: &NodeSpec, reports: mpsc::Sender<Report>) -> Result<Child> {
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
    let announce = spec.announce;
    if let Some(stdout) = child.stdout.take() {
        let name = name.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(address) = started_at(&line).filter(|_| announce) {
                    let _ = reports.send(Report::Listening { address }).await;
                }
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

/// The inter-node address in a node's "node started" log line.
fn started_at(line: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = &value["fields"];
    (fields["message"] == "node started")
        .then(|| fields["address"].as_str().map(str::to_owned))
        .flatten()
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
    fn finds_the_address_in_a_json_log_line() {
        let line = r#"{"timestamp":"t","level":"INFO","fields":{"message":"node started","node":"database@localhost","address":"127.0.0.1:4000","incarnation":7},"target":"switchboard::node"}"#;
        assert_eq!(started_at(line), Some("127.0.0.1:4000".into()));
        assert_eq!(started_at("plain text"), None);
        assert!(render(line).starts_with("INFO  node started"));
    }
}
