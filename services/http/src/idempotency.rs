//! The idempotency key a write carries to the database node.
//!
//! Every retryable write gets one: the client's `Idempotency-Key` when it sent one, otherwise a
//! fresh key of the request's own, so the runtime can retry the call on another database node
//! without applying it twice. The prefixes keep the two kinds apart.

use axum::http::HeaderMap;

use crate::auth;
use crate::error::ApiError;
use crate::validation;

/// The header clients set.
pub(crate) const HEADER: &str = "idempotency-key";

/// The key for this request: `client:<header>` or `request:<fresh random>`.
pub(crate) fn key(headers: &HeaderMap) -> Result<String, ApiError> {
    Ok(match headers.get(HEADER) {
        Some(value) => {
            let key = value.to_str().unwrap_or_default();
            validation::idempotency_key(key)?;
            format!("client:{key}")
        }
        None => format!("request:{}", auth::new_token()),
    })
}
