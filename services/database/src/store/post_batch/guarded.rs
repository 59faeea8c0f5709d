//! A batch on PostgreSQL as one read and one guarded write (the functions of migrations
//! `0004_post_batch.sql` to `0008_post_activity.sql`), each a single autocommit statement.
//!
//! Why: a room's posts serialize on its row, which holds the room's counters. Locking the row
//! first and then reading and writing under it keeps the lock for six round trips and a commit,
//! and with 64 clients in one room that, not PostgreSQL, bounded the chat. Here the batch is
//! decided before any lock: one read returns the rooms' counters, the authors' memberships, the
//! stored keys, the authors and fresh message ids, all from one snapshot; the node works out every
//! seq, cursor and reply; then one write bumps the counters *only if they still hold the values
//! the batch expects* and inserts everything. The lock is held for that one statement and its
//! commit.
//!
//! Batches pipeline: the next batch is decided, and its write sent, while the one before it
//! writes and commits (see [`super::in_turn`] for the order). [`BatchMemory`] remembers where
//! this node's batches in flight leave each room, so the next batch expects those counters
//! rather than the ones it read. A write whose expectation is wrong (another writer got there
//! first, or the batch before it failed) writes nothing and the batch is decided again from a
//! fresh read.
//!
//! A batch whose every fact the node already knows from earlier reads (see [`Known`]) skips its
//! read: it expects the counters its node's last write left, and is decided again from a read if
//! the write finds them moved or a key already stored.
//!
//! Message ids come from a stock the node keeps, refilled by each write in its own transaction.
//! Taking them in the read made one read in two wait for a WAL flush (a logged `nextval` gives
//! the read a transaction id, so its commit flushes), queued with the writes' flushes.
//!
//! Why the guard is enough. Every change to a room's memberships, edits and deletes included,
//! bumps its `last_cursor` but not its `last_seq`, and posts bump both by the same amount. So
//! `last_cursor - last_seq` only grows, and it grows exactly when something other than a post
//! happens in the room. A batch expects counters with the same difference as the ones its read
//! returned, and its write succeeds only if the room still holds them: so nothing but posts
//! happened between the read and the write, and the memberships the read returned still hold
//! when the messages land. Seqs stay gapless because the write moves the counters by exactly the
//! messages it inserts, from exactly the values it expects.

use std::collections::{HashMap, HashSet, VecDeque};

use prost::Message;
use serde::{Deserialize, Serialize};
use switchboard_proto::v1 as wire;

use super::in_turn::{InTurn, WriteOrder};
use super::known::Known;
use super::{Batch, Decided, NewPost, Publish, publish_all};
use crate::store::messages::replayed;
use crate::store::rooms::{not_a_member, room_not_found};
use crate::store::{Store, StoreError};

/// Guarded attempts at a batch before it falls back to the locking transaction, which always
/// makes progress however contended the room is.
const ATTEMPTS: usize = 3;

/// Rooms remembered at most; past that the memory starts over (it is only a hint).
const REMEMBERED_ROOMS: usize = 10_000;

/// Message ids a node keeps in hand, fetched by its writes for the batches after them (see
/// migration `0005_post_batch_ids.sql`): two of the largest batches.
const ID_STOCK: usize = 256;

/// Batches that read first after a batch that skipped its read lost its race: another database
/// node is writing to the same rooms, so what this node remembers keeps going stale.
const READS_AFTER_A_STALE_SKIP: u32 = 16;

/// What this node's batches carry from one to the next: where the batches in flight leave each
/// room's `(last_seq, last_cursor)` and the order of their writes, behind one lock, so that a
/// batch's counters and its place in the order are taken together; the stock of message ids;
/// and what earlier reads told it.
#[derive(Debug, Default)]
pub(crate) struct BatchMemory {
    rooms: tokio::sync::Mutex<Remembered>,
    /// Fresh message ids fetched ahead, oldest first.
    ids: std::sync::Mutex<VecDeque<i64>>,
    /// What earlier reads told this node (see [`Known`]).
    known: std::sync::Mutex<Known>,
    /// Batches still to read first, after a skipped read went stale.
    reads_to_come: std::sync::atomic::AtomicU32,
}

