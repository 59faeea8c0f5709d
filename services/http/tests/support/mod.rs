//! Test clusters for the chat: real database and http nodes as separate runtimes on port 0,
//! talking over the real inter-node protocol, against SQLite or a real PostgreSQL.
//!
//! PostgreSQL comes from `SWITCHBOARD_TEST_POSTGRES` (a server URL; each cluster creates a fresh
//! database in it). `.ci/run` starts one. Without it, PostgreSQL tests are skipped locally and
//! fail under CI, where nothing may be skipped.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use rand::Rng;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::Connection;
use switchboard::{Cookie, Node, NodeBuilder, NodeConfig};
use switchboard_database::Store;
use switchboard_database::configuration::{DatabaseSettings, default_sqlite_url};
use switchboard_http::HttpSettings;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
pub const DEADLINE: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database URL for a fresh database, or `None` when PostgreSQL is not available here.
pub async fn database_url(backend: Backend, dir: &std::path::Path) -> Option<String> {
    match backend {
        Backend::Sqlite => Some(default_sqlite_url(dir)),
        Backend::Postgres => {
            let Ok(server) = std::env::var("SWITCHBOARD_TEST_POSTGRES") else {
                assert!(
                    std::env::var("CI").is_err(),
                    "SWITCHBOARD_TEST_POSTGRES must be set under CI: no test may be skipped"
                );
                eprintln!("skipping: SWITCHBOARD_TEST_POSTGRES is not set");
                return None;
            };
            let name = format!("sbtest_{:016x}", rand::rng().random::<u64>());
            sqlx::any::install_default_drivers();
            let mut admin = sqlx::AnyConnection::connect(&format!("{server}/postgres"))
                .await
                .expect("connect to the test PostgreSQL");
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut admin)
                .await
                .expect("create a test database");
            Some(format!("{server}/{name}"))
        }
    }
}

fn node_config(name: &str, seeds: &[String]) -> NodeConfig {
    NodeConfig {
        node_name: Some(name.to_owned()),
        seeds: seeds.to_vec(),
        seed_refresh_ms: 200,
        ..NodeConfig::loopback()
    }
}

/// A cookie of its own for each test cluster. Tests run side by side in one process, and a
/// port one test's node gave up can be bound by another test's node: with one shared cookie a
/// node reconnecting to its dead peer's address would join the other test's cluster.
fn fresh_cookie() -> String {
    format!("chat-test-cookie-{:032x}", rand::rng().random::<u128>())
}

/// Installs the process-wide tracing subscriber with the activity layer, as every node binary
/// does; a test binary can do it once, so it holds a single test that uses it.
pub fn record_activity() -> switchboard::activity::ActivityReceiver {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let (layer, receiver) = switchboard::activity::buffer(switchboard::activity::BUFFER);
    tracing_subscriber::registry()
        .with(layer.filtered())
        .try_init()
        .unwrap();
    receiver
}

/// Settings of a test http node.
pub fn http_settings() -> HttpSettings {
    HttpSettings {
        http_listen: "127.0.0.1:0".into(),
        admin_token: Some(switchboard_http::configuration::Secret::new(ADMIN_TOKEN)),
        rate_limit: 0,
        login_rate_limit: 0,
        stream_open_rate_limit: 0,
        ..HttpSettings::default()
    }
}

/// Database nodes and http nodes over one database.
pub struct Cluster {
    pub url: String,
    pub databases: Vec<Node>,
    pub https: Vec<(Node, String)>,
    pub logs: Vec<Node>,
    pub reportings: Vec<Node>,
    pub seed: String,
    /// This cluster's cookie (see [`fresh_cookie`]); child node processes are given it too.
    pub cookie: String,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// `databases` database nodes and `https` http nodes; `None` when the backend is unavailable.
    pub async fn start(backend: Backend, databases: usize, https: usize) -> Option<Cluster> {
        Self::start_with(backend, databases, https, http_settings()).await
    }

    pub async fn start_with(
        backend: Backend,
        databases: usize,
        https: usize,
        settings: HttpSettings,
    ) -> Option<Cluster> {
        let dir = tempfile::tempdir().unwrap();
        let url = database_url(backend, dir.path()).await?;
        let mut cluster = Cluster {
            url,
            databases: Vec::new(),
            https: Vec::new(),
            logs: Vec::new(),
            reportings: Vec::new(),
            seed: String::new(),
            cookie: fresh_cookie(),
            _dir: dir,
        };
        for _ in 0..databases {
            cluster.add_database().await;
        }
        for _ in 0..https {
            cluster.add_http(settings.clone()).await;
        }
        Some(cluster)
    }

