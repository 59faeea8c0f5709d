//! Authentication: argon2 password hashes, random bearer tokens stored only as SHA-256 hashes,
//! and the extractors that turn an `Authorization` header into a user or an admin.

use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::model::User;
use crate::state::AppState;

/// Hashes a password with argon2id and a random salt, off the async workers.
pub(crate) async fn hash_password(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || {
        let salt = fresh_salt();
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
    })
    .await
    .ok()
    .and_then(Result::ok)
    .ok_or_else(|| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "hashing failed",
        )
    })
}

/// Checks a password against a stored hash; with no stored hash, checks against a dummy so a
/// login for an unknown user takes as long as one for a known user.
pub(crate) async fn verify_password(password: String, stored: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || {
        let known = stored.is_some();
        let hash = stored.unwrap_or_else(|| dummy_hash().to_owned());
        let Ok(parsed) = PasswordHash::new(&hash) else {
            return false;
        };
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
            && known
    })
    .await
    .unwrap_or(false)
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let salt = fresh_salt();
        Argon2::default()
            .hash_password(b"not a real password", &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

/// 128 random bits of salt.
fn fresh_salt() -> SaltString {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    // Sixteen bytes always encode to a valid salt.
    SaltString::encode_b64(&bytes).unwrap_or_else(|_| unreachable!("16 bytes is a valid salt"))
}

/// A new random bearer token (256 bits, hex).
pub(crate) fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// What the database stores of a token.
pub(crate) fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The bearer token of a request, if it has one.
pub(crate) fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The authenticated user of a request, within their rate limit.
#[derive(Debug)]
pub(crate) struct AuthUser {
    /// The user.
    pub(crate) id: i64,
    /// Their name.
    pub(crate) username: String,
    /// The hash of the token they presented (for logout).
    pub(crate) token_hash: String,
}

impl AuthUser {
    /// The user as the API shows it.
    pub(crate) fn user(&self) -> User {
        User {
            id: self.id,
            username: self.username.clone(),
        }
    }
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or_else(ApiError::unauthorized)?;
        let token_hash = token_hash(token);
        let user = match state.sessions.get(&token_hash) {
            Some(user) => user,
            None => {
                let user = User::from(state.database.session(token_hash.clone()).await?);
                state.sessions.insert(&token_hash, &user);
                user
            }
        };
        if let Err(retry_after) = state.limits.users.check(&user.id) {
            return Err(ApiError {
                retry_after: Some(retry_after),
                ..ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "too many requests; retry after the time in Retry-After",
                )
            });
        }
        Ok(AuthUser {
            id: user.id,
            username: user.username,
            token_hash,
        })
    }
}

/// Proof that a request carries the admin token. With no admin token configured, admin routes
/// answer 403.
#[derive(Debug)]
pub(crate) struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(expected) = &state.settings.admin_token else {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "admin_disabled",
                "admin routes are disabled: SWITCHBOARD_ADMIN_TOKEN is not set",
            ));
        };
        let presented = bearer(parts).ok_or_else(ApiError::unauthorized)?;
        // Compare hashes so the comparison is constant-time whatever the lengths.
        let same: bool = Sha256::digest(presented.as_bytes())
            .ct_eq(&Sha256::digest(expected.expose().as_bytes()))
            .into();
        if !same {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "the admin token is wrong",
            ));
        }
        Ok(Admin)
    }
}
