//! Messages: post (with idempotency keys), history pages, edits with history, soft deletes.
//!
//! A post takes the room row's lock to hand out the next `seq` and event cursor, so both are
//! gapless and ordered by commit. An `Idempotency-Key` is stored with the first reply under a
//! unique (user, key) constraint in the same transaction: a retry, on any database node, after
//! any restart, gets that reply back instead of a second message.

use prost::Message;
use sqlx::Row;
use switchboard_proto::v1 as wire;

use super::events::append_event;
use super::logs::{insert_entries, posted_entry};
use super::rooms::{not_a_member, room_not_found};
use super::{Store, StoreError, now_ms};

/// What a post produced.
#[derive(Debug)]
pub(crate) struct PostOutcome {
    pub(crate) message: wire::ChatMessage,
    /// The stored reply of an earlier request with the same key.
    pub(crate) replayed: bool,
    /// The event to broadcast; `None` for a replay.
    pub(crate) event: Option<wire::RoomEvent>,
    /// The post's `message_posted` activity entry, stored with it; `None` for a replay.
    pub(crate) activity: Option<wire::LogEntry>,
}

pub(super) const MESSAGE_COLUMNS: &str = "m.id, m.room_id, m.seq, m.body, m.created_at, m.edited_at, \
     m.deleted_at, m.deleted_by, u.id AS author_id, u.username, u.created_at AS author_created_at";

/// What a retry with the same idempotency key must match: the room and the body.
pub(super) fn fingerprint(room_id: i64, body: &str) -> String {
    format!("{room_id}:{body}")
}

pub(super) fn key_reused() -> StoreError {
    StoreError::rejected(
        "idempotency_key_reused",
        "this Idempotency-Key was used for a different request",
    )
}

/// The stored answer to an earlier post with the same key, if it was the same request.
pub(super) fn replayed(
    stored_fingerprint: &str,
    fingerprint: &str,
    response: &[u8],
) -> Result<PostOutcome, StoreError> {
    if stored_fingerprint != fingerprint {
        return Err(key_reused());
    }
    let message = wire::ChatMessage::decode(response)
        .map_err(|e| StoreError::Sql(sqlx::Error::Decode(Box::new(e))))?;
    Ok(PostOutcome {
        message,
        replayed: true,
        event: None,
        activity: None,
    })
}

/// Stores a reply under a user's idempotency key in the transaction that made it; false when
/// the key was already stored (by a concurrent request that committed first).
pub(super) async fn remember_key(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    user_id: i64,
    key: &str,
    fingerprint: &str,
    response: &[u8],
    now: i64,
) -> Result<bool, StoreError> {
    let stored = sqlx::query(
        "INSERT INTO idempotency_keys (user_id, key, fingerprint, response, created_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, key) DO NOTHING",
    )
    .bind(user_id)
    .bind(key)
    .bind(fingerprint)
    .bind(response)
    .bind(now)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(stored > 0)
}

