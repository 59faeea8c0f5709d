//! What a cluster's members said about each other, read from their output: when each started,
//! and each `node up` and `node down` decision with its time and (for a down) its reason. The
//! cluster family measures formation and failure detection from these rather than from the
//! bench's own node, because "every node sees every other" is a statement about every node.
//!
//! Two dialects are read. A Switchboard member writes the runtime's structured log as JSON lines
//! (`SWITCHBOARD_LOG_FORMAT=json`): `node started`, and the `kind` = `node_up` / `node_down`
//! events of `shared/src/membership.rs`, each with the `peer` and, for a down, the `reason`. An
//! Erlang member (`erlang/sb_cluster.erl`) writes `SBC STARTED <µs>`, `SBC UP <node> <µs>` and
//! `SBC DOWN <node> <µs> <reason>` from `net_kernel:monitor_nodes/2`, and `SBC TICKTIME <s> <µs>`
//! once a change of its `net_ticktime` has taken effect. Both stamp a line with the
//! wall clock of the process that decided, which every process on the machine shares, so a time
//! said by one node is compared with the bench's own clock directly (a fault's instant, say),
//! not with when the bench got round to reading the line.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One thing a member said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Said {
    /// It is listening; a Switchboard member gives its inter-node address.
    Started { address: Option<String> },
    /// It has a link to `peer`.
    Up { peer: String },
    /// It has lost `peer`, and why (`heartbeat_timeout`, `noconnection`, ...).
    Down { peer: String, reason: String },
    /// Its `net_ticktime` (Erlang) is now this many seconds.
    Ticktime { seconds: u32 },
}

/// A line of a member's output that says something, and when it was said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) at: SystemTime,
    pub(crate) said: Said,
}

/// Reads one line of a member's output; `None` for a line that says nothing the family uses.
pub(crate) fn parse_line(line: &str) -> Option<Entry> {
    let line = line.trim();
    if let Some(rest) = line.strip_prefix("SBC ") {
        return erlang_line(rest);
    }
    if !line.starts_with('{') {
        return None;
    }
    let entry: serde_json::Value = serde_json::from_str(line).ok()?;
    let at = parse_timestamp(entry.get("timestamp")?.as_str()?)?;
    let fields = entry.get("fields")?;
    let text = |name: &str| fields.get(name).and_then(|v| v.as_str()).map(str::to_owned);
    let said = match text("kind").as_deref() {
        Some("node_up") => Said::Up {
            peer: text("peer")?,
        },
        Some("node_down") => Said::Down {
            peer: text("peer")?,
            reason: text("reason").unwrap_or_default(),
        },
        _ if text("message").as_deref() == Some("node started") => Said::Started {
            address: text("address"),
        },
        _ => return None,
    };
    Some(Entry { at, said })
}

/// `STARTED <µs>`, `UP <node@host> <µs>` or `DOWN <node@host> <µs> <reason>`. A peer is named
/// without its host, as the bench names the members.
fn erlang_line(rest: &str) -> Option<Entry> {
    let mut words = rest.split_whitespace();
    let micros = |word: Option<&str>| -> Option<SystemTime> {
        Some(UNIX_EPOCH + Duration::from_micros(word?.parse().ok()?))
    };
    let short = |node: &str| node.split('@').next().unwrap_or(node).to_owned();
    match words.next()? {
        "STARTED" => Some(Entry {
            at: micros(words.next())?,
            said: Said::Started { address: None },
        }),
        "UP" => {
            let peer = short(words.next()?);
            Some(Entry {
                at: micros(words.next())?,
                said: Said::Up { peer },
            })
        }
        "TICKTIME" => {
            let seconds = words.next()?.parse().ok()?;
            Some(Entry {
                at: micros(words.next())?,
                said: Said::Ticktime { seconds },
            })
        }
        "DOWN" => {
            let peer = short(words.next()?);
            let at = micros(words.next())?;
            let reason = words.collect::<Vec<_>>().join(" ");
            Some(Entry {
                at,
                said: Said::Down { peer, reason },
            })
        }
        _ => None,
    }
}

