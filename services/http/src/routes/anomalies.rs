//! Anomalies and the summary report, served by any reporting replica (they all compute the same
//! anomalies from the same events).
//!
//! The live stream polls a replica once a second for anomalies seen since the last poll, rather
//! than having replicas push: every replica would push the same anomaly, and polling any one of
//! them, with failover, needs no leader.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use futures::Stream;
use serde::{Deserialize, Serialize};
use switchboard_proto::v1 as wire;
use utoipa::{IntoParams, ToSchema};

use crate::auth::Admin;
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiQuery;
use crate::model::timestamp;
use crate::state::AppState;
use crate::validation;
use switchboard::clock::now_ms;

const POLL: Duration = Duration::from_secs(1);

/// Filters of anomalies.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AnomalyFilter {
    /// Seen at or after this time (RFC 3339 or milliseconds); default: all kept (24 h).
    #[param(
        pattern = "^(-?[0-9]{1,14}|(19[7-9][0-9]|2[0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])[T ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?Z?)?$"
    )]
    since: Option<String>,
    /// `low`, `medium` or `high`: this severity or worse.
    #[param(pattern = "^(low|medium|high)?$")]
    severity: Option<String>,
}

/// Range of the summary report.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ReportRange {
    /// From (RFC 3339 or milliseconds); default 24 h before `until`. A range that ends before it
    /// starts is empty.
    #[param(
        pattern = "^(-?[0-9]{1,14}|(19[7-9][0-9]|2[0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])[T ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?Z?)?$"
    )]
    since: Option<String>,
    /// Until (RFC 3339 or milliseconds); default now.
    #[param(
        pattern = "^(-?[0-9]{1,14}|(19[7-9][0-9]|2[0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])[T ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?Z?)?$"
    )]
    until: Option<String>,
}

/// An anomaly and its evidence.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Anomaly {
    /// Stable id.
    id: String,
    /// `flooding`, `spam`, `spike`, `failed_logins`, `node_down`, `node_flapping`, `report_surge`.
    kind: String,
    /// `low`, `medium` or `high`.
    severity: String,
    /// What it is about.
    subject: String,
    /// A sentence for people.
    summary: String,
    /// Counts, window, threshold, baseline.
    #[schema(value_type = Object)]
    evidence: serde_json::Value,
    /// RFC 3339.
    first_seen: String,
    /// RFC 3339.
    last_seen: String,
}

impl From<&wire::Anomaly> for Anomaly {
    fn from(a: &wire::Anomaly) -> Self {
        Self {
            id: a.id.clone(),
            kind: a.kind.clone(),
            severity: a.severity.clone(),
            subject: a.subject.clone(),
            summary: a.summary.clone(),
            evidence: serde_json::from_str(&a.evidence_json).unwrap_or_default(),
            first_seen: timestamp(a.first_seen_ms),
            last_seen: timestamp(a.last_seen_ms),
        }
    }
}

/// `GET /v1/admin/anomalies`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AnomalyList {
    /// Most recently seen first.
    anomalies: Vec<Anomaly>,
}

/// A count of something named.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Count {
    name: String,
    count: i64,
}

/// `GET /v1/admin/report` as JSON.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Summary {
    /// RFC 3339.
    since: String,
    /// RFC 3339.
    until: String,
    /// Messages posted in the range.
    messages: i64,
    /// Content reports by status (now).
    reports: HashMap<String, i64>,
    /// The worst anomalies of the range.
    top_anomalies: Vec<Anomaly>,
    /// Anomalies of the range by kind.
    anomalies_by_kind: Vec<Count>,
    /// Rooms by messages in the range.
    busiest_rooms: Vec<Count>,
    /// Failed logins in the range by username.
    failed_logins: Vec<Count>,
    /// Node-down incidents in the range by node.
    node_incidents: Vec<Count>,
}

