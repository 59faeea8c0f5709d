//! The API's JSON shapes, converted from the wire types at this boundary. Times are RFC 3339 in
//! UTC with milliseconds.

use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use switchboard_proto::v1 as wire;
use utoipa::ToSchema;

/// RFC 3339 for milliseconds since the epoch.
pub(crate) fn timestamp(ms: i64) -> String {
    // RFC 3339 ends at the year 9999, and formatting a later time panics: clamp into its range.
    const LAST_MS: i64 = 253_402_300_799_999;
    let time = UNIX_EPOCH + Duration::from_millis(ms.clamp(0, LAST_MS) as u64);
    humantime::format_rfc3339_millis(time).to_string()
}

/// An account as others see it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct User {
    /// Unique id.
    pub(crate) id: i64,
    /// Unique name.
    pub(crate) username: String,
}

impl From<wire::User> for User {
    fn from(user: wire::User) -> Self {
        Self {
            id: user.id,
            username: user.username,
        }
    }
}

/// Credentials to register or log in with.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct Credentials {
    /// 3-32 characters of `[a-zA-Z0-9_.-]`.
    #[schema(min_length = 3, max_length = 32, pattern = "^[a-zA-Z0-9_.-]*$")]
    pub(crate) username: String,
    /// 8-1024 characters.
    #[schema(min_length = 8, max_length = 1024)]
    pub(crate) password: String,
}

/// A logged-in session.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Session {
    /// Who is logged in.
    pub(crate) user: User,
    /// Bearer token for `Authorization: Bearer <token>`.
    pub(crate) token: String,
}

/// `POST /v1/rooms`.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct NewRoom {
    /// 1-64 characters, not only whitespace, unique.
    #[schema(min_length = 1, max_length = 64, pattern = "\\S")]
    pub(crate) name: String,
    /// At most 256 characters.
    #[serde(default)]
    #[schema(max_length = 256)]
    pub(crate) topic: Option<String>,
}

/// A room.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Room {
    /// Unique id.
    pub(crate) id: i64,
    /// Unique name.
    pub(crate) name: String,
    /// Topic.
    pub(crate) topic: String,
    /// The owner's user id.
    pub(crate) created_by: i64,
    /// RFC 3339.
    pub(crate) created_at: String,
    /// Members.
    pub(crate) member_count: i64,
    /// Whether the caller is a member.
    pub(crate) joined: bool,
}

impl From<wire::Room> for Room {
    fn from(room: wire::Room) -> Self {
        Self {
            id: room.id,
            name: room.name,
            topic: room.topic,
            created_by: room.created_by,
            created_at: timestamp(room.created_at_ms),
            member_count: room.member_count,
            joined: room.joined,
        }
    }
}

/// `GET /v1/rooms`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RoomList {
    /// Oldest first.
    pub(crate) rooms: Vec<Room>,
}

/// A member of a room.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Member {
    /// The user.
    pub(crate) user: User,
    /// `owner` or `member`.
    pub(crate) role: String,
    /// RFC 3339.
    pub(crate) joined_at: String,
}

/// `GET /v1/rooms/{room_id}/members`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MemberList {
    /// In the order they joined.
    pub(crate) members: Vec<Member>,
}

impl From<wire::RoomMember> for Member {
    fn from(member: wire::RoomMember) -> Self {
        Self {
            user: member.user.unwrap_or_default().into(),
            role: member.role,
            joined_at: timestamp(member.joined_at_ms),
        }
    }
}

/// `POST` and `PATCH` of a message.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct MessageBody {
    /// 1-4000 characters, not only whitespace.
    #[schema(min_length = 1, max_length = 4000, pattern = "\\S")]
    pub(crate) body: String,
}

/// A message. A deleted one is a tombstone: `deleted` is true and `body` empty.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Message {
    /// Unique id.
    pub(crate) id: i64,
    /// The room.
    pub(crate) room_id: i64,
    /// Position in the room: gapless, increasing in commit order.
    pub(crate) seq: i64,
    /// Who posted it.
    pub(crate) author: User,
    /// The text.
    pub(crate) body: String,
    /// RFC 3339.
    pub(crate) created_at: String,
    /// RFC 3339 of the last edit, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) edited_at: Option<String>,
    /// Whether it was deleted.
    pub(crate) deleted: bool,
}

impl From<wire::ChatMessage> for Message {
    fn from(message: wire::ChatMessage) -> Self {
        Self {
            id: message.id,
            room_id: message.room_id,
            seq: message.seq,
            author: message.author.unwrap_or_default().into(),
            body: message.body,
            created_at: timestamp(message.created_at_ms),
            edited_at: (message.edited_at_ms != 0).then(|| timestamp(message.edited_at_ms)),
            deleted: message.deleted_at_ms != 0,
        }
    }
}

/// A page of history.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MessagePage {
    /// Oldest first.
    pub(crate) messages: Vec<Message>,
    /// Pass as `after` to get newer messages.
    pub(crate) next_after: i64,
    /// Pass as `before` to get older messages; absent at the start of the room.
    pub(crate) prev_before: Option<i64>,
}

/// `GET /v1/rooms/{room_id}/messages` parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageQuery {
    /// Only messages with a greater seq.
    pub(crate) after: Option<i64>,
    /// Only messages with a smaller seq.
    pub(crate) before: Option<i64>,
    /// 1-200, default 50.
    #[param(minimum = 1, maximum = 200)]
    pub(crate) limit: Option<i64>,
}

/// `GET /v1/rooms/{room_id}/events` parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventsQuery {
    /// Resume after this cursor (as `Last-Event-ID`).
    pub(crate) after: Option<i64>,
}

/// A member of the cluster.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ClusterNode {
    /// Node name.
    pub(crate) name: String,
    /// Inter-node address.
    pub(crate) address: String,
    /// Process incarnation.
    pub(crate) incarnation: String,
    /// `self`, `up` or `down (reason)`.
    pub(crate) state: String,
    /// Services it hosts.
    pub(crate) services: Vec<String>,
    /// Process groups it is in.
    pub(crate) groups: Vec<String>,
    /// The applications it runs, or has stopped after too many crashes (empty for a node that
    /// is down or did not answer in time).
    pub(crate) apps: Vec<ClusterApp>,
}

/// An application on one node, as `switchboard apps` shows it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ClusterApp {
    /// Application name.
    pub(crate) name: String,
    /// `running`, `starting`, `stopping` or `failed`.
    pub(crate) state: String,
    /// When it last started (ms since the Unix epoch); 0 when it is not running.
    pub(crate) since_ms: i64,
    /// Restarts after crashes within the current restart window.
    pub(crate) restarts: u32,
    /// Why it last failed; empty when it never has.
    pub(crate) last_failure: String,
    /// Services it provides.
    pub(crate) services: Vec<String>,
}

/// `GET /v1/admin/cluster`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Cluster {
    /// Every node this http node knows, itself first.
    pub(crate) nodes: Vec<ClusterNode>,
}
