//! Rooms and memberships. Joining and leaving append a room event in the same transaction, so
//! the live event log and the membership table never disagree.

use prost::Message;
use sqlx::Row;
use switchboard_proto::v1 as wire;

use super::accounts::user;
use super::events::append_event;
use super::messages::{key_reused, remember_key};
use super::{Store, StoreError, now_ms};

const ROOM_COLUMNS: &str = "r.id, r.name, r.topic, r.created_by, r.created_at, r.member_count, \
     (SELECT COUNT(*) FROM memberships m WHERE m.room_id = r.id AND m.user_id = $1) AS joined";

impl Store {
    /// Creates a room owned by `user_id`, who becomes its first member. With a key, a retry
    /// (on any database node, after any restart) returns the room the first attempt created
    /// instead of `room_name_taken`.
    pub async fn create_room(
        &self,
        user_id: i64,
        name: &str,
        topic: &str,
        key: &str,
    ) -> Result<wire::Room, StoreError> {
        // Unlike a post's (`{room_id}:{body}`), this starts with a letter: one key used for a post
        // and for a room is `idempotency_key_reused`, never a replay of the other.
        let fingerprint = format!("create_room:{name}\n{topic}");
        if let Some(room) = self.replay_room(user_id, key, &fingerprint).await? {
            return Ok(room);
        }
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "INSERT INTO rooms (name, name_key, topic, created_by, created_at, member_count) \
             VALUES ($1, $2, $3, $4, $5, 1) ON CONFLICT (name_key) DO NOTHING RETURNING id",
        )
        .bind(name)
        .bind(name.to_lowercase())
        .bind(topic)
        .bind(user_id)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            // The name may be taken by this very request, committed by an attempt whose reply
            // was lost (or by a concurrent one with the same key).
            return match self.replay_room(user_id, key, &fingerprint).await? {
                Some(room) => Ok(room),
                None => Err(StoreError::rejected(
                    "room_name_taken",
                    "a room with that name already exists",
                )),
            };
        };
        let room_id: i64 = row.try_get("id")?;
        sqlx::query(
            "INSERT INTO memberships (room_id, user_id, role, joined_at) VALUES ($1, $2, 'owner', $3)",
        )
        .bind(room_id)
        .bind(user_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let room = wire::Room {
            id: room_id,
            name: name.to_owned(),
            topic: topic.to_owned(),
            created_by: user_id,
            created_at_ms: now,
            member_count: 1,
            joined: true,
        };
        if !key.is_empty() {
            // Same transaction as the room: the key exists exactly when the room does. A key
            // stored meanwhile belongs to another request: one with this key and this name
            // would have found the name taken above.
            let stored = remember_key(
                &mut tx,
                user_id,
                key,
                &fingerprint,
                &room.encode_to_vec(),
                now,
            )
            .await?;
            if !stored {
                tx.rollback().await?;
                return Err(key_reused());
            }
        }
        tx.commit().await?;
        Ok(room)
    }

    /// The room an earlier `create_room` with this key created, if there was one.
    async fn replay_room(
        &self,
        user_id: i64,
        key: &str,
        fingerprint: &str,
    ) -> Result<Option<wire::Room>, StoreError> {
        if key.is_empty() {
            return Ok(None);
        }
        let Some((stored, response)) = self.stored_response(user_id, key).await? else {
            return Ok(None);
        };
        if stored != fingerprint {
            return Err(key_reused());
        }
        wire::Room::decode(response.as_slice())
            .map(Some)
            .map_err(|e| StoreError::Sql(sqlx::Error::Decode(Box::new(e))))
    }

    /// Every room, oldest first, with whether `user_id` is a member.
    pub async fn list_rooms(&self, user_id: i64) -> Result<Vec<wire::Room>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {ROOM_COLUMNS} FROM rooms r ORDER BY r.id"))
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(room).collect()
    }

    /// One room; `room_not_found` if it does not exist.
    pub async fn get_room(&self, user_id: i64, room_id: i64) -> Result<wire::Room, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {ROOM_COLUMNS} FROM rooms r WHERE r.id = $2"
        ))
        .bind(user_id)
        .bind(room_id)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => room(&row),
            None => Err(room_not_found()),
        }
    }

    /// Adds `user_id` to the room (a no-op for a member) and returns the room and the event.
    pub async fn join_room(
        &self,
        user_id: i64,
        room_id: i64,
    ) -> Result<(wire::Room, Option<wire::RoomEvent>), StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO memberships (room_id, user_id, role, joined_at) \
             SELECT id, $2, 'member', $3 FROM rooms WHERE id = $1 \
             ON CONFLICT (room_id, user_id) DO NOTHING",
        )
        .bind(room_id)
        .bind(user_id)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let event = if inserted == 1 {
            let member = self
                .member_event(&mut tx, user_id, room_id, 1, "member_joined", now)
                .await?;
            Some(member)
        } else {
            None
        };
        tx.commit().await?;
        let room = self.get_room(user_id, room_id).await?;
        Ok((room, event))
    }

    /// Removes `user_id` from the room (a no-op for a non-member) and returns the event.
    pub async fn leave_room(
        &self,
        user_id: i64,
        room_id: i64,
    ) -> Result<Option<wire::RoomEvent>, StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        // Write first, so SQLite takes its write lock before this transaction reads anything.
        let removed = sqlx::query("DELETE FROM memberships WHERE room_id = $1 AND user_id = $2")
            .bind(room_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if removed == 0 {
            let exists = sqlx::query("SELECT id FROM rooms WHERE id = $1")
                .bind(room_id)
                .fetch_optional(&mut *tx)
                .await?;
            if exists.is_none() {
                return Err(room_not_found());
            }
        }
        let event = if removed == 1 {
            Some(
                self.member_event(&mut tx, user_id, room_id, -1, "member_left", now)
                    .await?,
            )
        } else {
            None
        };
        tx.commit().await?;
        Ok(event)
    }

    async fn member_event(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        user_id: i64,
        room_id: i64,
        delta: i64,
        kind: &str,
        now: i64,
    ) -> Result<wire::RoomEvent, StoreError> {
        let row = sqlx::query(
            "UPDATE rooms SET member_count = member_count + $2, last_cursor = last_cursor + 1 \
             WHERE id = $1 RETURNING last_cursor",
        )
        .bind(room_id)
        .bind(delta)
        .fetch_one(&mut **tx)
        .await?;
        let cursor: i64 = row.try_get("last_cursor")?;
        let member = sqlx::query("SELECT id, username, created_at FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_one(&mut **tx)
            .await?;
        let event = wire::RoomEvent {
            room_id,
            cursor,
            kind: kind.to_owned(),
            message: None,
            user: Some(user(&member)?),
            at_ms: now,
        };
        append_event(tx, &event).await?;
        Ok(event)
    }

    /// The members of a room, in the order they joined. Members only.
    pub async fn list_members(
        &self,
        user_id: i64,
        room_id: i64,
    ) -> Result<Vec<wire::RoomMember>, StoreError> {
        self.require_member(user_id, room_id).await?;
        let rows = sqlx::query(
            "SELECT u.id, u.username, u.created_at, m.role, m.joined_at FROM memberships m \
             JOIN users u ON u.id = m.user_id WHERE m.room_id = $1 ORDER BY m.joined_at, u.id",
        )
        .bind(room_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(wire::RoomMember {
                    user: Some(user(row)?),
                    role: row.try_get("role")?,
                    joined_at_ms: row.try_get("joined_at")?,
                })
            })
            .collect()
    }

    /// `room_not_found` unless the room exists, `not_a_member` unless `user_id` is in it.
    pub(crate) async fn require_member(
        &self,
        user_id: i64,
        room_id: i64,
    ) -> Result<(), StoreError> {
        let row = sqlx::query(
            "SELECT r.id, (SELECT COUNT(*) FROM memberships m WHERE m.room_id = r.id AND m.user_id = $2) AS joined \
             FROM rooms r WHERE r.id = $1",
        )
        .bind(room_id)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Err(room_not_found());
        };
        let joined: i64 = row.try_get("joined")?;
        if joined == 0 {
            return Err(not_a_member());
        }
        Ok(())
    }
}

pub(super) fn room_not_found() -> StoreError {
    StoreError::rejected("room_not_found", "no such room")
}

pub(super) fn not_a_member() -> StoreError {
    StoreError::rejected("not_a_member", "only members of the room may do that")
}

fn room(row: &sqlx::any::AnyRow) -> Result<wire::Room, StoreError> {
    let joined: i64 = row.try_get("joined")?;
    Ok(wire::Room {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        topic: row.try_get("topic")?,
        created_by: row.try_get("created_by")?,
        created_at_ms: row.try_get("created_at")?,
        member_count: row.try_get("member_count")?,
        joined: joined > 0,
    })
}
