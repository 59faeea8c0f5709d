//! Writes the seed corpus of every fuzz target (`fuzz/corpus/<target>/`): small valid encodings
//! of each frame kind the decoders special-case, plus a few malformed ones, so AFL starts from
//! inputs that reach deep into the decoders instead of rediscovering protobuf from nothing.
//! Run as `cargo run --bin seeds` from `fuzz/`; the output is committed.

use std::fs;
use std::path::Path;

use prost::Message;
use switchboard_proto::v1::frame::Kind;
use switchboard_proto::v1::{Batch, Call, Cast, Challenge, Frame, Hello, Proof, Reply};

fn frame(kind: Kind) -> Frame {
    Frame { kind: Some(kind) }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::create_dir_all(dir).expect("corpus directory");
    fs::write(dir.join(name), bytes).expect("seed file");
}

fn main() {
    let root = Path::new("corpus");
    let call = frame(Kind::Call(Call {
        service: "echo".into(),
        method: "ping".into(),
        payload: b"hello".to_vec().into(),
        ..Default::default()
    }));
    let cast = frame(Kind::Cast(Cast {
        service: "log".into(),
        method: "append".into(),
        payload: b"line".to_vec().into(),
        ..Default::default()
    }));
    let reply = frame(Kind::Reply(Reply::default()));
    let hello = frame(Kind::Hello(Hello {
        version: 1,
        name: "http@a".into(),
        incarnation: 7,
        nonce: vec![1; 32].into(),
        lane: 1,
        ..Default::default()
    }));
    let proof = frame(Kind::Proof(Proof {
        proof: vec![0; 32].into(),
    }));
    let challenge = frame(Kind::Challenge(Challenge {
        version: 1,
        name: "database@b".into(),
        incarnation: 9,
        nonce: vec![2; 32].into(),
        proof: vec![3; 32].into(),
        ..Default::default()
    }));

    let batches = [
        ("calls", vec![call.clone(), call.clone()]),
        ("mixed", vec![call.clone(), cast.clone(), reply.clone()]),
        ("handshake", vec![hello.clone(), proof.clone()]),
        ("challenge", vec![challenge.clone()]),
    ];
    for (name, frames) in batches {
        let bytes = Batch { frames }.encode_to_vec();
        write(&root.join("batch"), name, &bytes);
        write(&root.join("handshake"), name, &bytes);
        // Malformed: the same batch cut short, and with its first length prefix inflated.
        write(
            &root.join("batch"),
            &format!("{name}-cut"),
            &bytes[..bytes.len() / 2],
        );
        let mut inflated = bytes.clone();
        inflated[1] = 0x7f;
        write(&root.join("batch"), &format!("{name}-inflated"), &inflated);
    }
    for (name, f) in [
        ("call", &call),
        ("cast", &cast),
        ("reply", &reply),
        ("hello", &hello),
        ("challenge", &challenge),
    ] {
        write(&root.join("frame"), name, &f.encode_to_vec());
    }
    write(&root.join("frame"), "empty", b"");
    write(
        &root.join("frame"),
        "huge-length",
        &[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
    );
}
