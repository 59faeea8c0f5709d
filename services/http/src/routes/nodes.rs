//! `GET /v1/admin/nodes`: the dashboard's live view of the cluster, like Erlang's observer. It is
//! `/v1/admin/cluster` plus what an operator watches a node by: how long its process has been up,
//! the round trip of a call over the link to it, measured now, and the frames its links carried.
//!
//! The round trip and the frame counts come from one call, to the node's built-in
//! `switchboard.node` `stats` (this node reads its own counters in place). The counts are totals
//! since that node's process started, whichever http node asks, so the dashboard turns two polls
//! into messages per second in and out, even when a balancer sends its polls to different http
//! nodes; a new incarnation starts again from zero.
//!
//! The runtime does not carry a node's start time in its gossip, so uptime is as this http node
//! saw it: since the link to that incarnation of the node came up, or since this http node
//! started if the link was already up then (`since_start` is true). A node that restarts gets a
//! new incarnation, and its uptime starts again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::State;
use prost::Message as _;
use serde::Serialize;
use switchboard::{AppContext, Bytes, CallOptions, ClusterEvent, Node, PeerState};
use switchboard_proto::v1 as wire;
use tokio::sync::broadcast;
use utoipa::ToSchema;

use crate::auth::Admin;
use crate::error::ErrorBody;
use crate::model::timestamp;
use crate::state::AppState;

/// How long the stats call may take before the node is shown without a round trip or counts.
const PING_TIMEOUT: Duration = Duration::from_millis(500);

/// When this http node saw each incarnation of each peer come up.
#[derive(Debug, Clone)]
pub(crate) struct NodeClock {
    /// Peer name to (incarnation, when its link came up). One entry per name: a new
    /// incarnation replaces the old one.
    seen: Arc<Mutex<HashMap<String, (u64, SystemTime)>>>,
    started: SystemTime,
}

impl NodeClock {
    /// Starts watching the cluster events of `context`'s node until the application drains.
    pub(crate) fn start(context: &AppContext) -> Self {
        let clock = Self {
            seen: Arc::default(),
            started: SystemTime::now(),
        };
        let mut events = context.node().subscribe();
        let draining = context.draining_token();
        let seen = clock.seen.clone();
        context.spawn(async move {
            loop {
                let event = tokio::select! {
                    event = events.recv() => event,
                    _ = draining.cancelled() => return,
                };
                match event {
                    Ok(ClusterEvent::NodeUp {
                        node, incarnation, ..
                    }) => {
                        let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                        if seen
                            .get(&node)
                            .is_none_or(|(known, _)| *known != incarnation)
                        {
                            seen.insert(node, (incarnation, SystemTime::now()));
                        }
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        clock
    }

    /// When `name`'s `incarnation` came up, and whether that is only this node's own start.
    fn up_since(&self, name: &str, incarnation: u64) -> (SystemTime, bool) {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match seen.get(name) {
            Some((known, at)) if *known == incarnation => (*at, false),
            _ => (self.started, true),
        }
    }
}

/// A node as the dashboard shows it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct NodeView {
    /// Node name.
    name: String,
    /// Inter-node address.
    address: String,
    /// Process incarnation (changes when the node restarts).
    incarnation: String,
    /// `self`, `up` or `down (reason)`.
    state: String,
    /// Services it hosts.
    services: Vec<String>,
    /// Process groups it is in.
    groups: Vec<String>,
    /// RFC 3339: when its link came up (this node's own start for itself); absent while down.
    up_since: Option<String>,
    /// Seconds since `up_since`.
    uptime_seconds: Option<u64>,
    /// True when the node was already up as this http node started, so it has been up at
    /// least `uptime_seconds`.
    since_start: bool,
    /// Round trip of a call over the link to it (its `stats`), in milliseconds; absent for this
    /// node itself, for a node that is down and for one that did not answer within 500 ms.
    rtt_ms: Option<f64>,
    /// Frames (calls, replies, casts, broadcasts, heartbeats...) its links have written since
    /// its process started; absent when it did not answer. Two polls make a rate.
    frames_sent: Option<u64>,
    /// Frames its links have read since its process started; absent when it did not answer.
    frames_received: Option<u64>,
}

/// `GET /v1/admin/nodes`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct NodeList {
    /// The http node that answered (and measured the round trips).
    served_by: String,
    /// Every node it knows, itself first.
    nodes: Vec<NodeView>,
}

/// Every node this http node knows, with uptime and the round trip of a ping to it.
#[utoipa::path(get, path = "/v1/admin/nodes", tag = "admin", security(("admin" = [])),
    responses((status = 200, body = NodeList), (status = 403, body = ErrorBody)))]
pub(crate) async fn nodes(State(state): State<AppState>, _admin: Admin) -> Json<NodeList> {
    let node = &state.node;
    let now = SystemTime::now();
    let views = node.nodes().into_iter().map(|info| {
        let node = node.clone();
        let clock = state.clock.clone();
        async move {
            let up = info.is_self || info.state == PeerState::Up;
            let (rtt_ms, frames) = if info.is_self {
                (None, Some(node.metrics().frames()))
            } else if up {
                match stats(&node, &info.name).await {
                    Some((rtt, stats)) => (
                        Some(rtt),
                        Some(switchboard::metrics::Frames {
                            sent: stats.frames_sent,
                            received: stats.frames_received,
                        }),
                    ),
                    None => (None, None),
                }
            } else {
                (None, None)
            };
            let (since, since_start) = clock.up_since(&info.name, info.incarnation);
            let since = up.then_some(since);
            NodeView {
                state: match (&info.state, info.is_self) {
                    (_, true) => "self".into(),
                    (PeerState::Up, _) => "up".into(),
                    (PeerState::Down { reason }, _) => format!("down ({reason})"),
                },
                up_since: since.map(|at| {
                    let ms = at
                        .duration_since(UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_millis();
                    timestamp(ms as i64)
                }),
                uptime_seconds: since
                    .map(|at| now.duration_since(at).unwrap_or_default().as_secs()),
                since_start: up && since_start && !info.is_self,
                rtt_ms,
                frames_sent: frames.map(|f| f.sent),
                frames_received: frames.map(|f| f.received),
                name: info.name,
                address: info.address,
                incarnation: format!("{:016x}", info.incarnation),
                services: info.services,
                groups: info.groups,
            }
        }
    });
    Json(NodeList {
        served_by: node.name().to_owned(),
        nodes: futures::future::join_all(views).await,
    })
}

/// `name`'s frame counts, and the round trip of the call that fetched them in milliseconds.
async fn stats(node: &Node, name: &str) -> Option<(f64, wire::NodeStats)> {
    let started = Instant::now();
    let options = CallOptions::idempotent().timeout(PING_TIMEOUT);
    let reply = node
        .call_on(
            name,
            switchboard::system::SERVICE,
            "stats",
            Bytes::new(),
            options,
        )
        .await
        .ok()?;
    let rtt = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
    Some((rtt, wire::NodeStats::decode(reply).ok()?))
}
