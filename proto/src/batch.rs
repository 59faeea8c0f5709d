//! The encoder of a [`Batch`], the one message the `Node` service sends: the frames that carry
//! calls, casts and replies are written by hand, each in one pass straight into the output.
//!
//! prost encodes a nested message by asking it for its length, and that asks every level below
//! again: a call inside a frame inside a batch has its fields measured three times before a byte
//! is written. prost also writes a `bytes` field by cloning the `Bytes`, and cloning one made from
//! a `Vec` (most names and payloads) allocates to make it shareable. Here a call, cast or reply is
//! measured once, from its fields, and its fields are copied from slices. The other frames
//! (handshake, heartbeats, gossip, error replies) are rare and go through prost.
//!
//! The output is byte for byte what `Batch::encode` writes (the tests compare them), so the other
//! end decodes it with prost's generated decoder.

use prost::Message;
use prost::bytes::BufMut;
use prost::encoding::encoded_len_varint;

use crate::v1::{Batch, Call, Cast, Frame, GroupCast, Reply, frame::Kind, reply};

/// The key of a length-delimited field `tag` (< 16, so the key is one byte).
const fn len_key(tag: u8) -> u8 {
    (tag << 3) | 2
}

/// The key of a varint field `tag` (< 16).
const fn varint_key(tag: u8) -> u8 {
    tag << 3
}

/// `Batch.frames`.
const FRAMES: u8 = len_key(1);
/// `Frame.call`, `Frame.reply`, `Frame.cast` and `Frame.group_cast`.
const CALL: u8 = len_key(10);
const REPLY: u8 = len_key(11);
const CAST: u8 = len_key(12);
const GROUP_CAST: u8 = len_key(13);

/// Writes `batch` exactly as `Batch::encode_raw` would.
pub fn encode(batch: &Batch, buf: &mut impl BufMut) {
    let mut out = Writer::new(buf);
    for frame in &batch.frames {
        out.frame(frame);
    }
    out.flush();
}

/// About the length of `batch` encoded, cheaply: enough to reserve the output once instead of
/// regrowing (and copying) it as a large batch is written. Keys and lengths are estimated, not
/// counted; an underestimate only means the output grows once more.
pub fn size_hint(batch: &Batch) -> usize {
    /// The keys and lengths of a frame of a few small fields, generously.
    const FRAMING: usize = 40;
    batch
        .frames
        .iter()
        .map(|frame| match &frame.kind {
            Some(Kind::Call(call)) => {
                call.service.len() + call.method.len() + call.payload.len() + call.trace_id.len()
            }
            Some(Kind::Cast(cast)) => {
                cast.service.len() + cast.method.len() + cast.payload.len() + cast.trace_id.len()
            }
            Some(Kind::GroupCast(cast)) => {
                cast.group.len() + cast.method.len() + cast.payload.len() + cast.trace_id.len()
            }
            Some(Kind::Reply(Reply {
                result: Some(reply::Result::Ok(payload)),
                ..
            })) => payload.len(),
            _ => frame.encoded_len(),
        } + FRAMING)
        .sum()
}

/// Whether a reply is written by hand: all but error replies, which are rare.
fn by_hand(reply: &Reply) -> bool {
    !matches!(reply.result, Some(reply::Result::Error(_)))
}

/// The length of a frame holding one kind whose body is `len` bytes.
fn kind_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

/// Writes frames into `buf`, gathering keys, lengths, scalars and short names on the stack so
/// that each reaches `buf` in one copy: `buf` checks its capacity on every write, and a varint
/// written byte by byte checks it for every byte. Its small methods are always inlined: a call
/// per field costs more than writing the field.
struct Writer<'a, B: BufMut> {
    buf: &'a mut B,
    scratch: [u8; SCRATCH],
    len: usize,
}

const SCRATCH: usize = 128;

/// Longer fields are copied straight into the output rather than through the scratch space.
const SHORT: usize = 48;

/// Room for a key and a varint of any size.
const FIELD_HEAD: usize = 11;

impl<'a, B: BufMut> Writer<'a, B> {
    fn new(buf: &'a mut B) -> Self {
        Self {
            buf,
            scratch: [0; SCRATCH],
            len: 0,
        }
    }

    #[inline(always)]
    fn flush(&mut self) {
        self.buf.put_slice(&self.scratch[..self.len]);
        self.len = 0;
    }

    /// Makes room for `n` more bytes of scratch (`n` <= `SCRATCH`).
    #[inline(always)]
    fn room(&mut self, n: usize) {
        if self.len + n > SCRATCH {
            self.flush();
        }
    }

    #[inline(always)]
    fn byte(&mut self, byte: u8) {
        self.scratch[self.len] = byte;
        self.len += 1;
    }

