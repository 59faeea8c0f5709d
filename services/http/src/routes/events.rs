//! `GET /v1/rooms/{room_id}/events`: a room's live events as Server-Sent Events.
//!
//! Each event's `id:` is the room's event cursor. A client that reconnects with `Last-Event-ID`
//! (or `?after=`) first gets exactly what it missed from the database's event log, then live
//! events from this node's `chat.events` membership. The stream subscribes to live events
//! *before* reading the log and drops anything at or below the last cursor sent, so the seam
//! has no gap and no duplicate; a gap in live delivery (a lost or lagged broadcast) is filled
//! from the log. A cursor the log no longer holds gets an explicit `event: reset`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde_json::json;
use switchboard_proto::v1 as wire;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use crate::auth::AuthUser;
use crate::database::Database;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiPath, ApiQuery};
use crate::live::{LiveEvent, render};
use crate::model::EventsQuery;
use crate::state::AppState;

/// Keep-alive comments, and the idle interval after which the log is checked for anything a lost
/// broadcast did not bring.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
const PAGE: i64 = 500;
/// Events queued for one stream's connection. A reader that keeps up never fills it; one that
/// stops reading holds at most this many (plus the socket's capped send buffer) until its
/// connection is dropped at the write stall timeout (`stalled_writes.rs`).
const QUEUED_PER_STREAM: usize = 16;

/// Streams the room's events. Members only.
#[utoipa::path(get, path = "/v1/rooms/{room_id}/events", tag = "messages", security(("bearer" = [])),
    params(("room_id" = i64, Path, description = "The room"), EventsQuery,
           ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this cursor")),
    responses((status = 200, content_type = "text/event-stream", description = "message, message_edited, message_deleted, member_joined, member_left, reset"),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 429, body = ErrorBody, description = "too_many_streams: the user holds SWITCHBOARD_MAX_STREAMS_PER_USER streams on this node; too_many_stream_openings: the user opened SWITCHBOARD_STREAM_OPEN_RATE_LIMIT streams on this node within the last minute (see Retry-After); rate_limited: the user's request rate")))]
pub(crate) async fn room_events(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(room_id): ApiPath<i64>,
    ApiQuery(query): ApiQuery<EventsQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .or(query.after);
    let slot = state.streams.take(user.id)?;
    // Subscribe first: anything committed from here on reaches `live`.
    let live = state.live.subscribe(room_id);
    // Membership and the starting point are checked now, so a refusal is a proper HTTP error.
    let start = match resume {
        Some(after) => {
            state
                .database
                .room_events(user.id, room_id, after, PAGE)
                .await?
        }
        None => state.database.room_events(user.id, room_id, 0, 0).await?,
    };
    let (tx, rx) = mpsc::channel(QUEUED_PER_STREAM);
    let subscriber = Subscriber {
        database: state.database.clone(),
        user_id: user.id,
        room_id,
        last: resume.unwrap_or(start.latest),
        live_after: start.latest,
        latency: state.latency.clone(),
        tx,
    };
    let draining = state.draining.clone();
    tokio::spawn(async move {
        let _slot = slot;
        tokio::select! {
            _ = subscriber.run(start, resume.is_some(), live) => {}
            _ = draining.cancelled() => {}
        }
    });
    let stream = ReceiverStream::new(rx).map(Ok);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive")))
}

/// Why a subscription ended.
enum End {
    /// The client went away.
    Disconnected,
    /// The user is no longer a member.
    LeftRoom,
}

struct Subscriber {
    database: Database,
    user_id: i64,
    room_id: i64,
    /// The last cursor sent (or the starting point).
    last: i64,
    /// The room's latest cursor when the stream opened: later events are live, and their
    /// delivery latency is measured; earlier ones are history being replayed.
    live_after: i64,
    latency: switchboard_analytics::DeliveryLatency,
    tx: mpsc::Sender<Event>,
}

impl Subscriber {
    async fn run(
        mut self,
        start: wire::EventPage,
        replaying: bool,
        mut live: broadcast::Receiver<Arc<LiveEvent>>,
    ) {
        if replaying && (self.page(start).await.is_err() || self.catch_up().await.is_err()) {
            return;
        }
        loop {
            let next = tokio::select! {
                next = live.recv() => next,
                _ = tokio::time::sleep(KEEP_ALIVE) => {
                    if self.catch_up().await.is_err() { return; }
                    continue;
                }
                _ = self.tx.closed() => return,
            };
            let result = match next {
                Ok(live) if live.event.cursor <= self.last => Ok(()),
                Ok(live) if live.event.cursor == self.last + 1 => {
                    self.send(&live.event, live.sse()).await
                }
                // A gap: some broadcast was lost; the log has it.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => self.catch_up().await,
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if result.is_err() {
                return;
            }
        }
    }

    /// Sends everything in the log after `last`.
    async fn catch_up(&mut self) -> Result<(), End> {
        loop {
            let page = match self
                .database
                .room_events(self.user_id, self.room_id, self.last, PAGE)
                .await
            {
                Ok(page) => page,
                Err(switchboard::NodeError::Service(e)) if e.code == "not_a_member" => {
                    return Err(End::LeftRoom);
                }
                Err(error) => {
                    // The log is unreachable for now; the next tick tries again.
                    tracing::debug!(%error, "catching up a live subscriber failed");
                    return Ok(());
                }
            };
            let full = page.events.len() as i64 >= PAGE;
            self.page(page).await?;
            if !full {
                return Ok(());
            }
        }
    }

    async fn page(&mut self, page: wire::EventPage) -> Result<(), End> {
        if page.reset {
            let event = Event::default()
                .event("reset")
                .id(page.latest.to_string())
                .data(json!({ "latest": page.latest, "reason": "the cursor is no longer replayable; reload the room" }).to_string());
            self.tx.send(event).await.map_err(|_| End::Disconnected)?;
            self.last = page.latest;
            return Ok(());
        }
        for event in &page.events {
            if event.cursor > self.last {
                self.send(event, render(event)).await?;
            }
        }
        Ok(())
    }

    /// Sends `event`, whose SSE form is `rendered`.
    async fn send(&mut self, event: &wire::RoomEvent, rendered: Event) -> Result<(), End> {
        self.tx
            .send(rendered)
            .await
            .map_err(|_| End::Disconnected)?;
        self.last = event.cursor;
        if event.cursor > self.live_after {
            self.latency.record(event.at_ms);
        }
        let left = event.kind == "member_left"
            && event.user.as_ref().is_some_and(|u| u.id == self.user_id);
        if left {
            return Err(End::LeftRoom);
        }
        Ok(())
    }
}
