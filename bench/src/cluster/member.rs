//! One member of a measured cluster: a process (a Switchboard node or an Erlang node) whose
//! output is read line by line on threads of its own, everything it says about the cluster
//! going into the cluster's [`Journal`] and the rest kept as a tail to explain a failure.
//!
//! Unlike [`crate::server_process::ServerProcess`], starting a member does not wait for it: a
//! cluster's members are all spawned first and then waited for together, since 128 processes
//! started one after the other would put most of the start-up time between them rather than
//! in the mesh being measured. Its stdin is a pipe kept open for its life, so that a member
//! whose bench is gone exits (both kinds of node stop when their stdin closes).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::sync::watch;

use super::journal::{Journal, parse_line};
use crate::server_process::{explain, remember};

/// A member process, killed (and reaped) on drop.
#[derive(Debug)]
pub(crate) struct Member {
    pub(crate) name: String,
    child: Child,
    tail: Arc<Mutex<Vec<String>>>,
}

impl Member {
    /// Spawns `command` as member `name`, recording what it says in `journal`.
    pub(crate) fn spawn(
        mut command: Command,
        name: &str,
        journal: &Arc<watch::Sender<Journal>>,
    ) -> anyhow::Result<Self> {
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .with_context(|| format!("starting cluster member {name}"))?;
        let tail = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().context("a member's stdout")?;
        let stderr = child.stderr.take().context("a member's stderr")?;
        for output in [
            Box::new(stdout) as Box<dyn Read + Send>,
            Box::new(stderr) as Box<dyn Read + Send>,
        ] {
            let (name, journal, tail) = (name.to_owned(), journal.clone(), tail.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(output).lines().map_while(Result::ok) {
                    match parse_line(&line) {
                        Some(entry) => journal.send_modify(|j| j.record(&name, entry)),
                        None => remember(&tail, line),
                    }
                }
            });
        }
        Ok(Self {
            name: name.to_owned(),
            child,
            tail,
        })
    }

    /// The member's process id (the program's own: `taskset` and `erl` exec it in place).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`. It is reaped on drop, so the caller never waits on the kernel tearing it
    /// down while the fault is being timed.
    pub(crate) fn kill(&mut self) -> anyhow::Result<()> {
        self.child
            .kill()
            .with_context(|| format!("killing {}", self.name))
    }

    /// Sends `signal`: `SIGSTOP` hangs the member with its sockets open, `SIGCONT` resumes it.
    pub(crate) fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        let pid = i32::try_from(self.pid()).context("a process id beyond i32")?;
        kill(Pid::from_raw(pid), signal)
            .with_context(|| format!("sending {signal} to {}", self.name))
    }

    /// Writes `line` to its stdin: a command, for an Erlang member.
    pub(crate) fn tell(&mut self, line: &str) -> anyhow::Result<()> {
        let stdin = self.child.stdin.as_mut().context("a member's stdin")?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .with_context(|| format!("telling {} {line:?}", self.name))
    }

    /// Whether it is still running; if not, what it said last, for an error.
    pub(crate) fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(None) => None,
            Ok(Some(status)) => Some(format!(
                "{} exited with {status}{}",
                self.name,
                explain(&self.tail)
            )),
            Err(error) => Some(format!("{}: {error}", self.name)),
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
