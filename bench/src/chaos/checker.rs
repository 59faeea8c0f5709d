//! The chaos run's checker: reads the history and the rooms' final state (every message, listed
//! through the API) and decides each floor: no acknowledged post lost, no key stored twice,
//! gapless seqs, every SSE client saw its room's posts exactly once and in order across
//! reconnects, edits and deletes applied as last acknowledged, no keyed post finally failed;
//! and reports errors by kind, `reset` events and the longest unavailability per fault kind.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

/// One row of the report: what, the value, the floor and whether it holds (`None`: not a floor).
pub(crate) struct Row {
    pub(crate) check: String,
    pub(crate) value: String,
    pub(crate) floor: String,
    pub(crate) pass: Option<bool>,
}

impl Row {
    pub(crate) fn new(check: &str, value: impl ToString, floor: &str, pass: Option<bool>) -> Row {
        Row {
            check: check.to_string(),
            value: value.to_string(),
            floor: floor.to_string(),
            pass,
        }
    }
}

/// A message in the final state.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub(crate) id: i64,
    pub(crate) seq: i64,
    pub(crate) body: String,
    pub(crate) deleted: bool,
}

fn str_of<'a>(record: &'a Value, field: &str) -> &'a str {
    record.get(field).and_then(Value::as_str).unwrap_or("")
}

fn int_of(record: &Value, field: &str) -> Option<i64> {
    record.get(field).and_then(Value::as_i64)
}

