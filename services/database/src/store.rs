//! The store: the only code in Switchboard that opens a database connection. One `AnyPool` serves
//! PostgreSQL and SQLite alike; the SQL is written once in the dialect both accept, and the
//! migrations (embedded, one directory per backend) run at start-up under the migrator's lock, so
//! several database nodes starting at once are safe.

mod accounts;
mod analytics;
mod events;
mod logs;
mod messages;
mod post_batch;
mod reports;
mod resets;
mod rooms;

pub(crate) use messages::PostOutcome;
use post_batch::BatchMemory;
pub(crate) use post_batch::{NewPost, Turn};
use resets::Resets;

use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Connection, Executor};
use switchboard::ServiceError;

use crate::configuration::BatchWrites;
pub(crate) use switchboard::clock::now_ms;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The request was understood and refused (a rule of the chat), with a stable code.
    #[error("{code}: {message}")]
    Rejected {
        /// Stable snake_case code.
        code: &'static str,
        /// Human sentence.
        message: String,
    },
    /// The database failed.
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database URL names no supported backend.
    #[error("unsupported database URL (use postgres://... or sqlite://...)")]
    UnsupportedUrl,
}

impl StoreError {
    /// Whether this is a lost, reset or refused connection: the request did nothing wrong, and a
    /// retry on a fresh connection can succeed.
    pub(crate) fn is_transient(&self) -> bool {
        matches!(self, StoreError::Sql(error) if resets::is_transient(error))
    }

    pub(crate) fn rejected(code: &'static str, message: impl Into<String>) -> Self {
        StoreError::Rejected {
            code,
            message: message.into(),
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Rejected { code, message } => ServiceError::new(code, message),
            error if error.is_transient() => {
                tracing::warn!(error = %error, "database unreachable");
                ServiceError::new("unavailable", "the database is unreachable")
            }
            other => {
                tracing::error!(error = %other, "database operation failed");
                ServiceError::new("internal", "the database operation failed")
            }
        }
    }
}

/// Which database is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL: the production database.
    Postgres,
    /// SQLite: the embedded default for a laptop run.
    Sqlite,
}

/// The chat's persistent state.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// How batches of posts are written on PostgreSQL.
    batch_writes: BatchWrites,
    /// Where this node's batches of posts in flight leave each room (PostgreSQL only).
    batch_memory: Arc<BatchMemory>,
    /// When a connection was last found lost or reset.
    resets: Arc<Resets>,
}

/// How long a PostgreSQL connection may sit idle in the pool before it is pinged on its way out.
const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

impl Store {
    /// Connects to `url` and migrates the schema.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        install_default_drivers();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(StoreError::UnsupportedUrl);
        };
        let options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(5));
        let resets = Arc::new(Resets::default());
        let pool = match backend {
            // SQLite allows one writer; one connection avoids busy errors between our own
            // transactions, and WAL keeps readers of other processes unblocked.
            Backend::Sqlite => {
                options
                    .max_connections(1)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            conn.execute("PRAGMA journal_mode = WAL").await?;
                            conn.execute("PRAGMA foreign_keys = ON").await?;
                            conn.execute("PRAGMA busy_timeout = 5000").await?;
                            conn.execute("PRAGMA synchronous = FULL").await?;
                            Ok(())
                        })
                    })
                    .connect(url)
                    .await?
            }
            // A connection is pinged before it is handed out only if it sat idle for a while:
            // pinging every one is a round trip to PostgreSQL, and a wake-up of its backend, per
            // statement (a tenth of the database node's CPU under load). One in steady use has
            // just answered; one that died since fails its statement, which the service retries on
            // a fresh connection. After a reset, every connection older than it is pinged too
            // (see `resets`), so the dead ones are replaced rather than each failing a request.
            Backend::Postgres => {
                let resets = resets.clone();
                options
                    .max_connections(max_connections)
                    .test_before_acquire(false)
                    .before_acquire(move |conn, meta| {
                        let suspect = resets.may_have_killed(meta.age);
                        Box::pin(async move {
                            if meta.idle_for < PING_AFTER_IDLE && !suspect {
                                return Ok(true);
                            }
                            conn.ping().await?;
                            Ok(true)
                        })
                    })
                    .connect(url)
                    .await?
            }
        };
        match backend {
            Backend::Postgres => POSTGRES.run(&pool).await?,
            Backend::Sqlite => SQLITE.run(&pool).await?,
        }
        Ok(Self {
            pool,
            backend,
            batch_writes: BatchWrites::default(),
            batch_memory: Arc::default(),
            resets,
        })
    }

    /// Records that an operation met a lost or reset connection, so that pooled connections
    /// older than now are checked before they are used again.
    pub(crate) fn record_reset(&self) {
        self.resets.record();
    }

    /// This store, writing batches of posts on PostgreSQL as `writes` says.
    pub fn with_batch_writes(mut self, writes: BatchWrites) -> Self {
        self.batch_writes = writes;
        self
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
