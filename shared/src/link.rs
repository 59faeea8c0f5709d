//! One outbound link: the connection this node dialed to one peer, its three authenticated lanes,
//! the calls waiting for replies, and when the peer was last heard.
//!
//! Each node dials every peer it knows, so between two nodes there is one link per direction.
//! A node sends its own calls and casts on the link it dialed; replies come back on the same
//! stream. Heartbeats run on the control lane, apart from data, so a busy or large transfer never
//! makes a healthy peer look dead. The node's failure detector (`membership.rs`) times the links
//! to its ring neighbours (`ring.rs`) and probes any other link it has reason to doubt: anything
//! the peer sends, on either node's connection, counts as hearing from it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use switchboard_proto::v1::{self as wire, Lane, frame::Kind, node_client::NodeClient};
use tokio::sync::mpsc;
use tokio::time::timeout_at;
use tokio_util::sync::CancellationToken;

use crate::bulk;
use crate::error::NodeError;
use crate::handshake::{self, HandshakeError, Party, Role};
use crate::lane::{
    BULK_THRESHOLD, BatchingStream, FrameReader, LaneSender, LinkTraffic, Outbound, Tally, Urgency,
    after_handshake, size_bound,
};
use crate::node::NodeInner;
use crate::replies::{Replies, Reply};

/// How long a dial, handshake included, may take. A frozen peer accepts TCP but never answers.
pub(crate) const DIAL_TIMEOUT: Duration = Duration::from_secs(2);

/// Dials a node makes at once. A node that learns of many members at once (joining a large
/// cluster) dials them a few at a time: all at once, on a busy machine, every dial took longer
/// than [`DIAL_TIMEOUT`], was abandoned half done, and was tried again, so a 64-node cluster never
/// formed. A few at a time, each dial finishes in milliseconds.
pub(crate) const CONCURRENT_DIALS: usize = 4;

/// `Link::probe_sent_ms` when no probe waits for an answer.
const NO_PROBE: u64 = u64::MAX;

/// Where a probe of a link stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    /// No probe is waiting (none was sent, or the peer has answered).
    Idle,
    /// A probe went out and the window for its answer is still open.
    Waiting,
    /// Nothing was heard from the peer within the window after the probe.
    Unanswered,
}

/// What the peer said when the link opened.
#[derive(Debug)]
pub(crate) struct Greeting {
    pub(crate) advertisement: wire::Advertisement,
    pub(crate) gossip: wire::Gossip,
}

/// An open link to one peer.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) peer: String,
    pub(crate) incarnation: u64,
    pub(crate) address: String,
    /// The lanes' queues, indexed by their `Lane` value: control, data, bulk.
    lanes: [LaneSender; 3],
    /// Calls waiting for replies. Their deadlines are enforced by [`Link::expire`] on the
    /// detector's tick rather than a timer per call: a busy link makes no timer-wheel traffic,
    /// and a deadline is honoured within half a heartbeat interval.
    replies: Replies,
    in_flight: AtomicUsize,
    opened: Instant,
    /// Milliseconds since `opened` at which the peer was last heard on any lane, of this link or
    /// of the peer's link to this node.
    last_heard_ms: AtomicU64,
    /// Milliseconds since `opened` at which this link last sent a heartbeat, and how many.
    last_beat_ms: AtomicU64,
    beats: AtomicU64,
    /// Whether the failure detector times this peer (a ring neighbour) or only probes it.
    watched: AtomicBool,
    /// Milliseconds since `opened` at which an unanswered probe went out; [`NO_PROBE`] if none.
    probe_sent_ms: AtomicU64,
    /// The version of this node's advertisement last queued on this link.
    advertised: AtomicU64,
    pub(crate) closed: CancellationToken,
    max_frame: usize,
    /// Frames its lanes wrote and read: the `switchboard.node` service's `stats`.
    pub(crate) traffic: std::sync::Arc<LinkTraffic>,
}

/// Decrements the in-flight count however a call ends.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The wait for room in a full lane queue.
type SpaceWait<'a> = Pin<Box<dyn Future<Output = Result<(), NodeError>> + Send + 'a>>;

