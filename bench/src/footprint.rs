//! The `footprint` family: how much memory each node binary holds when idle. The bench starts
//! the five service binaries (`switchboard-log`, `-database`, `-reporting`, `-analytics` and
//! `-http`, built by `cargo build --release --workspace` next to the bench) as one cluster on
//! loopback, waits until the http node sees all five nodes up, lets them sit idle for the
//! point's time, and reads each process's resident set (`VmRSS`) and its peak since start
//! (`VmHWM`) from `/proc/<pid>/status`. The floor: each under 30 MiB.
//!
//! The nodes run as a cluster, not alone, because an idle production node holds its links,
//! membership and advertised services; alone it would look smaller than it ever is. Every
//! listener is on port 0, the database is the default SQLite file in a temporary directory, and
//! inherited `SWITCHBOARD_*` settings and `switchboard.toml` are kept out so the run measures the
//! defaults. Memory under load (such as per SSE connection) belongs to the families that make
//! the load.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::AUTHORIZATION;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::Rng;

use crate::cli::RunOptions;
use crate::echo_node::fresh_cookie;
use crate::server_process::{self, HTTP, NODE, ServerProcess};
use crate::stats::{Bound, Check};
use crate::table::{MIB, MemoryRow, Section, progress, seconds};

const TITLE: &str = "footprint: idle memory of each node binary (5-node cluster, loopback)";

/// The binaries, in the table's order.
const BINARIES: [&str; 5] = [
    "switchboard-http",
    "switchboard-log",
    "switchboard-database",
    "switchboard-reporting",
    "switchboard-analytics",
];

/// The node every other node is seeded with, started first.
const SEED: &str = "switchboard-log";

/// The http node, whose admin API tells when the cluster has formed.
const HTTP_NODE: &str = "switchboard-http";

/// The state every row is measured in.
const IDLE: &str = "idle";

/// The most an idle node may hold, in MiB.
const CEILING_MIB: f64 = 30.0;

/// How long the cluster may take to form once every node has started.
const FORMING: Duration = Duration::from_secs(30);

/// Runs the family and returns its section of the report: none when `--only` selects none of
/// its rows, and one saying so, with nothing measured, when a binary is missing.
pub(crate) async fn run(options: &RunOptions) -> anyhow::Result<Option<Section>> {
    let selected: Vec<&str> = BINARIES
        .into_iter()
        .filter(|binary| options.selects(binary, IDLE))
        .collect();
    if selected.is_empty() {
        return Ok(None);
    }
    if let Some(why) = server_process::missing_services(&BINARIES)? {
        return Ok(Some(Section::skipped(TITLE, why)));
    }
    let mut cluster = Cluster::start(options).await?;
    let settle = options.measure;
    progress(format_args!(
        "footprint: cluster of {} nodes up; idle for {} s",
        BINARIES.len(),
        seconds(settle)
    ));
    // "Idle" is defined by this window: readiness was a condition, this is only quiet time.
    tokio::time::sleep(settle).await;
    let mut memory = Vec::new();
    // Every node is read before any is stopped: a peer going away would wake the others.
    for (binary, process) in BINARIES.iter().zip(&mut cluster.processes) {
        process.check_alive()?;
        if !selected.contains(binary) {
            continue;
        }
        let now = process.memory()?;
        memory.push(MemoryRow {
            process: (*binary).into(),
            state: IDLE.into(),
            rss: now.rss,
            peak: now.peak,
        });
    }
    let checks = memory
        .iter()
        .map(|row| {
            Check::mebibytes(
                format!("{} idle RSS", row.process),
                row.rss as f64 / MIB,
                Bound::AtMost(CEILING_MIB),
            )
        })
        .collect();
    Ok(Some(Section {
        title: TITLE.into(),
        notes: vec![
            format!(
                "each binary from {} run as a process of its own on the servers' CPUs, all five \
                 one cluster (seeded with {SEED}), every listener on 127.0.0.1 port 0, SQLite in \
                 a temporary directory, default settings",
                cluster.dir.display()
            ),
            format!(
                "idle = after the http node's /v1/admin/cluster listed all five nodes up, {} s \
                 with no requests; took {} s from the first start to a formed cluster",
                seconds(settle),
                seconds(cluster.formed_after)
            ),
            "RSS = VmRSS, peak = VmHWM (since the process started, start-up and migrations \
             included), from /proc/<pid>/status; 1 MiB = 1,048,576 bytes"
                .into(),
        ],
        memory,
        checks,
        ..Section::default()
    }))
}