fn severity(value: Option<&str>) -> Result<String, ApiError> {
    match value.unwrap_or("") {
        s @ ("" | "low" | "medium" | "high") => Ok(s.to_owned()),
        _ => Err(ApiError::validation(
            "severity",
            "severity must be low, medium or high",
        )),
    }
}

/// Anomalies the reporting service found, newest first.
#[utoipa::path(get, path = "/v1/admin/anomalies", tag = "moderation", security(("admin" = [])), params(AnomalyFilter),
    responses((status = 200, body = AnomalyList), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn list_anomalies(
    State(state): State<AppState>,
    _admin: Admin,
    ApiQuery(filter): ApiQuery<AnomalyFilter>,
) -> Result<Json<AnomalyList>, ApiError> {
    let since = validation::time("since", filter.since.as_deref())?.unwrap_or(0);
    let severity = severity(filter.severity.as_deref())?;
    let anomalies = state.reporting.anomalies(since, severity).await?;
    Ok(Json(AnomalyList {
        anomalies: anomalies.iter().map(Anomaly::from).collect(),
    }))
}

/// New and updated anomalies as Server-Sent Events (`event: anomaly`).
#[utoipa::path(get, path = "/v1/admin/anomalies/stream", tag = "moderation", security(("admin" = [])), params(AnomalyFilter),
    responses((status = 200, content_type = "text/event-stream", description = "anomaly"), (status = 403, body = ErrorBody)))]
pub(crate) async fn stream_anomalies(
    State(state): State<AppState>,
    _admin: Admin,
    ApiQuery(filter): ApiQuery<AnomalyFilter>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let mut since = validation::time("since", filter.since.as_deref())?.unwrap_or_else(now_ms);
    let severity = severity(filter.severity.as_deref())?;
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let draining = state.draining.clone();
    let reporting = state.reporting.clone();
    tokio::spawn(async move {
        // The last version of each anomaly sent, so an update is sent once.
        let mut sent: HashMap<String, i64> = HashMap::new();
        loop {
            if let Ok(anomalies) = reporting.anomalies(since, severity.clone()).await {
                for anomaly in anomalies.iter().rev() {
                    if sent.get(&anomaly.id) == Some(&anomaly.last_seen_ms) {
                        continue;
                    }
                    sent.insert(anomaly.id.clone(), anomaly.last_seen_ms);
                    since = since.max(anomaly.last_seen_ms);
                    let event = Event::default()
                        .event("anomaly")
                        .id(anomaly.id.clone())
                        .data(serde_json::to_string(&Anomaly::from(anomaly)).unwrap_or_default());
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = draining.cancelled() => return,
                _ = tx.closed() => return,
            }
        }
    });
    let stream = tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), Ok);
    Ok(Sse::new(stream).keep_alive(
        KeepAlive::new()
            .interval(Duration::from_secs(15))
            .text("keep-alive"),
    ))
}

fn counts(named: &[wire::NamedCount]) -> Vec<Count> {
    named
        .iter()
        .map(|n| Count {
            name: n.name.clone(),
            count: n.count,
        })
        .collect()
}

/// A summary for a time range: JSON, or a readable HTML page with charts for `Accept: text/html`.
#[utoipa::path(get, path = "/v1/admin/report", tag = "moderation", security(("admin" = [])), params(ReportRange),
    responses((status = 200, body = Summary, description = "JSON, or text/html when asked"), (status = 403, body = ErrorBody)))]
