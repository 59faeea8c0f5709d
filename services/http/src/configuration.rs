//! The http node's settings, layered like every node's (defaults < `switchboard.toml` <
//! `SWITCHBOARD_*` environment). The admin token is wrapped so it never prints.

use std::fmt;

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
    /// `SWITCHBOARD_RATE_LIMIT`: requests per minute per user; 0 turns limiting off.
    pub rate_limit: u32,
    /// `SWITCHBOARD_REQUEST_TIMEOUT_MS`: deadline of each call to another service.
    pub request_timeout_ms: u64,
    /// `SWITCHBOARD_SESSION_DAYS`: how long a login token works.
    pub session_days: u64,
    /// `SWITCHBOARD_SESSION_CACHE_MS`: how long this node trusts a session it checked without
    /// asking the database again (logouts reach every node at once regardless); 0 turns it off.
    pub session_cache_ms: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            http_listen: "0.0.0.0:8080".into(),
            admin_token: None,
            rate_limit: 1200,
            request_timeout_ms: 5000,
            session_days: 30,
            session_cache_ms: 5000,
        }
    }
}

impl HttpSettings {
    /// Loads the layered settings.
    pub fn from_env() -> Result<Self, NodeError> {
        let mut settings: Self = switchboard::config::load(&[])?;
        settings.admin_token = settings.admin_token.filter(|t| !t.expose().is_empty());
        Ok(settings)
    }
}
