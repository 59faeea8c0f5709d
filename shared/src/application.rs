//! Applications: a service and everything it owns, started and stopped as one unit on any node,
//! as Erlang starts and stops its applications.
//!
//! An [`Application`] is one of the things a node can host (`log`, `database`, ...). Starting it
//! hands it an [`AppContext`], a scope on the node: every service it registers, group it joins
//! and task it spawns through the context belongs to it. Stopping it undoes exactly that, in the
//! order a whole node's graceful shutdown follows: withdraw the advertisement (peers route new
//! calls elsewhere at once), close its front doors, let its in-flight calls finish within the
//! grace period, then stop its tasks.
//!
//! [`Applications`] is a node's catalog of the applications it can run and the state of each.
//! It answers the built-in `switchboard.node` methods `apps`, `app_start` and `app_stop`, so an
//! operator moves applications between nodes at run time through the inter-node protocol, as a
//! cookie holder. Applications are isolated: a task of one that panics or returns an error
//! stops and restarts that application alone, at most [`RestartIntensity::max_restarts`] times
//! within [`RestartIntensity::window`]; past that it stays stopped and the failure is logged as
//! activity (`kind = "app_failed"`), which reporting turns into an anomaly.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use switchboard_proto::v1 as wire;
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::now_ms;
use crate::config::NodeConfig;
use crate::cookie::Cookie;
use crate::error::{NodeError, ServiceError};
use crate::node::{Node, NodeBuilder};
use crate::registry::PeerState;
use crate::service::{Answer, GroupMember, Request, Service, ServiceFuture, SharedGroupMember};

/// How long an application's background tasks have to end once told to, before they are
/// aborted.
const TASK_GRACE: Duration = Duration::from_secs(1);

/// The future [`Application::start`] returns.
pub type StartFuture<'a> = Pin<Box<dyn Future<Output = Result<(), NodeError>> + Send + 'a>>;

/// One unit a node can host: a service with its groups, tasks and settings.
pub trait Application: Send + Sync + 'static {
    /// Its name, as `--apps` and `switchboard app start` spell it.
    fn name(&self) -> &'static str;

    /// Starts it on `context`'s node: registers its services, joins its groups and spawns its
    /// tasks, all through `context`. A replica that must catch up (replay history) does so
    /// before it registers its service, so it advertises itself only once it is ready.
    fn start<'a>(&'a self, context: &'a AppContext) -> StartFuture<'a>;
}

/// A shared, type-erased application.
pub type SharedApplication = Arc<dyn Application>;

/// How often an application may crash before it stays stopped: at most `max_restarts` restarts
/// within `window`, as an Erlang supervisor's intensity and period.
#[derive(Debug, Clone, Copy)]
pub struct RestartIntensity {
    /// Restarts allowed within the window.
    pub max_restarts: usize,
    /// The sliding window restarts are counted in.
    pub window: Duration,
}

impl RestartIntensity {
    /// The node configuration's intensity (`SWITCHBOARD_APP_MAX_RESTARTS` within
    /// `SWITCHBOARD_APP_RESTART_WINDOW_MS`).
    pub fn of(config: &NodeConfig) -> Self {
        Self {
            max_restarts: config.app_max_restarts,
            window: Duration::from_millis(config.app_restart_window_ms),
        }
    }
}

/// Why starting or stopping an application was refused.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// No application of that name is in this node's catalog.
    #[error("this node has no application {app}; it can run {known}")]
    Unknown {
        /// The name asked for.
        app: String,
        /// The names it knows, comma-separated.
        known: String,
    },
    /// Stopping it would leave a service with no provider in the cluster.
    #[error(
        "{app} on {node} is the last provider of {services}: stopping it makes {services} unavailable to the cluster; pass --force to stop it anyway"
    )]
    LastProvider {
        /// The application.
        app: String,
        /// This node.
        node: String,
        /// The services no other node provides, comma-separated.
        services: String,
    },
    /// It failed to start.
    #[error("{app} failed to start: {source}")]
    Start {
        /// The application.
        app: String,
        /// What went wrong.
        source: NodeError,
    },
}

impl AppError {
    /// The stable code a remote caller sees.
    pub fn code(&self) -> &'static str {
        match self {
            AppError::Unknown { .. } => "unknown_app",
            AppError::LastProvider { .. } => "last_provider",
            AppError::Start { .. } => "start_failed",
        }
    }
}