    pub async fn add_database(&mut self) -> Node {
        let index = self.databases.len();
        let store = Store::connect(&self.url, 8)
            .await
            .expect("connect the store");
        let seeds: Vec<String> = [self.seed.clone()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect();
        let node = switchboard_database::serve(
            node_config(&format!("database{index}@test"), &seeds),
            self.node_cookie(),
            store,
            &DatabaseSettings::default(),
        )
        .await
        .unwrap();
        if self.seed.is_empty() {
            self.seed = node.address().to_owned();
        }
        self.databases.push(node.clone());
        node
    }

    /// Adds a log node.
    pub async fn add_log(&mut self) -> Node {
        let index = self.logs.len();
        let node = switchboard_log::start(
            node_config(
                &format!("log{index}@test"),
                std::slice::from_ref(&self.seed),
            ),
            self.node_cookie(),
        )
        .await
        .unwrap();
        self.logs.push(node.clone());
        node
    }

    /// Adds a reporting node with the given thresholds.
    pub async fn add_reporting(&mut self, thresholds: switchboard_reporting::Thresholds) -> Node {
        let index = self.reportings.len();
        let node = switchboard_reporting::serve(
            node_config(
                &format!("reporting{index}@test"),
                std::slice::from_ref(&self.seed),
            ),
            self.node_cookie(),
            thresholds,
        )
        .await
        .unwrap();
        self.reportings.push(node.clone());
        node
    }

    pub async fn add_http(&mut self, settings: HttpSettings) -> String {
        let index = self.https.len();
        let seeds: Vec<String> = [self.seed.clone()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect();
        let node = NodeBuilder::new(
            "http",
            node_config(&format!("http{index}@test"), &seeds),
            self.node_cookie(),
        )
        .start()
        .await
        .unwrap();
        if self.seed.is_empty() {
            self.seed = node.address().to_owned();
        }
        let port = switchboard_http::serve(&node, settings).await.unwrap();
        let base = format!("http://127.0.0.1:{port}");
        if !self.databases.is_empty() {
            assert!(node.wait_for_service("database", DEADLINE).await);
        }
        // Live events reach an http node once the database nodes know it is in `chat.events`.
        let name = node.name().to_owned();
        for database in &self.databases {
            let knows = switchboard::eventually(DEADLINE, || async {
                database.nodes().iter().any(|n| {
                    n.name == name
                        && n.state == switchboard::PeerState::Up
                        && n.groups.iter().any(|g| g == "chat.events")
                })
            })
            .await;
            assert!(
                knows,
                "{} never saw {name} join chat.events",
                database.name()
            );
        }
        self.https.push((node, base.clone()));
        base
    }

    /// Ships this process's recorded activity from http node 0 once the log service is
    /// reachable, waits for a full mesh, and returns the http node.
    pub async fn ship_activity(&self, receiver: switchboard::activity::ActivityReceiver) -> Node {
        let http = self.https[0].0.clone();
        assert!(http.wait_for_service("log", DEADLINE).await);
        switchboard::activity::ship(&http, receiver);
        self.wait_for_mesh().await;
        http
    }

    /// Waits until every node of the cluster sees every other one up: a full mesh.
    pub async fn wait_for_mesh(&self) {
        let nodes: Vec<&Node> = self
            .databases
            .iter()
            .chain(&self.logs)
            .chain(&self.reportings)
            .chain(self.https.iter().map(|(node, _)| node))
            .collect();
        let names: Vec<String> = nodes.iter().map(|n| n.name().to_owned()).collect();
        let meshed = switchboard::eventually(DEADLINE, || async {
            nodes.iter().all(|node| {
                let view = node.nodes();
                names.iter().all(|name| {
                    view.iter()
                        .any(|n| &n.name == name && n.state == switchboard::PeerState::Up)
                })
            })
        })
        .await;
        assert!(meshed, "the cluster never formed a full mesh");
    }

    /// This cluster's cookie, for a node joining it.
    pub fn node_cookie(&self) -> Cookie {
        Cookie::new(&self.cookie).unwrap()
    }

    /// A client of http node `index`.
    pub fn api(&self, index: usize) -> Api {
        Api::new(&self.https[index].1)
    }
}

/// A JSON client of one http node, optionally logged in.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub client: reqwest::Client,
    pub token: Option<String>,
    pub user_id: i64,
}

/// A reply: status, headers and JSON body (`Value::Null` when empty or not JSON).
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or_default()
    }

    /// The `seq` of every message of a page, in the page's order.
    pub fn seqs(&self) -> Vec<i64> {
        self.body["messages"]
            .as_array()
            .expect("a page of messages")
            .iter()
            .map(|m| m["seq"].as_i64().unwrap())
            .collect()
    }
}

