//! The Switchboard side of the scenarios, server and client: an `echo` service and an `echo`
//! process group that behave exactly as `switchboard-testnode`'s (reply `<node name>|<payload>`;
//! method `received` answers how many group messages arrived), served by the hidden `serve-node`
//! subcommand and reused in-process as the provider of the local-call scenario; and the pieces
//! every family needs to stand a cluster up around them and measure it: starting server nodes,
//! the bench's own client node linked to them ([`RemoteEcho`] for the usual pair of one server
//! and the client), payloads, the call itself, and the two point shapes run against a server: a
//! remote `echo` call in a closed loop, and one-way group messages counted where they arrive.
//!
//! One-way messages have no reply to time, so their rate is what the server *received*: the bench
//! broadcasts to the server's `echo` group for the window, then polls the server's `received`
//! count until everything sent has arrived, and divides by the time from the first send to the
//! last delivery. Nothing still queued counts.
//!
//! The bench re-executes itself for this rather than requiring `switchboard-testnode`, because
//! `cargo run -p switchboard-bench` builds only the bench: a separately built testnode could be
//! stale, or from another build of the runtime than the client's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::{BufMut, Bytes, BytesMut};
use rand::Rng;
use switchboard::{
    CallOptions, Cookie, Immediate, Node, NodeBuilder, NodeConfig, Request, Service, ServiceError,
};

use crate::cli::{RunOptions, ServerKind};
use crate::points::{Point, Slice};
use crate::server_process::{ServerProcess, announce};
use crate::stats::Tally;
use crate::table::{seconds, thousands};

/// The service and group the runtime scenarios use, as the testnode names them.
pub(crate) const ECHO: &str = "echo";

/// The method of [`ECHO`] that answers with the payload alone, the work the baselines' echoes do.
const PLAIN: &str = "plain";

/// The node name of a `serve-node` server unless `SWITCHBOARD_NODE_NAME` names it otherwise
/// (the failover scenarios run two, which must be told apart).
pub(crate) const SERVER_NAME: &str = "bench-server";

/// The payload of every small call, in bytes.
pub(crate) const PAYLOAD_BYTES: usize = 150;

/// The node name of the bench's own node, the client of every remote scenario.
const CLIENT_NAME: &str = "bench-client";

/// How long a server node may take to advertise `echo` once linked.
const ADVERTISE_TIMEOUT: Duration = Duration::from_secs(10);

/// Group messages sent between yields to the scheduler, so the link's writer gets to run.
const CAST_BURST: usize = 64;

/// An `echo` service: method [`PLAIN`] answers with the payload itself, as the tonic and
/// JSON/HTTP baselines' echoes do; `received` with the count in `received`; any other method
/// `<name>|<payload>`, which tells the failover scenarios which provider served a call. It never
/// waits, so it is an [`Immediate`] service: local calls run it in place.
pub(crate) fn service(name: &str, received: Arc<AtomicU64>) -> impl Service {
    let prefix = Bytes::from(format!("{name}|"));
    Immediate(move |request: Request| match &*request.method {
        PLAIN => Ok(request.payload),
        "received" => Ok(Bytes::from(received.load(Ordering::Relaxed).to_string())),
        "fail" => Err(ServiceError::new(
            "asked_to_fail",
            "the caller asked for an error",
        )),
        _ => {
            let mut reply = BytesMut::with_capacity(prefix.len() + request.payload.len());
            reply.put_slice(&prefix);
            reply.put_slice(&request.payload);
            Ok(reply.freeze())
        }
    })
}

/// `serve-node`: a node on a loopback port hosting `echo` and joining group `echo`, until killed.
/// The cookie comes from `SWITCHBOARD_COOKIE` and the name from `SWITCHBOARD_NODE_NAME` (default
/// [`SERVER_NAME`]), both set by the bench that started it, as for `switchboard-testnode`.
pub(crate) async fn serve() -> anyhow::Result<()> {
    let cookie = Cookie::from_env()?;
    let name = std::env::var("SWITCHBOARD_NODE_NAME").unwrap_or_else(|_| SERVER_NAME.to_owned());
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let config = NodeConfig {
        node_name: Some(name.clone()),
        ..NodeConfig::loopback()
    };
    let node = NodeBuilder::new(name.as_str(), config, cookie)
        .service(ECHO, service(&name, received))
        .group(ECHO, move |_message: Request| {
            counter.fetch_add(1, Ordering::Relaxed);
        })
        .start()
        .await?;
    announce(node.address());
    node.run_until_signal().await;
    Ok(())
}

