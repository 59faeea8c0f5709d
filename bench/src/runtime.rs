//! The `runtime` scenario family: what a Switchboard call costs, measured side by side with the
//! transports it competes with, all in one run under the same worker counts and payload.
//!
//! Points: a remote `call` (bench node -> server node in another process) at 1 and 64 in flight;
//! one-way group messages (`broadcast` to the server's `echo` group, counted by the server and
//! read back with its `received` method); a local call (provider in the bench's own process) at
//! 1 and 64 in flight; and the baselines, tonic unary, one pipelined tonic bidirectional stream
//! and JSON over HTTP/1.1, each at 1 and 64 in flight. The checks are the floors the runtime
//! promises relative to those baselines.
//!
//! Every server and client is started once and the points take turns, a slice each per round,
//! so that a ratio compares points measured under the same conditions: on a small shared
//! machine, other work and the CPUs' idle states shift results over a run by far more than the
//! differences being measured.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use switchboard::{CallOptions, Cookie, Node, NodeBuilder, NodeConfig};
use tonic::transport::Channel;

use crate::baseline::json_http::JsonClient;
use crate::baseline::tonic_echo::proto::echo_client::EchoClient;
use crate::baseline::tonic_echo::{self, Pipeline};
use crate::cli::{RunOptions, ServerKind};
use crate::echo_node::{self, ECHO, PAYLOAD_BYTES, SERVER_NAME, fresh_cookie};
use crate::points::{Point, closed_point, measure_in_turn, selected};
use crate::server_process::ServerProcess;
use crate::stats::{Bound, Check, Measurement, Tally, p50_ratio, throughput_ratio};
use crate::table::{Row, Section, seconds, thousands};

/// The concurrency of the "many in flight" points.
const MANY: usize = 64;

/// The points' names, shared by the table and the checks.
const REMOTE: &str = "Switchboard remote call";
const CAST: &str = "Switchboard group cast (delivered)";
const LOCAL: &str = "Switchboard local call";
const UNARY: &str = "tonic unary echo";
const STREAM: &str = "tonic bidi stream echo";
const JSON: &str = "JSON/HTTP echo (axum + hyper)";

/// Group messages sent between yields to the scheduler, so the link's writer gets to run.
const CAST_BURST: usize = 64;

/// Every server and client the family measures, started once and kept up for the whole run,
/// so the points can take turns.
#[derive(Debug)]
struct Fixture {
    servers: Vec<ServerProcess>,
    remote: Node,
    local: Node,
    tonic: EchoClient<Channel>,
    pipeline: Pipeline,
    json: JsonClient,
}

impl Fixture {
    async fn start(options: &RunOptions) -> anyhow::Result<Self> {
        let cookie = fresh_cookie();
        let node_server = echo_node::start_server(options, SERVER_NAME, &cookie)?;
        let tonic_server = ServerProcess::bench(ServerKind::Tonic, options, &[])?;
        let json_server = ServerProcess::bench(ServerKind::JsonHttp, options, &[])?;
        let remote = echo_node::client_node(&cookie, &[&node_server]).await?;
        // A node of its own, linked to nobody, hosting the provider its calls go to.
        let config = NodeConfig {
            node_name: Some("bench-local".into()),
            ..NodeConfig::loopback()
        };
        let local = NodeBuilder::new("bench-local", config, Cookie::new(fresh_cookie())?)
            .service(
                ECHO,
                echo_node::service("bench-local", Arc::new(AtomicU64::new(0))),
            )
            .start()
            .await?;
        let tonic = tonic_echo::connect(&tonic_server.address).await?;
        // The stream gets a connection of its own, as the runtime's data lane has.
        let pipeline = Pipeline::open(tonic_echo::connect(&tonic_server.address).await?).await?;
        let json = JsonClient::new(&json_server.address)?;
        Ok(Self {
            servers: vec![node_server, tonic_server, json_server],
            remote,
            local,
            tonic,
            pipeline,
            json,
        })
    }

    /// Fails if any server died during the run, then stops the in-process nodes.
    async fn finish(mut self) -> anyhow::Result<()> {
        for server in &mut self.servers {
            server.check_alive()?;
        }
        self.remote.shutdown().await;
        self.local.shutdown().await;
        Ok(())
    }
}