impl BatchMemory {
    fn stock(&self) -> std::sync::MutexGuard<'_, VecDeque<i64>> {
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Up to `wanted` ids from the stock, oldest first.
    fn take_ids(&self, wanted: usize) -> Vec<i64> {
        let mut stock = self.stock();
        let taken = wanted.min(stock.len());
        stock.drain(..taken).collect()
    }

    /// Puts `ids` a batch did not use back in front of the stock, so ids are still handed out
    /// in the order they were fetched.
    fn give_back(&self, ids: &[i64]) {
        let mut stock = self.stock();
        for &id in ids.iter().rev() {
            stock.push_front(id);
        }
    }

    /// How many ids the next write should fetch to fill the stock.
    fn shortfall(&self) -> usize {
        ID_STOCK.saturating_sub(self.stock().len())
    }

    fn add_ids(&self, ids: Vec<i64>) {
        self.stock().extend(ids);
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the next batch may skip its read (see [`READS_AFTER_A_STALE_SKIP`]).
    fn may_skip_read(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.reads_to_come
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_err()
    }

    fn skipped_read_went_stale(&self) {
        self.reads_to_come.store(
            READS_AFTER_A_STALE_SKIP,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Everything `posts[own]` needs, if this node knows it without a read: each room's
    /// counters as its last write left them, each author's membership at those counters, and
    /// each member's user.
    fn known_facts(
        &self,
        remembered: &Remembered,
        posts: &[NewPost],
        own: &[usize],
    ) -> Option<Facts> {
        let known = self.known();
        let mut facts = Facts::default();
        for &i in own {
            let post = &posts[i];
            let counters = *remembered.counters.get(&post.room_id)?;
            facts.counters.insert(post.room_id, counters);
            if known.is_member(post.room_id, post.user_id, counters)? {
                facts.members.insert((post.room_id, post.user_id));
                facts
                    .authors
                    .insert(post.user_id, known.author_of(post.user_id)?.clone());
            }
        }
        Some(facts)
    }
}

/// What a batch is decided from: read, or known from earlier reads.
#[derive(Default)]
struct Facts {
    /// `(last_seq, last_cursor)` of each room that exists.
    counters: HashMap<i64, (i64, i64)>,
    /// The `(room, user)` pairs of the batch that are memberships.
    members: HashSet<(i64, i64)>,
    /// user -> key -> `(fingerprint, response as hex)` of the keys already stored.
    stored: HashMap<i64, HashMap<String, (String, String)>>,
    authors: HashMap<i64, wire::User>,
}

/// Where this node's batches leave each room's counters, and the order of their writes.
#[derive(Debug, Default)]
struct Remembered {
    /// `(last_seq, last_cursor)` of each room as the batches in flight leave it.
    counters: HashMap<i64, (i64, i64)>,
    writes: WriteOrder,
}

impl Remembered {
    /// Reserves `count` seqs and cursors in `room` for a batch whose read found the room at
    /// `read`, and returns the counters the batch's write must expect.
    ///
    /// A batch of this node still in flight leaves the room further on than `read`; its end is
    /// used when it has the same cursor-minus-seq difference as `read` (only posts in between).
    fn reserve(&mut self, room: i64, read: (i64, i64), count: i64) -> (i64, i64) {
        let expected = match self.counters.get(&room) {
            Some(&(seq, cursor)) if seq >= read.0 && cursor - seq == read.1 - read.0 => {
                (seq, cursor)
            }
            _ => read,
        };
        if self.counters.len() >= REMEMBERED_ROOMS && !self.counters.contains_key(&room) {
            self.counters.clear();
        }
        self.counters
            .insert(room, (expected.0 + count, expected.1 + count));
        expected
    }

    /// Forgets `rooms`: a write expecting their counters failed, so what follows it is unknown.
    fn forget(&mut self, rooms: impl IntoIterator<Item = i64>) {
        for room in rooms {
            self.counters.remove(&room);
        }
    }
}

/// What `post_batch_read` is asked.
#[derive(Serialize)]
struct ReadRequest {
    rooms: Vec<i64>,
    /// `(room, user)` of every post.
    members: Vec<(i64, i64)>,
    users: Vec<i64>,
    keys: Vec<(i64, String)>,
    count: usize,
}

/// What `post_batch_read` answers (tuples: its rows are JSON arrays).
#[derive(Deserialize)]
struct ReadReply {
    /// `(room, last_seq, last_cursor)` of each room that exists.
    rooms: Vec<(i64, i64, i64)>,
    /// The `(room, user)` pairs asked about that are memberships.
    members: Vec<(i64, i64)>,
    /// `(user, key, fingerprint, response as hex)` of the keys already stored.
    keys: Vec<(i64, String, String, String)>,
    /// `(id, username, created_at)` of the authors.
    users: Vec<(i64, String, i64)>,
    /// Fresh message ids, as many as asked for.
    ids: Vec<i64>,
}

/// What `post_batch_write_in_turn` answers.
#[derive(Deserialize)]
struct WriteReply {
    /// `written`, `behind` or `moved`.
    status: String,
    /// When written, fresh message ids for the batches to come.
    #[serde(default)]
    ids: Vec<i64>,
}

/// What `post_batch_write` is given.
#[derive(Serialize, Default)]
struct WriteRequest<'a> {
    rooms: Vec<RoomBump>,
    messages: Vec<MessageRow<'a>>,
    events: Vec<EventRow>,
    keys: Vec<KeyRow<'a>>,
    /// The posts' activity entries (migration `0008`).
    logs: Vec<LogRow>,
    /// How many fresh message ids to fetch for the batches after this one.
    refill: usize,
}

#[derive(Serialize)]
struct RoomBump {
    id: i64,
    seq: i64,
    cursor: i64,
    count: i64,
}

#[derive(Serialize)]
struct MessageRow<'a> {
    id: i64,
    room_id: i64,
    seq: i64,
    author_id: i64,
    body: &'a str,
    created_at: i64,
}

#[derive(Serialize)]
struct EventRow {
    room_id: i64,
    cursor: i64,
    payload: String,
    created_at: i64,
}

#[derive(Serialize)]
struct LogRow {
    id: String,
    at: i64,
    node: String,
    level: String,
    kind: String,
    message: String,
    fields: String,
}

impl From<wire::LogEntry> for LogRow {
    fn from(entry: wire::LogEntry) -> Self {
        Self {
            id: entry.id,
            at: entry.at_ms,
            node: entry.node,
            level: entry.level,
            kind: entry.kind,
            message: entry.message,
            fields: entry.fields_json,
        }
    }
}

#[derive(Serialize)]
struct KeyRow<'a> {
    user_id: i64,
    key: &'a str,
    fingerprint: &'a str,
    response: String,
    created_at: i64,
}

