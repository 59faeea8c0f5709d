//! `GET /v1/rooms/{room_id}/analytics` (members) and `GET /v1/admin/analytics` (cluster-wide):
//! the figures of the `analytics` service, answered by any of its replicas, as JSON ready to
//! plot.
//!
//! `window` is `1h` (60 one-minute buckets), `24h` (24 one-hour buckets) or `7d` (168 one-hour
//! buckets); the last bucket is the current, partial one. Every time series lists every bucket,
//! empty ones included, oldest first, and each series' `daily` lists the UTC days the window
//! touches, counting only the part inside the window. Counts are exact: every message posted in
//! the window, deleted or not. Lengths are in characters of the current text of messages not
//! deleted, percentiles are nearest-rank, hours are UTC. The room view leaves out what is not
//! the room's own: new accounts, top rooms and delivery latency.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use switchboard::CallOptions;
use switchboard_analytics::Window;
use switchboard_proto::names;
use switchboard_proto::v1 as wire;
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Admin, AuthUser};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiPath, ApiQuery};
use crate::model::{User, timestamp};
use crate::request_id;
use crate::state::AppState;

/// Parameters of an analytics view.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AnalyticsQuery {
    /// `1h`, `24h` (the default) or `7d`.
    #[param(pattern = "^(1h|24h|7d)$")]
    window: Option<String>,
}

/// A figure in one bucket.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SeriesPoint {
    /// Start of the bucket, RFC 3339.
    t: String,
    /// The figure.
    count: i64,
}

/// A figure over the window and its time series.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TimeSeries {
    /// Over the whole window (distinct figures: distinct over the whole window).
    total: i64,
    /// One point per bucket, oldest first.
    series: Vec<SeriesPoint>,
    /// One point per UTC day the window touches.
    daily: Vec<SeriesPoint>,
}

/// A room's share of the messages.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RoomCount {
    /// The room.
    room_id: i64,
    /// Messages posted in it in the window.
    count: i64,
}

/// A user's share of the messages.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PosterCount {
    /// The author.
    user: User,
    /// Messages they posted in the window.
    count: i64,
}

/// Lengths of the messages' current text.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MessageLength {
    /// Messages measured (those not deleted).
    count: i64,
    /// Nearest-rank median, in characters; null without messages.
    median: Option<i64>,
    /// Nearest-rank 95th percentile, in characters; null without messages.
    p95: Option<i64>,
}

/// One bucket of the latency histogram.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LatencyBucket {
    /// Upper bound in milliseconds (inclusive); null for the overflow bucket.
    le: Option<i64>,
    /// Deliveries in the bucket.
    count: i64,
}

/// End-to-end latency of live events, from commit to delivery on an SSE stream.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LatencyHistogram {
    /// The histogram.
    buckets: Vec<LatencyBucket>,
    /// Deliveries measured.
    count: i64,
    /// Upper bound of the bucket holding the median; null without deliveries or in overflow.
    p50: Option<i64>,
    /// Upper bound of the bucket holding the 99th percentile; likewise.
    p99: Option<i64>,
}

/// The figures of one window.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Analytics {
    /// `1h`, `24h` or `7d`.
    window: String,
    /// The room, for a room's view.
    #[serde(skip_serializing_if = "Option::is_none")]
    room_id: Option<i64>,
    /// The room's name, in the operators' view of one room.
    #[serde(skip_serializing_if = "Option::is_none")]
    room_name: Option<String>,
    /// Start of the first bucket, RFC 3339.
    from: String,
    /// When the figures were computed, RFC 3339.
    to: String,
    /// Width of a bucket in seconds: 60 or 3600.
    bucket_seconds: i64,
    /// Messages posted.
    messages: TimeSeries,
    /// Distinct senders.
    active_users: TimeSeries,
    /// Accounts registered (cluster-wide view only).
    #[serde(skip_serializing_if = "Option::is_none")]
    new_users: Option<TimeSeries>,
    /// Rooms with the most messages, most first (cluster-wide view only).
    #[serde(skip_serializing_if = "Option::is_none")]
    top_rooms: Option<Vec<RoomCount>>,
    /// Users with the most messages, most first.
    top_posters: Vec<PosterCount>,
    /// Message lengths.
    message_length: MessageLength,
    /// Messages per hour of the day (UTC), 24 entries.
    messages_by_hour: Vec<i64>,
    /// The hour of the day (UTC) with the most messages; null without messages.
    busiest_hour: Option<i32>,
    /// Delivery latency of live events (cluster-wide view only).
    #[serde(skip_serializing_if = "Option::is_none")]
    delivery_latency_ms: Option<LatencyHistogram>,
}

fn points(points: Vec<wire::SeriesPoint>) -> Vec<SeriesPoint> {
    points
        .into_iter()
        .map(|p| SeriesPoint {
            t: timestamp(p.at_ms),
            count: p.count,
        })
        .collect()
}

impl From<wire::Series> for TimeSeries {
    fn from(series: wire::Series) -> Self {
        Self {
            total: series.total,
            series: points(series.series),
            daily: points(series.daily),
        }
    }
}

