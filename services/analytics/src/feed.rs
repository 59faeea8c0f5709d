//! A replica's feed: how its [`Aggregates`] are built and kept exact.
//!
//! 1. **Bootstrap.** The node joins `chat.events` and `analytics.latency` first, queueing what
//!    arrives. It then reads, through the `database` service, every room's latest cursor, *then*
//!    the messages of the last seven days and the accounts registered in them, and copies the
//!    delivery-latency histograms from a running replica if there is one. Only then does it
//!    advertise the `analytics` service, so no caller ever sees a half-built replica.
//! 2. **Live.** Queued and new room events are applied in cursor order. Those at or below a
//!    room's cursor were in the snapshot (they committed before the cursors were read); the
//!    snapshot may also already show later ones, which is why applying a message is idempotent.
//! 3. **Gaps.** Broadcasts are best effort. An event beyond a room's next cursor (or a full
//!    queue) means some were lost: the feed reads them from the database's event log. A lost
//!    broadcast of a room's *latest* event leaves no gap to see, so every reconcile period the
//!    feed also compares its cursors with the database's, and reads the accounts registered
//!    since its last look (registrations are not room events). A room whose log no longer
//!    reaches back to the replica's cursor is read again from its messages.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prost::Message;
use switchboard::{AppContext, CallOptions, Node, NodeError, Request};
use switchboard_proto::names;
use switchboard_proto::v1 as wire;
use tokio::sync::mpsc;

use crate::aggregates::{Aggregates, MessageFacts, Step, horizon};
use crate::configuration::AnalyticsSettings;
use crate::database::{Database, EVENT_PAGE};
use crate::now_ms;
use crate::service::AnalyticsService;

/// The aggregates, shared by the feed (the only writer) and the service (readers).
pub(crate) type Shared = Arc<Mutex<Aggregates>>;

/// Broadcasts queued for the feed before new ones are dropped: a dropped room event is a gap
/// filled from the log, a dropped latency report is repaired by the next.
pub(crate) const INBOX: usize = 65_536;
/// Registrations are read again this far before the latest one seen, for accounts whose insert
/// committed after a later-stamped one's.
const REGISTRATION_OVERLAP_MS: i64 = 60_000;
/// Pause between bootstrap attempts.
const RETRY: Duration = Duration::from_secs(1);

/// Locks the aggregates, whatever a panicking holder left behind.
pub(crate) fn lock(state: &Shared) -> MutexGuard<'_, Aggregates> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// The task that builds and maintains one replica's aggregates.
#[derive(Debug)]
pub(crate) struct Feed {
    context: AppContext,
    node: Node,
    database: Database,
    state: Shared,
    inbox: mpsc::Receiver<Request>,
    reconcile: Duration,
}

impl Feed {
    pub(crate) fn new(
        context: AppContext,
        inbox: mpsc::Receiver<Request>,
        settings: &AnalyticsSettings,
    ) -> Self {
        let node = context.node().clone();
        Self {
            context,
            database: Database::new(node.clone()),
            node,
            state: Shared::default(),
            inbox,
            reconcile: Duration::from_millis(settings.analytics_reconcile_ms.max(1)),
        }
    }

    /// Bootstraps, advertises the service, then applies what arrives until the node stops.
    pub(crate) async fn run(mut self) {
        let shutdown = self.context.shutdown_token();
        let draining = self.context.draining_token();
        loop {
            let attempt = async {
                if !self
                    .node
                    .wait_for_service(names::DATABASE, RETRY * 10)
                    .await
                {
                    return Err(NodeError::NoProvider {
                        service: names::DATABASE.into(),
                    });
                }
                self.bootstrap().await
            };
            let result = tokio::select! {
                result = attempt => result,
                _ = draining.cancelled() => return,
            };
            match result {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(%error, "analytics bootstrap failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY) => {}
                        _ = draining.cancelled() => return,
                    }
                }
            }
        }
        self.context
            .register_service(names::ANALYTICS, AnalyticsService::new(self.state.clone()));
        let mut tick = tokio::time::interval(self.reconcile);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = self.inbox.recv() => match message {
                    Some(message) => self.handle(message).await,
                    None => return,
                },
                _ = tick.tick() => self.reconcile().await,
                _ = shutdown.cancelled() => return,
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Aggregates> {
        lock(&self.state)
    }

