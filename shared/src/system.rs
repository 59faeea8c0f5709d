//! The built-in `switchboard.node` service every node answers, whatever else it hosts: the
//! operator's view of one member (`members`), a round-trip probe (`ping`), the frames its
//! links carried (`stats`, a `NodeStats`, what the dashboard reads message rates from), and its
//! applications (`apps`, `app_start`, `app_stop`; see [`crate::application`]). It is what the
//! `switchboard nodes`, `ping`, `apps` and `app` commands call, like Erlang's `net_adm` and
//! `application:start/stop`.

use bytes::Bytes;
use prost::Message;
use switchboard_proto::v1 as wire;

use crate::error::{NodeError, ServiceError};
use crate::node::NodeInner;
use crate::registry::PeerState;
use crate::service::Request;

/// The built-in service's name.
pub const SERVICE: &str = "switchboard.node";

pub(crate) async fn handle(node: &NodeInner, request: Request) -> Result<Bytes, NodeError> {
    match &*request.method {
        "ping" => Ok(request.payload),
        "members" => Ok(members(node).encode_to_vec().into()),
        "apps" | "app_start" | "app_stop" => match node.applications.get() {
            Some(applications) => applications.handle(&request).await,
            None => Ok(wire::AppsReply::default().encode_to_vec().into()),
        },
        "stats" => Ok(stats(node).encode_to_vec().into()),
        other => Err(ServiceError::new(
            "unknown_method",
            format!("{SERVICE} has no method {other}"),
        )
        .into()),
    }
}

fn members(node: &NodeInner) -> wire::MembersReply {
    wire::MembersReply {
        members: node
            .nodes()
            .into_iter()
            .map(|info| wire::MemberInfo {
                state: match (&info.state, info.is_self) {
                    (_, true) => "self".into(),
                    (PeerState::Up, _) => "up".into(),
                    (PeerState::Down { reason }, _) => format!("down ({reason})"),
                },
                name: info.name,
                address: info.address,
                incarnation: info.incarnation,
                services: info.services,
                groups: info.groups,
            })
            .collect(),
    }
}

/// The node's frame totals and each link it dialed, by peer name.
pub(crate) fn stats(node: &NodeInner) -> wire::NodeStats {
    let frames = node.metrics.frames();
    let mut links: Vec<wire::LinkStats> = node
        .links()
        .into_iter()
        .map(|link| wire::LinkStats {
            peer: link.peer.clone(),
            incarnation: link.incarnation,
            frames_sent: link.traffic.sent(),
            frames_received: link.traffic.received(),
        })
        .collect();
    links.sort_by(|a, b| a.peer.cmp(&b.peer));
    wire::NodeStats {
        frames_sent: frames.sent,
        frames_received: frames.received,
        links,
    }
}
