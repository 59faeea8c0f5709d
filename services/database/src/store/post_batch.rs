//! Posting many messages at once: the store half of group commit.
//!
//! A batch costs a fixed number of statements whatever its size, so under load the commit and
//! the round trips are shared by every post in it. Each post still gets its own answer: a
//! refused post (unknown room, not a member, key reused) is left out of the writes without
//! failing the others, and within a room seqs and cursors follow the batch's order, gapless.
//!
//! There are two ways to write a batch:
//! - [`guarded`] (PostgreSQL, the default there): one read and one write, each a single
//!   autocommit statement calling a PL/pgSQL function of migrations `0004`-`0006`. The write
//!   carries the room counters it expects and writes nothing if they moved, so the room's row
//!   lock is held for one statement and its commit, and batches of one room pipeline
//!   ([`in_turn`]).
//! - [`locked`] (SQLite; on PostgreSQL the fallback when guarded writes keep losing races, and
//!   everything with `SWITCHBOARD_BATCH_WRITES=locked`): one transaction that takes the rooms'
//!   locks first and then reads and writes under them. Portable SQL but for the lock itself.
//!
//! Why the guarded path is worth its code: the bench's `chat` family measures the same chat with
//! locked batch writes (a second database node on a second database of the same PostgreSQL) in turn
//! with it, clients posting to one room through an http node. The guarded path posted 1.40x-1.89x
//! as many messages a second at 64 clients and 1.61x-1.71x at 256 (three runs, commit `1873739`, 2
//! CPUs shared with other work: absolute rates moved by up to 1.8x between runs, the ratios far
//! less), and its p99 was lower in five of the six pairs (30-72 ms against 40-62 ms at 64, 58-167
//! ms against 86-267 ms at 256). The command: `cargo build --release -p switchboard-database -p
//! switchboard-http -p switchboard-bench && SWITCHBOARD_BENCH_POSTGRES=<url>
//! target/release/switchboard-bench chat --only 'PostgreSQL)'`; the family holds the ratio to at
//! least 1.0x.
//!
//! If anything unexpected happens (a SQL error, a key committed concurrently by another database
//! node) nothing is written and the caller posts each message on its own, so a batch never
//! changes what a post means, only what it costs.

mod guarded;
mod in_turn;
mod known;
mod locked;

pub(crate) use guarded::BatchMemory;

use std::collections::HashMap;

use switchboard_proto::v1 as wire;

use super::logs::posted_entry;
use super::messages::{PostOutcome, fingerprint, key_reused};
use super::{Backend, Store, StoreError, now_ms};
use crate::configuration::BatchWrites;

/// One post waiting in a batch.
#[derive(Debug, Clone)]
pub(crate) struct NewPost {
    pub(crate) user_id: i64,
    pub(crate) room_id: i64,
    pub(crate) body: String,
    /// The idempotency key; empty for none.
    pub(crate) key: String,
}

/// What became of one post of a batch; `None` while undecided, and for repeats (see
/// [`Batch::repeats`]), which answer as the post they repeat.
type Decided = Option<Result<PostOutcome, StoreError>>;

/// Hands a committed post's event to live clients; a batch calls it in commit order.
pub(crate) type Publish<'a> = &'a (dyn Fn(&wire::RoomEvent) + Sync);

/// Publishes the events of every post `decided` wrote.
fn publish_all(decided: &[Decided], publish: Publish<'_>) {
    for outcome in decided.iter().flatten().flatten() {
        if let Some(event) = &outcome.event {
            publish(event);
        }
    }
}

/// A batch of posts being decided.
struct Batch<'a> {
    posts: &'a [NewPost],
    /// What a retry with the same key must match, per post.
    fingerprints: Vec<String>,
    /// For a post whose (user, key) an earlier post of the batch carries, that post's index.
    repeats: Vec<Option<usize>>,
    /// The batch's `created_at`.
    now: i64,
    /// The database node writing it, named in the posts' activity entries.
    origin: &'a str,
    /// The committer's turn to gather posts, held until this batch's place in the write order
    /// is fixed (see [`Batch::ordered`]).
    turn: std::sync::Mutex<Option<Turn>>,
}

/// What a committer holds while its batch is being decided, and gives up (drops) once the
/// batch's write is next in line: another committer then gathers the next batch.
///
/// Why then and not sooner: a write costs about the same whatever its size, so the next batch
/// should take in everything that arrives while this one is read and waits for the write before
/// it. Giving the turn up as soon as a batch is taken made every other batch a handful of posts
/// that arrived in the microseconds between two gathers, and half the writes were spent on them.
pub(crate) type Turn = Box<dyn Send>;

