//! Posting many messages in one transaction: the store half of group commit.
//!
//! A batch costs a fixed number of statements whatever its size (look up the idempotency keys and
//! the authors; then, in the transaction, lock the rooms and read memberships, bump each room's
//! counters once, insert the messages, the events and the keys as multi-row statements) and one
//! commit, so under load the commit and the
//! round trips are shared by every post in the batch. Each post still gets its own answer: a
//! refused post (unknown room, not a member, key reused) is left out of the writes without
//! failing the others. Within a room, seqs and cursors follow the batch's order, gapless.
//!
//! If anything unexpected happens (a SQL error, a key committed concurrently by another database
//! node) the whole batch is rolled back and the caller posts each message on its own, so a batch
//! never changes what a post means, only what it costs.

use std::collections::{HashMap, HashSet};

use prost::Message;
use sqlx::Row;
use sqlx::any::AnyArguments;
use sqlx::query::Query;
use switchboard_proto::v1 as wire;

use super::messages::{PostOutcome, fingerprint, key_reused, replayed};
use super::rooms::{not_a_member, room_not_found};
use super::{Backend, Store, StoreError, now_ms};

/// One post waiting in a batch.
#[derive(Debug, Clone)]
pub(crate) struct NewPost {
    pub(crate) user_id: i64,
    pub(crate) room_id: i64,
    pub(crate) body: String,
    /// The idempotency key; empty for none.
    pub(crate) key: String,
}

impl NewPost {
    /// What a retry with the same key must match.
    pub(crate) fn fingerprint(&self) -> String {
        fingerprint(self.room_id, &self.body)
    }
}

