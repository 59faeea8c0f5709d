//! A real `switchboard up` for the command's integration tests: the `switchboard` binary started
//! with every API on a free port and a fresh data directory, waited for until it prints its URLs,
//! and stopped with SIGTERM when dropped. Each test file that starts clusters declares this module
//! (`mod local_cluster;`) so that they all start and stop `up` the same way.
//!
//! The data directory is `switchboard-data` inside a temporary working directory, as it is when a
//! user runs `switchboard up` in a checkout: commands run from `work_dir` find the cluster's
//! files where README says they are.

// Each test crate that declares this module uses its own part of it.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long a cluster may take to start, or a node to rejoin, on a busy two-core machine.
pub(crate) const DEADLINE: Duration = Duration::from_secs(120);

/// A running `switchboard up`.
pub(crate) struct Up {
    pub(crate) child: Child,
    work_dir: tempfile::TempDir,
    /// Every http replica's API URL, in replica order.
    pub(crate) urls: Vec<String>,
    pub(crate) admin_token: String,
    /// The most recent lines `up` printed (its own and its nodes'), for failure messages.
    output: Arc<Mutex<VecDeque<String>>>,
}

impl Up {
    /// Starts `switchboard up --scale <scale>` with every API on a free port, and waits until it
    /// says the cluster is up.
    pub(crate) fn start(scale: &str) -> Up {
        Self::start_with(&["--scale", scale])
    }

    /// Starts `switchboard up <args>` with every API on a free port, and waits until it says
    /// the cluster is up.
    pub(crate) fn start_with(args: &[&str]) -> Up {
        let work_dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(switchboard_binary())
            .args(["up", "--http", "127.0.0.1:0"])
            .args(args)
            .arg("--data-dir")
            .arg(work_dir.path().join("switchboard-data"))
            .current_dir(work_dir.path())
            .env_remove("SWITCHBOARD_COOKIE")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output = Arc::new(Mutex::new(VecDeque::new()));
        let (urls_tx, urls_rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        keep_lines(stderr, output.clone(), None);
        keep_lines(stdout, output.clone(), Some(urls_tx));
        let mut up = Up {
            child,
            work_dir,
            urls: Vec::new(),
            admin_token: String::new(),
            output,
        };
        match urls_rx.recv_timeout(DEADLINE) {
            Ok(urls) => up.urls = urls,
            Err(_) => panic!("`switchboard up` did not come up:\n{}", up.output()),
        }
        up.admin_token = std::fs::read_to_string(up.data_dir().join("admin-token"))
            .unwrap()
            .trim()
            .to_owned();
        up
    }

    /// The directory `up` was started in; its data directory is `switchboard-data` in it.
    pub(crate) fn work_dir(&self) -> &Path {
        self.work_dir.path()
    }

    /// The cluster's data directory: cookie, admin token, seeds, SQLite database.
    pub(crate) fn data_dir(&self) -> PathBuf {
        self.work_dir.path().join("switchboard-data")
    }

    /// The last lines `up` and its nodes printed.
    pub(crate) fn output(&self) -> String {
        let lines = self.output.lock().unwrap();
        lines.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        // SIGTERM: `up` stops every node gracefully and removes its seeds file.
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let stopped = Instant::now();
        while stopped.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `switchboard` binary, after checking that the service binaries are beside it.
pub(crate) fn switchboard_binary() -> PathBuf {
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_switchboard"));
    let dir = binary.parent().unwrap_or(Path::new("."));
    for service in ["node", "http", "database", "log", "reporting", "analytics"] {
        let path = dir.join(format!("switchboard-{service}"));
        assert!(
            path.exists(),
            "{} is missing: run `cargo build --workspace --bins` first (.ci/test does)",
            path.display()
        );
    }
    binary
}

/// Keeps the last lines of `stream` in `output`; with `urls`, sends the API URLs once `up`
/// has printed them.
fn keep_lines(
    stream: impl std::io::Read + Send + 'static,
    output: Arc<Mutex<VecDeque<String>>>,
    mut urls: Option<std::sync::mpsc::Sender<Vec<String>>>,
) {
    std::thread::spawn(move || {
        let mut found = Vec::new();
        let mut listing = false;
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if line.trim() == "Switchboard is up:" {
                listing = true;
            } else if listing && line.trim_start().starts_with("http://") {
                found.push(
                    line.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                );
            } else if listing {
                listing = false;
                if let Some(urls) = urls.take() {
                    let _ = urls.send(std::mem::take(&mut found));
                }
            }
            let mut output = output.lock().unwrap();
            output.push_back(line);
            if output.len() > 400 {
                output.pop_front();
            }
        }
    });
}
