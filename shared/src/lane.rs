//! The plumbing of one lane (one gRPC stream) shared by both ends of a link: the batching
//! writer and the frame reader.
//!
//! Writers coalesce every frame already queued into one `Batch` per write (bounded in bytes),
//! which is what lets a busy link amortise HTTP/2 and syscall costs over many small messages. On
//! a busy lane a frame that finds the queue otherwise empty waits one scheduler turn for the
//! frames that are about to follow it; on an idle lane it goes at once.
//! Queues are bounded: a full lane queue is backpressure for a call and `Overloaded` for a cast.
//!
//! Both ends count the frames each lane carries ([`Tally`]): once per batch, not per frame, with
//! relaxed atomic adds, into the node's totals and, on the dialer's side, its link's.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use futures::Stream;
use prometheus::IntCounter;
use switchboard_proto::v1::{Batch, Frame, Reply, frame::Kind, reply};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// What a writer queue carries: a frame, or the status that ends the stream (acceptor side).
pub(crate) type Outbound = Result<Frame, tonic::Status>;

/// Sending half of a lane's queue.
pub(crate) type LaneSender = mpsc::Sender<Outbound>;

/// Frames larger than this travel on the bulk lane, so they never delay small calls.
pub(crate) const BULK_THRESHOLD: usize = 64 * 1024;

/// How soon a one-way message should go, which picks its lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Urgency {
    /// Small frames on the data lane, beside calls; large ones on the bulk lane.
    Prompt,
    /// Always the bulk lane, on the bulk thread at a low CPU priority: traffic nobody
    /// waits on (activity tails, statistics), which must not slow calls down.
    Background,
}

/// A batch is closed once it holds this many bytes; one larger frame still goes alone.
const BATCH_BYTES: usize = 256 * 1024;

/// Frames a batch has room for before it grows.
const TYPICAL_BATCH_FRAMES: usize = 64;

/// An upper bound on `frame`'s encoded size, cheap for the frames that carry payloads (every
/// call, cast and reply), exact for the rest.
///
/// Computing a frame's exact size walks every field, and prost walks it again for each level of
/// nesting when it encodes; on the hot path the bound is enough to pick a lane and fill a batch.
/// The slack covers field keys and length prefixes: at most 11 bytes per field (a key and a
/// 10-byte varint), eight fields, and the frame and oneof wrappers around them.
pub(crate) fn size_bound(frame: &Frame) -> usize {
    const SLACK: usize = 128;
    match &frame.kind {
        Some(Kind::Call(call)) => {
            call.payload.len()
                + call.service.len()
                + call.method.len()
                + call.trace_id.len()
                + SLACK
        }
        Some(Kind::Cast(cast)) => {
            cast.payload.len()
                + cast.service.len()
                + cast.method.len()
                + cast.trace_id.len()
                + SLACK
        }
        Some(Kind::GroupCast(cast)) => {
            cast.payload.len() + cast.group.len() + cast.method.len() + cast.trace_id.len() + SLACK
        }
        Some(Kind::Reply(Reply {
            result: Some(reply::Result::Ok(payload)),
            ..
        })) => payload.len() + SLACK,
        _ => prost::Message::encoded_len(frame),
    }
}

/// The frames one link's three lanes carried since it opened, each way.
#[derive(Debug, Default)]
pub(crate) struct LinkTraffic {
    sent: AtomicU64,
    received: AtomicU64,
}

impl LinkTraffic {
    /// Frames written so far.
    pub(crate) fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Frames read so far.
    pub(crate) fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

/// Where one lane counts the frames it writes and reads: the node's totals (every lane, both
/// ends) and, on the side that dialed the link, that link's own counters.
///
/// Counting happens once per batch, with relaxed atomic adds: nothing orders other memory by
/// these counters, and a reader only wants a recent value to take a difference of.
#[derive(Debug, Clone)]
pub(crate) struct Tally {
    sent: IntCounter,
    received: IntCounter,
    link: Option<Arc<LinkTraffic>>,
}

impl Tally {
    /// Counts into the node's totals (from its [`crate::metrics::Metrics`]) and, if given, into
    /// a link's.
    pub(crate) fn new(metrics: &crate::metrics::Metrics, link: Option<Arc<LinkTraffic>>) -> Self {
        Self {
            sent: metrics.frames_sent.clone(),
            received: metrics.frames_received.clone(),
            link,
        }
    }

