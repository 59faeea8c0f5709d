//! The anomaly detector: sliding windows over the event streams, kept identically by every
//! reporting replica.
//!
//! It is a pure state machine fed with room events (`chat.events`) and committed log entries
//! (`log.tail`). All times come from the events themselves, never the local clock, and each
//! anomaly's id is derived from its kind, its subject and the window it fell in, so replicas that
//! saw the same events report the same anomalies, and any replica can answer. Inputs are
//! deduplicated by message and entry id, so a history replay overlapping live delivery counts
//! nothing twice.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use serde_json::json;
use sha2::{Digest, Sha256};
use switchboard_proto::v1 as wire;

use crate::settings::Thresholds;

const SECOND: i64 = 1000;
const MINUTE: i64 = 60 * SECOND;
const FLOOD_WINDOW: i64 = 10 * SECOND;
const SPAM_WINDOW: i64 = 10 * MINUTE;
const SPIKE_BASELINE_MINUTES: i64 = 30;
const LOGIN_WINDOW: i64 = 5 * MINUTE;
const FLAP_WINDOW: i64 = 10 * MINUTE;
const SURGE_WINDOW: i64 = 10 * MINUTE;
/// Anomalies are kept this long after they were last seen.
const KEEP: i64 = 24 * 60 * MINUTE;
/// How far back the history replay must reach to rebuild every window.
pub(crate) const HISTORY: i64 = (SPIKE_BASELINE_MINUTES + 1) * MINUTE;

/// The activity-log kinds the detector reads, replayed from history at start.
pub(crate) const LOGGED_KINDS: [&str; 4] =
    ["login_failed", "node_down", "report_filed", "app_failed"];

/// Severity, ordered.
pub(crate) const SEVERITIES: [&str; 3] = ["low", "medium", "high"];

/// Sliding windows and the anomalies found so far.
#[derive(Debug)]
pub(crate) struct Detector {
    thresholds: Thresholds,
    seen: Dedupe,
    posts_by_user: HashMap<i64, VecDeque<i64>>,
    bodies: HashMap<String, VecDeque<(i64, i64, i64)>>,
    room_minutes: HashMap<i64, BTreeMap<i64, usize>>,
    failed_by_subject: HashMap<String, VecDeque<i64>>,
    downs: HashMap<String, VecDeque<(i64, String)>>,
    reports_by_room: HashMap<i64, VecDeque<i64>>,
    anomalies: HashMap<String, wire::Anomaly>,
    /// The newest event time seen: the detector's notion of "now" for pruning.
    now: i64,
}

/// Ids seen recently, forgotten once older than the longest window.
#[derive(Debug, Default)]
struct Dedupe {
    ids: HashSet<String>,
    order: VecDeque<(i64, String)>,
}

impl Dedupe {
    fn first_time(&mut self, id: String, at: i64) -> bool {
        if !self.ids.insert(id.clone()) {
            return false;
        }
        self.order.push_back((at, id));
        true
    }

    fn prune(&mut self, before: i64) {
        while self.order.front().is_some_and(|(at, _)| *at < before) {
            if let Some((_, id)) = self.order.pop_front() {
                self.ids.remove(&id);
            }
        }
    }
}

fn slide(window: &mut VecDeque<i64>, now: i64, length: i64) {
    while window.front().is_some_and(|at| *at <= now - length) {
        window.pop_front();
    }
}

impl Detector {
    pub(crate) fn new(thresholds: Thresholds) -> Self {
        Self {
            thresholds,
            seen: Dedupe::default(),
            posts_by_user: HashMap::new(),
            bodies: HashMap::new(),
            room_minutes: HashMap::new(),
            failed_by_subject: HashMap::new(),
            downs: HashMap::new(),
            reports_by_room: HashMap::new(),
            anomalies: HashMap::new(),
            now: 0,
        }
    }