/// A call registered and queued (or waiting for room in the queue), counted in flight.
struct Queued<'a> {
    reply: Reply<'a>,
    in_flight: InFlight<'a>,
    wait: Option<SpaceWait<'a>>,
}

impl Link {
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn heard(&self) {
        let ms = self.opened.elapsed().as_millis() as u64;
        self.last_heard_ms.store(ms, Ordering::Relaxed);
    }

    /// Sends a heartbeat if none went out within `interval`; returns whether it did. Only the
    /// failure detector's task calls this, so the check and the update need not be one atomic
    /// step.
    pub(crate) fn beat_if_due(&self, interval: Duration) -> bool {
        let now = self.opened.elapsed().as_millis() as u64;
        let beats = self.beats.load(Ordering::Relaxed);
        if beats > 0
            && now.saturating_sub(self.last_beat_ms.load(Ordering::Relaxed))
                < interval.as_millis() as u64
        {
            return false;
        }
        self.last_beat_ms.store(now, Ordering::Relaxed);
        self.beats.store(beats + 1, Ordering::Relaxed);
        self.send_control(Kind::Heartbeat(wire::Heartbeat {
            sequence: beats + 1,
        }));
        true
    }

    /// Marks whether the detector times this link. A link that starts being timed counts as
    /// heard now, so its silence is measured from the start of the watch, not from whenever an
    /// idle, unwatched link last carried a frame.
    pub(crate) fn set_watched(&self, watched: bool) {
        if self.watched.swap(watched, Ordering::Relaxed) != watched && watched {
            self.heard();
        }
    }

