//! `/v1/rooms/{room_id}/messages`: post (idempotently), page through history, edit, delete.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use switchboard_proto::v1 as wire;

use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::idempotency;
use crate::model::{Message, MessageBody, MessagePage, PageQuery};
use crate::state::AppState;
use crate::validation;

/// Posts a message. With an `Idempotency-Key`, a retry by the same user returns the first
/// result (same status, same body) however many http and database nodes there are. The 201 is
/// sent only once the message is committed.
#[utoipa::path(post, path = "/v1/rooms/{room_id}/messages", tag = "messages", security(("bearer" = [])),
    params(("room_id" = i64, Path, description = "The room"),
           ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the same key returns the same message", min_length = 1, max_length = 255, pattern = "^[!-~]*$")),
    request_body = MessageBody,
    responses((status = 201, body = Message), (status = 403, body = ErrorBody, description = "not_a_member"),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn post_message(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(room_id): ApiPath<i64>,
    headers: HeaderMap,
    ApiJson(message): ApiJson<MessageBody>,
) -> Result<Response, ApiError> {
    validation::body(&message.body)?;
    let idempotency_key = idempotency::key(&headers)?;
    let reply = state
        .database
        .post_message(wire::PostMessageRequest {
            user_id: user.id,
            room_id,
            body: message.body,
            idempotency_key,
        })
        .await?;
    // The database node stored the post's `message_posted` activity entry with it.
    let message = reply.message.unwrap_or_default();
    let mut response = (StatusCode::CREATED, Json(Message::from(message))).into_response();
    if reply.replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// A page of the room's history, oldest first. Members only.
#[utoipa::path(get, path = "/v1/rooms/{room_id}/messages", tag = "messages", security(("bearer" = [])),
    params(("room_id" = i64, Path, description = "The room"), PageQuery),
    responses((status = 200, body = MessagePage), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn list_messages(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(room_id): ApiPath<i64>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<MessagePage>, ApiError> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::validation("limit", "limit must be 1-200"));
    }
    let after = query.after.unwrap_or(0).max(0);
    let page = state
        .database
        .list_messages(wire::ListMessagesRequest {
            user_id: user.id,
            room_id,
            after,
            before: query.before.unwrap_or(0).max(0),
            limit,
            forward: query.after.is_some(),
        })
        .await?;
    let next_after = page.messages.last().map_or(after, |m| m.seq);
    let prev_before = page.messages.first().map(|m| m.seq).filter(|seq| *seq > 1);
    Ok(Json(MessagePage {
        messages: page.messages.into_iter().map(Message::from).collect(),
        next_after,
        prev_before,
    }))
}

/// Edits a message (its author only); the previous text is kept in the edit history.
#[utoipa::path(patch, path = "/v1/rooms/{room_id}/messages/{message_id}", tag = "messages", security(("bearer" = [])),
    params(("room_id" = i64, Path, description = "The room"), ("message_id" = i64, Path, description = "The message")),
    request_body = MessageBody,
    responses((status = 200, body = Message), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn edit_message(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath((room_id, message_id)): ApiPath<(i64, i64)>,
    ApiJson(edit): ApiJson<MessageBody>,
) -> Result<Json<Message>, ApiError> {
    validation::body(&edit.body)?;
    let message = state
        .database
        .edit_message(wire::EditMessageRequest {
            user_id: user.id,
            room_id,
            message_id,
            body: edit.body,
        })
        .await?;
    tracing::info!(
        kind = "message_edited",
        room_id,
        message_id,
        user_id = user.id,
        "message edited"
    );
    Ok(Json(message.into()))
}

/// Deletes a message (its author or the room's owner), leaving a tombstone.
#[utoipa::path(delete, path = "/v1/rooms/{room_id}/messages/{message_id}", tag = "messages", security(("bearer" = [])),
    params(("room_id" = i64, Path, description = "The room"), ("message_id" = i64, Path, description = "The message")),
    responses((status = 200, body = Message), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_message(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath((room_id, message_id)): ApiPath<(i64, i64)>,
) -> Result<Json<Message>, ApiError> {
    let message = state
        .database
        .delete_message(wire::DeleteMessageRequest {
            user_id: user.id,
            room_id,
            message_id,
        })
        .await?;
    tracing::info!(
        kind = "message_deleted",
        room_id,
        message_id,
        user_id = user.id,
        "message deleted"
    );
    Ok(Json(message.into()))
}
