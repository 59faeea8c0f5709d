//! Bad input gets a clear JSON error with a stable code and the right status, and every response
//! carries `X-Request-Id`. Nothing here may panic a node or store anything.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::*;
use switchboard_http::HttpSettings;

async fn cluster() -> (Cluster, Api) {
    let cluster = Cluster::start(Backend::Sqlite, 1, 1).await.unwrap();
    let user = cluster.api(0).register("validator").await;
    (cluster, user)
}

#[tokio::test]
async fn malformed_bodies_are_named() {
    let (_cluster, user) = cluster().await;
    let raw = |body: &'static str, content_type: &'static str| {
        user.request(Method::POST, "/v1/auth/register")
            .header("content-type", content_type)
            .body(body)
    };
    let syntax = user.send(raw("{not json", "application/json")).await;
    assert_eq!(
        (syntax.status, syntax.code()),
        (StatusCode::BAD_REQUEST, "invalid_json")
    );
    let wrong_type = user
        .send(raw(
            r#"{"username": 5, "password": "long enough"}"#,
            "application/json",
        ))
        .await;
    assert_eq!(
        (wrong_type.status, wrong_type.code()),
        (StatusCode::BAD_REQUEST, "invalid_field")
    );
    assert_eq!(wrong_type.body["field"], "username");
    let missing = user
        .send(raw(r#"{"username": "someone"}"#, "application/json"))
        .await;
    assert_eq!(
        (missing.status, missing.code()),
        (StatusCode::BAD_REQUEST, "invalid_field")
    );
    assert_eq!(missing.body["field"], "password");
    let text = user.send(raw("hello", "text/plain")).await;
    assert_eq!(
        (text.status, text.code()),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
    );
    let room = user.create_room("limits").await;
    let huge = json!({ "body": "x".repeat(70 * 1024) });
    let too_large = user.post(&format!("/v1/rooms/{room}/messages"), huge).await;
    assert_eq!(
        (too_large.status, too_large.code()),
        (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
    );
    let bad_id = user.get("/v1/rooms/not-a-number").await;
    assert_eq!(
        (bad_id.status, bad_id.code()),
        (StatusCode::BAD_REQUEST, "invalid_field")
    );
    let page = user
        .get(&format!("/v1/rooms/{room}/messages?limit=lots"))
        .await;
    assert_eq!(
        (page.status, page.code()),
        (StatusCode::BAD_REQUEST, "invalid_field")
    );
    // Nothing was stored by any of it.
    let history = user.get(&format!("/v1/rooms/{room}/messages")).await;
    assert_eq!(history.body["messages"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn limits_are_422_naming_the_field() {
    let (cluster, user) = cluster().await;
    let anonymous = cluster.api(0);
    let cases = [
        (
            "/v1/auth/register",
            json!({ "username": "ab", "password": "long enough" }),
            "username",
        ),
        (
            "/v1/auth/register",
            json!({ "username": "bad name!", "password": "long enough" }),
            "username",
        ),
        (
            "/v1/auth/register",
            json!({ "username": "x".repeat(33), "password": "long enough" }),
            "username",
        ),
        (
            "/v1/auth/register",
            json!({ "username": "fine", "password": "short" }),
            "password",
        ),
    ];
    for (path, body, field) in cases {
        let reply = anonymous.post(path, body.clone()).await;
        assert_eq!(
            (reply.status, reply.code()),
            (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            "{body}"
        );
        assert_eq!(reply.body["field"], field);
    }
    for (body, field) in [
        (json!({ "name": "" }), "name"),
        (json!({ "name": "   " }), "name"),
        (json!({ "name": "n".repeat(65) }), "name"),
        (json!({ "name": "ok", "topic": "t".repeat(257) }), "topic"),
    ] {
        let reply = user.post("/v1/rooms", body.clone()).await;
        assert_eq!(
            (reply.status, reply.code()),
            (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            "{body}"
        );
        assert_eq!(reply.body["field"], field);
    }
    let room = user.create_room("bodies").await;
    for body in [String::new(), " \n\t".into(), "b".repeat(4001)] {
        let reply = user.post_message(room, &body, None).await;
        assert_eq!(
            (reply.status, reply.code()),
            (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed")
        );
        assert_eq!(reply.body["field"], "body");
    }
    // 4000 characters of multi-byte text are fine: limits count characters.
    assert_eq!(
        user.post_message(room, &"é".repeat(4000), None)
            .await
            .status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn unknown_routes_methods_and_missing_tokens() {
    let (cluster, user) = cluster().await;
    let anonymous = cluster.api(0);
    let missing = anonymous.get("/v1/nowhere").await;
    assert_eq!(
        (missing.status, missing.code()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let method = user.send(user.request(Method::DELETE, "/v1/rooms")).await;
    assert_eq!(
        (method.status, method.code()),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
    let no_token = anonymous.get("/v1/rooms").await;
    assert_eq!(
        (no_token.status, no_token.code()),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    let bad_token = Api {
        token: Some("forged".into()),
        ..anonymous.clone()
    };
    assert_eq!(bad_token.get("/v1/me").await.code(), "unauthorized");
    // Every response, error or not, carries a request id, and errors repeat it in the body.
    for reply in [&missing, &method, &no_token] {
        let header = reply.headers["x-request-id"].to_str().unwrap();
        assert!(!header.is_empty());
        assert_eq!(reply.body["request_id"], header);
    }
    let echoed = user
        .send(
            user.request(Method::GET, "/v1/me")
                .header("x-request-id", "client-chosen-id"),
        )
        .await;
    assert_eq!(echoed.headers["x-request-id"], "client-chosen-id");
    // An id too long or not plain is not logged or carried: the request gets a fresh one.
    for unusable in ["a".repeat(65), "two words".into(), "new\\nline".into()] {
        let replaced = user
            .send(
                user.request(Method::GET, "/v1/no-such-route")
                    .header("x-request-id", unusable.as_str()),
            )
            .await;
        let header = replaced.headers["x-request-id"].to_str().unwrap();
        assert!(!header.is_empty() && header != unusable, "{header}");
        assert_eq!(replaced.body["request_id"], header);
    }
}

#[tokio::test]
async fn too_many_requests_are_429_with_retry_after() {
    let settings = switchboard_http::HttpSettings {
        rate_limit: 5,
        ..http_settings()
    };
    let cluster = Cluster::start_with(Backend::Sqlite, 1, 1, settings)
        .await
        .unwrap();
    let user = cluster.api(0).register("hasty").await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(user.get("/v1/me").await);
    }
    assert!(statuses[..5].iter().all(|r| r.status == StatusCode::OK));
    let limited = &statuses[5];
    assert_eq!(
        (limited.status, limited.code()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    let retry: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
}

/// A call waits for a database node to come up within the request's deadline (5 s), and only
/// then answers 503: never a hang, never a 500.
#[tokio::test]
async fn no_database_provider_within_the_deadline_is_a_503() {
    let cluster = Cluster::start(Backend::Sqlite, 0, 1).await.unwrap();
    let api = cluster.api(0);
    let started = std::time::Instant::now();
    let reply = api
        .post(
            "/v1/auth/register",
            json!({ "username": "early", "password": "long enough" }),
        )
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    );
    assert!(started.elapsed() < DEADLINE, "answered, not hung");
    assert_eq!(
        api.get("/readyz").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(api.get("/healthz").await.status, StatusCode::OK);
}

/// A client that sends its request head a byte at a time (slowloris) is cut off once the header
/// timeout passes, and the node keeps serving everyone else meanwhile.
#[tokio::test]
async fn a_request_head_sent_a_byte_at_a_time_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let settings = HttpSettings {
        header_timeout_ms: 500,
        ..http_settings()
    };
    let cluster = Cluster::start_with(Backend::Sqlite, 1, 1, settings)
        .await
        .unwrap();
    let api = cluster.api(0);
    let address = api.base.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&address).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: slow\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let header = b"X-Dribble: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut cut_off = false;
    let mut reply = Vec::new();
    for byte in header.iter().cycle().take(10_000) {
        // One byte every 50 ms: the client's pace, not a wait for anything.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        if slow.write_all(&[*byte]).await.is_err() {
            cut_off = true;
            break;
        }
        let mut buffer = [0u8; 512];
        match tokio::time::timeout(std::time::Duration::ZERO, slow.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                cut_off = true;
                break;
            }
            Ok(Ok(read)) => reply.extend_from_slice(&buffer[..read]),
            Err(_) => {}
        }
        // Everyone else is served while the slow client dribbles.
        if started.elapsed() < std::time::Duration::from_millis(300) {
            assert_eq!(api.get("/healthz").await.status, StatusCode::OK);
        }
        if started.elapsed() > DEADLINE {
            break;
        }
    }
    assert!(
        cut_off,
        "the connection was closed (it answered {:?})",
        String::from_utf8_lossy(&reply)
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "within the 500 ms header timeout, give or take: {:?}",
        started.elapsed()
    );
    assert_eq!(api.get("/healthz").await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_request_body_that_stalls_is_answered_408_and_others_are_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let settings = HttpSettings {
        body_timeout_ms: 500,
        ..http_settings()
    };
    let cluster = Cluster::start_with(Backend::Sqlite, 1, 1, settings)
        .await
        .unwrap();
    let api = cluster.api(0);
    let address = api.base.trim_start_matches("http://").to_owned();
    let mut stalled = tokio::net::TcpStream::connect(&address).await.unwrap();
    // The head promises 100 bytes of body; 10 arrive, then nothing.
    stalled
        .write_all(
            b"POST /v1/auth/login HTTP/1.1\r\nHost: stalled\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"usernam",
        )
        .await
        .unwrap();
    let started = std::time::Instant::now();
    // Everyone else is served meanwhile.
    assert_eq!(api.get("/healthz").await.status, StatusCode::OK);
    let mut reply = Vec::new();
    let read = tokio::time::timeout(DEADLINE, async {
        let mut buffer = [0u8; 1024];
        loop {
            match stalled.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    reply.extend_from_slice(&buffer[..n]);
                    if reply.windows(4).any(|w| w == b"\r\n\r\n") && reply.ends_with(b"}") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the stalled request was never answered");
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("\"code\":\"body_timeout\""), "{reply}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "within the 500 ms body timeout, give or take: {:?}",
        started.elapsed()
    );
}

/// The `message` events' ids in raw bytes of an SSE response, in order.
fn message_ids(raw: &[u8]) -> Vec<i64> {
    let text = String::from_utf8_lossy(raw);
    let (mut ids, mut id, mut is_message) = (Vec::new(), None, false);
    for line in text.lines() {
        if let Some(value) = line.strip_prefix("id:") {
            id = value.trim().parse::<i64>().ok();
        } else if let Some(value) = line.strip_prefix("event:") {
            is_message = value.trim() == "message";
        } else if line.trim().is_empty() {
            if let (Some(cursor), true) = (id, is_message) {
                ids.push(cursor);
            }
            (id, is_message) = (None, false);
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_stream_nobody_reads_is_dropped_and_resumes_from_its_last_event() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let settings = HttpSettings {
        write_stall_timeout_ms: 500,
        ..http_settings()
    };
    let cluster = Cluster::start_with(Backend::Sqlite, 1, 1, settings)
        .await
        .unwrap();
    let user = cluster.api(0).register("never-reads").await;
    let room = user.create_room("piling-up").await;
    let address: std::net::SocketAddr = user.base.trim_start_matches("http://").parse().unwrap();
    // A client with a small receive buffer that asks for the stream and never reads it.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(address).await.unwrap();
    let head = format!(
        "GET /v1/rooms/{room}/events HTTP/1.1\r\nHost: stalled\r\nAccept: text/event-stream\r\nAuthorization: Bearer {}\r\n\r\n",
        user.token.as_deref().unwrap()
    );
    stalled.write_all(head.as_bytes()).await.unwrap();

    // Posts pile up behind it until its writes stall past the limit and it is dropped.
    let dropped = || {
        cluster.https[0]
            .0
            .metrics()
            .render()
            .lines()
            .find(|line| {
                !line.starts_with('#') && line.contains("http_stalled_connections_dropped_total")
            })
            .and_then(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let body = "x".repeat(3000);
    let started = std::time::Instant::now();
    let mut posted = 0;
    while dropped() < 1.0 {
        assert!(
            started.elapsed() < DEADLINE,
            "the stalled stream was never dropped ({posted} posts)"
        );
        let mut batch = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let (user, body) = (user.clone(), body.clone());
            batch.spawn(async move { user.post_message(room, &body, None).await.status });
        }
        for status in batch.join_all().await {
            assert_eq!(status, StatusCode::CREATED);
            posted += 1;
        }
    }
    // Everyone else is served.
    assert_eq!(
        user.post_message(room, "after the drop", None).await.status,
        StatusCode::CREATED
    );
    posted += 1;

    // What reached the client before the drop is a gapless start of the room, then the end.
    let mut raw = Vec::new();
    let read = tokio::time::timeout(DEADLINE, stalled.read_to_end(&mut raw)).await;
    assert!(read.is_ok(), "the dropped connection never ended");
    let before = message_ids(&raw);
    assert!(!before.is_empty(), "some events arrived before the drop");
    assert!(before.len() < posted, "the drop came before the end");
    assert_eq!(
        before,
        (before[0]..before[0] + before.len() as i64).collect::<Vec<_>>()
    );

    // Resuming from the last event it got, the client gets the rest, each event once.
    let last = before.last().unwrap().to_string();
    let Ok(mut resumed) = SseStream::open(&user, room, Some(&last)).await else {
        panic!("the stream could not be resumed");
    };
    let mut after = Vec::new();
    while before.len() + after.len() < posted {
        let event = resumed.next().await.expect("the rest of the room arrives");
        if event.event == "message" {
            after.push(event.id.unwrap().parse::<i64>().unwrap());
        }
    }
    let next = before.last().unwrap() + 1;
    assert_eq!(after, (next..next + after.len() as i64).collect::<Vec<_>>());
}

#[tokio::test]
async fn login_attempts_are_limited_per_address_and_per_username() {
    let settings = HttpSettings {
        login_rate_limit: 3,
        ..http_settings()
    };
    let cluster = Cluster::start_with(Backend::Sqlite, 1, 1, settings)
        .await
        .unwrap();
    let api = cluster.api(0);
    let wrong = |username: &str| json!({ "username": username, "password": "not the password" });
    // One address guessing one account's password: three tries, then 429 with Retry-After.
    let mut replies = Vec::new();
    for _ in 0..4 {
        replies.push(api.post("/v1/auth/login", wrong("victim")).await);
    }
    assert!(
        replies[..3]
            .iter()
            .all(|r| r.status == StatusCode::UNAUTHORIZED),
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let limited = &replies[3];
    assert_eq!(
        (limited.status, limited.code()),
        (StatusCode::TOO_MANY_REQUESTS, "too_many_attempts")
    );
    let retry: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    // The address is spent for registrations too.
    let register = api
        .post(
            "/v1/auth/register",
            json!({ "username": "newcomer", "password": "correct horse battery" }),
        )
        .await;
    assert_eq!(register.code(), "too_many_attempts");
}

#[tokio::test]
async fn login_attempts_against_one_username_are_limited_whatever_the_address() {
    let settings = HttpSettings {
        login_rate_limit: 3,
        trust_forwarded_for: true,
        ..http_settings()
    };
    let cluster = Cluster::start_with(Backend::Sqlite, 1, 1, settings)
        .await
        .unwrap();
    let api = cluster.api(0);
    let mut statuses = Vec::new();
    // Each guess from another address, as a balancer reports them: the username's limit holds.
    for i in 0..4 {
        let reply = api
            .send(
                api.request(Method::POST, "/v1/auth/login")
                    .header("x-forwarded-for", format!("198.51.100.{i}"))
                    .json(&json!({ "username": "victim", "password": "guess" })),
            )
            .await;
        statuses.push((reply.status, reply.code().to_owned()));
    }
    assert_eq!(
        statuses[3],
        (
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts".to_owned()
        ),
        "{statuses:?}"
    );
    // Another username from a fresh address is not affected.
    let other = api
        .send(
            api.request(Method::POST, "/v1/auth/login")
                .header("x-forwarded-for", "198.51.100.200")
                .json(&json!({ "username": "someone", "password": "guess" })),
        )
        .await;
    assert_eq!(other.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn live_streams_past_the_per_user_cap_are_refused_with_a_clear_code() {
    let settings = HttpSettings {
        max_streams_per_user: 3,
        ..http_settings()
    };
    let cluster = Cluster::start_with(Backend::Sqlite, 1, 1, settings)
        .await
        .unwrap();
    let user = cluster.api(0).register("streamer").await;
    let room = user.create_room("streams").await;
    let open = || async {
        user.request(Method::GET, &format!("/v1/rooms/{room}/events"))
            .send()
            .await
            .unwrap()
    };
    let mut streams = Vec::new();
    for _ in 0..3 {
        let stream = open().await;
        assert_eq!(stream.status(), StatusCode::OK);
        streams.push(stream);
    }
    let refused = open().await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "too_many_streams");
    // Another user is not affected, and a closed stream frees its slot.
    let other = cluster.api(0).register("listener").await;
    other
        .post(&format!("/v1/rooms/{room}/join"), json!({}))
        .await;
    let theirs = other
        .request(Method::GET, &format!("/v1/rooms/{room}/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), StatusCode::OK);
    drop(streams.pop());
    let reopened = switchboard::eventually(DEADLINE, || async {
        open().await.status() == StatusCode::OK
    })
    .await;
    assert!(reopened, "a closed stream's slot was never freed");
}

#[tokio::test]
async fn live_stream_openings_past_the_per_user_rate_are_refused_with_retry_after() {
    let settings = HttpSettings {
        stream_open_rate_limit: 3,
        ..http_settings()
    };
    let cluster = Cluster::start_with(Backend::Sqlite, 1, 1, settings)
        .await
        .unwrap();
    let user = cluster.api(0).register("reopener").await;
    let room = user.create_room("reopened").await;
    // The first stays open; the other two are closed at once: an opening counts either way.
    let Ok(mut kept) = SseStream::open(&user, room, None).await else {
        panic!("the first stream was refused");
    };
    for _ in 0..2 {
        assert!(SseStream::open(&user, room, None).await.is_ok());
    }
    let Err(refused) = SseStream::open(&user, room, None).await else {
        panic!("a fourth opening within the minute was accepted");
    };
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.code(), "too_many_stream_openings");
    let retry_after: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    // Another user opens freely, and the stream kept open still gets the room's posts.
    let other = cluster.api(0).register("bystander").await;
    other
        .post(&format!("/v1/rooms/{room}/join"), json!({}))
        .await;
    assert!(SseStream::open(&other, room, None).await.is_ok());
    let posted = user.post_message(room, "still live", None).await;
    assert_eq!(posted.status, StatusCode::CREATED);
    let mut delivered = false;
    while let Some(event) = kept.next().await {
        if event.json()["body"] == "still live" {
            delivered = true;
            break;
        }
    }
    assert!(delivered, "the open stream missed the post");
}

/// Times past what RFC 3339 can write (the year 9999) are refused with a clear error; one once
/// reached the formatter and ended the connection with no answer.
#[tokio::test]
async fn a_time_beyond_the_supported_range_is_a_422_not_a_dropped_connection() {
    let (_cluster, api) = cluster().await;
    let admin = Api {
        token: Some(ADMIN_TOKEN.into()),
        ..api.clone()
    };
    for query in [
        "until=300000000000000",
        "since=-300000000000000",
        "until=9223372036854775807",
    ] {
        let reply = admin.get(&format!("/v1/admin/report?{query}")).await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        assert_eq!(reply.code(), "validation_failed", "{query}");
    }
    // In range it is accepted (this cluster has no reporting node to answer the figures).
    let in_range = admin.get("/v1/admin/report?until=99999999999999").await;
    assert_ne!(
        in_range.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        in_range.body
    );
}
