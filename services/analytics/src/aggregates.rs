//! The aggregates one replica keeps, and the reports computed from them. Pure state: no I/O, so
//! every rule here is unit-tested (the feed in [`crate::feed`] does the I/O).
//!
//! **What is kept.** Per-minute buckets for the last hour and per-hour buckets for the last
//! seven days, each holding, per room, the messages posted, their senders (with counts) and a
//! histogram of their current lengths; every message's creation time and current length (so an
//! edit or a delete adjusts the right bucket, and a message seen twice counts once); every
//! room's applied event cursor; the accounts registered in the last seven days; and the
//! delivery-latency histograms of [`crate::latency`]. Memory grows with the messages of the last
//! seven days (a few dozen bytes each) and the rooms and users active in each bucket.
//!
//! **Exactness.** Room events are applied strictly in cursor order: an event at or below the
//! room's cursor is a duplicate, one beyond the next is a gap the feed fills from the database's
//! event log. Applying a message's state ([`Aggregates::upsert`]) is idempotent — a message id
//! is counted once, an edit sets the length to the new text's, a deletion is final — so a
//! snapshot read from the database may overlap the events replayed after it without counting
//! anything twice.
//!
//! **Definitions.** A message counts where and when it was posted, deleted or not (a deletion
//! does not undo activity); lengths are in characters of the current text of messages not
//! deleted; percentiles are nearest-rank (the value at rank ⌈p·n/100⌉); buckets and hours of
//! the day are UTC.

use std::collections::{BTreeMap, HashMap, HashSet};

use switchboard_proto::v1 as wire;

use crate::latency::{self, LatencyStore};

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;
/// How many entries the top rooms and top posters list.
const TOP: usize = 10;

/// A report's time window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The last hour, in 60 one-minute buckets.
    Hour,
    /// The last day, in 24 one-hour buckets.
    Day,
    /// The last seven days, in 168 one-hour buckets.
    Week,
}

impl Window {
    /// Every window, shortest first.
    pub const ALL: [Window; 3] = [Window::Hour, Window::Day, Window::Week];

    /// `1h`, `24h` or `7d`.
    pub fn parse(text: &str) -> Option<Window> {
        Window::ALL.into_iter().find(|w| w.as_str() == text)
    }

    /// The window's name in requests and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Window::Hour => "1h",
            Window::Day => "24h",
            Window::Week => "7d",
        }
    }

    fn bucket_ms(self) -> i64 {
        match self {
            Window::Hour => MINUTE_MS,
            Window::Day | Window::Week => HOUR_MS,
        }
    }

    fn buckets(self) -> i64 {
        match self {
            Window::Hour => 60,
            Window::Day => 24,
            Window::Week => 168,
        }
    }

    /// Start of the window's first bucket when it is `now_ms`.
    fn start(self, now_ms: i64) -> i64 {
        floor(now_ms, self.bucket_ms()) - (self.buckets() - 1) * self.bucket_ms()
    }
}

fn floor(ms: i64, unit: i64) -> i64 {
    ms.div_euclid(unit) * unit
}

/// The oldest time any window can reach at `now_ms`: what the replica must hold.
pub(crate) fn horizon(now_ms: i64) -> i64 {
    Window::Week.start(now_ms)
}

/// The rank of the nearest-rank `p`th percentile of `n` values (1-based); `None` for no values.
pub(crate) fn nearest_rank(p: u64, n: u64) -> Option<u64> {
    (n > 0).then(|| (p * n).div_ceil(100).max(1))
}

/// What a message contributes, from an event or from a database snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MessageFacts {
    pub(crate) id: i64,
    pub(crate) room_id: i64,
    pub(crate) author_id: i64,
    pub(crate) author_name: String,
    pub(crate) created_at_ms: i64,
    /// Characters of the current text; `None` once deleted.
    pub(crate) length: Option<u32>,
}

