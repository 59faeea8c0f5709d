//! `switchboard up` as a user runs it: the real command starting every service binary as its own
//! OS process on 127.0.0.1, driven through the chat API, with nodes killed (`kill -9`) under
//! load. The service binaries must be built next to the `switchboard` binary
//! (`cargo build --workspace --bins`, which `.ci/test` runs first).

mod local_cluster;

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use local_cluster::{DEADLINE, Up, switchboard_binary};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

/// How long a killed node may take to be restarted and seen `up` by every http node again.
const REJOIN: Duration = Duration::from_secs(30);

/// The clusters here are several processes each: one at a time keeps the machine responsive.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What these tests do to a running cluster besides starting it.
impl Up {
    /// The process id of node `name` as it runs now (a child of `up`), if it runs.
    fn node_pid(&self, name: &str) -> Option<i32> {
        let parent = self.child.id().to_string();
        let wanted = format!("SWITCHBOARD_NODE_NAME={name}");
        std::fs::read_dir("/proc")
            .ok()?
            .flatten()
            .find_map(|entry| {
                let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
                let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
                // The parent pid is the second field after the parenthesised command name.
                let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?;
                if ppid != parent {
                    return None;
                }
                let environ = std::fs::read(entry.path().join("environ")).ok()?;
                environ
                    .split(|b| *b == 0)
                    .any(|var| var == wanted.as_bytes())
                    .then_some(pid)
            })
    }

    /// `kill -9` of node `name`; returns the pid it had.
    fn kill9(&self, name: &str) -> i32 {
        let pid = self
            .node_pid(name)
            .unwrap_or_else(|| panic!("{name} is not running:\n{}", self.output()));
        kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
        pid
    }

    /// Each node's state as the http node at `url` sees it.
    async fn cluster(&self, url: &str) -> Option<Vec<(String, String)>> {
        let reply = reqwest::Client::new()
            .get(format!("{url}/v1/admin/cluster"))
            .bearer_auth(&self.admin_token)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        let body: Value = reply.json().await.ok()?;
        let nodes = body["nodes"].as_array()?;
        Some(
            nodes
                .iter()
                .map(|n| {
                    let field = |k: &str| n[k].as_str().unwrap_or_default().to_owned();
                    (field("name"), field("state"))
                })
                .collect(),
        )
    }

    /// Whether every http node sees exactly `names`, each `up` (or itself).
    async fn all_up(&self, names: &[String]) -> bool {
        for url in &self.urls {
            let Some(seen) = self.cluster(url).await else {
                return false;
            };
            let up: HashSet<&str> = seen
                .iter()
                .filter(|(_, state)| state == "up" || state == "self")
                .map(|(name, _)| name.as_str())
                .collect();
            if seen.len() != names.len() || names.iter().any(|n| !up.contains(n.as_str())) {
                return false;
            }
        }
        true
    }

