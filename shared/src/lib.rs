//! Switchboard's node runtime: what every service binary links to become a node of the cluster.
//!
//! A [`Node`] authenticates peers with a shared [`Cookie`], discovers them from seeds and gossip,
//! keeps one link per peer with heartbeats, and routes [`Node::call`], [`Node::cast`] and
//! [`Node::broadcast`] to local or remote providers alike, failing over between redundant ones.
//! See `ARCHITECTURE.md` at the repository root for the map and the invariants.

pub mod activity;
mod admission;
pub mod application;
mod bulk;
pub mod clock;
pub mod config;
pub mod cookie;
mod dispatch;
pub mod error;
pub mod events;
mod eventually;
mod failover;
pub mod handshake;
mod lane;
mod link;
mod membership;
mod methods;
pub mod metrics;
mod metrics_endpoint;
mod node;
mod refusals;
pub mod registry;
mod replies;
mod ring;
mod routes;
mod server;
pub mod service;
pub mod signal;
pub mod startup;
pub mod system;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
mod tls;

pub use application::{AppContext, Application, Applications};
pub use bytes::Bytes;
pub use config::NodeConfig;
pub use cookie::Cookie;
pub use error::{NodeError, ServiceError};
pub use events::ClusterEvent;
pub use eventually::eventually;
pub use failover::{CallOptions, new_trace_id};
pub use methods::Method;
pub use node::{Node, NodeBuilder};
pub use registry::{NodeInfo, PeerState};
pub use service::{Answer, ByteString, GroupMember, Immediate, Request, Service};
