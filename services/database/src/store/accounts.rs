//! Accounts and sessions. Passwords arrive already hashed (argon2, on the http node) and session
//! tokens arrive as SHA-256 hashes: nothing stored here can be used to log in.

use sqlx::Row;
use switchboard_proto::v1 as wire;

use super::{Store, StoreError, now_ms};

impl Store {
    /// Creates an account; `username_taken` if the name exists in any letter case, unless this
    /// same request (the same salted hash) created it, so a retry is safe.
    pub async fn register(
        &self,
        username: &str,
        password_hash: &str,
    ) -> Result<wire::User, StoreError> {
        let now = now_ms();
        let row = sqlx::query(
            "INSERT INTO users (username, username_key, password_hash, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (username_key) DO NOTHING RETURNING id",
        )
        .bind(username)
        .bind(username.to_lowercase())
        .bind(password_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = row {
            return Ok(wire::User {
                id: row.try_get("id")?,
                username: username.to_owned(),
                created_at_ms: now,
            });
        }
        // Taken, but perhaps by this very request: a retry after the reply was lost (the
        // runtime retries on another database node when the first one dies). The hash is
        // salted with fresh random bytes for every registration attempt, so an equal stored
        // hash means the account is the one this request created, and the retry gets it back.
        match self.credentials(username).await? {
            Some((existing, stored_hash)) if stored_hash == password_hash => Ok(existing),
            _ => Err(StoreError::rejected(
                "username_taken",
                "that username is already taken",
            )),
        }
    }

    /// The account and its password hash, for a login attempt.
    pub async fn credentials(
        &self,
        username: &str,
    ) -> Result<Option<(wire::User, String)>, StoreError> {
        let row = sqlx::query(
            "SELECT id, username, created_at, password_hash FROM users WHERE username_key = $1",
        )
        .bind(username.to_lowercase())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| Ok((user(&row)?, row.try_get("password_hash")?)))
            .transpose()
    }

    /// Remembers a session under the hash of its token; storing the same one again is a no-op.
    pub async fn create_session(
        &self,
        user_id: i64,
        token_hash: &str,
        expires_at_ms: i64,
    ) -> Result<(), StoreError> {
        // A retry of the same request finds its session stored and changes nothing: the token
        // is 256 random bits, so its hash names one login.
        sqlx::query(
            "INSERT INTO sessions (token_hash, user_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (token_hash) DO NOTHING",
        )
        .bind(token_hash)
        .bind(user_id)
        .bind(now_ms())
        .bind(expires_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The user a live session belongs to; `unauthorized` for an unknown or expired one.
    pub async fn session(&self, token_hash: &str) -> Result<wire::User, StoreError> {
        let row = sqlx::query(
            "SELECT u.id, u.username, u.created_at FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.token_hash = $1 AND s.expires_at > $2",
        )
        .bind(token_hash)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => Ok(user(&row)?),
            None => Err(StoreError::rejected(
                "unauthorized",
                "the token is missing, unknown or expired",
            )),
        }
    }

    /// Ends a session; ending an unknown one is not an error (logout is idempotent).
    pub async fn delete_session(&self, token_hash: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// A user from a row with `id`, `username` and `created_at` columns.
pub(super) fn user(row: &sqlx::any::AnyRow) -> Result<wire::User, StoreError> {
    Ok(wire::User {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        created_at_ms: row.try_get("created_at")?,
    })
}