    /// Sends a heartbeat now and expects to hear from the peer within a window (see
    /// [`Link::probe_state`]), unless a probe already waits. Called by the detector for a
    /// suspect or a doubted link, so a peer nobody times is still found out when it matters.
    pub(crate) fn probe(&self) {
        let now = self.opened.elapsed().as_millis() as u64;
        if self
            .probe_sent_ms
            .compare_exchange(NO_PROBE, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let beats = self.beats.fetch_add(1, Ordering::Relaxed) + 1;
        self.last_beat_ms.store(now, Ordering::Relaxed);
        self.send_control(Kind::Heartbeat(wire::Heartbeat { sequence: beats }));
    }

    /// Whether the last probe was answered: anything heard after it went out is an answer.
    pub(crate) fn probe_state(&self, window: Duration) -> Probe {
        let sent = self.probe_sent_ms.load(Ordering::Relaxed);
        if sent == NO_PROBE {
            return Probe::Idle;
        }
        if self.last_heard_ms.load(Ordering::Relaxed) >= sent {
            self.probe_sent_ms.store(NO_PROBE, Ordering::Relaxed);
            return Probe::Idle;
        }
        let now = self.opened.elapsed().as_millis() as u64;
        if now.saturating_sub(sent) > window.as_millis() as u64 {
            Probe::Unanswered
        } else {
            Probe::Waiting
        }
    }

    pub(crate) fn silent_for(&self) -> Duration {
        let now = self.opened.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_heard_ms.load(Ordering::Relaxed)))
    }

    /// Frames waiting in this link's lane queues.
    pub(crate) fn queued(&self) -> usize {
        self.lanes
            .iter()
            .map(|lane| lane.max_capacity() - lane.capacity())
            .sum()
    }

    fn lane_for(&self, size: usize) -> &LaneSender {
        if size > BULK_THRESHOLD {
            &self.lanes[2]
        } else {
            &self.lanes[1]
        }
    }

    fn check_size(&self, frame: &wire::Frame) -> Result<usize, NodeError> {
        let bound = size_bound(frame);
        // Small enough for the data lane and the frame limit whatever its exact size: the usual
        // case, decided without walking the frame.
        if bound <= BULK_THRESHOLD && bound + 16 <= self.max_frame {
            return Ok(bound);
        }
        let size = frame.encoded_len();
        // A batch adds a few bytes of framing around each frame.
        if size + 16 > self.max_frame {
            return Err(NodeError::FrameTooLarge {
                size,
                max: self.max_frame,
            });
        }
        Ok(size)
    }

    /// Sends a call and waits for its reply until `deadline`.
    ///
    /// Not an `async fn`: the call is registered and queued at once, so the returned future
    /// holds only what waiting needs (the reply's slot and, when the queue was full, a boxed wait
    /// for space), not the call and its frame. A call's future is built and moved on every call,
    /// and all of its bytes are copied each time.
    pub(crate) fn call(
        &self,
        call: wire::Call,
        deadline: tokio::time::Instant,
    ) -> impl Future<Output = Result<Bytes, NodeError>> + Send + '_ {
        let queued = self.queue_call(call, deadline);
        async move {
            let Queued {
                reply,
                in_flight: _in_flight,
                wait,
            } = queued?;
            if let Some(wait) = wait {
                wait.await?;
            }
            // A timeout comes back without the service's name: the caller knows it and adds it.
            reply.await
        }
    }

    /// Registers a call for its reply and queues its frame, or, when the queue is full, returns
    /// the wait for space (never past the caller's deadline): backpressure.
    fn queue_call(
        &self,
        mut call: wire::Call,
        deadline: tokio::time::Instant,
    ) -> Result<Queued<'_>, NodeError> {
        if self.closed.is_cancelled() {
            return Err(self.down());
        }
        // Dropping `reply` on any early return below gives its slot back.
        let Some((id, reply)) = self.replies.register(deadline) else {
            return Err(self.down());
        };
        call.id = id;
        let frame = wire::Frame {
            kind: Some(Kind::Call(call)),
        };
        let size = self.check_size(&frame)?;
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let in_flight = InFlight(&self.in_flight);
        let lane = self.lane_for(size);
        let wait = match lane.try_send(Ok(frame)) {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(self.down()),
            Err(mpsc::error::TrySendError::Full(frame)) => {
                let wait: SpaceWait<'_> = Box::pin(async move {
                    match timeout_at(deadline, lane.send(frame)).await {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(_)) => Err(self.down()),
                        Err(_) => Err(NodeError::Overloaded(format!(
                            "the queue to {} stayed full until the deadline",
                            self.peer
                        ))),
                    }
                });
                Some(wait)
            }
        };
        Ok(Queued {
            reply,
            in_flight,
            wait,
        })
    }

    /// A call that never reached the peer: the link is down.
    fn down(&self) -> NodeError {
        NodeError::NodeDown {
            node: self.peer.clone(),
            reason: "noconnection".into(),
            maybe_applied: false,
        }
    }

    /// Fails every call whose deadline has passed with `Timeout`.
    pub(crate) fn expire(&self, now: tokio::time::Instant) {
        self.replies.expire(now);
    }

    /// Queues a one-way frame without waiting: a full queue is `Overloaded`.
    pub(crate) fn send_now(&self, kind: Kind, urgency: Urgency) -> Result<(), NodeError> {
        let frame = wire::Frame { kind: Some(kind) };
        let size = self.check_size(&frame)?;
        let lane = match urgency {
            Urgency::Prompt => self.lane_for(size),
            Urgency::Background => &self.lanes[2],
        };
        lane.try_send(Ok(frame)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                NodeError::Overloaded(format!("the queue to {} is full", self.peer))
            }
            mpsc::error::TrySendError::Closed(_) => NodeError::NodeDown {
                node: self.peer.clone(),
                reason: "noconnection".into(),
                maybe_applied: false,
            },
        })
    }

    /// Queues a control frame (heartbeat, gossip, advertisement, goodbye). Dropped when full:
    /// control traffic is periodic and the next one supersedes it.
    pub(crate) fn send_control(&self, kind: Kind) {
        let _ = self.lanes[0].try_send(Ok(wire::Frame { kind: Some(kind) }));
    }

    /// Queues this node's advertisement and remembers its version.
    pub(crate) fn send_advertisement(&self, advertisement: &wire::Advertisement) {
        self.advertised
            .fetch_max(advertisement.version, Ordering::Relaxed);
        self.send_control(Kind::Advertise(advertisement.clone()));
    }

    /// The version of this node's advertisement last queued on this link.
    pub(crate) fn advertised_version(&self) -> u64 {
        self.advertised.load(Ordering::Relaxed)
    }

    /// Waits (bounded) until the control queue is flushed, so a goodbye is written before close.
    pub(crate) async fn flush_control(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.lanes[0].capacity() < self.lanes[0].max_capacity() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Delivers a reply to its waiting call; replies to calls that gave up are dropped.
    pub(crate) fn complete(&self, reply: wire::Reply, timeout: Duration) {
        let result = match reply.result {
            Some(wire::reply::Result::Ok(bytes)) => Ok(bytes),
            Some(wire::reply::Result::Error(error)) => {
                Err(NodeError::from_wire(error, "", timeout))
            }
            None => Err(NodeError::Transport("empty reply".into())),
        };
        self.replies.complete(reply.id, result);
    }

    /// Closes the link and fails every waiting call with `NodeDown`. Returns false if it was
    /// already closed, so the caller does the node-down bookkeeping exactly once.
    pub(crate) fn close(&self, reason: &str) -> bool {
        if self.closed.is_cancelled() {
            return false;
        }
        self.closed.cancel();
        self.replies.close(|| NodeError::NodeDown {
            node: self.peer.clone(),
            reason: reason.to_owned(),
            maybe_applied: true,
        });
        true
    }
}

