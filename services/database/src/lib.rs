//! The database node: the only node that talks to a database. It owns the sqlx pool and the
//! schema (migrated at start-up), and serves the `database` service to the rest of the cluster.
//! Several database nodes against one PostgreSQL are redundant providers: any can die and
//! callers fail over to another.

pub mod configuration;
mod group_commit;
mod service;
pub mod store;

use std::time::Duration;

use switchboard::{Cookie, Node, NodeBuilder, NodeConfig, NodeError};
use switchboard_proto::names;

pub use service::DatabaseService;
pub use store::Store;

use configuration::DatabaseSettings;

/// Connects to the database (`DATABASE_URL`, its password perhaps from a file, or SQLite in the
/// data directory), migrates it, and only then starts a node advertising the `database` service.
pub async fn start(config: NodeConfig, cookie: Cookie) -> Result<Node, NodeError> {
    let settings = DatabaseSettings::from_env()?;
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        NodeError::Config(format!(
            "cannot create the data directory {}: {e}",
            config.data_dir.display()
        ))
    })?;
    let url = configuration::database_url(&config.data_dir, &settings)?;
    let store = Store::connect(&url, settings.db_max_connections)
        .await
        .map_err(|e| NodeError::Config(format!("database: {e}")))?
        .with_batch_writes(settings.batch_writes);
    tracing::info!(backend = ?store.backend(), batch_writes = ?settings.batch_writes, "database ready");
    serve(config, cookie, store, &settings).await
}

/// Starts a node serving `store` (tests pass their own store).
pub async fn serve(
    config: NodeConfig,
    cookie: Cookie,
    store: Store,
    settings: &DatabaseSettings,
) -> Result<Node, NodeError> {
    let node = NodeBuilder::new(names::DATABASE, config, cookie)
        .start()
        .await?;
    node.register_service(
        names::DATABASE,
        DatabaseService::new(store.clone(), node.clone()),
    );
    spawn_pruning(&node, store, settings);
    Ok(node)
}

/// Deletes room events and log entries past their retention every hour.
fn spawn_pruning(node: &Node, store: Store, settings: &DatabaseSettings) {
    let shutdown = node.shutdown_token();
    let events_ms = (settings.event_retention_hours * 3_600_000) as i64;
    let logs_ms = (settings.log_retention_hours * 3_600_000) as i64;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            match store.prune_events(events_ms).await {
                Ok(0) => {}
                Ok(pruned) => tracing::info!(pruned, "pruned old room events"),
                Err(error) => tracing::warn!(%error, "pruning room events failed"),
            }
            match store.prune_logs(logs_ms).await {
                Ok(0) => {}
                Ok(pruned) => tracing::info!(pruned, "pruned old log entries"),
                Err(error) => tracing::warn!(%error, "pruning log entries failed"),
            }
        }
    });
}