impl From<&wire::ChatMessage> for MessageFacts {
    fn from(message: &wire::ChatMessage) -> Self {
        let author = message.author.clone().unwrap_or_default();
        Self {
            id: message.id,
            room_id: message.room_id,
            author_id: author.id,
            author_name: author.username,
            created_at_ms: message.created_at_ms,
            length: (message.deleted_at_ms == 0)
                .then(|| u32::try_from(message.body.chars().count()).unwrap_or(u32::MAX)),
        }
    }
}

impl From<&wire::AnalyticsMessage> for MessageFacts {
    fn from(message: &wire::AnalyticsMessage) -> Self {
        let author = message.author.clone().unwrap_or_default();
        Self {
            id: message.id,
            room_id: message.room_id,
            author_id: author.id,
            author_name: author.username,
            created_at_ms: message.created_at_ms,
            length: (!message.deleted).then(|| u32::try_from(message.length).unwrap_or(0)),
        }
    }
}

/// What applying one room event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// It was the room's next event.
    Applied,
    /// It was at or below the room's cursor: already applied.
    Duplicate,
    /// Events between the room's cursor `after` and it are missing.
    Gap {
        /// The room's applied cursor.
        after: i64,
    },
}

#[derive(Debug, Clone, Copy)]
struct Record {
    created_at_ms: i64,
    length: Option<u32>,
}

/// One room's share of one bucket.
#[derive(Debug, Default)]
struct RoomBucket {
    messages: i64,
    /// Messages per sender.
    senders: HashMap<i64, i64>,
    /// Messages (not deleted) per length.
    lengths: BTreeMap<u32, i64>,
}

impl RoomBucket {
    fn relength(&mut self, from: Option<u32>, to: Option<u32>) {
        if let Some(old) = from
            && let Some(count) = self.lengths.get_mut(&old)
        {
            *count -= 1;
            if *count == 0 {
                self.lengths.remove(&old);
            }
        }
        if let Some(new) = to {
            *self.lengths.entry(new).or_default() += 1;
        }
    }
}

/// Buckets by start time, each split by room.
type Buckets = BTreeMap<i64, HashMap<i64, RoomBucket>>;

/// Everything a replica knows.
#[derive(Debug, Default)]
pub(crate) struct Aggregates {
    /// Applied event cursor per room.
    cursors: HashMap<i64, i64>,
    /// Messages created since the horizon, by id.
    messages: HashMap<i64, Record>,
    minutes: Buckets,
    hours: Buckets,
    /// Registration time per account registered since the horizon.
    registered: HashMap<i64, i64>,
    /// Names of the authors seen, for the top posters.
    usernames: HashMap<i64, String>,
    pub(crate) latency: LatencyStore,
}

impl Aggregates {
    /// The room's applied event cursor (0 before its first event).
    pub(crate) fn cursor(&self, room_id: i64) -> i64 {
        self.cursors.get(&room_id).copied().unwrap_or(0)
    }

    /// Moves the room's cursor forward to `cursor` (never back), after a snapshot of the room
    /// read once its log had reached `cursor`.
    pub(crate) fn advance(&mut self, room_id: i64, cursor: i64) {
        let applied = self.cursors.entry(room_id).or_default();
        *applied = (*applied).max(cursor);
    }

    /// Applies a room event if it is the room's next one.
    pub(crate) fn apply(&mut self, event: &wire::RoomEvent, now_ms: i64) -> Step {
        let applied = self.cursor(event.room_id);
        if event.cursor <= applied {
            return Step::Duplicate;
        }
        if event.cursor > applied + 1 {
            return Step::Gap { after: applied };
        }
        self.cursors.insert(event.room_id, event.cursor);
        if let Some(message) = &event.message
            && matches!(
                event.kind.as_str(),
                "message" | "message_edited" | "message_deleted"
            )
        {
            self.upsert(&MessageFacts::from(message), now_ms);
        }
        Step::Applied
    }

