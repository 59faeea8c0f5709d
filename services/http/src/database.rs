//! A typed client of the `database` service, reached through the node runtime wherever its
//! providers run. Each method states whether its request is idempotent, which is what lets the
//! runtime retry it on another database node when one dies mid-call.

use std::time::Duration;

use switchboard::{Node, NodeError};
use switchboard_proto::names;
use switchboard_proto::v1 as wire;

use crate::service_client::ServiceClient;

/// The database service as the http node sees it.
#[derive(Debug, Clone)]
pub(crate) struct Database {
    client: ServiceClient,
}

impl Database {
    /// Calls through `node`, giving each call `timeout`.
    pub(crate) fn new(node: Node, timeout: Duration) -> Self {
        Self {
            client: ServiceClient::new(node, names::DATABASE, timeout),
        }
    }

    /// Creates an account. Idempotent: the password hash is freshly salted for each attempt,
    /// and the database node answers a retry that finds its own hash stored with that account,
    /// so a failover never turns the caller's own registration into `username_taken`.
    pub(crate) async fn register(
        &self,
        username: &str,
        password_hash: String,
    ) -> Result<wire::User, NodeError> {
        let request = wire::RegisterRequest {
            username: username.to_owned(),
            password_hash,
        };
        let reply: wire::UserReply = self.client.call("register", &request, true).await?;
        reply.user.ok_or_else(missing)
    }

    /// The account and password hash for a login.
    pub(crate) async fn credentials(
        &self,
        username: &str,
    ) -> Result<wire::CredentialsReply, NodeError> {
        let request = wire::CredentialsRequest {
            username: username.to_owned(),
        };
        self.client.call("credentials", &request, true).await
    }

    /// Stores a session under the token's hash. Idempotent: storing the same hash twice is a
    /// no-op.
    pub(crate) async fn create_session(
        &self,
        user_id: i64,
        token_hash: String,
        expires_at_ms: i64,
    ) -> Result<(), NodeError> {
        let request = wire::CreateSessionRequest {
            user_id,
            token_hash,
            expires_at_ms,
        };
        let _: wire::Empty = self.client.call("create_session", &request, true).await?;
        Ok(())
    }

    /// The user of a live session.
    pub(crate) async fn session(&self, token_hash: String) -> Result<wire::User, NodeError> {
        let reply: wire::UserReply = self
            .client
            .call("session", &wire::SessionRequest { token_hash }, true)
            .await?;
        reply.user.ok_or_else(missing)
    }

    /// Ends a session.
    pub(crate) async fn delete_session(&self, token_hash: String) -> Result<(), NodeError> {
        let _: wire::Empty = self
            .client
            .call("delete_session", &wire::SessionRequest { token_hash }, true)
            .await?;
        Ok(())
    }

    /// Creates a room owned by `user_id`. Idempotent: the key is stored with the room, so a
    /// retry on another database node returns the room instead of `room_name_taken`.
    pub(crate) async fn create_room(
        &self,
        user_id: i64,
        name: &str,
        topic: &str,
        idempotency_key: String,
    ) -> Result<wire::Room, NodeError> {
        let request = wire::CreateRoomRequest {
            user_id,
            name: name.to_owned(),
            topic: topic.to_owned(),
            idempotency_key,
        };
        self.client.call("create_room", &request, true).await
    }

    /// Every room with `joined` flags for `user_id`.
    pub(crate) async fn list_rooms(&self, user_id: i64) -> Result<Vec<wire::Room>, NodeError> {
        let reply: wire::RoomList = self
            .client
            .call("list_rooms", &wire::ListRoomsRequest { user_id }, true)
            .await?;
        Ok(reply.rooms)
    }

    /// One room.
    pub(crate) async fn get_room(
        &self,
        user_id: i64,
        room_id: i64,
    ) -> Result<wire::Room, NodeError> {
        self.client
            .call("get_room", &wire::RoomRequest { user_id, room_id }, true)
            .await
    }

    /// Joins a room (idempotent).
    pub(crate) async fn join_room(
        &self,
        user_id: i64,
        room_id: i64,
    ) -> Result<wire::Room, NodeError> {
        self.client
            .call("join_room", &wire::RoomRequest { user_id, room_id }, true)
            .await
    }

    /// Leaves a room (idempotent).
    pub(crate) async fn leave_room(&self, user_id: i64, room_id: i64) -> Result<(), NodeError> {
        let _: wire::Empty = self
            .client
            .call("leave_room", &wire::RoomRequest { user_id, room_id }, true)
            .await?;
        Ok(())
    }

    /// The members of a room.
    pub(crate) async fn list_members(
        &self,
        user_id: i64,
        room_id: i64,
    ) -> Result<Vec<wire::RoomMember>, NodeError> {
        let reply: wire::MemberList = self
            .client
            .call(
                "list_members",
                &wire::RoomRequest { user_id, room_id },
                true,
            )
            .await?;
        Ok(reply.members)
    }

    /// Posts a message. Always carries an idempotency key (the client's, or one made for this
    /// request), so the runtime may retry it on another database node without a duplicate.
    pub(crate) async fn post_message(
        &self,
        request: wire::PostMessageRequest,
    ) -> Result<wire::PostMessageReply, NodeError> {
        debug_assert!(!request.idempotency_key.is_empty());
        self.client.call("post_message", &request, true).await
    }

    /// A page of history.
    pub(crate) async fn list_messages(
        &self,
        request: wire::ListMessagesRequest,
    ) -> Result<wire::MessagePage, NodeError> {
        self.client.call("list_messages", &request, true).await
    }

    /// Edits a message; applying the same edit twice leaves the same text.
    pub(crate) async fn edit_message(
        &self,
        request: wire::EditMessageRequest,
    ) -> Result<wire::ChatMessage, NodeError> {
        self.client.call("edit_message", &request, true).await
    }

    /// Soft-deletes a message (idempotent).
    pub(crate) async fn delete_message(
        &self,
        request: wire::DeleteMessageRequest,
    ) -> Result<wire::ChatMessage, NodeError> {
        self.client.call("delete_message", &request, true).await
    }

    /// Room events after a cursor.
    pub(crate) async fn room_events(
        &self,
        user_id: i64,
        room_id: i64,
        after: i64,
        limit: i64,
    ) -> Result<wire::EventPage, NodeError> {
        let request = wire::EventsRequest {
            user_id,
            room_id,
            after,
            limit,
        };
        self.client.call("room_events", &request, true).await
    }

    /// Whether some database node answers within `timeout`.
    pub(crate) async fn ping(&self, timeout: Duration) -> bool {
        self.client
            .call_within::<_, wire::Empty>("ping", &wire::Empty {}, true, timeout)
            .await
            .is_ok()
    }
}

fn missing() -> NodeError {
    NodeError::Transport("the database replied without the expected record".into())
}
