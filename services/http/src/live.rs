//! The live side of rooms on this http node: it is a member of the `chat.events` process group,
//! so every committed room event, from whichever database node committed it, arrives here, and
//! is handed to this node's subscribers of that room.
//!
//! Delivery through the group is best effort. Subscribers never rely on it alone: each event
//! carries its room cursor, and a subscriber that sees a gap (or lags) reads the missing events
//! from the database's event log.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prost::Message;
use switchboard::Request;
use switchboard_proto::v1 as wire;
use tokio::sync::broadcast;

/// Events buffered per room for slow subscribers before they lag (and catch up from the log).
const ROOM_BUFFER: usize = 1024;

/// Per-room channels of live events.
#[derive(Debug, Clone, Default)]
pub(crate) struct LiveHub {
    rooms: Arc<Mutex<HashMap<i64, broadcast::Sender<Arc<wire::RoomEvent>>>>>,
}

impl LiveHub {
    /// Subscribes to a room's live events.
    pub(crate) fn subscribe(&self, room_id: i64) -> broadcast::Receiver<Arc<wire::RoomEvent>> {
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
            && sender.send(Arc::new(event)).is_err()
        {
            rooms.remove(&room_id);
        }
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<i64, broadcast::Sender<Arc<wire::RoomEvent>>>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }
}
