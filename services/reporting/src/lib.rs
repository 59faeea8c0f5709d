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
use switchboard::{CallOptions, Cookie, Node, NodeBuilder, NodeConfig, NodeError, Request};
use switchboard_proto::names;
use switchboard_proto::v1 as wire;

use detector::Detector;
pub use service::ReportingService;
pub use settings::Thresholds;

/// Starts a reporting node with thresholds from the environment.
pub async fn start(config: NodeConfig, cookie: Cookie) -> Result<Node, NodeError> {
    serve(config, cookie, Thresholds::from_env()?).await
}

/// Starts a reporting node with the given thresholds.
pub async fn serve(
    config: NodeConfig,
    cookie: Cookie,
    thresholds: Thresholds,
) -> Result<Node, NodeError> {
    let detector = Arc::new(Mutex::new(Detector::new(thresholds)));
    let events = detector.clone();
    let logs = detector.clone();
    // Join the streams before replaying history: whatever is committed meanwhile arrives live,
    // and the detector drops what both bring.
    let node = NodeBuilder::new(names::REPORTING, config, cookie)
        .group(names::CHAT_EVENTS, move |message: Request| {
            if let Ok(event) = wire::RoomEvent::decode(message.payload) {
                lock(&events).room_event(&event);
            }
        })
        .group(names::LOG_TAIL, move |message: Request| {
            if let Ok(batch) = wire::LogBatch::decode(message.payload) {
                let mut detector = lock(&logs);
                for entry in &batch.entries {
                    detector.log_entry(entry);
                }
            }
        })
        .start()
        .await?;
    rebuild(&node, &detector).await;
    node.register_service(
        names::REPORTING,
        ReportingService::new(node.clone(), detector),
    );
    Ok(node)
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
    for kind in ["login_failed", "node_down", "report_filed"] {
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