impl From<AppError> for NodeError {
    fn from(error: AppError) -> Self {
        NodeError::Service(ServiceError::new(error.code(), error.to_string()))
    }
}

/// An application's scope on its node: what it registered, joined and spawned, and the tokens
/// that end them. Cheap to clone; every clone is the same scope.
#[derive(Clone)]
pub struct AppContext {
    scope: Arc<Scope>,
}

struct Scope {
    app: &'static str,
    node: Node,
    /// Which start of the application this is: a failure reported by a task of an earlier
    /// start is stale and ignored.
    generation: u64,
    services: Mutex<Vec<String>>,
    groups: Mutex<Vec<(String, SharedGroupMember)>>,
    /// Calls into its services, and its front-door work, in flight.
    calls: TaskTracker,
    /// Its background tasks, and handles to abort those that outlive the stop.
    tasks: TaskTracker,
    aborts: Mutex<Vec<AbortHandle>>,
    draining: CancellationToken,
    shutdown: CancellationToken,
    supervisor: Weak<Applications>,
}

impl std::fmt::Debug for AppContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppContext")
            .field("app", &self.scope.app)
            .field("node", &self.scope.node.name())
            .finish_non_exhaustive()
    }
}

/// What a supervised task's outcome says about its application: `()` is a normal end, an `Err`
/// is a fatal error that restarts the application.
pub trait TaskOutcome: Send + 'static {
    /// The failure, if the task failed.
    fn failure(self) -> Option<String>;
}

impl TaskOutcome for () {
    fn failure(self) -> Option<String> {
        None
    }
}

impl<E: std::fmt::Display + Send + 'static> TaskOutcome for Result<(), E> {
    fn failure(self) -> Option<String> {
        self.err().map(|e| e.to_string())
    }
}

impl AppContext {
    /// The node it runs on, for calling other services.
    pub fn node(&self) -> &Node {
        &self.scope.node
    }

    /// The application's name.
    pub fn app(&self) -> &'static str {
        self.scope.app
    }

    /// Hosts `service` under `name` for as long as the application runs, and advertises it.
    pub fn register_service(&self, name: impl Into<String>, service: impl Service) {
        let name = name.into();
        lock(&self.scope.services).push(name.clone());
        self.scope.node.register_service(
            name,
            Tracked {
                inner: service,
                calls: self.scope.calls.clone(),
            },
        );
    }

    /// Joins process group `group` for as long as the application runs.
    pub fn join_group(&self, group: impl Into<String>, member: impl GroupMember) {
        let group = group.into();
        let member: SharedGroupMember = Arc::new(member);
        lock(&self.scope.groups).push((group.clone(), member.clone()));
        self.scope.node.join_group_shared(group, member);
    }

    /// Cancelled when the application or its node starts stopping: front doors (an HTTP
    /// listener, live streams) stop taking work on it.
    pub fn draining_token(&self) -> CancellationToken {
        self.scope.draining.clone()
    }

    /// Cancelled once the application's in-flight work is done, or its node shuts down: its
    /// background tasks end on it.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.scope.shutdown.clone()
    }

    /// Runs a background task of the application, ending on [`AppContext::shutdown_token`]. A
    /// panic or an `Err` from it restarts the application.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future + Send + 'static,
        F::Output: TaskOutcome,
    {
        let handle = tokio::spawn(self.scope.tasks.track_future(task));
        lock(&self.scope.aborts).push(handle.abort_handle());
        self.supervise(handle);
    }

    /// Runs front-door work (a listener and its connections), ending on
    /// [`AppContext::draining_token`]: stopping the application, and the node's graceful
    /// shutdown, wait for it within the grace period. A panic restarts the application.
    pub fn spawn_tracked<F>(&self, task: F)
    where
        F: Future + Send + 'static,
        F::Output: TaskOutcome,
    {
        let task = self.scope.calls.track_future(task);
        let handle = tokio::spawn(self.scope.node.track(task));
        self.supervise(handle);
    }

    fn supervise<T: TaskOutcome>(&self, handle: tokio::task::JoinHandle<T>) {
        let supervisor = self.scope.supervisor.clone();
        let (app, generation) = (self.scope.app, self.scope.generation);
        tokio::spawn(async move {
            let failure = match handle.await {
                Ok(outcome) => outcome.failure(),
                Err(error) if error.is_panic() => Some(panic_message(error.into_panic())),
                Err(_) => None,
            };
            if let (Some(failure), Some(supervisor)) = (failure, supervisor.upgrade()) {
                supervisor.task_failed(app, generation, failure);
            }
        });
    }

    /// Stops the application: withdraw, drain within `grace`, then end its tasks.
    async fn stop(&self, grace: Duration) {
        let node = &self.scope.node;
        for name in lock(&self.scope.services).drain(..) {
            node.unregister_service(&name);
        }
        for (group, member) in lock(&self.scope.groups).drain(..) {
            node.leave_group_shared(&group, &member);
        }
        self.scope.draining.cancel();
        self.scope.calls.close();
        if tokio::time::timeout(grace, self.scope.calls.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                app = self.scope.app,
                "in-flight calls outlived the grace period"
            );
        }
        self.scope.shutdown.cancel();
        // Tasks end on the shutdown token; those that do not within a second are aborted.
        self.scope.tasks.close();
        let _ = tokio::time::timeout(TASK_GRACE, self.scope.tasks.wait()).await;
        for task in lock(&self.scope.aborts).drain(..) {
            task.abort();
        }
    }

    fn services(&self) -> Vec<String> {
        lock(&self.scope.services).clone()
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .map_or_else(|| "panicked".to_owned(), |m| format!("panicked: {m}"))
}

