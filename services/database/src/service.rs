//! The `database` service: decodes each request from the wire, runs it against the [`Store`],
//! encodes the reply, and broadcasts each committed room event to the `chat.events` group (and
//! each post's activity entry, stored with it, to `log.tail`).
//!
//! Requests are protobuf messages from `switchboard-proto`; the method name selects the
//! operation. Every operation is safe to retry on another database node: reads trivially, posts
//! through their idempotency key, the rest because they are idempotent by construction (join,
//! leave, delete) or fail cleanly on a second attempt (register, create room).
//!
//! The same holds on this node: an operation that meets a lost or reset database connection (a
//! PostgreSQL restart, a failover) is run again on a fresh connection, with a short backoff, for
//! up to [`RETRY_FOR`]; only then does the caller get `unavailable`. A keyed post that may have
//! committed before its connection died finds its own stored result on the retry.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use switchboard::service::ServiceFuture;
use switchboard::{Bytes, Node, Request, Service, ServiceError};
use switchboard_proto::names;
use switchboard_proto::v1 as wire;

use crate::group_commit::GroupCommit;
use crate::store::{NewPost, Store, StoreError};

/// How long an operation is retried after lost or reset connections: within the 5 s deadline
/// callers give a call by default, with time left for the reply.
const RETRY_FOR: Duration = Duration::from_secs(4);
/// The first pause before a retry; it doubles up to [`MAX_RETRY_PAUSE`].
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(20);
const MAX_RETRY_PAUSE: Duration = Duration::from_millis(500);

/// The service a database node hosts.
#[derive(Debug, Clone)]
pub struct DatabaseService {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    node: Node,
    /// Posts go through group commit; everything else straight to the store.
    posts: GroupCommit,
}

impl DatabaseService {
    /// Serves `store`, broadcasting events through `node`.
    pub fn new(store: Store, node: Node) -> Self {
        Self {
            inner: Arc::new(Inner {
                posts: GroupCommit::start(store.clone(), node.clone()),
                store,
                node,
            }),
        }
    }
}

impl Service for DatabaseService {
    fn handle(&self, request: Request) -> ServiceFuture {
        let inner = self.inner.clone();
        Box::pin(async move { inner.dispatch_retrying(request).await })
    }
}

/// Why an operation failed: the request itself, or the store (which may be worth a retry).
#[derive(Debug)]
enum Failure {
    Request(ServiceError),
    Store(StoreError),
}

impl From<ServiceError> for Failure {
    fn from(error: ServiceError) -> Self {
        Failure::Request(error)
    }
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        Failure::Store(error)
    }
}

impl From<Failure> for ServiceError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Request(error) => error,
            Failure::Store(error) => error.into(),
        }
    }
}

fn decode<T: Message + Default>(payload: &[u8]) -> Result<T, ServiceError> {
    T::decode(payload)
        .map_err(|e| ServiceError::new("invalid_request", format!("malformed request: {e}")))
}

fn reply<T: Message>(message: &T) -> Result<Bytes, Failure> {
    Ok(message.encode_to_vec().into())
}