    /// Brings one message to the state `facts` describe. Idempotent: a known message is never
    /// counted again, only its length follows, and a deleted one stays deleted.
    pub(crate) fn upsert(&mut self, facts: &MessageFacts, now_ms: i64) {
        if facts.created_at_ms < horizon(now_ms) {
            return;
        }
        let minute = floor(facts.created_at_ms, MINUTE_MS);
        let hour = floor(facts.created_at_ms, HOUR_MS);
        match self.messages.get_mut(&facts.id) {
            None => {
                self.messages.insert(
                    facts.id,
                    Record {
                        created_at_ms: facts.created_at_ms,
                        length: facts.length,
                    },
                );
                if !facts.author_name.is_empty() {
                    self.usernames
                        .insert(facts.author_id, facts.author_name.clone());
                }
                let minutes = (minute >= Window::Hour.start(now_ms))
                    .then(|| self.minutes.entry(minute).or_default());
                let hours = Some(self.hours.entry(hour).or_default());
                for buckets in [minutes, hours].into_iter().flatten() {
                    let bucket = buckets.entry(facts.room_id).or_default();
                    bucket.messages += 1;
                    *bucket.senders.entry(facts.author_id).or_default() += 1;
                    bucket.relength(None, facts.length);
                }
            }
            Some(record) => {
                let Some(old) = record.length else { return };
                if facts.length == Some(old) {
                    return;
                }
                record.length = facts.length;
                let minutes = self.minutes.get_mut(&minute);
                let hours = self.hours.get_mut(&hour);
                for buckets in [minutes, hours].into_iter().flatten() {
                    if let Some(bucket) = buckets.get_mut(&facts.room_id) {
                        bucket.relength(Some(old), facts.length);
                    }
                }
            }
        }
    }

    /// Records an account's registration.
    pub(crate) fn register(&mut self, user: &wire::User, now_ms: i64) {
        if user.created_at_ms >= horizon(now_ms) {
            self.registered.insert(user.id, user.created_at_ms);
        }
    }

    /// The latest registration time known, if any.
    pub(crate) fn latest_registration(&self) -> Option<i64> {
        self.registered.values().copied().max()
    }

    /// Forgets whatever no window can reach any more.
    pub(crate) fn prune(&mut self, now_ms: i64) {
        let horizon = horizon(now_ms);
        self.minutes = self.minutes.split_off(&Window::Hour.start(now_ms));
        self.hours = self.hours.split_off(&horizon);
        self.messages.retain(|_, m| m.created_at_ms >= horizon);
        self.registered.retain(|_, at| *at >= horizon);
        self.latency.prune(horizon);
    }

