//! The per-room event log that live clients replay from. Every mutation appends its event in
//! the transaction that makes it, with the next gapless cursor; old events are pruned by age, and
//! a client asking for a cursor older than what is kept is told to reset.

use prost::Message;
use sqlx::Row;
use switchboard_proto::v1 as wire;

use super::{Store, StoreError, now_ms};

/// Appends `event` to its room's log inside the caller's transaction.
pub(super) async fn append_event(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    event: &wire::RoomEvent,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO room_events (room_id, cursor, payload, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(event.room_id)
    .bind(event.cursor)
    .bind(event.encode_to_vec())
    .bind(event.at_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// Events of a room after cursor `after`, for a member; `reset` when the cursor is older than
    /// the retained log or newer than its end. `limit` 0 asks only where the log ends, for a
    /// subscriber starting from now.
    pub async fn room_events(
        &self,
        user_id: i64,
        room_id: i64,
        after: i64,
        limit: i64,
    ) -> Result<wire::EventPage, StoreError> {
        self.require_member(user_id, room_id).await?;
        if limit == 0 {
            return Ok(wire::EventPage {
                events: Vec::new(),
                latest: self.latest_cursor(room_id).await?,
                reset: false,
            });
        }
        self.events_after(room_id, after, limit).await
    }

    async fn latest_cursor(&self, room_id: i64) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT last_cursor FROM rooms WHERE id = $1")
            .bind(room_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(super::rooms::room_not_found)?
            .try_get("last_cursor")?)
    }

    /// A room's events after cursor `after` (at most `limit`), with no membership check; `reset`
    /// when the log no longer holds the next one or the cursor is past its end.
    pub(super) async fn events_after(
        &self,
        room_id: i64,
        after: i64,
        limit: i64,
    ) -> Result<wire::EventPage, StoreError> {
        let latest = self.latest_cursor(room_id).await?;
        let rows = sqlx::query(
            "SELECT cursor, payload FROM room_events WHERE room_id = $1 AND cursor > $2 \
             ORDER BY cursor LIMIT $3",
        )
        .bind(room_id)
        .bind(after)
        .bind(limit.clamp(1, 1000))
        .fetch_all(&self.pool)
        .await?;
        // The log is gapless from its oldest kept cursor on: anything but the next cursor first
        // means the events right after `after` were pruned.
        let first: Option<i64> = rows.first().map(|row| row.try_get("cursor")).transpose()?;
        let pruned =
            first.is_some_and(|cursor| cursor != after + 1) || (first.is_none() && after < latest);
        if after > latest || pruned {
            return Ok(wire::EventPage {
                events: Vec::new(),
                latest,
                reset: true,
            });
        }
        let events = rows
            .iter()
            .map(|row| {
                let payload: Vec<u8> = row.try_get("payload")?;
                wire::RoomEvent::decode(payload.as_slice())
                    .map_err(|e| StoreError::Sql(sqlx::Error::Decode(Box::new(e))))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(wire::EventPage {
            events,
            latest,
            reset: false,
        })
    }

    /// Deletes events older than `retention_ms`; returns how many.
    pub async fn prune_events(&self, retention_ms: i64) -> Result<u64, StoreError> {
        let cutoff = now_ms() - retention_ms;
        let result = sqlx::query("DELETE FROM room_events WHERE created_at < $1")
            .bind(cutoff)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected())
    }
}
