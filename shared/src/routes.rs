//! The routing table calls read: per service, its local provider, the open links to its remote
//! providers and its metric series, resolved once and shared until the registry changes.
//!
//! Resolving a route scans every peer's advertisement and looks up two maps, and a busy node
//! makes that decision hundreds of thousands of times a second with the same answer. So routes
//! are cached per service, and the whole cache is dropped whenever anything a route depends on
//! changes — a link opens or closes, an advertisement changes, a local service comes or goes, the
//! node starts draining — all of which go through `NodeInner::registry_did_change`.
//!
//! Invariant: a route built from a registry that changed while it was being built is never
//! cached (a generation counter, bumped on every change, is checked on insert). A call racing a
//! change can still pick a link that has just closed; the link refuses it as never sent and
//! failover moves on, exactly as without the cache.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;

use crate::link::Link;
use crate::metrics::CallSeries;
use crate::service::SharedService;

/// A hash map with a fast, non-cryptographic hasher, for the maps on the call path. Their keys
/// are service names and call ids chosen by this cluster's own authenticated nodes, so flooding
/// resistance (what SipHash buys) is not needed there.
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Where calls to one service go.
pub(crate) struct Route {
    /// The service's name as it goes on the wire, shared by every call instead of copied.
    pub(crate) name: Bytes,
    /// The provider on this node, if any (and the node is not draining).
    pub(crate) local: Option<SharedService>,
    /// Open links to peers advertising the service.
    pub(crate) remote: Vec<Arc<Link>>,
    /// The service's call metrics, indexed by [`crate::metrics::Locality`].
    pub(crate) series: Arc<[CallSeries; 2]>,
}

impl Route {
    fn has_provider(&self) -> bool {
        self.local.is_some() || !self.remote.is_empty()
    }
}

/// The cache of routes, by service.
#[derive(Default)]
pub(crate) struct Routes {
    map: RwLock<FastMap<String, Arc<Route>>>,
    generation: AtomicU64,
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes")
            .field("generation", &self.generation.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Routes {
    /// The cached route to `service`.
    pub(crate) fn get(&self, service: &str) -> Option<Arc<Route>> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(service)
            .cloned()
    }

    /// The generation to pass to [`Routes::insert`]: read it before reading the registry.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Caches `route` unless the registry changed since `generation` was read. Routes without
    /// any provider are not cached, so names nobody serves never fill the map.
    pub(crate) fn insert(&self, service: &str, generation: u64, route: &Arc<Route>) {
        if !route.has_provider() {
            return;
        }
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        if self.generation.load(Ordering::Acquire) == generation {
            map.insert(service.to_owned(), route.clone());
        }
    }

    /// Drops every route: the registry changed.
    pub(crate) fn clear(&self) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        map.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    fn route(local: bool) -> Arc<Route> {
        let service: SharedService = Arc::new(|_request: crate::Request| async {
            Ok::<_, crate::ServiceError>(bytes::Bytes::new())
        });
        Arc::new(Route {
            name: Bytes::from_static(b"echo"),
            local: local.then_some(service),
            remote: Vec::new(),
            series: Metrics::new("test@node").call_series("echo"),
        })
    }

    #[test]
    fn a_route_built_across_a_change_is_not_cached() {
        let routes = Routes::default();
        let before = routes.generation();
        routes.clear();
        routes.insert("echo", before, &route(true));
        assert!(routes.get("echo").is_none());
        routes.insert("echo", routes.generation(), &route(true));
        assert!(routes.get("echo").is_some());
        routes.clear();
        assert!(routes.get("echo").is_none());
    }

    #[test]
    fn routes_without_providers_are_not_cached() {
        let routes = Routes::default();
        routes.insert("nobody", routes.generation(), &route(false));
        assert!(routes.get("nobody").is_none());
    }
}
