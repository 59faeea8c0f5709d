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
use std::sync::atomic::AtomicU64;

use bytes::Bytes;
use switchboard::{Cookie, Node, NodeBuilder, NodeConfig};
use tonic::transport::Channel;

use crate::baseline::json_http::JsonClient;
use crate::baseline::tonic_echo::proto::echo_client::EchoClient;
use crate::baseline::tonic_echo::{self, Pipeline};
use crate::cli::{RunOptions, ServerKind};
use crate::echo_node::{self, ECHO, PAYLOAD_BYTES, RemoteEcho, call_point, fresh_cookie};
use crate::points::{Point, find, measure_in_turn, selected};
use crate::server_process::ServerProcess;
use crate::stats::{Bound, Check, p50_ratio, throughput_ratio};
use crate::table::{Row, Section};

/// The concurrency of the "many in flight" points.
const MANY: usize = 64;

/// The points' names, shared by the table and the checks.
const REMOTE: &str = "Switchboard remote call";
const CAST: &str = "Switchboard group cast (delivered)";
const LOCAL: &str = "Switchboard local call";
const UNARY: &str = "tonic unary echo";
const STREAM: &str = "tonic bidi stream echo";
const JSON: &str = "JSON/HTTP echo (axum + hyper)";

const TITLE: &str =
    "runtime: Switchboard calls vs plain tonic and JSON/HTTP (2 processes, loopback)";

/// Every server and client the family measures, started once and kept up for the whole run,
/// so the points can take turns.
#[derive(Debug)]
struct Fixture {
    remote: RemoteEcho,
    servers: Vec<ServerProcess>,
    local: Node,
    tonic: EchoClient<Channel>,
    pipeline: Pipeline,
    json: JsonClient,
}

impl Fixture {
    async fn start(options: &RunOptions) -> anyhow::Result<Self> {
        let remote = RemoteEcho::start(options).await?;
        let tonic_server = ServerProcess::bench(ServerKind::Tonic, options, &[])?;
        let json_server = ServerProcess::bench(ServerKind::JsonHttp, options, &[])?;
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
            remote,
            servers: vec![tonic_server, json_server],
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
        self.remote.finish().await?;
        self.local.shutdown().await;
        Ok(())
    }
}

/// Runs the family and returns its section of the report (none when `--only` selects none of
/// its points).
pub(crate) async fn run(options: &RunOptions) -> anyhow::Result<Option<Section>> {
    let payload = echo_node::payload(PAYLOAD_BYTES);
    let fixture = Fixture::start(options).await?;
    let points = selected(points(&fixture, &payload), options);
    if points.is_empty() {
        fixture.finish().await?;
        return Ok(None);
    }
    let rows = measure_in_turn("runtime", points, options).await?;
    let casts = fixture.remote.casts.clone();
    fixture.finish().await?;
    let server = echo_node::server_description(options);
    let checks = checks(&rows);
    Ok(Some(Section {
        title: TITLE.into(),
        notes: vec![
            format!(
                "payload {PAYLOAD_BYTES} B; 'in flight' = concurrent tasks each looping call -> await"
            ),
            format!("Switchboard server: {server}"),
            casts.note("group cast", "broadcast", options),
            "local call: the provider is hosted by the calling node, in the bench process".into(),
            "tonic stream: one bidirectional stream, requests pipelined, replies matched in order"
                .into(),
            "JSON/HTTP: axum server, hyper-util legacy client, HTTP/1.1 keep-alive pool".into(),
        ],
        rows,
        checks,
        ..Section::default()
    }))
}

/// The points, in table order.
fn points(fixture: &Fixture, payload: &Bytes) -> Vec<Point> {
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
    vec![
        fixture.remote.call_point(REMOTE, 1, payload),
        fixture.remote.call_point(REMOTE, MANY, payload),
        fixture.remote.cast_point(CAST, payload),
        call_point(&fixture.local, LOCAL, 1, payload),
        call_point(&fixture.local, LOCAL, MANY, payload),
        Point::closed(UNARY, 1, unary.clone()),
        Point::closed(UNARY, MANY, unary),
        Point::closed(STREAM, 1, stream.clone()),
        Point::closed(STREAM, MANY, stream),
        Point::closed(JSON, 1, json.clone()),
        Point::closed(JSON, MANY, json),
    ]
}

/// The floors. A ratio whose points were not measured (see `--only`) is not a number, and its
/// check reads n/a.
fn checks(rows: &[Row]) -> Vec<Check> {
    let many = MANY.to_string();
    let remote_1 = find(rows, REMOTE, "1");
    let remote_many = find(rows, REMOTE, &many);
    let local_many = find(rows, LOCAL, &many);
    let unary_many = find(rows, UNARY, &many);
    let stream_1 = find(rows, STREAM, "1");
    let stream_many = find(rows, STREAM, &many);
    let json_many = find(rows, JSON, &many);
    vec![
        Check::new(
            format!("remote call @{MANY} / tonic unary @{MANY} (throughput)"),
            throughput_ratio(&remote_many, &unary_many),
            Bound::AtLeast(1.5),
        ),
        Check::new(
            format!("remote call @{MANY} / JSON/HTTP @{MANY} (throughput)"),
            throughput_ratio(&remote_many, &json_many),
            Bound::AtLeast(1.25),
        ),
        Check::new(
            format!("remote call @{MANY} / tonic stream @{MANY} (throughput)"),
            throughput_ratio(&remote_many, &stream_many),
            Bound::AtLeast(0.7),
        ),
        Check::new(
            "remote call p50 @1 / tonic stream p50 @1 (latency)",
            p50_ratio(&remote_1, &stream_1),
            Bound::AtMost(1.3),
        ),
        Check::new(
            format!("local call @{MANY} / remote call @{MANY} (throughput)"),
            throughput_ratio(&local_many, &remote_many),
            Bound::AtLeast(20.0),
        ),
    ]
}