    /// The figures of `window` ending now, for one room or (`None`) for the whole cluster.
    pub(crate) fn report(
        &self,
        room: Option<i64>,
        window: Window,
        now_ms: i64,
    ) -> wire::AnalyticsReport {
        let width = window.bucket_ms();
        let from = window.start(now_ms);
        let until = from + window.buckets() * width;
        let buckets = match window {
            Window::Hour => &self.minutes,
            Window::Day | Window::Week => &self.hours,
        };
        let mut messages = SeriesBuilder::default();
        let mut active = SeriesBuilder::default();
        let mut new_users = SeriesBuilder::default();
        let mut posters: HashMap<i64, i64> = HashMap::new();
        let mut rooms: HashMap<i64, i64> = HashMap::new();
        let mut lengths: BTreeMap<u32, i64> = BTreeMap::new();
        let mut by_hour = [0i64; 24];
        for index in 0..window.buckets() {
            let at = from + index * width;
            let mut count = 0;
            let mut senders = HashSet::new();
            let shares = buckets.get(&at).into_iter().flatten();
            for (room_id, share) in shares.filter(|(id, _)| room.is_none_or(|r| r == **id)) {
                count += share.messages;
                *rooms.entry(*room_id).or_default() += share.messages;
                for (user, sent) in &share.senders {
                    senders.insert(*user);
                    *posters.entry(*user).or_default() += sent;
                }
                for (length, n) in &share.lengths {
                    *lengths.entry(*length).or_default() += n;
                }
            }
            by_hour[(at.rem_euclid(DAY_MS) / HOUR_MS) as usize] += count;
            messages.push(at, count);
            active.push_distinct(at, senders);
            new_users.push(at, 0);
        }
        let cluster = room.is_none();
        if cluster {
            for at in self
                .registered
                .values()
                .filter(|at| (from..until).contains(*at))
            {
                new_users.add(from, width, *at);
            }
        }
        // The first of the largest: `max_by_key` keeps the last of equals, so search backwards.
        let busiest_hour = (0..24usize)
            .rev()
            .max_by_key(|&h| by_hour[h])
            .filter(|&h| by_hour[h] > 0)
            .map(|h| h as i32);
        let measured: i64 = lengths.values().sum();
        let length_at = |p: u64| {
            let rank = nearest_rank(p, measured as u64)? as i64;
            let mut seen = 0;
            lengths
                .iter()
                .find(|(_, n)| {
                    seen += **n;
                    seen >= rank
                })
                .map(|(length, _)| i64::from(*length))
        };
        wire::AnalyticsReport {
            window: window.as_str().to_owned(),
            from_ms: from,
            to_ms: now_ms,
            bucket_ms: width,
            messages: Some(messages.finish(None)),
            active_users: Some(active.finish(Some(posters.len() as i64))),
            new_users: cluster.then(|| new_users.finish(None)),
            top_rooms: if cluster {
                top(&rooms)
                    .into_iter()
                    .map(|(room_id, count)| wire::RoomCount { room_id, count })
                    .collect()
            } else {
                Vec::new()
            },
            top_posters: top(&posters)
                .into_iter()
                .map(|(id, count)| wire::PosterCount {
                    user: Some(wire::User {
                        id,
                        username: self.usernames.get(&id).cloned().unwrap_or_default(),
                        created_at_ms: 0,
                    }),
                    count,
                })
                .collect(),
            message_length: Some(wire::LengthStats {
                count: measured,
                median: length_at(50),
                p95: length_at(95),
            }),
            messages_by_hour: by_hour.to_vec(),
            busiest_hour,
            delivery_latency: cluster.then(|| latency::stats(&self.latency.sum(from, until))),
        }
    }
}

/// The `TOP` largest counts, most first, ties by lower id.
fn top(counts: &HashMap<i64, i64>) -> Vec<(i64, i64)> {
    let mut sorted: Vec<(i64, i64)> = counts.iter().map(|(id, n)| (*id, *n)).collect();
    sorted.sort_by_key(|&(id, n)| (std::cmp::Reverse(n), id));
    sorted.truncate(TOP);
    sorted
}

/// Builds a [`wire::Series`] bucket by bucket, with its per-day roll-up.
#[derive(Debug, Default)]
struct SeriesBuilder {
    points: Vec<wire::SeriesPoint>,
    /// Per UTC day: the count, or the distinct ids for distinct figures.
    days: BTreeMap<i64, (i64, HashSet<i64>)>,
}

impl SeriesBuilder {
    fn push(&mut self, at_ms: i64, count: i64) {
        self.points.push(wire::SeriesPoint { at_ms, count });
        self.days.entry(floor(at_ms, DAY_MS)).or_default().0 += count;
    }

    fn push_distinct(&mut self, at_ms: i64, ids: HashSet<i64>) {
        self.points.push(wire::SeriesPoint {
            at_ms,
            count: ids.len() as i64,
        });
        self.days
            .entry(floor(at_ms, DAY_MS))
            .or_default()
            .1
            .extend(ids);
    }

    /// Counts one event at `at_ms` in the bucket of width `width` it falls in.
    fn add(&mut self, from: i64, width: i64, at_ms: i64) {
        let index = ((at_ms - from) / width) as usize;
        if let Some(point) = self.points.get_mut(index) {
            point.count += 1;
            self.days.entry(floor(point.at_ms, DAY_MS)).or_default().0 += 1;
        }
    }

