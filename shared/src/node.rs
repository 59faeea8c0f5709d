//! The node: the handle every service holds. It starts the inter-node listener, hosts local
//! services and process groups, and routes calls, casts and broadcasts to wherever their
//! providers run — in-process when local, over a link when remote, with the same results and
//! errors either way.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use rand::Rng;
use switchboard_proto::v1::{self as wire, frame::Kind};
use tokio::net::TcpListener;
use tokio::sync::{Notify, broadcast, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::application::{Applications, ApplicationsCell};
use crate::bulk::BulkThread;
use crate::config::NodeConfig;
use crate::cookie::Cookie;
use crate::error::{NodeError, ServiceError};
use crate::events::ClusterEvent;
use crate::failover::{self, CallOptions, LocalCall};
use crate::lane::Urgency;
use crate::link::Link;
use crate::methods::Method;
use crate::metrics::Metrics;
use crate::registry::{Local, NodeInfo, Peer, PeerState};
use crate::routes::{FastMap, Route, Routes};
use crate::service::{Answer, ByteString, Request, Service, SharedGroupMember, SharedService};
use crate::system;

/// A call that arrived over a link, its names checked to be UTF-8.
#[derive(Debug)]
pub(crate) struct InboundCall {
    pub(crate) service: ByteString,
    pub(crate) request: Request,
    /// The caller's remaining deadline; 0 when it gave none.
    pub(crate) timeout_ms: u32,
}

/// How a call that arrived over a link is answered.
pub(crate) enum Served {
    /// At once: the handler never waited, so no task or boxed future was needed.
    Now(Result<Bytes, NodeError>),
    /// The answer to come, counted as the node's in-flight work and bounded by the call's
    /// deadline.
    Later(Pin<Box<dyn Future<Output = Result<Bytes, NodeError>> + Send>>),
}

/// The state behind a [`Node`] handle, shared with its tasks.
pub(crate) struct NodeInner {
    pub(crate) name: String,
    pub(crate) incarnation: u64,
    pub(crate) address: String,
    pub(crate) hidden: bool,
    pub(crate) cookie: Cookie,
    pub(crate) config: NodeConfig,
    pub(crate) metrics: Metrics,
    pub(crate) local: RwLock<Local>,
    pub(crate) peers: RwLock<HashMap<String, Peer>>,
    /// Addresses being dialed right now, so discovery never dials one twice at once.
    pub(crate) dialing: Mutex<HashSet<String>>,
    /// Dials in progress at once, at most [`crate::link::CONCURRENT_DIALS`].
    pub(crate) dial_permits: tokio::sync::Semaphore,
    /// Which node answered at an address, learnt from handshakes.
    pub(crate) address_book: Mutex<HashMap<String, String>>,
    /// Peers with a reconnect loop running.
    pub(crate) reconnecting: Mutex<HashSet<String>>,
    /// Nodes that reached this one through a seed address and are announced to every other peer
    /// once this node's link to them opens: name to incarnation and when it asked.
    pub(crate) introductions: Mutex<HashMap<String, (u64, std::time::Instant)>>,
    pub(crate) events: broadcast::Sender<ClusterEvent>,
    /// Routes calls read, cached until the registry changes.
    pub(crate) routes: Routes,
    /// Woken whenever a link opens or closes or an advertisement changes.
    pub(crate) registry_changed: Notify,
    pub(crate) shutdown: CancellationToken,
    /// Cancelled when graceful shutdown begins, before anything is closed.
    pub(crate) draining: CancellationToken,
    /// Cancelled when a graceful shutdown says goodbye: every lane a peer dialed here answers
    /// with a goodbye too, ahead of its end on the same stream.
    pub(crate) departing: CancellationToken,
    /// Inbound calls and casts being served, awaited on graceful shutdown.
    pub(crate) work: TaskTracker,
    pub(crate) stopping: AtomicBool,
    /// Carries every link's bulk lane at a low CPU priority ([`crate::bulk`]).
    pub(crate) bulk: BulkThread,
    /// TLS for every inter-node connection, when the node has TLS settings.
    pub(crate) tls: Option<crate::tls::Tls>,
    /// The applications it runs ([`crate::application`]), for the built-in service.
    pub(crate) applications: ApplicationsCell,
    /// Which refused handshakes get a log line ([`crate::refusals`]).
    pub(crate) refusals: crate::refusals::RefusalLog,
}

impl std::fmt::Debug for NodeInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeInner")
            .field("name", &self.name)
            .field("incarnation", &self.incarnation)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// A running node. Cheap to clone; every clone is the same node.
#[derive(Debug, Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
    server: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

/// Builds and starts a [`Node`].
pub struct NodeBuilder {
    kind: String,
    config: NodeConfig,
    cookie: Cookie,
    hidden: bool,
    services: FastMap<String, SharedService>,
    groups: HashMap<String, Vec<SharedGroupMember>>,
}

impl std::fmt::Debug for NodeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeBuilder")
            .field("kind", &self.kind)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl NodeBuilder {
    /// A node whose default name is `<kind>@<hostname>`.
    pub fn new(kind: impl Into<String>, config: NodeConfig, cookie: Cookie) -> Self {
        Self {
            kind: kind.into(),
            config,
            cookie,
            hidden: false,
            services: FastMap::default(),
            groups: HashMap::new(),
        }
    }

    /// Hosts `service` under `name` from the start.
    pub fn service(mut self, name: impl Into<String>, service: impl Service) -> Self {
        self.services.insert(name.into(), Arc::new(service));
        self
    }

    /// Joins process group `group` from the start.
    pub fn group(mut self, group: impl Into<String>, member: impl crate::GroupMember) -> Self {
        self.groups
            .entry(group.into())
            .or_default()
            .push(Arc::new(member));
        self
    }

    /// A hidden node (an operator tool) talks to the cluster but is never gossiped or routed to.
    pub fn hidden(mut self, hidden: bool) -> Self {
        self.hidden = hidden;
        self
    }

    /// Binds the listener, starts serving and starts discovery from the seeds.
    pub async fn start(self) -> Result<Node, NodeError> {
        let tls = crate::tls::Tls::from_config(&self.config)?;
        let listener = TcpListener::bind(&self.config.listen).await.map_err(|e| {
            NodeError::Config(format!("cannot listen on {}: {e}", self.config.listen))
        })?;
        let bound = listener
            .local_addr()
            .map_err(|e| NodeError::Config(e.to_string()))?;
        let host = hostname();
        let address = self
            .config
            .advertise
            .clone()
            .unwrap_or_else(|| advertised(bound, &host));
        let name = self
            .config
            .node_name
            .clone()
            .unwrap_or_else(|| format!("{}@{host}", self.kind));
        let incarnation = rand::rng().random::<u64>() | 1;
        let bulk = BulkThread::start(&name)
            .map_err(|e| NodeError::Config(format!("cannot start the bulk thread: {e}")))?;
        let (events, _) = broadcast::channel(1024);
        let inner = Arc::new(NodeInner {
            metrics: Metrics::new(&name),
            name,
            incarnation,
            address,
            hidden: self.hidden,
            cookie: self.cookie,
            config: self.config,
            local: RwLock::new(Local {
                services: self.services,
                groups: self.groups,
                version: 1,
                draining: false,
            }),
            peers: RwLock::new(HashMap::new()),
            dialing: Mutex::new(HashSet::new()),
            dial_permits: tokio::sync::Semaphore::new(crate::link::CONCURRENT_DIALS),
            address_book: Mutex::new(HashMap::new()),
            reconnecting: Mutex::new(HashSet::new()),
            introductions: Mutex::new(HashMap::new()),
            events,
            routes: Routes::default(),
            registry_changed: Notify::new(),
            shutdown: CancellationToken::new(),
            draining: CancellationToken::new(),
            departing: CancellationToken::new(),
            work: TaskTracker::new(),
            stopping: AtomicBool::new(false),
            bulk,
            tls,
            applications: ApplicationsCell::new(),
            refusals: crate::refusals::RefusalLog::default(),
        });
        let server = crate::server::spawn(inner.clone(), listener);
        inner.start_discovery();
        inner.start_failure_detector();
        if let Some(listen) = inner.config.metrics_listen.clone() {
            crate::metrics_endpoint::spawn(inner.clone(), &listen).await?;
        }
        tracing::info!(node = %inner.name, address = %inner.address, incarnation = inner.incarnation, "node started");
        Ok(Node {
            inner,
            server: Arc::new(Mutex::new(Some(server))),
        })
    }
}

/// This host's name, as peers would resolve it.
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The address to advertise for a listener bound at `bound`: a wildcard bind is reachable by
/// host name, a specific one by its IP.
fn advertised(bound: SocketAddr, host: &str) -> String {
    if bound.ip().is_unspecified() {
        format!("{host}:{}", bound.port())
    } else {
        bound.to_string()
    }
}

/// A call served by this node's own provider, as [`Node::call`] and [`Node::call_on`] make it:
/// a macro, not a function, so that it expands in their futures. Behind a shared `async fn`, a
/// local call built and dropped that function's future too, with room in it for a remote call
/// (callgrind: 415 instructions per local call against 372).
macro_rules! call_locally {
    ($node:expr, $service:expr, $route:expr, $local:expr, $method:expr, $payload:expr, $options:expr) => {
        match failover::start_local(
            $route,
            $local,
            $method.into(),
            $payload.into(),
            $options.trace_id,
        ) {
            LocalCall::Answered(result) => result,
            LocalCall::Waiting(future) => {
                failover::finish_local(&$node.inner, $service, $route, future, $options.timeout)
                    .await
            }
        }
    };
}

impl Node {
    /// This node's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// This process's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.inner.incarnation
    }

    /// The address peers dial.
    pub fn address(&self) -> &str {
        &self.inner.address
    }

    /// The node's metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The runtime configuration the node started with.
    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    /// A token cancelled when the node starts shutting down, for services' own tasks.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    /// A token cancelled as soon as graceful shutdown begins: front doors (an HTTP listener, live
    /// streams) stop taking work on it while the node's links stay open for the work in flight.
    pub fn draining_token(&self) -> CancellationToken {
        self.inner.draining.clone()
    }

    /// Runs `task` as part of the node's in-flight work: graceful shutdown waits for it (up to
    /// the grace period) before closing links.
    pub fn spawn_tracked<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.inner.work.spawn(task);
    }

    /// `task`, counted as the node's in-flight work while it runs.
    pub(crate) fn track<F: std::future::Future>(
        &self,
        task: F,
    ) -> tokio_util::task::task_tracker::TrackedFuture<F> {
        self.inner.work.track_future(task)
    }

    /// The applications this node runs, when it was started with some.
    pub fn applications(&self) -> Option<Arc<Applications>> {
        self.inner.applications.get().cloned()
    }

    pub(crate) fn set_applications(
        &self,
        applications: Arc<Applications>,
    ) -> Result<(), Arc<Applications>> {
        self.inner.applications.set(applications)
    }

    /// Hosts `service` under `name` and advertises it to every peer.
    pub fn register_service(&self, name: impl Into<String>, service: impl Service) {
        self.inner
            .write_local()
            .services
            .insert(name.into(), Arc::new(service));
        self.inner.advertise_change();
    }

    /// Stops hosting `name`; peers stop routing to it here at once.
    pub fn unregister_service(&self, name: &str) {
        self.inner.write_local().services.remove(name);
        self.inner.advertise_change();
    }

    /// Adds a member of process group `group` on this node.
    pub fn join_group(&self, group: impl Into<String>, member: impl crate::GroupMember) {
        self.join_group_shared(group.into(), Arc::new(member));
    }

    pub(crate) fn join_group_shared(&self, group: String, member: SharedGroupMember) {
        self.inner
            .write_local()
            .groups
            .entry(group)
            .or_default()
            .push(member);
        self.inner.advertise_change();
    }

    /// Removes `member` from `group` on this node; the node leaves the group with its last one.
    pub(crate) fn leave_group_shared(&self, group: &str, member: &SharedGroupMember) {
        {
            let mut local = self.inner.write_local();
            if let Some(members) = local.groups.get_mut(group) {
                members.retain(|m| !Arc::ptr_eq(m, member));
                if members.is_empty() {
                    local.groups.remove(group);
                }
            }
        }
        self.inner.advertise_change();
    }

    /// Calls `method` of `service` wherever a provider runs, failing over between providers as
    /// [`CallOptions`] allow.
    pub async fn call(
        &self,
        service: &str,
        method: impl Into<Method>,
        payload: impl Into<Bytes>,
        options: CallOptions,
    ) -> Result<Bytes, NodeError> {
        let route = self.inner.route(service);
        if let Some(local) = &route.local {
            return call_locally!(self, service, &route, local, method, payload, options);
        }
        let (method, payload) = (method.into(), payload.into());
        failover::call_remote(&self.inner, None, route, service, method, payload, options).await
    }

    /// Calls `service` on one named node only (no failover), e.g. the built-in `switchboard.node`
    /// service of a particular member.
    pub async fn call_on(
        &self,
        node: &str,
        service: &str,
        method: impl Into<Method>,
        payload: impl Into<Bytes>,
        options: CallOptions,
    ) -> Result<Bytes, NodeError> {
        if node == self.inner.name && service == system::SERVICE {
            // The built-in service is answered in place, as it is for a peer's call.
            let request = Request {
                method: method.into().into_name(),
                payload: payload.into(),
                trace_id: ByteString::new(),
            };
            return system::handle(&self.inner, request).await;
        }
        let route = self.inner.route(service);
        if node == self.inner.name
            && let Some(local) = &route.local
        {
            return call_locally!(self, service, &route, local, method, payload, options);
        }
        let (method, payload) = (method.into(), payload.into());
        let only = Some(node);
        failover::call_remote(&self.inner, only, route, service, method, payload, options).await
    }

    /// Calls with protobuf messages on both sides.
    pub async fn call_message<Req, Resp>(
        &self,
        service: &str,
        method: impl Into<Method>,
        request: &Req,
        options: CallOptions,
    ) -> Result<Resp, NodeError>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let bytes = self
            .call(service, method, request.encode_to_vec(), options)
            .await?;
        Resp::decode(bytes)
            .map_err(|e| NodeError::Transport(format!("malformed reply from {service}: {e}")))
    }

    /// Sends `method` to one provider of `service` without waiting for a reply.
    pub fn cast(
        &self,
        service: &str,
        method: impl Into<Method>,
        payload: impl Into<Bytes>,
    ) -> Result<(), NodeError> {
        crate::failover::cast(&self.inner, service, method.into(), payload.into())
    }

    /// Delivers `method` to every member of `group` on every node, this one included. Returns
    /// how many nodes it was queued for. Members on a peer whose queue is full miss it and the
    /// drop is counted (`casts_total{outcome="dropped"}`).
    pub fn broadcast(
        &self,
        group: &str,
        method: impl Into<Method>,
        payload: impl Into<Bytes>,
    ) -> usize {
        self.inner
            .broadcast(group, method.into(), payload.into(), Urgency::Prompt)
    }

    /// As [`Node::broadcast`], for traffic nobody waits on (activity tails, statistics). To
    /// members on other nodes it travels on the bulk lane: it is sent, received and handed to
    /// the group on the bulk threads, at a low CPU priority, so a flood of it never slows
    /// calls down. It keeps its order with other background broadcasts, not with calls and
    /// prompt messages.
    pub fn broadcast_background(
        &self,
        group: &str,
        method: impl Into<Method>,
        payload: impl Into<Bytes>,
    ) -> usize {
        self.inner
            .broadcast(group, method.into(), payload.into(), Urgency::Background)
    }

    /// Every member this node knows, itself first.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        self.inner.nodes()
    }

    /// Cluster events: nodes up and down, handshakes refused, failovers.
    pub fn subscribe(&self) -> broadcast::Receiver<ClusterEvent> {
        self.inner.events.subscribe()
    }

    /// Resolves with the reason once `node` is down (at once if it is not up now), as Erlang's
    /// `monitor_node`.
    pub fn monitor_node(&self, node: &str) -> oneshot::Receiver<String> {
        let (tx, rx) = oneshot::channel();
        let mut events = self.inner.events.subscribe();
        let target = node.to_owned();
        let incarnation = {
            let peers = self.inner.read_peers();
            peers
                .get(node)
                .filter(|p| p.state == PeerState::Up)
                .map(|p| p.incarnation)
        };
        let Some(incarnation) = incarnation else {
            let _ = tx.send("noconnection".into());
            return rx;
        };
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(ClusterEvent::NodeDown {
                        node,
                        incarnation: down,
                        reason,
                    }) if node == target && down == incarnation => {
                        let _ = tx.send(reason);
                        return;
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        rx
    }

    /// Waits until some node provides `service`, or `timeout` passes.
    pub async fn wait_for_service(&self, service: &str, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.registry_changed.notified();
            if self.inner.has_provider(service) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.inner.has_provider(service);
            }
        }
    }

    /// Graceful shutdown: stop advertising (peers route away at once), let in-flight calls finish
    /// within the grace period, say goodbye, close the links and stop the listener.
    pub async fn shutdown(&self) {
        self.inner.shutdown_gracefully().await;
        let server = self.server.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(server) = server {
            let _ = server.await;
        }
    }

    /// Runs until SIGTERM or Ctrl-C, then shuts down gracefully.
    pub async fn run_until_signal(&self) {
        crate::signal::terminated().await;
        tracing::info!(node = %self.name(), "shutdown requested");
        self.shutdown().await;
    }
}

