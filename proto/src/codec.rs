//! The gRPC codec of the `Node` service: the hand-written batch encoder and decoder of
//! [`crate::batch`], the decoder reading the whole message taken out of tonic's receive buffer as
//! one contiguous [`Bytes`](prost::bytes::Bytes).
//!
//! Decoding straight from tonic's buffer goes through its generic `Buf` wrapper for every varint
//! and field, which costs more than everything else a small call does on the receiving node.
//! Taking the message out is not a copy (the buffer is split, not duplicated), decoding from a
//! `Bytes` is prost's fast path, and `bytes` fields (payloads, names) become slices of it.

use std::marker::PhantomData;

use prost::DecodeError;
use prost::bytes::{Buf, Bytes};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::v1::Batch;

/// A message this codec sends: written exactly as prost would, by whatever means is cheapest.
pub trait Encode: Send + 'static {
    /// Writes the message's fields (no length prefix), as `Message::encode_raw` does.
    fn encode_fields(&self, buf: &mut EncodeBuf<'_>);
}

impl Encode for Batch {
    fn encode_fields(&self, buf: &mut EncodeBuf<'_>) {
        // Room for the whole batch at once: grown piecemeal, a large batch would be copied
        // into a bigger buffer several times over.
        buf.reserve(crate::batch::size_hint(self));
        crate::batch::encode(self, buf);
    }
}

/// A message this codec receives: read from one contiguous buffer as prost would read it.
pub trait Decode: Sized + Send + 'static {
    /// Reads the message; `bytes` fields become slices of `bytes`.
    fn decode_from(bytes: Bytes) -> Result<Self, DecodeError>;
}

impl Decode for Batch {
    fn decode_from(bytes: Bytes) -> Result<Self, DecodeError> {
        crate::batch::decode(bytes)
    }
}

/// Encodes `T` (see [`Encode`]); decodes `U` (see [`Decode`]) from a contiguous copy-free slice.
#[derive(Debug, Clone)]
pub struct ContiguousCodec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for ContiguousCodec<T, U> {
    fn default() -> Self {
        Self {
            _types: PhantomData,
        }
    }
}

impl<T, U> Codec for ContiguousCodec<T, U>
where
    T: Encode,
    U: Decode,
{
    type Encode = T;
    type Decode = U;
    type Encoder = FieldEncoder<T>;
    type Decoder = ContiguousDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        FieldEncoder { _type: PhantomData }
    }

    fn decoder(&mut self) -> Self::Decoder {
        ContiguousDecoder { _type: PhantomData }
    }
}

/// Writes `T` with [`Encode`]. Unlike prost's `Message::encode` it does not measure the whole
/// message first: tonic's buffer grows as needed and tonic writes the length prefix afterwards.
#[derive(Debug, Clone)]
pub struct FieldEncoder<T> {
    _type: PhantomData<T>,
}

impl<T: Encode> Encoder for FieldEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode_fields(buf);
        Ok(())
    }
}

/// Decodes `U` from the message's bytes taken out of tonic's buffer in one piece.
#[derive(Debug, Clone)]
pub struct ContiguousDecoder<U> {
    _type: PhantomData<U>,
}

impl<U: Decode> Decoder for ContiguousDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let bytes = buf.copy_to_bytes(buf.remaining());
        U::decode_from(bytes)
            .map(Some)
            .map_err(|error| Status::internal(error.to_string()))
    }
}
