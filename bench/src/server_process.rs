//! Server processes: the bench starts each server as a separate OS process, so client and server
//! never share a scheduler, learns its addresses from the lines it prints when ready (`LISTENING
//! <addr>` on stderr for the bench's own servers, the JSON log lines of the service binaries),
//! and kills it when done.
//!
//! A server is the bench itself re-executed with a hidden `serve-*` subcommand, a binary of the
//! workspace next to the bench's executable (`switchboard-testnode`, or the service binaries
//! `cargo build --release --workspace` builds), or any other program a family starts (an Erlang
//! node) with its own readiness line. Its tokio worker count and its CPUs (see
//! [`crate::placement`]) are set explicitly. A re-executed bench also exits when its stdin
//! closes, so a bench that dies without running destructors does not leave servers behind.
//!
//! The failover scenarios also fault a server on purpose: [`ServerProcess::kill`] is `kill -9`,
//! and [`ServerProcess::signal`] sends `SIGSTOP`/`SIGCONT` to hang and resume it. The memory
//! families read a server's resident set with [`ServerProcess::memory`].

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::cli::{RunOptions, ServerKind};

/// How long a server may take to print its addresses.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads one line of a server's output (stdout or stderr): an address the line announces, under
/// a name (e.g. `("listening", "127.0.0.1:41234")`), else `None`. A server is ready once it has
/// announced every name the bench waits for.
pub(crate) type ReadyLine = fn(&str) -> Option<(&'static str, String)>;

/// The name of the address in an [`announce`] line.
pub(crate) const LISTENING: &str = "listening";

/// The name of a service binary's inter-node address (its `node started` log line).
pub(crate) const NODE: &str = "node";

/// The name of an http node's API address (its `http API listening` log line).
pub(crate) const HTTP: &str = "http";

/// A running server process, killed on drop.
#[derive(Debug)]
pub(crate) struct ServerProcess {
    child: Child,
    /// What it is, for error messages.
    what: String,
    /// The address it listens on, as it printed it (the first of the addresses waited for).
    pub(crate) address: String,
    /// Every address the bench waited for, by name.
    addresses: HashMap<&'static str, String>,
    /// Its last lines of output, to explain a failure.
    tail: Arc<Mutex<Vec<String>>>,
}

impl ServerProcess {
    /// Re-executes this bench as server `kind`, with the run's server worker count and CPUs and
    /// the environment variables `env`.
    pub(crate) fn bench(
        kind: ServerKind,
        options: &RunOptions,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("finding the bench's own executable")?;
        let mut command = options.placement.server_command(exe);
        command
            .envs(env.iter().copied())
            .arg(kind.subcommand())
            .arg("--workers")
            .arg(options.server_workers.to_string())
            .stdin(Stdio::piped());
        Self::start(command, kind.subcommand(), listening, &[LISTENING])
    }

    /// Runs `switchboard-testnode` from beside the bench's executable as node `name`, with the
    /// run's server worker count and CPUs.
    pub(crate) fn testnode(name: &str, cookie: &str, options: &RunOptions) -> anyhow::Result<Self> {
        let path = built_sibling(
            "switchboard-testnode",
            "cargo build --release -p switchboard --bin switchboard-testnode",
        )?;
        let mut command = options.placement.server_command(path);
        command
            .env("SWITCHBOARD_NODE_NAME", name)
            .env("SWITCHBOARD_COOKIE", cookie)
            .env("SWITCHBOARD_LISTEN", "127.0.0.1:0")
            .env(
                "SWITCHBOARD_TESTNODE_WORKERS",
                options.server_workers.to_string(),
            )
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null());
        Self::start(command, "switchboard-testnode", listening, &[LISTENING])
    }

    /// Runs `program`, a binary of the workspace built beside the bench's executable (`cargo
    /// build --release --workspace` builds them all), on the server CPUs with the environment
    /// `env`, and waits until its output has announced every address in `expected`. Of the
    /// node settings only `env` reaches it: any `SWITCHBOARD_*` or `DATABASE_URL` the bench was
    /// started with is removed, so the run does not depend on the caller's shell.
    pub(crate) fn workspace_binary<K, V>(
        program: &str,
        options: &RunOptions,
        env: impl IntoIterator<Item = (K, V)>,
        ready: ReadyLine,
        expected: &[&'static str],
    ) -> anyhow::Result<Self>
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let path = built_sibling(program, "cargo build --release --workspace")?;
        let mut command = options.placement.server_command(path);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SWITCHBOARD_") {
                command.env_remove(key);
            }
        }
        command
            .env_remove("DATABASE_URL")
            .envs(env)
            .stdin(Stdio::null());
        Self::start(command, program, ready, expected)
    }

    /// Spawns `command` and waits until lines of its stdout or stderr have announced (see
    /// [`ReadyLine`]) every address in `expected`; the first is the server's
    /// [`address`](Self::address). The caller sets up stdin.
    pub(crate) fn start(
        mut command: Command,
        what: &str,
        ready: ReadyLine,
        expected: &[&'static str],
    ) -> anyhow::Result<Self> {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        let stdout = child.stdout.take().context("the server's stdout")?;
        let stderr = child.stderr.take().context("the server's stderr")?;
        let tail = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        drain(stdout, ready, tx.clone(), tail.clone());
        drain(stderr, ready, tx, tail.clone());
        let mut server = Self {
            child,
            what: what.to_owned(),
            address: String::new(),
            addresses: HashMap::new(),
            tail,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while !expected.iter().all(|k| server.addresses.contains_key(k)) {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok((name, address)) => {
                    server.addresses.entry(name).or_insert(address);
                }
                Err(_) => {
                    // A server that already exited says more by how it ended.
                    let status = server.child.try_wait().ok().flatten();
                    let ended =
                        status.map_or_else(String::new, |s| format!(" (it exited with {s})"));
                    bail!(
                        "{what} never announced its {}{ended}{}",
                        expected.join(" and "),
                        server.explain()
                    )
                }
            }
        }
        if let Some(first) = expected.first() {
            server.address = server.addresses[first].clone();
        }
        Ok(server)
    }

    /// The address announced as `name` (one of those the bench waited for).
    pub(crate) fn announced(&self, name: &str) -> anyhow::Result<&str> {
        self.addresses
            .get(name)
            .map(String::as_str)
            .with_context(|| format!("{} announced no {name}", self.what))
    }

    /// `kill -9`: the process dies at once, without closing its links gracefully. It is reaped
    /// on drop rather than here, so that the caller's worker never blocks on the kernel tearing
    /// the process down while the fault is being measured.
    pub(crate) fn kill(&mut self) -> anyhow::Result<()> {
        self.child
            .kill()
            .with_context(|| format!("killing {}", self.what))
    }

    /// Sends `signal` to the process: `SIGSTOP` hangs it (its sockets stay open, it just stops
    /// answering), `SIGCONT` resumes it. The process is the server itself, also when pinned:
    /// `taskset` executes the server in its own place.
    pub(crate) fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        let pid = i32::try_from(self.pid()).context("a process id beyond i32")?;
        kill(Pid::from_raw(pid), signal)
            .with_context(|| format!("sending {signal} to {}", self.what))
    }

    /// The server's process id (the program's own: `taskset` execs it).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's memory now, from `/proc/<pid>/status`.
    pub(crate) fn memory(&self) -> anyhow::Result<Memory> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .with_context(|| format!("reading /proc/<pid>/status of {}", self.what))?;
        Memory::parse(&status).with_context(|| format!("the status of {}", self.what))
    }

    /// Fails if the server has exited (it should run until killed).
    pub(crate) fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited with {status}{}", self.what, self.explain());
        }
        Ok(())
    }

    fn explain(&self) -> String {
        explain(&self.tail)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process's memory as the kernel reports it, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Memory {
    /// Resident set size (`VmRSS`).
    pub(crate) rss: u64,
    /// Peak resident set size since the process started (`VmHWM`).
    pub(crate) peak: u64,
}

