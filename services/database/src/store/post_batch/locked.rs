//! A batch in one transaction that locks its rooms first: how SQLite writes batches, and
//! PostgreSQL's fallback when guarded writes keep losing races (see [`super::guarded`]) or when
//! `SWITCHBOARD_BATCH_WRITES=locked`.
//!
//! The statements are fixed in number whatever the batch's size: look up the idempotency keys
//! and the authors; then, in the transaction, lock the rooms and read memberships, bump each
//! room's counters once, and insert the messages, the events, the posts' activity entries and
//! the keys as multi-row statements. A key another database node committed meanwhile rolls the
//! whole batch back.

use std::collections::{HashMap, HashSet};

use prost::Message;
use sqlx::Row;
use sqlx::any::AnyArguments;
use sqlx::query::Query;
use switchboard_proto::v1 as wire;

use super::{Batch, Decided};
use crate::store::logs::insert_entries;
use crate::store::messages::{PostOutcome, replayed};
use crate::store::rooms::{not_a_member, room_not_found};
use crate::store::{Backend, Store, StoreError};

/// `$first, $first+1, ...` for `count` placeholders, comma-separated.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `($1, $2), ($3, $4), ...`: `rows` tuples of `width` placeholders.
fn tuples(rows: usize, width: usize) -> String {
    (0..rows)
        .map(|row| format!("({})", placeholders(1 + row * width, width)))
        .collect::<Vec<_>>()
        .join(", ")
}

type AnyQuery<'q> = Query<'q, sqlx::Any, AnyArguments<'q>>;

