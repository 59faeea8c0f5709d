//! A typed client of the `database` service's analytics reads, through the node runtime. Every
//! one is a plain read, so every call is idempotent: the runtime retries it on another database
//! node when one dies mid-call.

use std::time::Duration;

use switchboard::{CallOptions, Node, NodeError};
use switchboard_proto::names;
use switchboard_proto::v1 as wire;

/// Rows per page of a bootstrap read.
const PAGE: i64 = 5000;
/// Events per page of a gap fill.
pub(crate) const EVENT_PAGE: i64 = 1000;
/// Deadline of one read.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The database service as an analytics replica sees it.
#[derive(Debug, Clone)]
pub(crate) struct Database {
    node: Node,
}

impl Database {
    pub(crate) fn new(node: Node) -> Self {
        Self { node }
    }

    async fn call<Req, Resp>(&self, method: &'static str, request: &Req) -> Result<Resp, NodeError>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let options = CallOptions::idempotent().timeout(TIMEOUT);
        self.node
            .call_message(names::DATABASE, method, request, options)
            .await
    }

    /// Every room's latest event cursor.
    pub(crate) async fn cursors(&self) -> Result<Vec<wire::RoomCursor>, NodeError> {
        let reply: wire::AnalyticsCursors = self.call("analytics_cursors", &wire::Empty {}).await?;
        Ok(reply.rooms)
    }

    /// Every message created since `since_ms`, of one room (`room_id` > 0) or of all, handed
    /// to `each` page by page.
    pub(crate) async fn messages(
        &self,
        since_ms: i64,
        room_id: i64,
        mut each: impl FnMut(Vec<wire::AnalyticsMessage>),
    ) -> Result<(), NodeError> {
        let mut after_id = 0;
        loop {
            let request = wire::AnalyticsMessagesRequest {
                since_ms,
                room_id,
                after_id,
                limit: PAGE,
            };
            let page: wire::AnalyticsMessagePage =
                self.call("analytics_messages", &request).await?;
            after_id = page.messages.last().map_or(after_id, |m| m.id);
            each(page.messages);
            if !page.more {
                return Ok(());
            }
        }
    }

    /// Every account registered since `since_ms`.
    pub(crate) async fn users(&self, since_ms: i64) -> Result<Vec<wire::User>, NodeError> {
        let mut users = Vec::new();
        loop {
            let request = wire::AnalyticsUsersRequest {
                since_ms,
                after_id: users.last().map_or(0, |u: &wire::User| u.id),
                limit: PAGE,
            };
            let page: wire::AnalyticsUserPage = self.call("analytics_users", &request).await?;
            users.extend(page.users);
            if !page.more {
                return Ok(users);
            }
        }
    }

    /// A page of a room's events after `after`.
    pub(crate) async fn events(
        &self,
        room_id: i64,
        after: i64,
    ) -> Result<wire::EventPage, NodeError> {
        let request = wire::AnalyticsEventsRequest {
            room_id,
            after,
            limit: EVENT_PAGE,
        };
        self.call("analytics_events", &request).await
    }
}
