//! The bench's side of the Switchboard echo scenarios, shared by every family that measures
//! Switchboard between two processes: a server node (see [`crate::echo_node`]) in a process of
//! its own, a client node in the bench linked to it, and the two point shapes run against them:
//! a remote `echo` call in a closed loop, and one-way group messages counted where they arrive.
//!
//! One-way messages have no reply to time, so their rate is what the server *received*: the bench
//! broadcasts to the server's `echo` group for the window, then polls the server's `received`
//! count until everything sent has arrived, and divides by the time from the first send to the
//! last delivery. Nothing still queued counts.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use rand::Rng;
use switchboard::{CallOptions, Cookie, Node, NodeBuilder, NodeConfig};

use crate::cli::{RunOptions, ServerKind};
use crate::echo_node::{ECHO, SERVER_NAME};
use crate::points::Point;
use crate::server_process::ServerProcess;
use crate::stats::Tally;
use crate::table::{seconds, thousands};

/// The payload every scenario carries, in bytes.
pub(crate) const PAYLOAD_BYTES: usize = 150;

/// Group messages sent between yields to the scheduler, so the link's writer gets to run.
const CAST_BURST: usize = 64;

/// A Switchboard server node in its own process and the bench's client node linked to it.
#[derive(Debug)]
pub(crate) struct RemoteEcho {
    pub(crate) server: ServerProcess,
    pub(crate) node: Node,
    /// The one-way messages sent and delivered over the run, for the section's note.
    pub(crate) casts: Arc<CastCounts>,
}

impl RemoteEcho {
    /// Starts the server node (the bench re-executed as `serve-node`, or `switchboard-testnode`
    /// with `--testnode`) and a client node named `client_name`, links them, and waits until the
    /// client sees the server's `echo` service.
    pub(crate) async fn start(options: &RunOptions, client_name: &str) -> anyhow::Result<Self> {
        let cookie = fresh_cookie();
        let server = if options.testnode {
            ServerProcess::testnode(SERVER_NAME, &cookie, options)?
        } else {
            ServerProcess::bench(
                ServerKind::Node,
                options,
                &[("SWITCHBOARD_COOKIE", cookie.as_str())],
            )?
        };
        let config = NodeConfig {
            node_name: Some(client_name.into()),
            ..NodeConfig::loopback()
        };
        let node = NodeBuilder::new(client_name, config, Cookie::new(&cookie)?)
            .start()
            .await?;
        node.connect(&server.address)
            .await
            .context("connecting the bench node to the server node")?;
        ensure!(
            node.wait_for_service(ECHO, Duration::from_secs(10)).await,
            "the server node never advertised `{ECHO}`"
        );
        Ok(Self {
            server,
            node,
            casts: Arc::new(CastCounts::default()),
        })
    }

    /// A point of `in_flight` tasks each looping a remote `echo` call with `payload`.
    pub(crate) fn call_point(
        &self,
        scenario: &'static str,
        in_flight: usize,
        payload: &Bytes,
    ) -> Point {
        call_point(&self.node, scenario, in_flight, payload)
    }

    /// A point of one-way messages: `broadcast` to the server's `echo` group, counted delivered.
    pub(crate) fn cast_point(&self, scenario: &'static str, payload: &Bytes) -> Point {
        let node = self.node.clone();
        let payload = payload.clone();
        let casts = self.casts.clone();
        Point::new(scenario, "one-way", "msgs", move |warmup, measure| {
            Box::pin(group_cast(
                node.clone(),
                payload.clone(),
                casts.clone(),
                warmup,
                measure,
            ))
        })
    }

    /// Fails if the server died during the run, then stops the client node.
    pub(crate) async fn finish(mut self) -> anyhow::Result<()> {
        self.server.check_alive()?;
        self.node.shutdown().await;
        Ok(())
    }
}

/// A point of `in_flight` tasks each looping an `echo` call from `node` with `payload` (remote
/// or local, depending on where `node` finds the provider).
pub(crate) fn call_point(
    node: &Node,
    scenario: &'static str,
    in_flight: usize,
    payload: &Bytes,
) -> Point {
    let node = node.clone();
    let payload = payload.clone();
    Point::closed(scenario, in_flight, move || {
        call_echo(node.clone(), payload.clone())
    })
}

/// 150 printable bytes, so the same payload is also a valid JSON string.
pub(crate) fn payload() -> Bytes {
    let pattern = b"switchboard-bench payload 0123456789 ";
    Bytes::from(
        pattern
            .iter()
            .cycle()
            .take(PAYLOAD_BYTES)
            .copied()
            .collect::<Vec<u8>>(),
    )
}

/// A fresh cookie for one run's cluster.
pub(crate) fn fresh_cookie() -> String {
    format!("bench-{:032x}", rand::rng().random::<u128>())
}

/// One call to `echo`, checking the reply carries the payload.
async fn call_echo(node: Node, payload: Bytes) -> anyhow::Result<()> {
    let reply = node
        .call(ECHO, "echo", payload.clone(), CallOptions::default())
        .await?;
    ensure!(reply.ends_with(&payload), "a wrong echo");
    Ok(())
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

/// Group messages queued, delivered and refused over every slice, for the report's note.
#[derive(Debug, Default)]
pub(crate) struct CastCounts {
    queued: AtomicU64,
    delivered: AtomicU64,
    refused: AtomicU64,
}

impl CastCounts {
    /// What the one-way point did, as a note for the section.
    pub(crate) fn note(&self, what: &str, options: &RunOptions) -> String {
        let count = |n: &AtomicU64| thousands(n.load(Ordering::Relaxed) as f64);
        format!(
            "{what}: `broadcast` to the server's `echo` group, {CAST_BURST} per scheduler \
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
