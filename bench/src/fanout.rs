//! The `fanout` scenario family: the fan-out scenario, casts to the log and analytics
//! groups at full rate, with its three floors: at least 100,000 messages/s delivered per node
//! pair, the receiving node's memory bounded, and call p99 no worse than 1.2x its value without
//! the fan-out.
//!
//! The server node's `echo` group stands in for the log and analytics groups, and is sent to
//! the way they are (`broadcast_background` queues a `GroupCast` frame on the link's bulk lane,
//! served by each node's low-priority bulk thread, and the receiving node hands it to the
//! group's handler there); the echo server counts what arrives. Two points take turns slice by slice ([`crate::points`]): small calls alone, and the
//! same calls while another task broadcasts to the group at full rate. The casts delivered in
//! the loaded slices make a row of their own, and the server process's peak RSS (`VmHWM`) after
//! the run a memory row.

use std::sync::{Arc, Mutex};

use crate::cli::RunOptions;
use crate::echo_node::{self, PAYLOAD_BYTES, RemoteEcho};
use crate::points::{Point, find, measure_in_turn, selected};
use crate::stats::{Bound, Check, Tally, p99_ratio};
use crate::table::{MIB, MemoryRow, Row, Section};

/// Small calls in flight, alone and beside the fan-out.
const CALLS_IN_FLIGHT: usize = 16;

/// The floor on casts delivered per second to the one server node.
const DELIVERED_FLOOR: f64 = 100_000.0;

/// The ceiling on call p99 beside the fan-out over call p99 alone.
const P99_CEILING: f64 = 1.2;

/// The ceiling on the server process's peak RSS, in MiB: the fan-out must not queue up memory.
const PEAK_CEILING_MIB: f64 = 64.0;

/// The points' names, shared by the table and the checks.
const ALONE: &str = "small call alone";
const BESIDE: &str = "small call beside the fan-out";
const FAN_OUT: &str = "fan-out to group `echo` beside the calls (delivered)";

const TITLE: &str =
    "fanout: small calls beside casts to a group at full rate (2 processes, loopback)";

/// Runs the family and returns its section of the report (none when `--only` selects none of
/// its points).
pub(crate) async fn run(options: &RunOptions) -> anyhow::Result<Option<Section>> {
    let remote = RemoteEcho::start(options).await?;
    let payload = echo_node::payload(PAYLOAD_BYTES);
    let fan_out = Arc::new(Mutex::new(Tally::default()));
    let call = {
        let node = remote.node.clone();
        let payload = payload.clone();
        move || echo_node::echo_once(node.clone(), payload.clone())
    };
    let points = selected(
        vec![
            remote.call_point(ALONE, CALLS_IN_FLIGHT, &payload),
            Point::closed_beside(
                BESIDE,
                CALLS_IN_FLIGHT,
                call,
                remote.fan_out(&payload),
                fan_out.clone(),
            ),
        ],
        options,
    );
    if points.is_empty() {
        remote.finish().await?;
        return Ok(None);
    }
    let mut rows = measure_in_turn("fanout", points, options).await?;
    let server = remote.server.memory()?;
    let casts = remote.casts.clone();
    remote.finish().await?;
    let fan_out = std::mem::take(&mut *fan_out.lock().unwrap_or_else(|p| p.into_inner()));
    let fanned_out = rows.iter().any(|row| row.scenario == BESIDE);
    if fanned_out {
        rows.push(Row {
            scenario: FAN_OUT.into(),
            in_flight: "one-way".into(),
            unit: "msgs",
            measurement: fan_out.measurement(),
        });
    }
    let memory = MemoryRow {
        process: echo_node::SERVER_NAME.into(),
        state: if fanned_out {
            "after the run (fan-out received)".into()
        } else {
            "after the run (calls only)".into()
        },
        rss: server.rss,
        peak: server.peak,
    };
    let checks = checks(&rows, &memory);
    Ok(Some(Section {
        title: TITLE.into(),
        notes: vec![
            format!(
                "calls: {PAYLOAD_BYTES} B echoes, {CALLS_IN_FLIGHT} tasks each looping call -> \
                 await; beside the fan-out: the same while one more task broadcasts \
                 {PAYLOAD_BYTES} B messages to the server's `echo` group over the same link"
            ),
            format!("server: {}", echo_node::server_description(options)),
            "the `echo` group stands in for the log and analytics groups, which broadcast in \
             the background: a GroupCast frame on the link's bulk lane, sent, received and \
             handed to the group's handler on each node's bulk thread (nice 13); the server \
             counts what arrives"
                .into(),
            casts.note("fan-out", "broadcast_background", options),
            "the fan-out runs through each loaded slice's warm-up as well as its window, so the \
             counts above include the warm-ups; its row counts only what arrived after the \
             window opened, over the time from then to the last delivery"
                .into(),
            "memory: the server process's /proc/<pid>/status after the run; the peak (VmHWM) \
             covers every slice, fan-out included"
                .into(),
        ],
        rows,
        memory: vec![memory],
        checks,
        ..Section::default()
    }))
}

/// The floors; a check whose points `--only` left out reads n/a.
fn checks(rows: &[Row], memory: &MemoryRow) -> Vec<Check> {
    let calls = CALLS_IN_FLIGHT.to_string();
    let fan_out = find(rows, FAN_OUT, "one-way");
    let mut peak = Check::mebibytes(
        "server peak RSS (VmHWM) with the fan-out",
        memory.peak as f64 / MIB,
        Bound::AtMost(PEAK_CEILING_MIB),
    );
    if fan_out.elapsed.is_zero() {
        peak = peak.not_run();
    }
    vec![
        Check::rate(
            "fan-out delivered to one node (msgs/s)",
            &fan_out,
            Bound::AtLeast(DELIVERED_FLOOR),
        ),
        Check::new(
            format!("call p99 beside the fan-out / alone (@{CALLS_IN_FLIGHT})"),
            p99_ratio(&find(rows, BESIDE, &calls), &find(rows, ALONE, &calls)),
            Bound::AtMost(P99_CEILING),
        ),
        peak,
    ]
}