/// Runs the family and returns its section of the report (none when `--only` selects none of
/// its points).
pub(crate) async fn run(options: &RunOptions) -> anyhow::Result<Option<Section>> {
    let payload = echo_node::payload(PAYLOAD_BYTES);
    let fixture = Fixture::start(options).await?;
    let casts = Arc::new(CastCounts::default());
    let mut points = selected(points(&fixture, &payload, &casts), options);
    if points.is_empty() {
        fixture.finish().await?;
        return Ok(None);
    }
    measure_in_turn("runtime", &mut points, options).await?;
    fixture.finish().await?;
    let rows: Vec<Row> = points.into_iter().map(Point::into_row).collect();
    let server = echo_node::server_description(options);
    let checks = checks(&rows);
    Ok(Some(Section {
        title: "runtime: Switchboard calls vs plain tonic and JSON/HTTP (2 processes, loopback)"
            .into(),
        notes: vec![
            format!(
                "payload {PAYLOAD_BYTES} B; 'in flight' = concurrent tasks each looping call -> await"
            ),
            format!("Switchboard server: {server}"),
            casts.note(options),
            "local call: the provider is hosted by the calling node, in the bench process".into(),
            "tonic stream: one bidirectional stream, requests pipelined, replies matched in order"
                .into(),
            "JSON/HTTP: axum server, hyper-util legacy client, HTTP/1.1 keep-alive pool".into(),
        ],
        rows,
        observations: Vec::new(),
        checks,
    }))
}

/// The points, in table order.
fn points(fixture: &Fixture, payload: &Bytes, casts: &Arc<CastCounts>) -> Vec<Point> {
    let call = |node: &Node| {
        let node = node.clone();
        let payload = payload.clone();
        move || echo_node::echo_once(node.clone(), payload.clone())
    };
    let unary = {
        let client = fixture.tonic.clone();
        let payload = payload.clone();
        move || tonic_echo::unary(client.clone(), payload.clone())
    };
    let stream = {
        let pipeline = fixture.pipeline.clone();
        let payload = payload.clone();
        move || {
            let pipeline = pipeline.clone();
            let payload = payload.clone();
            async move { pipeline.echo(payload).await }
        }
    };
    let json = {
        let client = fixture.json.clone();
        let text: Arc<str> = String::from_utf8_lossy(payload).into();
        move || {
            let client = client.clone();
            let text = text.clone();
            async move { client.echo(&text).await }
        }
    };
    let cast = {
        let node = fixture.remote.clone();
        let payload = payload.clone();
        let casts = casts.clone();
        Point {
            scenario: CAST,
            in_flight: "one-way".into(),
            unit: "msgs",
            slice: Box::new(move |warmup, measure| {
                Box::pin(group_cast(
                    node.clone(),
                    payload.clone(),
                    casts.clone(),
                    warmup,
                    measure,
                ))
            }),
            tally: Tally::default(),
        }
    };
    vec![
        closed_point(REMOTE, 1, call(&fixture.remote)),
        closed_point(REMOTE, MANY, call(&fixture.remote)),
        cast,
        closed_point(LOCAL, 1, call(&fixture.local)),
        closed_point(LOCAL, MANY, call(&fixture.local)),
        closed_point(UNARY, 1, unary.clone()),
        closed_point(UNARY, MANY, unary),
        closed_point(STREAM, 1, stream.clone()),
        closed_point(STREAM, MANY, stream),
        closed_point(JSON, 1, json.clone()),
        closed_point(JSON, MANY, json),
    ]
}

/// The floors. A ratio whose points were not measured (see `--only`) is not a number, and its
/// check reads n/a.
fn checks(rows: &[Row]) -> Vec<Check> {
    let unmeasured = Measurement::rate(0, Duration::ZERO);
    let find = |scenario: &str, in_flight: usize| {
        rows.iter()
            .find(|row| row.scenario == scenario && row.in_flight == in_flight.to_string())
            .map_or(&unmeasured, |row| &row.measurement)
    };
    let remote_1 = find(REMOTE, 1);
    let remote_many = find(REMOTE, MANY);
    let local_many = find(LOCAL, MANY);
    let unary_many = find(UNARY, MANY);
    let stream_1 = find(STREAM, 1);
    let stream_many = find(STREAM, MANY);
    let json_many = find(JSON, MANY);
    vec![
        Check::new(
            format!("remote call @{MANY} / tonic unary @{MANY} (throughput)"),
            throughput_ratio(remote_many, unary_many),
            Bound::AtLeast(1.5),
        ),
        Check::new(
            format!("remote call @{MANY} / JSON/HTTP @{MANY} (throughput)"),
            throughput_ratio(remote_many, json_many),
            Bound::AtLeast(1.25),
        ),
        Check::new(
            format!("remote call @{MANY} / tonic stream @{MANY} (throughput)"),
            throughput_ratio(remote_many, stream_many),
            Bound::AtLeast(0.7),
        ),
        Check::new(
            "remote call p50 @1 / tonic stream p50 @1 (latency)",
            p50_ratio(remote_1, stream_1),
            Bound::AtMost(1.3),
        ),
        Check::new(
            format!("local call @{MANY} / remote call @{MANY} (throughput)"),
            throughput_ratio(local_many, remote_many),
            Bound::AtLeast(20.0),
        ),
    ]
}