    fn sent(&self, frames: usize) {
        self.sent.inc_by(frames as u64);
        if let Some(link) = &self.link {
            link.sent.fetch_add(frames as u64, Ordering::Relaxed);
        }
    }

    fn received(&self, frames: usize) {
        self.received.inc_by(frames as u64);
        if let Some(link) = &self.link {
            link.received.fetch_add(frames as u64, Ordering::Relaxed);
        }
    }
}

/// A stream of batches drained from a lane queue; ends when the queue closes, when the token is
/// cancelled, or after yielding a terminal status.
pub(crate) struct BatchingStream {
    rx: mpsc::Receiver<Outbound>,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    pending_error: Option<tonic::Status>,
    done: bool,
    /// A frame taken while it was alone in the queue, held for one scheduler turn.
    held: Option<Frame>,
    /// Frames in the batch this stream yielded last.
    last_batch: usize,
    tally: Tally,
}

impl std::fmt::Debug for BatchingStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchingStream")
            .field("done", &self.done)
            .finish()
    }
}

impl BatchingStream {
    pub(crate) fn new(
        rx: mpsc::Receiver<Outbound>,
        token: CancellationToken,
        tally: Tally,
    ) -> Self {
        Self {
            rx,
            cancelled: Box::pin(token.cancelled_owned()),
            pending_error: None,
            done: false,
            held: None,
            last_batch: 0,
            tally,
        }
    }

    /// Starts the stream with `frame`, taken off the queue before the stream existed (the frame
    /// that woke a dormant lane), ahead of everything still queued.
    pub(crate) fn led_by(mut self, frame: Frame) -> Self {
        self.held = Some(frame);
        self
    }

    /// The next item of the queue; once cancelled, only what is queued already.
    fn next(&mut self, cx: &mut Context<'_>, cancelled: bool) -> Poll<Option<Outbound>> {
        if cancelled {
            Poll::Ready(self.rx.try_recv().ok())
        } else {
            self.rx.poll_recv(cx)
        }
    }
}

impl Stream for BatchingStream {
    type Item = Result<Batch, tonic::Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(status) = this.pending_error.take() {
            this.done = true;
            return Poll::Ready(Some(Err(status)));
        }
        // Once cancelled, what is already queued (a goodbye, owed replies) still goes out, then
        // the stream ends; nothing queued later is waited for.
        let cancelled = this.cancelled.as_mut().poll(cx).is_ready();
        let first = match this.held.take() {
            Some(frame) => frame,
            None => match this.next(cx, cancelled) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(status))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(status)));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    if !cancelled && this.last_batch > 1 && this.rx.is_empty() {
                        // Busy, and this frame is alone: the tasks that are ready to run (the
                        // callers that just got their replies, the rest of the batch the peer
                        // sent) would each queue a frame a moment after this write. Hold it
                        // for one turn of the scheduler so that they share it. Idle, a frame
                        // goes at once, so a lone call pays nothing.
                        this.held = Some(frame);
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    frame
                }
            },
        };
        let mut bytes = size_bound(&first);
        // Sized for what is queued now, up to a typical batch: a small batch never regrows, and
        // a full queue (thousands of casts) does not make every batch a huge allocation.
        let mut frames = Vec::with_capacity(this.rx.len().min(TYPICAL_BATCH_FRAMES) + 1);
        frames.push(first);
        while bytes < BATCH_BYTES {
            match this.rx.try_recv() {
                Ok(Ok(frame)) => {
                    bytes += size_bound(&frame);
                    frames.push(frame);
                }
                Ok(Err(status)) => {
                    this.pending_error = Some(status);
                    break;
                }
                Err(_) => break,
            }
        }
        this.last_batch = frames.len();
        // Counted as it is handed to the connection: a batch yielded is a batch written, unless
        // the connection dies under it, and then the counters no longer matter to that link.
        this.tally.sent(frames.len());
        Poll::Ready(Some(Ok(Batch { frames })))
    }
}

