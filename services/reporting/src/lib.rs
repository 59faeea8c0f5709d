//! The reporting node: content reports, anomaly detection and summaries.
//!
//! Every replica is a member of `chat.events` and `log.tail`, so every replica receives every
//! committed room event and log entry and feeds the same [`detector`]; any replica can answer.
//! A starting replica first replays recent history from the database into its windows, and only
//! then advertises the `reporting` service, so it never answers with half-built windows.

mod detector;
mod service;
pub mod settings;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;
use switchboard::application::{SharedApplication, StartFuture};
use switchboard::{
    AppContext, Application, Applications, CallOptions, Cookie, Node, NodeConfig, NodeError,
    Request,
};
use switchboard_proto::names;
use switchboard_proto::v1 as wire;

use detector::Detector;
pub use service::ReportingService;
pub use settings::Thresholds;

/// Starts a node hosting the `reporting` application alone, thresholds from the environment.
pub async fn start(config: NodeConfig, cookie: Cookie) -> Result<Node, NodeError> {
    boot(config, cookie, ReportingApp::default()).await
}

/// Starts a node hosting the `reporting` application with the given thresholds.
pub async fn serve(
    config: NodeConfig,
    cookie: Cookie,
    thresholds: Thresholds,
) -> Result<Node, NodeError> {
    boot(config, cookie, ReportingApp::with_thresholds(thresholds)).await
}

async fn boot(config: NodeConfig, cookie: Cookie, app: ReportingApp) -> Result<Node, NodeError> {
    let catalog: Vec<SharedApplication> = vec![Arc::new(app)];
    let (node, _) = Applications::boot(
        names::REPORTING,
        config,
        cookie,
        catalog,
        &[names::REPORTING],
    )
    .await?;
    Ok(node)
}

/// The `reporting` application: the detector fed by `chat.events` and `log.tail`, and the
/// `reporting` service, advertised once the detector has replayed recent history.
#[derive(Debug, Default)]
pub struct ReportingApp {
    /// Its thresholds; read from the environment at each start when `None`.
    thresholds: Option<Thresholds>,
}

impl ReportingApp {
    /// Detects with `thresholds`.
    pub fn with_thresholds(thresholds: Thresholds) -> Self {
        Self {
            thresholds: Some(thresholds),
        }
    }
}

impl Application for ReportingApp {
    fn name(&self) -> &'static str {
        names::REPORTING
    }

    fn start<'a>(&'a self, context: &'a AppContext) -> StartFuture<'a> {
        Box::pin(async move {
            let thresholds = match &self.thresholds {
                Some(thresholds) => thresholds.clone(),
                None => Thresholds::from_env()?,
            };
            let detector = Arc::new(Mutex::new(Detector::new(thresholds)));
            let events = detector.clone();
            let logs = detector.clone();
            // Join the streams before replaying history: whatever is committed meanwhile
            // arrives live, and the detector drops what both bring.
            context.join_group(names::CHAT_EVENTS, move |message: Request| {
                if let Ok(event) = wire::RoomEvent::decode(message.payload) {
                    lock(&events).room_event(&event);
                }
            });
            context.join_group(names::LOG_TAIL, move |message: Request| {
                if let Ok(batch) = wire::LogBatch::decode(message.payload) {
                    let mut detector = lock(&logs);
                    for entry in &batch.entries {
                        detector.log_entry(entry);
                    }
                }
            });
            let node = context.node();
            rebuild(node, &detector).await;
            context.register_service(
                names::REPORTING,
                ReportingService::new(node.clone(), detector),
            );
            Ok(())
        })
    }
}

fn lock(detector: &Mutex<Detector>) -> std::sync::MutexGuard<'_, Detector> {
    detector.lock().unwrap_or_else(|p| p.into_inner())
}

/// Replays recent messages and log entries into the detector's windows.
async fn rebuild(node: &Node, detector: &Mutex<Detector>) {
    if !node
        .wait_for_service(names::DATABASE, Duration::from_secs(30))
        .await
    {
        tracing::warn!("no database node answered; starting with empty windows");
        return;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let since = now - detector::HISTORY;
    let options = || CallOptions::idempotent().timeout(Duration::from_secs(30));
    let request = wire::RecentMessagesRequest {
        since_ms: since,
        limit: 500_000,
    };
    match node
        .call_message::<_, wire::RecentMessages>(
            names::DATABASE,
            "recent_messages",
            &request,
            options(),
        )
        .await
    {
        Ok(history) => {
            let mut detector = lock(detector);
            for event in &history.events {
                detector.room_event(event);
            }
        }
        Err(error) => tracing::warn!(%error, "replaying recent messages failed"),
    }
    for kind in detector::LOGGED_KINDS {
        let query = wire::LogQuery {
            kind: kind.into(),
            since_ms: since,
            limit: 1000,
            ..Default::default()
        };
        match node
            .call_message::<_, wire::LogPage>(names::DATABASE, "query_logs", &query, options())
            .await
        {
            Ok(page) => {
                let mut detector = lock(detector);
                for entry in page.entries.iter().rev() {
                    detector.log_entry(entry);
                }
            }
            Err(error) => tracing::warn!(%error, kind, "replaying log entries failed"),
        }
    }
    tracing::info!("anomaly windows rebuilt from history");
}