    /// A varint; the caller made room for ten bytes.
    #[inline(always)]
    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.byte(value as u8 | 0x80);
            value >>= 7;
        }
        self.byte(value as u8);
    }

    #[inline(always)]
    fn head(&mut self, key: u8, value: u64) {
        self.room(FIELD_HEAD);
        self.byte(key);
        self.varint(value);
    }

    /// A scalar field; a proto3 scalar at its default (zero, false) is not written at all.
    #[inline(always)]
    fn scalar(&mut self, key: u8, value: u64) {
        if value != 0 {
            self.head(key, value);
        }
    }

    /// A `bytes` field, not written when empty.
    #[inline(always)]
    fn bytes(&mut self, key: u8, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.head(key, bytes.len() as u64);
            self.slice(bytes);
        }
    }

    #[inline(always)]
    fn slice(&mut self, bytes: &[u8]) {
        if bytes.len() <= SHORT {
            self.room(bytes.len());
            self.scratch[self.len..self.len + bytes.len()].copy_from_slice(bytes);
            self.len += bytes.len();
        } else {
            self.flush();
            self.buf.put_slice(bytes);
        }
    }

    /// Starts a frame holding one `kind` whose body is `len` bytes: the batch's key and the
    /// frame's length, then the kind's key and length.
    #[inline(always)]
    fn frame_head(&mut self, kind: u8, len: usize) {
        self.head(FRAMES, kind_len(len) as u64);
        self.head(kind, len as u64);
    }

    /// One element of `Batch.frames`: its key, its length and the frame.
    fn frame(&mut self, frame: &Frame) {
        match &frame.kind {
            Some(Kind::Call(call)) => {
                self.frame_head(CALL, call_len(call));
                self.scalar(varint_key(1), call.id);
                self.bytes(len_key(2), &call.service);
                self.bytes(len_key(3), &call.method);
                self.bytes(len_key(4), &call.payload);
                self.scalar(varint_key(5), u64::from(call.idempotent));
                self.scalar(varint_key(6), u64::from(call.timeout_ms));
                self.bytes(len_key(7), &call.trace_id);
            }
            Some(Kind::Cast(cast)) => {
                self.frame_head(CAST, cast_len(cast));
                self.bytes(len_key(1), &cast.service);
                self.bytes(len_key(2), &cast.method);
                self.bytes(len_key(3), &cast.payload);
                self.bytes(len_key(4), &cast.trace_id);
            }
            Some(Kind::GroupCast(cast)) => {
                self.frame_head(GROUP_CAST, group_cast_len(cast));
                self.bytes(len_key(1), &cast.group);
                self.bytes(len_key(2), &cast.method);
                self.bytes(len_key(3), &cast.payload);
                self.bytes(len_key(4), &cast.trace_id);
            }
            Some(Kind::Reply(reply)) if by_hand(reply) => {
                self.frame_head(REPLY, reply_len(reply));
                self.scalar(varint_key(1), reply.id);
                // A oneof member is written even when empty: its presence is the information.
                if let Some(reply::Result::Ok(payload)) = &reply.result {
                    self.head(len_key(2), payload.len() as u64);
                    self.slice(payload);
                }
            }
            _ => {
                self.head(FRAMES, frame.encoded_len() as u64);
                self.flush();
                frame.encode_raw(self.buf);
            }
        }
    }
}

fn call_len(call: &Call) -> usize {
    varint_len(call.id)
        + bytes_len(&call.service)
        + bytes_len(&call.method)
        + bytes_len(&call.payload)
        + varint_len(u64::from(call.idempotent))
        + varint_len(u64::from(call.timeout_ms))
        + bytes_len(&call.trace_id)
}

fn cast_len(cast: &Cast) -> usize {
    bytes_len(&cast.service)
        + bytes_len(&cast.method)
        + bytes_len(&cast.payload)
        + bytes_len(&cast.trace_id)
}

fn group_cast_len(cast: &GroupCast) -> usize {
    bytes_len(&cast.group)
        + bytes_len(&cast.method)
        + bytes_len(&cast.payload)
        + bytes_len(&cast.trace_id)
}

/// The length of a reply without an error (those go through prost).
fn reply_len(reply: &Reply) -> usize {
    let result = match &reply.result {
        Some(reply::Result::Ok(payload)) => {
            1 + encoded_len_varint(payload.len() as u64) + payload.len()
        }
        _ => 0,
    };
    varint_len(reply.id) + result
}

/// A proto3 scalar at its default (zero, false, empty) is not written at all.
fn varint_len(value: u64) -> usize {
    if value == 0 {
        0
    } else {
        1 + encoded_len_varint(value)
    }
}