/// A service counted as its application's in-flight work, so stopping the application waits for
/// the calls it is serving.
struct Tracked<S> {
    inner: S,
    calls: TaskTracker,
}

impl<S: Service> Service for Tracked<S> {
    fn handle(&self, request: Request) -> ServiceFuture {
        Box::pin(self.calls.track_future(self.inner.handle(request)))
    }

    fn answer(&self, request: Request) -> Answer {
        match self.inner.answer(request) {
            Answer::Now(result) => Answer::Now(result),
            Answer::Later(future) => Answer::Later(Box::pin(self.calls.track_future(future))),
        }
    }
}

/// A node's applications: the catalog it can run, and the state of each.
pub struct Applications {
    node: Node,
    catalog: Vec<SharedApplication>,
    intensity: RestartIntensity,
    slots: Mutex<Vec<Slot>>,
    /// Starts and stops run one at a time.
    control: tokio::sync::Mutex<()>,
    weak: Weak<Applications>,
}

impl std::fmt::Debug for Applications {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applications")
            .field("node", &self.node.name())
            .field("catalog", &self.names())
            .finish_non_exhaustive()
    }
}

/// One catalog entry's state.
#[derive(Default)]
struct Slot {
    running: Option<AppContext>,
    state: &'static str,
    since_ms: i64,
    generation: u64,
    /// When it was restarted after a crash, within the window.
    restarts: VecDeque<Instant>,
    last_failure: String,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Names in a selection such as `SWITCHBOARD_APPS=log,reporting` or `--apps all`.
pub fn parse_selection(
    selection: &str,
    catalog: &[SharedApplication],
) -> Result<Vec<&'static str>, NodeError> {
    let known = || {
        catalog
            .iter()
            .map(|a| a.name())
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut names = Vec::new();
    for part in selection
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        if part == "all" {
            names.extend(catalog.iter().map(|a| a.name()));
            continue;
        }
        match catalog.iter().find(|a| a.name() == part) {
            Some(app) => names.push(app.name()),
            None => {
                return Err(NodeError::Config(format!(
                    "unknown application {part:?}; the applications are {} (or all)",
                    known()
                )));
            }
        }
    }
    if names.is_empty() {
        return Err(NodeError::Config(format!(
            "no application selected; choose from {} (or all)",
            known()
        )));
    }
    // Catalog order is start order, whatever order they were named in.
    names.sort_by_key(|name| catalog.iter().position(|a| a.name() == *name));
    names.dedup();
    Ok(names)
}