impl Store {
    /// Posts a message, with its activity entry from database node `origin`; with a key, a
    /// retry returns the first result.
    pub(crate) async fn post_message(
        &self,
        origin: &str,
        user_id: i64,
        room_id: i64,
        body: &str,
        key: &str,
    ) -> Result<PostOutcome, StoreError> {
        let fingerprint = fingerprint(room_id, body);
        if !key.is_empty()
            && let Some(outcome) = self.replay(user_id, key, &fingerprint).await?
        {
            return Ok(outcome);
        }
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        // Write first: the counter bump takes the room's row lock (PostgreSQL) or the database's
        // write lock (SQLite) before anything is read, so concurrent posts queue here instead of
        // failing to upgrade a read snapshot. A refusal below rolls the bump back.
        let counters = sqlx::query(
            "UPDATE rooms SET last_seq = last_seq + 1, last_cursor = last_cursor + 1 \
             WHERE id = $1 RETURNING last_seq, last_cursor",
        )
        .bind(room_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(room_not_found)?;
        let seq: i64 = counters.try_get("last_seq")?;
        let cursor: i64 = counters.try_get("last_cursor")?;
        let member =
            sqlx::query("SELECT 1 AS one FROM memberships WHERE room_id = $1 AND user_id = $2")
                .bind(room_id)
                .bind(user_id)
                .fetch_optional(&mut *tx)
                .await?;
        if member.is_none() {
            return Err(not_a_member());
        }
        let inserted = sqlx::query(
            "INSERT INTO messages (room_id, seq, author_id, body, created_at) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(room_id)
        .bind(seq)
        .bind(user_id)
        .bind(body)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let author = sqlx::query("SELECT id, username, created_at FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_one(&mut *tx)
            .await?;
        let message = wire::ChatMessage {
            id: inserted.try_get("id")?,
            room_id,
            seq,
            author: Some(super::accounts::user(&author)?),
            body: body.to_owned(),
            created_at_ms: now,
            edited_at_ms: 0,
            deleted_at_ms: 0,
            deleted_by: 0,
        };
        let event = wire::RoomEvent {
            room_id,
            cursor,
            kind: "message".into(),
            message: Some(message.clone()),
            user: None,
            at_ms: now,
        };
        append_event(&mut tx, &event).await?;
        let activity = posted_entry(origin, &message);
        insert_entries(&mut tx, std::slice::from_ref(&activity)).await?;
        if !key.is_empty() {
            let stored = remember_key(
                &mut tx,
                user_id,
                key,
                &fingerprint,
                &message.encode_to_vec(),
                now,
            )
            .await?;
            if !stored {
                // A concurrent request with the same key committed first: undo ours, return its.
                tx.rollback().await?;
                return self
                    .replay(user_id, key, &fingerprint)
                    .await?
                    .ok_or_else(|| {
                        StoreError::rejected("internal", "idempotency record vanished")
                    });
            }
        }
        tx.commit().await?;
        Ok(PostOutcome {
            message,
            replayed: false,
            event: Some(event),
            activity: Some(activity),
        })
    }

    async fn replay(
        &self,
        user_id: i64,
        key: &str,
        fingerprint: &str,
    ) -> Result<Option<PostOutcome>, StoreError> {
        let Some((stored, response)) = self.stored_response(user_id, key).await? else {
            return Ok(None);
        };
        replayed(&stored, fingerprint, &response).map(Some)
    }

    /// The fingerprint and reply stored under a user's idempotency key, if any.
    pub(super) async fn stored_response(
        &self,
        user_id: i64,
        key: &str,
    ) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        let row = sqlx::query(
            "SELECT fingerprint, response FROM idempotency_keys WHERE user_id = $1 AND key = $2",
        )
        .bind(user_id)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| Ok((row.try_get("fingerprint")?, row.try_get("response")?)))
            .transpose()
    }

    /// A page of history, oldest first. Paging forward (`after` given), the oldest `limit`
    /// messages after it; otherwise the newest `limit` messages before `before` (or the end).
    pub async fn list_messages(
        &self,
        request: &wire::ListMessagesRequest,
    ) -> Result<wire::MessagePage, StoreError> {
        self.require_member(request.user_id, request.room_id)
            .await?;
        let limit = request.limit.clamp(1, 200);
        let before = if request.before > 0 {
            request.before
        } else {
            i64::MAX
        };
        let forward = request.forward || request.after > 0;
        let order = if forward { "ASC" } else { "DESC" };
        let rows = sqlx::query(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m JOIN users u ON u.id = m.author_id \
             WHERE m.room_id = $1 AND m.seq > $2 AND m.seq < $3 ORDER BY m.seq {order} LIMIT $4"
        ))
        .bind(request.room_id)
        .bind(request.after.max(0))
        .bind(before)
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await?;
        let more = rows.len() as i64 > limit;
        let mut messages = rows
            .iter()
            .take(limit as usize)
            .map(message)
            .collect::<Result<Vec<_>, _>>()?;
        if !forward {
            messages.reverse();
        }
        Ok(wire::MessagePage { messages, more })
    }

