//! The analytics node: exact, streaming aggregates of the chat's activity — messages per minute
//! and hour, active users, top rooms and posters, message lengths, the busiest hour, new
//! accounts, and the delivery latency of live events — answered by the `analytics` service.
//!
//! Every replica keeps all the aggregates in memory, fed by the `chat.events` broadcasts of
//! every committed room event and bootstrapped from the database on start (the `feed` module
//! says how it stays exact when broadcasts are lost). Replicas share nothing and agree because they
//! apply the same events: any number can run, callers pick any, and one dying is invisible.
//! Http nodes measure delivery latency and ship it with [`DeliveryLatency`].

mod aggregates;
pub mod configuration;
mod database;
pub mod delivery;
mod feed;
mod latency;
mod service;

use std::sync::Arc;

use switchboard::application::{SharedApplication, StartFuture};
use switchboard::{AppContext, Application, Applications, Cookie, Node, NodeConfig, NodeError};
use switchboard_proto::names;
use tokio::sync::mpsc;

pub use aggregates::Window;
pub use configuration::AnalyticsSettings;
pub use delivery::DeliveryLatency;

use feed::Feed;
pub(crate) use switchboard::clock::now_ms;

/// Starts a node hosting the `analytics` application alone, settings from the environment.
pub async fn start(config: NodeConfig, cookie: Cookie) -> Result<Node, NodeError> {
    boot(config, cookie, AnalyticsApp::default()).await
}

/// Starts a node hosting the `analytics` application with `settings` (tests pass their own).
/// It joins the cluster at once and advertises the `analytics` service once its bootstrap from
/// the database has finished.
pub async fn serve(
    config: NodeConfig,
    cookie: Cookie,
    settings: AnalyticsSettings,
) -> Result<Node, NodeError> {
    boot(config, cookie, AnalyticsApp::with_settings(settings)).await
}

async fn boot(config: NodeConfig, cookie: Cookie, app: AnalyticsApp) -> Result<Node, NodeError> {
    let catalog: Vec<SharedApplication> = vec![Arc::new(app)];
    let (node, _) = Applications::boot(
        names::ANALYTICS,
        config,
        cookie,
        catalog,
        &[names::ANALYTICS],
    )
    .await?;
    Ok(node)
}

/// The `analytics` application: the feed that bootstraps and maintains the aggregates, and the
/// `analytics` service it advertises once bootstrapped.
#[derive(Debug, Default)]
pub struct AnalyticsApp {
    /// Its settings; read from the environment at each start when `None`.
    settings: Option<AnalyticsSettings>,
}

impl AnalyticsApp {
    /// Runs with `settings`.
    pub fn with_settings(settings: AnalyticsSettings) -> Self {
        Self {
            settings: Some(settings),
        }
    }
}

impl Application for AnalyticsApp {
    fn name(&self) -> &'static str {
        names::ANALYTICS
    }

    fn start<'a>(&'a self, context: &'a AppContext) -> StartFuture<'a> {
        Box::pin(async move {
            let settings = match &self.settings {
                Some(settings) => settings.clone(),
                None => AnalyticsSettings::from_env()?,
            };
            let (queue, inbox) = mpsc::channel(feed::INBOX);
            for group in [names::CHAT_EVENTS, names::ANALYTICS_LATENCY] {
                let queue = queue.clone();
                context.join_group(group, move |message| {
                    if queue.try_send(message).is_err() {
                        tracing::debug!("analytics inbox full; a broadcast is dropped");
                    }
                });
            }
            context.spawn(Feed::new(context.clone(), inbox, &settings).run());
            Ok(())
        })
    }
}