impl Store {
    /// Writes `batch` in one transaction that locks its rooms first. `Err` means nothing was
    /// written.
    pub(super) async fn post_locked(&self, batch: &Batch<'_>) -> Result<Vec<Decided>, StoreError> {
        // One transaction decides and writes the whole batch: it is in line from the start.
        batch.ordered();
        let posts = batch.posts;
        let mut decided: Vec<Decided> = (0..posts.len()).map(|_| None).collect();

        // Reads that no concurrent writer can make wrong are done before the transaction, so
        // the room locks below are held for as few round trips as possible: a room's batches
        // queue behind each other on those locks. A stored key is final (a key committed after
        // this read is caught when ours is inserted); a user's name and creation time never
        // change.
        self.find_replays(batch, &mut decided).await?;
        let undecided = |decided: &[Decided]| -> Vec<usize> {
            batch.own().filter(|&i| decided[i].is_none()).collect()
        };
        let mut authors: Vec<i64> = undecided(&decided)
            .into_iter()
            .map(|i| posts[i].user_id)
            .collect();
        authors.sort_unstable();
        authors.dedup();
        let users = self.users(&authors).await?;

        let mut tx = self.pool.begin().await?;
        // Then write first: take every room's row lock (PostgreSQL) or the database's write lock
        // (SQLite) before reading memberships, as a single post does, so the memberships read
        // stay true until commit and concurrent batches queue instead of failing.
        let mut rooms: Vec<i64> = undecided(&decided)
            .into_iter()
            .map(|i| posts[i].room_id)
            .collect();
        rooms.sort_unstable();
        rooms.dedup();
        let (existing, members) = if rooms.is_empty() {
            (HashSet::new(), HashSet::new())
        } else {
            self.lock_rooms(&mut tx, &rooms, &authors).await?
        };
        for i in undecided(&decided) {
            let post = &posts[i];
            if !existing.contains(&post.room_id) {
                decided[i] = Some(Err(room_not_found()));
            } else if !members.contains(&(post.room_id, post.user_id)) {
                decided[i] = Some(Err(not_a_member()));
            }
        }

        let writes = undecided(&decided);
        if !writes.is_empty() {
            // Each room's counters move once, by its number of new messages; the batch's order
            // decides the seqs and cursors within the room.
            let mut next: HashMap<i64, (i64, i64)> = HashMap::new();
            for (room, count) in batch.per_room(&writes) {
                let row = sqlx::query(
                    "UPDATE rooms SET last_seq = last_seq + $2, last_cursor = last_cursor + $2 \
                     WHERE id = $1 RETURNING last_seq, last_cursor",
                )
                .bind(room)
                .bind(count)
                .fetch_one(&mut *tx)
                .await?;
                let last_seq: i64 = row.try_get("last_seq")?;
                let last_cursor: i64 = row.try_get("last_cursor")?;
                next.insert(room, (last_seq - count + 1, last_cursor - count + 1));
            }
            let mut placed: Vec<(usize, i64, i64)> = Vec::with_capacity(writes.len());
            for &i in &writes {
                let slot = next
                    .get_mut(&posts[i].room_id)
                    .ok_or_else(|| StoreError::rejected("internal", "room counters lost"))?;
                placed.push((i, slot.0, slot.1));
                *slot = (slot.0 + 1, slot.1 + 1);
            }

            let sql = format!(
                "INSERT INTO messages (room_id, seq, author_id, body, created_at) VALUES {} \
                 RETURNING id, room_id, seq",
                tuples(placed.len(), 5)
            );
            let mut query = sqlx::query(&sql);
            for &(i, seq, _) in &placed {
                query = query
                    .bind(posts[i].room_id)
                    .bind(seq)
                    .bind(posts[i].user_id)
                    .bind(posts[i].body.as_str())
                    .bind(batch.now);
            }
            let ids: HashMap<(i64, i64), i64> = query
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|row| {
                    Ok((
                        (row.try_get("room_id")?, row.try_get("seq")?),
                        row.try_get("id")?,
                    ))
                })
                .collect::<Result<_, sqlx::Error>>()?;

            let mut outcomes: HashMap<usize, PostOutcome> = HashMap::new();
            for &(i, seq, cursor) in &placed {
                let post = &posts[i];
                let id = *ids
                    .get(&(post.room_id, seq))
                    .ok_or_else(|| StoreError::rejected("internal", "inserted row not returned"))?;
                outcomes.insert(
                    i,
                    batch.written(i, id, seq, cursor, users.get(&post.user_id).cloned()),
                );
            }

            let sql = format!(
                "INSERT INTO room_events (room_id, cursor, payload, created_at) VALUES {}",
                tuples(placed.len(), 4)
            );
            let mut query = sqlx::query(&sql);
            for &(i, _, cursor) in &placed {
                let event = outcomes[&i].event.as_ref().map(Message::encode_to_vec);
                query = query
                    .bind(posts[i].room_id)
                    .bind(cursor)
                    .bind(event.unwrap_or_default())
                    .bind(batch.now);
            }
            query.execute(&mut *tx).await?;
            let entries: Vec<_> = placed
                .iter()
                .filter_map(|(i, _, _)| outcomes[i].activity.clone())
                .collect();
            insert_entries(&mut tx, &entries).await?;

            let keyed: Vec<usize> = writes
                .iter()
                .copied()
                .filter(|&i| !posts[i].key.is_empty())
                .collect();
            if !keyed.is_empty() {
                let sql = format!(
                    "INSERT INTO idempotency_keys (user_id, key, fingerprint, response, created_at) \
                     VALUES {} ON CONFLICT (user_id, key) DO NOTHING",
                    tuples(keyed.len(), 5)
                );
                let mut query = sqlx::query(&sql);
                for &i in &keyed {
                    query = query
                        .bind(posts[i].user_id)
                        .bind(posts[i].key.as_str())
                        .bind(batch.fingerprints[i].as_str())
                        .bind(outcomes[&i].message.encode_to_vec())
                        .bind(batch.now);
                }
                let stored = query.execute(&mut *tx).await?.rows_affected();
                if stored != keyed.len() as u64 {
                    // Another database node committed one of these keys since we looked: let
                    // each post sort itself out on its own.
                    tx.rollback().await?;
                    return Err(StoreError::rejected(
                        "batch_conflict",
                        "an idempotency key was stored concurrently",
                    ));
                }
            }
            for (i, outcome) in outcomes {
                decided[i] = Some(Ok(outcome));
            }
        }
        tx.commit().await?;
        Ok(decided)
    }
}