pub(crate) async fn report(
    State(state): State<AppState>,
    _admin: Admin,
    headers: HeaderMap,
    ApiQuery(range): ApiQuery<ReportRange>,
) -> Result<Response, ApiError> {
    let until = validation::time("until", range.until.as_deref())?.unwrap_or_else(now_ms);
    let since =
        validation::time("since", range.since.as_deref())?.unwrap_or(until - 24 * 3_600_000);
    // A range that ends before it starts is empty, and its summary is all zeros: the document
    // cannot say that one parameter must be below another, so it is an answer, not an error.
    let summary = state.reporting.summary(since, until).await?;
    let stats = summary.stats.unwrap_or_default();
    let body = Summary {
        since: timestamp(since),
        until: timestamp(until),
        messages: stats.messages,
        reports: HashMap::from([
            ("open".to_owned(), stats.open_reports),
            ("resolved".to_owned(), stats.resolved_reports),
        ]),
        top_anomalies: summary.top_anomalies.iter().map(Anomaly::from).collect(),
        anomalies_by_kind: counts(&summary.anomalies_by_kind),
        busiest_rooms: counts(&stats.busiest_rooms),
        failed_logins: counts(&stats.failed_logins),
        node_incidents: counts(&stats.node_incidents),
    };
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    if wants_html {
        Ok(Html(html(&body)).into_response())
    } else {
        Ok(Json(body).into_response())
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A horizontal bar chart as inline SVG: no script, no external assets.
fn bars(title: &str, rows: &[Count]) -> String {
    let mut svg = format!("<h2>{}</h2>", escape(title));
    if rows.is_empty() {
        svg.push_str("<p class=\"none\">Nothing in this range.</p>");
        return svg;
    }
    let max = rows.iter().map(|r| r.count).max().unwrap_or(1).max(1) as f64;
    let height = rows.len() * 26 + 4;
    let _ = write!(
        svg,
        "<svg width=\"640\" height=\"{height}\" role=\"img\" aria-label=\"{}\">",
        escape(title)
    );
    for (i, row) in rows.iter().enumerate() {
        let y = i * 26 + 2;
        let width = (row.count as f64 / max * 400.0).max(2.0);
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{}\" font-size=\"13\">{}</text><rect x=\"200\" y=\"{y}\" width=\"{width:.0}\" height=\"20\" fill=\"#3b82f6\"/><text x=\"{:.0}\" y=\"{}\" font-size=\"13\">{}</text>",
            y + 15,
            escape(&row.name),
            205.0 + width,
            y + 15,
            row.count
        );
    }
    svg.push_str("</svg>");
    svg
}

fn html(summary: &Summary) -> String {
    let mut page = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Switchboard report</title>\
         <style>body{font-family:system-ui,sans-serif;max-width:760px;margin:2rem auto;color:#111}\
         table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:4px 6px;text-align:left;font-size:14px}\
         .high{color:#b91c1c;font-weight:600}.medium{color:#b45309}.none{color:#666}</style></head><body>",
    );
    let _ = write!(
        page,
        "<h1>Switchboard report</h1><p>{} to {} &middot; {} messages &middot; reports: {} open, {} resolved</p>",
        escape(&summary.since),
        escape(&summary.until),
        summary.messages,
        summary.reports.get("open").copied().unwrap_or(0),
        summary.reports.get("resolved").copied().unwrap_or(0)
    );
    page.push_str("<h2>Top anomalies</h2>");
    if summary.top_anomalies.is_empty() {
        page.push_str("<p class=\"none\">No anomalies in this range.</p>");
    } else {
        page.push_str(
            "<table><tr><th>Severity</th><th>Kind</th><th>Summary</th><th>Last seen</th></tr>",
        );
        for a in &summary.top_anomalies {
            let _ = write!(
                page,
                "<tr><td class=\"{0}\">{0}</td><td>{1}</td><td>{2}</td><td>{3}</td></tr>",
                escape(&a.severity),
                escape(&a.kind),
                escape(&a.summary),
                escape(&a.last_seen)
            );
        }
        page.push_str("</table>");
    }
    page.push_str(&bars("Anomalies by kind", &summary.anomalies_by_kind));
    page.push_str(&bars("Busiest rooms", &summary.busiest_rooms));
    page.push_str(&bars("Failed logins", &summary.failed_logins));
    page.push_str(&bars("Node incidents", &summary.node_incidents));
    page.push_str("</body></html>");
    page
}