/// Starts server node `name` in a process of its own: the bench re-executed as `serve-node`, or
/// `switchboard-testnode` under `--testnode`.
pub(crate) fn start_server(
    options: &RunOptions,
    name: &str,
    cookie: &str,
) -> anyhow::Result<ServerProcess> {
    if options.testnode {
        ServerProcess::testnode(name, cookie, options)
    } else {
        ServerProcess::bench(
            ServerKind::Node,
            options,
            &[
                ("SWITCHBOARD_COOKIE", cookie),
                ("SWITCHBOARD_NODE_NAME", name),
            ],
        )
    }
}

/// What a family's notes say about the server nodes.
pub(crate) fn server_description(options: &RunOptions) -> &'static str {
    if options.testnode {
        "switchboard-testnode (next to the bench executable)"
    } else {
        "the bench re-executed as `serve-node` (same echo service and group as switchboard-testnode)"
    }
}

/// The bench's own node, in the bench process, linked to every server of `servers`, returned
/// once some node provides `echo`.
pub(crate) async fn client_node(cookie: &str, servers: &[&ServerProcess]) -> anyhow::Result<Node> {
    let config = NodeConfig {
        node_name: Some(CLIENT_NAME.into()),
        ..NodeConfig::loopback()
    };
    let node = NodeBuilder::new(CLIENT_NAME, config, Cookie::new(cookie)?)
        .start()
        .await?;
    for server in servers {
        node.connect(&server.address)
            .await
            .with_context(|| format!("connecting the bench node to {}", server.address))?;
    }
    ensure!(
        node.wait_for_service(ECHO, ADVERTISE_TIMEOUT).await,
        "no server node advertised `{ECHO}`"
    );
    Ok(node)
}

/// One server node ([`SERVER_NAME`]) in a process of its own and the bench's client node linked
/// to it: the set-up of every family that measures Switchboard between two processes.
#[derive(Debug)]
pub(crate) struct RemoteEcho {
    pub(crate) server: ServerProcess,
    pub(crate) node: Node,
    /// The one-way messages sent and delivered over the run, for the section's note.
    pub(crate) casts: Arc<CastCounts>,
}

impl RemoteEcho {
    /// Starts the server node with a fresh cookie and the client node, links them, and waits
    /// until the client sees the server's `echo` service.
    pub(crate) async fn start(options: &RunOptions) -> anyhow::Result<Self> {
        let cookie = fresh_cookie();
        let server = start_server(options, SERVER_NAME, &cookie)?;
        let node = client_node(&cookie, &[&server]).await?;
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

    /// One-way messages at full rate as the background of another point (see
    /// [`Point::closed_beside`]): `broadcast_background` to the server's `echo` group through the warm-up
    /// and the window alike, counted delivered from the window's start (see [`fan_out`]).
    pub(crate) fn fan_out(
        &self,
        payload: &Bytes,
    ) -> impl Fn(Duration, Duration) -> Slice + Send + Sync + 'static {
        let node = self.node.clone();
        let payload = payload.clone();
        let casts = self.casts.clone();
        move |warmup, measure| {
            Box::pin(fan_out(
                node.clone(),
                payload.clone(),
                casts.clone(),
                warmup,
                measure,
            ))
        }
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
        echo_once(node.clone(), payload.clone())
    })
}

/// A fresh cookie, so that each scenario's nodes form a cluster of their own.
pub(crate) fn fresh_cookie() -> String {
    format!("bench-{:032x}", rand::rng().random::<u128>())
}

/// `len` printable bytes, so the same payload is also a valid JSON string.
pub(crate) fn payload(len: usize) -> Bytes {
    let pattern = b"switchboard-bench payload 0123456789 ";
    Bytes::from(
        pattern
            .iter()
            .cycle()
            .take(len)
            .copied()
            .collect::<Vec<u8>>(),
    )
}

/// One call to `echo`; checks the reply carries the payload and returns it.
pub(crate) async fn call(
    node: &Node,
    payload: Bytes,
    options: CallOptions,
) -> anyhow::Result<Bytes> {
    let reply = node.call(ECHO, "echo", payload.clone(), options).await?;
    ensure!(reply.ends_with(&payload), "a wrong echo");
    Ok(reply)
}

/// One plain echo with default options, for a load loop: it takes its node and payload by
/// value so that a loop's closure can hand it clones. Like the baselines, it checks the reply's
/// length.
pub(crate) async fn echo_once(node: Node, payload: Bytes) -> anyhow::Result<()> {
    let expected = payload.len();
    let reply = node
        .call(ECHO, PLAIN, payload, CallOptions::default())
        .await?;
    ensure!(reply.len() == expected, "a wrong echo");
    Ok(())
}

