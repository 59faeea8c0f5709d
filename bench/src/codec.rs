//! The `codec` family: the hand-written batch codec (`switchboard_proto::batch`) against prost
//! encoding and decoding the same batches, in this process, measured in turn. It is the measured
//! reason the hand-written codec exists; its floors hold it to being faster than prost, the
//! baseline it must be byte-for-byte equal to (the proto crate's property tests prove that).
//!
//! A batch is what a busy data lane writes: [`FRAMES`] calls (service and method names as
//! static slices, a [`PAYLOAD_BYTES`]-byte payload from a `Vec`, a 16-byte trace id sliced from
//! a shared block), or as many replies. An encode builds the batch afresh and encodes it into a
//! buffer reused across iterations, as a lane builds its frames and tonic encodes them: prost's
//! cost includes making each `Vec`-backed payload shareable when it clones it. A decode reads one
//! encoded batch from a `Bytes` (prost's fastest input) and drops the result.

use std::hint::black_box;
use std::time::{Duration, Instant};

use prost::Message;
use prost::bytes::Bytes;
use switchboard_proto::batch;
use switchboard_proto::v1::{Batch, Call, Frame, Reply, frame::Kind, reply};

use crate::cli::RunOptions;
use crate::echo_node::PAYLOAD_BYTES;
use crate::points::{Point, find, measure_in_turn, selected};
use crate::stats::{Bound, Check, Tally, throughput_ratio};
use crate::table::{Row, Section};

/// Frames per batch.
const FRAMES: usize = 16;

/// The points, each hand-written one beside its prost baseline.
const ENCODE_CALLS: [&str; 2] = [
    "encode a batch of calls, batch.rs",
    "encode a batch of calls, prost",
];
const DECODE_CALLS: [&str; 2] = [
    "decode a batch of calls, batch.rs",
    "decode a batch of calls, prost",
];
const ENCODE_REPLIES: [&str; 2] = [
    "encode a batch of replies, batch.rs",
    "encode a batch of replies, prost",
];
const DECODE_REPLIES: [&str; 2] = [
    "decode a batch of replies, batch.rs",
    "decode a batch of replies, prost",
];

/// The points' 'in flight' column: each runs alone on one thread.
const ONE_THREAD: &str = "1 thread";

/// Iterations between two looks at the clock.
const BETWEEN_CLOCKS: u64 = 64;

/// The floor of each hand-written / prost ratio: the hand-written codec exists only while it
/// is faster.
const FLOOR: f64 = 1.0;

/// Runs the family and returns its section; none when `--only` selects none of its points.
pub(crate) async fn run(options: &RunOptions) -> anyhow::Result<Option<Section>> {
    let points = selected(points(), options);
    if points.is_empty() {
        return Ok(None);
    }
    let rows = measure_in_turn("codec", points, options).await?;
    let checks = checks(&rows);
    Ok(Some(Section {
        title: format!(
            "codec: the hand-written batch codec vs prost, {FRAMES} frames a batch (one thread \
             of this process)"
        ),
        notes: vec![format!(
            "a call frame: id, service \"database\" and method \"post_message\" (static), a \
             {PAYLOAD_BYTES}-byte payload from a Vec, idempotent, timeout, a 16-byte trace id \
             sliced from a shared block; a reply frame: id and a {PAYLOAD_BYTES}-byte payload \
             from a Vec. Encode: build the batch, then encode it into a reused buffer (batch.rs \
             reserves batch::size_hint, prost its encoded_len). Decode: one encoded batch from a \
             Bytes, result dropped"
        )],
        rows,
        checks,
        ..Section::default()
    }))
}

