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
//!
//! Each thread also keeps copies of the routes it used last. The shared map costs a lock taken
//! and released and a hash per call: a tenth of a local call's instructions, and more of its
//! time for the lock's two atomic operations. A thread's own copy costs a short scan. The copies are dropped, on every thread, whenever any node's routes are
//! (a process-wide epoch, bumped on every change, is compared on every lookup), so a thread
//! never uses a route the shared map no longer holds. A copy keeps its route's links and
//! service alive until its thread next looks a route up or exits.

use std::cell::RefCell;
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

/// Bumped, process-wide, whenever any node's routes are dropped: every thread's copies made
/// before are stale.
static EPOCH: AtomicU64 = AtomicU64::new(0);

/// Tells apart the route caches of the nodes of one process, for the per-thread copies.
static NEXT_CACHE_ID: AtomicU64 = AtomicU64::new(0);

/// How many routes a thread keeps copies of.
const NEAR_CAPACITY: usize = 16;

thread_local! {
    static NEAR: RefCell<Near> = const {
        RefCell::new(Near {
            epoch: 0,
            routes: Vec::new(),
        })
    };
}

/// One thread's copies of routes, all from the same epoch.
struct Near {
    epoch: u64,
    /// (cache id, route); the route's `name` is its service.
    routes: Vec<(u64, Arc<Route>)>,
}

/// When a route was resolved: read before reading the registry, and passed to
/// [`Routes::insert`] so a route resolved across a change is not kept.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Generation {
    generation: u64,
    epoch: u64,
}

/// The cache of routes, by service.
pub(crate) struct Routes {
    map: RwLock<FastMap<String, Arc<Route>>>,
    generation: AtomicU64,
    id: u64,
}

impl Default for Routes {
    fn default() -> Self {
        Self {
            map: RwLock::default(),
            generation: AtomicU64::new(0),
            id: NEXT_CACHE_ID.fetch_add(1, Ordering::Relaxed),
        }
    }
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes")
            .field("generation", &self.generation.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Routes {
    /// The cached route to `service`: this thread's copy, or the shared one.
    pub(crate) fn get(&self, service: &str) -> Option<Arc<Route>> {
        let epoch = EPOCH.load(Ordering::Acquire);
        if let Some(route) = self.near(epoch, service) {
            return Some(route);
        }
        let route = self
            .map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(service)
            .cloned()?;
        self.keep_near(epoch, &route);
        Some(route)
    }

    /// The generation to pass to [`Routes::insert`]: read it before reading the registry.
    pub(crate) fn generation(&self) -> Generation {
        Generation {
            generation: self.generation.load(Ordering::Acquire),
            epoch: EPOCH.load(Ordering::Acquire),
        }
    }

    /// Caches `route` unless the registry changed since `generation` was read. Routes without
    /// any provider are not cached, so names nobody serves never fill the map.
    pub(crate) fn insert(&self, service: &str, generation: Generation, route: &Arc<Route>) {
        if !route.has_provider() {
            return;
        }
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        if self.generation.load(Ordering::Acquire) == generation.generation {
            map.insert(service.to_owned(), route.clone());
            drop(map);
            self.keep_near(generation.epoch, route);
        }
    }

    /// Drops every route: the registry changed.
    pub(crate) fn clear(&self) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        // Under the lock: a lookup that read the old epoch may still find a route in the map
        // until it is cleared, but its copy carries that old epoch and is never used.
        EPOCH.fetch_add(1, Ordering::AcqRel);
        map.clear();
    }

    /// This thread's copy of the route to `service`, if it was made in `epoch`.
    fn near(&self, epoch: u64, service: &str) -> Option<Arc<Route>> {
        NEAR.with(|near| {
            // Borrowed mutably only inside `keep_near`, which runs no other code meanwhile; a
            // borrow that failed anyway would only mean a trip to the shared map.
            let near = near.try_borrow().ok()?;
            if near.epoch != epoch {
                return None;
            }
            near.routes
                .iter()
                .find(|(id, route)| *id == self.id && route.name == service.as_bytes())
                .map(|(_, route)| route.clone())
        })
    }

    /// Keeps a copy of `route`, current as of `epoch`, on this thread.
    fn keep_near(&self, epoch: u64, route: &Arc<Route>) {
        // Copies dropped here are dropped after the borrow ends: dropping a route may drop a
        // service, and nothing it runs may find this thread's copies borrowed.
        let dropped = NEAR.with(|near| {
            let Ok(mut near) = near.try_borrow_mut() else {
                return Vec::new();
            };
            let mut dropped = Vec::new();
            if near.epoch != epoch {
                if epoch < near.epoch {
                    // Resolved before a change this thread already saw: stale.
                    return dropped;
                }
                dropped = std::mem::take(&mut near.routes);
                near.epoch = epoch;
            }
            if near.routes.len() == NEAR_CAPACITY {
                dropped.push(near.routes.remove(0));
            }
            near.routes.push((self.id, route.clone()));
            dropped
        });
        drop(dropped);
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

    #[test]
    fn a_thread_never_uses_its_copy_of_a_route_dropped_since() {
        let routes = Routes::default();
        let other = Routes::default();
        routes.insert("echo", routes.generation(), &route(true));
        other.insert("echo", other.generation(), &route(true));
        let kept = routes.get("echo").expect("cached");
        assert!(Arc::ptr_eq(&kept, &routes.get("echo").unwrap()));
        assert!(
            !Arc::ptr_eq(&kept, &other.get("echo").unwrap()),
            "each node's copies are its own"
        );
        // A change to another node's routes makes this thread drop every copy, but a route the
        // shared map still holds is found again there.
        other.clear();
        assert!(other.get("echo").is_none());
        assert!(Arc::ptr_eq(&kept, &routes.get("echo").unwrap()));
        routes.clear();
        assert!(routes.get("echo").is_none(), "the copy went with the route");
    }
}
