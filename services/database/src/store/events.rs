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
    /// the retained log or newer than its end.
    pub async fn room_events(
        &self,
        user_id: i64,
        room_id: i64,
        after: i64,
        limit: i64,
    ) -> Result<wire::EventPage, StoreError> {
        self.require_member(user_id, room_id).await?;
        let latest: i64 = sqlx::query("SELECT last_cursor FROM rooms WHERE id = $1")
            .bind(room_id)
            .fetch_one(&self.pool)
            .await?
            .try_get("last_cursor")?;
        let oldest: Option<i64> =
            sqlx::query("SELECT MIN(cursor) AS oldest FROM room_events WHERE room_id = $1")
                .bind(room_id)
                .fetch_one(&self.pool)
                .await?
                .try_get("oldest")?;
        // Everything up to `oldest - 1` is gone (or never existed when the log is empty).
        let first_kept = oldest.unwrap_or(latest + 1);
        // `limit` 0 asks only where the log ends, for a subscriber starting from now.
        if limit == 0 {
            return Ok(wire::EventPage {
                events: Vec::new(),
                latest,
                reset: false,
            });
        }
        if after > latest || after + 1 < first_kept {
            return Ok(wire::EventPage {
                events: Vec::new(),
                latest,
                reset: true,
            });
        }
        let rows = sqlx::query(
            "SELECT payload FROM room_events WHERE room_id = $1 AND cursor > $2 ORDER BY cursor LIMIT $3",
        )
        .bind(room_id)
        .bind(after)
        .bind(limit.clamp(1, 1000))
        .fetch_all(&self.pool)
        .await?;
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