/// An RFC 3339 UTC time as tracing-subscriber writes it (`2025-01-01T12:34:56.123456Z`).
pub(crate) fn parse_timestamp(text: &str) -> Option<SystemTime> {
    let (date, time) = text.split_once('T')?;
    let time = time
        .strip_suffix('Z')
        .or_else(|| time.strip_suffix("+00:00"))?;
    let mut date = date.splitn(3, '-');
    let year: i64 = date.next()?.parse().ok()?;
    let month: u32 = date.next()?.parse().ok()?;
    let day: u32 = date.next()?.parse().ok()?;
    let (clock, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut clock = clock.splitn(3, ':');
    let hours: u64 = clock.next()?.parse().ok()?;
    let minutes: u64 = clock.next()?.parse().ok()?;
    let seconds: u64 = clock.next()?.parse().ok()?;
    if !fraction.bytes().all(|b| b.is_ascii_digit()) || !(1..=12).contains(&month) {
        return None;
    }
    // The fraction's first nine digits are nanoseconds, padded on the right.
    let nanos: u32 = format!("{:0<9}", &fraction[..fraction.len().min(9)])
        .parse()
        .ok()?;
    let days = u64::try_from(days_from_civil(year, month, day)).ok()?;
    let secs = days * 86_400 + hours * 3600 + minutes * 60 + seconds;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// One `node down` said by a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Down {
    pub(crate) observer: String,
    pub(crate) peer: String,
    pub(crate) at: SystemTime,
    pub(crate) reason: String,
}

/// Everything the members of one cluster have said so far, and each one's current view.
#[derive(Debug, Default)]
pub(crate) struct Journal {
    /// When each member started, and its address if it gave one.
    started: HashMap<String, (SystemTime, Option<String>)>,
    /// What each member last said of each peer: up (true) or down, and when.
    views: HashMap<String, HashMap<String, (bool, SystemTime)>>,
    /// Every `node down`, in the order read.
    downs: Vec<Down>,
    /// Each Erlang member's `net_ticktime`, once it has reported a change.
    ticktimes: HashMap<String, u32>,
}

impl Journal {
    /// Adds what `observer` said.
    pub(crate) fn record(&mut self, observer: &str, entry: Entry) {
        match entry.said {
            Said::Started { address } => {
                self.started
                    .insert(observer.to_owned(), (entry.at, address));
            }
            Said::Up { peer } => {
                self.views
                    .entry(observer.to_owned())
                    .or_default()
                    .insert(peer, (true, entry.at));
            }
            Said::Ticktime { seconds } => {
                self.ticktimes.insert(observer.to_owned(), seconds);
            }
            Said::Down { peer, reason } => {
                self.views
                    .entry(observer.to_owned())
                    .or_default()
                    .insert(peer.clone(), (false, entry.at));
                self.downs.push(Down {
                    observer: observer.to_owned(),
                    peer,
                    at: entry.at,
                    reason,
                });
            }
        }
    }

    /// When `member` started, and its address, once it has said so.
    pub(crate) fn started(&self, member: &str) -> Option<&(SystemTime, Option<String>)> {
        self.started.get(member)
    }

    /// The latest start among `members`, once every one has started.
    pub(crate) fn last_start(&self, members: &[String]) -> Option<SystemTime> {
        members
            .iter()
            .map(|m| self.started.get(m).map(|(at, _)| *at))
            .try_fold(UNIX_EPOCH, |latest, at| Some(latest.max(at?)))
    }

    /// When `members` became a full mesh: every one's last word on every other is `up`, and,
    /// with `fresh` = (member, time), the pairs that include that member were said up at or
    /// after that time (a member rejoining). The time of the last of those `up`s; `None` while
    /// the mesh is incomplete.
    pub(crate) fn mesh(
        &self,
        members: &[String],
        fresh: Option<(&str, SystemTime)>,
    ) -> Option<SystemTime> {
        let mut latest = UNIX_EPOCH;
        for observer in members {
            let view = self.views.get(observer)?;
            for peer in members.iter().filter(|p| *p != observer) {
                let &(up, at) = view.get(peer)?;
                let stale = fresh.is_some_and(|(member, since)| {
                    (member == observer || member == peer) && at < since
                });
                if !up || stale {
                    return None;
                }
                latest = latest.max(at);
            }
        }
        Some(latest)
    }

    /// Whether every one of `members` has reported its `net_ticktime` now `seconds`.
    pub(crate) fn ticktime_is(&self, members: &[String], seconds: u32) -> bool {
        members
            .iter()
            .all(|m| self.ticktimes.get(m) == Some(&seconds))
    }

    /// The pairs that keep `members` from a full mesh (see [`Journal::mesh`]), as `observer ->
    /// peer: what it last said`, the first `limit` of them and how many there are in all: to
    /// explain a mesh that did not form.
    pub(crate) fn unmeshed(
        &self,
        members: &[String],
        fresh: Option<(&str, SystemTime)>,
        limit: usize,
    ) -> (usize, Vec<String>) {
        let mut missing = Vec::new();
        let mut count = 0;
        for observer in members {
            for peer in members.iter().filter(|p| *p != observer) {
                let view = self.views.get(observer).and_then(|v| v.get(peer));
                let what = match view {
                    None => "nothing",
                    Some((false, _)) => "down",
                    Some((true, at))
                        if fresh.is_some_and(|(member, since)| {
                            (member == observer || member == peer) && *at < since
                        }) =>
                    {
                        "up, before the resume"
                    }
                    Some(_) => continue,
                };
                count += 1;
                if missing.len() < limit {
                    missing.push(format!("{observer} -> {peer}: {what}"));
                }
            }
        }
        (count, missing)
    }

    /// For each of `observers`, the first `node down` it said of `peer` at or after `since`.
    pub(crate) fn downs_of<'a>(
        &'a self,
        peer: &str,
        observers: &[String],
        since: SystemTime,
    ) -> Vec<Option<&'a Down>> {
        observers
            .iter()
            .map(|observer| {
                self.downs
                    .iter()
                    .find(|d| &d.observer == observer && d.peer == peer && d.at >= since)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
    }

    #[test]
    fn reads_rfc3339_utc() {
        assert_eq!(
            parse_timestamp("2025-01-01T00:00:00Z"),
            Some(UNIX_EPOCH + Duration::from_secs(1_735_689_600))
        );
        assert_eq!(
            parse_timestamp("2024-02-29T23:59:59.123456Z"),
            Some(UNIX_EPOCH + Duration::new(1_709_251_199, 123_456_000))
        );
        assert_eq!(
            parse_timestamp("1970-01-01T00:00:01.5+00:00"),
            Some(UNIX_EPOCH + Duration::from_millis(1500))
        );
        assert_eq!(parse_timestamp("2025-01-01 00:00:00Z"), None);
        assert_eq!(parse_timestamp("2025-13-01T00:00:00Z"), None);
        assert_eq!(parse_timestamp("2025-01-01T00:00:00.x1Z"), None);
    }

    #[test]
    fn reads_the_runtime_json_log() {
        let up = r#"{"timestamp":"2025-01-01T00:00:00.25Z","level":"INFO","fields":{"message":"node up","kind":"node_up","node":"c-001","peer":"c-000","address":"127.0.0.1:1","incarnation":3},"target":"switchboard::membership"}"#;
        assert_eq!(
            parse_line(up),
            Some(Entry {
                at: at(1_735_689_600, 250),
                said: Said::Up {
                    peer: "c-000".into()
                }
            })
        );
        let down = r#"{"timestamp":"2025-01-01T00:00:01Z","level":"WARN","fields":{"message":"node down","kind":"node_down","node":"c-001","peer":"c-002","incarnation":3,"reason":"heartbeat_timeout","last_heard_ms":812},"target":"switchboard::membership"}"#;
        assert_eq!(
            parse_line(down).map(|e| e.said),
            Some(Said::Down {
                peer: "c-002".into(),
                reason: "heartbeat_timeout".into()
            })
        );
        let started = r#"{"timestamp":"2025-01-01T00:00:00Z","level":"INFO","fields":{"message":"node started","node":"c-000","address":"127.0.0.1:4000","incarnation":7},"target":"switchboard::node"}"#;
        assert_eq!(
            parse_line(started).map(|e| e.said),
            Some(Said::Started {
                address: Some("127.0.0.1:4000".into())
            })
        );
        assert_eq!(parse_line(r#"{"fields":{"message":"node up"}}"#), None);
        assert_eq!(parse_line("LISTENING 127.0.0.1:4000"), None);
    }

    #[test]
    fn reads_the_erlang_lines() {
        assert_eq!(
            parse_line("SBC UP sbc_1_007@host 1500000"),
            Some(Entry {
                at: at(1, 500),
                said: Said::Up {
                    peer: "sbc_1_007".into()
                }
            })
        );
        assert_eq!(
            parse_line("SBC DOWN sbc_1_007@host 2000000 net_tick_timeout").map(|e| e.said),
            Some(Said::Down {
                peer: "sbc_1_007".into(),
                reason: "net_tick_timeout".into()
            })
        );
        assert_eq!(
            parse_line("SBC STARTED 3000000").map(|e| e.at),
            Some(at(3, 0))
        );
        assert_eq!(
            parse_line("SBC TICKTIME 1 4000000"),
            Some(Entry {
                at: at(4, 0),
                said: Said::Ticktime { seconds: 1 }
            })
        );
        assert_eq!(parse_line("SBC UP x@h notanumber"), None);
    }

    fn members(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    fn say(journal: &mut Journal, observer: &str, said: Said, when: SystemTime) {
        journal.record(observer, Entry { at: when, said });
    }

    fn up(peer: &str) -> Said {
        Said::Up { peer: peer.into() }
    }

    #[test]
    fn a_mesh_needs_every_pair_up_and_a_rejoin_needs_fresh_ups() {
        let all = members(&["a", "b", "c"]);
        let mut journal = Journal::default();
        for (i, name) in all.iter().enumerate() {
            say(
                &mut journal,
                name,
                Said::Started { address: None },
                at(10, i as u64),
            );
        }
        assert_eq!(journal.last_start(&all), Some(at(10, 2)));
        assert_eq!(journal.last_start(&members(&["a", "z"])), None);
        say(&mut journal, "a", up("b"), at(11, 0));
        say(&mut journal, "b", up("a"), at(11, 1));
        say(&mut journal, "a", up("c"), at(11, 2));
        say(&mut journal, "c", up("a"), at(11, 3));
        say(&mut journal, "b", up("c"), at(11, 4));
        assert_eq!(journal.mesh(&all, None), None);
        say(&mut journal, "c", up("b"), at(11, 5));
        assert_eq!(journal.mesh(&all, None), Some(at(11, 5)));
        // c hangs: a and b say it is down; after it resumes, old ups of its pairs do not count.
        let down = |journal: &mut Journal, observer: &str, when| {
            say(
                journal,
                observer,
                Said::Down {
                    peer: "c".into(),
                    reason: "heartbeat_timeout".into(),
                },
                when,
            )
        };
        down(&mut journal, "a", at(20, 0));
        down(&mut journal, "b", at(20, 5));
        assert_eq!(journal.mesh(&all, None), None);
        let seen = journal.downs_of("c", &members(&["a", "b"]), at(19, 0));
        assert_eq!(
            seen.iter().map(|d| d.map(|d| d.at)).collect::<Vec<_>>(),
            vec![Some(at(20, 0)), Some(at(20, 5))]
        );
        assert!(journal.downs_of("c", &members(&["a"]), at(21, 0))[0].is_none());
        say(&mut journal, "a", up("c"), at(30, 0));
        say(&mut journal, "b", up("c"), at(30, 1));
        let resumed = Some(("c", at(29, 0)));
        assert_eq!(journal.mesh(&all, resumed), None, "c's own view is stale");
        assert_eq!(
            journal.unmeshed(&all, resumed, 1),
            (2, vec!["c -> a: up, before the resume".to_owned()])
        );
        say(&mut journal, "c", up("a"), at(30, 2));
        say(&mut journal, "c", up("b"), at(30, 3));
        assert_eq!(journal.mesh(&all, resumed), Some(at(30, 3)));
        assert_eq!(journal.unmeshed(&all, resumed, 5), (0, vec![]));
        assert!(!journal.ticktime_is(&all, 1));
        for name in &all {
            say(&mut journal, name, Said::Ticktime { seconds: 1 }, at(40, 0));
        }
        assert!(journal.ticktime_is(&all, 1));
    }
}