    /// The series; `distinct` is the total of a distinct figure (which is not a sum).
    fn finish(self, distinct: Option<i64>) -> wire::Series {
        let daily = self
            .days
            .into_iter()
            .map(|(at_ms, (count, ids))| wire::SeriesPoint {
                at_ms,
                count: if distinct.is_some() {
                    ids.len() as i64
                } else {
                    count
                },
            })
            .collect();
        wire::Series {
            total: distinct.unwrap_or_else(|| self.points.iter().map(|p| p.count).sum()),
            series: self.points,
            daily,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Wednesday, 10:30 UTC.
    const NOW: i64 = 1_700_044_200_000;

    fn post(
        room_id: i64,
        cursor: i64,
        id: i64,
        author: i64,
        body: &str,
        at: i64,
    ) -> wire::RoomEvent {
        let message = wire::ChatMessage {
            id,
            room_id,
            seq: id,
            author: Some(wire::User {
                id: author,
                username: format!("user{author}"),
                created_at_ms: 0,
            }),
            body: body.into(),
            created_at_ms: at,
            ..Default::default()
        };
        wire::RoomEvent {
            room_id,
            cursor,
            kind: "message".into(),
            message: Some(message),
            user: None,
            at_ms: at,
        }
    }

    fn changed(mut event: wire::RoomEvent, cursor: i64, kind: &str, body: &str) -> wire::RoomEvent {
        event.cursor = cursor;
        event.kind = kind.into();
        let message = event.message.as_mut().unwrap();
        message.body = body.into();
        if kind == "message_deleted" {
            message.deleted_at_ms = NOW;
        }
        event
    }

    #[test]
    fn windows_parse_and_align_to_their_buckets() {
        assert_eq!(Window::parse("24h"), Some(Window::Day));
        assert_eq!(Window::parse("1d"), None);
        assert_eq!(Window::Hour.start(NOW), NOW - 59 * MINUTE_MS);
        assert_eq!(
            Window::Week.start(NOW),
            NOW - 30 * MINUTE_MS - 167 * HOUR_MS
        );
        assert_eq!(nearest_rank(50, 4), Some(2));
        assert_eq!(nearest_rank(95, 4), Some(4));
        assert_eq!(nearest_rank(50, 1), Some(1));
        assert_eq!(nearest_rank(50, 0), None);
    }

    #[test]
    fn events_apply_in_cursor_order_once() {
        let mut aggregates = Aggregates::default();
        let first = post(1, 1, 10, 7, "hello", NOW);
        assert_eq!(aggregates.apply(&first, NOW), Step::Applied);
        assert_eq!(aggregates.apply(&first, NOW), Step::Duplicate);
        assert_eq!(
            aggregates.apply(&post(1, 3, 12, 7, "later", NOW), NOW),
            Step::Gap { after: 1 }
        );
        let report = aggregates.report(None, Window::Hour, NOW);
        assert_eq!(report.messages.unwrap().total, 1);
        // A snapshot overlapping applied events counts nothing twice.
        aggregates.upsert(&MessageFacts::from(first.message.as_ref().unwrap()), NOW);
        assert_eq!(
            aggregates
                .report(None, Window::Day, NOW)
                .messages
                .unwrap()
                .total,
            1
        );
    }

    #[test]
    fn edits_follow_the_length_and_deletes_are_final() {
        let mut aggregates = Aggregates::default();
        let first = post(1, 1, 10, 7, "four", NOW);
        aggregates.apply(&first, NOW);
        aggregates.apply(&post(1, 2, 11, 8, "seven!!", NOW), NOW);
        aggregates.apply(
            &changed(first.clone(), 3, "message_edited", "ten chars!"),
            NOW,
        );
        let lengths = aggregates
            .report(Some(1), Window::Hour, NOW)
            .message_length
            .unwrap();
        assert_eq!(
            (lengths.count, lengths.median, lengths.p95),
            (2, Some(7), Some(10))
        );
        aggregates.apply(&changed(first.clone(), 4, "message_deleted", ""), NOW);
        // A stale replay of the edit cannot bring the deleted message back.
        aggregates.upsert(
            &MessageFacts::from(
                changed(first, 3, "message_edited", "x")
                    .message
                    .as_ref()
                    .unwrap(),
            ),
            NOW,
        );
        let report = aggregates.report(Some(1), Window::Day, NOW);
        let lengths = report.message_length.unwrap();
        assert_eq!((lengths.count, lengths.median), (1, Some(7)));
        assert_eq!(
            report.messages.unwrap().total,
            2,
            "a deleted message still counts"
        );
    }

    #[test]
    fn reports_count_rooms_senders_hours_and_registrations() {
        let mut aggregates = Aggregates::default();
        let earlier = NOW - 2 * HOUR_MS;
        aggregates.apply(&post(1, 1, 1, 7, "a", earlier), NOW);
        aggregates.apply(&post(1, 2, 2, 8, "bb", NOW), NOW);
        aggregates.apply(&post(2, 1, 3, 8, "ccc", NOW), NOW);
        aggregates.apply(&post(2, 2, 4, 8, "dddd", NOW - MINUTE_MS), NOW);
        aggregates.register(
            &wire::User {
                id: 7,
                username: "user7".into(),
                created_at_ms: NOW,
            },
            NOW,
        );
        aggregates.register(
            &wire::User {
                id: 8,
                username: "user8".into(),
                created_at_ms: NOW - 8 * DAY_MS,
            },
            NOW,
        );

        let hour = aggregates.report(None, Window::Hour, NOW);
        let messages = hour.messages.unwrap();
        assert_eq!(messages.total, 3);
        assert_eq!(messages.series.len(), 60);
        assert_eq!(
            messages.series[59],
            wire::SeriesPoint {
                at_ms: NOW,
                count: 2
            }
        );
        assert_eq!(messages.series[58].count, 1);
        assert_eq!(hour.active_users.unwrap().total, 1);
        assert_eq!(hour.new_users.unwrap().total, 1);

        let day = aggregates.report(None, Window::Day, NOW);
        assert_eq!(day.messages.as_ref().unwrap().total, 4);
        assert_eq!(day.active_users.as_ref().unwrap().total, 2);
        let rooms: Vec<_> = day.top_rooms.iter().map(|r| (r.room_id, r.count)).collect();
        assert_eq!(rooms, [(1, 2), (2, 2)]);
        let posters: Vec<_> = day
            .top_posters
            .iter()
            .map(|p| (p.user.as_ref().unwrap().username.as_str(), p.count))
            .collect();
        assert_eq!(posters, [("user8", 3), ("user7", 1)]);
        assert_eq!(day.busiest_hour, Some(10));
        assert_eq!(day.messages_by_hour[8], 1);
        let daily = &day.messages.as_ref().unwrap().daily;
        assert_eq!(daily.iter().map(|d| d.count).sum::<i64>(), 4);
        let lengths = day.message_length.unwrap();
        assert_eq!((lengths.median, lengths.p95), (Some(2), Some(4)));

        let room = aggregates.report(Some(2), Window::Day, NOW);
        assert_eq!(room.messages.unwrap().total, 2);
        assert!(room.top_rooms.is_empty() && room.new_users.is_none());
        assert!(room.delivery_latency.is_none());
    }

    #[test]
    fn pruning_forgets_what_no_window_reaches() {
        let mut aggregates = Aggregates::default();
        aggregates.apply(&post(1, 1, 1, 7, "old", NOW - 7 * DAY_MS - HOUR_MS), NOW);
        aggregates.apply(&post(1, 2, 2, 7, "new", NOW - 2 * HOUR_MS), NOW);
        assert_eq!(
            aggregates.messages.len(),
            1,
            "older than any window: not kept"
        );
        let later = NOW + 7 * DAY_MS;
        aggregates.prune(later);
        assert!(aggregates.messages.is_empty() && aggregates.hours.is_empty());
        assert_eq!(aggregates.cursor(1), 2, "cursors outlive the messages");
    }
}