impl<'a> Batch<'a> {
    fn new(posts: &'a [NewPost], origin: &'a str, turn: Turn) -> Self {
        let mut first_with_key: HashMap<(i64, &str), usize> = HashMap::new();
        let repeats = posts
            .iter()
            .enumerate()
            .map(|(index, post)| {
                if post.key.is_empty() {
                    return None;
                }
                let first = *first_with_key
                    .entry((post.user_id, post.key.as_str()))
                    .or_insert(index);
                (first != index).then_some(first)
            })
            .collect();
        Self {
            posts,
            fingerprints: posts
                .iter()
                .map(|post| fingerprint(post.room_id, &post.body))
                .collect(),
            repeats,
            now: now_ms(),
            origin,
            turn: std::sync::Mutex::new(Some(turn)),
        }
    }

    /// The batch's write is next in line: the committer's turn to gather passes on.
    fn ordered(&self) {
        let turn = self.turn.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(turn);
    }

    /// The posts the batch decides itself: all but the repeats.
    fn own(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.posts.len()).filter(|&i| self.repeats[i].is_none())
    }

    /// Each room the posts `writes` go to, with how many of them go there, in the batch's order.
    fn per_room(&self, writes: &[usize]) -> Vec<(i64, i64)> {
        let mut per_room: Vec<(i64, i64)> = Vec::new();
        for &i in writes {
            let room_id = self.posts[i].room_id;
            match per_room.iter_mut().find(|(room, _)| *room == room_id) {
                Some((_, count)) => *count += 1,
                None => per_room.push((room_id, 1)),
            }
        }
        per_room
    }

    /// The message and event of post `index`, written as message `id` at `seq` and `cursor`.
    fn written(
        &self,
        index: usize,
        id: i64,
        seq: i64,
        cursor: i64,
        author: Option<wire::User>,
    ) -> PostOutcome {
        let post = &self.posts[index];
        let message = wire::ChatMessage {
            id,
            room_id: post.room_id,
            seq,
            author,
            body: post.body.clone(),
            created_at_ms: self.now,
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
            at_ms: self.now,
        };
        PostOutcome {
            activity: Some(posted_entry(self.origin, &message)),
            message,
            replayed: false,
            event: Some(event),
        }
    }

    /// Every post's answer, in the batch's order: each decided post its own, and each repeat
    /// the answer of the post it repeats (which comes earlier and is never a repeat itself).
    fn answers(&self, decided: Vec<Decided>) -> Vec<Result<PostOutcome, StoreError>> {
        let mut answers: Vec<Result<PostOutcome, StoreError>> = decided
            .into_iter()
            .map(|decided| {
                decided.unwrap_or_else(|| {
                    Err(StoreError::rejected(
                        "internal",
                        "a post was left undecided",
                    ))
                })
            })
            .collect();
        for (index, first) in self.repeats.iter().enumerate() {
            let Some(first) = *first else { continue };
            answers[index] = match &answers[first] {
                Ok(outcome) if self.fingerprints[first] == self.fingerprints[index] => {
                    Ok(PostOutcome {
                        message: outcome.message.clone(),
                        replayed: true,
                        event: None,
                        activity: None,
                    })
                }
                Ok(_) => Err(key_reused()),
                Err(StoreError::Rejected { code, message }) => {
                    Err(StoreError::rejected(code, message.clone()))
                }
                Err(_) => Err(StoreError::rejected("internal", "post outcome lost")),
            };
        }
        answers
    }
}

impl Store {
    /// Posts every message of `posts` at once, each with its activity entry from database node
    /// `origin`, and hands the events of those written to `publish`, in commit order. The answers are in the order of `posts`; `Err` means nothing
    /// was written and each post should be tried on its own. `turn` is dropped once the batch's
    /// write is next in line (see [`Turn`]), or when it returns.
    pub(crate) async fn post_messages(
        &self,
        posts: &[NewPost],
        origin: &str,
        turn: Turn,
        publish: Publish<'_>,
    ) -> Result<Vec<Result<PostOutcome, StoreError>>, StoreError> {
        let batch = Batch::new(posts, origin, turn);
        let decided = match (self.backend, self.batch_writes) {
            (Backend::Postgres, BatchWrites::Guarded) => self.post_guarded(&batch, publish).await?,
            (Backend::Postgres, BatchWrites::Locked) | (Backend::Sqlite, _) => {
                let decided = self.post_locked(&batch).await?;
                publish_all(&decided, publish);
                decided
            }
        };
        Ok(batch.answers(decided))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(user_id: i64, key: &str) -> NewPost {
        NewPost {
            user_id,
            room_id: 1,
            body: "hi".into(),
            key: key.into(),
        }
    }

    #[test]
    fn a_repeat_is_a_later_post_with_the_same_user_and_key() {
        let posts = [
            post(1, "a"),
            post(2, "a"),
            post(1, "a"),
            post(1, ""),
            post(1, ""),
        ];
        let batch = Batch::new(&posts, "database-1", Box::new(()));
        assert_eq!(batch.repeats, [None, None, Some(0), None, None]);
        assert_eq!(batch.own().collect::<Vec<_>>(), [0, 1, 3, 4]);
    }
}
