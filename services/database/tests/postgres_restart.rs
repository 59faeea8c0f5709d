//! A PostgreSQL restart under keyed posts: the database node treats a lost or reset connection
//! as the passing condition it is, retries on a fresh connection within the call's deadline, and
//! no caller sees an error. The server is a real PostgreSQL of this test's own (Debian's
//! `postgresql` package, as `.ci/postgres.sh` installs it), restarted with `pg_ctl restart -m fast`,
//! which ends every session with "terminating connection due to administrator command", then
//! stopped for 1.5 s (connections refused) and started again. A post whose commit the restart
//! made ambiguous still has exactly one activity entry: it is stored in the post's transaction.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::{PrivatePostgres, call, config, posted_entries, stored_messages};
use switchboard::{Cookie, NodeBuilder};
use switchboard_database::Store;
use switchboard_database::configuration::DatabaseSettings;
use switchboard_proto::v1 as wire;

const DEADLINE: Duration = Duration::from_secs(60);
const COOKIE: &str = "postgres-restart-test-cookie";

#[tokio::test]
async fn a_postgres_restart_or_outage_under_two_seconds_costs_no_keyed_post() {
    let Some(postgres) = PrivatePostgres::start() else {
        return;
    };
    let store = Store::connect(&postgres.url(), 8).await.unwrap();
    let cookie = || Cookie::new(COOKIE).unwrap();
    let database = switchboard_database::serve(
        config("database@restart", &[]),
        cookie(),
        store,
        &DatabaseSettings::default(),
    )
    .await
    .unwrap();
    let client = NodeBuilder::new(
        "client",
        config("client@restart", &[database.address().to_owned()]),
        cookie(),
    )
    .start()
    .await
    .unwrap();
    assert!(client.wait_for_service("database", DEADLINE).await);
    let user: wire::UserReply = call(
        &client,
        "register",
        &wire::RegisterRequest {
            username: "patient".into(),
            password_hash: "not-a-real-hash".into(),
        },
    )
    .await
    .unwrap();
    let user_id = user.user.unwrap().id;
    let room: wire::Room = call(
        &client,
        "create_room",
        &wire::CreateRoomRequest {
            user_id,
            name: "restart".into(),
            topic: String::new(),
            idempotency_key: "room".into(),
        },
    )
    .await
    .unwrap();

    // Three clients post keyed messages steadily while the server restarts.
    let stop = Arc::new(AtomicBool::new(false));
    let posters: Vec<_> = (0..3)
        .map(|client_index| {
            let (client, stop) = (client.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut acknowledged, mut failed) = (Vec::new(), Vec::new());
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let post = wire::PostMessageRequest {
                        user_id,
                        room_id: room.id,
                        body: format!("client {client_index} message {i}"),
                        idempotency_key: format!("{client_index}-{i}"),
                    };
                    let reply: Result<wire::PostMessageReply, _> =
                        call(&client, "post_message", &post).await;
                    match reply {
                        Ok(reply) => acknowledged.push(reply.message.unwrap().id),
                        Err(error) => failed.push(format!("{client_index}-{i}: {error}")),
                    }
                    i += 1;
                }
                (acknowledged, failed)
            })
        })
        .collect();
    let count = || async {
        let page: Result<wire::MessagePage, _> = call(
            &client,
            "list_messages",
            &wire::ListMessagesRequest {
                user_id,
                room_id: room.id,
                limit: 1,
                ..Default::default()
            },
        )
        .await;
        page.ok()
            .and_then(|p| p.messages.last().map(|m| m.seq))
            .unwrap_or(0)
    };
    assert!(switchboard::eventually(DEADLINE, || async { count().await >= 100 }).await);
    let restarted = Instant::now();
    postgres.restart();
    eprintln!(
        "PostgreSQL restarted in {} ms",
        restarted.elapsed().as_millis()
    );
    let before = count().await;
    assert!(
        switchboard::eventually(DEADLINE, || async { count().await >= before + 100 }).await,
        "posts flow again after the restart"
    );
    let down = Instant::now();
    postgres.outage(Duration::from_millis(1500));
    eprintln!("PostgreSQL was away for {} ms", down.elapsed().as_millis());
    let before = count().await;
    assert!(
        switchboard::eventually(DEADLINE, || async { count().await >= before + 100 }).await,
        "posts flow again after the outage"
    );
    stop.store(true, Ordering::Relaxed);
    let (mut acknowledged, mut failed) = (Vec::new(), Vec::new());
    for poster in posters {
        let (ids, errors) = poster.await.unwrap();
        acknowledged.extend(ids);
        failed.extend(errors);
    }
    assert_eq!(failed, Vec::<String>::new(), "no keyed post failed");

    // Every acknowledged post is stored exactly once, with gapless seqs.
    let stored = stored_messages(&client, user_id, room.id).await;
    let ids: HashSet<i64> = stored.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), stored.len(), "nothing stored twice");
    assert_eq!(ids, acknowledged.iter().copied().collect::<HashSet<_>>());
    let seqs: Vec<i64> = stored.iter().map(|(_, seq)| *seq).collect();
    assert_eq!(
        seqs,
        (1..=stored.len() as i64).collect::<Vec<_>>(),
        "gapless"
    );

    // The activity log holds exactly one `message_posted` entry per stored message.
    let logged = posted_entries(&client).await;
    let unlogged = ids.iter().filter(|id| !logged.contains_key(id)).count();
    assert_eq!(unlogged, 0, "stored messages with no activity entry");
    assert!(logged.values().all(|n| *n == 1), "an entry stored twice");
    assert_eq!(logged.len(), ids.len(), "entries for messages not stored");
}
