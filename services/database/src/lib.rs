//! The database node: the only node that talks to a database. It owns the sqlx pool and the
//! schema (migrated at start-up), and serves the `database` service to the rest of the cluster.
//! Several database nodes against one PostgreSQL are redundant providers: any can die and
//! callers fail over to another.

pub mod configuration;
mod group_commit;
mod service;
pub mod store;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use switchboard::application::{SharedApplication, StartFuture};
use switchboard::{AppContext, Application, Applications, Cookie, Node, NodeConfig, NodeError};
use switchboard_proto::names;

pub use service::DatabaseService;
pub use store::Store;

use configuration::DatabaseSettings;

/// Starts a node hosting the `database` application alone, configured from the environment.
pub async fn start(config: NodeConfig, cookie: Cookie) -> Result<Node, NodeError> {
    boot(config, cookie, DatabaseApp::default()).await
}

/// Starts a node serving `store` (tests and the bench pass their own store).
pub async fn serve(
    config: NodeConfig,
    cookie: Cookie,
    store: Store,
    settings: &DatabaseSettings,
) -> Result<Node, NodeError> {
    boot(
        config,
        cookie,
        DatabaseApp::with_store(store, settings.clone()),
    )
    .await
}

async fn boot(config: NodeConfig, cookie: Cookie, app: DatabaseApp) -> Result<Node, NodeError> {
    let catalog: Vec<SharedApplication> = vec![Arc::new(app)];
    let (node, _) =
        Applications::boot(names::DATABASE, config, cookie, catalog, &[names::DATABASE]).await?;
    Ok(node)
}

/// The `database` application: the pool and the schema, the `database` service, and the
/// hourly pruning.
#[derive(Debug, Default)]
pub struct DatabaseApp {
    /// Its settings; read from the environment at each start when `None`.
    settings: Option<DatabaseSettings>,
    /// A store to serve; connected afresh at each start when `None`.
    store: Option<Store>,
}

impl DatabaseApp {
    /// Serves `store` with `settings`.
    pub fn with_store(store: Store, settings: DatabaseSettings) -> Self {
        Self {
            settings: Some(settings),
            store: Some(store),
        }
    }

    /// Connects to the database (`DATABASE_URL`, its password perhaps from a file, or SQLite
    /// in the data directory) and migrates it.
    async fn connect(data_dir: &Path, settings: &DatabaseSettings) -> Result<Store, NodeError> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            NodeError::Config(format!(
                "cannot create the data directory {}: {e}",
                data_dir.display()
            ))
        })?;
        let url = configuration::database_url(data_dir, settings)?;
        let store = Store::connect(&url, settings.db_max_connections)
            .await
            .map_err(|e| NodeError::Config(format!("database: {e}")))?
            .with_batch_writes(settings.batch_writes);
        tracing::info!(backend = ?store.backend(), batch_writes = ?settings.batch_writes, "database ready");
        Ok(store)
    }
}

impl Application for DatabaseApp {
    fn name(&self) -> &'static str {
        names::DATABASE
    }

    /// Connects and migrates before it advertises the service.
    fn start<'a>(&'a self, context: &'a AppContext) -> StartFuture<'a> {
        Box::pin(async move {
            let settings = match &self.settings {
                Some(settings) => settings.clone(),
                None => DatabaseSettings::from_env()?,
            };
            let store = match &self.store {
                Some(store) => store.clone(),
                None => Self::connect(&context.node().config().data_dir, &settings).await?,
            };
            context.register_service(
                names::DATABASE,
                DatabaseService::new(store.clone(), context.node().clone()),
            );
            spawn_pruning(context, store, &settings);
            Ok(())
        })
    }
}

/// Deletes room events and log entries past their retention every hour.
fn spawn_pruning(context: &AppContext, store: Store, settings: &DatabaseSettings) {
    let shutdown = context.shutdown_token();
    let events_ms = (settings.event_retention_hours * 3_600_000) as i64;
    let logs_ms = (settings.log_retention_hours * 3_600_000) as i64;
    context.spawn(async move {
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
