//! Content reports: members report messages; admins list and resolve them.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use switchboard_proto::v1 as wire;
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Admin, AuthUser};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::model::timestamp;
use crate::state::AppState;

/// `POST .../report`.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct NewReport {
    /// Why the message should be looked at: 1-500 characters, not only whitespace.
    #[schema(min_length = 1, max_length = 500, pattern = "\\S")]
    reason: String,
}

/// `POST /v1/admin/reports/{report_id}/resolve`.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct Resolution {
    /// `dismiss` or `delete_message`.
    #[schema(pattern = "^(dismiss|delete_message)$")]
    action: String,
    /// The moderator's note, kept in the audit trail.
    #[serde(default)]
    note: String,
}

/// A content report.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Report {
    id: i64,
    room_id: i64,
    message_id: i64,
    reporter_id: i64,
    reason: String,
    /// `open` or `resolved`.
    status: String,
    /// RFC 3339.
    created_at: String,
    /// RFC 3339, once resolved.
    resolved_at: Option<String>,
    /// `dismiss` or `delete_message`, once resolved.
    action: Option<String>,
    /// The moderator's note, once resolved.
    note: Option<String>,
}

impl From<wire::ContentReport> for Report {
    fn from(report: wire::ContentReport) -> Self {
        let resolved = report.resolved_at_ms != 0;
        Self {
            id: report.id,
            room_id: report.room_id,
            message_id: report.message_id,
            reporter_id: report.reporter_id,
            reason: report.reason,
            status: report.status,
            created_at: timestamp(report.created_at_ms),
            resolved_at: resolved.then(|| timestamp(report.resolved_at_ms)),
            action: resolved.then_some(report.action),
            note: resolved.then_some(report.note),
        }
    }
}

/// `GET /v1/admin/reports`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ReportList {
    /// Newest first.
    reports: Vec<Report>,
}

/// `GET /v1/admin/reports` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ReportFilter {
    /// `open` or `resolved`; all when absent.
    #[param(pattern = "^(open|resolved)?$")]
    status: Option<String>,
}

/// Reports a message to the moderators. Members of the room only.
#[utoipa::path(post, path = "/v1/rooms/{room_id}/messages/{message_id}/report", tag = "moderation", security(("bearer" = [])),
    params(("room_id" = i64, Path, description = "The room"), ("message_id" = i64, Path, description = "The message")),
    request_body = NewReport,
    responses((status = 201, body = Report), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn file_report(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath((room_id, message_id)): ApiPath<(i64, i64)>,
    ApiJson(report): ApiJson<NewReport>,
) -> Result<(StatusCode, Json<Report>), ApiError> {
    let reason = report.reason.trim();
    if reason.is_empty() || report.reason.chars().count() > 500 {
        return Err(ApiError::validation(
            "reason",
            "reason must be 1-500 characters",
        ));
    }
    let report = state
        .reporting
        .file_report(wire::FileReportRequest {
            user_id: user.id,
            room_id,
            message_id,
            reason: reason.to_owned(),
        })
        .await?;
    Ok((StatusCode::CREATED, Json(report.into())))
}

/// Content reports, newest first.
#[utoipa::path(get, path = "/v1/admin/reports", tag = "moderation", security(("admin" = [])), params(ReportFilter),
    responses((status = 200, body = ReportList), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn list_reports(
    State(state): State<AppState>,
    _admin: Admin,
    ApiQuery(filter): ApiQuery<ReportFilter>,
) -> Result<Json<ReportList>, ApiError> {
    let status = filter.status.unwrap_or_default();
    if !matches!(status.as_str(), "" | "open" | "resolved") {
        return Err(ApiError::validation(
            "status",
            "status must be open or resolved",
        ));
    }
    let reports = state.reporting.list_reports(status).await?;
    Ok(Json(ReportList {
        reports: reports.into_iter().map(Report::from).collect(),
    }))
}

/// Resolves a report: dismiss it, or delete the message (which leaves a tombstone and reaches
/// live streams). The decision is kept in the audit trail.
#[utoipa::path(post, path = "/v1/admin/reports/{report_id}/resolve", tag = "moderation", security(("admin" = [])),
    params(("report_id" = i64, Path, description = "The report")), request_body = Resolution,
    responses((status = 200, body = Report), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn resolve_report(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(report_id): ApiPath<i64>,
    ApiJson(resolution): ApiJson<Resolution>,
) -> Result<Json<Report>, ApiError> {
    if !matches!(resolution.action.as_str(), "dismiss" | "delete_message") {
        return Err(ApiError::validation(
            "action",
            "action must be dismiss or delete_message",
        ));
    }
    if resolution.note.chars().count() > 1000 {
        return Err(ApiError::validation(
            "note",
            "note must be at most 1000 characters",
        ));
    }
    let report = state
        .reporting
        .resolve_report(wire::ResolveReportRequest {
            report_id,
            action: resolution.action,
            note: resolution.note,
        })
        .await?;
    Ok(Json(report.into()))
}