    /// Feeds a room event; returns anomalies it created or updated.
    pub(crate) fn room_event(&mut self, event: &wire::RoomEvent) -> Vec<wire::Anomaly> {
        let Some(message) = event.message.as_ref().filter(|_| event.kind == "message") else {
            return Vec::new();
        };
        let at = message.created_at_ms;
        if !self.seen.first_time(format!("message:{}", message.id), at) {
            return Vec::new();
        }
        self.advance(at);
        let user = message.author.as_ref().map_or(0, |a| a.id);
        let mut found = Vec::new();
        found.extend(self.flooding(user, at));
        found.extend(self.spam(&message.body, event.room_id, user, at));
        found.extend(self.spike(event.room_id, at));
        found
    }

    /// Feeds a committed log entry; returns anomalies it created or updated.
    pub(crate) fn log_entry(&mut self, entry: &wire::LogEntry) -> Vec<wire::Anomaly> {
        if !LOGGED_KINDS.contains(&entry.kind.as_str()) {
            return Vec::new();
        }
        if !self
            .seen
            .first_time(format!("log:{}", entry.id), entry.at_ms)
        {
            return Vec::new();
        }
        self.advance(entry.at_ms);
        let fields: serde_json::Value =
            serde_json::from_str(&entry.fields_json).unwrap_or_default();
        let text = |name: &str| match &fields[name] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => String::new(),
            other => other.to_string(),
        };
        match entry.kind.as_str() {
            "login_failed" => {
                let mut found = Vec::new();
                for subject in [
                    format!("username:{}", text("username")),
                    format!("address:{}", text("address")),
                ] {
                    found.extend(self.failed_login(subject, entry.at_ms));
                }
                found
            }
            "node_down" => {
                let reason = text("reason");
                // Leaving on purpose or being replaced by a restart is not an incident.
                if reason == "shutdown" || reason == "restarted" {
                    return Vec::new();
                }
                self.node_down(text("peer"), text("incarnation"), reason, entry)
            }
            "app_failed" => vec![self.app_failed(text("app"), entry, text("failure"))],
            _ => match text("room_id").parse::<i64>() {
                Ok(room) => self.report_filed(room, entry.at_ms),
                Err(_) => Vec::new(),
            },
        }
    }

    /// An application crashed past its restart intensity and stays stopped on its node.
    fn app_failed(
        &mut self,
        app: String,
        entry: &wire::LogEntry,
        failure: String,
    ) -> wire::Anomaly {
        let at = entry.at_ms;
        let node = &entry.node;
        self.record(
            "app_failed",
            format!("app:{app}@{node}"),
            at / FLAP_WINDOW,
            "high",
            format!("application {app} on {node} kept crashing and stays stopped"),
            json!({ "app": app, "node": node, "failure": failure }),
            at,
            at,
        )
    }

    fn flooding(&mut self, user: i64, at: i64) -> Option<wire::Anomaly> {
        let window = self.posts_by_user.entry(user).or_default();
        window.push_back(at);
        slide(window, at, FLOOD_WINDOW);
        let posts = window.len();
        let first = window.front().copied().unwrap_or(at);
        let threshold = self.thresholds.flood_posts;
        (posts > threshold).then(|| {
            let severity = if posts >= 2 * threshold {
                "high"
            } else {
                "medium"
            };
            self.record(
                "flooding",
                format!("user:{user}"),
                first / MINUTE,
                severity,
                format!("user {user} posted {posts} messages within 10 s"),
                json!({ "posts": posts, "window_s": 10, "threshold": threshold }),
                first,
                at,
            )
        })
    }

    fn spam(&mut self, body: &str, room: i64, user: i64, at: i64) -> Option<wire::Anomaly> {
        let normalized = body
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase();
        if normalized.is_empty() {
            return None;
        }
        let digest = hex::encode(&Sha256::digest(normalized.as_bytes())[..8]);
        let window = self.bodies.entry(digest.clone()).or_default();
        window.push_back((at, room, user));
        while window
            .front()
            .is_some_and(|(t, _, _)| *t <= at - SPAM_WINDOW)
        {
            window.pop_front();
        }
        let repeats = window.len();
        let rooms: HashSet<i64> = window.iter().map(|(_, r, _)| *r).collect();
        let users: HashSet<i64> = window.iter().map(|(_, _, u)| *u).collect();
        let first = window.front().map_or(at, |(t, _, _)| *t);
        if repeats < self.thresholds.spam_repeats || rooms.len() < self.thresholds.spam_rooms {
            return None;
        }
        let severity = if repeats >= 3 * self.thresholds.spam_repeats {
            "high"
        } else {
            "medium"
        };
        let sample: String = normalized.chars().take(80).collect();
        Some(self.record(
            "spam",
            format!("body:{digest}"),
            first / SPAM_WINDOW,
            severity,
            format!("the same message was posted {repeats} times in {} rooms within 10 min", rooms.len()),
            json!({ "repeats": repeats, "rooms": rooms.len(), "users": users.len(), "window_s": 600, "sample": sample }),
            first,
            at,
        ))
    }

    fn spike(&mut self, room: i64, at: i64) -> Option<wire::Anomaly> {
        let minute = at / MINUTE;
        let minutes = self.room_minutes.entry(room).or_default();
        *minutes.entry(minute).or_default() += 1;
        let count = minutes[&minute];
        let baseline: Vec<f64> = (minute - SPIKE_BASELINE_MINUTES..minute)
            .map(|m| minutes.get(&m).copied().unwrap_or(0) as f64)
            .collect();
        let mean = baseline.iter().sum::<f64>() / baseline.len() as f64;
        let variance =
            baseline.iter().map(|c| (c - mean).powi(2)).sum::<f64>() / baseline.len() as f64;
        // A flat baseline has no spread; one message of noise is the floor.
        let z = (count as f64 - mean) / variance.sqrt().max(1.0);
        if count < self.thresholds.spike_min || z < self.thresholds.spike_z {
            return None;
        }
        let severity = if z >= 2.0 * self.thresholds.spike_z {
            "high"
        } else {
            "medium"
        };
        Some(self.record(
            "spike",
            format!("room:{room}"),
            minute,
            severity,
            format!("room {room} had {count} messages in one minute, {z:.1} standard deviations above its baseline"),
            json!({ "count": count, "minute": minute, "baseline_mean": mean, "baseline_stddev": variance.sqrt(), "baseline_minutes": SPIKE_BASELINE_MINUTES, "z": z }),
            minute * MINUTE,
            at,
        ))
    }

    fn failed_login(&mut self, subject: String, at: i64) -> Option<wire::Anomaly> {
        let window = self.failed_by_subject.entry(subject.clone()).or_default();
        window.push_back(at);
        slide(window, at, LOGIN_WINDOW);
        let failures = window.len();
        let first = window.front().copied().unwrap_or(at);
        let threshold = self.thresholds.failed_logins;
        (failures >= threshold).then(|| {
            let severity = if failures >= 4 * threshold {
                "high"
            } else {
                "medium"
            };
            self.record(
                "failed_logins",
                subject.clone(),
                first / LOGIN_WINDOW,
                severity,
                format!("{failures} failed logins for {subject} within 5 min"),
                json!({ "failures": failures, "window_s": 300, "threshold": threshold }),
                first,
                at,
            )
        })
    }

    fn node_down(
        &mut self,
        peer: String,
        incarnation: String,
        reason: String,
        entry: &wire::LogEntry,
    ) -> Vec<wire::Anomaly> {
        let at = entry.at_ms;
        let subject = format!("node:{peer}");
        let id = anomaly_id("node_down", &subject, &incarnation);
        // Every member that noticed reports the same down; count observers, once per node.
        let observers = self
            .anomalies
            .get(&id)
            .and_then(|a| serde_json::from_str::<serde_json::Value>(&a.evidence_json).ok())
            .and_then(|e| e["observers"].as_array().cloned())
            .unwrap_or_default();
        let mut observers: Vec<String> = observers
            .iter()
            .filter_map(|o| o.as_str().map(str::to_owned))
            .collect();
        let first_report = observers.is_empty();
        if !observers.contains(&entry.node) {
            observers.push(entry.node.clone());
            observers.sort();
        }
        let first = self.anomalies.get(&id).map_or(at, |a| a.first_seen_ms);
        let mut found = vec![self.record_with_id(
            id,
            "node_down",
            subject.clone(),
            "high",
            format!("node {peer} went down ({reason})"),
            json!({ "reason": reason, "incarnation": incarnation, "observers": observers }),
            first,
            at,
        )];
        if first_report {
            let downs = self.downs.entry(peer.clone()).or_default();
            downs.push_back((at, incarnation));
            while downs.front().is_some_and(|(t, _)| *t <= at - FLAP_WINDOW) {
                downs.pop_front();
            }
            let count = downs.len();
            let first_down = downs.front().map_or(at, |(t, _)| *t);
            if count >= self.thresholds.flap_downs {
                found.push(self.record(
                    "node_flapping",
                    subject,
                    first_down / FLAP_WINDOW,
                    "high",
                    format!("node {peer} went down {count} times within 10 min"),
                    json!({ "downs": count, "window_s": 600, "threshold": self.thresholds.flap_downs }),
                    first_down,
                    at,
                ));
            }
        }
        found
    }

    fn report_filed(&mut self, room: i64, at: i64) -> Vec<wire::Anomaly> {
        let window = self.reports_by_room.entry(room).or_default();
        window.push_back(at);
        slide(window, at, SURGE_WINDOW);
        let reports = window.len();
        let first = window.front().copied().unwrap_or(at);
        if reports < self.thresholds.report_surge {
            return Vec::new();
        }
        vec![self.record(
            "report_surge",
            format!("room:{room}"),
            first / SURGE_WINDOW,
            if reports >= 3 * self.thresholds.report_surge { "high" } else { "medium" },
            format!("{reports} content reports on room {room} within 10 min"),
            json!({ "reports": reports, "window_s": 600, "threshold": self.thresholds.report_surge }),
            first,
            at,
        )]
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "each field of an anomaly, named at the call site"
    )]
    fn record(
        &mut self,
        kind: &str,
        subject: String,
        bucket: i64,
        severity: &str,
        summary: String,
        evidence: serde_json::Value,
        first: i64,
        last: i64,
    ) -> wire::Anomaly {
        let id = anomaly_id(kind, &subject, &bucket.to_string());
        let first = self
            .anomalies
            .get(&id)
            .map_or(first, |a| a.first_seen_ms.min(first));
        self.record_with_id(id, kind, subject, severity, summary, evidence, first, last)
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "each field of an anomaly, named at the call site"
    )]
    fn record_with_id(
        &mut self,
        id: String,
        kind: &str,
        subject: String,
        severity: &str,
        summary: String,
        evidence: serde_json::Value,
        first: i64,
        last: i64,
    ) -> wire::Anomaly {
        let previous = self.anomalies.get(&id);
        // Severity only rises within one anomaly.
        let severity = match previous {
            Some(p) if rank(&p.severity) > rank(severity) => p.severity.clone(),
            _ => severity.to_owned(),
        };
        let anomaly = wire::Anomaly {
            id: id.clone(),
            kind: kind.to_owned(),
            severity,
            subject,
            summary,
            evidence_json: evidence.to_string(),
            first_seen_ms: first,
            last_seen_ms: previous.map_or(last, |p| p.last_seen_ms.max(last)),
        };
        self.anomalies.insert(id, anomaly.clone());
        anomaly
    }

    /// Moves "now" forward and forgets what every window has left behind.
    fn advance(&mut self, at: i64) {
        if at <= self.now {
            return;
        }
        self.now = at;
        self.seen.prune(at - HISTORY);
        let keep_from = at - KEEP;
        self.anomalies.retain(|_, a| a.last_seen_ms >= keep_from);
        let oldest_minute = at / MINUTE - SPIKE_BASELINE_MINUTES - 1;
        self.room_minutes.retain(|_, minutes| {
            minutes.retain(|m, _| *m >= oldest_minute);
            !minutes.is_empty()
        });
        self.posts_by_user
            .retain(|_, w| w.back().is_some_and(|t| *t > at - FLOOD_WINDOW));
        self.bodies
            .retain(|_, w| w.back().is_some_and(|(t, _, _)| *t > at - SPAM_WINDOW));
        self.failed_by_subject
            .retain(|_, w| w.back().is_some_and(|t| *t > at - LOGIN_WINDOW));
        self.downs
            .retain(|_, w| w.back().is_some_and(|(t, _)| *t > at - FLAP_WINDOW));
        self.reports_by_room
            .retain(|_, w| w.back().is_some_and(|t| *t > at - SURGE_WINDOW));
    }

    /// Anomalies last seen at or after `since`, at `severity` or worse, most recent first.
    pub(crate) fn list(&self, since: i64, severity: &str) -> Vec<wire::Anomaly> {
        let floor = if severity.is_empty() {
            0
        } else {
            rank(severity)
        };
        let mut found: Vec<wire::Anomaly> = self
            .anomalies
            .values()
            .filter(|a| a.last_seen_ms >= since && rank(&a.severity) >= floor)
            .cloned()
            .collect();
        found.sort_by(|a, b| b.last_seen_ms.cmp(&a.last_seen_ms).then(a.id.cmp(&b.id)));
        found
    }
}

