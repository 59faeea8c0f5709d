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

use std::time::{SystemTime, UNIX_EPOCH};

use switchboard::{Cookie, Node, NodeBuilder, NodeConfig, NodeError};
use switchboard_proto::names;
use tokio::sync::mpsc;

pub use aggregates::Window;
pub use configuration::AnalyticsSettings;
pub use delivery::DeliveryLatency;

use feed::Feed;

/// Starts an analytics node with its settings from the environment.
pub async fn start(config: NodeConfig, cookie: Cookie) -> Result<Node, NodeError> {
    serve(config, cookie, AnalyticsSettings::from_env()?).await
}

/// Starts an analytics node (tests pass their own settings). It joins the cluster at once and
/// advertises the `analytics` service once its bootstrap from the database has finished.
pub async fn serve(
    config: NodeConfig,
    cookie: Cookie,
    settings: AnalyticsSettings,
) -> Result<Node, NodeError> {
    let node = NodeBuilder::new(names::ANALYTICS, config, cookie)
        .start()
        .await?;
    let (queue, inbox) = mpsc::channel(feed::INBOX);
    for group in [names::CHAT_EVENTS, names::ANALYTICS_LATENCY] {
        let queue = queue.clone();
        node.join_group(group, move |message| {
            if queue.try_send(message).is_err() {
                tracing::debug!("analytics inbox full; a broadcast is dropped");
            }
        });
    }
    tokio::spawn(Feed::new(node.clone(), inbox, &settings).run());
    Ok(node)
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