    /// Edits a message (its author only), keeping the previous text in the edit history.
    pub async fn edit_message(
        &self,
        request: &wire::EditMessageRequest,
    ) -> Result<(wire::ChatMessage, wire::RoomEvent), StoreError> {
        self.require_member(request.user_id, request.room_id)
            .await?;
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let (cursor, current) = self
            .locked_message(&mut tx, request.room_id, request.message_id)
            .await?;
        let author_id = current.author.as_ref().map_or(0, |a| a.id);
        if author_id != request.user_id {
            return Err(StoreError::rejected(
                "forbidden",
                "only the author may edit a message",
            ));
        }
        if current.deleted_at_ms != 0 {
            return Err(StoreError::rejected(
                "message_deleted",
                "a deleted message cannot be edited",
            ));
        }
        sqlx::query(
            "INSERT INTO message_edits (message_id, previous_body, edited_by, edited_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(current.id)
        .bind(&current.body)
        .bind(request.user_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE messages SET body = $2, edited_at = $3 WHERE id = $1")
            .bind(current.id)
            .bind(&request.body)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let edited = wire::ChatMessage {
            body: request.body.clone(),
            edited_at_ms: now,
            ..current
        };
        let event = message_event(&mut tx, &edited, "message_edited", cursor, now).await?;
        tx.commit().await?;
        Ok((edited, event))
    }

    /// Soft-deletes a message (its author or the room's owner): the row stays as a tombstone.
    pub async fn delete_message(
        &self,
        request: &wire::DeleteMessageRequest,
    ) -> Result<(wire::ChatMessage, Option<wire::RoomEvent>), StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let (cursor, current) = self
            .locked_message(&mut tx, request.room_id, request.message_id)
            .await?;
        let owner: i64 = sqlx::query("SELECT created_by FROM rooms WHERE id = $1")
            .bind(request.room_id)
            .fetch_one(&mut *tx)
            .await?
            .try_get("created_by")?;
        let author_id = current.author.as_ref().map_or(0, |a| a.id);
        // `user_id` 0 is the reporting service acting on a moderator's decision.
        if request.user_id != 0 && request.user_id != author_id && request.user_id != owner {
            return Err(StoreError::rejected(
                "forbidden",
                "only the author or the room's owner may delete a message",
            ));
        }
        if current.deleted_at_ms != 0 {
            tx.rollback().await?;
            return Ok((current, None));
        }
        sqlx::query(
            "UPDATE messages SET body = '', deleted_at = $2, deleted_by = $3 WHERE id = $1",
        )
        .bind(current.id)
        .bind(now)
        .bind(request.user_id)
        .execute(&mut *tx)
        .await?;
        let deleted = wire::ChatMessage {
            body: String::new(),
            deleted_at_ms: now,
            deleted_by: request.user_id,
            ..current
        };
        let event = message_event(&mut tx, &deleted, "message_deleted", cursor, now).await?;
        tx.commit().await?;
        Ok((deleted, Some(event)))
    }

    /// Takes the room's row lock by handing out the next event cursor (so edits and deletes are
    /// serialised with posts and each other), then reads the message. A rejection rolls the
    /// transaction back, and the cursor with it.
    async fn locked_message(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        room_id: i64,
        message_id: i64,
    ) -> Result<(i64, wire::ChatMessage), StoreError> {
        let cursor: i64 = sqlx::query(
            "UPDATE rooms SET last_cursor = last_cursor + 1 WHERE id = $1 RETURNING last_cursor",
        )
        .bind(room_id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(room_not_found)?
        .try_get("last_cursor")?;
        let row = sqlx::query(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m JOIN users u ON u.id = m.author_id \
             WHERE m.room_id = $1 AND m.id = $2"
        ))
        .bind(room_id)
        .bind(message_id)
        .fetch_optional(&mut **tx)
        .await?;
        match row {
            Some(row) => Ok((cursor, message(&row)?)),
            None => Err(StoreError::rejected("message_not_found", "no such message")),
        }
    }
}

async fn message_event(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    message: &wire::ChatMessage,
    kind: &str,
    cursor: i64,
    now: i64,
) -> Result<wire::RoomEvent, StoreError> {
    let event = wire::RoomEvent {
        room_id: message.room_id,
        cursor,
        kind: kind.to_owned(),
        message: Some(message.clone()),
        user: None,
        at_ms: now,
    };
    append_event(tx, &event).await?;
    Ok(event)
}

pub(super) fn message(row: &sqlx::any::AnyRow) -> Result<wire::ChatMessage, StoreError> {
    Ok(wire::ChatMessage {
        id: row.try_get("id")?,
        room_id: row.try_get("room_id")?,
        seq: row.try_get("seq")?,
        author: Some(wire::User {
            id: row.try_get("author_id")?,
            username: row.try_get("username")?,
            created_at_ms: row.try_get("author_created_at")?,
        }),
        body: row.try_get("body")?,
        created_at_ms: row.try_get("created_at")?,
        edited_at_ms: row.try_get("edited_at")?,
        deleted_at_ms: row.try_get("deleted_at")?,
        deleted_by: row.try_get("deleted_by")?,
    })
}
