//! PostgreSQL for the chat family: a server to run against, a fresh database per run (dropped at
//! the end), the settings that decide what a commit costs, and the baseline the chat is held to:
//! a plain single-row autocommit `INSERT` loop into a table shaped like the chat's messages.
//!
//! The server is `SWITCHBOARD_BENCH_POSTGRES` (a URL without a database name) or, without it, the
//! one `.ci/postgres.sh` installs and starts, as the tests get theirs. When neither can be had
//! the family says why and measures nothing: there is no stand-in for a real database here.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use sqlx::{Connection, PgConnection};
use tokio::sync::Mutex;

/// The variable naming the server to use.
pub(crate) const SERVER_VARIABLE: &str = "SWITCHBOARD_BENCH_POSTGRES";

/// How long connecting, creating and dropping may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Connections opened at once (each pays a SCRAM handshake).
const CONNECTING: usize = 16;

/// The baseline's table: the chat's `messages` without the columns a post does not write, with
/// a bigserial key and an index like the chat's `UNIQUE (room_id, seq)`.
const RAW_TABLE: &str = "CREATE TABLE raw_messages (
    id         BIGSERIAL PRIMARY KEY,
    room_id    BIGINT NOT NULL,
    author_id  BIGINT NOT NULL,
    body       TEXT   NOT NULL,
    created_at BIGINT NOT NULL
)";
const RAW_INDEX: &str = "CREATE INDEX raw_messages_room ON raw_messages (room_id, id)";
const RAW_INSERT: &str =
    "INSERT INTO raw_messages (room_id, author_id, body, created_at) VALUES ($1, $2, $3, $4)";

/// A fresh database on a PostgreSQL server, for one run.
#[derive(Debug)]
pub(crate) struct Postgres {
    /// The server URL, without a database name (it carries the password: never printed).
    server: String,
    /// Where the server came from, for the report.
    pub(crate) source: String,
    /// `bench_<random>`.
    pub(crate) name: String,
    /// `SELECT version()`, `SHOW synchronous_commit`, `SHOW fsync`.
    pub(crate) version: String,
    pub(crate) synchronous_commit: String,
    pub(crate) fsync: String,
}

impl Postgres {
    /// Finds a server and creates a fresh database on it with the baseline's table. An error
    /// says why PostgreSQL could not be had.
    pub(crate) async fn create() -> anyhow::Result<Self> {
        let (server, source) = server().await?;
        let name = format!("bench_{:016x}", rand::random::<u64>());
        let setup = async {
            let mut admin = PgConnection::connect(&format!("{server}/postgres"))
                .await
                .with_context(|| format!("connecting to the PostgreSQL server ({source})"))?;
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut admin)
                .await
                .context("creating the bench's database")?;
            admin.close().await?;
            let mut db = PgConnection::connect(&format!("{server}/{name}")).await?;
            sqlx::query(RAW_TABLE).execute(&mut db).await?;
            sqlx::query(RAW_INDEX).execute(&mut db).await?;
            let show = |what: &'static str| sqlx::query_scalar::<_, String>(what);
            let version = show("SELECT version()").fetch_one(&mut db).await?;
            let synchronous_commit = show("SHOW synchronous_commit").fetch_one(&mut db).await?;
            let fsync = show("SHOW fsync").fetch_one(&mut db).await?;
            db.close().await?;
            anyhow::Ok((version, synchronous_commit, fsync))
        };
        let (version, synchronous_commit, fsync) = tokio::time::timeout(SETUP_TIMEOUT, setup)
            .await
            .context("setting up PostgreSQL timed out")??;
        Ok(Self {
            server,
            source,
            name,
            version: version.split(" on ").next().unwrap_or_default().to_owned(),
            synchronous_commit,
            fsync,
        })
    }

    /// The URL of the run's database, for the database node.
    pub(crate) fn url(&self) -> String {
        format!("{}/{}", self.server, self.name)
    }

    /// Opens `count` connections for the baseline, one per client.
    pub(crate) async fn raw_inserts(&self, count: usize) -> anyhow::Result<RawInserts> {
        let url = self.url();
        let connections: Vec<Mutex<PgConnection>> = futures::stream::iter(0..count)
            .map(|_| {
                let url = url.clone();
                async move { PgConnection::connect(&url).await.map(Mutex::new) }
            })
            .buffer_unordered(CONNECTING)
            .try_collect()
            .await
            .context("opening the baseline's connections")?;
        Ok(RawInserts {
            connections: Arc::new(connections),
        })
    }

    /// Drops the run's database (and whatever connections are still in it).
    pub(crate) async fn drop_database(self) -> anyhow::Result<()> {
        let drop = async {
            let mut admin = PgConnection::connect(&format!("{}/postgres", self.server)).await?;
            sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut admin)
            .await?;
            admin.close().await?;
            anyhow::Ok(())
        };
        tokio::time::timeout(SETUP_TIMEOUT, drop)
            .await
            .context("dropping the bench's database timed out")?
            .with_context(|| format!("dropping database {}", self.name))
    }
}

/// The server URL and where it came from: [`SERVER_VARIABLE`], else `.ci/postgres.sh`.
async fn server() -> anyhow::Result<(String, String)> {
    let configured = std::env::var(SERVER_VARIABLE).unwrap_or_default();
    if !configured.trim().is_empty() {
        return Ok((
            configured.trim().trim_end_matches('/').to_owned(),
            SERVER_VARIABLE.into(),
        ));
    }
    // The repository's script, found from where this crate was built.
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.ci/postgres.sh");
    if !script.exists() {
        bail!(
            "{SERVER_VARIABLE} is not set and {} does not exist",
            script.display()
        );
    }
    let output = tokio::process::Command::new("bash")
        .arg(&script)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {}", script.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let url = stdout.lines().rev().find(|l| l.starts_with("postgres"));
    match url {
        Some(url) if output.status.success() => {
            Ok((url.trim().to_owned(), ".ci/postgres.sh".to_owned()))
        }
        _ => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
            bail!(
                "{SERVER_VARIABLE} is not set and .ci/postgres.sh failed ({}): {}",
                output.status,
                tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
            )
        }
    }
}

/// The baseline: one connection per client, each looping a single-row autocommit `INSERT` (a
/// prepared statement, as sqlx caches it) of the same shape and size as a post.
#[derive(Debug, Clone)]
pub(crate) struct RawInserts {
    connections: Arc<Vec<Mutex<PgConnection>>>,
}

impl RawInserts {
    /// One insert on client `client`'s own connection (its lock is never contended: a client
    /// runs one insert at a time).
    pub(crate) async fn insert(&self, client: usize, room: i64, body: &str) -> anyhow::Result<()> {
        let mut connection = self.connections[client % self.connections.len()]
            .lock()
            .await;
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        sqlx::query(RAW_INSERT)
            .bind(room)
            .bind(client as i64 + 1)
            .bind(body)
            .bind(now_ms)
            .execute(&mut *connection)
            .await
            .context("a raw insert")?;
        Ok(())
    }

    /// Closes every connection.
    pub(crate) async fn close(self) {
        if let Ok(connections) = Arc::try_unwrap(self.connections) {
            for connection in connections {
                let _ = connection.into_inner().close().await;
            }
        }
    }
}
