//! Split brain: two database nodes that cannot reach each other (a partition, made total here by
//! giving the two sides different cookies, so no link between them can ever open) both take
//! posts to the same room. A room's seqs are assigned under the room's row lock in PostgreSQL,
//! never by agreement between nodes, so the two sides can never assign the same seq, and an
//! idempotency key sent to both sides (a client that retried on the other side of the partition)
//! is stored once, with one answer.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use support::{PrivatePostgres, call, config, stored_messages};
use switchboard::{Cookie, Node, NodeBuilder};
use switchboard_database::Store;
use switchboard_database::configuration::DatabaseSettings;
use switchboard_proto::v1 as wire;

const DEADLINE: Duration = Duration::from_secs(60);
/// Posts each side makes with keys of its own.
const POSTS_PER_SIDE: usize = 200;
/// Posts whose key goes to both sides at once.
const POSTS_TO_BOTH: usize = 50;

/// One side of the partition: a database node and a client node, in a cluster of their own.
struct Side {
    _database: Node,
    client: Node,
}

impl Side {
    async fn start(name: &str, postgres: &PrivatePostgres) -> Side {
        let cookie = || Cookie::new(format!("partition-test-cookie-of-side-{name}")).unwrap();
        let store = Store::connect(&postgres.url(), 8).await.unwrap();
        let database = switchboard_database::serve(
            config(&format!("database@{name}"), &[]),
            cookie(),
            store,
            &DatabaseSettings::default(),
        )
        .await
        .unwrap();
        let client = NodeBuilder::new(
            "client",
            config(&format!("client@{name}"), &[database.address().to_owned()]),
            cookie(),
        )
        .start()
        .await
        .unwrap();
        assert!(client.wait_for_service("database", DEADLINE).await);
        Side {
            _database: database,
            client,
        }
    }

    async fn post(&self, user_id: i64, room_id: i64, key: &str) -> wire::ChatMessage {
        let reply: wire::PostMessageReply = call(
            &self.client,
            "post_message",
            &wire::PostMessageRequest {
                user_id,
                room_id,
                body: format!("message {key}"),
                idempotency_key: key.to_owned(),
            },
        )
        .await
        .unwrap_or_else(|error| panic!("post {key}: {error}"));
        reply.message.unwrap()
    }
}

#[tokio::test]
async fn two_database_nodes_on_either_side_of_a_partition_never_assign_one_seq_twice() {
    let Some(postgres) = PrivatePostgres::start() else {
        return;
    };
    let left = Side::start("left", &postgres).await;
    let right = Side::start("right", &postgres).await;
    assert!(
        !left
            .client
            .nodes()
            .iter()
            .any(|n| n.name.ends_with("@right")),
        "the sides never link"
    );
    let user: wire::UserReply = call(
        &left.client,
        "register",
        &wire::RegisterRequest {
            username: "divided".into(),
            password_hash: "not-a-real-hash".into(),
        },
    )
    .await
    .unwrap();
    let user_id = user.user.unwrap().id;
    let room: wire::Room = call(
        &right.client,
        "create_room",
        &wire::CreateRoomRequest {
            user_id,
            name: "partitioned".into(),
            topic: String::new(),
            idempotency_key: "room".into(),
        },
    )
    .await
    .unwrap();

    let side_posts = |side: &'static str| {
        let (left, right) = (&left, &right);
        async move {
            let mut messages = Vec::new();
            for i in 0..POSTS_PER_SIDE {
                let key = format!("{side}-{i}");
                let on = if side == "left" { left } else { right };
                messages.push((key.clone(), on.post(user_id, room.id, &key).await));
            }
            messages
        }
    };
    let both = async {
        let mut messages = Vec::new();
        for i in 0..POSTS_TO_BOTH {
            let key = format!("both-{i}");
            let (l, r) = tokio::join!(
                left.post(user_id, room.id, &key),
                right.post(user_id, room.id, &key)
            );
            assert_eq!(l.id, r.id, "{key}: one message, whichever side answered");
            assert_eq!(l.seq, r.seq, "{key}: one seq");
            messages.push((key, l));
        }
        messages
    };
    let (from_left, from_right, from_both) =
        tokio::join!(side_posts("left"), side_posts("right"), both);
    let acknowledged: HashMap<String, wire::ChatMessage> = from_left
        .into_iter()
        .chain(from_right)
        .chain(from_both)
        .collect();
    assert_eq!(
        acknowledged.len(),
        2 * POSTS_PER_SIDE + POSTS_TO_BOTH,
        "every key acknowledged"
    );

    // No seq was handed out twice, and what is stored is exactly what was acknowledged, gapless.
    let acknowledged_seqs: HashSet<i64> = acknowledged.values().map(|m| m.seq).collect();
    assert_eq!(
        acknowledged_seqs.len(),
        acknowledged.len(),
        "seqs are unique"
    );
    let stored = stored_messages(&left.client, user_id, room.id).await;
    let seqs: Vec<i64> = stored.iter().map(|(_, seq)| *seq).collect();
    assert_eq!(
        seqs,
        (1..=acknowledged.len() as i64).collect::<Vec<_>>(),
        "gapless, each seq once"
    );
    let stored_ids: HashSet<i64> = stored.iter().map(|(id, _)| *id).collect();
    let acknowledged_ids: HashSet<i64> = acknowledged.values().map(|m| m.id).collect();
    assert_eq!(stored_ids, acknowledged_ids, "nothing lost, nothing extra");
}