    async fn bootstrap(&self) -> Result<(), NodeError> {
        let now = now_ms();
        let since = horizon(now);
        let mut fresh = Aggregates::default();
        // Cursors first: every event after them is replayed, and the snapshot read next may
        // already include some of those, which applying idempotently absorbs.
        for room in self.database.cursors().await? {
            fresh.advance(room.room_id, room.cursor);
        }
        let mut messages = 0;
        self.database
            .messages(since, 0, |page| {
                messages += page.len();
                for message in &page {
                    fresh.upsert(&MessageFacts::from(message), now);
                }
            })
            .await?;
        for user in self.database.users(since).await? {
            fresh.register(&user, now);
        }
        // Delivery latency is in no database: copy it from a running replica, if any. The
        // first replica finds none, and must not wait for one to appear.
        let copied = self
            .node
            .call_message::<_, wire::LatencyState>(
                names::ANALYTICS,
                "latency_state",
                &wire::Empty {},
                CallOptions::idempotent().fail_fast(),
            )
            .await;
        match copied {
            Ok(state) => {
                for source in &state.sources {
                    fresh.latency.merge(source, since);
                }
            }
            Err(NodeError::NoProvider { .. }) => {}
            Err(error) => {
                tracing::warn!(%error, "no running replica gave its delivery latencies; starting without their history");
            }
        }
        *self.lock() = fresh;
        tracing::info!(messages, "analytics bootstrapped from the database");
        Ok(())
    }

    async fn handle(&self, message: Request) {
        match &*message.method {
            names::ROOM_EVENT => {
                let Ok(event) = wire::RoomEvent::decode(message.payload) else {
                    tracing::warn!("undecodable room event dropped");
                    return;
                };
                let step = self.lock().apply(&event, now_ms());
                if let Step::Gap { after } = step {
                    tracing::debug!(
                        room_id = event.room_id,
                        after,
                        cursor = event.cursor,
                        "gap in room events; reading the log"
                    );
                    self.fill(event.room_id).await;
                }
            }
            names::DELIVERY_LATENCY => {
                let Ok(report) = wire::DeliveryLatencyReport::decode(message.payload) else {
                    tracing::warn!("undecodable delivery latency report dropped");
                    return;
                };
                self.lock().latency.merge(&report, horizon(now_ms()));
            }
            other => tracing::debug!(method = other, "unexpected broadcast dropped"),
        }
    }

    /// Applies the room's events after its cursor from the database's log.
    async fn fill(&self, room_id: i64) {
        loop {
            let after = self.lock().cursor(room_id);
            let page = match self.database.events(room_id, after).await {
                Ok(page) => page,
                Err(NodeError::Service(e)) if e.code == "room_not_found" => return,
                Err(error) => {
                    tracing::debug!(%error, room_id, "reading missed events failed; the next reconcile retries");
                    return;
                }
            };
            if page.reset {
                self.resync(room_id, page.latest).await;
                return;
            }
            let full = page.events.len() as i64 >= EVENT_PAGE;
            {
                let mut state = self.lock();
                let now = now_ms();
                for event in &page.events {
                    if state.apply(event, now) != Step::Applied {
                        return;
                    }
                }
            }
            if !full {
                return;
            }
        }
    }

    /// Reads a room's messages again when its log no longer reaches back to the replica's
    /// cursor; `latest` is the room's cursor as read before the messages.
    async fn resync(&self, room_id: i64, latest: i64) {
        tracing::info!(
            room_id,
            latest,
            "room events pruned past this replica's cursor; reading its messages again"
        );
        let read = self
            .database
            .messages(horizon(now_ms()), room_id, |page| {
                let mut state = self.lock();
                let now = now_ms();
                for message in &page {
                    state.upsert(&MessageFacts::from(message), now);
                }
            })
            .await;
        match read {
            Ok(()) => self.lock().advance(room_id, latest),
            Err(error) => {
                tracing::debug!(%error, room_id, "resync failed; the next reconcile retries")
            }
        }
    }

    /// Catches what no gap revealed: rooms whose latest events were lost, new accounts.
    async fn reconcile(&self) {
        match self.database.cursors().await {
            Ok(rooms) => {
                let behind: Vec<i64> = {
                    let state = self.lock();
                    rooms
                        .iter()
                        .filter(|room| room.cursor > state.cursor(room.room_id))
                        .map(|room| room.room_id)
                        .collect()
                };
                for room_id in behind {
                    self.fill(room_id).await;
                }
            }
            Err(error) => tracing::debug!(%error, "reading room cursors failed"),
        }
        let now = now_ms();
        let since = self
            .lock()
            .latest_registration()
            .map_or(horizon(now), |at| at - REGISTRATION_OVERLAP_MS);
        match self.database.users(since).await {
            Ok(users) => {
                let mut state = self.lock();
                for user in &users {
                    state.register(user, now);
                }
            }
            Err(error) => tracing::debug!(%error, "reading new accounts failed"),
        }
        self.lock().prune(now_ms());
    }
}
