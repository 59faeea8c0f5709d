//! Membership: who is in the cluster and how links to them are made, kept and lost.
//!
//! Discovery: seed host names are resolved again every `seed_refresh_ms` and every address they
//! resolve to is dialed (how `docker compose --scale` and Kubernetes headless services are found);
//! the seed a newcomer dialed announces it to every member, every link carries gossip of the
//! members the sender is linked to, and an inbound link from an unknown node is answered by
//! dialing it back, so any one seed yields a full mesh.
//!
//! Failure: a closed stream marks the peer down at once. A node times its ring neighbours
//! (`ring.rs`): one silent for `heartbeat_timeout_ms` (heartbeats every `heartbeat_interval_ms`)
//! is down, and suspected to every other node, which probes it and declares it down too if it
//! does not answer within an interval. A node that was itself stalled past the timeout drops
//! every link and rejoins. Every decision is a structured event. A peer that went down is
//! redialed with exponential backoff and jitter; a node restarted under the same name replaces
//! its old incarnation at once and is never banned.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rand::Rng;
use switchboard_proto::v1::{self as wire, Lane, frame::Kind};

use crate::dispatch::{CallLimit, LaneContext, run_lane};
use crate::error::NodeError;
use crate::events::ClusterEvent;
use crate::handshake::HandshakeError;
use crate::lane::FrameReader;
use crate::link::{self, Greeting, Link, LinkReaders, Probe};
use crate::node::NodeInner;
use crate::registry::{Peer, PeerState};
use crate::ring;

/// A peer that stays unreachable this long is forgotten; discovery finds it again if it returns.
const FORGET_AFTER: Duration = Duration::from_secs(300);
const BACKOFF_START: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
const GOSSIP_INTERVAL: Duration = Duration::from_secs(1);
/// How many peers get the full member list each gossip interval.
const GOSSIP_FANOUT: usize = 3;
/// How long the end of a link's data or bulk lane waits for the link to close for a known
/// reason (a goodbye) before it closes the link as `noconnection`.
const LANE_END_GRACE: Duration = Duration::from_millis(100);
/// How long a newcomer's request to be introduced waits for this node's link to it. A newcomer
/// that died before the link opened leaves its request behind; requests older than this are
/// dropped, so they never pile up. Far longer than any dial, queued behind others or not.
const INTRODUCTION_WAIT: Duration = Duration::from_secs(60);

