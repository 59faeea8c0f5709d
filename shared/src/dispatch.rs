//! The receive loop of a lane, shared by both ends of a link: it reads frames and hands each to
//! the node. A call whose handler answers at once is answered from the loop; one that waits runs
//! as a task of its own. The calls served at once are bounded per lane ([`CallLimit`]), so a flood
//! from one peer turns into `Overloaded` replies instead of unbounded memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use switchboard_proto::v1::{self as wire, frame::Kind};
use tokio::sync::mpsc;

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
    pub(crate) inbound_calls: Arc<CallLimit>,
}

/// Reads frames until the stream ends; returns why it ended.
pub(crate) async fn run_lane(
    node: Arc<NodeInner>,
    context: LaneContext,
    mut reader: FrameReader,
) -> String {
    // On the acceptor's side, the link this node dialed to the same peer: what arrives here is
    // heard from the peer too (the failure detector watches that link). Looked up until found.
    let mut heard_by = context.link.clone();
    loop {
        let frames = match reader.next_batch().await {
            Ok(Some(frames)) => frames,
            Ok(None) => return "noconnection".into(),
            Err(status) => {
                tracing::debug!(peer = %context.peer, code = ?status.code(), error = %status.message(), "lane closed by an error");
                return "noconnection".into();
            }
        };
        if heard_by.as_ref().is_none_or(|l| l.closed.is_cancelled()) {
            heard_by = node.outbound_link(&context.peer, context.incarnation);
        }
        if let Some(link) = &heard_by {
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
        Kind::Suspect(suspicion) => node.suspected(suspicion),
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
    let Some(place) = context.inbound_calls.enter() else {
        let error = NodeError::Overloaded("too many concurrent calls from one peer".into());
        let _ = reply.try_send(Ok(reply_frame(id, Err(error))));
        return;
    };
    // Most handlers answer at once: reply from the receive loop then, and pay for a task only
    // when the handler has to wait.
    match node.serve_call(&context.peer, call) {
        Served::Now(result) => match reply.try_send(Ok(reply_frame(id, result))) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(frame)) => {
                // A reply is owed and must not be dropped: wait for queue space in a task.
                let reply = reply.clone();
                let place = place.keep(&context.inbound_calls);
                tokio::spawn(async move {
                    let _ = reply.send(frame).await;
                    drop(place);
                });
            }
        },
        Served::Later(serve) => {
            let reply = reply.clone();
            let place = place.keep(&context.inbound_calls);
            tokio::spawn(async move {
                let result = serve.await;
                // Waits for queue space: a reply is owed and must not be dropped.
                let _ = reply.send(Ok(reply_frame(id, result))).await;
                drop(place);
            });
        }
    }
}

/// The calls from one peer being served at once, bounded so that a flood turns into
/// `Overloaded` replies instead of unbounded memory.
///
/// A counter, not a semaphore: nothing ever waits for a place, and giving a semaphore's permit
/// back takes its waiters' lock, on every call.
#[derive(Debug)]
pub(crate) struct CallLimit {
    serving: AtomicUsize,
    max: usize,
}

impl CallLimit {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            serving: AtomicUsize::new(0),
            max: max.max(1),
        }
    }

    /// A place for one more call, unless `max` are being served.
    fn enter(&self) -> Option<Place<'_>> {
        if self.serving.fetch_add(1, Ordering::Relaxed) >= self.max {
            self.leave();
            return None;
        }
        Some(Place(self))
    }

    fn leave(&self) {
        self.serving.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A call's place in its [`CallLimit`], given back when dropped.
struct Place<'a>(&'a CallLimit);

impl Place<'_> {
    /// The same place, held by a task that outlives the receive loop's borrow.
    fn keep(self, limit: &Arc<CallLimit>) -> KeptPlace {
        std::mem::forget(self);
        KeptPlace(limit.clone())
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.0.leave();
    }
}

/// A [`Place`] owned by a task.
struct KeptPlace(Arc<CallLimit>);

impl Drop for KeptPlace {
    fn drop(&mut self) {
        self.0.leave();
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
    fn a_call_limit_refuses_past_its_maximum_and_frees_places_when_they_end() {
        let limit = Arc::new(CallLimit::new(2));
        let first = limit.enter().unwrap();
        let second = limit.enter().unwrap().keep(&limit);
        assert!(limit.enter().is_none(), "a third call is refused");
        drop(first);
        let third = limit.enter().unwrap();
        assert!(limit.enter().is_none());
        drop(second);
        drop(third);
        assert_eq!(limit.serving.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn names_from_the_wire_must_be_utf8() {
        let name = text(bytes::Bytes::from_static(b"database"), "service").unwrap();
        assert_eq!(&*name, "database");
        let error = text(bytes::Bytes::from_static(b"\xff\xfe"), "method").unwrap_err();
        assert_eq!(error, "the method of a message is not UTF-8");
    }
}