impl Store {
    /// Decides the posts whose key is already stored: replays, or a key reused.
    async fn find_replays(
        &self,
        batch: &Batch<'_>,
        decided: &mut [Decided],
    ) -> Result<(), StoreError> {
        let posts = batch.posts;
        let keyed: Vec<usize> = batch.own().filter(|&i| !posts[i].key.is_empty()).collect();
        if keyed.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "SELECT user_id, key, fingerprint, response FROM idempotency_keys \
             WHERE (user_id, key) IN ({})",
            tuples(keyed.len(), 2)
        );
        let mut query = sqlx::query(&sql);
        for &i in &keyed {
            query = query.bind(posts[i].user_id).bind(posts[i].key.as_str());
        }
        let mut stored: HashMap<(i64, String), (String, Vec<u8>)> = HashMap::new();
        for row in query.fetch_all(&self.pool).await? {
            stored.insert(
                (row.try_get("user_id")?, row.try_get("key")?),
                (row.try_get("fingerprint")?, row.try_get("response")?),
            );
        }
        for &i in &keyed {
            if let Some((fingerprint, response)) =
                stored.get(&(posts[i].user_id, posts[i].key.clone()))
            {
                decided[i] = Some(replayed(fingerprint, &batch.fingerprints[i], response));
            }
        }
        Ok(())
    }

    /// The users `ids`, by id.
    async fn users(&self, ids: &[i64]) -> Result<HashMap<i64, wire::User>, StoreError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let sql = format!(
            "SELECT id, username, created_at FROM users WHERE id IN ({})",
            placeholders(1, ids.len())
        );
        bind_all(sqlx::query(&sql), ids)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| crate::store::accounts::user(row).map(|user| (user.id, user)))
            .collect()
    }

    /// Locks `rooms` for the rest of `tx` and returns the ones that exist, and which of
    /// `users` are members of which of them.
    ///
    /// The lock comes first, in a statement of its own: PostgreSQL's row locks (`FOR UPDATE`), or
    /// SQLite's database write lock (a no-op update). Reading memberships in the locking
    /// statement itself would be wrong on PostgreSQL: a statement that waits for a row lock
    /// re-reads the locked row once it is free, but not the rows it joins, so a member who left
    /// meanwhile would still look like one. The next statement reads after the lock, and a leave
    /// needs the room's lock to commit.
    async fn lock_rooms(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        rooms: &[i64],
        users: &[i64],
    ) -> Result<(HashSet<i64>, HashSet<(i64, i64)>), StoreError> {
        let lock = match self.backend {
            Backend::Postgres => format!(
                "SELECT id FROM rooms WHERE id IN ({}) ORDER BY id FOR UPDATE",
                placeholders(1, rooms.len())
            ),
            Backend::Sqlite => format!(
                "UPDATE rooms SET last_seq = last_seq WHERE id IN ({})",
                placeholders(1, rooms.len())
            ),
        };
        bind_all(sqlx::query(&lock), rooms)
            .execute(&mut **tx)
            .await?;
        // `IN ()` is not SQL: with no users, ask about user 0, which never exists.
        let user_count = users.len().max(1);
        let sql = format!(
            "SELECT r.id AS room_id, m.user_id FROM rooms r \
             LEFT JOIN memberships m ON m.room_id = r.id AND m.user_id IN ({}) \
             WHERE r.id IN ({})",
            placeholders(1, user_count),
            placeholders(1 + user_count, rooms.len()),
        );
        let mut query = sqlx::query(&sql);
        if users.is_empty() {
            query = query.bind(0_i64);
        }
        for value in users.iter().chain(rooms) {
            query = query.bind(*value);
        }
        let mut existing = HashSet::new();
        let mut members = HashSet::new();
        for row in query.fetch_all(&mut **tx).await? {
            let room: i64 = row.try_get("room_id")?;
            existing.insert(room);
            if let Some(user) = row.try_get::<Option<i64>, _>("user_id")? {
                members.insert((room, user));
            }
        }
        Ok((existing, members))
    }
}

/// Binds every value of `values`, in order.
fn bind_all<'q>(mut query: AnyQuery<'q>, values: &'q [i64]) -> AnyQuery<'q> {
    for value in values {
        query = query.bind(*value);
    }
    query
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_number_rows_of_tuples() {
        assert_eq!(placeholders(3, 2), "$3, $4");
        assert_eq!(tuples(2, 2), "($1, $2), ($3, $4)");
    }
}