/// How many group messages the server has received so far.
async fn received(node: &Node) -> anyhow::Result<u64> {
    let reply = node
        .call(ECHO, "received", Bytes::new(), CallOptions::default())
        .await?;
    std::str::from_utf8(&reply)?
        .parse()
        .context("the server's `received` count")
}

/// Broadcasts to the server's `echo` group from a task on the client's workers for `duration`,
/// yielding every few messages so the link's writer runs. Returns (queued, refused because the
/// link's queue was full).
async fn send_group_messages(
    node: &Node,
    payload: &Bytes,
    duration: Duration,
) -> anyhow::Result<(u64, u64)> {
    let node = node.clone();
    let payload = payload.clone();
    let sender = tokio::spawn(async move {
        let end = Instant::now() + duration;
        let (mut queued, mut refused) = (0u64, 0u64);
        while Instant::now() < end {
            for _ in 0..CAST_BURST {
                if node.broadcast(ECHO, "count", payload.clone()) > 0 {
                    queued += 1;
                } else {
                    refused += 1;
                    break;
                }
            }
            tokio::task::yield_now().await;
        }
        (queued, refused)
    });
    sender.await.context("the group sender panicked")
}

/// Waits until the server has received `target` group messages; returns the count reached.
/// Gives up after a second without progress (messages lost) and reports what arrived.
async fn await_delivery(node: &Node, target: u64) -> anyhow::Result<u64> {
    let mut last = received(node).await?;
    let mut last_progress = Instant::now();
    while last < target {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let now = received(node).await?;
        if now > last {
            last = now;
            last_progress = Instant::now();
        } else if last_progress.elapsed() > Duration::from_secs(1) {
            break;
        }
    }
    Ok(last)
}

/// Group messages queued and refused over every slice, for the report's note.
#[derive(Debug, Default)]
struct CastCounts {
    queued: AtomicU64,
    delivered: AtomicU64,
    refused: AtomicU64,
}

impl CastCounts {
    fn note(&self, options: &RunOptions) -> String {
        let count = |n: &AtomicU64| thousands(n.load(Ordering::Relaxed) as f64);
        format!(
            "group cast: `broadcast` to the server's `echo` group, {CAST_BURST} per scheduler \
             turn, for {} s; {} queued, {} delivered (the server's `received`), {} refused by a \
             full link queue (not counted); rate = delivered / (first send to last delivery)",
            seconds(options.measure),
            count(&self.queued),
            count(&self.delivered),
            count(&self.refused),
        )
    }
}

/// One slice of one-way messages: broadcasts for the window, then waits until the server has
/// received them all. The rate is messages delivered over the time from the first send to the
/// last delivery, so nothing still queued counts.
async fn group_cast(
    node: Node,
    payload: Bytes,
    counts: Arc<CastCounts>,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<Tally> {
    let start = received(&node).await?;
    let (warm, _) = send_group_messages(&node, &payload, warmup).await?;
    let before = await_delivery(&node, start + warm).await?;
    let started = Instant::now();
    let (queued, refused) = send_group_messages(&node, &payload, measure).await?;
    let after = await_delivery(&node, before + queued).await?;
    let elapsed = started.elapsed();
    let delivered = after - before;
    if delivered == 0 {
        bail!("no group message reached the server");
    }
    counts.queued.fetch_add(queued, Ordering::Relaxed);
    counts.delivered.fetch_add(delivered, Ordering::Relaxed);
    counts.refused.fetch_add(refused, Ordering::Relaxed);
    Ok(Tally::counted(delivered, elapsed))
}