/// What a dialer writes on a lane: the handshake's frames, each in a write of its own as the
/// handshake produces them, then, once the handshake's sender is dropped, the lane's batches.
/// The lane's queue may fill while the handshake runs; nothing in it goes before the proof.
pub(crate) fn after_handshake(
    handshake: mpsc::Receiver<Frame>,
    lane: BatchingStream,
) -> impl Stream<Item = Batch> + Send + 'static {
    let tally = lane.tally.clone();
    let handshake = tokio_stream::wrappers::ReceiverStream::new(handshake).map(move |frame| {
        tally.sent(1);
        Batch {
            frames: vec![frame],
        }
    });
    // Requests carry no terminal status; `map_while` just unwraps the batches.
    handshake.chain(lane.map_while(Result::ok))
}

/// Reads frames one at a time from a stream of batches.
#[derive(Debug)]
pub(crate) struct FrameReader {
    stream: tonic::Streaming<Batch>,
    buffered: VecDeque<Frame>,
    tally: Tally,
}

impl FrameReader {
    pub(crate) fn new(stream: tonic::Streaming<Batch>, tally: Tally) -> Self {
        Self {
            stream,
            buffered: VecDeque::new(),
            tally,
        }
    }

    /// The next batch off the wire, counted.
    async fn read(&mut self) -> Result<Option<Vec<Frame>>, tonic::Status> {
        let frames = self.stream.message().await?.map(|batch| batch.frames);
        if let Some(frames) = &frames {
            self.tally.received(frames.len());
        }
        Ok(frames)
    }

    /// The next frame; `Ok(None)` when the peer closed the stream cleanly.
    pub(crate) async fn next(&mut self) -> Result<Option<Frame>, tonic::Status> {
        loop {
            if let Some(frame) = self.buffered.pop_front() {
                return Ok(Some(frame));
            }
            match self.read().await? {
                Some(frames) => self.buffered.extend(frames),
                None => return Ok(None),
            }
        }
    }