/// Dials `address`, runs the handshake on the control and data lanes and returns the open link
/// with what the peer said. The lanes' receive loops are started, and the bulk lane is left to
/// open itself, by the caller once the link is installed. `introduce` asks the peer to announce
/// this node to its own peers: set when `address` is a seed, the one place a newcomer is sure to
/// be news.
pub(crate) async fn dial(
    node: &NodeInner,
    address: &str,
    introduce: bool,
) -> Result<(std::sync::Arc<Link>, Greeting, LinkReaders), NodeError> {
    // The timeout runs once this dial's turn has come.
    let _turn = node
        .dial_permits
        .acquire()
        .await
        .map_err(|_| NodeError::ShuttingDown)?;
    tokio::time::timeout(DIAL_TIMEOUT, dial_inner(node, address, introduce))
        .await
        .map_err(|_| NodeError::Transport(format!("dialing {address} timed out")))?
}

/// What a freshly dialed link reads from: its open lanes' readers, and its bulk lane, which
/// opens on its first frame.
#[derive(Debug)]
pub(crate) struct LinkReaders {
    pub(crate) control: FrameReader,
    pub(crate) data: FrameReader,
    pub(crate) bulk: DormantLane,
}

/// A link's bulk lane before its first frame: its queue, and where to dial.
///
/// Most links never carry a frame over 64 KiB or a background broadcast, and opening the bulk
/// connection with the others cost every link a second TCP and HTTP/2 set-up and a third
/// handshake for nothing: half of a cluster's connections, and a third of the writes while a
/// 64-node cluster forms, which is CPU-bound. The queue exists from the start, so a sender never
/// knows whether the lane is open yet; the first frame queued opens it.
#[derive(Debug)]
pub(crate) struct DormantLane {
    endpoint: tonic::transport::Endpoint,
    address: String,
    queue: mpsc::Receiver<Outbound>,
    tally: Tally,
    introduce: bool,
}

impl DormantLane {
    /// Waits for the lane's first frame, then dials its connection and runs its handshake;
    /// returns the lane's reader, or `None` when the link closed with nothing sent on the lane.
    /// Runs on the bulk thread, where the connection's I/O then lives ([`crate::bulk`]).
    pub(crate) async fn open(
        mut self,
        node: &NodeInner,
        link: &Link,
    ) -> Result<Option<FrameReader>, NodeError> {
        let first = tokio::select! {
            first = self.queue.recv() => first,
            _ = link.closed.cancelled() => None,
        };
        // A dialer's queues carry frames only; a status ends streams on the acceptor's side.
        let Some(Ok(first)) = first else {
            return Ok(None);
        };
        let address = self.address.clone();
        let tls = node.tls.clone();
        let opening = async {
            let channel = self
                .endpoint
                .connect_with_connector(tower::service_fn(move |_| {
                    bulk::connect(address.clone(), tls.clone())
                }))
                .await
                .map_err(|e| cannot_connect(&self.address, e))?;
            let batches = BatchingStream::new(self.queue, link.closed.clone(), self.tally.clone())
                .led_by(first);
            open_lane(
                node,
                Lane::Bulk,
                node_client(channel, link.max_frame),
                batches,
                self.tally,
                self.introduce,
            )
            .await
        };
        let lane = tokio::time::timeout(DIAL_TIMEOUT, opening)
            .await
            .map_err(|_| {
                NodeError::Transport(format!("opening the bulk lane to {} timed out", link.peer))
            })??;
        // Every lane must reach the same process, or a load balancer split the link.
        if lane.challenge.name != link.peer || lane.challenge.incarnation != link.incarnation {
            return Err(NodeError::Transport(
                "lanes of one link reached different nodes".into(),
            ));
        }
        Ok(Some(lane.reader))
    }
}