impl Store {
    /// Writes `batch` with guarded writes, falling back to the locking transaction when they
    /// keep losing races. `Err` means nothing was written.
    pub(super) async fn post_guarded(
        &self,
        batch: &Batch<'_>,
        publish: Publish<'_>,
    ) -> Result<Vec<Decided>, StoreError> {
        for attempt in 0..ATTEMPTS {
            // Only a first attempt may skip its read: a retry reads what changed.
            let skip_read = attempt == 0 && self.batch_memory.may_skip_read();
            if let Some(decided) = self.try_guarded(batch, skip_read, publish).await? {
                return Ok(decided);
            }
        }
        tracing::debug!(
            posts = batch.posts.len(),
            "guarded writes kept losing races; locking the rooms instead"
        );
        let decided = self.post_locked(batch).await?;
        publish_all(&decided, publish);
        Ok(decided)
    }

    /// One read (skipped when `skip_read` and everything it would tell is known), one guarded
    /// write. `None` when the write found the counters moved (or, with the read skipped, a key
    /// already stored) and wrote nothing.
    async fn try_guarded(
        &self,
        batch: &Batch<'_>,
        skip_read: bool,
        publish: Publish<'_>,
    ) -> Result<Option<Vec<Decided>>, StoreError> {
        let own: Vec<usize> = batch.own().collect();
        let mut ids = self.batch_memory.take_ids(own.len());
        match self
            .decide_and_write(batch, &own, &mut ids, skip_read, publish)
            .await
        {
            // Ids the batch did not use (refused posts, a write that lost its race) go back.
            Ok(outcome) => {
                self.batch_memory.give_back(&ids);
                Ok(outcome)
            }
            // After an error the write may or may not have happened: its ids are dropped, never
            // handed out twice.
            Err(error) => Err(error),
        }
    }

