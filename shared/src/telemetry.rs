//! tracing-subscriber set-up, done once per process by the binary's `main`.
//!
//! `RUST_LOG` filters (default `info`); `SWITCHBOARD_LOG_FORMAT=json` writes one JSON object per
//! line for Docker, Kubernetes and log collectors, `pretty` (the default) is for people.
//! Spans carry the node name and the trace id of each call, so one request can be followed
//! across nodes.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// Output format of the process's own logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// Reads `SWITCHBOARD_LOG_FORMAT`.
    pub fn from_env() -> Self {
        match std::env::var("SWITCHBOARD_LOG_FORMAT").as_deref() {
            Ok("json") => LogFormat::Json,
            _ => LogFormat::Pretty,
        }
    }
}

/// A layer to install beside the standard output one.
pub type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync + 'static>;

/// Installs the global subscriber, plus `extra` layers (for example one that ships warnings to
/// the log service). Call once, at the start of `main`.
pub fn init(format: LogFormat, extra: Vec<BoxedLayer>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
        // Colours only on a terminal: Docker, `switchboard up` and log files keep escape codes
        // as text.
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .boxed(),
    };
    let mut layers = extra;
    layers.push(fmt.with_filter(filter).boxed());
    let _ = tracing_subscriber::registry().with(layers).try_init();
}
