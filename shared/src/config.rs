//! Layered configuration: built-in defaults < an optional `switchboard.toml` < `SWITCHBOARD_*`
//! environment variables (the zero2prod shape). [`load`] is generic so every service reads its
//! own settings the same way; [`NodeConfig`] is the runtime's part.
//!
//! The cookie is deliberately *not* a field here: it is loaded by [`crate::cookie::Cookie`] so
//! that no settings dump can ever contain it.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::NodeError;

/// Reads settings of type `T` from defaults, then `switchboard.toml` (or the file named by
/// `SWITCHBOARD_CONFIG`), then the environment. Keys are the field names; the environment
/// variable of field `node_name` is `SWITCHBOARD_NODE_NAME`. `list_keys` names fields that are
/// comma-separated lists in the environment.
pub fn load<T: DeserializeOwned>(list_keys: &[&str]) -> Result<T, NodeError> {
    let file = std::env::var("SWITCHBOARD_CONFIG").unwrap_or_else(|_| "switchboard.toml".into());
    let mut environment = config::Environment::with_prefix("SWITCHBOARD").prefix_separator("_");
    // Without named list keys the config crate would split *every* value on commas.
    if !list_keys.is_empty() {
        environment = environment.list_separator(",");
        for key in list_keys {
            environment = environment.with_list_parse_key(key);
        }
    }
    config::Config::builder()
        .add_source(config::File::with_name(&file).required(false))
        .add_source(environment.try_parsing(true))
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| NodeError::Config(e.to_string()))
}

/// The node runtime's settings. Every field has a default, so an empty environment gives a
/// working single node (given a cookie).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct NodeConfig {
    /// `SWITCHBOARD_NODE_NAME`; default `<service>@<hostname>`.
    pub node_name: Option<String>,
    /// `SWITCHBOARD_LISTEN`: the inter-node listener.
    pub listen: String,
    /// `SWITCHBOARD_ADVERTISE`: the address peers dial; default this host's name and the bound port.
    pub advertise: Option<String>,
    /// `SWITCHBOARD_SEEDS`: comma-separated `host:port`, re-resolved periodically.
    pub seeds: Vec<String>,
    /// `SWITCHBOARD_DATA_DIR`: where a node keeps anything on disk.
    pub data_dir: PathBuf,
    /// `SWITCHBOARD_METRICS_LISTEN`: a Prometheus endpoint of its own, if set.
    pub metrics_listen: Option<String>,
    /// `SWITCHBOARD_HEARTBEAT_INTERVAL_MS`.
    pub heartbeat_interval_ms: u64,
    /// `SWITCHBOARD_HEARTBEAT_TIMEOUT_MS`: silence after which a peer is down.
    pub heartbeat_timeout_ms: u64,
    /// `SWITCHBOARD_MAX_FRAME_BYTES`: the largest frame (and batch) a link accepts.
    pub max_frame_bytes: usize,
    /// `SWITCHBOARD_LINK_QUEUE`: frames queued per lane before senders see backpressure.
    pub link_queue: usize,
    /// `SWITCHBOARD_MAX_INBOUND_CALLS`: concurrent calls a node runs for one peer before it answers
    /// `Overloaded`.
    pub max_inbound_calls: usize,
    /// `SWITCHBOARD_SEED_REFRESH_MS`: how often seed host names are resolved again.
    pub seed_refresh_ms: u64,
    /// `SWITCHBOARD_SHUTDOWN_GRACE_MS`: how long in-flight calls may take after SIGTERM.
    pub shutdown_grace_ms: u64,
    /// `SWITCHBOARD_CALL_TIMEOUT_MS`: the deadline of a call that names none.
    pub call_timeout_ms: u64,
    /// `SWITCHBOARD_APP_MAX_RESTARTS`: how often an application may crash and be restarted
    /// within the restart window before it stays stopped.
    pub app_max_restarts: usize,
    /// `SWITCHBOARD_APP_RESTART_WINDOW_MS`: the window restarts are counted in.
    pub app_restart_window_ms: u64,
    /// `SWITCHBOARD_TLS_CERT`: this node's certificate chain (PEM). With `tls_key` and `tls_ca`
    /// (all three or none) every inter-node connection runs inside mutual TLS 1.3
    /// (the runtime's `tls` module); the certificate must name `switchboard`.
    pub tls_cert: Option<PathBuf>,
    /// `SWITCHBOARD_TLS_KEY`: the private key of `tls_cert` (PEM).
    pub tls_key: Option<PathBuf>,
    /// `SWITCHBOARD_TLS_CA`: the CA (PEM) every peer's certificate must chain to.
    pub tls_ca: Option<PathBuf>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            node_name: None,
            listen: "0.0.0.0:7070".into(),
            advertise: None,
            seeds: Vec::new(),
            data_dir: PathBuf::from("./switchboard-data"),
            metrics_listen: None,
            heartbeat_interval_ms: 250,
            // Detection (timeout + one check period) stays under the 1 s a hung peer may keep
            // calls waiting; Erlang waits 45-75 s.
            heartbeat_timeout_ms: 800,
            max_frame_bytes: 4 * 1024 * 1024,
            link_queue: 8192,
            max_inbound_calls: 4096,
            seed_refresh_ms: 2000,
            shutdown_grace_ms: 10_000,
            call_timeout_ms: 5000,
            // Three crashes in 30 s: a transient fault gets retried, a crash loop is stopped
            // before it floods the log.
            app_max_restarts: 3,
            app_restart_window_ms: 30_000,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
        }
    }
}

impl NodeConfig {
    /// Loads the runtime's settings from the layered sources.
    pub fn from_env() -> Result<Self, NodeError> {
        let mut config: Self = load(&["seeds"])?;
        config.seeds.retain(|s| !s.trim().is_empty());
        // An empty variable (a compose file's `${VAR:-}`) means unset.
        for path in [
            &mut config.tls_cert,
            &mut config.tls_key,
            &mut config.tls_ca,
        ] {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                *path = None;
            }
        }
        Ok(config)
    }

    /// A configuration for tests and tools: loopback, port 0, no seeds.
    pub fn loopback() -> Self {
        Self {
            listen: "127.0.0.1:0".into(),
            ..Self::default()
        }
    }

    pub(crate) fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms.max(1))
    }

    pub(crate) fn heartbeat_timeout(&self) -> Duration {
        Duration::from_millis(self.heartbeat_timeout_ms.max(1))
    }

    pub(crate) fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms.max(1))
    }
}