impl Memory {
    /// `VmRSS` and `VmHWM` of a `/proc/<pid>/status`.
    fn parse(status: &str) -> anyhow::Result<Self> {
        let field = |name: &str| -> anyhow::Result<u64> {
            let line = status
                .lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .with_context(|| format!("no {name}"))?;
            let mut words = line.split_whitespace();
            let value: u64 = words
                .next()
                .with_context(|| format!("{name} has no value"))?
                .parse()
                .with_context(|| format!("{name} is not a number"))?;
            match words.next() {
                Some("kB") => Ok(value * 1024),
                other => bail!("{name} is in {other:?}, not kB"),
            }
        };
        Ok(Self {
            rss: field("VmRSS")?,
            peak: field("VmHWM")?,
        })
    }
}

/// Keeps reading `output` on a thread of its own, so the server never blocks on a full pipe:
/// sends what `ready` finds to `found`, and keeps the last lines in `tail`.
fn drain(
    output: impl Read + Send + 'static,
    ready: ReadyLine,
    found: mpsc::Sender<(&'static str, String)>,
    tail: Arc<Mutex<Vec<String>>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines().map_while(Result::ok) {
            if let Some(address) = ready(&line) {
                let _ = found.send(address);
            }
            remember(&tail, line);
        }
    });
}

/// Keeps `line` among the last lines of a process's output, to explain a failure.
pub(crate) fn remember(tail: &Mutex<Vec<String>>, line: String) {
    let mut lines = tail.lock().unwrap_or_else(|p| p.into_inner());
    lines.push(line);
    if lines.len() > 20 {
        lines.remove(0);
    }
}

/// The last lines of a process's output, as the end of an error message.
pub(crate) fn explain(tail: &Mutex<Vec<String>>) -> String {
    let lines = tail.lock().unwrap_or_else(|p| p.into_inner());
    if lines.is_empty() {
        String::new()
    } else {
        format!("; its last output:\n{}", lines.join("\n"))
    }
}

