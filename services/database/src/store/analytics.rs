//! The reads analytics replicas bootstrap from and fill gaps with. Unlike the chat's reads they
//! check no membership: they serve the `analytics` service (cluster-wide aggregates), never a
//! user, and the http node has no way to reach them. They return what analytics needs and no
//! more — a message's length, never its text — and are plain reads, safe to repeat anywhere.

use sqlx::Row;
use switchboard_proto::v1 as wire;

use super::accounts::user;
use super::{Store, StoreError};

impl Store {
    /// Every room's latest event cursor.
    pub async fn analytics_cursors(&self) -> Result<wire::AnalyticsCursors, StoreError> {
        let rows = sqlx::query("SELECT id, last_cursor FROM rooms ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        let rooms = rows
            .iter()
            .map(|row| {
                Ok(wire::RoomCursor {
                    room_id: row.try_get("id")?,
                    cursor: row.try_get("last_cursor")?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(wire::AnalyticsCursors { rooms })
    }

    /// A page of the messages created since `since_ms` (of one room, or of all), in id order.
    pub async fn analytics_messages(
        &self,
        request: &wire::AnalyticsMessagesRequest,
    ) -> Result<wire::AnalyticsMessagePage, StoreError> {
        let limit = request.limit.clamp(1, 10_000);
        let rows = sqlx::query(
            "SELECT m.id, m.room_id, m.created_at, m.deleted_at, \
                    CAST(LENGTH(m.body) AS BIGINT) AS length, \
                    u.id AS author_id, u.username, u.created_at AS author_created_at \
             FROM messages m JOIN users u ON u.id = m.author_id \
             WHERE m.created_at >= $1 AND m.id > $2 AND ($3 = 0 OR m.room_id = $3) \
             ORDER BY m.id LIMIT $4",
        )
        .bind(request.since_ms)
        .bind(request.after_id)
        .bind(request.room_id)
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await?;
        let more = rows.len() as i64 > limit;
        let messages = rows
            .iter()
            .take(limit as usize)
            .map(|row| {
                let deleted_at: i64 = row.try_get("deleted_at")?;
                Ok(wire::AnalyticsMessage {
                    id: row.try_get("id")?,
                    room_id: row.try_get("room_id")?,
                    author: Some(wire::User {
                        id: row.try_get("author_id")?,
                        username: row.try_get("username")?,
                        created_at_ms: row.try_get("author_created_at")?,
                    }),
                    created_at_ms: row.try_get("created_at")?,
                    length: row.try_get("length")?,
                    deleted: deleted_at != 0,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(wire::AnalyticsMessagePage { messages, more })
    }

    /// A page of the accounts registered since `since_ms`, in id order.
    pub async fn analytics_users(
        &self,
        request: &wire::AnalyticsUsersRequest,
    ) -> Result<wire::AnalyticsUserPage, StoreError> {
        let limit = request.limit.clamp(1, 10_000);
        let rows = sqlx::query(
            "SELECT id, username, created_at FROM users WHERE created_at >= $1 AND id > $2 \
             ORDER BY id LIMIT $3",
        )
        .bind(request.since_ms)
        .bind(request.after_id)
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await?;
        let more = rows.len() as i64 > limit;
        let users = rows
            .iter()
            .take(limit as usize)
            .map(user)
            .collect::<Result<_, _>>()?;
        Ok(wire::AnalyticsUserPage { users, more })
    }

    /// A room's events after cursor `after`; `reset` when the log no longer holds the next one
    /// (or the cursor is past its end). `room_not_found` for a room that does not exist.
    pub async fn analytics_events(
        &self,
        request: &wire::AnalyticsEventsRequest,
    ) -> Result<wire::EventPage, StoreError> {
        self.events_after(request.room_id, request.after, request.limit)
            .await
    }
}