    /// Runs `switchboard <args> --data-dir <this cluster's>` to completion.
    fn command(&self, args: &[&str]) -> std::process::Output {
        Command::new(switchboard_binary())
            .args(args)
            .arg("--data-dir")
            .arg(self.data_dir())
            .env_remove("SWITCHBOARD_COOKIE")
            .env_remove("SWITCHBOARD_COOKIE_FILE")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

/// The JSON body of the answer to `request`.
async fn json_of(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

/// A user of the chat API, posting through any of the cluster's http replicas.
struct User {
    client: reqwest::Client,
    urls: Vec<String>,
    token: String,
}

impl User {
    async fn register(urls: &[String], name: &str) -> User {
        let client = reqwest::Client::new();
        let reply = json_of(
            client
                .post(format!("{}/v1/auth/register", urls[0]))
                .json(&json!({ "username": name, "password": "correct horse battery" })),
        )
        .await;
        let token = reply["token"].as_str().expect("a token").to_owned();
        User {
            client,
            urls: urls.to_vec(),
            token,
        }
    }

    async fn create_room(&self, name: &str) -> i64 {
        let reply = json_of(
            self.client
                .post(format!("{}/v1/rooms", self.urls[0]))
                .bearer_auth(&self.token)
                .header("Idempotency-Key", format!("room-{name}"))
                .json(&json!({ "name": name })),
        )
        .await;
        reply["id"].as_i64().expect("a room id")
    }

    /// Posts with an idempotency key, as a careful client does: on a connection error (the http
    /// replica it talked to died) it sends the same request, same key, to the next replica.
    /// Any answer other than success is a failed post.
    async fn post(&self, room: i64, key: &str, body: &str) -> Result<i64, String> {
        let started = Instant::now();
        for attempt in 0.. {
            let url = &self.urls[attempt % self.urls.len()];
            let sent = self
                .client
                .post(format!("{url}/v1/rooms/{room}/messages"))
                .bearer_auth(&self.token)
                .header("Idempotency-Key", key)
                .json(&json!({ "body": body }))
                .timeout(Duration::from_secs(15))
                .send()
                .await;
            match sent {
                Ok(reply) if reply.status().is_success() => {
                    let message: Value = reply.json().await.map_err(|e| e.to_string())?;
                    return message["id"].as_i64().ok_or(format!("no id in {message}"));
                }
                Ok(reply) => {
                    let status = reply.status();
                    return Err(format!(
                        "{status}: {}",
                        reply.text().await.unwrap_or_default()
                    ));
                }
                Err(error) if started.elapsed() < DEADLINE => {
                    // Not an answer: the replica went away. Try the next one shortly.
                    let _ = error;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => return Err(error.to_string()),
            }
        }
        unreachable!("the loop returns")
    }

    /// Every message of `room`, as (id, seq), oldest first.
    async fn history(&self, room: i64) -> Vec<(i64, i64)> {
        let mut stored = Vec::new();
        let mut after = 0;
        loop {
            let page = json_of(
                self.client
                    .get(format!(
                        "{}/v1/rooms/{room}/messages?after={after}&limit=200",
                        self.urls[0]
                    ))
                    .bearer_auth(&self.token),
            )
            .await;
            let messages = page["messages"].as_array().unwrap();
            if messages.is_empty() {
                return stored;
            }
            stored.extend(
                messages
                    .iter()
                    .map(|m| (m["id"].as_i64().unwrap(), m["seq"].as_i64().unwrap())),
            );
            after = page["next_after"].as_i64().unwrap();
        }
    }
}

/// Posts keyed messages one after another until told to stop; returns the acknowledged ids and
/// the failures.
fn post_steadily(
    user: Arc<User>,
    room: i64,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<(Vec<i64>, Vec<String>)> {
    tokio::spawn(async move {
        let (mut acknowledged, mut failed) = (Vec::new(), Vec::new());
        let mut i = 0;
        while !*stop.borrow() {
            match user
                .post(room, &format!("post-{i}"), &format!("message {i}"))
                .await
            {
                Ok(id) => acknowledged.push(id),
                Err(error) => failed.push(format!("post-{i}: {error}")),
            }
            i += 1;
        }
        (acknowledged, failed)
    })
}

/// Every acknowledged post is stored exactly once, and the room's seqs have no gap.
async fn assert_stored_once(user: &User, room: i64, acknowledged: &[i64]) {
    let stored = user.history(room).await;
    let ids: HashSet<i64> = stored.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), stored.len(), "no message stored twice");
    assert_eq!(
        ids,
        acknowledged.iter().copied().collect::<HashSet<_>>(),
        "every acknowledged post stored, and nothing else"
    );
    let seqs: Vec<i64> = stored.iter().map(|(_, seq)| *seq).collect();
    assert_eq!(
        seqs,
        (1..=stored.len() as i64).collect::<Vec<_>>(),
        "gapless"
    );
}

/// Waits until `name` runs under a pid other than `old`.
async fn restarted(up: &Up, name: &str, old: i32) -> bool {
    switchboard::eventually(REJOIN, || async {
        up.node_pid(name).is_some_and(|pid| pid != old)
    })
    .await
}

#[tokio::test]
async fn the_only_database_node_killed_under_keyed_posts_costs_no_post() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let up = Up::start("");
    let user = Arc::new(User::register(&up.urls, "steady").await);
    let room = user.create_room("steady").await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let poster = post_steadily(user.clone(), room, stop_rx);
    // Let some posts through, then take the database away from under them.
    let posted = || async { user.history(room).await.len() >= 20 };
    assert!(switchboard::eventually(DEADLINE, posted).await);
    let old = up.kill9("database@localhost");
    assert!(
        restarted(&up, "database@localhost", old).await,
        "the supervisor restarted it:\n{}",
        up.output()
    );
    // Posts made while it was away waited for it; let more through on the new one.
    let count = user.history(room).await.len();
    assert!(
        switchboard::eventually(DEADLINE, || async {
            user.history(room).await.len() >= count + 20
        })
        .await
    );
    stop_tx.send(true).unwrap();
    let (acknowledged, failed) = poster.await.unwrap();
    assert_eq!(failed, Vec::<String>::new(), "no post failed");
    assert_stored_once(&user, room, &acknowledged).await;
}

#[tokio::test]
async fn every_node_killed_in_turn_is_back_in_the_mesh_and_no_post_fails() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let up = Up::start("http=2,database=2");
    assert_eq!(up.urls.len(), 2, "one URL per http replica");
    assert_ne!(up.urls[0], up.urls[1]);
    let names: Vec<String> = [
        "database@localhost",
        "database-2@localhost",
        "log@localhost",
        "reporting@localhost",
        "analytics@localhost",
        "http@localhost",
        "http-2@localhost",
    ]
    .map(String::from)
    .to_vec();
    assert!(
        switchboard::eventually(DEADLINE, || up.all_up(&names)).await,
        "a full mesh: {:?}",
        up.cluster(&up.urls[0]).await
    );
    let user = Arc::new(User::register(&up.urls, "enduring").await);
    let room = user.create_room("enduring").await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let poster = post_steadily(user.clone(), room, stop_rx);
    for name in &names {
        let old = up.kill9(name);
        assert!(
            restarted(&up, name, old).await,
            "{name} restarted:\n{}",
            up.output()
        );
        let started = Instant::now();
        assert!(
            switchboard::eventually(REJOIN, || up.all_up(&names)).await,
            "after {name} was killed, every node is up again: {:?} / {:?}",
            up.cluster(&up.urls[0]).await,
            up.cluster(&up.urls[1]).await
        );
        eprintln!(
            "{name}: every http node saw every node up {} ms after the restart",
            started.elapsed().as_millis()
        );
        if name == "database@localhost" {
            // The first node is no one's only seed: the commands find the cluster without it.
            // The member they reach first may be the node just restarted, which lists every
            // other node once its own links are up.
            let mut text = String::new();
            let listed_all = switchboard::eventually(REJOIN, || {
                let listed = up.command(&["nodes"]);
                text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&listed.stdout),
                    String::from_utf8_lossy(&listed.stderr)
                );
                let all = listed.status.success()
                    && names.iter().all(|other| text.contains(other.as_str()));
                async move { all }
            })
            .await;
            assert!(listed_all, "every node listed:\n{text}");
        }
    }
    stop_tx.send(true).unwrap();
    let (acknowledged, failed) = poster.await.unwrap();
    assert_eq!(failed, Vec::<String>::new(), "no post failed");
    assert!(!acknowledged.is_empty());
    assert_stored_once(&user, room, &acknowledged).await;
}

