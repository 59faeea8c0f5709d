//! `/v1/admin/logs`: the cluster's activity log, queried through any log node, and tailed live.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::{Deserialize, Serialize};
use switchboard::CallOptions;
use switchboard_proto::names;
use switchboard_proto::v1 as wire;
use tokio::sync::broadcast;
use utoipa::{IntoParams, ToSchema};

use crate::auth::Admin;
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiQuery;
use crate::model::timestamp;
use crate::request_id;
use crate::state::AppState;
use crate::validation;

/// Filters of a log query or tail.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct LogFilter {
    /// Only this node.
    node: Option<String>,
    /// Only this level or more severe (`error`, `warn`, `info`, `debug`, `trace`).
    #[param(pattern = "^(error|warn|info|debug|trace|ERROR|WARN|INFO|DEBUG|TRACE)?$")]
    level: Option<String>,
    /// Only this kind, e.g. `message_posted`, `login_failed`, `node_down`, `log`.
    kind: Option<String>,
    /// From this time on (RFC 3339 or milliseconds since the epoch).
    #[param(
        pattern = "^(-?[0-9]{1,14}|(19[7-9][0-9]|2[0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])[T ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?Z?)?$"
    )]
    since: Option<String>,
    /// Before this time (RFC 3339 or milliseconds since the epoch).
    #[param(
        pattern = "^(-?[0-9]{1,14}|(19[7-9][0-9]|2[0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])[T ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?Z?)?$"
    )]
    until: Option<String>,
    /// Only entries whose message or fields contain this text.
    q: Option<String>,
    /// 1-1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    #[param(pattern = "^([0-9]{1,18}-.*)?$")]
    cursor: Option<String>,
}

/// One log entry.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LogEntry {
    /// Unique id.
    id: String,
    /// RFC 3339.
    at: String,
    /// The node it happened on.
    node: String,
    /// `ERROR`, `WARN`, `INFO`, ...
    level: String,
    /// What kind of activity.
    kind: String,
    /// The human message.
    message: String,
    /// Structured fields (secrets redacted).
    #[schema(value_type = Object)]
    fields: serde_json::Value,
}

impl From<&wire::LogEntry> for LogEntry {
    fn from(entry: &wire::LogEntry) -> Self {
        Self {
            id: entry.id.clone(),
            at: timestamp(entry.at_ms),
            node: entry.node.clone(),
            level: entry.level.clone(),
            kind: entry.kind.clone(),
            message: entry.message.clone(),
            fields: serde_json::from_str(&entry.fields_json).unwrap_or_default(),
        }
    }
}

/// A page of the log, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LogPage {
    /// Newest first.
    entries: Vec<LogEntry>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    next_cursor: Option<String>,
}

fn level(value: &Option<String>) -> Result<String, ApiError> {
    let level = value.as_deref().unwrap_or("").to_ascii_uppercase();
    match level.as_str() {
        "" | "ERROR" | "WARN" | "INFO" | "DEBUG" | "TRACE" => Ok(level),
        _ => Err(ApiError::validation(
            "level",
            "level must be error, warn, info, debug or trace",
        )),
    }
}

/// The log, newest first, filtered.
#[utoipa::path(get, path = "/v1/admin/logs", tag = "admin", security(("admin" = [])), params(LogFilter),
    responses((status = 200, body = LogPage), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn query_logs(
    State(state): State<AppState>,
    _admin: Admin,
    ApiQuery(filter): ApiQuery<LogFilter>,
) -> Result<Json<LogPage>, ApiError> {
    let limit = filter.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::validation("limit", "limit must be 1-1000"));
    }
    let (before_at_ms, before_id) = match filter.cursor.as_deref() {
        None | Some("") => (0, String::new()),
        Some(cursor) => cursor
            .split_once('-')
            .and_then(|(at, id)| Some((at.parse::<i64>().ok()?, id.to_owned())))
            .ok_or_else(|| ApiError::validation("cursor", "not a cursor this API returned"))?,
    };
    let query = wire::LogQuery {
        node: filter.node.clone().unwrap_or_default(),
        level: level(&filter.level)?,
        kind: filter.kind.clone().unwrap_or_default(),
        since_ms: validation::time("since", filter.since.as_deref())?.unwrap_or(0),
        until_ms: validation::time("until", filter.until.as_deref())?.unwrap_or(0),
        text: filter.q.clone().unwrap_or_default(),
        limit,
        before_at_ms,
        before_id,
    };
    let options = CallOptions::idempotent()
        .timeout(Duration::from_millis(state.settings.request_timeout_ms))
        .trace(request_id::current());
    let page: wire::LogPage = state
        .node
        .call_message(names::LOG, "query", &query, options)
        .await?;
    let next_cursor = page
        .more
        .then(|| page.entries.last().map(|e| format!("{}-{}", e.at_ms, e.id)))
        .flatten();
    Ok(Json(LogPage {
        entries: page.entries.iter().map(LogEntry::from).collect(),
        next_cursor,
    }))
}

/// New log entries as they are committed, as Server-Sent Events (`event: log`), filtered.
#[utoipa::path(get, path = "/v1/admin/logs/stream", tag = "admin", security(("admin" = [])), params(LogFilter),
    responses((status = 200, content_type = "text/event-stream", description = "log, lagged"), (status = 403, body = ErrorBody)))]
pub(crate) async fn tail_logs(
    State(state): State<AppState>,
    _admin: Admin,
    ApiQuery(filter): ApiQuery<LogFilter>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let level = level(&filter.level)?;
    let mut tail = state.log_tail.subscribe();
    let draining = state.draining.clone();
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                next = tail.recv() => next,
                _ = draining.cancelled() => return,
                _ = tx.closed() => return,
            };
            let event = match next {
                Ok(entry) if matches(&filter, &level, &entry) => {
                    Event::default().event("log").id(entry.id.clone()).data(
                        serde_json::to_string(&LogEntry::from(entry.as_ref())).unwrap_or_default(),
                    )
                }
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(missed)) => Event::default()
                    .event("lagged")
                    .data(serde_json::json!({ "missed": missed }).to_string()),
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if tx.send(event).await.is_err() {
                return;
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

fn matches(filter: &LogFilter, level: &str, entry: &wire::LogEntry) -> bool {
    const ORDER: [&str; 5] = ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"];
    let rank = |l: &str| ORDER.iter().position(|o| *o == l).unwrap_or(ORDER.len());
    filter
        .node
        .as_deref()
        .is_none_or(|n| n.is_empty() || n == entry.node)
        && filter
            .kind
            .as_deref()
            .is_none_or(|k| k.is_empty() || k == entry.kind)
        && (level.is_empty() || rank(&entry.level) <= rank(level))
        && filter.q.as_deref().is_none_or(|q| {
            q.is_empty() || entry.message.contains(q) || entry.fields_json.contains(q)
        })
}
