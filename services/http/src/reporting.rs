//! A typed client of the `reporting` service, as [`crate::database`] is of the database.

use std::time::Duration;

use switchboard::{Node, NodeError};
use switchboard_proto::names;
use switchboard_proto::v1 as wire;

use crate::service_client::ServiceClient;

/// The reporting service as the http node sees it.
#[derive(Debug, Clone)]
pub(crate) struct Reporting {
    client: ServiceClient,
}

impl Reporting {
    pub(crate) fn new(node: Node, timeout: Duration) -> Self {
        Self {
            client: ServiceClient::new(node, names::REPORTING, timeout),
        }
    }

    /// Files a report. Not idempotent: a blind retry could file it twice.
    pub(crate) async fn file_report(
        &self,
        request: wire::FileReportRequest,
    ) -> Result<wire::ContentReport, NodeError> {
        self.client.call("file_report", &request, false).await
    }

    pub(crate) async fn list_reports(
        &self,
        status: String,
    ) -> Result<Vec<wire::ContentReport>, NodeError> {
        let list: wire::ReportList = self
            .client
            .call("list_reports", &wire::ListReportsRequest { status }, true)
            .await?;
        Ok(list.reports)
    }

    /// Resolves a report; resolving twice changes nothing, so it is idempotent.
    pub(crate) async fn resolve_report(
        &self,
        request: wire::ResolveReportRequest,
    ) -> Result<wire::ContentReport, NodeError> {
        self.client.call("resolve_report", &request, true).await
    }

    pub(crate) async fn anomalies(
        &self,
        since_ms: i64,
        severity: String,
    ) -> Result<Vec<wire::Anomaly>, NodeError> {
        let list: wire::AnomalyList = self
            .client
            .call(
                "anomalies",
                &wire::AnomalyQuery { since_ms, severity },
                true,
            )
            .await?;
        Ok(list.anomalies)
    }

    pub(crate) async fn summary(
        &self,
        since_ms: i64,
        until_ms: i64,
    ) -> Result<wire::ReportSummary, NodeError> {
        self.client
            .call(
                "summary",
                &wire::SummaryRequest { since_ms, until_ms },
                true,
            )
            .await
    }
}