/// Where a post of the batch stands while the batch is worked out.
enum Fate {
    /// To be written (so far: checks below may still refuse it).
    Write,
    /// Answered without writing (boxed: a batch holds one per post, mostly `Write`s).
    Done(Box<Result<PostOutcome, StoreError>>),
    /// A retry of post `index` of this same batch (same user and key).
    SameAs(usize),
}

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
    /// Posts every message of `posts` in one transaction. The answers are in the order of
    /// `posts`; `Err` means nothing was written and each post should be tried on its own.
    pub(crate) async fn post_messages(
        &self,
        posts: &[NewPost],
    ) -> Result<Vec<Result<PostOutcome, StoreError>>, StoreError> {
        let now = now_ms();
        let fingerprints: Vec<String> = posts.iter().map(NewPost::fingerprint).collect();
        let mut fates: Vec<Fate> = Vec::with_capacity(posts.len());
        let mut first_with_key: HashMap<(i64, &str), usize> = HashMap::new();
        for (index, post) in posts.iter().enumerate() {
            let earlier = (!post.key.is_empty())
                .then(|| {
                    first_with_key
                        .get(&(post.user_id, post.key.as_str()))
                        .copied()
                })
                .flatten();
            fates.push(match earlier {
                Some(first) => Fate::SameAs(first),
                None => {
                    if !post.key.is_empty() {
                        first_with_key.insert((post.user_id, post.key.as_str()), index);
                    }
                    Fate::Write
                }
            });
        }

        // Reads that no concurrent writer can make wrong are done before the transaction, so
        // the room locks below are held for as few round trips as possible: a room's batches
        // queue behind each other on those locks. A stored key is final (a key committed after
        // this read is caught when ours is inserted); a user's name and creation time never
        // change.
        self.find_replays(posts, &fingerprints, &mut fates).await?;
        let mut authors: Vec<i64> = (0..posts.len())
            .filter(|&i| matches!(fates[i], Fate::Write))
            .map(|i| posts[i].user_id)
            .collect();
        authors.sort_unstable();
        authors.dedup();
        let users = self.users(&authors).await?;

        let mut tx = self.pool.begin().await?;
        // Then write first: take every room's row lock (PostgreSQL) or the database's write lock
        // (SQLite) before reading memberships, as a single post does, so the memberships read
        // stay true until commit and concurrent batches queue instead of failing.
        let mut rooms: Vec<i64> = (0..posts.len())
            .filter(|&i| matches!(fates[i], Fate::Write))
            .map(|i| posts[i].room_id)
            .collect();
        rooms.sort_unstable();
        rooms.dedup();
        let (existing, members) = if rooms.is_empty() {
            (HashSet::new(), HashSet::new())
        } else {
            self.lock_rooms(&mut tx, &rooms, &authors).await?
        };
        for (i, post) in posts.iter().enumerate() {
            if !matches!(fates[i], Fate::Write) {
                continue;
            }
            if !existing.contains(&post.room_id) {
                fates[i] = Fate::Done(Box::new(Err(room_not_found())));
            } else if !members.contains(&(post.room_id, post.user_id)) {
                fates[i] = Fate::Done(Box::new(Err(not_a_member())));
            }
        }

        let writes: Vec<usize> = (0..posts.len())
            .filter(|&i| matches!(fates[i], Fate::Write))
            .collect();
        let mut outcomes: HashMap<usize, PostOutcome> = HashMap::new();
        if !writes.is_empty() {
            // Each room's counters move once, by its number of new messages; the batch's order
            // decides the seqs and cursors within the room.
            let mut per_room: Vec<(i64, i64)> = Vec::new();
            for &i in &writes {
                match per_room
                    .iter_mut()
                    .find(|(room, _)| *room == posts[i].room_id)
                {
                    Some((_, count)) => *count += 1,
                    None => per_room.push((posts[i].room_id, 1)),
                }
            }
            let mut next: HashMap<i64, (i64, i64)> = HashMap::new();
            for (room, count) in per_room {
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
                    .bind(now);
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

            for &(i, seq, cursor) in &placed {
                let post = &posts[i];
                let id = *ids
                    .get(&(post.room_id, seq))
                    .ok_or_else(|| StoreError::rejected("internal", "inserted row not returned"))?;
                let message = wire::ChatMessage {
                    id,
                    room_id: post.room_id,
                    seq,
                    author: users.get(&post.user_id).cloned(),
                    body: post.body.clone(),
                    created_at_ms: now,
                    edited_at_ms: 0,
                    deleted_at_ms: 0,
                    deleted_by: 0,
                };
                let event = wire::RoomEvent {
                    room_id: post.room_id,
                    cursor,
                    kind: "message".into(),
                    message: Some(message.clone()),
                    user: None,
                    at_ms: now,
                };
                outcomes.insert(
                    i,
                    PostOutcome {
                        message,
                        replayed: false,
                        event: Some(event),
                    },
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
                    .bind(now);
            }
            query.execute(&mut *tx).await?;

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
                        .bind(fingerprints[i].as_str())
                        .bind(outcomes[&i].message.encode_to_vec())
                        .bind(now);
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
        }
        tx.commit().await?;

        let mut answers: Vec<Result<PostOutcome, StoreError>> = Vec::with_capacity(posts.len());
        let mut retries = Vec::new();
        for (index, fate) in fates.into_iter().enumerate() {
            answers.push(match fate {
                Fate::Write => outcomes
                    .remove(&index)
                    .ok_or_else(|| StoreError::rejected("internal", "post outcome lost")),
                Fate::Done(result) => *result,
                Fate::SameAs(first) => {
                    retries.push((index, first));
                    Err(StoreError::rejected("internal", "retry left unanswered"))
                }
            });
        }
        // A retry within the batch answers as the first post with its key did (that post comes
        // earlier and is never a retry itself).
        for (index, first) in retries {
            answers[index] = match &answers[first] {
                Ok(outcome) if fingerprints[first] == fingerprints[index] => Ok(PostOutcome {
                    message: outcome.message.clone(),
                    replayed: true,
                    event: None,
                }),
                Ok(_) => Err(key_reused()),
                Err(StoreError::Rejected { code, message }) => {
                    Err(StoreError::rejected(code, message.clone()))
                }
                Err(_) => Err(StoreError::rejected("internal", "post outcome lost")),
            };
        }
        Ok(answers)
    }
}

impl Store {
    /// Marks the posts whose key is already stored as replays (or as a key reused).
    async fn find_replays(
        &self,
        posts: &[NewPost],
        fingerprints: &[String],
        fates: &mut [Fate],
    ) -> Result<(), StoreError> {
        let keyed: Vec<usize> = (0..posts.len())
            .filter(|&i| matches!(fates[i], Fate::Write) && !posts[i].key.is_empty())
            .collect();
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
                fates[i] = Fate::Done(Box::new(replayed(fingerprint, &fingerprints[i], response)));
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
            .map(|row| super::accounts::user(row).map(|user| (user.id, user)))
            .collect()
    }

    /// Locks `rooms` for the rest of `tx` and returns the ones that exist, and which of
    /// `users` are members of which of them. PostgreSQL does both in one statement (a row lock
    /// with `FOR UPDATE`); SQLite takes its database write lock with a no-op update first.
    async fn lock_rooms(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        rooms: &[i64],
        users: &[i64],
    ) -> Result<(HashSet<i64>, HashSet<(i64, i64)>), StoreError> {
        let mut existing = HashSet::new();
        let mut members = HashSet::new();
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE OF r",
            Backend::Sqlite => {
                let sql = format!(
                    "UPDATE rooms SET last_seq = last_seq WHERE id IN ({})",
                    placeholders(1, rooms.len())
                );
                bind_all(sqlx::query(&sql), rooms)
                    .execute(&mut **tx)
                    .await?;
                ""
            }
        };
        // `IN ()` is not SQL: with no users, ask about user 0, which never exists.
        let user_count = users.len().max(1);
        let sql = format!(
            "SELECT r.id AS room_id, m.user_id FROM rooms r \
             LEFT JOIN memberships m ON m.room_id = r.id AND m.user_id IN ({}) \
             WHERE r.id IN ({}){lock}",
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