#[tokio::test]
async fn an_api_port_that_is_taken_is_one_clear_error_before_anything_starts() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let data_dir = tempfile::tempdir().unwrap();
    let output = Command::new(switchboard_binary())
        .args(["up", "--http", &address, "--data-dir"])
        .arg(data_dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {address}")),
        "{stderr}"
    );
    assert!(
        !stdout.contains(" | "),
        "no node started (no node printed anything): {stdout}"
    );
    assert!(
        !data_dir.path().join("seeds").exists(),
        "nothing written for a cluster that never ran"
    );
}

/// The applications `switchboard apps` lists, as (node, app, state).
fn listed_apps(up: &Up) -> Vec<(String, String, String)> {
    let output = up.command(&["apps"]);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            Some((
                fields.next()?.to_owned(),
                fields.next()?.to_owned(),
                fields.next()?.to_owned(),
            ))
        })
        .collect()
}

/// The applications the admin cluster view shows, as (node, app, state).
async fn viewed_apps(up: &Up) -> Vec<(String, String, String)> {
    let body = json_of(
        reqwest::Client::new()
            .get(format!("{}/v1/admin/cluster", up.urls[0]))
            .bearer_auth(&up.admin_token),
    )
    .await;
    let mut apps = Vec::new();
    for node in body["nodes"].as_array().unwrap() {
        for app in node["apps"].as_array().unwrap() {
            apps.push((
                node["name"].as_str().unwrap().to_owned(),
                app["name"].as_str().unwrap().to_owned(),
                app["state"].as_str().unwrap().to_owned(),
            ));
        }
    }
    apps
}

