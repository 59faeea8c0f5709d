//! The API's one error type. Every error leaves as JSON `{code, message, request_id}` (plus
//! `field` where one field is at fault) with the right status; the real cause of a server-side
//! failure is logged, never shown.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use switchboard::NodeError;

use crate::request_id;

/// An error answered to a client.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    /// HTTP status.
    pub(crate) status: StatusCode,
    /// Stable snake_case code.
    pub(crate) code: &'static str,
    /// Human sentence.
    pub(crate) message: String,
    /// The field at fault, if one is.
    pub(crate) field: Option<String>,
    /// Seconds to wait, for 429.
    pub(crate) retry_after: Option<u64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    /// Stable, machine-readable code, e.g. `room_not_found`.
    code: &'static str,
    /// A human sentence.
    message: String,
    /// The field at fault, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    /// The request's id, as in the `X-Request-Id` header.
    request_id: String,
}

impl ApiError {
    /// An error with no field.
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    /// A value outside the limits of `field` (422).
    pub(crate) fn validation(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.to_owned()),
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                message,
            )
        }
    }

    /// 401.
    pub(crate) fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required",
        )
    }

    /// 404 for a route that does not exist.
    pub(crate) fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such route")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(code = self.code, message = %self.message, "request failed");
        }
        let body = ErrorBody {
            code: self.code,
            message: self.message,
            field: self.field,
            request_id: request_id::current(),
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// Failures reaching or inside other services.
impl From<NodeError> for ApiError {
    fn from(error: NodeError) -> Self {
        match error {
            NodeError::Service(e) => {
                let (status, code) = match e.code.as_str() {
                    "username_taken" => (StatusCode::CONFLICT, "username_taken"),
                    "room_name_taken" => (StatusCode::CONFLICT, "room_name_taken"),
                    "message_deleted" => (StatusCode::CONFLICT, "message_deleted"),
                    "idempotency_key_reused" => {
                        (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
                    }
                    "unauthorized" => (StatusCode::UNAUTHORIZED, "unauthorized"),
                    "invalid_credentials" => (StatusCode::UNAUTHORIZED, "invalid_credentials"),
                    "not_a_member" => (StatusCode::FORBIDDEN, "not_a_member"),
                    "forbidden" => (StatusCode::FORBIDDEN, "forbidden"),
                    "room_not_found" => (StatusCode::NOT_FOUND, "room_not_found"),
                    "message_not_found" => (StatusCode::NOT_FOUND, "message_not_found"),
                    "report_not_found" => (StatusCode::NOT_FOUND, "report_not_found"),
                    "invalid_action" => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_action"),
                    "unavailable" => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
                    _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
                };
                let message = if status.is_server_error() {
                    tracing::warn!(code = %e.code, message = %e.message, "service error");
                    "the request could not be completed".to_owned()
                } else {
                    e.message
                };
                ApiError::new(status, code, message)
            }
            other => {
                tracing::warn!(error = %other, "a service is unreachable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the service is temporarily unavailable; retry shortly",
                )
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonDataError(e) => ApiError {
                field: field_of(&e.body_text()),
                ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_field", e.body_text())
            },
            JsonRejection::JsonSyntaxError(e) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", e.body_text())
            }
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be JSON with Content-Type: application/json",
            ),
            other if stalled(&other) => ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                "the request body stalled; send it without pausing",
            ),
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "the body exceeds 64 KiB",
            ),
            other => ApiError::new(other.status(), "invalid_json", other.body_text()),
        }
    }
}

/// Whether reading the body failed because it stalled past the body timeout (the startup's
/// `RequestBodyTimeoutLayer`), somewhere down the rejection's chain of causes.
fn stalled(rejection: &JsonRejection) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(rejection);
    while let Some(error) = cause {
        if error.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cause = error.source();
    }
    false
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_field",
            rejection.body_text(),
        )
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError {
            field: field_of(&rejection.body_text()),
            ..ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_field",
                rejection.body_text(),
            )
        }
    }
}

/// Pulls the field name out of serde's messages: "missing field `username`", or a path before
/// the error ("username: invalid type: ...").
fn field_of(text: &str) -> Option<String> {
    for marker in ["missing field `", "unknown field `"] {
        if let Some(start) = text.find(marker) {
            let rest = &text[start + marker.len()..];
            return rest.find('`').map(|end| rest[..end].to_owned());
        }
    }
    let after_colon = text.split(": ").nth(1)?;
    let candidate = after_colon.split(':').next()?.trim();
    (!candidate.is_empty()
        && candidate
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.'))
    .then(|| candidate.to_owned())
}

#[cfg(test)]
mod tests {
    use super::field_of;

    #[test]
    fn finds_the_field_in_serde_messages() {
        assert_eq!(
            field_of(
                "Failed to deserialize the JSON body into the target type: missing field `username` at line 1 column 2"
            ),
            Some("username".into())
        );
        assert_eq!(
            field_of(
                "Failed to deserialize the JSON body into the target type: body: invalid type: integer `5`, expected a string at line 1 column 9"
            ),
            Some("body".into())
        );
    }
}
