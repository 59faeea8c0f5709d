//! The hand-written batch codec (`switchboard_proto::batch`) is prost's codec made cheaper, never
//! a different one: for arbitrary batches it writes byte for byte what prost writes and reads
//! back what prost reads, and on malformed input (arbitrary bytes, cut or corrupted batches,
//! frames of arbitrary fields) it accepts exactly what prost accepts, with equal values.
//!
//! Why generated input: the decoder reads a call or a reply by hand only when it is laid out as
//! the encoder writes it and hands everything else to prost, so its risk is in the boundary
//! between the two (a field given twice, an unknown tag, a wrong wire type, a length that runs
//! past its frame). The unit tests in `batch.rs` pin the cases known to matter; these search the
//! space around them.

use proptest::collection::vec;
use proptest::prelude::*;
use prost::Message;
use prost::bytes::Bytes;
use switchboard_proto::batch;
use switchboard_proto::v1::{
    Advertisement, Batch, Call, Cast, Error, Frame, Goodbye, Gossip, GroupCast, Heartbeat, Hello,
    Member, Reply, Suspect, frame::Kind, reply,
};

/// A `bytes` field: most often empty or name-sized, sometimes past a one-byte length.
fn field() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        2 => Just(Bytes::new()),
        6 => vec(any::<u8>(), 1..24).prop_map(Bytes::from),
        1 => vec(any::<u8>(), 120..300).prop_map(Bytes::from),
    ]
}

/// A scalar: zero (not written at all), small, or any, across every varint length.
fn number() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0), 1..300u64, any::<u64>()]
}

fn timeout() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0), 1..300u32, any::<u32>()]
}

fn call() -> impl Strategy<Value = Call> {
    (
        number(),
        field(),
        field(),
        field(),
        any::<bool>(),
        timeout(),
        field(),
    )
        .prop_map(
            |(id, service, method, payload, idempotent, timeout_ms, trace_id)| Call {
                id,
                service,
                method,
                payload,
                idempotent,
                timeout_ms,
                trace_id,
            },
        )
}

fn reply() -> impl Strategy<Value = Reply> {
    let result = prop_oneof![
        Just(None),
        field().prop_map(|payload| Some(reply::Result::Ok(payload))),
        (any::<i32>(), ".{0,8}", ".{0,16}").prop_map(|(kind, code, message)| Some(
            reply::Result::Error(Error {
                kind,
                code,
                message
            })
        )),
    ];
    (number(), result).prop_map(|(id, result)| Reply { id, result })
}

/// Every kind the codec writes by hand, and a sample of those it leaves to prost.
fn frame() -> impl Strategy<Value = Frame> {
    let kind = prop_oneof![
        4 => call().prop_map(Kind::Call),
        4 => reply().prop_map(Kind::Reply),
        2 => (field(), field(), field(), field()).prop_map(|(service, method, payload, trace_id)| {
            Kind::Cast(Cast { service, method, payload, trace_id })
        }),
        2 => (field(), field(), field(), field()).prop_map(|(group, method, payload, trace_id)| {
            Kind::GroupCast(GroupCast { group, method, payload, trace_id })
        }),
        1 => number().prop_map(|sequence| Kind::Heartbeat(Heartbeat { sequence })),
        1 => number().prop_map(|sequence| Kind::HeartbeatAck(Heartbeat { sequence })),
        1 => (any::<u32>(), ".{0,12}", number(), field()).prop_map(
            |(version, name, incarnation, nonce)| Kind::Hello(Hello {
                version,
                name,
                incarnation,
                nonce,
                ..Hello::default()
            })
        ),
        1 => (number(), vec(".{0,8}", 0..3)).prop_map(|(version, services)| {
            Kind::Advertise(Advertisement { version, services, groups: Vec::new() })
        }),
        1 => vec((".{0,8}", ".{0,8}", number()), 0..3).prop_map(|members| {
            Kind::Gossip(Gossip {
                members: members
                    .into_iter()
                    .map(|(name, address, incarnation)| Member { name, address, incarnation })
                    .collect(),
            })
        }),
        1 => ".{0,12}".prop_map(|reason| Kind::Goodbye(Goodbye { reason })),
        1 => (".{0,8}", number())
            .prop_map(|(name, incarnation)| Kind::Suspect(Suspect { name, incarnation })),
    ];
    prop_oneof![
        20 => kind.prop_map(|kind| Frame { kind: Some(kind) }),
        1 => Just(Frame { kind: None }),
    ]
}

fn batch_of_frames() -> impl Strategy<Value = Batch> {
    vec(frame(), 0..8).prop_map(|frames| Batch { frames })
}

fn encoded(batch: &Batch) -> Vec<u8> {
    let mut wire = Vec::new();
    batch::encode(batch, &mut wire);
    wire
}

