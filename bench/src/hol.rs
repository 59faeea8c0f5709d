//! The `hol` (head-of-line blocking) scenario family: small calls between two nodes while
//! 1 MiB payloads stream over the same link. The floor: the small calls' p99 at most
//! 2x its idle value. Erlang carries everything between a node pair on one connection, so a
//! large message there delays every small one queued behind it; the runtime sends frames over
//! 64 KiB on a bulk lane (a stream of their own), which is what this family puts to the test.
//!
//! Two points take turns slice by slice ([`crate::points`]): small calls alone, and the same
//! small calls while other tasks echo 1 MiB payloads to the same server node. The 1 MiB echoes
//! are measured in the loaded slices too, as a rate in MiB/s.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::cli::RunOptions;
use crate::echo_node::{self, PAYLOAD_BYTES, RemoteEcho};
use crate::load::{Load, closed_loop};
use crate::points::{Point, Slice, find, measure_in_turn, selected};
use crate::stats::{Bound, Check, Tally, p99_ratio};
use crate::table::{Row, Section};

/// Small calls in flight, idle and loaded.
const SMALL_IN_FLIGHT: usize = 16;

/// 1 MiB echoes in flight beside them.
const BULK_IN_FLIGHT: usize = 2;

/// The large payload, in bytes (the node's default largest frame is 4 MiB).
const BULK_BYTES: usize = 1 << 20;

/// The floor: loaded small-call p99 over idle small-call p99.
const P99_CEILING: f64 = 2.0;

/// The points' names, shared by the table and the check.
const IDLE: &str = "small call, link otherwise idle";
const LOADED: &str = "small call, 1 MiB echoes on the same link";
const BULK: &str = "1 MiB echo beside the small calls (MiB each way)";

/// Runs the family and returns its section of the report (none when `--only` selects none of
/// its points).
pub(crate) async fn run(options: &RunOptions) -> anyhow::Result<Option<Section>> {
    let remote = RemoteEcho::start(options).await?;
    let small = echo_node::payload(PAYLOAD_BYTES);
    let bulk = echo_node::payload(BULK_BYTES);
    let bulk_tally = Arc::new(Mutex::new(Tally::default()));
    let echo = |payload: &Bytes| {
        let node = remote.node.clone();
        let payload = payload.clone();
        move || echo_node::echo_once(node.clone(), payload.clone())
    };
    let points = selected(
        vec![
            remote.call_point(IDLE, SMALL_IN_FLIGHT, &small),
            Point::closed_beside(
                LOADED,
                SMALL_IN_FLIGHT,
                echo(&small),
                {
                    let bulk = echo(&bulk);
                    move |warmup, measure| {
                        let load = Load {
                            in_flight: BULK_IN_FLIGHT,
                            warmup,
                            measure,
                        };
                        Box::pin(closed_loop(load, bulk.clone())) as Slice
                    }
                },
                bulk_tally.clone(),
            ),
        ],
        options,
    );
    if points.is_empty() {
        remote.finish().await?;
        return Ok(None);
    }
    let mut rows = measure_in_turn("hol", points, options).await?;
    remote.finish().await?;
    let bulk = std::mem::take(&mut *bulk_tally.lock().unwrap_or_else(|p| p.into_inner()));
    if rows.iter().any(|row| row.scenario == LOADED) {
        rows.push(Row {
            scenario: BULK.into(),
            in_flight: BULK_IN_FLIGHT.to_string(),
            unit: "MiB",
            measurement: bulk.measurement(),
        });
    }
    let checks = checks(&rows);
    Ok(Some(Section {
        title: "hol: small calls beside 1 MiB transfers on the same link (2 processes, loopback)"
            .into(),
        notes: vec![
            format!(
                "small calls: {PAYLOAD_BYTES} B echoes, {SMALL_IN_FLIGHT} tasks each looping \
                 call -> await; loaded: the same while {BULK_IN_FLIGHT} more tasks loop 1 MiB \
                 echoes to the same server node over the same link"
            ),
            format!("server: {}", echo_node::server_description(options)),
            "idle and loaded slices take turns; a 1 MiB echo counts 1 MiB each way, so its \
             rate in MiB/s is the transfer rate in either direction"
                .into(),
            "frames over 64 KiB travel on the link's bulk lane, a stream of their own; Erlang \
             sends everything between two nodes over one connection, where a small message \
             waits behind a large one"
                .into(),
        ],
        rows,
        checks,
        ..Section::default()
    }))
}

/// The floor; n/a when `--only` left a point out.
fn checks(rows: &[Row]) -> Vec<Check> {
    let small = SMALL_IN_FLIGHT.to_string();
    vec![Check::new(
        format!("small-call p99 beside 1 MiB echoes / idle p99 (@{SMALL_IN_FLIGHT})"),
        p99_ratio(&find(rows, LOADED, &small), &find(rows, IDLE, &small)),
        Bound::AtMost(P99_CEILING),
    )]
}