impl NodeInner {
    pub(crate) fn read_peers(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Peer>> {
        self.peers.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn write_peers(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Peer>> {
        self.peers.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn read_local(&self) -> std::sync::RwLockReadGuard<'_, Local> {
        self.local.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn write_local(&self) -> std::sync::RwLockWriteGuard<'_, Local> {
        self.local.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn advertisement(&self) -> wire::Advertisement {
        self.read_local().advertisement()
    }

    /// Bumps the advertisement version and pushes it to every peer.
    pub(crate) fn advertise_change(&self) {
        let advertisement = {
            let mut local = self.write_local();
            local.version += 1;
            local.advertisement()
        };
        for link in self.links() {
            link.send_advertisement(&advertisement);
        }
        self.registry_did_change();
    }

    /// Called after every change to what this node hosts or to its peers' links and
    /// advertisements: drops the cached routes and wakes whoever waits for a provider.
    pub(crate) fn registry_did_change(&self) {
        self.routes.clear();
        self.registry_changed.notify_waiters();
    }

    /// Where calls to `service` go now: from the cache, or resolved and cached.
    pub(crate) fn route(&self, service: &str) -> Arc<Route> {
        if let Some(route) = self.routes.get(service) {
            return route;
        }
        // Read before the registry, so a change made while resolving keeps this out of the cache.
        let generation = self.routes.generation();
        let route = Arc::new(Route {
            name: Bytes::copy_from_slice(service.as_bytes()),
            local: self.local_service(service),
            remote: self.remote_providers(service, None, &[]),
            series: self.metrics.call_series(service),
        });
        self.routes.insert(service, generation, &route);
        route
    }

    /// Every open link.
    pub(crate) fn links(&self) -> Vec<Arc<Link>> {
        self.read_peers()
            .values()
            .filter_map(|p| p.link.clone())
            .collect()
    }

    pub(crate) fn has_provider(&self, service: &str) -> bool {
        if self.read_local().services.contains_key(service) {
            return true;
        }
        self.read_peers()
            .values()
            .any(|p| p.link.is_some() && p.advertisement.services.iter().any(|s| s == service))
    }

    /// The local provider of `service`, if this node hosts it and is not draining.
    pub(crate) fn local_service(&self, service: &str) -> Option<SharedService> {
        let local = self.read_local();
        if local.draining {
            return None;
        }
        local.services.get(service).cloned()
    }

    /// Open links to peers providing `service`, leaving out `excluded` (name, incarnation).
    pub(crate) fn remote_providers(
        &self,
        service: &str,
        only: Option<&str>,
        excluded: &[(String, u64)],
    ) -> Vec<Arc<Link>> {
        self.read_peers()
            .iter()
            .filter(|(name, _)| only.is_none_or(|o| o == name.as_str()))
            .filter_map(|(_, peer)| peer.link.clone().map(|l| (peer, l)))
            .filter(|(peer, link)| {
                (only.is_some() || peer.advertisement.services.iter().any(|s| s == service))
                    && !excluded
                        .iter()
                        .any(|(n, i)| *n == link.peer && *i == link.incarnation)
            })
            .map(|(_, link)| link)
            .collect()
    }

    /// Serves a call that arrived over a link: answered on the spot when its handler can (see
    /// [`crate::Service::answer`]), otherwise a future for the lane to run as a task.
    pub(crate) fn serve_call(self: &Arc<Self>, peer: &str, call: InboundCall) -> Served {
        let InboundCall {
            service,
            request,
            timeout_ms,
        } = call;
        let span = tracing::info_span!("serve", node = %self.name, trace_id = %request.trace_id, service = %service, method = %request.method, caller = %peer);
        if service == system::SERVICE {
            let node = self.clone();
            return Served::Later(Box::pin(
                async move { system::handle(&node, request).await }.instrument(span),
            ));
        }
        if self.stopping.load(Ordering::Relaxed) {
            return Served::Now(Err(NodeError::ShuttingDown));
        }
        let Some(handler) = self.local_service(&service) else {
            return Served::Now(Err(NodeError::NoProvider {
                service: service.to_string(),
            }));
        };
        let future = match span.in_scope(|| handler.answer(request)) {
            Answer::Now(result) => return Served::Now(result.map_err(NodeError::Service)),
            Answer::Later(future) => future,
        };
        let timeout = if timeout_ms == 0 {
            self.config.call_timeout()
        } else {
            Duration::from_millis(timeout_ms.into())
        };
        let mut work = self.work.track_future(future.instrument(span));
        // A handler that answers on its first poll never touches the timer wheel.
        if let Some(result) = (&mut work).now_or_never() {
            return Served::Now(result.map_err(NodeError::Service));
        }
        Served::Later(Box::pin(async move {
            match tokio::time::timeout(timeout, work).await {
                Ok(result) => result.map_err(NodeError::Service),
                Err(_) => Err(NodeError::Timeout {
                    service: service.to_string(),
                    timeout,
                }),
            }
        }))
    }

    /// Runs a cast that arrived over a link (or locally) in a task of its own.
    pub(crate) fn serve_cast(&self, service: &str, request: Request) {
        let Some(handler) = self.local_service(service) else {
            tracing::debug!(service, "cast for a service not hosted here; dropped");
            return;
        };
        self.work.spawn(async move {
            if let Err(error) = handler.handle(request).await {
                tracing::debug!(%error, "cast handler failed");
            }
        });
    }

    /// Hands a broadcast to every local member of `group`.
    pub(crate) fn deliver_group(&self, group: &str, message: Request) {
        let members = self.read_local().groups.get(group).cloned();
        for member in members.into_iter().flatten() {
            member.deliver(message.clone());
        }
    }

    fn broadcast(&self, group: &str, method: Method, payload: Bytes, urgency: Urgency) -> usize {
        let message = Request {
            method: method.into_name(),
            payload,
            trace_id: ByteString::new(),
        };
        let mut reached = 0;
        if self.read_local().groups.contains_key(group) {
            self.deliver_group(group, message.clone());
            reached += 1;
        }
        let targets: Vec<Arc<Link>> = self
            .read_peers()
            .values()
            .filter(|p| p.advertisement.groups.iter().any(|g| g == group))
            .filter_map(|p| p.link.clone())
            .collect();
        for link in targets {
            let frame = Kind::GroupCast(wire::GroupCast {
                group: Bytes::copy_from_slice(group.as_bytes()),
                method: message.method.as_bytes().clone(),
                payload: message.payload.clone(),
                trace_id: Bytes::new(),
            });
            match link.send_now(frame, urgency) {
                Ok(()) => {
                    reached += 1;
                    self.metrics
                        .casts
                        .with_label_values(&["broadcast", "ok"])
                        .inc();
                }
                Err(_) => self
                    .metrics
                    .casts
                    .with_label_values(&["broadcast", "dropped"])
                    .inc(),
            }
        }
        reached
    }

    pub(crate) fn nodes(&self) -> Vec<NodeInfo> {
        let local = self.advertisement();
        let mut nodes = vec![NodeInfo {
            name: self.name.clone(),
            address: self.address.clone(),
            incarnation: self.incarnation,
            services: local.services,
            groups: local.groups,
            state: PeerState::Up,
            is_self: true,
        }];
        let peers = self.read_peers();
        let mut others: Vec<NodeInfo> = peers
            .iter()
            .map(|(name, peer)| NodeInfo {
                name: name.clone(),
                address: peer.address.clone(),
                incarnation: peer.incarnation,
                services: peer.advertisement.services.clone(),
                groups: peer.advertisement.groups.clone(),
                state: peer.state.clone(),
                is_self: false,
            })
            .collect();
        others.sort_by(|a, b| a.name.cmp(&b.name));
        nodes.extend(others);
        nodes
    }

    async fn shutdown_gracefully(&self) {
        if self.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        // 1. Stop advertising: peers route new calls elsewhere at once; front doors close.
        self.draining.cancel();
        self.write_local().draining = true;
        self.advertise_change();
        // 2. Let in-flight work finish within the grace period.
        self.work.close();
        let grace = Duration::from_millis(self.config.shutdown_grace_ms);
        if tokio::time::timeout(grace, self.work.wait()).await.is_err() {
            tracing::warn!(node = %self.name, "in-flight work outlived the shutdown grace period");
        }
        // 3. Say goodbye so peers record a deliberate departure, then close everything.
        let links = self.links();
        self.departing.cancel();
        for link in &links {
            link.send_control(Kind::Goodbye(wire::Goodbye {
                reason: "shutdown".into(),
            }));
        }
        for link in &links {
            link.flush_control(Duration::from_millis(200)).await;
            link.close("shutdown");
        }
        self.shutdown.cancel();
        tracing::info!(node = %self.name, "node stopped");
    }
}

/// Turns a service error into the error type services return, for handlers that call others.
impl From<NodeError> for ServiceError {
    fn from(error: NodeError) -> Self {
        match error {
            NodeError::Service(e) => e,
            other => ServiceError::new("unavailable", other.to_string()),
        }
    }
}

impl Node {
    /// Dials `address` now and returns the name of the node that answered: how an operator tool
    /// (a hidden node) reaches a cluster through one seed.
    pub async fn connect(&self, address: &str) -> Result<String, NodeError> {
        self.inner.connect(address, true).await
    }
}
