//! The http node's settings, layered like every node's (defaults < `switchboard.toml` <
//! `SWITCHBOARD_*` environment). The admin token is wrapped so it never prints; it comes from
//! `SWITCHBOARD_ADMIN_TOKEN` or, when that is unset or empty, the file named by
//! `SWITCHBOARD_ADMIN_TOKEN_FILE` (a container secret).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use switchboard::NodeError;

/// A secret string: `Debug` shows a placeholder.
#[derive(Clone, Deserialize, Default)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret, for comparison only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Settings of the http service.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct HttpSettings {
    /// `SWITCHBOARD_HTTP_LISTEN`: where the API listens.
    pub http_listen: String,
    /// `SWITCHBOARD_ADMIN_TOKEN`: bearer token of `/v1/admin/*`; unset, admin routes answer 403.
    pub admin_token: Option<Secret>,
    /// `SWITCHBOARD_ADMIN_TOKEN_FILE`: a file holding the admin token, read when
    /// `SWITCHBOARD_ADMIN_TOKEN` is unset or empty.
    pub admin_token_file: Option<PathBuf>,
    /// `SWITCHBOARD_RATE_LIMIT`: requests per minute per user; 0 turns limiting off.
    pub rate_limit: u32,
    /// `SWITCHBOARD_REQUEST_TIMEOUT_MS`: deadline of each call to another service.
    pub request_timeout_ms: u64,
    /// `SWITCHBOARD_SESSION_DAYS`: how long a login token works.
    pub session_days: u64,
    /// `SWITCHBOARD_SESSION_CACHE_MS`: how long this node trusts a session it checked without
    /// asking the database again (logouts reach every node at once regardless); 0 turns it off.
    pub session_cache_ms: u64,
    /// `SWITCHBOARD_HEADER_TIMEOUT_MS`: how long a client may take to send a request's head
    /// before its connection is closed (slow clients hold no connection for long).
    pub header_timeout_ms: u64,
    /// `SWITCHBOARD_BODY_TIMEOUT_MS`: how long a request body may stall between two pieces
    /// before the request is answered 408 (a client that opens a body and stops holds nothing).
    pub body_timeout_ms: u64,
    /// `SWITCHBOARD_WRITE_STALL_TIMEOUT_MS`: how long a write to a client may wait for it to
    /// read before its connection is dropped (a live stream nobody reads holds nothing for long).
    pub write_stall_timeout_ms: u64,
    /// `SWITCHBOARD_LOGIN_RATE_LIMIT`: attempts to log in or register per minute per client
    /// address, and to log in per username; 0 turns these limits off.
    pub login_rate_limit: u32,
    /// `SWITCHBOARD_TRUST_FORWARDED_FOR`: take the client's address from the last entry of
    /// `X-Forwarded-For`, for a node reachable only through a balancer that appends it.
    pub trust_forwarded_for: bool,
    /// `SWITCHBOARD_MAX_STREAMS_PER_USER`: live room streams one user may hold open on this
    /// node; 0 for no cap.
    pub max_streams_per_user: usize,
    /// `SWITCHBOARD_STREAM_OPEN_RATE_LIMIT`: live room streams one user may open per minute on
    /// this node, in bursts of up to that many; 0 turns this limit off.
    pub stream_open_rate_limit: u32,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            http_listen: "0.0.0.0:8080".into(),
            admin_token: None,
            admin_token_file: None,
            rate_limit: 1200,
            request_timeout_ms: 5000,
            session_days: 30,
            session_cache_ms: 5000,
            header_timeout_ms: 10_000,
            body_timeout_ms: 10_000,
            write_stall_timeout_ms: 30_000,
            login_rate_limit: 20,
            trust_forwarded_for: false,
            max_streams_per_user: 16,
            stream_open_rate_limit: 120,
        }
    }
}

impl HttpSettings {
    /// Loads the layered settings.
    pub fn from_env() -> Result<Self, NodeError> {
        let mut settings: Self = switchboard::config::load(&[])?;
        settings.resolve_admin_token()?;
        Ok(settings)
    }

    /// Settles `admin_token`: the value when it is set and not empty, else the contents of
    /// `admin_token_file` (surrounding whitespace trimmed), else none.
    pub fn resolve_admin_token(&mut self) -> Result<(), NodeError> {
        self.admin_token = self.admin_token.take().filter(|t| !t.expose().is_empty());
        if self.admin_token.is_some() {
            return Ok(());
        }
        match self.admin_token_file.as_deref() {
            Some(path) if !path.as_os_str().is_empty() => {
                self.admin_token = Some(read_admin_token(path)?);
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Reads an admin token file; an empty one is an error, not "no token".
fn read_admin_token(path: &Path) -> Result<Secret, NodeError> {
    let contents = std::fs::read_to_string(path).map_err(|e| {
        NodeError::Config(format!(
            "cannot read SWITCHBOARD_ADMIN_TOKEN_FILE {}: {e}",
            path.display()
        ))
    })?;
    let token = contents.trim();
    if token.is_empty() {
        return Err(NodeError::Config(format!(
            "SWITCHBOARD_ADMIN_TOKEN_FILE {} is empty",
            path.display()
        )));
    }
    Ok(Secret::new(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(token: Option<&str>, file: Option<PathBuf>) -> HttpSettings {
        HttpSettings {
            admin_token: token.map(Secret::new),
            admin_token_file: file,
            ..HttpSettings::default()
        }
    }

    #[test]
    fn the_admin_token_comes_from_the_value_else_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("admin-token");
        std::fs::write(&file, "from-the-file\n").unwrap();

        let mut both = settings(Some("from-the-value"), Some(file.clone()));
        both.resolve_admin_token().unwrap();
        assert_eq!(both.admin_token.unwrap().expose(), "from-the-value");

        let mut empty_value = settings(Some(""), Some(file.clone()));
        empty_value.resolve_admin_token().unwrap();
        assert_eq!(empty_value.admin_token.unwrap().expose(), "from-the-file");

        let mut neither = settings(Some(""), None);
        neither.resolve_admin_token().unwrap();
        assert!(neither.admin_token.is_none());
    }

    #[test]
    fn a_missing_or_empty_token_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        assert!(settings(None, Some(missing)).resolve_admin_token().is_err());
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        assert!(settings(None, Some(empty)).resolve_admin_token().is_err());
    }
}
