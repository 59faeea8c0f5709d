//! The database node's own settings, layered like every node's (defaults < `switchboard.toml` <
//! environment). `DATABASE_URL` is read under its conventional name, as sqlx and PostgreSQL
//! tooling expect.

use std::path::Path;

use serde::Deserialize;
use switchboard::NodeError;

/// Settings of the database service.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DatabaseSettings {
    /// `SWITCHBOARD_DB_MAX_CONNECTIONS`: pool size for PostgreSQL (SQLite always uses one writer).
    pub db_max_connections: u32,
    /// `SWITCHBOARD_EVENT_RETENTION_HOURS`: how long room events stay replayable for live clients.
    pub event_retention_hours: u64,
    /// `SWITCHBOARD_LOG_RETENTION_HOURS`: how long activity log entries are kept.
    pub log_retention_hours: u64,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            db_max_connections: 16,
            event_retention_hours: 24 * 7,
            log_retention_hours: 24 * 7,
        }
    }
}

impl DatabaseSettings {
    /// Loads the layered settings.
    pub fn from_env() -> Result<Self, NodeError> {
        switchboard::config::load(&[])
    }
}

/// The database to use: `DATABASE_URL` when set, else an SQLite file in the data directory.
pub fn database_url(data_dir: &Path) -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| default_sqlite_url(data_dir))
}

/// The embedded default: `sqlite://<data_dir>/switchboard.db`, created if missing.
pub fn default_sqlite_url(data_dir: &Path) -> String {
    format!(
        "sqlite://{}?mode=rwc",
        data_dir.join("switchboard.db").display()
    )
}
