//! A PostgreSQL restart under keyed posts: the database node treats a lost or reset connection
//! as the passing condition it is, retries on a fresh connection within the call's deadline, and
//! no caller sees an error. The server is a real PostgreSQL of this test's own (Debian's
//! `postgresql` package, as `.ci/postgres.sh` installs it), restarted with `pg_ctl restart -m fast`,
//! which ends every session with "terminating connection due to administrator command", then
//! stopped for 1.5 s (connections refused) and started again.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use switchboard::{CallOptions, Cookie, Node, NodeBuilder, NodeConfig, NodeError};
use switchboard_database::Store;
use switchboard_database::configuration::DatabaseSettings;
use switchboard_proto::v1 as wire;

const DEADLINE: Duration = Duration::from_secs(60);
const COOKIE: &str = "postgres-restart-test-cookie";

/// A PostgreSQL server of this test's own in a temporary directory, stopped on drop.
struct PrivatePostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl PrivatePostgres {
    /// Initialises and starts a server, or `None` (saying why) when PostgreSQL is not installed.
    fn start() -> Option<Self> {
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

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `pg_ctl restart -m fast`: every session is terminated, the server is back when it returns.
    fn restart(&self) {
        self.pg_ctl(&["restart", "-m", "fast", "-w", "-l", &self.log_file()]);
    }

    /// A fast shutdown, `down_for` with no server at all (connections refused), and a start.
    fn outage(&self, down_for: Duration) {
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

fn config(name: &str, seeds: &[String]) -> NodeConfig {
    NodeConfig {
        node_name: Some(name.into()),
        seeds: seeds.to_vec(),
        ..NodeConfig::loopback()
    }
}

async fn call<Req: prost::Message, Resp: prost::Message + Default>(
    node: &Node,
    method: &'static str,
    request: &Req,
) -> Result<Resp, NodeError> {
    let options = CallOptions::idempotent().timeout(Duration::from_secs(5));
    node.call_message("database", method, request, options)
        .await
}

#[tokio::test]
async fn a_postgres_restart_or_outage_under_two_seconds_costs_no_keyed_post() {
    let Some(postgres) = PrivatePostgres::start() else {
        return;
    };
    let store = Store::connect(&postgres.url(), 8).await.unwrap();
    let cookie = || Cookie::new(COOKIE).unwrap();
    let database = switchboard_database::serve(
        config("database@restart", &[]),
        cookie(),
        store,
        &DatabaseSettings::default(),
    )
    .await
    .unwrap();
    let client = NodeBuilder::new(
        "client",
        config("client@restart", &[database.address().to_owned()]),
        cookie(),
    )
    .start()
    .await
    .unwrap();
    assert!(client.wait_for_service("database", DEADLINE).await);
    let user: wire::UserReply = call(
        &client,
        "register",
        &wire::RegisterRequest {
            username: "patient".into(),
            password_hash: "not-a-real-hash".into(),
        },
    )
    .await
    .unwrap();
    let user_id = user.user.unwrap().id;
    let room: wire::Room = call(
        &client,
        "create_room",
        &wire::CreateRoomRequest {
            user_id,
            name: "restart".into(),
            topic: String::new(),
            idempotency_key: "room".into(),
        },
    )
    .await
    .unwrap();

    // Three clients post keyed messages steadily while the server restarts.
    let stop = Arc::new(AtomicBool::new(false));
    let posters: Vec<_> = (0..3)
        .map(|client_index| {
            let (client, stop) = (client.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut acknowledged, mut failed) = (Vec::new(), Vec::new());
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let post = wire::PostMessageRequest {
                        user_id,
                        room_id: room.id,
                        body: format!("client {client_index} message {i}"),
                        idempotency_key: format!("{client_index}-{i}"),
                    };
                    let reply: Result<wire::PostMessageReply, _> =
                        call(&client, "post_message", &post).await;
                    match reply {
                        Ok(reply) => acknowledged.push(reply.message.unwrap().id),
                        Err(error) => failed.push(format!("{client_index}-{i}: {error}")),
                    }
                    i += 1;
                }
                (acknowledged, failed)
            })
        })
        .collect();
    let count = || async {
        let page: Result<wire::MessagePage, _> = call(
            &client,
            "list_messages",
            &wire::ListMessagesRequest {
                user_id,
                room_id: room.id,
                limit: 1,
                ..Default::default()
            },
        )
        .await;
        page.ok()
            .and_then(|p| p.messages.last().map(|m| m.seq))
            .unwrap_or(0)
    };
    assert!(switchboard::eventually(DEADLINE, || async { count().await >= 100 }).await);
    let restarted = Instant::now();
    postgres.restart();
    eprintln!(
        "PostgreSQL restarted in {} ms",
        restarted.elapsed().as_millis()
    );
    let before = count().await;
    assert!(
        switchboard::eventually(DEADLINE, || async { count().await >= before + 100 }).await,
        "posts flow again after the restart"
    );
    let down = Instant::now();
    postgres.outage(Duration::from_millis(1500));
    eprintln!("PostgreSQL was away for {} ms", down.elapsed().as_millis());
    let before = count().await;
    assert!(
        switchboard::eventually(DEADLINE, || async { count().await >= before + 100 }).await,
        "posts flow again after the outage"
    );
    stop.store(true, Ordering::Relaxed);
    let (mut acknowledged, mut failed) = (Vec::new(), Vec::new());
    for poster in posters {
        let (ids, errors) = poster.await.unwrap();
        acknowledged.extend(ids);
        failed.extend(errors);
    }
    assert_eq!(failed, Vec::<String>::new(), "no keyed post failed");

    // Every acknowledged post is stored exactly once, with gapless seqs.
    let mut stored = Vec::new();
    let mut after = 0;
    loop {
        let page: wire::MessagePage = call(
            &client,
            "list_messages",
            &wire::ListMessagesRequest {
                user_id,
                room_id: room.id,
                after,
                limit: 200,
                forward: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let Some(last) = page.messages.last() else {
            break;
        };
        after = last.seq;
        stored.extend(page.messages.iter().map(|m| (m.id, m.seq)));
    }
    let ids: HashSet<i64> = stored.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), stored.len(), "nothing stored twice");
    assert_eq!(ids, acknowledged.iter().copied().collect::<HashSet<_>>());
    let seqs: Vec<i64> = stored.iter().map(|(_, seq)| *seq).collect();
    assert_eq!(
        seqs,
        (1..=stored.len() as i64).collect::<Vec<_>>(),
        "gapless"
    );
}
