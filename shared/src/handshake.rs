//! The cookie handshake that opens every lane of a link.
//!
//! Erlang's handshake is MD5 over a 32-bit challenge; this one is a mutual challenge-response:
//!
//! 1. dialer → acceptor: `Hello { version, name, incarnation, nonce_d, lane }`
//! 2. acceptor → dialer: `Challenge { version, name, incarnation, nonce_a,
//!    proof_a = HMAC-SHA256(cookie, "acceptor" ‖ transcript) }`
//! 3. dialer checks `proof_a`, then → `Proof { proof_d = HMAC-SHA256(cookie, "dialer" ‖ transcript) }`
//! 4. acceptor checks `proof_d`, then → `Welcome`; the lane is open.
//!
//! The transcript binds the protocol version, the lane, both names, both incarnations and both
//! nonces (each length-prefixed, so no two transcripts share an encoding). Consequences:
//! the cookie never crosses the wire; each side proves knowledge of it; a recorded transcript is
//! useless because the other side's nonce is fresh; a proof made for one node cannot be relayed to
//! another (the names differ) or reflected back (the role labels differ). Proofs are compared in
//! constant time. The dialer proves itself only to an acceptor that proved itself first.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use switchboard_proto::v1::{Challenge, Hello, Lane};

use crate::cookie::Cookie;

/// The protocol version both sides must speak.
pub const PROTOCOL_VERSION: u32 = 1;
/// Nonce length in bytes (256 bits; the floor is 128).
pub const NONCE_LEN: usize = 32;
const MIN_NONCE_LEN: usize = 16;

/// Why a handshake failed. The messages are safe to log: they never carry a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The peer's proof did not match: it does not know the cookie, or the transcript was replayed.
    #[error("the peer's proof is wrong (a different cookie, or a replayed handshake)")]
    BadProof,
    /// The peer speaks another protocol version.
    #[error("protocol version {0} is not supported (this node speaks {PROTOCOL_VERSION})")]
    Version(u32),
    /// The peer sent a nonce shorter than 128 bits.
    #[error("the peer's nonce is too short")]
    WeakNonce,
    /// The peer sent something other than the next handshake step.
    #[error("unexpected frame during the handshake: {0}")]
    Unexpected(&'static str),
    /// The peer sent an empty or oversized node name.
    #[error("invalid node name")]
    BadName,
    /// The peer did not complete TLS: it spoke plaintext to a node with TLS, or presented no
    /// certificate from the cluster's CA.
    #[error("the peer failed the TLS handshake (no TLS, or no certificate from this cluster's CA)")]
    Tls,
    /// The peer is this very node (a seed that resolves to ourselves).
    #[error("the peer is this node")]
    SelfConnection,
}

/// One side's identity within a handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Party {
    /// Node name.
    pub name: String,
    /// Incarnation of the process.
    pub incarnation: u64,
    /// The nonce this side contributed.
    pub nonce: Vec<u8>,
}

/// Everything both proofs are computed over.
#[derive(Debug, Clone)]
pub struct Transcript {
    /// Protocol version.
    pub version: u32,
    /// Which lane is being opened.
    pub lane: Lane,
    /// The side that dialed.
    pub dialer: Party,
    /// The side that accepted.
    pub acceptor: Party,
}

/// The role a proof is made for; part of the MAC input so that a proof cannot be reflected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The side that opened the stream.
    Dialer,
    /// The side that accepted it.
    Acceptor,
}

impl Role {
    fn label(self) -> &'static [u8] {
        match self {
            Role::Dialer => b"switchboard/v1 dialer",
            Role::Acceptor => b"switchboard/v1 acceptor",
        }
    }
}

