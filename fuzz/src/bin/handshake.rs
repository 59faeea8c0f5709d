//! Fuzz target `handshake`: the checks both sides of a link run on the peer's handshake frames.
//!
//! The acceptor's (`server.rs`) and dialer's (`link.rs`) handshakes interleave these checks with
//! stream I/O, so this target drives the same public functions they call, in the same order, on
//! frames decoded from the input (a `Batch`, as they arrive on the wire): the acceptor reads a
//! `Hello` and validates it into a transcript (`hello_transcript`), then checks the peer's
//! `Proof`; the dialer reads a `Challenge`, validates it (`challenge_transcript`) and checks its
//! proof. The invariants: no panic on
//! any input, an honest proof over the fuzzed transcript verifies, a proof is accepted only if it
//! is exactly that honest proof, and a proof never verifies for the other role (reflection).

use prost::Message;
use switchboard::Cookie;
use switchboard::handshake::{self, HandshakeError, Party, Role, Transcript};
use switchboard_proto::v1::frame::Kind;
use switchboard_proto::v1::{Batch, Lane};

const NAME: &str = "fuzz@local";
const INCARNATION: u64 = 42;

/// Checks a proof as the side expecting `role`'s proof would, and the invariants around it.
fn check_proof(transcript: &Transcript, cookie: &Cookie, role: Role, proof: &[u8]) {
    let honest = transcript.prove(cookie, role);
    let accepted = transcript.verify(cookie, role, proof);
    assert_eq!(
        accepted.is_ok(),
        proof == honest.as_slice(),
        "a proof was judged other than by equality with the honest one"
    );
    assert!(transcript.verify(cookie, role, &honest).is_ok());
    let other = match role {
        Role::Dialer => Role::Acceptor,
        Role::Acceptor => Role::Dialer,
    };
    assert_eq!(
        transcript.verify(cookie, other, &honest),
        Err(HandshakeError::BadProof),
        "a proof verified for the other role"
    );
}

/// The acceptor: the first frame must be a valid `Hello`, the second a `Proof`.
fn accept(frames: &[Option<Kind>], cookie: &Cookie) -> Result<(), HandshakeError> {
    let Some(Some(Kind::Hello(hello))) = frames.first() else {
        return Err(HandshakeError::Unexpected("expected hello"));
    };
    let me = Party {
        name: NAME.into(),
        incarnation: INCARNATION,
        nonce: vec![7; handshake::NONCE_LEN],
    };
    let transcript = handshake::hello_transcript(hello, me)?;
    let Some(Some(Kind::Proof(proof))) = frames.get(1) else {
        return Err(HandshakeError::Unexpected("expected proof"));
    };
    check_proof(&transcript, cookie, Role::Dialer, &proof.proof);
    transcript.verify(cookie, Role::Dialer, &proof.proof)
}

/// The dialer: the first frame must be a valid `Challenge` carrying the acceptor's proof.
fn dial(frames: &[Option<Kind>], cookie: &Cookie) -> Result<(), HandshakeError> {
    let Some(Some(Kind::Challenge(challenge))) = frames.first() else {
        return Err(HandshakeError::Unexpected("expected a challenge"));
    };
    let me = Party {
        name: NAME.into(),
        incarnation: INCARNATION,
        nonce: vec![9; handshake::NONCE_LEN],
    };
    let transcript = handshake::challenge_transcript(challenge, me, Lane::Control)?;
    check_proof(&transcript, cookie, Role::Acceptor, &challenge.proof);
    transcript.verify(cookie, Role::Acceptor, &challenge.proof)
}

fn check(data: &[u8], cookie: &Cookie) {
    let Ok(batch) = Batch::decode(data) else {
        return;
    };
    let frames: Vec<Option<Kind>> = batch.frames.into_iter().map(|f| f.kind).collect();
    // Errors are the expected answer to bad input; only panics and broken invariants are bugs.
    let _ = accept(&frames, cookie);
    let _ = dial(&frames, cookie);
}

fn main() {
    let cookie = Cookie::new("fuzz-cookie-0123456789abcdef").expect("a valid cookie");
    afl::fuzz!(|data: &[u8]| check(data, &cookie));
}
