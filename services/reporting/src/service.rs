//! The `reporting` service: content reports (stored through the database service, so no replica
//! owns them), the anomalies this replica's detector found, and summaries.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use switchboard::service::ServiceFuture;
use switchboard::{Bytes, CallOptions, Node, Request, Service, ServiceError};
use switchboard_proto::names;
use switchboard_proto::v1 as wire;

use crate::detector::{Detector, rank};

/// The service a reporting node hosts.
#[derive(Debug, Clone)]
pub struct ReportingService {
    node: Node,
    detector: Arc<Mutex<Detector>>,
}

fn decode<T: Message + Default>(payload: &[u8]) -> Result<T, ServiceError> {
    T::decode(payload)
        .map_err(|e| ServiceError::new("invalid_request", format!("malformed request: {e}")))
}

fn reply<T: Message>(message: &T) -> Result<Bytes, ServiceError> {
    Ok(message.encode_to_vec().into())
}

impl ReportingService {
    pub(crate) fn new(node: Node, detector: Arc<Mutex<Detector>>) -> Self {
        Self { node, detector }
    }

    async fn database<Req: Message, Resp: Message + Default>(
        &self,
        method: &'static str,
        request: &Req,
        idempotent: bool,
        trace_id: &str,
    ) -> Result<Resp, ServiceError> {
        let options = CallOptions {
            timeout: Some(Duration::from_secs(5)),
            idempotent,
            trace_id: Some(trace_id.into()),
            ..CallOptions::default()
        };
        Ok(self
            .node
            .call_message(names::DATABASE, method, request, options)
            .await?)
    }

    fn anomalies(&self, since: i64, severity: &str) -> Vec<wire::Anomaly> {
        self.detector
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .list(since, severity)
    }

    async fn dispatch(&self, request: Request) -> Result<Bytes, ServiceError> {
        let payload = &request.payload[..];
        let trace = &*request.trace_id;
        match &*request.method {
            "file_report" => {
                let r: wire::FileReportRequest = decode(payload)?;
                let report: wire::ContentReport =
                    self.database("file_report", &r, false, trace).await?;
                tracing::info!(
                    kind = "report_filed",
                    report_id = report.id,
                    room_id = report.room_id,
                    message_id = report.message_id,
                    reporter_id = report.reporter_id,
                    "content report filed"
                );
                reply(&report)
            }
            "list_reports" => {
                let r: wire::ListReportsRequest = decode(payload)?;
                reply(
                    &self
                        .database::<_, wire::ReportList>("list_reports", &r, true, trace)
                        .await?,
                )
            }
            "resolve_report" => {
                let r: wire::ResolveReportRequest = decode(payload)?;
                if !matches!(r.action.as_str(), "dismiss" | "delete_message") {
                    return Err(ServiceError::new(
                        "invalid_action",
                        "action must be dismiss or delete_message",
                    ));
                }
                let resolved: wire::ResolveReportReply =
                    self.database("resolve_report", &r, true, trace).await?;
                tracing::info!(kind = "report_resolved", report_id = r.report_id, action = %r.action, "content report resolved");
                reply(&resolved.report.unwrap_or_default())
            }
            "anomalies" => {
                let r: wire::AnomalyQuery = decode(payload)?;
                reply(&wire::AnomalyList {
                    anomalies: self.anomalies(r.since_ms, &r.severity),
                })
            }
            "summary" => {
                let r: wire::SummaryRequest = decode(payload)?;
                let stats: wire::ReportStats = self
                    .database(
                        "report_stats",
                        &wire::ReportStatsRequest {
                            since_ms: r.since_ms,
                            until_ms: r.until_ms,
                        },
                        true,
                        trace,
                    )
                    .await?;
                let mut in_range: Vec<wire::Anomaly> = self
                    .anomalies(r.since_ms, "")
                    .into_iter()
                    .filter(|a| a.first_seen_ms < r.until_ms)
                    .collect();
                let mut by_kind = std::collections::BTreeMap::<String, i64>::new();
                for anomaly in &in_range {
                    *by_kind.entry(anomaly.kind.clone()).or_default() += 1;
                }
                in_range.sort_by(|a, b| {
                    rank(&b.severity)
                        .cmp(&rank(&a.severity))
                        .then(b.last_seen_ms.cmp(&a.last_seen_ms))
                });
                in_range.truncate(10);
                reply(&wire::ReportSummary {
                    since_ms: r.since_ms,
                    until_ms: r.until_ms,
                    stats: Some(stats),
                    top_anomalies: in_range,
                    anomalies_by_kind: by_kind
                        .into_iter()
                        .map(|(name, count)| wire::NamedCount { name, count })
                        .collect(),
                })
            }
            other => Err(ServiceError::new(
                "unknown_method",
                format!("the reporting service has no method {other}"),
            )),
        }
    }
}

impl Service for ReportingService {
    fn handle(&self, request: Request) -> ServiceFuture {
        let service = self.clone();
        Box::pin(async move { service.dispatch(request).await })
    }
}
