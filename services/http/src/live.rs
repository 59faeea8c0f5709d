//! The live side of rooms on this http node: it is a member of the `chat.events` process group,
//! so every committed room event, from whichever database node committed it, arrives here, and
//! is handed to this node's subscribers of that room.
//!
//! Delivery through the group is best effort. Subscribers never rely on it alone: each event
//! carries its room cursor, and a subscriber that sees a gap (or lags) reads the missing events
//! from the database's event log.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use axum::response::sse::Event;
use prost::Message as _;
use serde_json::json;
use switchboard::Request;
use switchboard_proto::v1 as wire;
use tokio::sync::broadcast;

use crate::model::{Message, User};

/// Events buffered per room for slow subscribers before they lag (and catch up from the log).
const ROOM_BUFFER: usize = 1024;

/// A room's channel of live events.
type RoomChannel = broadcast::Sender<Arc<LiveEvent>>;

/// Per-room channels of live events.
#[derive(Debug, Clone, Default)]
pub(crate) struct LiveHub {
    rooms: Arc<Mutex<HashMap<i64, RoomChannel>>>,
}

/// A committed room event as this node's subscribers get it: decoded once, and rendered as SSE
/// once, by the first subscriber that sends it. With a thousand subscribers in a room, the
/// JSON of each event is written once instead of a thousand times.
#[derive(Debug)]
pub(crate) struct LiveEvent {
    pub(crate) event: wire::RoomEvent,
    rendered: OnceLock<Event>,
}

impl LiveEvent {
    /// The event's SSE form (a copy of the one rendering).
    pub(crate) fn sse(&self) -> Event {
        self.rendered.get_or_init(|| render(&self.event)).clone()
    }
}

/// The SSE form of a room event.
pub(crate) fn render(event: &wire::RoomEvent) -> Event {
    let data = match (&event.message, &event.user) {
        (Some(message), _) => serde_json::to_value(Message::from(message.clone())),
        (None, Some(user)) => {
            Ok(json!({ "room_id": event.room_id, "user": User::from(user.clone()) }))
        }
        (None, None) => Ok(json!({ "room_id": event.room_id })),
    }
    .unwrap_or_default();
    Event::default()
        .event(event.kind.as_str())
        .id(event.cursor.to_string())
        .data(data.to_string())
}

impl LiveHub {
    /// Subscribes to a room's live events.
    pub(crate) fn subscribe(&self, room_id: i64) -> broadcast::Receiver<Arc<LiveEvent>> {
        self.lock()
            .entry(room_id)
            .or_insert_with(|| broadcast::channel(ROOM_BUFFER).0)
            .subscribe()
    }

    /// Hands one group message to the room's subscribers; drops rooms nobody watches any more.
    pub(crate) fn deliver(&self, message: Request) {
        let Ok(event) = wire::RoomEvent::decode(message.payload) else {
            tracing::warn!("undecodable room event dropped");
            return;
        };
        let room_id = event.room_id;
        let mut rooms = self.lock();
        if let Some(sender) = rooms.get(&room_id)
            && sender
                .send(Arc::new(LiveEvent {
                    event,
                    rendered: OnceLock::new(),
                }))
                .is_err()
        {
            rooms.remove(&room_id);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, RoomChannel>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }
}
