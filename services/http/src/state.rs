//! The state every handler shares, as typed pieces handlers extract with `State`.

use std::sync::Arc;

use axum::extract::FromRef;
use switchboard::Node;

use crate::configuration::HttpSettings;
use crate::database::Database;
use crate::live::LiveHub;
use crate::log_tail::LogTail;
use crate::rate_limit::RateLimits;
use crate::reporting::Reporting;
use crate::routes::nodes::NodeClock;
use crate::session_cache::SessionCache;

/// Shared state of the API. One `Arc`, because axum clones the state for every request: cloning
/// it is one reference count, not one per piece.
#[derive(Debug, Clone)]
pub(crate) struct AppState(Arc<Pieces>);

impl AppState {
    pub(crate) fn new(pieces: Pieces) -> Self {
        Self(Arc::new(pieces))
    }
}

impl std::ops::Deref for AppState {
    type Target = Pieces;

    fn deref(&self) -> &Pieces {
        &self.0
    }
}

/// What the state holds.
#[derive(Debug)]
pub(crate) struct Pieces {
    /// This http node.
    pub(crate) node: Node,
    /// The database service.
    pub(crate) database: Database,
    /// The reporting service.
    pub(crate) reporting: Reporting,
    /// Live room events on this node.
    pub(crate) live: LiveHub,
    /// Live tail of the activity log on this node.
    pub(crate) log_tail: LogTail,
    /// Delivery latency of live events, shipped to the analytics replicas.
    pub(crate) latency: switchboard_analytics::DeliveryLatency,
    /// Per-user limits.
    pub(crate) limits: Arc<RateLimits>,
    /// Live streams each user holds open on this node.
    pub(crate) streams: Arc<crate::stream_slots::StreamSlots>,
    /// Sessions checked recently.
    pub(crate) sessions: Arc<SessionCache>,
    /// Settings.
    pub(crate) settings: Arc<HttpSettings>,
    /// When this node saw each peer come up (the dashboard's uptimes).
    pub(crate) clock: NodeClock,
    /// Cancelled when the `http` application or its node starts stopping: live streams end.
    pub(crate) draining: tokio_util::sync::CancellationToken,
}

impl FromRef<AppState> for Database {
    fn from_ref(state: &AppState) -> Self {
        state.database.clone()
    }
}

impl FromRef<AppState> for LiveHub {
    fn from_ref(state: &AppState) -> Self {
        state.live.clone()
    }
}
