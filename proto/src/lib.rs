//! Generated wire types of Switchboard's inter-node protocol (`switchboard.v1`).
//!
//! Wire types stay in this crate; the runtime converts them to its own domain types at the
//! boundary, so a change of wire format never ripples through the services.

#![allow(unreachable_pub, missing_debug_implementations, clippy::all)]

/// `switchboard.v1`: the `Node` service and its frames.
pub mod v1 {
    tonic::include_proto!("switchboard.v1");
}
