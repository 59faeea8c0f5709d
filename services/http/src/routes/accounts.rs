//! `/v1/auth/*` and `/v1/me`: registration, login, logout.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use crate::auth::{self, AuthUser};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ClientAddress};
use crate::model::{Credentials, Session, User};
use crate::session_cache::SessionCache;
use crate::state::AppState;
use switchboard::{CallOptions, PeerState};
use switchboard_proto::names;

/// How long a logout waits for each other http node to drop the session from its cache.
const REVOCATION_TIMEOUT: Duration = Duration::from_secs(1);
use crate::validation;

/// Creates an account and logs it in.
#[utoipa::path(post, path = "/v1/auth/register", tag = "accounts", request_body = Credentials,
    responses((status = 201, body = Session), (status = 409, body = ErrorBody, description = "username_taken"), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody, description = "too_many_attempts")))]
pub(crate) async fn register(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    ApiJson(credentials): ApiJson<Credentials>,
) -> Result<(StatusCode, Json<Session>), ApiError> {
    throttle(
        state.limits.addresses.check(&address),
        "register",
        "",
        address,
    )?;
    validation::username(&credentials.username)?;
    validation::password(&credentials.password)?;
    let hash = auth::hash_password(credentials.password).await?;
    let user = state.database.register(&credentials.username, hash).await?;
    tracing::info!(kind = "user_registered", user_id = user.id, username = %user.username, "user registered");
    let session = open_session(&state, user.into()).await?;
    Ok((StatusCode::CREATED, Json(session)))
}

/// Logs in; the same 401 whether the user exists or not.
#[utoipa::path(post, path = "/v1/auth/login", tag = "accounts", request_body = Credentials,
    responses((status = 200, body = Session), (status = 401, body = ErrorBody, description = "invalid_credentials"), (status = 429, body = ErrorBody, description = "too_many_attempts")))]
pub(crate) async fn login(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    ApiJson(credentials): ApiJson<Credentials>,
) -> Result<Json<Session>, ApiError> {
    let username = credentials.username.as_str();
    throttle(
        state.limits.addresses.check(&address),
        "login",
        username,
        address,
    )?;
    throttle(
        state.limits.usernames.check(&credentials.username),
        "login",
        username,
        address,
    )?;
    let found = match state.database.credentials(&credentials.username).await {
        Ok(reply) => Some(reply),
        Err(switchboard::NodeError::Service(e)) if e.code == "invalid_credentials" => None,
        Err(other) => return Err(other.into()),
    };
    let stored = found.as_ref().map(|f| f.password_hash.clone());
    let valid = auth::verify_password(credentials.password, stored).await;
    match found.and_then(|f| f.user).filter(|_| valid) {
        Some(user) => {
            tracing::info!(kind = "user_logged_in", user_id = user.id, "user logged in");
            Ok(Json(open_session(&state, user.into()).await?))
        }
        None => {
            tracing::info!(kind = "login_failed", username = %credentials.username, address = %address, "login failed");
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                "the username or password is wrong",
            ))
        }
    }
}

/// Refuses an attempt past a login or register limit with 429 and `Retry-After`, and logs it.
fn throttle(
    checked: Result<(), u64>,
    action: &'static str,
    username: &str,
    address: IpAddr,
) -> Result<(), ApiError> {
    let Err(retry_after) = checked else {
        return Ok(());
    };
    tracing::info!(kind = "login_throttled", action, username, %address, retry_after, "too many attempts to log in or register");
    Err(ApiError {
        retry_after: Some(retry_after),
        ..ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            "too many attempts from this address or for this username; retry after the time in Retry-After",
        )
    })
}

async fn open_session(state: &AppState, user: User) -> Result<Session, ApiError> {
    let token = auth::new_token();
    let expires = SystemTime::now() + Duration::from_secs(state.settings.session_days * 86_400);
    let expires_ms = expires
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(i64::MAX);
    state
        .database
        .create_session(user.id, auth::token_hash(&token), expires_ms)
        .await?;
    Ok(Session { user, token })
}

/// Ends the session: the token stops working on every http node at once (sessions live in the
/// database, not in any http node).
#[utoipa::path(post, path = "/v1/auth/logout", tag = "accounts", security(("bearer" = [])),
    responses((status = 204), (status = 401, body = ErrorBody)))]
pub(crate) async fn logout(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<StatusCode, ApiError> {
    state
        .database
        .delete_session(user.token_hash.clone())
        .await?;
    // Every http node, this one included, drops the session from its cache before the client
    // hears that it is logged out.
    state.sessions.revoke(&user.token_hash);
    let peers = state
        .node
        .nodes()
        .into_iter()
        .filter(|n| !n.is_self && n.state == PeerState::Up)
        .filter(|n| n.services.iter().any(|s| s == names::HTTP_SESSIONS));
    let told = peers.map(|peer| {
        let node = state.node.clone();
        let payload = SessionCache::revocation(&user.token_hash);
        async move {
            let options = CallOptions::idempotent().timeout(REVOCATION_TIMEOUT);
            let told = node
                .call_on(
                    &peer.name,
                    names::HTTP_SESSIONS,
                    names::SESSION_REVOKED,
                    payload,
                    options,
                )
                .await;
            if let Err(error) = told {
                // Its cache lets the session go within SWITCHBOARD_SESSION_CACHE_MS anyway.
                tracing::info!(node = %peer.name, %error, "an http node was not told of a logout");
            }
        }
    });
    futures::future::join_all(told).await;
    Ok(StatusCode::NO_CONTENT)
}

/// The logged-in user.
#[utoipa::path(get, path = "/v1/me", tag = "accounts", security(("bearer" = [])),
    responses((status = 200, body = User), (status = 401, body = ErrorBody)))]
pub(crate) async fn me(user: AuthUser) -> Json<User> {
    Json(user.user())
}
