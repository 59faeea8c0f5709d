//! The live tail of the activity log on this http node: a member of the `log.tail` process
//! group, so every batch a log node commits arrives here and is handed to this node's
//! `/v1/admin/logs/stream` subscribers. A subscriber that lags skips ahead (the stream says so)
//! rather than slowing anyone down; the full history stays queryable.

use std::sync::Arc;

use prost::Message;
use switchboard::Request;
use switchboard_proto::v1 as wire;
use tokio::sync::broadcast;

/// Entries buffered for slow tail subscribers.
const BUFFER: usize = 4096;

/// Fan-out of committed log entries to local subscribers.
#[derive(Debug, Clone)]
pub(crate) struct LogTail {
    sender: broadcast::Sender<Arc<wire::LogEntry>>,
}

impl Default for LogTail {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(BUFFER).0,
        }
    }
}

impl LogTail {
    /// Subscribes to entries committed from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<wire::LogEntry>> {
        self.sender.subscribe()
    }

    /// Hands one `log.tail` batch to the subscribers.
    pub(crate) fn deliver(&self, message: Request) {
        let Ok(batch) = wire::LogBatch::decode(message.payload) else {
            return;
        };
        for entry in batch.entries {
            // No subscriber is not an error: nobody is tailing right now.
            let _ = self.sender.send(Arc::new(entry));
        }
    }
}