fn sorted(mut apps: Vec<(String, String, String)>) -> Vec<(String, String, String)> {
    apps.sort();
    apps
}

#[tokio::test]
async fn one_process_runs_every_application_and_serves_the_chat() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let up = Up::start_with(&["--single"]);
    assert_eq!(up.urls.len(), 1);
    let names = vec!["node@localhost".to_owned()];
    assert!(switchboard::eventually(DEADLINE, || up.all_up(&names)).await);
    let user = Arc::new(User::register(&up.urls, "solo").await);
    let room = user.create_room("solo").await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let poster = post_steadily(user.clone(), room, stop_rx);
    assert!(
        switchboard::eventually(DEADLINE, || async { user.history(room).await.len() >= 20 }).await
    );
    // The one node killed: the supervisor restarts it, and clients retrying with their keys
    // lose nothing.
    let old = up.kill9("node@localhost");
    assert!(
        restarted(&up, "node@localhost", old).await,
        "the supervisor restarted it:\n{}",
        up.output()
    );
    assert!(switchboard::eventually(DEADLINE, || up.all_up(&names)).await);
    let count = user.history(room).await.len();
    assert!(
        switchboard::eventually(DEADLINE, || async {
            user.history(room).await.len() >= count + 20
        })
        .await
    );
    stop_tx.send(true).unwrap();
    let (acknowledged, failed) = poster.await.unwrap();
    assert_eq!(failed, Vec::<String>::new(), "no post failed");
    assert_stored_once(&user, room, &acknowledged).await;
    let expected: Vec<(String, String, String)> =
        ["analytics", "database", "http", "log", "reporting"]
            .iter()
            .map(|app| ("node@localhost".into(), (*app).into(), "running".into()))
            .collect();
    assert_eq!(sorted(listed_apps(&up)), expected);
    assert_eq!(sorted(viewed_apps(&up).await), expected);
}

#[tokio::test]
async fn applications_move_between_nodes_at_run_time_and_the_last_provider_stays() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let up = Up::start("");
    let started = up.command(&["app", "start", "reporting", "--on", "analytics@localhost"]);
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    assert!(
        String::from_utf8_lossy(&started.stdout)
            .contains("reporting on analytics@localhost: running")
    );
    let stopped = up.command(&["app", "stop", "reporting", "--on", "reporting@localhost"]);
    assert!(
        stopped.status.success(),
        "{}",
        String::from_utf8_lossy(&stopped.stderr)
    );
    // analytics@localhost is now reporting's only provider.
    let refused = up.command(&["app", "stop", "reporting", "--on", "analytics@localhost"]);
    assert!(!refused.status.success());
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(
        error.contains("last provider of reporting") && error.contains("--force"),
        "{error}"
    );
    let reporting: Vec<(String, String, String)> = listed_apps(&up)
        .into_iter()
        .filter(|(_, app, _)| app == "reporting")
        .collect();
    assert_eq!(
        reporting,
        vec![(
            "analytics@localhost".into(),
            "reporting".into(),
            "running".into()
        )]
    );
    // The command and the admin view agree on every node's applications.
    let agreed = switchboard::eventually(DEADLINE, || async {
        sorted(listed_apps(&up)) == sorted(viewed_apps(&up).await)
    })
    .await;
    assert!(
        agreed,
        "{:?} / {:?}",
        listed_apps(&up),
        viewed_apps(&up).await
    );
}