/// The readiness line of the bench's own servers and the testnode: `LISTENING <addr>` (see
/// [`announce`]), as [`LISTENING`].
pub(crate) fn listening(line: &str) -> Option<(&'static str, String)> {
    line.strip_prefix("LISTENING ")
        .map(|address| (LISTENING, address.trim().to_owned()))
}

/// The addresses in a service binary's JSON log line (`SWITCHBOARD_LOG_FORMAT=json`, at `info`
/// for the two targets): `node started` carries the inter-node address, as [`NODE`]; `http API
/// listening` the API port, as [`HTTP`] on loopback (where the bench binds it).
pub(crate) fn service_log_line(line: &str) -> Option<(&'static str, String)> {
    if !line.trim_start().starts_with('{') {
        return None;
    }
    let entry: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
    let fields = entry.get("fields")?;
    match fields.get("message")?.as_str()? {
        "node started" => Some((NODE, fields.get("address")?.as_str()?.to_owned())),
        "http API listening" => {
            Some((HTTP, format!("127.0.0.1:{}", fields.get("port")?.as_u64()?)))
        }
        _ => None,
    }
}

/// Whether `path` is a file that can be run.
pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A file next to the bench's own executable.
pub(crate) fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the bench's own executable")?;
    let dir = exe
        .parent()
        .context("the bench's executable has no directory")?;
    Ok(dir.join(name))
}

/// `name` next to the bench's own executable, which must be there; `build` is the command that
/// builds it, for the error.
pub(crate) fn built_sibling(name: &str, build: &str) -> anyhow::Result<PathBuf> {
    let path = sibling(name)?;
    if !is_executable(&path) {
        bail!("{} does not exist; build it with `{build}`", path.display());
    }
    Ok(path)
}

/// Why a family that runs the service binaries `names` cannot: those of them missing from beside
/// the bench's executable, and how to build them; `None` when all are there.
pub(crate) fn missing_services(names: &[&str]) -> anyhow::Result<Option<String>> {
    let mut missing = Vec::new();
    for name in names {
        if !is_executable(&sibling(name)?) {
            missing.push(*name);
        }
    }
    if missing.is_empty() {
        return Ok(None);
    }
    let path = sibling(missing[0])?;
    let dir = path.parent().unwrap_or(Path::new("."));
    Ok(Some(format!(
        "skipped: {} missing from {}; build the services with `cargo build --release \
         --workspace`",
        missing.join(", "),
        dir.display()
    )))
}

/// For a server process: exit as soon as stdin closes, i.e. when the bench that started it is
/// gone, however it went.
pub(crate) fn exit_when_parent_goes() {
    std::thread::spawn(|| {
        let mut buffer = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut buffer), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
}

/// Prints the line a server's parent waits for. A server's job is to tell its parent where it
/// listens; stderr keeps stdout free for the report.
pub(crate) fn announce(address: impl std::fmt::Display) {
    eprintln!("LISTENING {address}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_announcements() {
        assert_eq!(
            listening("LISTENING 127.0.0.1:4000 "),
            Some((LISTENING, "127.0.0.1:4000".to_owned()))
        );
        assert_eq!(listening("some log line"), None);
    }

    #[test]
    fn finds_addresses_in_json_logs() {
        let started = r#"{"timestamp":"2025-01-01T00:00:00Z","level":"INFO","fields":{"message":"node started","node":"log@vm","address":"127.0.0.1:40123","incarnation":7},"target":"switchboard::node"}"#;
        assert_eq!(
            service_log_line(started),
            Some((NODE, "127.0.0.1:40123".to_owned()))
        );
        let http = r#"{"timestamp":"t","level":"INFO","fields":{"message":"http API listening","port":8081},"target":"switchboard_http::startup","span":{"name":"x"}}"#;
        assert_eq!(
            service_log_line(http),
            Some((HTTP, "127.0.0.1:8081".to_owned()))
        );
        assert_eq!(
            service_log_line(r#"{"fields":{"message":"database ready"}}"#),
            None
        );
        assert_eq!(service_log_line("2025-01-01 INFO node started"), None);
        assert_eq!(service_log_line("not json: node started"), None);
        assert_eq!(service_log_line("{not json"), None);
    }

    #[test]
    fn reads_rss_and_peak_from_proc_status() {
        let status = "Name:\tswitchboard-log\nVmPeak:\t  123456 kB\nVmHWM:\t   20480 kB\n\
                      VmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(
            Memory::parse(status).unwrap(),
            Memory {
                rss: 12_345 * 1024,
                peak: 20_480 * 1024
            }
        );
        assert!(Memory::parse("VmRSS:\t1 kB\n").is_err());
        assert!(Memory::parse("VmRSS:\t1 MB\nVmHWM:\t1 kB\n").is_err());
        let own = std::fs::read_to_string("/proc/self/status").unwrap();
        let memory = Memory::parse(&own).unwrap();
        assert!(memory.rss > 0 && memory.peak >= memory.rss, "{memory:?}");
    }
}
