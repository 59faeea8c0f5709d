//! The chaos run's cluster where Docker does not answer (or with `--netns`): the node binaries
//! as processes, each in a network namespace of its own (`ip netns`), joined by veth pairs to
//! one bridge in the host's namespace, a PostgreSQL server of the run's own in one more
//! namespace, and [`super::balancer`] in front of the http nodes. Each namespace is a host with
//! an address of its own, as a container is, so the faults are the compose run's, done to
//! processes and links: SIGKILL then a new process, SIGSTOP/SIGCONT, the host's veth set down
//! and up (a partition), SIGTERM then a new process (a graceful restart), `pg_ctl restart`, and
//! the NFQUEUE impairment in the process's namespace.
//!
//! Needs root (namespaces, links, iptables), iproute2 and PostgreSQL's server binaries (Debian's
//! `postgresql`). Everything it makes is named `sbchaos-*` (namespaces, links, the directory
//! under the temporary directory), on 10.77.0.0/24; a run first removes what an earlier run that
//! died left behind, processes included.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

use super::balancer::Balancer;
use super::faults::{Fault, Kind, run, run_async};
use super::impairment;
use crate::server_process::built_sibling;

/// The prefix of every namespace and link the run makes.
const PREFIX: &str = "sbchaos-";
/// The bridge the hosts' veth pairs join, in the host's namespace.
const BRIDGE: &str = "sbchaos-br";
/// The hosts' /24: the bridge is .1, PostgreSQL .2, the nodes .10 and up.
const SUBNET: &str = "10.77.0";
const NODE_PORT: u16 = 7070;
const API_PORT: u16 = 8080;
const POSTGRES_PORT: u16 = 5432;
/// How long a graceful stop may take: the nodes' drain (SWITCHBOARD_SHUTDOWN_GRACE_MS) and more,
/// as compose's `stop_grace_period` gives.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// One host: a namespace, its address, and the host-side end of its veth pair.
struct Host {
    namespace: String,
    veth: String,
    ip: String,
}

impl Host {
    /// Namespace `sbchaos-NAME` at `SUBNET.octet`, linked to the bridge.
    fn create(name: &str, octet: u8) -> anyhow::Result<Self> {
        let host = Self {
            namespace: format!("{PREFIX}{name}"),
            veth: format!("{PREFIX}v{octet}"),
            ip: format!("{SUBNET}.{octet}"),
        };
        let ns = host.namespace.as_str();
        let veth = host.veth.as_str();
        let cidr = format!("{}/24", host.ip);
        run("ip", &["netns", "add", ns])?;
        run(
            "ip",
            &[
                "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ],
        )?;
        run("ip", &["link", "set", veth, "master", BRIDGE, "up"])?;
        run("ip", &["-n", ns, "addr", "add", &cidr, "dev", "eth0"])?;
        run("ip", &["-n", ns, "link", "set", "eth0", "up"])?;
        run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        Ok(host)
    }

    /// `ip netns exec NAMESPACE program`.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.namespace])
            .arg(program);
        command
    }
}

/// The iptables rule that lets traffic cross the bridge. Where bridged frames go through
/// iptables (`br_netfilter`, which Docker loads, with a FORWARD policy of DROP), hosts on the
/// bridge could not reach each other without it.
fn bridge_rule(verb: &str) -> [&str; 8] {
    [verb, "FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT"]
}

fn bridged_frames_filtered() -> bool {
    std::fs::read_to_string("/proc/sys/net/bridge/bridge-nf-call-iptables")
        .is_ok_and(|v| v.trim() == "1")
}

