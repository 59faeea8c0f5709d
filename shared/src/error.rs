//! The runtime's error type: what a call, cast or broadcast can fail with.
//!
//! A failure is the same value whether the provider was local or remote, so a service never
//! needs to know where its callee runs. Remote failures travel as `switchboard.v1.Error` and are
//! turned back into [`NodeError`] here, at the boundary.

use std::time::Duration;

use switchboard_proto::v1 as wire;

use crate::cookie::CookieError;
use crate::handshake::HandshakeError;

/// An error a service returns to its caller: a stable snake_case `code` and a human message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ServiceError {
    /// Stable, machine-readable, e.g. `room_not_found`.
    pub code: String,
    /// A human sentence.
    pub message: String,
}

impl ServiceError {
    /// An application error with a stable code.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// Everything that can go wrong talking to a service through the runtime.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NodeError {
    /// The service answered with an application error.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// No reachable node provides the service.
    #[error("no provider for service {service}")]
    NoProvider {
        /// The service asked for.
        service: String,
    },
    /// The node serving the call went down before replying. `maybe_applied` tells whether the
    /// request may have run there: a non-idempotent call in that state is never retried.
    #[error("node {node} went down ({reason}) before replying")]
    NodeDown {
        /// The node that failed.
        node: String,
        /// Why it is considered down: `noconnection`, `heartbeat_timeout`, `shutdown`, `restarted`.
        reason: String,
        /// Whether the request had been handed to the link when the node failed.
        maybe_applied: bool,
    },
    /// No reply within the deadline.
    #[error("call to {service} timed out after {timeout:?}")]
    Timeout {
        /// The service called.
        service: String,
        /// The deadline that passed.
        timeout: Duration,
    },
    /// A queue is full: the peer or this node cannot take more work now.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// A frame exceeds the configured maximum size.
    #[error("frame of {size} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// Encoded size of the frame.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// The node is shutting down and takes no new work.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// A handshake failed.
    #[error("handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
    /// The network or the peer broke the protocol.
    #[error("transport error: {0}")]
    Transport(String),
    /// The node could not be configured.
    #[error("configuration error: {0}")]
    Config(String),
}

impl From<CookieError> for NodeError {
    fn from(error: CookieError) -> Self {
        NodeError::Config(error.to_string())
    }
}

impl NodeError {
    /// Whether an idempotent request may be retried on another provider after this error.
    pub(crate) fn is_retryable(&self) -> bool {
        matches!(
            self,
            NodeError::NodeDown { .. }
                | NodeError::NoProvider { .. }
                | NodeError::ShuttingDown
                | NodeError::Overloaded(_)
                | NodeError::Transport(_)
        )
    }

    /// Whether a non-idempotent request may be retried: only when it certainly never ran.
    pub(crate) fn never_applied(&self) -> bool {
        match self {
            NodeError::NodeDown { maybe_applied, .. } => !maybe_applied,
            NodeError::NoProvider { .. } | NodeError::ShuttingDown | NodeError::Overloaded(_) => {
                true
            }
            _ => false,
        }
    }

    /// The wire form of an error a node reports for a call it received.
    pub(crate) fn to_wire(&self) -> wire::Error {
        let (kind, code) = match self {
            NodeError::Service(e) => (wire::ErrorKind::Application, e.code.as_str()),
            NodeError::NoProvider { .. } => (wire::ErrorKind::NoProvider, "no_provider"),
            NodeError::Overloaded(_) => (wire::ErrorKind::Overloaded, "overloaded"),
            NodeError::ShuttingDown => (wire::ErrorKind::ShuttingDown, "shutting_down"),
            NodeError::Timeout { .. } => (wire::ErrorKind::Timeout, "timeout"),
            _ => (wire::ErrorKind::Application, "internal"),
        };
        let message = match self {
            NodeError::Service(e) => e.message.clone(),
            other => other.to_string(),
        };
        wire::Error {
            kind: kind as i32,
            code: code.to_owned(),
            message,
        }
    }

    /// Turns an error reply from `node` for a call to `service` back into a [`NodeError`].
    pub(crate) fn from_wire(error: wire::Error, service: &str, timeout: Duration) -> Self {
        match wire::ErrorKind::try_from(error.kind).unwrap_or(wire::ErrorKind::Application) {
            wire::ErrorKind::Application => {
                NodeError::Service(ServiceError::new(error.code, error.message))
            }
            wire::ErrorKind::NoProvider => NodeError::NoProvider {
                service: service.to_owned(),
            },
            wire::ErrorKind::Overloaded => NodeError::Overloaded(error.message),
            wire::ErrorKind::ShuttingDown => NodeError::ShuttingDown,
            wire::ErrorKind::Timeout => NodeError::Timeout {
                service: service.to_owned(),
                timeout,
            },
        }
    }
}

impl From<NodeError> for tonic::Status {
    fn from(error: NodeError) -> Self {
        let message = error.to_string();
        match error {
            NodeError::Handshake(_) => tonic::Status::unauthenticated(message),
            NodeError::FrameTooLarge { .. } => tonic::Status::resource_exhausted(message),
            NodeError::Overloaded(_) => tonic::Status::resource_exhausted(message),
            NodeError::ShuttingDown | NodeError::NodeDown { .. } | NodeError::NoProvider { .. } => {
                tonic::Status::unavailable(message)
            }
            NodeError::Timeout { .. } => tonic::Status::deadline_exceeded(message),
            NodeError::Service(_) | NodeError::Transport(_) | NodeError::Config(_) => {
                tonic::Status::internal(message)
            }
        }
    }
}