/// Every point, each hand-written one beside its prost baseline.
fn points() -> Vec<Point> {
    let call_wire = Bytes::from(calls().encode_to_vec());
    let reply_wire = Bytes::from(replies().encode_to_vec());
    vec![
        point(ENCODE_CALLS[0], move || encode_by_hand(&calls())),
        point(ENCODE_CALLS[1], move || encode_with_prost(&calls())),
        point(DECODE_CALLS[0], {
            let wire = call_wire.clone();
            move || drop(black_box(batch::decode(wire.clone())))
        }),
        point(DECODE_CALLS[1], move || {
            drop(black_box(Batch::decode(call_wire.clone())))
        }),
        point(ENCODE_REPLIES[0], move || encode_by_hand(&replies())),
        point(ENCODE_REPLIES[1], move || encode_with_prost(&replies())),
        point(DECODE_REPLIES[0], {
            let wire = reply_wire.clone();
            move || drop(black_box(batch::decode(wire.clone())))
        }),
        point(DECODE_REPLIES[1], move || {
            drop(black_box(Batch::decode(reply_wire.clone())))
        }),
    ]
}

/// A point looping `operation` on a blocking thread for each slice's warm-up and window.
fn point(scenario: &'static str, operation: impl Fn() + Clone + Send + Sync + 'static) -> Point {
    Point::new(scenario, ONE_THREAD, "batches", move |warmup, measure| {
        let operation = operation.clone();
        Box::pin(async move {
            Ok(tokio::task::spawn_blocking(move || {
                run_for(warmup, &operation);
                let (ops, elapsed) = run_for(measure, &operation);
                Tally::counted(ops, elapsed)
            })
            .await?)
        })
    })
}

/// Runs `operation` for about `window`; returns how many times, and how long it took.
fn run_for(window: Duration, operation: &impl Fn()) -> (u64, Duration) {
    let start = Instant::now();
    let mut ops = 0;
    loop {
        for _ in 0..BETWEEN_CLOCKS {
            operation();
        }
        ops += BETWEEN_CLOCKS;
        let elapsed = start.elapsed();
        if elapsed >= window {
            return (ops, elapsed);
        }
    }
}

thread_local! {
    /// The output buffer each encode reuses, as a lane's writer reuses its own.
    static OUTPUT: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn encode_by_hand(batch: &Batch) {
    OUTPUT.with_borrow_mut(|out| {
        out.clear();
        out.reserve(batch::size_hint(batch));
        batch::encode(batch, out);
        black_box(out);
    });
}

fn encode_with_prost(batch: &Batch) {
    OUTPUT.with_borrow_mut(|out| {
        out.clear();
        batch.encode(out).expect("a Vec grows as needed");
        black_box(out);
    });
}

/// The trace ids' shared block, which every call's trace id is a slice of.
fn trace_ids() -> Bytes {
    thread_local! {
        static BLOCK: Bytes = Bytes::from(vec![7u8; 16 * FRAMES]);
    }
    BLOCK.with(Bytes::clone)
}

/// A fresh batch of calls.
fn calls() -> Batch {
    let trace_ids = trace_ids();
    Batch {
        frames: (0..FRAMES)
            .map(|i| Frame {
                kind: Some(Kind::Call(Call {
                    id: 1_000 + i as u64,
                    service: Bytes::from_static(b"database"),
                    method: Bytes::from_static(b"post_message"),
                    payload: Bytes::from(vec![i as u8; PAYLOAD_BYTES]),
                    idempotent: true,
                    timeout_ms: 5_000,
                    trace_id: trace_ids.slice(16 * i..16 * (i + 1)),
                })),
            })
            .collect(),
    }
}

/// A fresh batch of replies.
fn replies() -> Batch {
    Batch {
        frames: (0..FRAMES)
            .map(|i| Frame {
                kind: Some(Kind::Reply(Reply {
                    id: 1_000 + i as u64,
                    result: Some(reply::Result::Ok(Bytes::from(vec![i as u8; PAYLOAD_BYTES]))),
                })),
            })
            .collect(),
    }
}

/// Each hand-written point against its prost baseline.
fn checks(rows: &[Row]) -> Vec<Check> {
    [ENCODE_CALLS, DECODE_CALLS, ENCODE_REPLIES, DECODE_REPLIES]
        .into_iter()
        .map(|[by_hand, prost]| {
            Check::new(
                format!("{by_hand} / prost (throughput)"),
                throughput_ratio(
                    &find(rows, by_hand, ONE_THREAD),
                    &find(rows, prost, ONE_THREAD),
                ),
                Bound::AtLeast(FLOOR),
            )
        })
        .collect()
}