/// Checks `history` against `rooms` (room id → its messages, oldest first).
pub(crate) fn check(history: &[Value], rooms: &BTreeMap<i64, Vec<Stored>>) -> Vec<Row> {
    let mut rows = Vec::new();
    let by_id: HashMap<i64, &Stored> = rooms.values().flatten().map(|m| (m.id, m)).collect();

    // Posts: the acknowledged ones, and how each key's tries ended.
    let mut acked: HashMap<String, i64> = HashMap::new();
    let mut last_status: HashMap<String, u64> = HashMap::new();
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    for r in history {
        let op = str_of(r, "op");
        let status = r.get("status").and_then(Value::as_u64);
        if let Some(status) = status
            && !(200..300).contains(&status)
        {
            *errors.entry(format!("{op} {status}")).or_default() += 1;
        }
        if op == "post" {
            let key = str_of(r, "key").to_string();
            if status == Some(201)
                && let Some(id) = int_of(r, "id")
            {
                acked.insert(key.clone(), id);
            }
            last_status.insert(key, status.unwrap_or(0));
        }
    }
    let lost = acked.values().filter(|id| !by_id.contains_key(id)).count();
    rows.push(Row::new(
        "acknowledged posts lost",
        format!("{lost} of {}", acked.len()),
        "0",
        Some(lost == 0),
    ));
    let failed = last_status
        .values()
        .filter(|s| !super::load::retriable(**s as u16) && **s != 201)
        .count();
    let unacked = last_status
        .values()
        .filter(|s| super::load::retriable(**s as u16))
        .count();
    rows.push(Row::new(
        "keyed posts finally failed",
        format!("{failed} ({unacked} still retrying at the end)"),
        "0",
        Some(failed == 0),
    ));

    // A key stored twice: posts' bodies are their keys (an edit's body names its writer, not a key).
    let mut per_key: HashMap<&str, usize> = HashMap::new();
    for m in rooms.values().flatten() {
        *per_key.entry(m.body.as_str()).or_default() += 1;
    }
    let twice = acked
        .keys()
        .filter(|k| per_key.get(k.as_str()).copied().unwrap_or(0) > 1)
        .count();
    rows.push(Row::new("posts stored twice", twice, "0", Some(twice == 0)));

    // Gapless seqs.
    let mut gappy = 0;
    for messages in rooms.values() {
        if messages
            .iter()
            .enumerate()
            .any(|(i, m)| m.seq != messages[0].seq + i as i64)
        {
            gappy += 1;
        }
    }
    rows.push(Row::new(
        "rooms with a seq gap or repeat",
        format!("{gappy} of {}", rooms.len()),
        "0",
        Some(gappy == 0),
    ));

    // Edits and deletes: the last acknowledged operation on each message decides its final state.
    let mut last_op: HashMap<i64, (String, String)> = HashMap::new();
    for r in history {
        let op = str_of(r, "op");
        if (op == "edit" || op == "delete")
            && r.get("status")
                .and_then(Value::as_u64)
                .is_some_and(|s| (200..300).contains(&s))
            && let Some(target) = int_of(r, "target")
        {
            let prior = last_op.get(&target).map(|(o, _)| o.as_str());
            // A delete is final: a later edit of a tombstone can't undo it.
            if prior != Some("delete") {
                last_op.insert(target, (op.to_string(), str_of(r, "body").to_string()));
            }
        }
    }
    let wrong = last_op
        .iter()
        .filter(|(id, (op, body))| match by_id.get(id) {
            None => true,
            Some(m) if op == "delete" => !m.deleted,
            Some(m) => m.deleted || m.body != *body,
        })
        .count();
    rows.push(Row::new(
        "edits/deletes not applied as last acknowledged",
        format!("{wrong} of {}", last_op.len()),
        "0",
        Some(wrong == 0),
    ));

    // SSE: per client, posts' seqs first seen contiguous and increasing, no cursor twice.
    let mut clients: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for r in history {
        if str_of(r, "op") == "sse_event" {
            clients.entry(str_of(r, "client")).or_default().push(r);
        }
    }
    let (mut bad_clients, mut resets, mut events) = (0usize, 0usize, 0usize);
    let mut bad_examples = Vec::new();
    // Each client lingers after the load stops, so it must have reached its room's last seq.
    let room_last: HashMap<i64, i64> = rooms
        .iter()
        .filter_map(|(room, messages)| Some((*room, messages.last()?.seq)))
        .collect();
    let mut behind = Vec::new();
    for (client, evs) in &clients {
        let mut last_cursor: Option<i64> = None;
        let mut last_seq: Option<i64> = None;
        let mut highest_seq: Option<i64> = None;
        let mut ok = true;
        for e in evs {
            let kind = str_of(e, "event");
            if kind == "reset" {
                resets += 1;
                last_seq = None;
                continue;
            }
            events += 1;
            let cursor = e
                .get("cursor")
                .and_then(Value::as_str)
                .and_then(|c| c.parse::<i64>().ok());
            if let (Some(c), Some(l)) = (cursor, last_cursor)
                && c <= l
            {
                ok = false;
            }
            if cursor.is_some() {
                last_cursor = cursor;
            }
            let is_post =
                !(kind.contains("edit") || kind.contains("delet") || kind.contains("updat"));
            if is_post && let Some(seq) = int_of(e, "seq") {
                if let Some(l) = last_seq
                    && seq != l + 1
                {
                    ok = false;
                }
                last_seq = Some(seq);
                highest_seq = highest_seq.max(Some(seq));
            }
        }
        let room = evs.first().and_then(|e| int_of(e, "room"));
        if let Some(last) = room.and_then(|room| room_last.get(&room))
            && highest_seq < Some(*last)
        {
            behind.push(*client);
        }
        if !ok {
            bad_clients += 1;
            if bad_examples.len() < 3 {
                bad_examples.push(*client);
            }
        }
    }
    rows.push(Row::new(
        "SSE clients missing, repeating or reordering an event",
        format!(
            "{bad_clients} of {} ({events} events){}",
            clients.len(),
            if bad_examples.is_empty() {
                String::new()
            } else {
                format!(" e.g. {}", bad_examples.join(","))
            }
        ),
        "0",
        Some(bad_clients == 0 && !clients.is_empty()),
    ));
    // A client that never received an event is behind too.
    let mut sse_clients: std::collections::HashSet<&str> = clients.keys().copied().collect();
    for r in history {
        let client = str_of(r, "client");
        if str_of(r, "op") == "sse_end"
            && !clients.contains_key(client)
            && int_of(r, "room").is_some_and(|room| room_last.contains_key(&room))
        {
            behind.push(client);
        }
        if str_of(r, "op") == "sse_end" {
            sse_clients.insert(client);
        }
    }
    rows.push(Row::new(
        "SSE clients short of their room's last message",
        format!(
            "{} of {}{}",
            behind.len(),
            sse_clients.len(),
            if behind.is_empty() {
                String::new()
            } else {
                format!(" e.g. {}", behind[..behind.len().min(3)].join(","))
            }
        ),
        "0",
        Some(behind.is_empty()),
    ));
    rows.push(Row::new("SSE reset events", resets, "reported", None));
    let reconnects = history
        .iter()
        .filter(|r| str_of(r, "op") == "sse_connect" && r.get("last").is_some_and(|l| !l.is_null()))
        .count();
    rows.push(Row::new(
        "SSE resumes with Last-Event-ID",
        reconnects,
        "reported",
        None,
    ));

    for (kind, count) in &errors {
        rows.push(Row::new(
            &format!("client-visible error: {kind}"),
            count,
            "reported",
            None,
        ));
    }

    // Longest API unavailability per fault kind: the longest gap between successful requests
    // that overlaps a fault of that kind (from its start to its heal).
    let mut ok_times: Vec<u64> = history
        .iter()
        .filter(|r| {
            let op = str_of(r, "op");
            op != "sse_event"
                && r.get("status")
                    .and_then(Value::as_u64)
                    .is_some_and(|s| (200..300).contains(&s))
        })
        .filter_map(|r| r.get("t").and_then(Value::as_u64))
        .collect();
    ok_times.sort_unstable();
    let mut starts: HashMap<(String, String), u64> = HashMap::new();
    let mut longest: BTreeMap<String, u64> = BTreeMap::new();
    for r in history {
        let op = str_of(r, "op");
        let key = (
            str_of(r, "kind").to_string(),
            str_of(r, "instance").to_string(),
        );
        let t = r.get("t").and_then(Value::as_u64).unwrap_or(0);
        if op == "fault_start" {
            starts.insert(key, t);
        } else if op == "fault_end"
            && let Some(start) = starts.remove(&key)
        {
            let gap = ok_times
                .windows(2)
                .filter(|w| w[1] >= start && w[0] <= t)
                .map(|w| w[1] - w[0])
                .max()
                .unwrap_or(0);
            let entry = longest.entry(key.0).or_default();
            *entry = (*entry).max(gap);
        }
    }
    for (kind, gap) in &longest {
        rows.push(Row::new(
            &format!("longest unavailability: {kind}"),
            format!("{:.1} s", *gap as f64 / 1000.0),
            "reported",
            None,
        ));
    }
    rows
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn stored(id: i64, seq: i64, body: &str) -> Stored {
        Stored {
            id,
            seq,
            body: body.into(),
            deleted: false,
        }
    }

    #[test]
    fn a_lost_post_a_duplicate_and_a_gap_fail() {
        let history = vec![
            json!({"op":"post","key":"w-1","status":201,"id":1,"t":0}),
            json!({"op":"post","key":"w-2","status":201,"id":2,"t":1}),
            json!({"op":"post","key":"w-3","status":201,"id":9,"t":2}),
            json!({"op":"sse_event","client":"s","event":"message","cursor":"1","seq":1,"t":3}),
            json!({"op":"sse_event","client":"s","event":"message","cursor":"3","seq":3,"t":4}),
        ];
        let mut rooms = BTreeMap::new();
        rooms.insert(
            1,
            vec![
                stored(1, 1, "w-1"),
                stored(2, 2, "w-2"),
                stored(3, 4, "w-2"),
            ],
        );
        let rows = check(&history, &rooms);
        let failed: Vec<&str> = rows
            .iter()
            .filter(|r| r.pass == Some(false))
            .map(|r| r.check.as_str())
            .collect();
        assert_eq!(
            failed,
            [
                "acknowledged posts lost",
                "posts stored twice",
                "rooms with a seq gap or repeat",
                "SSE clients missing, repeating or reordering an event"
            ]
        );
    }

    #[test]
    fn an_sse_client_that_stops_short_of_the_last_message_fails() {
        let history = vec![
            json!({"op":"post","key":"w-1","status":201,"id":1,"t":0}),
            json!({"op":"post","key":"w-2","status":201,"id":2,"t":1}),
            json!({"op":"sse_event","client":"a","room":1,"event":"message","cursor":"1","seq":1,"t":2}),
            json!({"op":"sse_event","client":"a","room":1,"event":"message","cursor":"2","seq":2,"t":3}),
            json!({"op":"sse_event","client":"b","room":1,"event":"message","cursor":"1","seq":1,"t":4}),
            json!({"op":"sse_end","client":"c","room":1,"t":5}),
        ];
        let mut rooms = BTreeMap::new();
        rooms.insert(1, vec![stored(1, 1, "w-1"), stored(2, 2, "w-2")]);
        let rows = check(&history, &rooms);
        let short = rows
            .iter()
            .find(|r| r.check == "SSE clients short of their room's last message")
            .unwrap();
        assert_eq!(short.value, "2 of 3 e.g. b,c");
        assert_eq!(short.pass, Some(false));
    }

    #[test]
    fn a_clean_history_passes() {
        let history = vec![
            json!({"op":"post","key":"w-1","status":503,"t":0}),
            json!({"op":"post","key":"w-1","status":201,"id":1,"t":1}),
            json!({"op":"edit","target":1,"body":"e","status":200,"t":2}),
            json!({"op":"sse_event","client":"s","event":"message","cursor":"1","seq":1,"t":3}),
            json!({"op":"sse_event","client":"s","event":"message_edited","cursor":"2","seq":1,"t":4}),
        ];
        let mut rooms = BTreeMap::new();
        rooms.insert(1, vec![stored(1, 1, "e")]);
        let rows = check(&history, &rooms);
        assert!(rows.iter().all(|r| r.pass != Some(false)));
    }
}