impl Applications {
    /// Starts a node named after `kind` and runs `selected` of `catalog` on it, in catalog
    /// order: how every node binary and every test node starts.
    pub async fn boot(
        kind: &str,
        config: NodeConfig,
        cookie: Cookie,
        catalog: Vec<SharedApplication>,
        selected: &[&str],
    ) -> Result<(Node, Arc<Applications>), NodeError> {
        let intensity = RestartIntensity::of(&config);
        let node = NodeBuilder::new(kind, config, cookie).start().await?;
        let applications = Self::install(&node, catalog, intensity)?;
        for app in selected {
            applications.start(app).await?;
        }
        Ok((node, applications))
    }

    /// Gives `node` the applications of `catalog`, none of them running yet.
    pub fn install(
        node: &Node,
        catalog: Vec<SharedApplication>,
        intensity: RestartIntensity,
    ) -> Result<Arc<Applications>, NodeError> {
        let slots = catalog
            .iter()
            .map(|_| Slot {
                state: "stopped",
                ..Slot::default()
            })
            .collect();
        let applications = Arc::new_cyclic(|weak| Applications {
            node: node.clone(),
            catalog,
            intensity,
            slots: Mutex::new(slots),
            control: tokio::sync::Mutex::new(()),
            weak: weak.clone(),
        });
        node.set_applications(applications.clone())
            .map_err(|_| NodeError::Config("this node already has its applications".into()))?;
        Ok(applications)
    }

