//! The http node: the chat's HTTP API. It owns no data: it authenticates, validates, and calls
//! the `database` service through the node runtime, wherever database nodes run. Any number of
//! http nodes can run side by side; live events reach each of them through the `chat.events`
//! process group.

mod auth;
pub mod configuration;
mod database;
mod error;
mod extract;
mod http_metrics;
mod idempotency;
mod live;
mod log_tail;
mod model;
mod openapi;
mod rate_limit;
mod reporting;
mod request_id;
mod routes;
mod serve;
mod served_by;
mod service_client;
mod session_cache;
mod stalled_writes;
pub mod startup;
mod state;
mod stream_slots;
mod validation;
mod web;

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use switchboard::application::{RestartIntensity, SharedApplication, StartFuture};
use switchboard::{AppContext, Applications, Cookie, Node, NodeConfig, NodeError};

pub use configuration::HttpSettings;
pub use startup::Application;

/// Starts a node hosting the `http` application alone: the runtime node, then the API on
/// `SWITCHBOARD_HTTP_LISTEN`.
pub async fn start(config: NodeConfig, cookie: Cookie) -> Result<Node, NodeError> {
    let catalog: Vec<SharedApplication> = vec![Arc::new(HttpApp::default())];
    let (node, _) = Applications::boot(HTTP, config, cookie, catalog, &[HTTP]).await?;
    Ok(node)
}

/// Starts the `http` application with `settings` on `node`, a node running no applications
/// yet (tests start their own nodes), and returns the port the API listens on.
pub async fn serve(node: &Node, settings: HttpSettings) -> Result<u16, NodeError> {
    let app = Arc::new(HttpApp::with_settings(settings));
    let catalog: Vec<SharedApplication> = vec![app.clone()];
    let applications = Applications::install(node, catalog, RestartIntensity::of(node.config()))?;
    applications.start(HTTP).await?;
    app.port()
        .ok_or_else(|| NodeError::Config("the http application bound no port".into()))
}

/// The `http` application's name.
pub const HTTP: &str = "http";

/// The `http` application: the chat API and web pages on their own port, with the live streams
/// and session revocations behind them.
#[derive(Debug, Default)]
pub struct HttpApp {
    /// Its settings; read from the environment at each start when `None`.
    settings: Option<HttpSettings>,
    /// The port its latest start bound; 0 before the first.
    port: AtomicU16,
}

impl HttpApp {
    /// Serves with `settings`.
    pub fn with_settings(settings: HttpSettings) -> Self {
        Self {
            settings: Some(settings),
            port: AtomicU16::new(0),
        }
    }

    /// The port the API listens on, once started.
    pub fn port(&self) -> Option<u16> {
        Some(self.port.load(Ordering::Relaxed)).filter(|p| *p != 0)
    }
}

impl switchboard::Application for HttpApp {
    fn name(&self) -> &'static str {
        HTTP
    }

    fn start<'a>(&'a self, context: &'a AppContext) -> StartFuture<'a> {
        Box::pin(async move {
            let settings = match &self.settings {
                Some(settings) => settings.clone(),
                None => HttpSettings::from_env()?,
            };
            let api = Application::build(context, settings).await?;
            self.port.store(api.port(), Ordering::Relaxed);
            Ok(())
        })
    }
}
