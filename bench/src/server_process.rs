//! Server processes: the bench starts each server as a separate OS process, so client and server
//! never share a scheduler, learns its address from the line it prints when ready (`LISTENING
//! <addr>` on stderr for the bench's own servers), and kills it when done.
//!
//! A server is the bench itself re-executed with a hidden `serve-*` subcommand, the
//! `switchboard-testnode` binary next to the bench's executable, or any other program a family
//! starts (an Erlang node, a service binary) with its own readiness line. Its tokio worker
//! count and its CPUs (see [`crate::placement`]) are set explicitly. A re-executed bench also
//! exits when its stdin closes, so a bench that dies without running destructors does not leave
//! servers behind.
//!
//! The failover scenarios also fault a server on purpose: [`ServerProcess::kill`] is `kill -9`,
//! and [`ServerProcess::signal`] sends `SIGSTOP`/`SIGCONT` to hang and resume it.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::cli::{RunOptions, ServerKind};

/// How long a server may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads one line of a server's output: what the bench needs from it (its address) if this is the
/// line that says the server is ready, else `None`.
pub(crate) type ReadyLine = fn(&str) -> Option<String>;

/// A running server process, killed on drop.
#[derive(Debug)]
pub(crate) struct ServerProcess {
    child: Child,
    /// What it is, for error messages.
    what: String,
    /// The address it listens on, as it printed it.
    pub(crate) address: String,
    /// Its last lines of stderr, to explain a failure.
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
        Self::start(command, kind.subcommand(), listening)
    }

    /// Runs `switchboard-testnode` from beside the bench's executable as node `name`, with the
    /// run's server worker count and CPUs.
    pub(crate) fn testnode(name: &str, cookie: &str, options: &RunOptions) -> anyhow::Result<Self> {
        let path = sibling("switchboard-testnode")?;
        if !path.exists() {
            bail!(
                "{} does not exist; build it with `cargo build --release -p switchboard --bin switchboard-testnode`",
                path.display()
            );
        }
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
        Self::start(command, "switchboard-testnode", listening)
    }

    /// Spawns `command` and waits until a line of its stdout or stderr satisfies `ready`; the
    /// server's address is what `ready` returned. The caller sets up stdin.
    pub(crate) fn start(
        mut command: Command,
        what: &str,
        ready: ReadyLine,
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
            tail,
        };
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(address) => server.address = address,
            Err(_) => {
                // A server that already exited says more by how it ended.
                let status = server.child.try_wait().ok().flatten();
                let ended = status.map_or_else(String::new, |s| format!(" (it exited with {s})"));
                bail!("{what} never said it was ready{ended}{}", server.explain())
            }
        }
        Ok(server)
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

/// Keeps reading `output` on a thread of its own, so the server never blocks on a full pipe:
/// sends what `ready` finds to `found`, and keeps the last lines in `tail`.
fn drain(
    output: impl Read + Send + 'static,
    ready: ReadyLine,
    found: mpsc::Sender<String>,
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

/// The readiness line of the bench's own servers and the testnode: `LISTENING <addr>`.
pub(crate) fn listening(line: &str) -> Option<String> {
    line.strip_prefix("LISTENING ")
        .map(|address| address.trim().to_owned())
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