impl From<wire::AnalyticsReport> for Analytics {
    fn from(report: wire::AnalyticsReport) -> Self {
        let cluster = report.new_users.is_some();
        let lengths = report.message_length.unwrap_or_default();
        Self {
            window: report.window,
            room_id: None,
            room_name: None,
            from: timestamp(report.from_ms),
            to: timestamp(report.to_ms),
            bucket_seconds: report.bucket_ms / 1000,
            messages: report.messages.unwrap_or_default().into(),
            active_users: report.active_users.unwrap_or_default().into(),
            new_users: report.new_users.map(TimeSeries::from),
            top_rooms: cluster.then(|| {
                report
                    .top_rooms
                    .into_iter()
                    .map(|r| RoomCount {
                        room_id: r.room_id,
                        count: r.count,
                    })
                    .collect()
            }),
            top_posters: report
                .top_posters
                .into_iter()
                .map(|p| PosterCount {
                    user: p.user.unwrap_or_default().into(),
                    count: p.count,
                })
                .collect(),
            message_length: MessageLength {
                count: lengths.count,
                median: lengths.median,
                p95: lengths.p95,
            },
            messages_by_hour: report.messages_by_hour,
            busiest_hour: report.busiest_hour,
            delivery_latency_ms: report.delivery_latency.map(|l| LatencyHistogram {
                buckets: l
                    .buckets
                    .into_iter()
                    .map(|b| LatencyBucket {
                        le: b.le_ms,
                        count: b.count,
                    })
                    .collect(),
                count: l.count,
                p50: l.p50_ms,
                p99: l.p99_ms,
            }),
        }
    }
}

/// Asks any analytics replica for the figures of `window` (of one room, or of all with 0).
async fn report(
    state: &AppState,
    room_id: i64,
    window: Option<String>,
) -> Result<Analytics, ApiError> {
    let window = window.unwrap_or_else(|| Window::Day.as_str().to_owned());
    let window = Window::parse(&window)
        .ok_or_else(|| ApiError::validation("window", "window must be 1h, 24h or 7d"))?;
    let request = wire::AnalyticsRequest {
        room_id,
        window: window.as_str().to_owned(),
    };
    let options = CallOptions::idempotent()
        .timeout(Duration::from_millis(state.settings.request_timeout_ms))
        .trace(request_id::current());
    let report: wire::AnalyticsReport = state
        .node
        .call_message(names::ANALYTICS, "report", &request, options)
        .await?;
    Ok(report.into())
}

/// A room's activity over a window. Members only.
#[utoipa::path(get, path = "/v1/rooms/{room_id}/analytics", tag = "rooms", security(("bearer" = [])),
    params(("room_id" = i64, Path, description = "The room"), AnalyticsQuery),
    responses((status = 200, body = Analytics), (status = 403, body = ErrorBody, description = "not_a_member"),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn room_analytics(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(room_id): ApiPath<i64>,
    ApiQuery(query): ApiQuery<AnalyticsQuery>,
) -> Result<Json<Analytics>, ApiError> {
    let room = state.database.get_room(user.id, room_id).await?;
    if !room.joined {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "not_a_member",
            "only members of the room may do that",
        ));
    }
    let analytics = report(&state, room_id, query.window).await?;
    Ok(Json(Analytics {
        room_id: Some(room_id),
        ..analytics
    }))
}

/// The whole cluster's activity over a window, with new accounts, top rooms and the delivery
/// latency of live events.
#[utoipa::path(get, path = "/v1/admin/analytics", tag = "admin", security(("admin" = [])), params(AnalyticsQuery),
    responses((status = 200, body = Analytics), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub(crate) async fn cluster_analytics(
    State(state): State<AppState>,
    _admin: Admin,
    ApiQuery(query): ApiQuery<AnalyticsQuery>,
) -> Result<Json<Analytics>, ApiError> {
    Ok(Json(report(&state, 0, query.window).await?))
}

/// One room's activity over a window, for operators (the dashboard's per-room charts).
#[utoipa::path(get, path = "/v1/admin/rooms/{room_id}/analytics", tag = "admin", security(("admin" = [])),
    params(("room_id" = i64, Path, description = "The room", minimum = 1), AnalyticsQuery),
    responses((status = 200, body = Analytics), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody, description = "room_not_found"), (status = 422, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub(crate) async fn admin_room_analytics(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(room_id): ApiPath<i64>,
    ApiQuery(query): ApiQuery<AnalyticsQuery>,
) -> Result<Json<Analytics>, ApiError> {
    if room_id < 1 {
        return Err(ApiError::validation("room_id", "room_id must be positive"));
    }
    // Any user may see a room (user 0 is no member of any); an unknown room is room_not_found,
    // answered without waiting for the figures.
    let room = async { Ok::<_, ApiError>(state.database.get_room(0, room_id).await?) };
    let (room, analytics) = tokio::try_join!(room, report(&state, room_id, query.window))?;
    Ok(Json(Analytics {
        room_id: Some(room_id),
        room_name: Some(room.name),
        ..analytics
    }))
}