/// One lane after its handshake: its reader and what the acceptor said on it.
struct OpenedLane {
    reader: FrameReader,
    challenge: wire::Challenge,
    welcome: wire::Welcome,
}

/// A client of the node service on `channel`, its messages bounded by the frame limit.
fn node_client(
    channel: tonic::transport::Channel,
    max_frame: usize,
) -> NodeClient<tonic::transport::Channel> {
    NodeClient::new(channel)
        .max_decoding_message_size(max_frame)
        .max_encoding_message_size(max_frame)
}

/// Opens the shared connection of a node with TLS: TCP, no Nagle delay, the TLS handshake.
async fn connect_tls(
    address: String,
    tls: crate::tls::Tls,
) -> std::io::Result<hyper_util::rt::TokioIo<crate::tls::Stream>> {
    let socket = tokio::net::TcpStream::connect(address).await?;
    socket.set_nodelay(true)?;
    Ok(hyper_util::rt::TokioIo::new(tls.connect(socket).await?))
}

fn cannot_connect(address: &str, error: tonic::transport::Error) -> NodeError {
    NodeError::Transport(format!("cannot connect to {address}: {error}"))
}

async fn dial_inner(
    node: &NodeInner,
    address: &str,
    introduce: bool,
) -> Result<(std::sync::Arc<Link>, Greeting, LinkReaders), NodeError> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| NodeError::Transport(format!("bad address {address}: {e}")))?
        .connect_timeout(DIAL_TIMEOUT)
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(4 * 1024 * 1024))
        .initial_connection_window_size(Some(16 * 1024 * 1024));
    let max = node.config.max_frame_bytes;
    // Control and data share one connection. Bulk gets its own, opened on its first frame
    // ([`DormantLane`]), so a large transfer never queues small calls behind it in one socket's
    // buffers or one HTTP/2 connection window.
    let channel = match &node.tls {
        None => endpoint.connect().await,
        Some(tls) => {
            let (tls, address) = (tls.clone(), address.to_owned());
            endpoint
                .connect_with_connector(tower::service_fn(move |_| {
                    connect_tls(address.clone(), tls.clone())
                }))
                .await
        }
    };
    let shared = node_client(channel.map_err(|e| cannot_connect(address, e))?, max);
    let queue = || mpsc::channel(node.config.link_queue.max(16));
    let [
        (control_tx, control_rx),
        (data_tx, data_rx),
        (bulk_tx, bulk_rx),
    ] = [queue(), queue(), queue()];
    let closed = CancellationToken::new();
    let traffic = std::sync::Arc::new(LinkTraffic::default());
    let tally = Tally::new(&node.metrics, Some(traffic.clone()));
    // The two handshakes run at once: a dial costs one connection set-up and two round trips,
    // and the lanes' frames share the writes of their connection. Forming a large cluster is
    // bound by these writes and wake-ups.
    let open = |lane, queue| {
        let batches = BatchingStream::new(queue, closed.clone(), tally.clone());
        open_lane(
            node,
            lane,
            shared.clone(),
            batches,
            tally.clone(),
            introduce,
        )
    };
    let (control, data) =
        tokio::try_join!(open(Lane::Control, control_rx), open(Lane::Data, data_rx))?;
    let challenge = &control.challenge;
    // Every lane must reach the same process, or a load balancer split the link.
    if data.challenge.name != challenge.name || data.challenge.incarnation != challenge.incarnation
    {
        return Err(NodeError::Transport(
            "lanes of one link reached different nodes".into(),
        ));
    }
    let peer_address = if challenge.address.is_empty() {
        address.to_owned()
    } else {
        challenge.address.clone()
    };
    let greeting = Greeting {
        advertisement: control.welcome.advertisement.unwrap_or_default(),
        gossip: control.welcome.gossip.unwrap_or_default(),
    };
    let link = std::sync::Arc::new(Link {
        peer: control.challenge.name,
        incarnation: control.challenge.incarnation,
        address: peer_address,
        lanes: [control_tx, data_tx, bulk_tx],
        replies: Replies::default(),
        in_flight: AtomicUsize::new(0),
        opened: Instant::now(),
        last_heard_ms: AtomicU64::new(0),
        last_beat_ms: AtomicU64::new(0),
        beats: AtomicU64::new(0),
        watched: AtomicBool::new(false),
        probe_sent_ms: AtomicU64::new(NO_PROBE),
        advertised: AtomicU64::new(0),
        closed,
        max_frame: max,
        traffic,
    });
    let readers = LinkReaders {
        control: control.reader,
        data: data.reader,
        bulk: DormantLane {
            endpoint,
            address: address.to_owned(),
            queue: bulk_rx,
            tally,
            introduce,
        },
    };
    Ok((link, greeting, readers))
}