impl Api {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            client: reqwest::Client::new(),
            token: None,
            user_id: 0,
        }
    }

    /// The same user against another http node.
    pub fn on(&self, base: &str) -> Self {
        Self {
            base: base.to_owned(),
            ..self.clone()
        }
    }

    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        request
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.request(Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(self.request(Method::POST, path).json(&body))
            .await
    }

    /// Registers a fresh user and returns a client logged in as them.
    pub async fn register(&self, username: &str) -> Api {
        let reply = self
            .post(
                "/v1/auth/register",
                json!({ "username": username, "password": "correct horse battery" }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        Api {
            token: Some(reply.body["token"].as_str().unwrap().to_owned()),
            user_id: reply.body["user"]["id"].as_i64().unwrap(),
            ..self.clone()
        }
    }

    /// Creates a room and returns its id.
    pub async fn create_room(&self, name: &str) -> i64 {
        let reply = self
            .post("/v1/rooms", json!({ "name": name, "topic": "testing" }))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        reply.body["id"].as_i64().unwrap()
    }

    /// Every message of `room`, oldest first, as (id, seq), read page by page.
    pub async fn stored(&self, room: i64) -> Vec<(i64, i64)> {
        let mut stored = Vec::new();
        let mut after = 0;
        loop {
            let page = self
                .get(&format!(
                    "/v1/rooms/{room}/messages?after={after}&limit=200"
                ))
                .await;
            let messages = page.body["messages"].as_array().unwrap().clone();
            if messages.is_empty() {
                return stored;
            }
            stored.extend(
                messages
                    .iter()
                    .map(|m| (m["id"].as_i64().unwrap(), m["seq"].as_i64().unwrap())),
            );
            after = page.body["next_after"].as_i64().unwrap();
        }
    }

    /// Posts a message and returns the reply.
    pub async fn post_message(&self, room: i64, body: &str, key: Option<&str>) -> Reply {
        let mut request = self
            .request(Method::POST, &format!("/v1/rooms/{room}/messages"))
            .json(&json!({ "body": body }));
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        self.send(request).await
    }
}

/// Generates one test per backend from an async fn taking a [`Backend`].
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::support::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::support::Backend::Postgres).await;
                }
            )*
        }
    };
}

/// One Server-Sent Event.
#[derive(Debug, Clone, Default)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

impl SseEvent {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or(Value::Null)
    }
}

/// Reads an SSE response event by event.
pub struct SseStream {
    response: reqwest::Response,
    buffer: String,
}

impl SseStream {
    /// Opens `/v1/rooms/{room}/events`, optionally resuming after a cursor.
    pub async fn open(
        api: &Api,
        room: i64,
        last_event_id: Option<&str>,
    ) -> Result<SseStream, Reply> {
        let mut request = api.request(Method::GET, &format!("/v1/rooms/{room}/events"));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.expect("request sent");
        if response.status() != StatusCode::OK {
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.json().await.unwrap_or(Value::Null);
            return Err(Reply {
                status,
                headers,
                body,
            });
        }
        Ok(SseStream {
            response,
            buffer: String::new(),
        })
    }

    /// The next event (comments skipped), or `None` if none arrives within `DEADLINE`.
    pub async fn next(&mut self) -> Option<SseEvent> {
        tokio::time::timeout(DEADLINE, self.next_event())
            .await
            .ok()
            .flatten()
    }

    async fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent::default();
                let mut saw_field = false;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        event.id = Some(v.trim().to_owned());
                        saw_field = true;
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event.event = v.trim().to_owned();
                        saw_field = true;
                    } else if let Some(v) = line.strip_prefix("data:") {
                        event.data.push_str(v.trim_start());
                        saw_field = true;
                    }
                }
                if saw_field {
                    return Some(event);
                }
                continue;
            }
            let chunk = self.response.chunk().await.ok()??;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}
