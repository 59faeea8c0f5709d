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
//! Even a cached lookup took a lock, hashed the name and probed a map: about a fifth of a local
//! call's instructions. So each thread also remembers the routes it used last ([`recent`]),
//! tagged with the cache's generation, and finds them again with one atomic load and one
//! compare. A thread holds them weakly: a dropped route (its links, its service) is
//! never kept alive by a thread that happened to call it once.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};

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
pub(crate) struct Routes {
    map: RwLock<FastMap<String, Arc<Route>>>,
    generation: AtomicU64,
    /// Unique in the process, so that threads' remembered routes of one node are never taken
    /// for another's (a node's generations start at zero like every other node's).
    serial: u64,
}

impl Default for Routes {
    fn default() -> Self {
        static SERIALS: AtomicU64 = AtomicU64::new(0);
        Self {
            map: RwLock::default(),
            generation: AtomicU64::new(0),
            serial: SERIALS.fetch_add(1, Ordering::Relaxed),
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
    /// The cached route to `service`.
    pub(crate) fn get(&self, service: &str) -> Option<Arc<Route>> {
        // Read before the map: a route found in the map is then at least this fresh, so tagging
        // it with this generation never lets a route outlive a change.
        let generation = self.generation.load(Ordering::Acquire);
        if let Some(route) = recent::find(self.serial, generation, service) {
            return Some(route);
        }
        let route = self
            .map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(service)
            .cloned()?;
        recent::remember(self.serial, generation, service, &route);
        Some(route)
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

/// The routes each thread used last, held weakly and tagged with the generation they are good
/// for. A direct-mapped table: a name has one slot, picked from its length and its first and
/// last bytes, and a newcomer simply replaces what was there.
mod recent {
    use super::*;

    /// Slots per thread: more than the services a node's hot paths call.
    const SLOTS: usize = 8;

    struct Remembered {
        serial: u64,
        generation: u64,
        name: Box<str>,
        route: Weak<Route>,
    }

    thread_local! {
        static RECENT: RefCell<[Option<Remembered>; SLOTS]> =
            const { RefCell::new([const { None }; SLOTS]) };
    }

    /// A mix of the cache's serial and the name's length and first and last bytes, which tells
    /// the few services a thread calls apart without reading all of the name.
    fn slot(serial: u64, name: &[u8]) -> usize {
        let (first, last) = match name {
            [] => (0, 0),
            [first, .., last] => (*first, *last),
            [only] => (*only, *only),
        };
        (serial as usize)
            .wrapping_add(name.len().wrapping_mul(31))
            .wrapping_add(usize::from(first).wrapping_mul(7))
            .wrapping_add(usize::from(last))
            % SLOTS
    }

    /// The route this thread remembered for `name` of cache `serial` at `generation`, if it is
    /// still alive.
    pub(super) fn find(serial: u64, generation: u64, name: &str) -> Option<Arc<Route>> {
        RECENT
            .try_with(|recent| {
                let recent = recent.try_borrow().ok()?;
                let remembered = recent[slot(serial, name.as_bytes())].as_ref()?;
                if remembered.serial == serial
                    && remembered.generation == generation
                    && *remembered.name == *name
                {
                    remembered.route.upgrade()
                } else {
                    None
                }
            })
            .ok()
            .flatten()
    }

    /// Remembers `route` for `name` of cache `serial`, good while its generation is `generation`.
    pub(super) fn remember(serial: u64, generation: u64, name: &str, route: &Arc<Route>) {
        // Ignored when the thread is exiting or (never on this path) the table is borrowed.
        let _ = RECENT.try_with(|recent| {
            if let Ok(mut recent) = recent.try_borrow_mut() {
                recent[slot(serial, name.as_bytes())] = Some(Remembered {
                    serial,
                    generation,
                    name: name.into(),
                    route: Arc::downgrade(route),
                });
            }
        });
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
    fn a_thread_never_keeps_a_dropped_route() {
        let routes = Routes::default();
        routes.insert("echo", routes.generation(), &route(true));
        let found = routes.get("echo").expect("cached");
        // Found again through the thread's table, and the same route.
        assert!(Arc::ptr_eq(&found, &routes.get("echo").unwrap()));
        let weak = Arc::downgrade(&found);
        drop(found);
        routes.clear();
        assert!(routes.get("echo").is_none());
        assert!(
            weak.upgrade().is_none(),
            "the thread's table kept the route alive"
        );
    }

    #[test]
    fn one_nodes_routes_are_never_found_for_another() {
        let (a, b) = (Routes::default(), Routes::default());
        a.insert("echo", a.generation(), &route(true));
        assert!(a.get("echo").is_some());
        assert!(b.get("echo").is_none());
    }

    #[test]
    fn routes_without_providers_are_not_cached() {
        let routes = Routes::default();
        routes.insert("nobody", routes.generation(), &route(false));
        assert!(routes.get("nobody").is_none());
    }
}