impl NodeInner {
    /// Starts the seed resolver and the gossip ticker.
    pub(crate) fn start_discovery(self: &Arc<Self>) {
        let node = self.clone();
        tokio::spawn(async move {
            let refresh = Duration::from_millis(node.config.seed_refresh_ms.max(100));
            loop {
                for seed in &node.config.seeds {
                    match tokio::net::lookup_host(seed.as_str()).await {
                        Ok(addresses) => {
                            for address in addresses {
                                node.probe(address.to_string(), true);
                            }
                        }
                        Err(error) => tracing::debug!(seed, %error, "seed does not resolve yet"),
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(refresh) => {}
                    _ = node.shutdown.cancelled() => return,
                }
            }
        });
        let node = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(GOSSIP_INTERVAL) => {}
                    _ = node.shutdown.cancelled() => return,
                }
                // Anti-entropy, not the way news travels (a newcomer is announced by the seed
                // it joined through, see `introduce`): each tick a few random peers get the full
                // member list and this node's advertisement, so the cost per node stays flat as
                // the cluster grows while anything lost still spreads within a few ticks. Any
                // link that has not been sent the current advertisement gets it too.
                let gossip = node.gossip();
                let advertisement = node.advertisement();
                let mut links = node.links();
                let queued: usize = links.iter().map(|l| l.queued()).sum();
                node.metrics.queued_frames.set(queued as i64);
                let chosen = links.len().min(GOSSIP_FANOUT);
                {
                    let mut rng = rand::rng();
                    for index in 0..chosen {
                        let other = rng.random_range(index..links.len());
                        links.swap(index, other);
                    }
                }
                for (index, link) in links.iter().enumerate() {
                    if index < chosen {
                        link.send_control(Kind::Gossip(gossip.clone()));
                        link.send_advertisement(&advertisement);
                    } else if link.advertised_version() < advertisement.version {
                        link.send_advertisement(&advertisement);
                    }
                }
            }
        });
    }

    /// Starts the failure detector: one task for every link of the node, rather than one per
    /// link, so an idle node wakes a fixed number of times per second however many peers it
    /// has (a timer per link was most of an idle 64-node cluster's wake-ups).
    ///
    /// Each tick it fails calls past their deadline and walks the links in name order. A ring
    /// neighbour (`ring.rs`; every link of a hidden node, which is no one's neighbour) is timed:
    /// silent for longer than the timeout, it is declared down and suspected to every other
    /// peer, and every other link is probed, in case the silence is this node's own (cut off from
    /// the rest, it finds all its links unanswered). Of each timed pair, the node whose name sorts
    /// first sends a heartbeat every interval and the other acknowledges it; the other sends its
    /// own only once it has heard nothing for an interval and a half. Any other link is probed
    /// when a peer suspects it, or when it has calls waiting and has been silent for the timeout;
    /// a probe unanswered within one interval takes the link down.
    pub(crate) fn start_failure_detector(self: &Arc<Self>) {
        let node = self.clone();
        tokio::spawn(async move {
            let interval = node.config.heartbeat_interval();
            let timeout = node.config.heartbeat_timeout();
            let fallback = interval + interval / 2;
            // Checking five times per interval keeps detection within a fifth of an interval
            // (50 ms by default) of the timeout; a check is a clock read and a scan of each
            // link's waiting calls.
            let mut tick = tokio::time::interval(interval / 5);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_tick = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = node.shutdown.cancelled() => return,
                }
                let now = tokio::time::Instant::now();
                let paused = now - last_tick > timeout;
                last_tick = now;
                if paused {
                    // This node did not run for longer than the timeout (SIGSTOP, a frozen VM):
                    // its neighbours declared it down and every other node probed it and did
                    // too, yet the peers still answer on its own links. Down is mutual: drop
                    // every link and rejoin afresh, as the others expect.
                    for link in node.links() {
                        node.link_down(&link, "paused");
                    }
                    continue;
                }
                let mut links = node.links();
                links.sort_unstable_by(|a, b| a.peer.cmp(&b.peer));
                let watched = if node.hidden {
                    vec![true; links.len()]
                } else {
                    let names: Vec<&str> = links.iter().map(|l| l.peer.as_str()).collect();
                    ring::watched(&node.name, &names)
                };
                let mut silent_neighbour = false;
                for (link, watched) in links.iter().zip(watched) {
                    link.expire(now);
                    link.set_watched(watched);
                    if link.probe_state(interval) == Probe::Unanswered {
                        node.link_down(link, "heartbeat_timeout");
                        continue;
                    }
                    let silent = link.silent_for();
                    if !watched {
                        if link.in_flight() > 0 && silent > timeout {
                            link.probe();
                        }
                        continue;
                    }
                    if silent > timeout {
                        node.link_down(link, "heartbeat_timeout");
                        node.suspect(link, &links);
                        silent_neighbour = true;
                        continue;
                    }
                    let leads = node.name < link.peer;
                    if (leads || silent > fallback) && link.beat_if_due(interval) {
                        node.metrics.heartbeats.inc();
                    }
                }
                if silent_neighbour {
                    for link in &links {
                        link.probe();
                    }
                }
            }
        });
    }

    /// Tells every other peer that `silent` went quiet, so each probes it itself.
    fn suspect(&self, silent: &Link, links: &[Arc<Link>]) {
        let suspicion = Kind::Suspect(wire::Suspect {
            name: silent.peer.clone(),
            incarnation: silent.incarnation,
        });
        for link in links {
            if !std::ptr::eq(Arc::as_ptr(link), silent) {
                link.send_control(suspicion.clone());
            }
        }
    }

    /// A peer suspects `name`: probe it, unless the link is to another incarnation.
    pub(crate) fn suspected(&self, suspicion: wire::Suspect) {
        if let Some(link) = self.outbound_link(&suspicion.name, suspicion.incarnation) {
            link.probe();
        }
    }

    /// The link this node dialed to `peer`'s incarnation `incarnation`, if it is open.
    pub(crate) fn outbound_link(&self, peer: &str, incarnation: u64) -> Option<Arc<Link>> {
        self.read_peers()
            .get(peer)
            .and_then(|p| p.link.clone())
            .filter(|l| l.incarnation == incarnation && !l.closed.is_cancelled())
    }

    /// The members this node is linked to, for gossip.
    pub(crate) fn gossip(&self) -> wire::Gossip {
        let mut members: Vec<wire::Member> = self
            .read_peers()
            .iter()
            .filter(|(_, p)| p.state == PeerState::Up)
            .map(|(name, p)| wire::Member {
                name: name.clone(),
                address: p.address.clone(),
                incarnation: p.incarnation,
            })
            .collect();
        if !self.hidden {
            members.push(wire::Member {
                name: self.name.clone(),
                address: self.address.clone(),
                incarnation: self.incarnation,
            });
        }
        wire::Gossip { members }
    }

    /// Dials every gossiped member this node has no link to.
    pub(crate) fn learn(self: &Arc<Self>, gossip: wire::Gossip) {
        for member in gossip.members {
            if member.name == self.name || member.address.is_empty() {
                continue;
            }
            let linked = self
                .read_peers()
                .get(&member.name)
                .is_some_and(|p| p.link.is_some() && p.incarnation == member.incarnation);
            if !linked {
                self.probe(member.address, false);
            }
        }
    }

    /// Dials `address` once in the background unless it is this node, already linked, or being
    /// dialed. Discovery calls this freely. `introduce`: the address is a seed (see
    /// [`link::dial`]).
    pub(crate) fn probe(self: &Arc<Self>, address: String, introduce: bool) {
        if address == self.address || self.shutdown.is_cancelled() {
            return;
        }
        let known = self
            .address_book
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&address)
            .cloned();
        if let Some(name) = known {
            let linked = name == self.name
                || self
                    .read_peers()
                    .get(&name)
                    .is_some_and(|p| p.link.is_some());
            if linked {
                return;
            }
        }
        if !self
            .dialing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(address.clone())
        {
            return;
        }
        let node = self.clone();
        tokio::spawn(async move {
            match node.connect(&address, introduce).await {
                Ok(_) => {}
                Err(NodeError::Handshake(HandshakeError::SelfConnection)) => {
                    node.address_book
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(address.clone(), node.name.clone());
                }
                Err(NodeError::Handshake(error)) => node.handshake_refused(&address, &error),
                Err(error) => tracing::debug!(%address, %error, "dial failed"),
            }
            node.dialing
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&address);
        });
    }

    /// Dials `address` and installs the link; returns the peer's name.
    pub(crate) async fn connect(
        self: &Arc<Self>,
        address: &str,
        introduce: bool,
    ) -> Result<String, NodeError> {
        let (link, greeting, readers) = link::dial(self, address, introduce).await?;
        let name = link.peer.clone();
        self.address_book
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(address.to_owned(), name.clone());
        if self.install(&link, greeting) {
            self.run_link(link, readers);
        }
        Ok(name)
    }

    /// Puts a freshly opened link into the registry. Returns false (and closes it) when a link to
    /// the same incarnation already exists.
    fn install(self: &Arc<Self>, link: &Arc<Link>, greeting: Greeting) -> bool {
        let mut replaced = None;
        let rejoined;
        {
            let mut peers = self.write_peers();
            let now = Instant::now();
            match peers.get_mut(&link.peer) {
                Some(peer) => {
                    if let Some(old) = peer.link.as_ref().filter(|l| !l.closed.is_cancelled()) {
                        if old.incarnation == link.incarnation {
                            drop(peers);
                            link.close("duplicate");
                            return false;
                        }
                        replaced = Some(old.clone());
                    }
                    if peer.incarnation != link.incarnation
                        || greeting.advertisement.version >= peer.advertisement.version
                    {
                        peer.advertisement = greeting.advertisement;
                    }
                    peer.address = link.address.clone();
                    peer.incarnation = link.incarnation;
                    peer.link = Some(link.clone());
                    peer.state = PeerState::Up;
                    peer.since = now;
                    rejoined = true;
                }
                None => {
                    peers.insert(
                        link.peer.clone(),
                        Peer {
                            address: link.address.clone(),
                            incarnation: link.incarnation,
                            advertisement: greeting.advertisement,
                            link: Some(link.clone()),
                            state: PeerState::Up,
                            since: now,
                        },
                    );
                    rejoined = false;
                }
            }
        }
        if let Some(old) = replaced {
            self.link_down(&old, "restarted");
        }
        self.metrics.links_up.inc();
        if rejoined {
            self.metrics.reconnects.inc();
        }
        tracing::info!(kind = "node_up", node = %self.name, peer = %link.peer, address = %link.address, incarnation = link.incarnation, "node up");
        let _ = self.events.send(ClusterEvent::NodeUp {
            node: link.peer.clone(),
            address: link.address.clone(),
            incarnation: link.incarnation,
        });
        self.registry_did_change();
        // The peer may have missed a change made while this link was being dialed.
        link.send_advertisement(&self.advertisement());
        self.introduce(link);
        self.learn(greeting.gossip);
        true
    }

    /// Tells every other peer about the node behind a new link if it reached this one through a
    /// seed address (its hello asked for it), now rather than at the next gossip tick, so a
    /// cluster forms in round trips, not seconds. Only the seed announces: the newcomer dials
    /// every member named in the seed's greeting, and a member that joined too late to be named
    /// had its own link to the seed installed before or after this one; whichever came second
    /// announces its node to the first. Were every member to announce every newcomer, a cluster
    /// of N forming at once would send N³ frames.
    fn introduce(&self, link: &Arc<Link>) {
        let asked = {
            let mut introductions = self.introductions.lock().unwrap_or_else(|p| p.into_inner());
            match introductions.get(&link.peer) {
                Some(&(incarnation, _)) if incarnation == link.incarnation => {
                    introductions.remove(&link.peer);
                    true
                }
                _ => false,
            }
        };
        if !asked {
            return;
        }
        let newcomer = Kind::Gossip(wire::Gossip {
            members: vec![wire::Member {
                name: link.peer.clone(),
                address: link.address.clone(),
                incarnation: link.incarnation,
            }],
        });
        for other in self.links() {
            if !Arc::ptr_eq(&other, link) {
                other.send_control(newcomer.clone());
            }
        }
    }

    /// Starts the receive loops of an installed link's lanes (the node's failure detector watches
    /// it from now on), and leaves its bulk lane to open on its first frame.
    fn run_link(self: &Arc<Self>, link: Arc<Link>, readers: LinkReaders) {
        let inbound_calls = Arc::new(CallLimit::new(self.config.max_inbound_calls));
        let receive = |lane, reader| {
            self.clone()
                .receive(link.clone(), lane, reader, inbound_calls.clone())
        };
        tokio::spawn(receive(Lane::Control, readers.control));
        tokio::spawn(receive(Lane::Data, readers.data));
        // The bulk lane's connection lives on the bulk thread, where its frames are decoded
        // and served.
        let node = self.clone();
        let bulk = readers.bulk;
        self.bulk.spawn(async move {
            match bulk.open(&node, &link).await {
                Ok(Some(reader)) => {
                    node.clone()
                        .receive(link, Lane::Bulk, reader, inbound_calls)
                        .await
                }
                Ok(None) => {}
                Err(error) => node.link_down(&link, &format!("the bulk lane failed: {error}")),
            }
        });
    }

    /// Reads one lane of `link` until it ends or the link closes; a lane that ends takes the
    /// link down.
    async fn receive(
        self: Arc<Self>,
        link: Arc<Link>,
        lane: Lane,
        reader: FrameReader,
        inbound_calls: Arc<CallLimit>,
    ) {
        let context = LaneContext {
            peer: link.peer.as_str().into(),
            incarnation: link.incarnation,
            reply: link.lane(lane),
            link: Some(link.clone()),
            inbound_calls,
        };
        tokio::select! {
            reason = run_lane(self.clone(), context, reader) => {
                if lane != Lane::Control {
                    // The data and bulk lanes are read by other tasks (the bulk lane on another
                    // thread) than the peer's goodbye: when a peer shuts down, give the goodbye a
                    // moment to close the link with its reason. A crash ends the control lane
                    // too, which declares it down at once.
                    let _ = tokio::time::timeout(LANE_END_GRACE, link.closed.cancelled()).await;
                }
                self.link_down(&link, &reason);
            }
            _ = link.closed.cancelled() => {}
        }
    }

    /// Marks the peer behind `link` down (once), fails its calls and starts reconnecting.
    pub(crate) fn link_down(self: &Arc<Self>, link: &Arc<Link>, reason: &str) {
        if !link.close(reason) {
            return;
        }
        let mut current = false;
        {
            let mut peers = self.write_peers();
            if let Some(peer) = peers.get_mut(&link.peer)
                && peer.link.as_ref().is_some_and(|l| Arc::ptr_eq(l, link))
            {
                peer.link = None;
                peer.state = PeerState::Down {
                    reason: reason.to_owned(),
                };
                peer.since = Instant::now();
                current = true;
            }
        }
        self.metrics.links_up.dec();
        self.metrics.node_down.with_label_values(&[reason]).inc();
        // A deliberate departure is news, not a warning.
        let last_heard_ms = link.silent_for().as_millis() as u64;
        macro_rules! node_down {
            ($level:ident) => {
                tracing::$level!(
                    kind = "node_down",
                    node = %self.name,
                    peer = %link.peer,
                    incarnation = link.incarnation,
                    reason,
                    last_heard_ms,
                    heartbeat_interval_ms = self.config.heartbeat_interval_ms,
                    heartbeat_timeout_ms = self.config.heartbeat_timeout_ms,
                    "node down"
                )
            };
        }
        if reason == "shutdown" {
            node_down!(info);
        } else {
            node_down!(warn);
        }
        let _ = self.events.send(ClusterEvent::NodeDown {
            node: link.peer.clone(),
            incarnation: link.incarnation,
            reason: reason.to_owned(),
        });
        self.registry_did_change();
        if current && reason != "shutdown" && !self.stopping.load(Ordering::Relaxed) {
            self.reconnect(link.peer.clone());
        }
    }

    /// Redials a lost peer with exponential backoff and jitter until it is back, replaced, or
    /// forgotten.
    fn reconnect(self: &Arc<Self>, name: String) {
        if !self
            .reconnecting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.clone())
        {
            return;
        }
        let node = self.clone();
        tokio::spawn(async move {
            let mut backoff = BACKOFF_START;
            loop {
                if node.shutdown.is_cancelled() {
                    break;
                }
                let address = {
                    let mut peers = node.write_peers();
                    match peers.get(&name) {
                        Some(peer) if peer.link.is_none() => {
                            if peer.since.elapsed() > FORGET_AFTER {
                                peers.remove(&name);
                                tracing::info!(peer = %name, "forgetting a peer that stayed down");
                                None
                            } else {
                                Some(peer.address.clone())
                            }
                        }
                        _ => None,
                    }
                };
                let Some(address) = address else { break };
                match node.connect(&address, false).await {
                    Ok(peer) if peer == name => break,
                    Ok(_) => {}
                    Err(error) => {
                        tracing::debug!(peer = %name, %address, %error, "reconnect failed")
                    }
                }
                let jitter = rand::rng().random_range(0.5..1.0);
                tokio::select! {
                    _ = tokio::time::sleep(backoff.mul_f64(jitter)) => {}
                    _ = node.shutdown.cancelled() => break,
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            node.reconnecting
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&name);
        });
    }

    /// A peer opened a lane to this node: learn its address and advertisement, notice a restart,
    /// and dial it back if this node has no link to it.
    pub(crate) fn inbound_lane_opened(self: &Arc<Self>, hello: &wire::Hello) {
        if hello.hidden || hello.lane != wire::Lane::Control as i32 {
            return;
        }
        let mut restarted = None;
        let mut linked = false;
        {
            let mut peers = self.write_peers();
            if let Some(peer) = peers.get_mut(&hello.name) {
                if peer.incarnation == hello.incarnation {
                    linked = peer.link.is_some();
                    if let Some(advertisement) = &hello.advertisement
                        && advertisement.version > peer.advertisement.version
                    {
                        peer.advertisement = advertisement.clone();
                    }
                } else {
                    // The same name with a new incarnation: the old process is gone.
                    restarted = peer.link.clone();
                    if !hello.address.is_empty() {
                        peer.address = hello.address.clone();
                    }
                }
            }
        }
        if let Some(old) = restarted {
            self.link_down(&old, "restarted");
        }
        self.registry_did_change();
        if hello.introduce && !hello.address.is_empty() {
            {
                let mut introductions =
                    self.introductions.lock().unwrap_or_else(|p| p.into_inner());
                introductions.retain(|_, (_, asked)| asked.elapsed() < INTRODUCTION_WAIT);
                introductions.insert(hello.name.clone(), (hello.incarnation, Instant::now()));
            }
            if let Some(link) = self.outbound_link(&hello.name, hello.incarnation) {
                self.introduce(&link);
            }
        }
        if !linked && !hello.address.is_empty() {
            self.probe(hello.address.clone(), false);
        }
    }

    /// A newer advertisement from a peer's current incarnation replaces the old one.
    pub(crate) fn update_advertisement(
        &self,
        peer: &str,
        incarnation: u64,
        advertisement: wire::Advertisement,
    ) {
        let changed = {
            let mut peers = self.write_peers();
            match peers.get_mut(peer) {
                Some(p)
                    if p.incarnation == incarnation
                        && advertisement.version > p.advertisement.version =>
                {
                    p.advertisement = advertisement;
                    true
                }
                _ => false,
            }
        };
        if changed {
            self.registry_did_change();
        }
    }

    /// A peer announced it is leaving on purpose.
    pub(crate) fn peer_left(self: &Arc<Self>, peer: &str, incarnation: u64, reason: &str) {
        let link = self
            .read_peers()
            .get(peer)
            .and_then(|p| p.link.clone())
            .filter(|l| l.incarnation == incarnation);
        if let Some(link) = link {
            let reason = if reason.is_empty() {
                "shutdown"
            } else {
                reason
            };
            self.link_down(&link, reason);
        }
    }

    /// Records a failed handshake: logged with the peer's address, counted, published.
    pub(crate) fn handshake_refused(&self, address: &str, error: &HandshakeError) {
        self.metrics.handshake_failures.inc();
        if let Some(suppressed) = self.refusals.admit(address) {
            tracing::warn!(kind = "handshake_refused", node = %self.name, %address, reason = %error, suppressed, "handshake refused");
        }
        let _ = self.events.send(ClusterEvent::HandshakeRefused {
            address: address.to_owned(),
            reason: error.to_string(),
        });
    }
}