/// A fresh random nonce.
pub fn fresh_nonce() -> Vec<u8> {
    let mut nonce = vec![0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    nonce
}

/// Checks the fields a peer controls before any MAC is computed over them.
pub fn check_peer(version: u32, name: &str, nonce: &[u8]) -> Result<(), HandshakeError> {
    if version != PROTOCOL_VERSION {
        return Err(HandshakeError::Version(version));
    }
    if name.is_empty() || name.len() > 255 {
        return Err(HandshakeError::BadName);
    }
    if nonce.len() < MIN_NONCE_LEN {
        return Err(HandshakeError::WeakNonce);
    }
    Ok(())
}

/// The acceptor's checks of a dialer's `hello` (its fields, that it is not this node itself, a
/// known lane), and the transcript both sides then prove, with `acceptor` as this node.
pub fn hello_transcript(hello: &Hello, acceptor: Party) -> Result<Transcript, HandshakeError> {
    check_peer(hello.version, &hello.name, &hello.nonce)?;
    if hello.name == acceptor.name && hello.incarnation == acceptor.incarnation {
        return Err(HandshakeError::SelfConnection);
    }
    let lane = Lane::try_from(hello.lane).map_err(|_| HandshakeError::Unexpected("lane"))?;
    Ok(Transcript {
        version: PROTOCOL_VERSION,
        lane,
        dialer: Party {
            name: hello.name.clone(),
            incarnation: hello.incarnation,
            nonce: hello.nonce.to_vec(),
        },
        acceptor,
    })
}

/// The dialer's checks of an acceptor's `challenge` on `lane`, and the transcript both sides
/// prove, with `dialer` as this node.
pub fn challenge_transcript(
    challenge: &Challenge,
    dialer: Party,
    lane: Lane,
) -> Result<Transcript, HandshakeError> {
    check_peer(challenge.version, &challenge.name, &challenge.nonce)?;
    Ok(Transcript {
        version: PROTOCOL_VERSION,
        lane,
        dialer,
        acceptor: Party {
            name: challenge.name.clone(),
            incarnation: challenge.incarnation,
            nonce: challenge.nonce.to_vec(),
        },
    })
}

impl Transcript {
    fn mac(&self, cookie: &Cookie, role: Role) -> Hmac<Sha256> {
        // `new_from_slice` accepts keys of any length for HMAC; it cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(cookie.expose())
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        let mut field = |bytes: &[u8]| {
            mac.update(&(bytes.len() as u64).to_be_bytes());
            mac.update(bytes);
        };
        field(role.label());
        field(&self.version.to_be_bytes());
        field(&(self.lane as i32).to_be_bytes());
        for party in [&self.dialer, &self.acceptor] {
            field(party.name.as_bytes());
            field(&party.incarnation.to_be_bytes());
            field(&party.nonce);
        }
        mac
    }

    /// The proof `role` sends.
    pub fn prove(&self, cookie: &Cookie, role: Role) -> Vec<u8> {
        self.mac(cookie, role).finalize().into_bytes().to_vec()
    }

    /// Checks, in constant time, the proof the other side sent for `role`.
    pub fn verify(&self, cookie: &Cookie, role: Role, proof: &[u8]) -> Result<(), HandshakeError> {
        self.mac(cookie, role)
            .verify_slice(proof)
            .map_err(|_| HandshakeError::BadProof)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transcript(dialer_nonce: u8, acceptor_nonce: u8) -> Transcript {
        Transcript {
            version: PROTOCOL_VERSION,
            lane: Lane::Control,
            dialer: Party {
                name: "http@a".into(),
                incarnation: 7,
                nonce: vec![dialer_nonce; 32],
            },
            acceptor: Party {
                name: "database@b".into(),
                incarnation: 9,
                nonce: vec![acceptor_nonce; 32],
            },
        }
    }

    fn cookie() -> Cookie {
        Cookie::new("test-cookie-0123456789").unwrap()
    }

    #[test]
    fn digest_is_pinned() {
        // Pins the exact MAC input encoding: changing it silently would split mixed-version clusters.
        let proof = transcript(1, 2).prove(&cookie(), Role::Dialer);
        assert_eq!(
            hex::encode(proof),
            "ee456427688632ef48394f6614626f5c14e25bdcd6c91adb243ef4750ff9e3ad"
        );
    }

    #[test]
    fn proofs_verify_only_for_their_role_cookie_and_nonces() {
        let t = transcript(1, 2);
        let proof = t.prove(&cookie(), Role::Dialer);
        assert!(t.verify(&cookie(), Role::Dialer, &proof).is_ok());
        // Reflection: a dialer proof is not an acceptor proof.
        assert_eq!(
            t.verify(&cookie(), Role::Acceptor, &proof),
            Err(HandshakeError::BadProof)
        );
        // Another cookie.
        let other = Cookie::new("another-cookie-0123456789").unwrap();
        assert_eq!(
            t.verify(&other, Role::Dialer, &proof),
            Err(HandshakeError::BadProof)
        );
        // Replay: the acceptor's fresh nonce differs.
        assert_eq!(
            transcript(1, 3).verify(&cookie(), Role::Dialer, &proof),
            Err(HandshakeError::BadProof)
        );
        // Relay to another node: the acceptor's name differs.
        let mut relayed = transcript(1, 2);
        relayed.acceptor.name = "database@c".into();
        assert_eq!(
            relayed.verify(&cookie(), Role::Dialer, &proof),
            Err(HandshakeError::BadProof)
        );
    }

    #[test]
    fn weak_peers_are_refused_before_any_mac() {
        assert_eq!(
            check_peer(2, "a", &[0; 32]),
            Err(HandshakeError::Version(2))
        );
        assert_eq!(
            check_peer(PROTOCOL_VERSION, "a", &[0; 8]),
            Err(HandshakeError::WeakNonce)
        );
        assert_eq!(
            check_peer(PROTOCOL_VERSION, "", &[0; 32]),
            Err(HandshakeError::BadName)
        );
    }
}
