//! The chat API end to end: real http and database nodes over the real protocol, on SQLite and
//! on PostgreSQL, driven over HTTP.

mod support;

use std::collections::HashSet;

use reqwest::{Method, StatusCode};
use serde_json::json;
use support::*;

on_both_backends!(
    accounts_register_login_me_logout,
    retried_registrations_logins_and_rooms_return_what_the_first_attempt_stored,
    logout_invalidates_the_token_on_every_http_node,
    rooms_create_list_get_join_leave_members,
    messages_post_page_edit_delete,
    idempotent_retry_returns_the_identical_message,
    two_http_nodes_posting_concurrently_produce_gapless_seqs,
    posts_committed_together_are_answered_one_by_one,
    a_member_who_leaves_has_no_message_after_leaving,
    non_members_are_refused_read_post_and_events,
    sse_on_one_http_node_receives_a_post_made_through_another,
    sse_resume_with_last_event_id_misses_nothing,
);

/// What a failover retry looks like to the database node: the very same request again after
/// the first attempt committed. The runtime retries `register`, `create_session` and
/// `create_room` on another database node when the first dies mid-call, so a repeat must
/// answer as the first did.
async fn retried_registrations_logins_and_rooms_return_what_the_first_attempt_stored(
    backend: Backend,
) {
    use switchboard::CallOptions;
    use switchboard_proto::v1 as wire;
    let Some(cluster) = Cluster::start(backend, 1, 1).await else {
        return;
    };
    let http = &cluster.https[0].0;
    let register = |hash: &str| wire::RegisterRequest {
        username: "retrier".into(),
        password_hash: hash.into(),
    };
    let call = |request: wire::RegisterRequest| async move {
        http.call_message::<_, wire::UserReply>(
            "database",
            "register",
            &request,
            CallOptions::idempotent(),
        )
        .await
    };
    // Salted hashes differ per attempt; the http node computes one per request.
    let first = call(register("$argon2id$salt-one$hash")).await.unwrap();
    let retried = call(register("$argon2id$salt-one$hash")).await.unwrap();
    assert_eq!(
        first.user, retried.user,
        "the retry gets the account it created"
    );
    let other = call(register("$argon2id$salt-two$hash")).await.unwrap_err();
    assert!(other.to_string().contains("username_taken"), "{other}");
    let user_id = first.user.unwrap().id;
    let session = wire::CreateSessionRequest {
        user_id,
        token_hash: "ab".repeat(32),
        expires_at_ms: i64::MAX,
    };
    for _ in 0..2 {
        http.call_message::<_, wire::Empty>(
            "database",
            "create_session",
            &session,
            CallOptions::idempotent(),
        )
        .await
        .unwrap();
    }
    let user: wire::UserReply = http
        .call_message(
            "database",
            "session",
            &wire::SessionRequest {
                token_hash: "ab".repeat(32),
            },
            CallOptions::idempotent(),
        )
        .await
        .unwrap();
    assert_eq!(user.user.unwrap().id, user_id);
    // Rooms: the same key gets the room it created; another key (or none) finds the name taken.
    let create = |key: &str| wire::CreateRoomRequest {
        user_id,
        name: "retried".into(),
        topic: "t".into(),
        idempotency_key: key.into(),
    };
    let room = |request: wire::CreateRoomRequest| async move {
        http.call_message::<_, wire::Room>(
            "database",
            "create_room",
            &request,
            CallOptions::idempotent(),
        )
        .await
    };
    let created = room(create("request:one")).await.unwrap();
    assert_eq!(room(create("request:one")).await.unwrap(), created);
    for other in ["request:two", ""] {
        let taken = room(create(other)).await.unwrap_err();
        assert!(taken.to_string().contains("room_name_taken"), "{taken}");
    }
    // Over HTTP, with the client's own key.
    let api = cluster.api(0).register("keyholder").await;
    let with_key = |key: &'static str| {
        api.request(Method::POST, "/v1/rooms")
            .header("idempotency-key", key)
            .json(&json!({ "name": "keyed" }))
    };
    let first = api.send(with_key("k-1")).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let again = api.send(with_key("k-1")).await;
    assert_eq!(
        (again.status, &again.body),
        (StatusCode::CREATED, &first.body)
    );
    let other = api.send(with_key("k-2")).await;
    assert_eq!(other.status, StatusCode::CONFLICT);
    assert_eq!(other.code(), "room_name_taken");
}

