//! The chaos run's followers of the chat: the activity log and the analytics replicas learn of
//! each post after the database has it, so they are checked after the cluster settles, by
//! polling until they agree with the rooms' final state or a deadline passes. The log must hold
//! one `message_posted` entry per stored message; each room's analytics must count every stored
//! message (deleted ones too: a message counts where it was posted).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::Value;

use super::checker::{Row, Stored};
use super::load::Http;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// How long after the cluster settles the followers have to agree with the database.
pub(crate) const CONVERGENCE: Duration = Duration::from_secs(10);

/// The log's `message_posted` entries since `since_ms`: message id → how many entries name it.
async fn posted_entries(
    http: &Http,
    admin: &str,
    since_ms: u64,
) -> anyhow::Result<HashMap<i64, usize>> {
    let mut entries = HashMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/admin/logs?kind=message_posted&since={since_ms}&limit=1000");
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={}", urlencode(cursor)));
        }
        let answer = http.call(Method::GET, &path, Some(admin), None, None).await;
        anyhow::ensure!(answer.status == 200, "the log answered {}", answer.status);
        let page = answer.body.get("entries").and_then(Value::as_array);
        for entry in page.into_iter().flatten() {
            if let Some(id) = entry
                .get("fields")
                .and_then(|f| f.get("message_id"))
                .and_then(Value::as_i64)
            {
                *entries.entry(id).or_default() += 1;
            }
        }
        match answer.body.get("next_cursor").and_then(Value::as_str) {
            Some(next) if page.is_some_and(|p| !p.is_empty()) => cursor = Some(next.to_string()),
            _ => return Ok(entries),
        }
    }
}

/// Percent-encodes a query value (cursors hold `-` and may hold other punctuation): every byte
/// but the URL's unreserved characters (RFC 3986).
fn urlencode(value: &str) -> String {
    const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    utf8_percent_encode(value, QUERY_VALUE).to_string()
}

/// Each room's `messages.total` over the last hour, as the analytics service counts it.
async fn analytics_counts(
    http: &Http,
    admin: &str,
    rooms: &BTreeMap<i64, Vec<Stored>>,
) -> anyhow::Result<BTreeMap<i64, i64>> {
    let mut counts = BTreeMap::new();
    for room in rooms.keys() {
        let path = format!("/v1/admin/rooms/{room}/analytics?window=1h");
        let answer = http.call(Method::GET, &path, Some(admin), None, None).await;
        anyhow::ensure!(
            answer.status == 200,
            "analytics of room {room} answered {}",
            answer.status
        );
        let total = answer
            .body
            .get("messages")
            .and_then(|m| m.get("total"))
            .and_then(Value::as_i64)
            .unwrap_or(-1);
        counts.insert(*room, total);
    }
    Ok(counts)
}

/// What the log is missing and holds twice, against the stored messages.
fn log_gaps(entries: &HashMap<i64, usize>, stored: &HashSet<i64>) -> (usize, usize) {
    let missing = stored.iter().filter(|id| !entries.contains_key(id)).count();
    let doubled = stored
        .iter()
        .filter(|id| entries.get(id).is_some_and(|n| *n > 1))
        .count();
    (missing, doubled)
}

/// Polls the log and the analytics until both agree with `rooms` or [`CONVERGENCE`] passes, and
/// returns their rows.
pub(crate) async fn check(
    http: &Http,
    admin: &str,
    rooms: &BTreeMap<i64, Vec<Stored>>,
    since_ms: u64,
) -> Vec<Row> {
    let stored: HashSet<i64> = rooms.values().flatten().map(|m| m.id).collect();
    let expected: BTreeMap<i64, i64> = rooms
        .iter()
        .map(|(room, messages)| (*room, messages.len() as i64))
        .collect();
    let start = Instant::now();
    let (mut log, mut analytics);
    loop {
        log = posted_entries(http, admin, since_ms)
            .await
            .map(|entries| log_gaps(&entries, &stored));
        analytics = analytics_counts(http, admin, rooms).await;
        let log_ok = matches!(log, Ok((0, 0)));
        let analytics_ok = analytics.as_ref().is_ok_and(|counts| *counts == expected);
        if (log_ok && analytics_ok) || start.elapsed() >= CONVERGENCE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let waited = format!("after {:.1} s", start.elapsed().as_secs_f64());
    let mut rows = Vec::new();
    match log {
        Ok((missing, doubled)) => {
            rows.push(Row::new(
                "activity log: stored posts with no message_posted entry",
                format!("{missing} of {} ({waited})", stored.len()),
                "0 within 10 s",
                Some(missing == 0),
            ));
            rows.push(Row::new(
                "activity log: posts logged twice",
                doubled,
                "reported",
                None,
            ));
        }
        Err(error) => rows.push(Row::new(
            "activity log: stored posts with no message_posted entry",
            format!("{error:#}"),
            "0 within 10 s",
            Some(false),
        )),
    }
    match analytics {
        Ok(counts) => {
            let off: Vec<String> = counts
                .iter()
                .filter(|(room, count)| expected.get(room) != Some(count))
                .map(|(room, count)| format!("room {room}: {count} of {}", expected[room]))
                .collect();
            rows.push(Row::new(
                "analytics: rooms whose message count differs from the database",
                format!(
                    "{} of {} ({waited}){}",
                    off.len(),
                    counts.len(),
                    off.first()
                        .map(|o| format!(" e.g. {o}"))
                        .unwrap_or_default()
                ),
                "0 within 10 s",
                Some(off.is_empty()),
            ));
        }
        Err(error) => rows.push(Row::new(
            "analytics: rooms whose message count differs from the database",
            format!("{error:#}"),
            "0 within 10 s",
            Some(false),
        )),
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_is_missing_what_it_has_no_entry_for_and_doubles_what_it_has_twice() {
        let entries = HashMap::from([(1, 1), (2, 2), (9, 1)]);
        let stored = HashSet::from([1, 2, 3]);
        assert_eq!(log_gaps(&entries, &stored), (1, 1));
    }

    #[test]
    fn a_cursor_is_percent_encoded() {
        assert_eq!(urlencode("17-a b/c"), "17-a%20b%2Fc");
    }
}
