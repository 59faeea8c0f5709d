//! The cluster-wide registry as this node sees it: every peer, its state, its link and what it
//! advertises, plus the services and process groups hosted here.
//!
//! Invariant: a remote service is routable only while this node holds an open link to the peer
//! *and* the peer's latest advertisement (for its current incarnation) names the service. Gossip
//! only spreads addresses; what a node hosts is learnt from that node itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use rand::Rng;
use switchboard_proto::v1 as wire;

use crate::link::Link;
use crate::routes::FastMap;
use crate::service::{SharedGroupMember, SharedService};

/// How a peer looks from here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerState {
    /// An open, authenticated link.
    Up,
    /// No link; `reason` says why it went (`noconnection`, `heartbeat_timeout`, `shutdown`, ...).
    Down {
        /// Why the peer is down.
        reason: String,
    },
}

/// A member of the cluster as reported by [`crate::Node::nodes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Node name.
    pub name: String,
    /// Address peers dial.
    pub address: String,
    /// Incarnation of the process last seen.
    pub incarnation: u64,
    /// Services it provides.
    pub services: Vec<String>,
    /// Process groups with members on it.
    pub groups: Vec<String>,
    /// Up or down, from this node's point of view.
    pub state: PeerState,
    /// This node itself.
    pub is_self: bool,
}

/// One peer.
#[derive(Debug)]
pub(crate) struct Peer {
    pub(crate) address: String,
    pub(crate) incarnation: u64,
    pub(crate) advertisement: wire::Advertisement,
    pub(crate) link: Option<Arc<Link>>,
    pub(crate) state: PeerState,
    pub(crate) since: Instant,
}

/// What this node hosts.
#[derive(Default)]
pub(crate) struct Local {
    pub(crate) services: FastMap<String, SharedService>,
    pub(crate) groups: HashMap<String, Vec<SharedGroupMember>>,
    pub(crate) version: u64,
    pub(crate) draining: bool,
}

impl std::fmt::Debug for Local {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Local")
            .field("services", &self.services.keys().collect::<Vec<_>>())
            .field("groups", &self.groups.keys().collect::<Vec<_>>())
            .field("version", &self.version)
            .finish()
    }
}

impl Local {
    /// What this node advertises; nothing once it drains, so peers route away at once.
    pub(crate) fn advertisement(&self) -> wire::Advertisement {
        let (mut services, mut groups) = if self.draining {
            (Vec::new(), Vec::new())
        } else {
            (
                self.services.keys().cloned().collect::<Vec<_>>(),
                self.groups.keys().cloned().collect::<Vec<_>>(),
            )
        };
        services.sort();
        groups.sort();
        wire::Advertisement {
            version: self.version,
            services,
            groups,
        }
    }
}

/// Picks one of the links by power of two choices on in-flight calls: nearly as good as
/// least-loaded, without scanning every provider or herding onto one.
pub(crate) fn choose(candidates: &[Arc<Link>]) -> Option<Arc<Link>> {
    match candidates {
        [] => None,
        [only] => Some(only.clone()),
        _ => {
            let mut rng = rand::rng();
            let a = rng.random_range(0..candidates.len());
            let mut b = rng.random_range(0..candidates.len() - 1);
            if b >= a {
                b += 1;
            }
            let (la, lb) = (&candidates[a], &candidates[b]);
            Some(if la.in_flight() <= lb.in_flight() {
                la.clone()
            } else {
                lb.clone()
            })
        }
    }
}