/// Runs the dialer's half of `lane`'s handshake on `client`'s connection; then the lane writes
/// `batches`.
async fn open_lane(
    node: &NodeInner,
    lane: Lane,
    mut client: NodeClient<tonic::transport::Channel>,
    batches: BatchingStream,
    tally: Tally,
    introduce: bool,
) -> Result<OpenedLane, NodeError> {
    let (handshake, handshake_queue) = mpsc::channel(2);
    let send = |kind| {
        let handshake = handshake.clone();
        async move {
            handshake
                .send(wire::Frame { kind: Some(kind) })
                .await
                .map_err(|_| NodeError::Transport("lane closed".into()))
        }
    };
    let nonce = handshake::fresh_nonce();
    send(Kind::Hello(wire::Hello {
        version: handshake::PROTOCOL_VERSION,
        name: node.name.clone(),
        incarnation: node.incarnation,
        nonce: nonce.clone().into(),
        lane: lane as i32,
        address: if node.hidden {
            String::new()
        } else {
            node.address.clone()
        },
        hidden: node.hidden,
        advertisement: Some(node.advertisement()),
        introduce,
    }))
    .await?;
    let response = client
        .link(after_handshake(handshake_queue, batches))
        .await
        .map_err(status_to_error)?;
    let mut reader = FrameReader::new(response.into_inner(), tally);
    let challenge = match reader.next().await.map_err(status_to_error)? {
        Some(wire::Frame {
            kind: Some(Kind::Challenge(c)),
        }) => c,
        _ => return Err(HandshakeError::Unexpected("expected a challenge").into()),
    };
    let me = Party {
        name: node.name.clone(),
        incarnation: node.incarnation,
        nonce,
    };
    let transcript = handshake::challenge_transcript(&challenge, me, lane)?;
    transcript.verify(&node.cookie, Role::Acceptor, &challenge.proof)?;
    send(Kind::Proof(wire::Proof {
        proof: transcript.prove(&node.cookie, Role::Dialer).into(),
    }))
    .await?;
    // The handshake's stream ends here, and the lane's queue follows the proof.
    drop(handshake);
    let welcome = match reader.next().await.map_err(status_to_error)? {
        Some(wire::Frame {
            kind: Some(Kind::Welcome(w)),
        }) => w,
        _ => return Err(HandshakeError::Unexpected("expected a welcome").into()),
    };
    Ok(OpenedLane {
        reader,
        challenge,
        welcome,
    })
}

/// Maps a status from the acceptor during the handshake to the error the dialer reports.
fn status_to_error(status: tonic::Status) -> NodeError {
    match status.code() {
        tonic::Code::Unauthenticated => NodeError::Handshake(HandshakeError::BadProof),
        tonic::Code::FailedPrecondition if status.message().contains("this node") => {
            NodeError::Handshake(HandshakeError::SelfConnection)
        }
        _ => NodeError::Transport(status.message().to_owned()),
    }
}

impl Link {
    /// The sending half of `lane`, for replies on the dialer's side.
    pub(crate) fn lane(&self, lane: Lane) -> LaneSender {
        self.lanes[lane as usize].clone()
    }
}
