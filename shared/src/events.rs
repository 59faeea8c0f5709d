//! Cluster events a node publishes: the runtime's equivalent of Erlang's `nodeup`/`nodedown`
//! messages, plus the security and failover events an operator needs to see.

/// Something that happened to the cluster, as seen from one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterEvent {
    /// A link to `node` opened.
    NodeUp {
        /// The peer.
        node: String,
        /// Its address.
        address: String,
        /// Its incarnation.
        incarnation: u64,
    },
    /// `node` went down.
    NodeDown {
        /// The peer.
        node: String,
        /// The incarnation that went down.
        incarnation: u64,
        /// `noconnection`, `heartbeat_timeout`, `shutdown`, `restarted`, `protocol_error`.
        reason: String,
    },
    /// A peer failed the cookie handshake.
    HandshakeRefused {
        /// Where it came from.
        address: String,
        /// Why it was refused.
        reason: String,
    },
    /// A call was retried on another provider after `from` failed.
    Failover {
        /// The service called.
        service: String,
        /// The provider that failed.
        from: String,
    },
}
