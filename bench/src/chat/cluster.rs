//! The chat's nodes as the bench runs them: the real `switchboard-database` and
//! `switchboard-http` binaries (built beside the bench by `cargo build --release --workspace`),
//! each a process of its own on loopback ports the kernel picks, linked by a fresh cookie.
//!
//! The bench learns where each node listens from its JSON log lines (`node started` carries the
//! inter-node address, `http API listening` the API port: see
//! [`crate::server_process::service_log_line`]), so no port is fixed. The one
//! exception is the database node's metrics endpoint, whose bound port is not logged: it gets a
//! port the kernel just handed out and the bench released. Nodes log at `warn` except those two
//! lines, so the per-post activity lines (`message posted`, at `info`) are not written to a pipe
//! the bench would have to drain during the measurement.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, ensure};
use hyper::StatusCode;

use super::api::Api;
use crate::cli::RunOptions;
use crate::echo_node::fresh_cookie;
use crate::server_process::{HTTP, NODE, ServerProcess, service_log_line};

/// The log filter of every node: quiet, but for the lines that announce the addresses.
const LOG_FILTER: &str = "warn,switchboard::node=info,switchboard_http::startup=info";

/// How long a node may take to serve (the database node migrates a fresh database first).
const READY_DEADLINE: Duration = Duration::from_secs(30);

/// One database node and the http nodes in front of it.
#[derive(Debug)]
pub(crate) struct Cluster {
    pub(crate) database: ServerProcess,
    /// The database node's `/metrics` endpoint (`host:port`).
    metrics: String,
    cookie: String,
    /// The nodes' data directory (unused with PostgreSQL, but the database node creates it).
    data_dir: PathBuf,
}

impl Cluster {
    /// Starts a database node on `database_url`, writing batches of posts as `batch_writes`
    /// says (`SWITCHBOARD_BATCH_WRITES`: `guarded` or `locked`).
    pub(crate) fn start(
        options: &RunOptions,
        database_url: &str,
        batch_writes: &str,
    ) -> anyhow::Result<Self> {
        let cookie = fresh_cookie();
        let data_dir =
            std::env::temp_dir().join(format!("switchboard-bench-{:016x}", rand::random::<u64>()));
        let metrics = format!("127.0.0.1:{}", free_port()?);
        let data = data_dir.display().to_string();
        let mut env = common_env(options, &cookie, &data);
        env.extend([
            ("SWITCHBOARD_NODE_NAME", "bench-database".to_owned()),
            ("DATABASE_URL", database_url.to_owned()),
            ("SWITCHBOARD_METRICS_LISTEN", metrics.clone()),
            ("SWITCHBOARD_BATCH_WRITES", batch_writes.to_owned()),
        ]);
        let database = ServerProcess::workspace_binary(
            "switchboard-database",
            options,
            env,
            service_log_line,
            &[NODE],
        )?;
        Ok(Self {
            database,
            metrics,
            cookie,
            data_dir,
        })
    }

    /// Starts http node `name`, seeded with the database node, and waits until its `/readyz`
    /// answers (a database node answers its calls). Returns the process and a client of its API.
    pub(crate) async fn add_http(
        &self,
        options: &RunOptions,
        name: &str,
    ) -> anyhow::Result<(ServerProcess, Api)> {
        self.add_http_with(options, name, &[]).await
    }