/// The wire type field `tag` of frame kind `kind` has (`Frame.call` = 10, `Frame.reply` = 11):
/// 0 for a varint, 2 for a length-delimited field.
fn wire_type_of(kind: u64, tag: u64) -> u64 {
    match (kind, tag) {
        (10, 1 | 5 | 6) | (11, 1) => 0,
        _ => 2,
    }
}

/// A field of frame kind `kind`: mostly one of its own tags with its own wire type, sometimes
/// an unknown tag or a wrong wire type (including group markers and the wire types that do not
/// exist), with a value of the shape that wire type has: what a careless or hostile peer might
/// put in a frame.
fn raw_field(kind: u64) -> impl Strategy<Value = Vec<u8>> {
    let typed = (1..8u64).prop_map(move |tag| (tag, wire_type_of(kind, tag)));
    let any_type = (0..16u64, 0..8u64);
    (
        prop_oneof![8 => typed, 1 => any_type],
        number(),
        vec(any::<u8>(), 0..12),
    )
        .prop_map(|((tag, wire_type), number, bytes)| {
            let mut field = Vec::new();
            prost::encoding::encode_varint(tag << 3 | wire_type, &mut field);
            match wire_type {
                0 => prost::encoding::encode_varint(number, &mut field),
                1 => field.extend_from_slice(&number.to_le_bytes()),
                2 => {
                    prost::encoding::encode_varint(bytes.len() as u64, &mut field);
                    field.extend_from_slice(&bytes);
                }
                5 => field.extend_from_slice(&number.to_le_bytes()[..4]),
                // Group starts and ends, and the wire types that do not exist: no value.
                _ => {}
            }
            field
        })
}

/// `body` under the key of length-delimited field `tag`.
fn length_delimited(tag: u64, body: &[u8]) -> Vec<u8> {
    let mut wire = Vec::new();
    prost::encoding::encode_varint(tag << 3 | 2, &mut wire);
    prost::encoding::encode_varint(body.len() as u64, &mut wire);
    wire.extend_from_slice(body);
    wire
}

/// One kind of a frame holding arbitrary fields: mostly a call or a reply, which the decoder
/// reads by hand when it can, sometimes another kind.
fn raw_kind() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![4 => Just(10u64), 4 => Just(11u64), 1 => 1..23u64]
        .prop_flat_map(|kind| vec(raw_field(kind), 0..6).prop_map(move |fields| (kind, fields)))
        .prop_map(|(kind, fields)| length_delimited(kind, &fields.concat()))
}

/// A batch of frames of arbitrary fields, a few of them with two kinds.
fn batch_of_raw_frames() -> impl Strategy<Value = Vec<u8>> {
    let frame = prop_oneof![
        6 => raw_kind(),
        1 => (raw_kind(), raw_kind()).prop_map(|(first, second)| [first, second].concat()),
    ];
    vec(frame, 0..4).prop_map(|frames| {
        frames
            .iter()
            .flat_map(|frame| length_delimited(1, frame))
            .collect()
    })
}

/// The hand-written decoder's answer to `wire` is prost's: both accept with equal batches, or
/// both reject.
fn agrees_with_prost(wire: &[u8]) -> Result<(), TestCaseError> {
    let ours = batch::decode(Bytes::copy_from_slice(wire));
    let prost = Batch::decode(wire);
    match (ours, prost) {
        (Ok(ours), Ok(prost)) => prop_assert_eq!(ours, prost),
        (Err(_), Err(_)) => {}
        (ours, prost) => prop_assert!(false, "decoder {ours:?}, prost {prost:?}"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn writes_what_prost_writes(batch in batch_of_frames()) {
        prop_assert_eq!(encoded(&batch), batch.encode_to_vec());
    }

    #[test]
    fn reads_what_prost_reads(batch in batch_of_frames()) {
        let wire = Bytes::from(batch.encode_to_vec());
        prop_assert_eq!(batch::decode(wire.clone())?, batch.clone());
        prop_assert_eq!(Batch::decode(wire)?, batch);
    }

    #[test]
    fn arbitrary_bytes_read_as_prost_reads_them(wire in vec(any::<u8>(), 0..64)) {
        agrees_with_prost(&wire)?;
    }

    #[test]
    fn cut_batches_read_as_prost_reads_them(batch in batch_of_frames(), cut in any::<prop::sample::Index>()) {
        let wire = encoded(&batch);
        agrees_with_prost(&wire[..cut.index(wire.len() + 1)])?;
    }

    #[test]
    fn corrupted_batches_read_as_prost_reads_them(
        batch in batch_of_frames(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut wire = encoded(&batch);
        if !wire.is_empty() {
            let at = at.index(wire.len());
            wire[at] = byte;
        }
        agrees_with_prost(&wire)?;
    }

    #[test]
    fn frames_of_arbitrary_fields_read_as_prost_reads_them(
        wire in batch_of_raw_frames(),
        cut in any::<prop::sample::Index>(),
    ) {
        agrees_with_prost(&wire)?;
        agrees_with_prost(&wire[..cut.index(wire.len() + 1)])?;
    }
}