async fn accounts_register_login_me_logout(backend: Backend) {
    let Some(cluster) = Cluster::start(backend, 1, 1).await else {
        return;
    };
    let api = cluster.api(0);
    let reply = api
        .post(
            "/v1/auth/register",
            json!({ "username": "alice", "password": "s3cret-passw0rd" }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(reply.body["user"]["username"], "alice");
    let token = reply.body["token"].as_str().unwrap();
    assert!(token.len() >= 32, "at least 128 bits");
    // Names are unique whatever their letter case.
    let taken = api
        .post(
            "/v1/auth/register",
            json!({ "username": "ALICE", "password": "another-password" }),
        )
        .await;
    assert_eq!(taken.status, StatusCode::CONFLICT);
    assert_eq!(taken.code(), "username_taken");
    let login = api
        .post(
            "/v1/auth/login",
            json!({ "username": "alice", "password": "s3cret-passw0rd" }),
        )
        .await;
    assert_eq!(login.status, StatusCode::OK);
    assert_eq!(login.body["user"]["id"], reply.body["user"]["id"]);
    let wrong = api
        .post(
            "/v1/auth/login",
            json!({ "username": "alice", "password": "wrong-password" }),
        )
        .await;
    let unknown = api
        .post(
            "/v1/auth/login",
            json!({ "username": "nobody", "password": "wrong-password" }),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        (wrong.code(), &wrong.body["message"]),
        (unknown.code(), &unknown.body["message"])
    );
    let alice = Api {
        token: Some(login.body["token"].as_str().unwrap().to_owned()),
        ..api.clone()
    };
    let me = alice.get("/v1/me").await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["username"], "alice");
    let out = alice
        .send(alice.request(Method::POST, "/v1/auth/logout"))
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    assert_eq!(alice.get("/v1/me").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(api.get("/v1/me").await.code(), "unauthorized");
}

async fn logout_invalidates_the_token_on_every_http_node(backend: Backend) {
    let Some(cluster) = Cluster::start(backend, 1, 2).await else {
        return;
    };
    // Node A tells the http nodes it can see; one that has not met A yet keeps the session for
    // up to its cache lifetime. That is the product's contract, so the test waits for A and B to
    // have met before it logs out.
    cluster.wait_for_mesh().await;
    let on_a = cluster.api(0).register("bob").await;
    let on_b = on_a.on(&cluster.https[1].1);
    assert_eq!(on_b.get("/v1/me").await.status, StatusCode::OK);
    let out = on_a
        .send(on_a.request(Method::POST, "/v1/auth/logout"))
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    assert_eq!(on_b.get("/v1/me").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(on_a.get("/v1/me").await.status, StatusCode::UNAUTHORIZED);
}

async fn rooms_create_list_get_join_leave_members(backend: Backend) {
    let Some(cluster) = Cluster::start(backend, 1, 1).await else {
        return;
    };
    let owner = cluster.api(0).register("owner").await;
    let guest = cluster.api(0).register("guest").await;
    let created = owner
        .post(
            "/v1/rooms",
            json!({ "name": "general", "topic": "everything" }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    for field in [
        "id",
        "name",
        "topic",
        "created_by",
        "created_at",
        "member_count",
    ] {
        assert!(
            !created.body[field].is_null(),
            "{field} in {}",
            created.body
        );
    }
    assert_eq!(created.body["member_count"], 1);
    assert_eq!(created.body["created_by"], owner.user_id);
    let room = created.body["id"].as_i64().unwrap();
    let again = owner.post("/v1/rooms", json!({ "name": "General" })).await;
    assert_eq!(
        (again.status, again.code()),
        (StatusCode::CONFLICT, "room_name_taken")
    );
    let listed = guest.get("/v1/rooms").await;
    assert_eq!(listed.body["rooms"][0]["joined"], false);
    assert_eq!(
        owner.get("/v1/rooms").await.body["rooms"][0]["joined"],
        true
    );
    assert_eq!(
        guest.get(&format!("/v1/rooms/{room}")).await.body["name"],
        "general"
    );
    let missing = guest.get("/v1/rooms/999999").await;
    assert_eq!(
        (missing.status, missing.code()),
        (StatusCode::NOT_FOUND, "room_not_found")
    );
    let joined = guest
        .post(&format!("/v1/rooms/{room}/join"), json!({}))
        .await;
    assert_eq!(joined.status, StatusCode::OK);
    assert_eq!(joined.body["member_count"], 2);
    assert_eq!(joined.body["joined"], true);
    // Joining twice is harmless.
    assert_eq!(
        guest
            .post(&format!("/v1/rooms/{room}/join"), json!({}))
            .await
            .body["member_count"],
        2
    );
    let members = guest.get(&format!("/v1/rooms/{room}/members")).await;
    let names: Vec<&str> = members.body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user"]["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["owner", "guest"]);
    assert_eq!(members.body["members"][0]["role"], "owner");
    let left = guest
        .send(guest.request(Method::POST, &format!("/v1/rooms/{room}/leave")))
        .await;
    assert_eq!(left.status, StatusCode::NO_CONTENT);
    assert_eq!(
        guest.get(&format!("/v1/rooms/{room}")).await.body["member_count"],
        1
    );
    assert_eq!(
        guest.get(&format!("/v1/rooms/{room}/members")).await.code(),
        "not_a_member"
    );
}

async fn messages_post_page_edit_delete(backend: Backend) {
    let Some(cluster) = Cluster::start(backend, 1, 1).await else {
        return;
    };
    let owner = cluster.api(0).register("owner").await;
    let author = cluster.api(0).register("author").await;
    let room = owner.create_room("history").await;
    author
        .post(&format!("/v1/rooms/{room}/join"), json!({}))
        .await;
    let first = author.post_message(room, "hello", None).await;
    assert_eq!(first.status, StatusCode::CREATED);
    for field in ["id", "room_id", "seq", "author", "body", "created_at"] {
        assert!(!first.body[field].is_null(), "{field} in {}", first.body);
    }
    assert_eq!(first.body["author"]["username"], "author");
    assert_eq!(first.body["seq"], 1);
    for i in 2..=7 {
        let reply = author
            .post_message(room, &format!("message {i}"), None)
            .await;
        assert_eq!(reply.body["seq"], i);
    }
    // The newest page, oldest first.
    let page = author
        .get(&format!("/v1/rooms/{room}/messages?limit=3"))
        .await;
    let seqs = page.seqs();
    assert_eq!(seqs, [5, 6, 7]);
    assert_eq!(page.body["prev_before"], 5);
    assert_eq!(page.body["next_after"], 7);
    let older = author
        .get(&format!("/v1/rooms/{room}/messages?limit=3&before=5"))
        .await;
    let seqs = older.seqs();
    assert_eq!(seqs, [2, 3, 4]);
    let newer = author
        .get(&format!("/v1/rooms/{room}/messages?after=5"))
        .await;
    let seqs = newer.seqs();
    assert_eq!(seqs, [6, 7]);
    let too_many = author
        .get(&format!("/v1/rooms/{room}/messages?limit=201"))
        .await;
    assert_eq!(
        (too_many.status, too_many.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed")
    );
    // Edits: the author only.
    let id = first.body["id"].as_i64().unwrap();
    let path = format!("/v1/rooms/{room}/messages/{id}");
    let by_owner = owner
        .send(
            owner
                .request(Method::PATCH, &path)
                .json(&json!({ "body": "hijack" })),
        )
        .await;
    assert_eq!(
        (by_owner.status, by_owner.code()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let edited = author
        .send(
            author
                .request(Method::PATCH, &path)
                .json(&json!({ "body": "hello, edited" })),
        )
        .await;
    assert_eq!(edited.status, StatusCode::OK);
    assert_eq!(edited.body["body"], "hello, edited");
    assert!(edited.body["edited_at"].is_string());
    // Deletes: the room's owner may delete another's message; a tombstone keeps its seq.
    let deleted = owner.send(owner.request(Method::DELETE, &path)).await;
    assert_eq!(deleted.status, StatusCode::OK);
    assert_eq!(deleted.body["deleted"], true);
    assert_eq!(deleted.body["body"], "");
    let page = author
        .get(&format!("/v1/rooms/{room}/messages?limit=1&before=2"))
        .await;
    assert_eq!(page.body["messages"][0]["seq"], 1);
    assert_eq!(page.body["messages"][0]["deleted"], true);
    let gone = author
        .send(
            author
                .request(Method::PATCH, &path)
                .json(&json!({ "body": "again" })),
        )
        .await;
    assert_eq!(
        (gone.status, gone.code()),
        (StatusCode::CONFLICT, "message_deleted")
    );
    let unknown = author
        .send(author.request(Method::DELETE, &format!("/v1/rooms/{room}/messages/999999")))
        .await;
    assert_eq!(
        (unknown.status, unknown.code()),
        (StatusCode::NOT_FOUND, "message_not_found")
    );
}

async fn idempotent_retry_returns_the_identical_message(backend: Backend) {
    let Some(mut cluster) = Cluster::start(backend, 2, 2).await else {
        return;
    };
    let user = cluster.api(0).register("carol").await;
    let room = user.create_room("retries").await;
    let first = user.post_message(room, "only once", Some("key-1")).await;
    assert_eq!(first.status, StatusCode::CREATED);
    // The same key through another http node (and whichever database node it picks).
    let again = user
        .on(&cluster.https[1].1)
        .post_message(room, "only once", Some("key-1"))
        .await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.body, first.body);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    // Even after a new database node replaces the old ones.
    cluster.add_database().await;
    let later = user.post_message(room, "only once", Some("key-1")).await;
    assert_eq!(later.body, first.body);
    let reused = user
        .post_message(room, "something else", Some("key-1"))
        .await;
    assert_eq!(
        (reused.status, reused.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
    );
    let page = user.get(&format!("/v1/rooms/{room}/messages")).await;
    assert_eq!(page.body["messages"].as_array().unwrap().len(), 1);
}

async fn two_http_nodes_posting_concurrently_produce_gapless_seqs(backend: Backend) {
    let Some(cluster) = Cluster::start(backend, 2, 2).await else {
        return;
    };
    let first = cluster.api(0).register("poster1").await;
    let second = cluster.api(1).register("poster2").await;
    let room = first.create_room("busy").await;
    second
        .post(&format!("/v1/rooms/{room}/join"), json!({}))
        .await;
    let mut tasks = Vec::new();
    for (index, api) in [first.clone(), second.clone()].into_iter().enumerate() {
        for worker in 0..4 {
            let api = api.clone();
            tasks.push(tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..15 {
                    let reply = api
                        .post_message(room, &format!("{index}-{worker}-{i}"), None)
                        .await;
                    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
                    seqs.push(reply.body["seq"].as_i64().unwrap());
                }
                seqs
            }));
        }
    }
    let mut all = Vec::new();
    for task in tasks {
        let seqs = task.await.unwrap();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "each client sees increasing seqs"
        );
        all.extend(seqs);
    }
    all.sort_unstable();
    assert_eq!(all, (1..=120).collect::<Vec<i64>>());
    let stored: Vec<i64> = first
        .stored(room)
        .await
        .into_iter()
        .map(|(_, seq)| seq)
        .collect();
    assert_eq!(stored, (1..=120).collect::<Vec<i64>>());
}

/// Posts arriving at once share a commit (group commit in the database node); each must still
/// get its own answer: retries of one key return the one message, a non-member is refused, and
/// nobody else's post is disturbed.
async fn posts_committed_together_are_answered_one_by_one(backend: Backend) {
    let Some(cluster) = Cluster::start(backend, 1, 1).await else {
        return;
    };
    let owner = cluster.api(0).register("batch_owner").await;
    let member = cluster.api(0).register("batch_member").await;
    let outsider = cluster.api(0).register("batch_outsider").await;
    let room = owner.create_room("batched").await;
    member
        .post(&format!("/v1/rooms/{room}/join"), json!({}))
        .await;
    let mut tasks = Vec::new();
    for i in 0..30 {
        let api = if i % 2 == 0 {
            owner.clone()
        } else {
            member.clone()
        };
        tasks.push(tokio::spawn(async move {
            (
                "fresh",
                api.post_message(room, &format!("message {i}"), None).await,
            )
        }));
    }
    for _ in 0..10 {
        let api = member.clone();
        tasks.push(tokio::spawn(async move {
            (
                "retry",
                api.post_message(room, "sent once", Some("same-key")).await,
            )
        }));
    }
    let api = outsider.clone();
    tasks.push(tokio::spawn(async move {
        ("outsider", api.post_message(room, "let me in", None).await)
    }));
    let mut retried_ids = HashSet::new();
    for task in tasks {
        let (kind, reply) = task.await.unwrap();
        match kind {
            "outsider" => assert_eq!(
                (reply.status, reply.code()),
                (StatusCode::FORBIDDEN, "not_a_member")
            ),
            "retry" => {
                assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
                assert_eq!(reply.body["body"], "sent once");
                retried_ids.insert(reply.body["id"].as_i64().unwrap());
            }
            _ => assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body),
        }
    }
    assert_eq!(retried_ids.len(), 1, "ten retries of one key, one message");
    let page = owner
        .get(&format!("/v1/rooms/{room}/messages?after=0&limit=200"))
        .await;
    let seqs = page.seqs();
    assert_eq!(
        seqs,
        (1..=31).collect::<Vec<i64>>(),
        "30 posts and one retried"
    );
    // And they really were committed together: 41 posts in fewer transactions.
    let metrics = cluster.databases[0].metrics().render();
    let figure = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from\n{metrics}"))
    };
    assert_eq!(figure("switchboard_group_commit_batch_posts_sum"), 41.0);
    let batches = figure("switchboard_group_commit_batch_posts_count");
    assert!(batches < 41.0, "41 posts in {batches} batches");
}

/// A member leaving while their posts are being batched: every post is either acknowledged and
/// stored before the `member_left` event, or refused and stored nowhere. With two database nodes
/// the batches race each other and the leave (on PostgreSQL, each batch is decided from a read
/// and written only if the room has not changed since).
async fn a_member_who_leaves_has_no_message_after_leaving(backend: Backend) {
    let Some(cluster) = Cluster::start(backend, 2, 1).await else {
        return;
    };
    let owner = cluster.api(0).register("stayer").await;
    let leaver = cluster.api(0).register("leaver").await;
    let room = owner.create_room("revolving").await;
    leaver
        .post(&format!("/v1/rooms/{room}/join"), json!({}))
        .await;
    let acked = std::sync::Arc::new(std::sync::Mutex::new(HashSet::new()));
    let mut posters = Vec::new();
    for worker in 0..6 {
        let (leaver, acked) = (leaver.clone(), acked.clone());
        posters.push(tokio::spawn(async move {
            for i in 0..500 {
                let body = format!("leaver-{worker}-{i}");
                let reply = leaver.post_message(room, &body, None).await;
                if reply.status == StatusCode::FORBIDDEN {
                    assert_eq!(reply.code(), "not_a_member");
                    return;
                }
                assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
                acked.lock().unwrap().insert(body);
            }
            panic!("posts went on being accepted after their author left");
        }));
    }
    let mut stayers = Vec::new();
    for worker in 0..3 {
        let owner = owner.clone();
        stayers.push(tokio::spawn(async move {
            for i in 0..20 {
                let reply = owner
                    .post_message(room, &format!("stayer-{worker}-{i}"), None)
                    .await;
                assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
            }
        }));
    }
    // Leave once posts are flowing.
    let flowing = switchboard::eventually(DEADLINE, || {
        let acked = acked.clone();
        async move { acked.lock().unwrap().len() >= 12 }
    })
    .await;
    assert!(flowing, "posts are flowing");
    let left = leaver
        .post(&format!("/v1/rooms/{room}/leave"), json!({}))
        .await;
    assert_eq!(left.status, StatusCode::NO_CONTENT, "{}", left.body);
    for task in posters.into_iter().chain(stayers) {
        task.await.unwrap();
    }

    // The room's whole history, in commit order.
    let acked = acked.lock().unwrap().clone();
    let mut history = SseStream::open(&owner, room, Some("0")).await.ok().unwrap();
    let (mut stored, mut stayer_messages, mut left_at) = (HashSet::new(), 0, None);
    while stayer_messages < 60 || left_at.is_none() || stored.len() < acked.len() {
        let event = history.next().await.expect("the history is replayed");
        let data = event.json();
        match event.event.as_str() {
            "message" if data["author"]["username"] == "leaver" => {
                assert!(left_at.is_none(), "a message landed after its author left");
                stored.insert(data["body"].as_str().unwrap().to_owned());
            }
            "message" => stayer_messages += 1,
            "member_left" => left_at = event.id,
            _ => {}
        }
    }
    assert_eq!(stored, acked, "exactly the acknowledged posts are stored");
}

async fn non_members_are_refused_read_post_and_events(backend: Backend) {
    let Some(cluster) = Cluster::start(backend, 1, 1).await else {
        return;
    };
    let owner = cluster.api(0).register("owner").await;
    let outsider = cluster.api(0).register("outsider").await;
    let room = owner.create_room("private").await;
    let post = outsider.post_message(room, "let me in", None).await;
    assert_eq!(
        (post.status, post.code()),
        (StatusCode::FORBIDDEN, "not_a_member")
    );
    let read = outsider.get(&format!("/v1/rooms/{room}/messages")).await;
    assert_eq!(
        (read.status, read.code()),
        (StatusCode::FORBIDDEN, "not_a_member")
    );
    let events = SseStream::open(&outsider, room, None)
        .await
        .err()
        .expect("refused");
    assert_eq!(
        (events.status, events.body["code"].as_str().unwrap()),
        (StatusCode::FORBIDDEN, "not_a_member")
    );
}

async fn sse_on_one_http_node_receives_a_post_made_through_another(backend: Backend) {
    let Some(cluster) = Cluster::start(backend, 1, 2).await else {
        return;
    };
    let poster = cluster.api(0).register("poster").await;
    let listener = cluster.api(1).register("listener").await;
    let room = poster.create_room("live").await;
    listener
        .post(&format!("/v1/rooms/{room}/join"), json!({}))
        .await;
    let mut stream = SseStream::open(&listener, room, None)
        .await
        .ok()
        .expect("stream opens");
    let started = std::time::Instant::now();
    let posted = poster.post_message(room, "across nodes", None).await;
    let event = loop {
        let event = stream.next().await.expect("an event arrives");
        if event.event == "message" {
            break event;
        }
    };
    assert_eq!(event.json()["body"], "across nodes");
    assert_eq!(event.json()["id"], posted.body["id"]);
    assert!(event.id.is_some());
    eprintln!("post-to-receipt across http nodes: {:?}", started.elapsed());
}

async fn sse_resume_with_last_event_id_misses_nothing(backend: Backend) {
    let Some(cluster) = Cluster::start(backend, 1, 1).await else {
        return;
    };
    let user = cluster.api(0).register("resumer").await;
    let room = user.create_room("resume").await;
    let mut stream = SseStream::open(&user, room, None).await.ok().unwrap();
    user.post_message(room, "one", None).await;
    let first = stream.next().await.unwrap();
    assert_eq!(first.json()["body"], "one");
    drop(stream); // the client disconnects
    for body in ["two", "three", "four"] {
        user.post_message(room, body, None).await;
    }
    let mut resumed = SseStream::open(&user, room, first.id.as_deref())
        .await
        .ok()
        .unwrap();
    let mut bodies = Vec::new();
    let mut ids = HashSet::new();
    while bodies.len() < 4 {
        if bodies.len() == 3 {
            // After the replay, the stream continues live.
            user.post_message(room, "five", None).await;
        }
        let event = resumed.next().await.expect("replayed or live event");
        assert!(ids.insert(event.id.clone().unwrap()), "no duplicates");
        bodies.push(event.json()["body"].as_str().unwrap().to_owned());
    }
    assert_eq!(bodies, ["two", "three", "four", "five"]);
    // A cursor the server cannot replay is told to reset.
    let mut future = SseStream::open(&user, room, Some("999999"))
        .await
        .ok()
        .unwrap();
    assert_eq!(future.next().await.unwrap().event, "reset");
}

/// The guard of a batch write on PostgreSQL (migration `0006_post_batch_in_turn.sql`), called
/// directly: it moves no room's counters unless every room of the batch holds the counters the
/// batch expects, tells a room short by posts alone ('behind': a write sent earlier has not
/// landed) from one that moved otherwise, and moves every room once all hold.
#[tokio::test]
async fn a_batch_guard_moves_no_room_unless_every_room_holds_what_it_expects() {
    use sqlx::Connection;
    let Some(cluster) = Cluster::start(Backend::Postgres, 1, 1).await else {
        return;
    };
    let owner = cluster.api(0).register("guard_owner").await;
    let first = owner.create_room("guard_first").await;
    let second = owner.create_room("guard_second").await;
    let mut db = sqlx::AnyConnection::connect(&cluster.url).await.unwrap();
    let counters = |room: i64| {
        sqlx::query_as::<_, (i64, i64)>("SELECT last_seq, last_cursor FROM rooms WHERE id = $1")
            .bind(room)
    };
    let (seq, cursor) = counters(first).fetch_one(&mut db).await.unwrap();
    let (seq2, cursor2) = counters(second).fetch_one(&mut db).await.unwrap();
    let batch = |second_expected: (i64, i64)| {
        json!({"rooms": [
            {"id": first, "seq": seq, "cursor": cursor, "count": 2},
            {"id": second, "seq": second_expected.0, "cursor": second_expected.1, "count": 1},
        ]})
        .to_string()
    };
    async fn guard(db: &mut sqlx::AnyConnection, batch: String) -> String {
        sqlx::query_scalar("SELECT post_batch_guard($1::jsonb)")
            .bind(batch)
            .fetch_one(db)
            .await
            .unwrap()
    }
    // The second room moved by something other than posts (its cursor alone is off).
    assert_eq!(guard(&mut db, batch((seq2, cursor2 - 1))).await, "moved");
    // The second room is short of what the batch expects by one post.
    assert_eq!(
        guard(&mut db, batch((seq2 + 1, cursor2 + 1))).await,
        "behind"
    );
    assert_eq!(
        counters(first).fetch_one(&mut db).await.unwrap(),
        (seq, cursor),
        "a batch that wrote nothing moved no room"
    );
    assert_eq!(guard(&mut db, batch((seq2, cursor2))).await, "written");
    assert_eq!(
        counters(first).fetch_one(&mut db).await.unwrap(),
        (seq + 2, cursor + 2)
    );
    assert_eq!(
        counters(second).fetch_one(&mut db).await.unwrap(),
        (seq2 + 1, cursor2 + 1)
    );
}