/// The five nodes, running, and what it took to get there.
#[derive(Debug)]
struct Cluster {
    /// In [`BINARIES`] order.
    processes: Vec<ServerProcess>,
    /// Where the binaries are.
    dir: PathBuf,
    formed_after: Duration,
    /// Holds every node's data directory until the nodes are gone (fields drop in order).
    _data: tempfile::TempDir,
}

impl Cluster {
    /// Starts the seed node, then the others seeded with it, each once it has said it started;
    /// then waits until the http node lists all of them up.
    async fn start(options: &RunOptions) -> anyhow::Result<Self> {
        let started = Instant::now();
        let data = tempfile::Builder::new()
            .prefix("switchboard-bench-footprint-")
            .tempdir()
            .context("a temporary directory for the nodes' data")?;
        let cookie = fresh_cookie();
        let token = format!("{:032x}", rand::rng().random::<u128>());
        let seed = BINARIES.iter().position(|b| *b == SEED).unwrap_or(0);
        let mut order: Vec<usize> = (0..BINARIES.len()).collect();
        order.swap(0, seed);
        let mut processes: Vec<Option<ServerProcess>> = BINARIES.iter().map(|_| None).collect();
        let mut seed_address = None;
        for index in order {
            let binary = BINARIES[index];
            let mut env = vec![
                ("RUST_LOG", "info".into()),
                ("SWITCHBOARD_LOG_FORMAT", "json".into()),
                ("SWITCHBOARD_CONFIG", data.path().join("absent.toml").into()),
                ("SWITCHBOARD_COOKIE", cookie.clone().into()),
                ("SWITCHBOARD_LISTEN", "127.0.0.1:0".into()),
                ("SWITCHBOARD_DATA_DIR", data.path().join(binary).into()),
            ];
            if let Some(seed) = &seed_address {
                env.push(("SWITCHBOARD_SEEDS", OsString::from(seed)));
            }
            let ready = if binary == HTTP_NODE {
                env.push(("SWITCHBOARD_HTTP_LISTEN", "127.0.0.1:0".into()));
                env.push(("SWITCHBOARD_ADMIN_TOKEN", token.clone().into()));
                HTTP
            } else {
                NODE
            };
            let process = ServerProcess::workspace_binary(
                binary,
                options,
                env,
                server_process::service_log_line,
                &[ready],
            )?;
            if seed_address.is_none() {
                seed_address = Some(process.address.clone());
            }
            processes[index] = Some(process);
        }
        let processes: Vec<ServerProcess> = processes.into_iter().flatten().collect();
        let http = BINARIES
            .iter()
            .position(|b| *b == HTTP_NODE)
            .context("the http node is one of the binaries")?;
        await_cluster(&processes[http].address, &token).await?;
        let seed_path = server_process::sibling(SEED)?;
        let dir = seed_path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Ok(Self {
            processes,
            dir,
            formed_after: started.elapsed(),
            _data: data,
        })
    }
}

/// Polls the http node's admin view of the cluster until it lists every binary's node, all up.
async fn await_cluster(http: &str, token: &str) -> anyhow::Result<()> {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let uri: hyper::Uri = format!("http://{http}/v1/admin/cluster")
        .parse()
        .context("the cluster URI")?;
    let deadline = Instant::now() + FORMING;
    loop {
        let request = hyper::Request::get(uri.clone())
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .body(Empty::new())?;
        let last = match client.request(request).await {
            Ok(response) => {
                let status = response.status();
                let body = response.into_body().collect().await?.to_bytes();
                if status.is_success() && nodes_up(&body)? >= BINARIES.len() {
                    return Ok(());
                }
                format!("{status}: {}", String::from_utf8_lossy(&body))
            }
            Err(error) => error.to_string(),
        };
        if Instant::now() > deadline {
            bail!(
                "the cluster did not form within {} s; the http node last said {last}",
                FORMING.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many nodes of a `/v1/admin/cluster` reply are this node or up.
fn nodes_up(body: &[u8]) -> anyhow::Result<usize> {
    let cluster: serde_json::Value =
        serde_json::from_slice(body).context("the cluster view is not JSON")?;
    let nodes = cluster["nodes"]
        .as_array()
        .context("the cluster view has no `nodes`")?;
    Ok(nodes
        .iter()
        .filter(|node| matches!(node["state"].as_str(), Some("self" | "up")))
        .count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_nodes_up_in_the_cluster_view() {
        let body = br#"{"nodes":[{"name":"http@vm","state":"self"},{"name":"log@vm","state":"up"},{"name":"db@vm","state":"down (timeout)"}]}"#;
        assert_eq!(nodes_up(body).unwrap(), 2);
        assert!(nodes_up(b"{}").is_err());
        assert!(nodes_up(b"<html>").is_err());
    }
}