fn bytes_len(bytes: &[u8]) -> usize {
    if bytes.is_empty() {
        0
    } else {
        1 + encoded_len_varint(bytes.len() as u64) + bytes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{Error, ErrorKind, Heartbeat, Hello};
    use prost::bytes::Bytes;

    fn encoded(batch: &Batch) -> Vec<u8> {
        let mut buf = Vec::new();
        encode(batch, &mut buf);
        buf
    }

    fn frame(kind: Kind) -> Frame {
        Frame { kind: Some(kind) }
    }

    fn bytes(n: usize) -> Bytes {
        Bytes::from((0..n).map(|i| i as u8).collect::<Vec<u8>>())
    }

    /// Every kind written by hand, at sizes around each varint boundary and with every field
    /// empty or zero, plus the kinds left to prost.
    fn frames() -> Vec<Frame> {
        let mut frames = Vec::new();
        for size in [0, 1, 127, 128, 16_383, 16_384, 2_097_152] {
            for (id, flag, timeout) in [(0, false, 0), (1, true, 5_000), (u64::MAX, true, u32::MAX)]
            {
                frames.push(frame(Kind::Call(Call {
                    id,
                    service: bytes(size % 200),
                    method: bytes(size % 7),
                    payload: bytes(size),
                    idempotent: flag,
                    timeout_ms: timeout,
                    trace_id: bytes(size % 17),
                })));
                frames.push(frame(Kind::Reply(Reply {
                    id,
                    result: Some(reply::Result::Ok(bytes(size))),
                })));
            }
            frames.push(frame(Kind::Cast(Cast {
                service: bytes(size % 130),
                method: bytes(6),
                payload: bytes(size),
                trace_id: bytes(size % 3),
            })));
            frames.push(frame(Kind::GroupCast(GroupCast {
                group: bytes(11),
                method: bytes(size % 129),
                payload: bytes(size),
                trace_id: Bytes::new(),
            })));
        }
        frames.push(frame(Kind::Reply(Reply {
            id: 7,
            result: None,
        })));
        frames.push(frame(Kind::Reply(Reply {
            id: 8,
            result: Some(reply::Result::Error(Error {
                kind: ErrorKind::Overloaded as i32,
                code: "busy".into(),
                message: "too many calls".into(),
            })),
        })));
        frames.push(frame(Kind::Heartbeat(Heartbeat { sequence: 3 })));
        frames.push(frame(Kind::Hello(Hello {
            name: "a@b".into(),
            nonce: bytes(16),
            ..Hello::default()
        })));
        frames.push(Frame { kind: None });
        frames
    }

    #[test]
    fn writes_what_prost_writes() {
        for frame in frames() {
            let batch = Batch {
                frames: vec![frame],
            };
            assert!(
                encoded(&batch) == batch.encode_to_vec(),
                "{:?}",
                batch.frames[0]
            );
        }
        let batch = Batch { frames: frames() };
        assert_eq!(encoded(&batch), batch.encode_to_vec());
        assert!(size_hint(&batch) >= batch.encoded_len());
        assert!(encoded(&Batch::default()).is_empty());
    }

    #[test]
    fn prost_decodes_what_it_writes() {
        let batch = Batch { frames: frames() };
        let decoded = Batch::decode(Bytes::from(encoded(&batch))).unwrap();
        assert_eq!(decoded, batch);
    }

    /// A peer's bytes are decoded by prost: truncated or corrupted batches are errors, never
    /// panics.
    #[test]
    fn malformed_batches_are_errors() {
        let call = Batch {
            frames: vec![frame(Kind::Call(Call {
                id: 300,
                service: bytes(8),
                method: bytes(4),
                payload: bytes(300),
                idempotent: true,
                timeout_ms: 1_000,
                trace_id: bytes(16),
            }))],
        };
        let wire = encoded(&call);
        for cut in 1..wire.len() {
            assert!(Batch::decode(&wire[..cut]).is_err(), "cut at {cut}");
        }
        // An over-long length prefix.
        let mut corrupt = wire.clone();
        corrupt[1] = 0xff;
        corrupt[2] = 0xff;
        assert!(Batch::decode(&corrupt[..]).is_err());
        // Any cut or flipped byte of a batch of every kind decodes or fails, and never panics.
        let small = Batch {
            frames: frames()
                .into_iter()
                .filter(|frame| frame.encoded_len() < 1_000)
                .collect(),
        };
        let wire = encoded(&small);
        for at in 0..wire.len() {
            let _ = Batch::decode(&wire[..at]);
            let mut flipped = wire.clone();
            flipped[at] ^= 0xa5;
            let _ = Batch::decode(&flipped[..]);
        }
    }
}
