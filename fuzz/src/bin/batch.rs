//! Fuzz target `batch`: the hand-written batch decoder (`switchboard_proto::batch::decode`) that
//! every node runs on every batch a peer sends.
//!
//! The hand-written codec must agree with prost on every input, malformed ones included: both
//! accept or both reject, accepted inputs decode to the same batch, and the hand-written encoder
//! writes that batch byte for byte as prost does (so what decodes re-encodes to bytes both
//! decoders read back unchanged). Any disagreement or panic is a crash for AFL.

use prost::Message;
use prost::bytes::Bytes;
use switchboard_proto::batch;
use switchboard_proto::v1::Batch;

fn check(data: &[u8]) {
    let ours = batch::decode(Bytes::copy_from_slice(data));
    let theirs = Batch::decode(data);
    match (ours, theirs) {
        (Ok(ours), Ok(theirs)) => {
            assert_eq!(ours, theirs, "the decoders read different batches");
            let mut written = Vec::new();
            batch::encode(&ours, &mut written);
            assert_eq!(written, theirs.encode_to_vec(), "the encoders disagree");
            let again = batch::decode(Bytes::from(written.clone())).expect("re-encoded batch");
            assert_eq!(again, ours, "a re-encoded batch decodes differently");
            assert_eq!(
                Batch::decode(written.as_slice()).expect("prost re-read"),
                ours
            );
        }
        (Err(_), Err(_)) => {}
        (ours, theirs) => panic!(
            "one decoder accepted what the other refused: ours {:?}, prost {:?}",
            ours.is_ok(),
            theirs.is_ok()
        ),
    }
}

fn main() {
    afl::fuzz!(|data: &[u8]| check(data));
}
