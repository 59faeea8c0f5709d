//! The receive loop of a lane, shared by both ends of a link: it reads frames and hands each to
//! the node. Calls run as tasks of their own, bounded per lane by a semaphore so a flood from
//! one peer turns into `Overloaded` replies instead of unbounded memory.

use std::sync::Arc;

use switchboard_proto::v1::{self as wire, frame::Kind};
use tokio::sync::{Semaphore, mpsc};

use crate::error::NodeError;
use crate::lane::{FrameReader, LaneSender};
use crate::link::Link;
use crate::node::{InboundCall, NodeInner, Served};
use crate::service::{ByteString, Request};

/// Who is on the other end of a lane and how to answer them.
#[derive(Debug, Clone)]
pub(crate) struct LaneContext {
    /// Shared, not copied, by every call served for this peer.
    pub(crate) peer: Arc<str>,
    pub(crate) incarnation: u64,
    pub(crate) reply: LaneSender,
    /// Set on the dialer's side: replies arriving here complete this link's calls.
    pub(crate) link: Option<Arc<Link>>,
    pub(crate) inbound_calls: Arc<Semaphore>,
}

/// Reads frames until the stream ends; returns why it ended.
pub(crate) async fn run_lane(
    node: Arc<NodeInner>,
    context: LaneContext,
    mut reader: FrameReader,
) -> String {
    loop {
        let frames = match reader.next_batch().await {
            Ok(Some(frames)) => frames,
            Ok(None) => return "noconnection".into(),
            Err(status) => {
                tracing::debug!(peer = %context.peer, code = ?status.code(), error = %status.message(), "lane closed by an error");
                return "noconnection".into();
            }
        };
        if let Some(link) = &context.link {
            link.heard();
        }
        for frame in frames {
            if let Err(violation) = handle(&node, &context, frame) {
                tracing::warn!(peer = %context.peer, error = %violation, "protocol violation; closing the lane");
                return "protocol_error".into();
            }
        }
    }
}

fn handle(node: &Arc<NodeInner>, context: &LaneContext, frame: wire::Frame) -> Result<(), String> {
    let Some(kind) = frame.kind else {
        return Err("empty frame".into());
    };
    match kind {
        Kind::Heartbeat(beat) => {
            let _ = context.reply.try_send(Ok(wire::Frame {
                kind: Some(Kind::HeartbeatAck(beat)),
            }));
        }
        Kind::HeartbeatAck(_) => {}
        Kind::Call(call) => {
            let id = call.id;
            let inbound = InboundCall {
                service: text(call.service, "service")?,
                request: Request {
                    method: text(call.method, "method")?,
                    payload: call.payload,
                    trace_id: text(call.trace_id, "trace id")?,
                },
                timeout_ms: call.timeout_ms,
            };
            serve_call(node, context, id, inbound)
        }
        Kind::Reply(reply) => {
            if let Some(link) = &context.link {
                link.complete(reply, node.config.call_timeout());
            }
        }
        Kind::Cast(cast) => node.serve_cast(
            &text(cast.service, "service")?,
            Request {
                method: text(cast.method, "method")?,
                payload: cast.payload,
                trace_id: text(cast.trace_id, "trace id")?,
            },
        ),
        Kind::GroupCast(cast) => node.deliver_group(
            &text(cast.group, "group")?,
            Request {
                method: text(cast.method, "method")?,
                payload: cast.payload,
                trace_id: text(cast.trace_id, "trace id")?,
            },
        ),
        Kind::Advertise(advertisement) => {
            node.update_advertisement(&context.peer, context.incarnation, advertisement)
        }
        Kind::Gossip(gossip) => node.learn(gossip),
        Kind::Goodbye(goodbye) => {
            node.peer_left(&context.peer, context.incarnation, &goodbye.reason)
        }
        Kind::Hello(_) | Kind::Challenge(_) | Kind::Proof(_) | Kind::Welcome(_) => {
            return Err("handshake frame on an open lane".into());
        }
    }
    Ok(())
}

/// A name or trace id from the wire as text: checked once, then shared without copying.
fn text(bytes: bytes::Bytes, what: &str) -> Result<ByteString, String> {
    ByteString::try_from(bytes).map_err(|_| format!("the {what} of a message is not UTF-8"))
}

fn serve_call(node: &Arc<NodeInner>, context: &LaneContext, id: u64, call: InboundCall) {
    let reply = &context.reply;
    let Ok(permit) = context.inbound_calls.clone().try_acquire_owned() else {
        let error = NodeError::Overloaded("too many concurrent calls from one peer".into());
        let _ = reply.try_send(Ok(reply_frame(id, Err(error))));
        return;
    };
    // Most handlers answer at once: reply from the receive loop then, and pay for a task only
    // when the handler has to wait.
    match node.serve_call(&context.peer, call) {
        Served::Now(result) => match reply.try_send(Ok(reply_frame(id, result))) {
            Ok(()) => drop(permit),
            Err(mpsc::error::TrySendError::Full(frame)) => {
                // A reply is owed and must not be dropped: wait for queue space in a task.
                let reply = reply.clone();
                tokio::spawn(async move {
                    let _ = reply.send(frame).await;
                    drop(permit);
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => drop(permit),
        },
        Served::Later(serve) => {
            let reply = reply.clone();
            tokio::spawn(async move {
                let result = serve.await;
                // Waits for queue space: a reply is owed and must not be dropped.
                let _ = reply.send(Ok(reply_frame(id, result))).await;
                drop(permit);
            });
        }
    }
}

fn reply_frame(id: u64, result: Result<bytes::Bytes, NodeError>) -> wire::Frame {
    let result = match result {
        Ok(bytes) => wire::reply::Result::Ok(bytes),
        Err(error) => wire::reply::Result::Error(error.to_wire()),
    };
    wire::Frame {
        kind: Some(Kind::Reply(wire::Reply {
            id,
            result: Some(result),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_the_wire_must_be_utf8() {
        let name = text(bytes::Bytes::from_static(b"database"), "service").unwrap();
        assert_eq!(&*name, "database");
        let error = text(bytes::Bytes::from_static(b"\xff\xfe"), "method").unwrap_err();
        assert_eq!(error, "the method of a message is not UTF-8");
    }
}