/// The position of a severity in [`SEVERITIES`].
pub(crate) fn rank(severity: &str) -> usize {
    SEVERITIES.iter().position(|s| *s == severity).unwrap_or(0)
}

fn anomaly_id(kind: &str, subject: &str, bucket: &str) -> String {
    let digest = Sha256::digest(format!("{kind}\n{subject}\n{bucket}").as_bytes());
    format!("{kind}-{}", hex::encode(&digest[..8]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: i64, room: i64, user: i64, body: &str, at: i64) -> wire::RoomEvent {
        wire::RoomEvent {
            room_id: room,
            cursor: id,
            kind: "message".into(),
            message: Some(wire::ChatMessage {
                id,
                room_id: room,
                seq: id,
                author: Some(wire::User {
                    id: user,
                    username: format!("u{user}"),
                    created_at_ms: 0,
                }),
                body: body.into(),
                created_at_ms: at,
                ..Default::default()
            }),
            user: None,
            at_ms: at,
        }
    }

    fn entry(
        id: &str,
        kind: &str,
        node: &str,
        at: i64,
        fields: serde_json::Value,
    ) -> wire::LogEntry {
        wire::LogEntry {
            id: id.into(),
            at_ms: at,
            node: node.into(),
            level: "INFO".into(),
            kind: kind.into(),
            message: String::new(),
            fields_json: fields.to_string(),
        }
    }

    const T0: i64 = 1_700_000_000_000;

    #[test]
    fn ordinary_traffic_is_not_an_anomaly() {
        let mut detector = Detector::new(Thresholds::default());
        let mut id = 0;
        // Five users chatting in three rooms, a message every few seconds, for an hour.
        for second in (0..3600).step_by(3) {
            id += 1;
            let user = id % 5;
            let room = id % 3;
            detector.room_event(&message(
                id,
                room,
                user,
                &format!("message number {id}"),
                T0 + second * SECOND,
            ));
        }
        detector.log_entry(&entry(
            "a",
            "login_failed",
            "http",
            T0,
            json!({ "username": "bob", "address": "10.0.0.1" }),
        ));
        assert!(
            detector.list(0, "").is_empty(),
            "{:?}",
            detector.list(0, "")
        );
    }

    #[test]
    fn flooding_spam_and_spikes_are_found() {
        let mut detector = Detector::new(Thresholds::default());
        for i in 0..25 {
            detector.room_event(&message(i, 1, 7, &format!("flood {i}"), T0 + i * 100));
        }
        let kinds: Vec<String> = detector
            .list(0, "")
            .iter()
            .map(|a| a.kind.clone())
            .collect();
        assert!(kinds.contains(&"flooding".to_owned()), "{kinds:?}");
        let mut spam = Detector::new(Thresholds::default());
        for i in 0..6 {
            spam.room_event(&message(
                100 + i,
                i % 3,
                10 + i,
                "BUY   cheap watches",
                T0 + i * 20 * SECOND,
            ));
        }
        let found = spam.list(0, "");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].kind, "spam");
        let evidence: serde_json::Value = serde_json::from_str(&found[0].evidence_json).unwrap();
        assert_eq!(
            (evidence["repeats"].as_u64(), evidence["rooms"].as_u64()),
            (Some(6), Some(3))
        );
        let mut spike = Detector::new(Thresholds::default());
        let mut id = 1000;
        for minute in 0..30 {
            id += 1;
            spike.room_event(&message(
                id,
                5,
                id,
                &format!("quiet {id}"),
                T0 + minute * MINUTE,
            ));
        }
        for i in 0..40 {
            id += 1;
            // Forty different users: a spike, not a flood.
            spike.room_event(&message(
                id,
                5,
                id,
                &format!("busy {i}"),
                T0 + 30 * MINUTE + i * 500,
            ));
        }
        let spikes: Vec<_> = spike
            .list(0, "")
            .into_iter()
            .filter(|a| a.kind == "spike")
            .collect();
        assert_eq!(spikes.len(), 1, "{spikes:?}");
        assert_eq!(spikes[0].subject, "room:5");
    }

    #[test]
    fn failed_logins_nodes_and_report_surges_are_found_once_per_incident() {
        let mut detector = Detector::new(Thresholds::default());
        for i in 0..6 {
            detector.log_entry(&entry(
                &format!("l{i}"),
                "login_failed",
                "http",
                T0 + i * SECOND,
                json!({ "username": "root", "address": "10.1.1.1" }),
            ));
        }
        // Duplicate delivery of an entry changes nothing.
        detector.log_entry(&entry(
            "l0",
            "login_failed",
            "http",
            T0,
            json!({ "username": "root", "address": "10.1.1.1" }),
        ));
        let failed: Vec<_> = detector
            .list(0, "")
            .into_iter()
            .filter(|a| a.kind == "failed_logins")
            .collect();
        assert_eq!(
            failed.len(),
            2,
            "one per username and one per address: {failed:?}"
        );
        assert!(
            failed
                .iter()
                .all(|a| a.evidence_json.contains("\"failures\":6"))
        );
        // Three members notice the same node going down: one anomaly, three observers.
        for (i, observer) in ["a", "b", "c"].iter().enumerate() {
            detector.log_entry(&entry(
                &format!("d{i}"),
                "node_down",
                observer,
                T0,
                json!({ "peer": "db@x", "incarnation": 42, "reason": "noconnection" }),
            ));
        }
        detector.log_entry(&entry(
            "s",
            "node_down",
            "a",
            T0,
            json!({ "peer": "http@y", "incarnation": 1, "reason": "shutdown" }),
        ));
        let downs: Vec<_> = detector
            .list(0, "")
            .into_iter()
            .filter(|a| a.kind == "node_down")
            .collect();
        assert_eq!(downs.len(), 1);
        assert!(
            downs[0]
                .evidence_json
                .contains("\"observers\":[\"a\",\"b\",\"c\"]")
        );
        for i in 0..2 {
            detector.log_entry(&entry(
                &format!("f{i}"),
                "node_down",
                "a",
                T0 + (i + 1) * MINUTE,
                json!({ "peer": "db@x", "incarnation": 43 + i, "reason": "heartbeat_timeout" }),
            ));
        }
        assert!(
            detector
                .list(0, "")
                .iter()
                .any(|a| a.kind == "node_flapping")
        );
        for i in 0..3 {
            detector.log_entry(&entry(
                &format!("r{i}"),
                "report_filed",
                "reporting",
                T0 + i * SECOND,
                json!({ "room_id": 9 }),
            ));
        }
        assert!(
            detector
                .list(0, "high")
                .iter()
                .all(|a| a.severity == "high")
        );
        assert!(
            detector
                .list(0, "")
                .iter()
                .any(|a| a.kind == "report_surge" && a.subject == "room:9")
        );
    }

    #[test]
    fn two_replicas_fed_the_same_events_agree() {
        let events: Vec<_> = (0..30)
            .map(|i| message(i, 1, 3, "same", T0 + i * 200))
            .collect();
        let mut a = Detector::new(Thresholds::default());
        let mut b = Detector::new(Thresholds::default());
        for event in &events {
            a.room_event(event);
        }
        // b replays history that overlaps what live delivery then brings again.
        for event in events[..20].iter().chain(events.iter()) {
            b.room_event(event);
        }
        let ids = |d: &Detector| d.list(0, "").into_iter().map(|x| x.id).collect::<Vec<_>>();
        assert_eq!(ids(&a), ids(&b));
    }
}