    /// [`Store::try_guarded`] with `ids` in hand; removes from `ids` the ones it wrote.
    async fn decide_and_write(
        &self,
        batch: &Batch<'_>,
        own: &[usize],
        ids: &mut Vec<i64>,
        skip_read: bool,
        publish: Publish<'_>,
    ) -> Result<Option<Vec<Decided>>, StoreError> {
        let posts = batch.posts;
        // A batch that skips its read takes its place in the write order at once: the counters
        // it expects are where the write before it leaves them.
        let mut known = None;
        if skip_read && ids.len() >= own.len() {
            let remembered = self.batch_memory.rooms.lock().await;
            if let Some(facts) = self.batch_memory.known_facts(&remembered, posts, own) {
                known = Some((remembered, facts));
            }
        }
        let (in_line, facts) = match known {
            Some((remembered, facts)) => (Some(remembered), facts),
            None => (None, self.read_facts(batch, own, ids).await?),
        };
        let read = in_line.is_none();

        let mut decided: Vec<Decided> = (0..posts.len()).map(|_| None).collect();
        let mut writes: Vec<usize> = Vec::with_capacity(own.len());
        for &i in own {
            let post = &posts[i];
            let stored = facts
                .stored
                .get(&post.user_id)
                .and_then(|keys| keys.get(&post.key));
            decided[i] = if let Some((fingerprint, response)) = stored {
                let response = hex::decode(response).map_err(malformed)?;
                Some(replayed(fingerprint, &batch.fingerprints[i], &response))
            } else if !facts.counters.contains_key(&post.room_id) {
                Some(Err(room_not_found()))
            } else if !facts.members.contains(&(post.room_id, post.user_id)) {
                Some(Err(not_a_member()))
            } else {
                writes.push(i);
                None
            };
        }
        if writes.is_empty() {
            return Ok(Some(decided));
        }
        if ids.len() < writes.len() {
            return Err(malformed("fewer message ids than posts"));
        }

        // Each room's counters move once, by its number of new messages, from what this node's
        // batches in flight will leave them at; the batch's order decides seqs within the room.
        let mut remembered = match in_line {
            Some(remembered) => remembered,
            None => self.batch_memory.rooms.lock().await,
        };
        batch.ordered();
        let mut write = WriteRequest {
            refill: self.batch_memory.shortfall(),
            ..WriteRequest::default()
        };
        let mut next: HashMap<i64, (i64, i64)> = HashMap::new();
        for (room, count) in batch.per_room(&writes) {
            let (seq, cursor) = remembered.reserve(room, facts.counters[&room], count);
            write.rooms.push(RoomBump {
                id: room,
                seq,
                cursor,
                count,
            });
            next.insert(room, (seq + 1, cursor + 1));
        }
        // The counters are reserved and the batch has its place in the write order: the next
        // batch may reserve after it while this one encodes and writes.
        let mut in_turn = remembered.writes.join();
        drop(remembered);
        let written_ids: Vec<i64> = ids.drain(..writes.len()).collect();
        for (&i, &id) in writes.iter().zip(&written_ids) {
            let post = &posts[i];
            let slot = next
                .get_mut(&post.room_id)
                .ok_or_else(|| StoreError::rejected("internal", "room counters lost"))?;
            let (seq, cursor) = *slot;
            *slot = (seq + 1, cursor + 1);
            let outcome = batch.written(
                i,
                id,
                seq,
                cursor,
                facts.authors.get(&post.user_id).cloned(),
            );
            write.messages.push(MessageRow {
                id,
                room_id: post.room_id,
                seq,
                author_id: post.user_id,
                body: &post.body,
                created_at: batch.now,
            });
            if let Some(event) = &outcome.event {
                write.events.push(EventRow {
                    room_id: post.room_id,
                    cursor,
                    payload: hex::encode(event.encode_to_vec()),
                    created_at: batch.now,
                });
            }
            if !post.key.is_empty() {
                write.keys.push(KeyRow {
                    user_id: post.user_id,
                    key: &post.key,
                    fingerprint: &batch.fingerprints[i],
                    response: hex::encode(outcome.message.encode_to_vec()),
                    created_at: batch.now,
                });
            }
            write
                .logs
                .extend(outcome.activity.clone().map(LogRow::from));
            decided[i] = Some(Ok(outcome));
        }

        let write_json = to_json(&write)?;
        let rooms = || write.rooms.iter().map(|room| room.id);
        match self.write_in_turn(&write_json, &mut in_turn).await {
            Ok(Some(ids)) => {
                self.batch_memory.add_ids(ids);
                // Events go out in commit order: the batch before this one publishes first.
                in_turn.before_finished().await;
                publish_all(&decided, publish);
                in_turn.written();
                Ok(Some(decided))
            }
            Ok(None) => {
                self.batch_memory.rooms.lock().await.forget(rooms());
                if !read {
                    self.batch_memory.skipped_read_went_stale();
                }
                unwritten(ids, written_ids);
                Ok(None)
            }
            // A key stored before this batch, which only a read would have found: the write
            // rolled back, and the next attempt reads.
            Err(error) if !read && is_unique_violation(&error) => {
                self.batch_memory.rooms.lock().await.forget(rooms());
                unwritten(ids, written_ids);
                Ok(None)
            }
            Err(error) => {
                self.batch_memory.rooms.lock().await.forget(rooms());
                Err(error.into())
            }
        }
    }

