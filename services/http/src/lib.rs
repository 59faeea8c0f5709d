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
pub mod startup;
mod state;
mod validation;
mod web;

use switchboard::{Cookie, Node, NodeBuilder, NodeConfig, NodeError};

pub use configuration::HttpSettings;
pub use startup::Application;

/// Starts an http node: the runtime node, then the API on `SWITCHBOARD_HTTP_LISTEN`.
pub async fn start(config: NodeConfig, cookie: Cookie) -> Result<Node, NodeError> {
    let settings = HttpSettings::from_env()?;
    let node = NodeBuilder::new("http", config, cookie).start().await?;
    Application::build(node.clone(), settings).await?;
    Ok(node)
}