    /// [`Cluster::add_http`] with `settings` added to its environment.
    pub(crate) async fn add_http_with(
        &self,
        options: &RunOptions,
        name: &str,
        settings: &[(&'static str, String)],
    ) -> anyhow::Result<(ServerProcess, Api)> {
        let data = self.data_dir.display().to_string();
        let mut env = common_env(options, &self.cookie, &data);
        env.extend([
            ("SWITCHBOARD_NODE_NAME", name.to_owned()),
            (
                "SWITCHBOARD_SEEDS",
                self.database.announced(NODE)?.to_owned(),
            ),
            ("SWITCHBOARD_HTTP_LISTEN", "127.0.0.1:0".to_owned()),
            // One client per user here is far beyond the default 1,200 requests a minute.
            ("SWITCHBOARD_RATE_LIMIT", "0".to_owned()),
            ("SWITCHBOARD_LOGIN_RATE_LIMIT", "0".to_owned()),
        ]);
        env.extend(settings.iter().cloned());
        let process = ServerProcess::workspace_binary(
            "switchboard-http",
            options,
            env,
            service_log_line,
            &[HTTP, NODE],
        )?;
        let api = Api::new(process.announced(HTTP)?);
        let ready = switchboard::eventually(READY_DEADLINE, || async {
            matches!(api.text("/readyz").await, Ok((StatusCode::OK, _)))
        })
        .await;
        ensure!(ready, "{name} was not ready within {READY_DEADLINE:?}");
        Ok((process, api))
    }

    /// A reader of the database node's group-commit histogram.
    pub(crate) fn metrics_reader(&self) -> MetricsReader {
        MetricsReader {
            api: Api::new(&self.metrics),
        }
    }

    /// Fails if the database node died, then removes the data directory.
    pub(crate) fn finish(mut self) -> anyhow::Result<()> {
        self.database.check_alive()?;
        let _ = std::fs::remove_dir_all(&self.data_dir);
        Ok(())
    }
}

/// The environment every node gets. Nothing else `SWITCHBOARD_*` reaches it (see
/// [`ServerProcess::workspace_binary`]), and `SWITCHBOARD_CONFIG` names a file that does not
/// exist, so a `switchboard.toml` in the working directory is not read either.
fn common_env(options: &RunOptions, cookie: &str, data_dir: &str) -> Vec<(&'static str, String)> {
    vec![
        ("SWITCHBOARD_COOKIE", cookie.to_owned()),
        ("SWITCHBOARD_LISTEN", "127.0.0.1:0".to_owned()),
        ("SWITCHBOARD_DATA_DIR", data_dir.to_owned()),
        ("SWITCHBOARD_CONFIG", format!("{data_dir}/no-such-config")),
        ("SWITCHBOARD_LOG_FORMAT", "json".to_owned()),
        ("RUST_LOG", LOG_FILTER.to_owned()),
        // The node binaries use `#[tokio::main]`, which reads this for its worker count.
        ("TOKIO_WORKER_THREADS", options.server_workers.to_string()),
    ]
}

/// A loopback port nobody listens on right now: bound, read and released. Only for the metrics
/// endpoint, whose bound port the node does not log.
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Reads the database node's `/metrics`; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct MetricsReader {
    api: Api,
}

impl MetricsReader {
    /// The group-commit histogram so far.
    pub(crate) async fn read(&self) -> anyhow::Result<Batches> {
        let (status, text) = self.api.text("/metrics").await?;
        ensure!(
            status == StatusCode::OK,
            "the database node's /metrics answered {status}"
        );
        Batches::parse(&text).context("no group-commit histogram on the database node's /metrics")
    }
}

/// The database node's `group_commit_batch_posts` histogram: posts written and transactions
/// committed, and batches that fell back to one post at a time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Batches {
    pub(crate) posts: f64,
    pub(crate) commits: f64,
    pub(crate) fallbacks: f64,
}

/// The value of the first series in Prometheus text whose name ends with `suffix` (whatever
/// prefix and labels the node adds).
pub(crate) fn metric(text: &str, suffix: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            let name = name.split('{').next()?;
            name.ends_with(suffix).then(|| value.parse::<f64>().ok())?
        })
}

impl Batches {
    /// Reads the histogram out of Prometheus text.
    fn parse(text: &str) -> Option<Self> {
        let value = |suffix: &str| metric(text, suffix);
        Some(Self {
            posts: value("group_commit_batch_posts_sum")?,
            commits: value("group_commit_batch_posts_count")?,
            fallbacks: value("group_commit_fallbacks_total").unwrap_or(0.0),
        })
    }

    /// What happened between `earlier` and `self`.
    pub(crate) fn since(self, earlier: Batches) -> Batches {
        Batches {
            posts: self.posts - earlier.posts,
            commits: self.commits - earlier.commits,
            fallbacks: self.fallbacks - earlier.fallbacks,
        }
    }

    /// Adds another stretch of batches.
    pub(crate) fn add(&mut self, more: Batches) {
        self.posts += more.posts;
        self.commits += more.commits;
        self.fallbacks += more.fallbacks;
    }

    /// Mean posts per commit.
    pub(crate) fn mean(&self) -> f64 {
        if self.commits > 0.0 {
            self.posts / self.commits
        } else {
            f64::NAN
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_group_commit_histogram() {
        let text = "\
# HELP switchboard_group_commit_batch_posts Posts written per group-commit transaction
# TYPE switchboard_group_commit_batch_posts histogram
switchboard_group_commit_batch_posts_bucket{node=\"db\",le=\"1\"} 3
switchboard_group_commit_batch_posts_sum{node=\"db\"} 120
switchboard_group_commit_batch_posts_count{node=\"db\"} 10
switchboard_group_commit_fallbacks_total{node=\"db\"} 1
";
        let batches = Batches::parse(text).unwrap();
        assert_eq!(
            batches,
            Batches {
                posts: 120.0,
                commits: 10.0,
                fallbacks: 1.0
            }
        );
        assert_eq!(batches.mean(), 12.0);
        let later = Batches {
            posts: 220.0,
            commits: 15.0,
            fallbacks: 1.0,
        };
        assert_eq!(later.since(batches).mean(), 20.0);
        assert!(Batches::default().mean().is_nan());
        assert_eq!(Batches::parse("unrelated_metric 1"), None);
    }
}