    /// Sends a batch's write once the write before it is on its way, and again if it overtook
    /// that write on the way to PostgreSQL. `Some(fresh ids)` when written; `None` when the
    /// rooms' counters moved and nothing was written.
    async fn write_in_turn(
        &self,
        write: &str,
        in_turn: &mut InTurn,
    ) -> Result<Option<Vec<i64>>, sqlx::Error> {
        in_turn.before_sent().await;
        in_turn.sent();
        for _ in 0..ATTEMPTS {
            let reply: String =
                sqlx::query_scalar("SELECT post_batch_write_in_turn($1::jsonb)::text")
                    .bind(write)
                    .fetch_one(&self.pool)
                    .await?;
            match serde_json::from_str::<WriteReply>(&reply) {
                Ok(reply) if reply.status == "written" => return Ok(Some(reply.ids)),
                // Overtook the write before it: again once that one is written, if it is.
                Ok(reply) if reply.status == "behind" => {
                    if !in_turn.before_finished().await {
                        return Ok(None);
                    }
                }
                Ok(_) => return Ok(None),
                // Whether it wrote is unknown: an error, as for a lost connection.
                Err(error) => return Err(sqlx::Error::Protocol(error.to_string())),
            }
        }
        Ok(None)
    }

    /// Reads what `posts[own]` needs to be decided, adds the fresh message ids it asked for
    /// to `ids`, and remembers what stays true (see [`Known`]).
    async fn read_facts(
        &self,
        batch: &Batch<'_>,
        own: &[usize],
        ids: &mut Vec<i64>,
    ) -> Result<Facts, StoreError> {
        let posts = batch.posts;
        let mut rooms: Vec<i64> = own.iter().map(|&i| posts[i].room_id).collect();
        rooms.sort_unstable();
        rooms.dedup();
        let mut users: Vec<i64> = own.iter().map(|&i| posts[i].user_id).collect();
        users.sort_unstable();
        users.dedup();
        let mut members: Vec<(i64, i64)> = own
            .iter()
            .map(|&i| (posts[i].room_id, posts[i].user_id))
            .collect();
        members.sort_unstable();
        members.dedup();
        let request = ReadRequest {
            rooms,
            members,
            users,
            keys: own
                .iter()
                .filter(|&&i| !posts[i].key.is_empty())
                .map(|&i| (posts[i].user_id, posts[i].key.clone()))
                .collect(),
            count: own.len().saturating_sub(ids.len()),
        };
        let read: String = sqlx::query_scalar("SELECT post_batch_read($1::jsonb)::text")
            .bind(to_json(&request)?)
            .fetch_one(&self.pool)
            .await?;
        let read: ReadReply = serde_json::from_str(&read).map_err(malformed)?;

        let counters: HashMap<i64, (i64, i64)> = read
            .rooms
            .iter()
            .map(|&(room, seq, cursor)| (room, (seq, cursor)))
            .collect();
        let mut stored: HashMap<i64, HashMap<String, (String, String)>> = HashMap::new();
        for (user, key, fingerprint, response) in read.keys {
            stored
                .entry(user)
                .or_default()
                .insert(key, (fingerprint, response));
        }
        let authors: HashMap<i64, wire::User> = read
            .users
            .into_iter()
            .map(|(id, username, created_at_ms)| {
                (
                    id,
                    wire::User {
                        id,
                        username,
                        created_at_ms,
                    },
                )
            })
            .collect();

        let members: HashSet<(i64, i64)> = read.members.iter().copied().collect();
        ids.extend(read.ids);
        let mut known = self.batch_memory.known();
        for &(room, user) in &request.members {
            if let Some(&at) = counters.get(&room) {
                known.membership(room, user, at, members.contains(&(room, user)));
            }
        }
        for author in authors.values() {
            known.author(author.clone());
        }
        drop(known);
        Ok(Facts {
            counters,
            members,
            stored,
            authors,
        })
    }
}

