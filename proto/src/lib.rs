//! Generated wire types of Switchboard's inter-node protocol (`switchboard.v1`).
//!
//! Wire types stay in this crate; the runtime converts them to its own domain types at the
//! boundary, so a change of wire format never ripples through the services.

#![allow(unreachable_pub, missing_debug_implementations, clippy::all)]

pub mod batch;
pub mod codec;

/// `switchboard.v1`: the `Node` service and its frames.
pub mod v1 {
    tonic::include_proto!("switchboard.v1");
}

/// Names of the services and process groups Switchboard's own nodes use, in one place so the
/// node that serves a name and the nodes that call it cannot drift apart.
pub mod names {
    /// The database service: accounts, rooms, messages, room events.
    pub const DATABASE: &str = "database";
    /// Process group receiving every committed room event (http nodes fan them out to SSE
    /// clients; reporting and analytics consume them).
    pub const CHAT_EVENTS: &str = "chat.events";
    /// The method name of a room event broadcast to [`CHAT_EVENTS`].
    pub const ROOM_EVENT: &str = "room_event";
    /// The reporting service: content reports, anomalies, summaries.
    pub const REPORTING: &str = "reporting";
    /// The log service: the cluster's activity log.
    pub const LOG: &str = "log";
    /// Process group receiving every committed log batch (http nodes tail it to admins,
    /// reporting nodes detect anomalies in it).
    pub const LOG_TAIL: &str = "log.tail";
    /// The method name of a committed batch broadcast to [`LOG_TAIL`].
    pub const LOG_BATCH: &str = "log_batch";
    /// The analytics service: streaming aggregates of the chat's activity.
    pub const ANALYTICS: &str = "analytics";
    /// Process group of the analytics replicas, receiving the delivery-latency histograms http
    /// nodes ship every few seconds.
    pub const ANALYTICS_LATENCY: &str = "analytics.latency";
    /// The method name of a delivery-latency report broadcast to [`ANALYTICS_LATENCY`].
    pub const DELIVERY_LATENCY: &str = "delivery_latency";
    /// Service every http node hosts for its peers: told when a session is logged out, it drops
    /// the session from that node's cache before the logout is answered.
    pub const HTTP_SESSIONS: &str = "http.sessions";
    /// The method of [`HTTP_SESSIONS`] that drops a session; the payload is the token hash.
    pub const SESSION_REVOKED: &str = "session_revoked";
}