    /// The next whole batch (after any buffered frames), for the hot receive loop.
    pub(crate) async fn next_batch(&mut self) -> Result<Option<Vec<Frame>>, tonic::Status> {
        if !self.buffered.is_empty() {
            return Ok(Some(self.buffered.drain(..).collect()));
        }
        self.read().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use switchboard_proto::v1::{Call, Cast, GroupCast, Heartbeat};

    fn call(id: u64) -> Frame {
        Frame {
            kind: Some(Kind::Call(Call {
                id,
                ..Call::default()
            })),
        }
    }

    fn ids(batch: &Batch) -> Vec<u64> {
        batch
            .frames
            .iter()
            .map(|frame| match &frame.kind {
                Some(Kind::Call(call)) => call.id,
                _ => u64::MAX,
            })
            .collect()
    }

    /// A tally of its own, counting for a link.
    fn tally() -> Tally {
        Tally {
            sent: IntCounter::new("sent", "frames sent").unwrap(),
            received: IntCounter::new("received", "frames received").unwrap(),
            link: Some(Arc::default()),
        }
    }

    /// Polls `stream` once, as its task would.
    fn poll_once(stream: &mut BatchingStream) -> Poll<Option<Result<Batch, tonic::Status>>> {
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        Pin::new(stream).poll_next(&mut cx)
    }

    #[test]
    fn an_idle_lane_writes_a_lone_frame_at_once() {
        let (tx, rx) = mpsc::channel(8);
        let mut stream = BatchingStream::new(rx, CancellationToken::new(), tally());
        tx.try_send(Ok(call(1))).unwrap();
        let Poll::Ready(Some(Ok(batch))) = poll_once(&mut stream) else {
            panic!("a lone frame on an idle lane waited");
        };
        assert_eq!(ids(&batch), [1]);
    }

    #[test]
    fn a_busy_lane_holds_a_lone_frame_for_the_frames_that_follow() {
        let (tx, rx) = mpsc::channel(8);
        let mut stream = BatchingStream::new(rx, CancellationToken::new(), tally());
        tx.try_send(Ok(call(1))).unwrap();
        tx.try_send(Ok(call(2))).unwrap();
        let Poll::Ready(Some(Ok(batch))) = poll_once(&mut stream) else {
            panic!("queued frames were not written");
        };
        assert_eq!(ids(&batch), [1, 2]);
        tx.try_send(Ok(call(3))).unwrap();
        assert!(
            poll_once(&mut stream).is_pending(),
            "a lone frame on a busy lane went without waiting a turn"
        );
        tx.try_send(Ok(call(4))).unwrap();
        let Poll::Ready(Some(Ok(batch))) = poll_once(&mut stream) else {
            panic!("the held frame was not written on the next turn");
        };
        assert_eq!(
            ids(&batch),
            [3, 4],
            "the held frame and its follower share a write"
        );
    }

    #[test]
    fn a_held_frame_still_goes_out_when_the_lane_closes() {
        let (tx, rx) = mpsc::channel(8);
        let token = CancellationToken::new();
        let mut stream = BatchingStream::new(rx, token.clone(), tally());
        tx.try_send(Ok(call(1))).unwrap();
        tx.try_send(Ok(call(2))).unwrap();
        assert!(poll_once(&mut stream).is_ready());
        tx.try_send(Ok(call(3))).unwrap();
        assert!(poll_once(&mut stream).is_pending());
        token.cancel();
        let Poll::Ready(Some(Ok(batch))) = poll_once(&mut stream) else {
            panic!("the held frame was dropped when the lane closed");
        };
        assert_eq!(ids(&batch), [3]);
        assert!(matches!(poll_once(&mut stream), Poll::Ready(None)));
    }

    #[test]
    fn a_lane_counts_every_frame_it_writes_once_per_batch() {
        let (tx, rx) = mpsc::channel(8);
        let tally = tally();
        let mut stream = BatchingStream::new(rx, CancellationToken::new(), tally.clone());
        for id in 1..=3 {
            tx.try_send(Ok(call(id))).unwrap();
        }
        assert!(poll_once(&mut stream).is_ready());
        tx.try_send(Ok(call(4))).unwrap();
        assert!(poll_once(&mut stream).is_pending(), "held for a turn");
        assert_eq!(tally.sent.get(), 3, "a held frame is not written yet");
        assert!(poll_once(&mut stream).is_ready());
        let link = tally.link.as_ref().unwrap();
        assert_eq!((tally.sent.get(), link.sent()), (4, 4));
        assert_eq!((tally.received.get(), link.received()), (0, 0));
    }

    /// The bound must never undercount, or an oversized frame could slip past the size check.
    #[test]
    fn the_size_bound_never_undercounts() {
        let name = |n: usize| Bytes::from("n".repeat(n));
        let payload = |n: usize| Bytes::from(vec![7u8; n]);
        let mut frames = Vec::new();
        for size in [0, 1, 127, 128, 16_383, 16_384, 70_000, 2_100_000] {
            frames.push(Kind::Call(Call {
                id: u64::MAX,
                service: name(size % 300),
                method: name(200),
                payload: payload(size),
                idempotent: true,
                timeout_ms: u32::MAX,
                trace_id: name(16),
            }));
            frames.push(Kind::Cast(Cast {
                service: name(300),
                method: name(size % 200),
                payload: payload(size),
                trace_id: name(64),
            }));
            frames.push(Kind::GroupCast(GroupCast {
                group: name(130),
                method: name(130),
                payload: payload(size),
                trace_id: name(130),
            }));
            frames.push(Kind::Reply(Reply {
                id: u64::MAX,
                result: Some(reply::Result::Ok(payload(size))),
            }));
        }
        frames.push(Kind::Heartbeat(Heartbeat { sequence: 9 }));
        for kind in frames {
            let frame = Frame { kind: Some(kind) };
            let exact = prost::Message::encoded_len(&frame);
            assert!(size_bound(&frame) >= exact, "{exact} undercounted");
        }
    }
}
