//! The gRPC codec of the `Node` service: prost's encoder, and a decoder that first takes the
//! whole message out of tonic's receive buffer as one contiguous [`Bytes`](prost::bytes::Bytes)
//! and decodes from that.
//!
//! Decoding straight from tonic's buffer goes through its generic `Buf` wrapper for every varint
//! and field, which costs more than everything else a small call does on the receiving node.
//! Taking the message out is not a copy (the buffer is split, not duplicated), decoding from a
//! `Bytes` is prost's fast path, and `bytes` fields (payloads, names) become slices of it.

use std::marker::PhantomData;

use prost::Message;
use prost::bytes::Buf;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

/// Encodes `T` with prost; decodes `U` from a contiguous copy-free slice.
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
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ContiguousDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        ContiguousDecoder { _type: PhantomData }
    }
}

/// Decodes `U` from the message's bytes taken out of tonic's buffer in one piece.
#[derive(Debug, Clone)]
pub struct ContiguousDecoder<U> {
    _type: PhantomData<U>,
}

impl<U: Message + Default> Decoder for ContiguousDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let bytes = buf.copy_to_bytes(buf.remaining());
        U::decode(bytes)
            .map(Some)
            .map_err(|error| Status::internal(error.to_string()))
    }
}
