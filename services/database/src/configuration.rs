//! The database node's own settings, layered like every node's (defaults < `switchboard.toml` <
//! environment). `DATABASE_URL` is read under its conventional name, as sqlx and PostgreSQL
//! tooling expect. Its password may come from a file instead (`SWITCHBOARD_DATABASE_PASSWORD_FILE`,
//! a container secret), so that no environment variable or configuration dump holds it.

use std::path::{Path, PathBuf};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
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
    /// `SWITCHBOARD_DATABASE_PASSWORD_FILE`: a file holding the password of a `DATABASE_URL` that
    /// names a user but no password.
    pub database_password_file: Option<PathBuf>,
    /// `SWITCHBOARD_BATCH_WRITES`: how group commit writes a batch of posts on PostgreSQL.
    pub batch_writes: BatchWrites,
}

/// How group commit writes a batch of posts on PostgreSQL (SQLite always locks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchWrites {
    /// One read and one guarded write, pipelined (`store::post_batch::guarded`).
    #[default]
    Guarded,
    /// One transaction that locks the rooms first, as on SQLite (`store::post_batch::locked`):
    /// the portable path, which the bench's `chat` family measures the guarded one against.
    Locked,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            db_max_connections: 16,
            event_retention_hours: 24 * 7,
            log_retention_hours: 24 * 7,
            database_password_file: None,
            batch_writes: BatchWrites::Guarded,
        }
    }
}

impl DatabaseSettings {
    /// Loads the layered settings.
    pub fn from_env() -> Result<Self, NodeError> {
        switchboard::config::load(&[])
    }
}

/// The database to use: `DATABASE_URL` when set, else an SQLite file in the data directory; with
/// the password in `settings.database_password_file`, if any, put into a URL that has none.
pub fn database_url(data_dir: &Path, settings: &DatabaseSettings) -> Result<String, NodeError> {
    let url = std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| default_sqlite_url(data_dir));
    match settings.database_password_file.as_deref() {
        Some(file) if !file.as_os_str().is_empty() => {
            let password = read_password(file)?;
            with_password(&url, &password).map_err(NodeError::Config)
        }
        _ => Ok(url),
    }
}

/// Reads a password file: its contents less trailing line ends (as `$(< file)` reads it in the
/// PostgreSQL image's entrypoint, so both sides agree on the password).
fn read_password(file: &Path) -> Result<String, NodeError> {
    let contents = std::fs::read_to_string(file).map_err(|e| {
        NodeError::Config(format!(
            "cannot read SWITCHBOARD_DATABASE_PASSWORD_FILE {}: {e}",
            file.display()
        ))
    })?;
    let password = contents.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        return Err(NodeError::Config(format!(
            "SWITCHBOARD_DATABASE_PASSWORD_FILE {} is empty",
            file.display()
        )));
    }
    Ok(password.to_owned())
}

/// `url` with `password` (percent-encoded) after its user name. A URL that already has a password
/// keeps it; one with no user name, or no authority at all (SQLite), is an error, since the
/// password would have nowhere to go. Errors never contain the password.
pub fn with_password(url: &str, password: &str) -> Result<String, String> {
    let Some(scheme_end) = url.find("://") else {
        return Err("DATABASE_URL has no authority to put the password file's password in".into());
    };
    let authority_start = scheme_end + 3;
    let authority_end = url[authority_start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| authority_start + i);
    let authority = &url[authority_start..authority_end];
    let Some(at) = authority.rfind('@') else {
        return Err("DATABASE_URL names no user for the password file's password".into());
    };
    let user_info = &authority[..at];
    if user_info.contains(':') {
        return Ok(url.to_owned());
    }
    if user_info.is_empty() {
        return Err("DATABASE_URL names no user for the password file's password".into());
    }
    let user_end = authority_start + at;
    Ok(format!(
        "{}:{}{}",
        &url[..user_end],
        utf8_percent_encode(password, USER_INFO),
        &url[user_end..]
    ))
}

/// Every byte but the URL's unreserved characters (RFC 3986) is percent-encoded, so that any
/// password survives in the user-information part of a URL.
const USER_INFO: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The embedded default: `sqlite://<data_dir>/switchboard.db`, created if missing.
pub fn default_sqlite_url(data_dir: &Path) -> String {
    format!(
        "sqlite://{}?mode=rwc",
        data_dir.join("switchboard.db").display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_goes_after_the_user_percent_encoded() {
        assert_eq!(
            with_password("postgres://switchboard@postgres:5432/switchboard", "0a1b2c").unwrap(),
            "postgres://switchboard:0a1b2c@postgres:5432/switchboard"
        );
        assert_eq!(
            with_password("postgresql://me@db/x?sslmode=disable", "p@ss:w/rd #%é").unwrap(),
            "postgresql://me:p%40ss%3Aw%2Frd%20%23%25%C3%A9@db/x?sslmode=disable"
        );
        assert_eq!(
            with_password("postgres://me@db", "secret").unwrap(),
            "postgres://me:secret@db"
        );
    }

    #[test]
    fn a_url_with_a_password_keeps_it() {
        let url = "postgres://me:already@db/x";
        assert_eq!(with_password(url, "other").unwrap(), url);
    }

    #[test]
    fn a_url_with_nowhere_for_the_password_is_an_error_that_hides_it() {
        for url in ["postgres://db/x", "postgres://@db/x", "sqlite:///data/x.db"] {
            let error = with_password(url, "hunter2-secret").unwrap_err();
            assert!(!error.contains("hunter2"), "{error}");
        }
    }

    #[test]
    fn the_password_file_is_read_without_its_line_end() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("postgres-password");
        std::fs::write(&file, "s3cret\n").unwrap();
        assert_eq!(read_password(&file).unwrap(), "s3cret");
        std::fs::write(&file, "\n").unwrap();
        assert!(read_password(&file).is_err());
        assert!(read_password(&dir.path().join("missing")).is_err());
    }
}
