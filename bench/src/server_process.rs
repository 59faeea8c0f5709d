//! Server processes: the bench starts each server as a separate OS process, so client and server
//! never share a scheduler, learns its addresses from what it prints (the `LISTENING <addr>` line
//! of the bench's own servers, or the log lines of the node binaries), and kills it when done.
//!
//! A server is the bench itself re-executed with a hidden `serve-*` subcommand, or a binary of the
//! workspace next to the bench's executable (`switchboard-testnode`, or the chat's node binaries).
//! Either way its tokio worker count and its CPUs (see [`crate::placement`]) are set explicitly.
//! A re-executed bench also exits when its stdin closes, so a bench that dies without running
//! destructors does not leave servers behind.
//!
//! The failover scenarios also fault a server on purpose: [`ServerProcess::kill`] is `kill -9`,
//! and [`ServerProcess::signal`] sends `SIGSTOP`/`SIGCONT` to hang and resume it.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::cli::{RunOptions, ServerKind};

/// How long a server may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What the bench learns from a server's output: picks a named address out of one line (stdout
/// or stderr), e.g. `("listening", "127.0.0.1:41234")`.
pub(crate) type Announcements = fn(&str) -> Option<(&'static str, String)>;

/// The name under which [`announce`]'s line is learnt.
const LISTENING: &str = "listening";

/// A running server process, killed on drop.
#[derive(Debug)]
pub(crate) struct ServerProcess {
    child: Child,
    /// What it is, for error messages.
    what: String,
    /// The address it listens on, as it printed it (the first address the bench waited for).
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
        Self::start(command, kind.subcommand(), listening_line, &[LISTENING])
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
            .env("SWITCHBOARD_LISTEN", "127.0.0.1:0")
            .env("SWITCHBOARD_COOKIE", cookie)
            .env(
                "SWITCHBOARD_TESTNODE_WORKERS",
                options.server_workers.to_string(),
            )
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null());
        Self::start(
            command,
            "switchboard-testnode",
            listening_line,
            &[LISTENING],
        )
    }

    /// Runs `program`, a binary of the workspace built beside the bench's executable (`cargo
    /// build --release --workspace` builds them all), on the server CPUs with the environment
    /// `env`, and waits until its output has announced every address in `expected`. Of the
    /// node settings only `env` reaches it: any `SWITCHBOARD_*` or `DATABASE_URL` the bench was
    /// started with is removed, so the run does not depend on the caller's shell.
    pub(crate) fn workspace_binary(
        program: &str,
        options: &RunOptions,
        env: &[(&str, &str)],
        announcements: Announcements,
        expected: &[&'static str],
    ) -> anyhow::Result<Self> {
        let path = built_sibling(program, "cargo build --release --workspace")?;
        let mut command = options.placement.server_command(path);
        for (key, _) in std::env::vars_os() {
            let key_text = key.to_string_lossy();
            if key_text.starts_with("SWITCHBOARD_") || key_text == "DATABASE_URL" {
                command.env_remove(&key);
            }
        }
        command.envs(env.iter().copied()).stdin(Stdio::null());
        Self::start(command, program, announcements, expected)
    }

    /// Spawns `command` and waits until its output has announced every address in `expected`.
    fn start(
        mut command: Command,
        what: &str,
        announcements: Announcements,
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
        drain(stdout, announcements, tx.clone(), tail.clone());
        drain(stderr, announcements, tx, tail.clone());
        let mut server = Self {
            child,
            what: what.to_owned(),
            address: String::new(),
            addresses: HashMap::new(),
            tail,
        };
        let deadline = std::time::Instant::now() + START_TIMEOUT;
        while !expected.iter().all(|k| server.addresses.contains_key(k)) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok((name, address)) => {
                    server.addresses.entry(name).or_insert(address);
                }
                Err(_) => bail!(
                    "{what} never announced its {}{}",
                    expected.join(" and "),
                    server.explain()
                ),
            }
        }
        if let Some(first) = expected.first() {
            server.address = server.addresses[first].clone();
        }
        Ok(server)
    }

    /// The address announced as `name`.
    pub(crate) fn announced(&self, name: &str) -> anyhow::Result<&str> {
        self.addresses
            .get(name)
            .map(String::as_str)
            .with_context(|| format!("{} announced no {name}", self.what))
    }

    /// The server's process id (the server itself also when pinned: `taskset` executes it in
    /// its own place).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's resident set size (`VmRSS` in `/proc/<pid>/status`), in bytes.
    pub(crate) fn rss_bytes(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .with_context(|| format!("reading the status of {}", self.what))?;
        vm_rss_bytes(&status).with_context(|| format!("no VmRSS in the status of {}", self.what))
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
        let pid = i32::try_from(self.child.id()).context("a process id beyond i32")?;
        kill(Pid::from_raw(pid), signal)
            .with_context(|| format!("sending {signal} to {}", self.what))
    }

    /// Fails if the server has exited (it should run until killed).
    pub(crate) fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited with {status}{}", self.what, self.explain());
        }
        Ok(())
    }

    fn explain(&self) -> String {
        let lines = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        if lines.is_empty() {
            String::new()
        } else {
            format!("; its last output:\n{}", lines.join("\n"))
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Keeps reading `output` so the server never blocks on a full pipe: every announced address
/// goes to `found`, and the last lines to `tail`.
fn drain(
    output: impl Read + Send + 'static,
    announcements: Announcements,
    found: mpsc::Sender<(&'static str, String)>,
    tail: Arc<Mutex<Vec<String>>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines().map_while(Result::ok) {
            if let Some(address) = announcements(&line) {
                let _ = found.send(address);
            }
            let mut lines = tail.lock().unwrap_or_else(|p| p.into_inner());
            lines.push(line);
            if lines.len() > 20 {
                lines.remove(0);
            }
        }
    });
}

/// The address in an [`announce`] line.
fn listening_line(line: &str) -> Option<(&'static str, String)> {
    line.strip_prefix("LISTENING ")
        .map(|address| (LISTENING, address.trim().to_owned()))
}

/// `VmRSS` of a `/proc/<pid>/status`, in bytes.
fn vm_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

/// `name` next to the bench's own executable, which must exist; `build` is the command that
/// builds it, for the error.
fn built_sibling(name: &str, build: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the bench's own executable")?;
    let dir = exe
        .parent()
        .context("the bench's executable has no directory")?;
    let path = dir.join(name);
    if !path.exists() {
        bail!("{} does not exist; build it with `{build}`", path.display());
    }
    Ok(path)
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
    fn reads_announcements_and_rss() {
        assert_eq!(
            listening_line("LISTENING 127.0.0.1:4000 "),
            Some((LISTENING, "127.0.0.1:4000".to_owned()))
        );
        assert_eq!(listening_line("some log line"), None);
        let status = "Name:\tswitchboard-http\nVmPeak:\t  200 kB\nVmRSS:\t   12345 kB\n";
        assert_eq!(vm_rss_bytes(status), Some(12345 * 1024));
        assert_eq!(vm_rss_bytes("Name:\tx\n"), None);
    }
}