/// The name of the node that served an echo reply (`<node name>|<payload>`).
pub(crate) fn served_by(reply: &[u8]) -> Option<&str> {
    let bar = reply.iter().position(|&b| b == b'|')?;
    std::str::from_utf8(&reply[..bar]).ok()
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

/// One group message to the server's `echo` group; returns how many nodes it was queued for.
type Broadcast = fn(&Node, Bytes) -> usize;

/// The one-way row of the runtime and erlang families: a plain (prompt) broadcast.
fn prompt(node: &Node, payload: Bytes) -> usize {
    node.broadcast(ECHO, "count", payload)
}

/// The fan-out family's stand-in for the log and analytics groups, which broadcast in the
/// background.
fn background(node: &Node, payload: Bytes) -> usize {
    node.broadcast_background(ECHO, "count", payload)
}

/// Broadcasts to the server's `echo` group from a task on the client's workers for `duration`,
/// yielding every few messages so the link's writer runs. Returns (queued, refused because the
/// link's queue was full).
async fn send_group_messages(
    node: &Node,
    payload: &Bytes,
    duration: Duration,
    send: Broadcast,
) -> anyhow::Result<(u64, u64)> {
    let node = node.clone();
    let payload = payload.clone();
    let sender = tokio::spawn(async move {
        let end = Instant::now() + duration;
        let (mut queued, mut refused) = (0u64, 0u64);
        while Instant::now() < end {
            for _ in 0..CAST_BURST {
                if send(&node, payload.clone()) > 0 {
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
    /// Adds one slice's counts.
    fn record(&self, queued: u64, delivered: u64, refused: u64) {
        self.queued.fetch_add(queued, Ordering::Relaxed);
        self.delivered.fetch_add(delivered, Ordering::Relaxed);
        self.refused.fetch_add(refused, Ordering::Relaxed);
    }

    /// What the one-way point did, as a note for the section; `what` names the point.
    /// `how` names the `Node` method that sent them.
    pub(crate) fn note(&self, what: &str, how: &str, options: &RunOptions) -> String {
        let count = |n: &AtomicU64| thousands(n.load(Ordering::Relaxed) as f64);
        format!(
            "{what}: `{how}` to the server's `echo` group, {CAST_BURST} per scheduler \
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
    let (warm, _) = send_group_messages(&node, &payload, warmup, prompt).await?;
    let before = await_delivery(&node, start + warm).await?;
    let started = Instant::now();
    let (queued, refused) = send_group_messages(&node, &payload, measure, prompt).await?;
    let after = await_delivery(&node, before + queued).await?;
    let elapsed = started.elapsed();
    let delivered = after - before;
    if delivered == 0 {
        bail!("no group message reached the server");
    }
    counts.record(queued, delivered, refused);
    Ok(Tally::counted(delivered, elapsed))
}

/// One slice of one-way messages sent beside other load: unlike [`group_cast`], it does not
/// pause between warm-up and window (the other load would be measured without it), so it reads
/// the server's count when the window opens, keeps sending until the window closes, then waits
/// until everything sent has arrived. The rate is messages delivered after the window opened
/// over the time from then to the last delivery. The counts for the note include the warm-up.
async fn fan_out(
    node: Node,
    payload: Bytes,
    counts: Arc<CastCounts>,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<Tally> {
    let start = received(&node).await?;
    let window_opens = async {
        tokio::time::sleep(warmup).await;
        anyhow::Ok((received(&node).await?, Instant::now()))
    };
    let (sent, opened) = tokio::join!(
        send_group_messages(&node, &payload, warmup + measure, background),
        window_opens,
    );
    let ((queued, refused), (before, started)) = (sent?, opened?);
    let after = await_delivery(&node, start + queued).await?;
    let elapsed = started.elapsed();
    let delivered = after.saturating_sub(before);
    if delivered == 0 {
        bail!("no group message reached the server");
    }
    counts.record(queued, after - start, refused);
    Ok(Tally::counted(delivered, elapsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_name_their_server() {
        assert_eq!(
            served_by(b"bench-provider-a|hello|world"),
            Some("bench-provider-a")
        );
        assert_eq!(served_by(b"no separator"), None);
        assert_eq!(payload(40).len(), 40);
        assert!(payload(40).starts_with(b"switchboard-bench payload"));
    }
}