    /// The catalog's names, in start order.
    pub fn names(&self) -> Vec<&'static str> {
        self.catalog.iter().map(|a| a.name()).collect()
    }

    fn index(&self, app: &str) -> Result<usize, AppError> {
        self.catalog
            .iter()
            .position(|a| a.name() == app)
            .ok_or_else(|| AppError::Unknown {
                app: app.to_owned(),
                known: self.names().join(","),
            })
    }

    /// Starts `app`; a running one is left as it is.
    pub async fn start(&self, app: &str) -> Result<(), AppError> {
        let index = self.index(app)?;
        let _control = self.control.lock().await;
        if lock(&self.slots)[index].running.is_some() {
            return Ok(());
        }
        lock(&self.slots)[index].restarts.clear();
        self.start_locked(index).await
    }

    async fn start_locked(&self, index: usize) -> Result<(), AppError> {
        let application = self.catalog[index].clone();
        let generation = {
            let mut slots = lock(&self.slots);
            let slot = &mut slots[index];
            slot.generation += 1;
            slot.state = "starting";
            slot.generation
        };
        let context = AppContext {
            scope: Arc::new(Scope {
                app: application.name(),
                node: self.node.clone(),
                generation,
                services: Mutex::default(),
                groups: Mutex::default(),
                calls: TaskTracker::new(),
                tasks: TaskTracker::new(),
                aborts: Mutex::default(),
                draining: self.node.draining_token().child_token(),
                shutdown: self.node.shutdown_token().child_token(),
                supervisor: self.weak.clone(),
            }),
        };
        match application.start(&context).await {
            Ok(()) => {
                let mut slots = lock(&self.slots);
                let slot = &mut slots[index];
                slot.running = Some(context);
                slot.state = "running";
                slot.since_ms = now_ms();
                tracing::info!(
                    kind = "app_started",
                    app = application.name(),
                    node = %self.node.name(),
                    "application started"
                );
                Ok(())
            }
            Err(source) => {
                // Undo whatever it had set up before it failed.
                context.stop(Duration::ZERO).await;
                let mut slots = lock(&self.slots);
                slots[index].state = "stopped";
                slots[index].last_failure = source.to_string();
                Err(AppError::Start {
                    app: application.name().to_owned(),
                    source,
                })
            }
        }
    }

    /// Stops `app`. Refused when this node is the last provider of one of its services, unless
    /// `force`; stopping one that is not running does nothing.
    pub async fn stop(&self, app: &str, force: bool) -> Result<(), AppError> {
        let index = self.index(app)?;
        let _control = self.control.lock().await;
        let Some(context) = lock(&self.slots)[index].running.clone() else {
            return Ok(());
        };
        if !force {
            let orphaned = self.orphaned(&context.services());
            if !orphaned.is_empty() {
                return Err(AppError::LastProvider {
                    app: app.to_owned(),
                    node: self.node.name().to_owned(),
                    services: orphaned.join(","),
                });
            }
        }
        self.stop_locked(index, "stopped").await;
        tracing::info!(kind = "app_stopped", app, node = %self.node.name(), "application stopped");
        Ok(())
    }

    async fn stop_locked(&self, index: usize, state: &'static str) {
        let context = {
            let mut slots = lock(&self.slots);
            slots[index].state = "stopping";
            slots[index].running.take()
        };
        if let Some(context) = context {
            let grace = Duration::from_millis(self.node.config().shutdown_grace_ms);
            context.stop(grace).await;
        }
        let mut slots = lock(&self.slots);
        slots[index].state = state;
        slots[index].since_ms = 0;
    }

    /// The services among `services` that no other node that is up provides.
    fn orphaned(&self, services: &[String]) -> Vec<String> {
        let nodes = self.node.nodes();
        services
            .iter()
            .filter(|service| {
                !nodes
                    .iter()
                    .any(|n| !n.is_self && n.state == PeerState::Up && n.services.contains(service))
            })
            .cloned()
            .collect()
    }

    /// Every application in the catalog and its state.
    pub fn list(&self) -> Vec<wire::AppInfo> {
        let slots = lock(&self.slots);
        self.catalog
            .iter()
            .zip(slots.iter())
            .map(|(app, slot)| wire::AppInfo {
                name: app.name().to_owned(),
                state: slot.state.to_owned(),
                since_ms: slot.since_ms,
                restarts: slot.restarts.len() as u32,
                last_failure: slot.last_failure.clone(),
                services: slot
                    .running
                    .as_ref()
                    .map(AppContext::services)
                    .unwrap_or_default(),
            })
            .collect()
    }

    /// A task of `app`'s start `generation` failed: restart the application, or leave it
    /// stopped once it has used up its restart intensity.
    fn task_failed(&self, app: &'static str, generation: u64, failure: String) {
        let Some(applications) = self.weak.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            let Ok(index) = applications.index(app) else {
                return;
            };
            let _control = applications.control.lock().await;
            let give_up = {
                let mut slots = lock(&applications.slots);
                let slot = &mut slots[index];
                if slot.generation != generation || slot.running.is_none() {
                    return;
                }
                slot.last_failure = failure.clone();
                let now = Instant::now();
                let window = applications.intensity.window;
                while slot
                    .restarts
                    .front()
                    .is_some_and(|t| now.duration_since(*t) > window)
                {
                    slot.restarts.pop_front();
                }
                let give_up = slot.restarts.len() >= applications.intensity.max_restarts;
                if !give_up {
                    slot.restarts.push_back(now);
                }
                give_up
            };
            let node = applications.node.name().to_owned();
            if give_up {
                applications.stop_locked(index, "failed").await;
                tracing::error!(
                    kind = "app_failed",
                    app,
                    node = %node,
                    failure = %failure,
                    max_restarts = applications.intensity.max_restarts,
                    window_ms = applications.intensity.window.as_millis() as u64,
                    "application crashed too often and stays stopped"
                );
                return;
            }
            tracing::warn!(kind = "app_restarted", app, node = %node, failure = %failure, "application crashed; restarting it");
            applications.stop_locked(index, "stopped").await;
            if let Err(error) = applications.start_locked(index).await {
                tracing::error!(
                    kind = "app_failed",
                    app,
                    node = %node,
                    failure = %error,
                    "application could not be restarted"
                );
                lock(&applications.slots)[index].state = "failed";
            }
        });
    }

    /// Answers the built-in `switchboard.node` methods `apps`, `app_start` and `app_stop`.
    pub(crate) async fn handle(&self, request: &Request) -> Result<Bytes, NodeError> {
        match &*request.method {
            "apps" => {}
            "app_start" | "app_stop" => {
                let control = wire::AppControl::decode(request.payload.clone()).map_err(|e| {
                    ServiceError::new("invalid_request", format!("malformed request: {e}"))
                })?;
                if &*request.method == "app_start" {
                    self.start(&control.app).await?;
                } else {
                    self.stop(&control.app, control.force).await?;
                }
            }
            other => {
                return Err(ServiceError::new(
                    "unknown_method",
                    format!("{} has no method {other}", crate::system::SERVICE),
                )
                .into());
            }
        }
        Ok(wire::AppsReply { apps: self.list() }.encode_to_vec().into())
    }
}

/// Where a node keeps its applications, set once.
pub(crate) type ApplicationsCell = OnceLock<Arc<Applications>>;