impl Inner {
    /// Runs the request, again on a fresh connection after a lost or reset one (module doc).
    async fn dispatch_retrying(&self, request: Request) -> Result<Bytes, ServiceError> {
        let started = Instant::now();
        let mut pause = FIRST_RETRY_PAUSE;
        loop {
            match self.dispatch(&request).await {
                Err(Failure::Store(error))
                    if error.is_transient() && started.elapsed() + pause < RETRY_FOR =>
                {
                    self.store.record_reset();
                    tracing::info!(%error, method = %request.method, "database connection lost; retrying on a fresh one");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_RETRY_PAUSE);
                }
                result => return result.map_err(ServiceError::from),
            }
        }
    }

    async fn dispatch(&self, request: &Request) -> Result<Bytes, Failure> {
        let store = &self.store;
        let payload = &request.payload[..];
        match &*request.method {
            "register" => {
                let r: wire::RegisterRequest = decode(payload)?;
                let user = store.register(&r.username, &r.password_hash).await?;
                reply(&wire::UserReply { user: Some(user) })
            }
            "credentials" => {
                let r: wire::CredentialsRequest = decode(payload)?;
                match store.credentials(&r.username).await? {
                    Some((user, password_hash)) => reply(&wire::CredentialsReply {
                        user: Some(user),
                        password_hash,
                    }),
                    None => Err(ServiceError::new("invalid_credentials", "no such account").into()),
                }
            }
            "create_session" => {
                let r: wire::CreateSessionRequest = decode(payload)?;
                store
                    .create_session(r.user_id, &r.token_hash, r.expires_at_ms)
                    .await?;
                reply(&wire::Empty {})
            }
            "session" => {
                let r: wire::SessionRequest = decode(payload)?;
                let user = store.session(&r.token_hash).await?;
                reply(&wire::UserReply { user: Some(user) })
            }
            "delete_session" => {
                let r: wire::SessionRequest = decode(payload)?;
                store.delete_session(&r.token_hash).await?;
                reply(&wire::Empty {})
            }
            "create_room" => {
                let r: wire::CreateRoomRequest = decode(payload)?;
                reply(
                    &store
                        .create_room(r.user_id, &r.name, &r.topic, &r.idempotency_key)
                        .await?,
                )
            }
            "list_rooms" => {
                let r: wire::ListRoomsRequest = decode(payload)?;
                reply(&wire::RoomList {
                    rooms: store.list_rooms(r.user_id).await?,
                })
            }
            "get_room" => {
                let r: wire::RoomRequest = decode(payload)?;
                reply(&store.get_room(r.user_id, r.room_id).await?)
            }
            "join_room" => {
                let r: wire::RoomRequest = decode(payload)?;
                let (room, event) = store.join_room(r.user_id, r.room_id).await?;
                self.publish(event);
                reply(&room)
            }
            "leave_room" => {
                let r: wire::RoomRequest = decode(payload)?;
                let event = store.leave_room(r.user_id, r.room_id).await?;
                self.publish(event);
                reply(&wire::Empty {})
            }
            "list_members" => {
                let r: wire::RoomRequest = decode(payload)?;
                reply(&wire::MemberList {
                    members: store.list_members(r.user_id, r.room_id).await?,
                })
            }
            "post_message" => {
                let r: wire::PostMessageRequest = decode(payload)?;
                let outcome = self
                    .posts
                    .post(NewPost {
                        user_id: r.user_id,
                        room_id: r.room_id,
                        body: r.body,
                        key: r.idempotency_key,
                    })
                    .await?;
                // The committer published the event, in commit order with the rest of its batch.
                reply(&wire::PostMessageReply {
                    message: Some(outcome.message),
                    replayed: outcome.replayed,
                })
            }
            "list_messages" => {
                let r: wire::ListMessagesRequest = decode(payload)?;
                reply(&store.list_messages(&r).await?)
            }
            "edit_message" => {
                let r: wire::EditMessageRequest = decode(payload)?;
                let (message, event) = store.edit_message(&r).await?;
                self.publish(Some(event));
                reply(&message)
            }
            "delete_message" => {
                let r: wire::DeleteMessageRequest = decode(payload)?;
                let (message, event) = store.delete_message(&r).await?;
                self.publish(event);
                reply(&message)
            }
            "room_events" => {
                let r: wire::EventsRequest = decode(payload)?;
                reply(
                    &store
                        .room_events(r.user_id, r.room_id, r.after, r.limit)
                        .await?,
                )
            }
            "append_logs" => {
                let r: wire::LogBatch = decode(payload)?;
                reply(&wire::LogBatch {
                    entries: store.append_logs(r.entries).await?,
                })
            }
            "query_logs" => {
                let r: wire::LogQuery = decode(payload)?;
                reply(&store.query_logs(&r).await?)
            }
            "file_report" => {
                let r: wire::FileReportRequest = decode(payload)?;
                reply(&store.file_report(&r).await?)
            }
            "list_reports" => {
                let r: wire::ListReportsRequest = decode(payload)?;
                reply(&wire::ReportList {
                    reports: store.list_reports(&r.status).await?,
                })
            }
            "resolve_report" => {
                let r: wire::ResolveReportRequest = decode(payload)?;
                let resolved = store.resolve_report(&r).await?;
                self.publish(resolved.event.clone());
                reply(&resolved)
            }
            "recent_messages" => {
                let r: wire::RecentMessagesRequest = decode(payload)?;
                reply(&wire::RecentMessages {
                    events: store.recent_messages(&r).await?,
                })
            }
            "report_stats" => {
                let r: wire::ReportStatsRequest = decode(payload)?;
                reply(&store.report_stats(&r).await?)
            }
            "ping" => {
                store.ping().await?;
                reply(&wire::Empty {})
            }
            // Analytics replicas' reads: no membership check, lengths instead of text.
            "analytics_cursors" => reply(&store.analytics_cursors().await?),
            "analytics_messages" => {
                let r: wire::AnalyticsMessagesRequest = decode(payload)?;
                reply(&store.analytics_messages(&r).await?)
            }
            "analytics_users" => {
                let r: wire::AnalyticsUsersRequest = decode(payload)?;
                reply(&store.analytics_users(&r).await?)
            }
            "analytics_events" => {
                let r: wire::AnalyticsEventsRequest = decode(payload)?;
                reply(&store.analytics_events(&r).await?)
            }
            other => Err(ServiceError::new(
                "unknown_method",
                format!("the database service has no method {other}"),
            )
            .into()),
        }
    }

    fn publish(&self, event: Option<wire::RoomEvent>) {
        if let Some(event) = event {
            publish(&self.node, &event);
        }
    }
}

/// Shows committed activity `entries` to the members of `log.tail` (admins' live tails), as the
/// log service does with the entries it stores. Tails are watched, not waited on.
pub(crate) fn tail(node: &Node, entries: Vec<wire::LogEntry>) {
    if !entries.is_empty() {
        let batch = wire::LogBatch { entries };
        node.broadcast_background(names::LOG_TAIL, names::LOG_BATCH, batch.encode_to_vec());
    }
}

/// Tells every member of `chat.events` about a committed event. Delivery is best effort: live
/// clients detect a gap by cursor and read what they missed from the event log.
pub(crate) fn publish(node: &Node, event: &wire::RoomEvent) {
    node.broadcast(names::CHAT_EVENTS, names::ROOM_EVENT, event.encode_to_vec());
}
