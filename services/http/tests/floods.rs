//! Connection floods against one http node: ten thousand live streams opened by one user, and two
//! thousand requests at once without a token. Each is refused with a stable code, costs nothing
//! that outlives it, and the node keeps serving everyone else while it lasts.

mod support;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::json;
use support::*;
use switchboard_http::configuration::HttpSettings;

/// Live streams one user may hold (the default setting).
const STREAM_CAP: usize = 16;
/// Stream openings by one user.
const STREAM_ATTEMPTS: usize = 10_000;
/// Openings in flight at once: enough to hold the cap many times over. The clients share the
/// test's two runtime threads with the node, so more in flight measures the test's own client
/// more than the node.
const STREAMS_IN_FLIGHT: usize = 250;
/// Requests without a token, all in flight at once.
const TOKENLESS: usize = 2_000;

/// The floods run one at a time: each is meant to meet the node alone, not beside the other on
/// the same two threads.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What a flood's requests got: the streams that opened (held open) and each refusal's status
/// and code.
struct Outcome {
    opened: Vec<SseStream>,
    refused: Vec<(StatusCode, String)>,
}

/// Opens `attempts` streams of `room` as `api`, `in_flight` at a time, holding those that open.
async fn flood(api: &Api, room: i64, attempts: usize, in_flight: usize) -> Outcome {
    let results: Vec<Result<SseStream, Reply>> = futures::stream::iter(0..attempts)
        .map(|_| SseStream::open(api, room, None))
        .buffer_unordered(in_flight)
        .collect()
        .await;
    let mut outcome = Outcome {
        opened: Vec::new(),
        refused: Vec::new(),
    };
    for result in results {
        match result {
            Ok(stream) => outcome.opened.push(stream),
            Err(reply) => outcome
                .refused
                .push((reply.status, reply.code().to_owned())),
        }
    }
    outcome
}

/// Another user's requests, made one after another until `done` resolves: each must succeed.
async fn serve_others_until(other: &Api, room: i64, done: impl std::future::Future<Output = ()>) {
    let mut done = std::pin::pin!(done);
    let mut served = 0;
    loop {
        let body = format!("meanwhile {served}");
        tokio::select! {
            _ = &mut done => break,
            reply = other.post_message(room, &body, None) => {
                assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
                served += 1;
            }
        }
    }
    assert!(served > 0, "another user was served during the flood");
}

/// [`flood`], while `other` posts to `their_room` one message after another: each of those must
/// succeed, and at least one must be made while the flood lasts.
async fn flood_beside(
    api: &Api,
    room: i64,
    attempts: usize,
    in_flight: usize,
    other: &Api,
    their_room: i64,
) -> Outcome {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let flooding = async move {
        let outcome = flood(api, room, attempts, in_flight).await;
        let _ = sender.send(());
        outcome
    };
    let (outcome, ()) = tokio::join!(
        flooding,
        serve_others_until(other, their_room, async {
            let _ = receiver.await;
        }),
    );
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_streams_from_one_user_meet_the_cap_and_others_are_served() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let settings = HttpSettings {
        max_streams_per_user: STREAM_CAP,
        ..http_settings()
    };
    let cluster = Cluster::start_with(Backend::Sqlite, 1, 1, settings)
        .await
        .unwrap();
    let flooder = cluster.api(0).register("flooder").await;
    let room = flooder.create_room("flooded").await;
    let other = cluster.api(0).register("bystander").await;
    let theirs = other.create_room("elsewhere").await;

    let outcome = flood_beside(
        &flooder,
        room,
        STREAM_ATTEMPTS,
        STREAMS_IN_FLIGHT,
        &other,
        theirs,
    )
    .await;
    assert_eq!(
        outcome.opened.len(),
        STREAM_CAP,
        "the cap, no more, no less"
    );
    assert_eq!(outcome.refused.len(), STREAM_ATTEMPTS - STREAM_CAP);
    assert!(
        outcome
            .refused
            .iter()
            .all(|(status, code)| *status == StatusCode::TOO_MANY_REQUESTS
                && code == "too_many_streams"),
        "every refusal is 429 too_many_streams: {:?}",
        outcome
            .refused
            .iter()
            .find(|(_, code)| code != "too_many_streams")
    );

    // The streams that opened are live: each gets the next message.
    let posted = flooder.post_message(room, "to every stream", None).await;
    assert_eq!(posted.status, StatusCode::CREATED);
    for mut stream in outcome.opened {
        let event = loop {
            let event = stream.next().await.expect("an event arrives");
            if event.event == "message" {
                break event;
            }
        };
        assert_eq!(event.json()["id"], posted.body["id"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_requests_without_a_token_are_refused_and_others_are_served() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cluster = Cluster::start(Backend::Sqlite, 1, 1).await.unwrap();
    let owner = cluster.api(0).register("owner").await;
    let room = owner.create_room("private").await;
    let anonymous = cluster.api(0);
    let other = cluster.api(0).register("bystander").await;
    let theirs = other.create_room("elsewhere").await;

    let outcome = flood_beside(&anonymous, room, TOKENLESS, TOKENLESS, &other, theirs).await;
    assert!(outcome.opened.is_empty(), "no stream without a token");
    assert_eq!(outcome.refused.len(), TOKENLESS);
    assert!(
        outcome
            .refused
            .iter()
            .all(|(status, code)| *status == StatusCode::UNAUTHORIZED && code == "unauthorized"),
        "every refusal is 401 unauthorized: {:?}",
        outcome
            .refused
            .iter()
            .find(|(_, code)| code != "unauthorized")
    );
    // Nothing the flood did reached the room.
    let listed = owner.get(&format!("/v1/rooms/{room}/messages")).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.body["messages"], json!([]));
}