/// Puts the ids of a write that wrote nothing back in front of `ids`: they are still fresh.
fn unwritten(ids: &mut Vec<i64>, mut written_ids: Vec<i64>) {
    written_ids.append(ids);
    *ids = written_ids;
}

/// Whether `error` is a unique constraint refusing a row.
fn is_unique_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|error| error.is_unique_violation())
}

fn to_json(value: &impl Serialize) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(malformed)
}

/// The batch functions answered something this node cannot read (a schema from another version).
fn malformed(error: impl std::fmt::Display) -> StoreError {
    tracing::error!(%error, "unexpected reply from the post_batch functions");
    StoreError::rejected("internal", "the database answered a batch unexpectedly")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_in_flight_chain_while_only_posts_happen() {
        let mut counters = Remembered::default();
        // The first batch expects what it read; the second, read before the first committed,
        // expects where the first leaves the room.
        assert_eq!(counters.reserve(1, (10, 12), 3), (10, 12));
        assert_eq!(counters.reserve(1, (10, 12), 2), (13, 15));
        // A read showing something other than a post happened (the difference grew) starts over
        // from the read.
        assert_eq!(counters.reserve(1, (15, 18), 1), (15, 18));
        // A failed write forgets the room: the next batch expects what it read.
        counters.forget([1]);
        assert_eq!(counters.reserve(1, (16, 19), 1), (16, 19));
    }

    #[test]
    fn ids_are_handed_out_in_the_order_they_were_fetched() {
        let counters = BatchMemory::default();
        assert_eq!(counters.shortfall(), ID_STOCK);
        counters.add_ids(vec![10, 11, 12, 13]);
        assert_eq!(counters.shortfall(), ID_STOCK - 4);
        let taken = counters.take_ids(3);
        assert_eq!(taken, [10, 11, 12]);
        // A batch that used only the first id gives the rest back ahead of the stock.
        counters.give_back(&taken[1..]);
        assert_eq!(counters.take_ids(10), [11, 12, 13]);
        assert!(counters.take_ids(1).is_empty());
    }

    #[test]
    fn a_read_ahead_of_what_is_remembered_wins() {
        let mut counters = Remembered::default();
        assert_eq!(counters.reserve(7, (1, 1), 1), (1, 1));
        // Another database node posted meanwhile: the remembered end is behind the read.
        assert_eq!(counters.reserve(7, (5, 5), 1), (5, 5));
    }
}
