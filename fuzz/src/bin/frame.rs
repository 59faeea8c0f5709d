//! Fuzz target `frame`: one frame as a peer sends it, read through the gRPC codec's decode path
//! (`switchboard_proto::codec::Decode`, the code tonic calls on every received message) and as a
//! lone `Frame`.
//!
//! A frame that decodes must re-encode to bytes that decode to the same frame, and the codec must
//! agree with prost whether the frame arrives alone in a batch or not at all.

use prost::Message;
use prost::bytes::Bytes;
use switchboard_proto::codec::Decode;
use switchboard_proto::v1::{Batch, Frame};

fn check(data: &[u8]) {
    // The codec's entry point, as tonic drives it: must answer, never panic.
    let codec = <Batch as Decode>::decode_from(Bytes::copy_from_slice(data));
    assert_eq!(
        codec.is_ok(),
        Batch::decode(data).is_ok(),
        "codec and prost disagree"
    );

    // The same bytes as one frame: a frame that decodes round-trips.
    if let Ok(frame) = Frame::decode(data) {
        let written = frame.encode_to_vec();
        let again = Frame::decode(written.as_slice()).expect("a re-encoded frame decodes");
        assert_eq!(again, frame, "a re-encoded frame decodes differently");
        // Wrapped in a batch, the codec reads back exactly that frame.
        let batch = Batch {
            frames: vec![frame],
        };
        let bytes = Bytes::from(batch.encode_to_vec());
        let read = <Batch as Decode>::decode_from(bytes).expect("a batch of one valid frame");
        assert_eq!(read, batch, "the codec misreads a batch of one frame");
    }
}

fn main() {
    afl::fuzz!(|data: &[u8]| check(data));
}
