//! What the database node's integration tests share: a PostgreSQL server of a test's own (Debian's
//! `postgresql` package, as `.ci/postgres.sh` installs it) that the test can restart and stop,
//! node settings on loopback, and calls to the `database` service.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use switchboard::{CallOptions, Node, NodeConfig, NodeError};
use switchboard_proto::v1 as wire;

/// A PostgreSQL server of this test's own in a temporary directory, stopped on drop.
pub(crate) struct PrivatePostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl PrivatePostgres {
    /// Initialises and starts a server, or `None` (saying why) when PostgreSQL is not installed.
    pub(crate) fn start() -> Option<Self> {
        let Some(bin) = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|versions| {
                let mut bins: Vec<PathBuf> = versions
                    .flatten()
                    .map(|v| v.path().join("bin"))
                    .filter(|b| b.join("initdb").exists())
                    .collect();
                bins.sort();
                bins.pop()
            })
        else {
            eprintln!("skipped: no PostgreSQL server installed (bash .ci/test installs one)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = PrivatePostgres { bin, dir, port };
        if is_root() {
            // initdb refuses to run as root: the server belongs to the postgres user.
            let owned = Command::new("chown")
                .arg("postgres:postgres")
                .arg(server.dir.path())
                .status();
            assert!(owned.unwrap().success());
        }
        let data = server.data_dir();
        server.pg(
            "initdb",
            &["-D", &data, "-U", "postgres", "-A", "trust", "--no-sync"],
        );
        server.pg_ctl(&["start", "-w", "-l", &server.log_file()]);
        Some(server)
    }

    fn data_dir(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn log_file(&self) -> String {
        self.dir.path().join("log").display().to_string()
    }

    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `pg_ctl restart -m fast`: every session is terminated, the server is back when it returns.
    #[allow(dead_code)] // Not every test binary restarts its server.
    pub(crate) fn restart(&self) {
        self.pg_ctl(&["restart", "-m", "fast", "-w", "-l", &self.log_file()]);
    }

    /// A fast shutdown, `down_for` with no server at all (connections refused), and a start.
    #[allow(dead_code)] // Not every test binary stops its server.
    pub(crate) fn outage(&self, down_for: Duration) {
        self.pg_ctl(&["stop", "-m", "fast", "-w"]);
        // The length of the fault, not a wait for anything.
        std::thread::sleep(down_for);
        self.pg_ctl(&["start", "-w", "-l", &self.log_file()]);
    }

    fn pg_ctl(&self, args: &[&str]) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let data = self.data_dir();
        let mut all = vec!["-D", &data, "-o", &options];
        all.extend_from_slice(args);
        self.pg("pg_ctl", &all);
    }

    /// Runs one of the server's programs, as the postgres user when this test runs as root.
    fn pg(&self, program: &str, args: &[&str]) {
        let status = self
            .command(program, args)
            .stdout(std::process::Stdio::null())
            .status();
        assert!(status.unwrap().success(), "{program} {args:?} failed");
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let path = self.bin.join(program);
        if is_root() {
            let line = std::iter::once(path.display().to_string())
                .chain(args.iter().map(|a| (*a).to_owned()))
                .map(|word| format!("'{word}'"))
                .collect::<Vec<_>>()
                .join(" ");
            let mut command = Command::new("su");
            command.args(["postgres", "-s", "/bin/sh", "-c", &line]);
            command
        } else {
            let mut command = Command::new(path);
            command.args(args);
            command
        }
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.data_dir();
        let _ = self
            .command("pg_ctl", &["-D", &data, "stop", "-m", "immediate"])
            .stdout(std::process::Stdio::null())
            .status();
    }
}

fn is_root() -> bool {
    nix_uid() == 0
}

/// The effective user id, from `/proc` (this crate has no libc binding of its own).
fn nix_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(u32::MAX)
}

/// A node's settings on loopback, port 0, seeded from `seeds`.
pub(crate) fn config(name: &str, seeds: &[String]) -> NodeConfig {
    NodeConfig {
        node_name: Some(name.into()),
        seeds: seeds.to_vec(),
        ..NodeConfig::loopback()
    }
}

/// Calls `method` of the `database` service as an idempotent call with a 5 s deadline.
pub(crate) async fn call<Req: prost::Message, Resp: prost::Message + Default>(
    node: &Node,
    method: &'static str,
    request: &Req,
) -> Result<Resp, NodeError> {
    let options = CallOptions::idempotent().timeout(Duration::from_secs(5));
    node.call_message("database", method, request, options)
        .await
}

/// Every message of a room as the database stores it, in seq order: `(id, seq)` pairs.
pub(crate) async fn stored_messages(node: &Node, user_id: i64, room_id: i64) -> Vec<(i64, i64)> {
    let mut stored = Vec::new();
    let mut after = 0;
    loop {
        let page: wire::MessagePage = call(
            node,
            "list_messages",
            &wire::ListMessagesRequest {
                user_id,
                room_id,
                after,
                limit: 200,
                forward: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let Some(last) = page.messages.last() else {
            return stored;
        };
        after = last.seq;
        stored.extend(page.messages.iter().map(|m| (m.id, m.seq)));
    }
}

/// How many `message_posted` activity entries the log holds for each message id.
#[allow(dead_code)] // Not every test binary reads the log.
pub(crate) async fn posted_entries(node: &Node) -> std::collections::HashMap<i64, usize> {
    let mut entries = std::collections::HashMap::new();
    let mut query = wire::LogQuery {
        kind: "message_posted".into(),
        limit: 1000,
        ..Default::default()
    };
    loop {
        let page: wire::LogPage = call(node, "query_logs", &query).await.unwrap();
        for entry in &page.entries {
            let fields: serde_json::Value = serde_json::from_str(&entry.fields_json).unwrap();
            *entries
                .entry(fields["message_id"].as_i64().unwrap())
                .or_default() += 1;
        }
        match page.entries.last() {
            Some(last) if page.more => {
                query.before_at_ms = last.at_ms;
                query.before_id = last.id.clone();
            }
            _ => return entries,
        }
    }
}