/// Removes every `sbchaos-*` namespace (killing what runs in it), the bridge and its rule.
fn remove_network() {
    let namespaces = run("ip", &["netns", "list"]).unwrap_or_default();
    for line in namespaces.lines() {
        let Some(ns) = line.split_whitespace().next() else {
            continue;
        };
        if !ns.starts_with(PREFIX) {
            continue;
        }
        for pid in run("ip", &["netns", "pids", ns])
            .unwrap_or_default()
            .lines()
        {
            if let Ok(pid) = pid.trim().parse() {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        let _ = run("ip", &["netns", "del", ns]);
    }
    if run("ip", &["link", "show", BRIDGE]).is_ok() {
        let _ = run("ip", &["link", "del", BRIDGE]);
    }
    if bridged_frames_filtered() {
        while run("iptables", &bridge_rule("-D")).is_ok() {}
    }
}

/// Removes the files of earlier runs that died (runs that end remove their own).
fn remove_files_left_behind() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        if entry.file_name().to_string_lossy().starts_with(PREFIX) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn create_bridge() -> anyhow::Result<()> {
    run("ip", &["link", "add", BRIDGE, "type", "bridge"])?;
    run(
        "ip",
        &["addr", "add", &format!("{SUBNET}.1/24"), "dev", BRIDGE],
    )?;
    run("ip", &["link", "set", BRIDGE, "up"])?;
    if bridged_frames_filtered() {
        run("iptables", &bridge_rule("-I")).context("letting traffic cross the bridge")?;
    }
    Ok(())
}

/// The run's PostgreSQL server, in its own namespace, run by the `postgres` user.
struct Postgres {
    host: Host,
    bin: PathBuf,
    dir: PathBuf,
}

impl Postgres {
    /// Initialises a cluster in `dir` with user `switchboard` (password `password`) and database
    /// `switchboard`, and starts it.
    async fn start(host: Host, dir: PathBuf, password: &str) -> anyhow::Result<Self> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin"))
            .filter(|bin| bin.join("initdb").exists())
            .max_by_key(|bin| {
                let version = bin.parent().and_then(Path::file_name);
                version.and_then(|v| v.to_str()?.parse::<u32>().ok())
            })
            .context(
                "no PostgreSQL server under /usr/lib/postgresql: install Debian's postgresql",
            )?;
        std::fs::create_dir_all(&dir)?;
        let pwfile = dir.join("pwfile");
        std::fs::write(&pwfile, password)?;
        run(
            "chown",
            &["-R", "postgres:postgres", &dir.display().to_string()],
        )?;
        let postgres = Self { host, bin, dir };
        let data = postgres.data();
        postgres
            .as_postgres(&[
                "initdb",
                "-D",
                &data,
                "-U",
                "switchboard",
                &format!("--pwfile={}", pwfile.display()),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .await?;
        let _ = std::fs::remove_file(&pwfile);
        // initdb admits TCP clients from loopback only; the nodes are on the bridge.
        let mut hba = std::fs::OpenOptions::new()
            .append(true)
            .open(Path::new(&data).join("pg_hba.conf"))?;
        std::io::Write::write_all(
            &mut hba,
            format!("host all all {SUBNET}.0/24 scram-sha-256\n").as_bytes(),
        )?;
        let options = format!(
            "-p {POSTGRES_PORT} -k {} -c listen_addresses=* -c max_connections=300",
            postgres.dir.display()
        );
        postgres.pg_ctl(&["-o", &options, "start"]).await?;
        postgres
            .as_postgres(&[
                "createdb",
                "-h",
                &postgres.dir.display().to_string(),
                "-p",
                &POSTGRES_PORT.to_string(),
                "-U",
                "switchboard",
                "switchboard",
            ])
            .await?;
        Ok(postgres)
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    /// Runs PostgreSQL's `program` with `args` as the `postgres` user in the server's namespace.
    async fn as_postgres(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut command = self.host.command("runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(args[0]))
            .args(&args[1..])
            .stdin(Stdio::null());
        let output = command.output().await?;
        ensure!(
            output.status.success(),
            "{}: {}",
            args[0],
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Ok(())
    }

    /// `pg_ctl -D DATA -l LOG -w ARGS...`.
    async fn pg_ctl(&self, args: &[&str]) -> anyhow::Result<()> {
        let data = self.data();
        let log = self.dir.join("log").display().to_string();
        let mut all = vec!["pg_ctl", "-D", &data, "-l", &log, "-w"];
        all.extend(args);
        self.as_postgres(&all).await
    }
}

/// One node: a service binary in its host's namespace, restarted with the same settings.
struct Node {
    name: String,
    service: &'static str,
    host: Host,
    binary: PathBuf,
    env: Vec<(String, String)>,
    log: PathBuf,
    process: Mutex<Option<Child>>,
}

impl Node {
    /// Starts a new process of the node (the old one must be gone).
    async fn spawn(&self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut command = self.host.command(&self.binary);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", self.name))?;
        *self.process.lock().await = Some(child);
        Ok(())
    }

    /// The running process's id.
    async fn pid(&self) -> anyhow::Result<i32> {
        let process = self.process.lock().await;
        let pid = process.as_ref().and_then(Child::id);
        Ok(pid.with_context(|| format!("{} is not running", self.name))? as i32)
    }

    async fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        kill(Pid::from_raw(self.pid().await?), signal)?;
        Ok(())
    }

    /// Sends `signal` and waits for the process to exit, for up to `grace`.
    async fn stop(&self, signal: Signal, grace: Duration) -> anyhow::Result<()> {
        let mut process = self.process.lock().await;
        let Some(child) = process.as_mut() else {
            return Ok(());
        };
        if let Some(pid) = child.id() {
            kill(Pid::from_raw(pid as i32), signal)?;
        }
        match tokio::time::timeout(grace, child.wait()).await {
            Ok(status) => {
                status?;
            }
            Err(_) => {
                child.kill().await?;
                bail!("{} did not stop within {grace:?}", self.name);
            }
        }
        *process = None;
        Ok(())
    }
}

/// The cluster: its hosts, processes, balancer and files; [`NetnsCluster::down`] removes it all.
pub(crate) struct NetnsCluster {
    /// The balancer's API, `http://127.0.0.1:PORT`.
    pub(crate) base: String,
    pub(crate) admin_token: String,
    nodes: Vec<Node>,
    postgres: Postgres,
    _balancer: Balancer,
    dir: tempfile::TempDir,
}

/// 32 random bytes as hex: a cookie, a token or a password.
fn fresh_secret() -> String {
    (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

impl NetnsCluster {
    /// Builds the network, starts PostgreSQL, the nodes at `scale` and the balancer.
    pub(crate) async fn start(scale: &[(&'static str, usize)]) -> anyhow::Result<Self> {
        ensure!(
            nix::unistd::geteuid().is_root(),
            "the cluster in network namespaces needs root (ip netns, veth, iptables)"
        );
        let binaries: Vec<(&'static str, PathBuf)> = scale
            .iter()
            .map(|(service, _)| {
                let binary = format!("switchboard-{service}");
                Ok((
                    *service,
                    built_sibling(&binary, "cargo build --release --workspace")?,
                ))
            })
            .collect::<anyhow::Result<_>>()?;
        tokio::task::spawn_blocking(|| {
            remove_network();
            remove_files_left_behind();
            create_bridge()
        })
        .await??;
        super::progress(&format!(
            "network namespaces {PREFIX}* on {SUBNET}.0/24, bridge {BRIDGE}"
        ));
        match Self::populate(binaries, scale).await {
            Ok(cluster) => Ok(cluster),
            Err(error) => {
                let _ = tokio::task::spawn_blocking(remove_network).await;
                Err(error)
            }
        }
    }

    async fn populate(
        binaries: Vec<(&'static str, PathBuf)>,
        scale: &[(&'static str, usize)],
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("sbchaos-").tempdir()?;
        // The postgres user works in a directory under it.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        let secrets = dir.path().join("secrets");
        std::fs::create_dir(&secrets)?;
        let cookie_file = secrets.join("cookie");
        let admin_file = secrets.join("admin-token");
        let password_file = secrets.join("postgres-password");
        let admin_token = fresh_secret();
        let password = fresh_secret();
        std::fs::write(&cookie_file, fresh_secret())?;
        std::fs::write(&admin_file, &admin_token)?;
        std::fs::write(&password_file, &password)?;
        std::fs::set_permissions(
            &secrets,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )?;

        let postgres_host = tokio::task::spawn_blocking(|| Host::create("postgres", 2)).await??;
        let postgres = Postgres::start(postgres_host, dir.path().join("postgres"), &password)
            .await
            .context("starting PostgreSQL")?;
        super::progress(&format!("PostgreSQL at {SUBNET}.2:{POSTGRES_PORT}"));

        let mut plan = Vec::new();
        let mut octet = 10u8;
        for ((service, count), (_, binary)) in scale.iter().zip(&binaries) {
            for i in 1..=*count {
                plan.push((*service, format!("{service}-{i}"), octet, binary.clone()));
                octet += 1;
            }
        }
        let seeds: Vec<String> = plan
            .iter()
            .map(|(_, _, octet, _)| format!("{SUBNET}.{octet}:{NODE_PORT}"))
            .collect();
        let seeds = seeds.join(",");
        let mut nodes = Vec::new();
        for (service, name, octet, binary) in plan {
            let host = {
                let name = name.clone();
                tokio::task::spawn_blocking(move || Host::create(&name, octet)).await??
            };
            let data = dir.path().join(&name);
            std::fs::create_dir(&data)?;
            let path = |p: &Path| p.display().to_string();
            let mut env: Vec<(String, String)> = [
                ("SWITCHBOARD_NODE_NAME", name.clone()),
                ("SWITCHBOARD_COOKIE_FILE", path(&cookie_file)),
                ("SWITCHBOARD_LISTEN", format!("0.0.0.0:{NODE_PORT}")),
                ("SWITCHBOARD_ADVERTISE", format!("{}:{NODE_PORT}", host.ip)),
                ("SWITCHBOARD_SEEDS", seeds.clone()),
                ("SWITCHBOARD_METRICS_LISTEN", "0.0.0.0:9090".into()),
                ("SWITCHBOARD_SHUTDOWN_GRACE_MS", "10000".into()),
                ("SWITCHBOARD_DATA_DIR", path(&data)),
                // No switchboard.toml from the working directory.
                ("SWITCHBOARD_CONFIG", path(&data.join("no-such-config"))),
                ("SWITCHBOARD_LOG_FORMAT", "json".into()),
                ("RUST_LOG", "info".into()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            match service {
                "http" => {
                    env.push((
                        "SWITCHBOARD_HTTP_LISTEN".into(),
                        format!("0.0.0.0:{API_PORT}"),
                    ));
                    env.push(("SWITCHBOARD_ADMIN_TOKEN_FILE".into(), path(&admin_file)));
                    // Every user of the run comes from the bridge's one address, and the TCP
                    // balancer keeps a client's connection on one node, where compose's HAProxy
                    // spreads the registrations over both: 25 in a minute would meet the
                    // per-address limit of 20.
                    env.push(("SWITCHBOARD_LOGIN_RATE_LIMIT".into(), "0".into()));
                }
                "database" => {
                    env.push((
                        "DATABASE_URL".into(),
                        format!("postgres://switchboard@{SUBNET}.2:{POSTGRES_PORT}/switchboard"),
                    ));
                    env.push((
                        "SWITCHBOARD_DATABASE_PASSWORD_FILE".into(),
                        path(&password_file),
                    ));
                }
                _ => {}
            }
            let node = Node {
                log: dir.path().join(format!("{name}.log")),
                name,
                service,
                host,
                binary,
                env,
                process: Mutex::new(None),
            };
            node.spawn().await?;
            nodes.push(node);
        }
        let apis: Vec<SocketAddr> = nodes
            .iter()
            .filter(|n| n.service == "http")
            .map(|n| format!("{}:{API_PORT}", n.host.ip).parse())
            .collect::<Result<_, _>>()?;
        let balancer = Balancer::start(apis).await?;
        super::progress(&format!(
            "{} nodes started, logs in {}; API at {}",
            nodes.len(),
            dir.path().display(),
            balancer.address
        ));
        Ok(Self {
            base: format!("http://{}", balancer.address),
            admin_token,
            nodes,
            postgres,
            _balancer: balancer,
            dir,
        })
    }

    /// The node (or `postgres`) `fault` hits.
    pub(crate) fn instance(&self, fault: &Fault) -> anyhow::Result<String> {
        if fault.service == "postgres" {
            return Ok("postgres".into());
        }
        let of: Vec<&Node> = self
            .nodes
            .iter()
            .filter(|n| n.service == fault.service)
            .collect();
        ensure!(!of.is_empty(), "no node of {}", fault.service);
        Ok(of[fault.replica % of.len()].name.clone())
    }

    /// Applies `fault` to `instance`, holds it, heals it.
    pub(crate) async fn inflict(&self, fault: &Fault, instance: &str) -> anyhow::Result<()> {
        if fault.kind == Kind::RestartPostgres {
            return self.postgres.pg_ctl(&["-m", "fast", "restart"]).await;
        }
        let node = self
            .nodes
            .iter()
            .find(|n| n.name == instance)
            .with_context(|| format!("no node {instance}"))?;
        let hold = tokio::time::sleep(fault.hold);
        match fault.kind {
            Kind::Kill => {
                node.stop(Signal::SIGKILL, STOP_GRACE).await?;
                hold.await;
                node.spawn().await?;
            }
            Kind::Pause => {
                node.signal(Signal::SIGSTOP).await?;
                hold.await;
                node.signal(Signal::SIGCONT).await?;
            }
            Kind::Disconnect => {
                let veth = node.host.veth.clone();
                run_async(
                    "ip",
                    vec!["link".into(), "set".into(), veth.clone(), "down".into()],
                )
                .await?;
                hold.await;
                run_async("ip", vec!["link".into(), "set".into(), veth, "up".into()]).await?;
            }
            Kind::RestartHttp => {
                node.stop(Signal::SIGTERM, STOP_GRACE).await?;
                node.spawn().await?;
            }
            Kind::Netem => {
                let pid = node.pid().await?.to_string();
                impairment::impaired_for(&pid, fault.hold).await?;
            }
            Kind::RestartPostgres => unreachable!("handled above"),
        }
        Ok(())
    }

    /// Stops every process and removes the namespaces, the bridge and the files.
    pub(crate) async fn down(self) {
        super::progress("stopping the processes, removing the namespaces");
        for node in &self.nodes {
            let _ = node.stop(Signal::SIGKILL, STOP_GRACE).await;
        }
        let _ = self.postgres.pg_ctl(&["-m", "immediate", "stop"]).await;
        let _ = tokio::task::spawn_blocking(remove_network).await;
        drop(self.dir);
    }
}
