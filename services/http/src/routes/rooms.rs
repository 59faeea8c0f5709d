//! `/v1/rooms`: create, list, show, join, leave, members.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};

use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath};
use crate::idempotency;
use crate::model::{Member, MemberList, NewRoom, Room, RoomList};
use crate::state::AppState;
use crate::validation;

/// Creates a room; the creator is its owner and first member. With an `Idempotency-Key`, a
/// retry by the same user returns the room the first request created (201, same body).
#[utoipa::path(post, path = "/v1/rooms", tag = "rooms", security(("bearer" = [])), request_body = NewRoom,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the same key returns the same room", min_length = 1, max_length = 255, pattern = "^[!-~]*$")),
    responses((status = 201, body = Room), (status = 409, body = ErrorBody, description = "room_name_taken"), (status = 422, body = ErrorBody)))]
pub(crate) async fn create_room(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    ApiJson(room): ApiJson<NewRoom>,
) -> Result<(StatusCode, Json<Room>), ApiError> {
    let name = room.name.trim();
    validation::room_name(name)?;
    let topic = room.topic.unwrap_or_default();
    validation::topic(&topic)?;
    let key = idempotency::key(&headers)?;
    let room = state
        .database
        .create_room(user.id, name, &topic, key)
        .await?;
    tracing::info!(
        kind = "room_created",
        room_id = room.id,
        user_id = user.id,
        "room created"
    );
    Ok((StatusCode::CREATED, Json(room.into())))
}

/// Every room, with whether the caller has joined it.
#[utoipa::path(get, path = "/v1/rooms", tag = "rooms", security(("bearer" = [])),
    responses((status = 200, body = RoomList)))]
pub(crate) async fn list_rooms(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<RoomList>, ApiError> {
    let rooms = state.database.list_rooms(user.id).await?;
    Ok(Json(RoomList {
        rooms: rooms.into_iter().map(Room::from).collect(),
    }))
}

/// One room.
#[utoipa::path(get, path = "/v1/rooms/{room_id}", tag = "rooms", security(("bearer" = [])),
    params(("room_id" = i64, Path, description = "The room")),
    responses((status = 200, body = Room), (status = 404, body = ErrorBody, description = "room_not_found")))]
pub(crate) async fn get_room(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(room_id): ApiPath<i64>,
) -> Result<Json<Room>, ApiError> {
    Ok(Json(
        state.database.get_room(user.id, room_id).await?.into(),
    ))
}

/// Joins a room (joining twice is fine).
#[utoipa::path(post, path = "/v1/rooms/{room_id}/join", tag = "rooms", security(("bearer" = [])),
    params(("room_id" = i64, Path, description = "The room")),
    responses((status = 200, body = Room), (status = 404, body = ErrorBody)))]
pub(crate) async fn join_room(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(room_id): ApiPath<i64>,
) -> Result<Json<Room>, ApiError> {
    let room = state.database.join_room(user.id, room_id).await?;
    tracing::info!(
        kind = "member_joined",
        room_id,
        user_id = user.id,
        "member joined"
    );
    Ok(Json(room.into()))
}

/// Leaves a room (leaving twice is fine).
#[utoipa::path(post, path = "/v1/rooms/{room_id}/leave", tag = "rooms", security(("bearer" = [])),
    params(("room_id" = i64, Path, description = "The room")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub(crate) async fn leave_room(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(room_id): ApiPath<i64>,
) -> Result<StatusCode, ApiError> {
    state.database.leave_room(user.id, room_id).await?;
    tracing::info!(
        kind = "member_left",
        room_id,
        user_id = user.id,
        "member left"
    );
    Ok(StatusCode::NO_CONTENT)
}

/// The room's members. Members only.
#[utoipa::path(get, path = "/v1/rooms/{room_id}/members", tag = "rooms", security(("bearer" = [])),
    params(("room_id" = i64, Path, description = "The room")),
    responses((status = 200, body = MemberList), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn list_members(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(room_id): ApiPath<i64>,
) -> Result<Json<MemberList>, ApiError> {
    let members = state.database.list_members(user.id, room_id).await?;
    Ok(Json(MemberList {
        members: members.into_iter().map(Member::from).collect(),
    }))
}
