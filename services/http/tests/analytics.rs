//! Analytics end to end: a known set of messages is posted through the API, and every figure —
//! on each analytics replica and through `/v1/rooms/{room_id}/analytics` and
//! `/v1/admin/analytics`, for every window — must equal what this test computes from what it
//! posted, which must equal what the database holds. Then one replica is shut down, a fresh one
//! bootstraps, forged duplicate and out-of-order events are broadcast, and an OS-process replica
//! is killed with SIGKILL under query traffic: the figures never change.
//!
//! The killed replica is a real OS process: this test binary re-runs itself as an analytics node
//! (the ignored `analytics_node_process` test runs `switchboard_analytics::start`, exactly what
//! the `switchboard-analytics` binary's `main` runs).

mod support;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::time::UNIX_EPOCH;

use prost::Message;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Row;
use support::*;
use switchboard::testing::{ChildNode, child_main};
use switchboard::{CallOptions, Node, NodeConfig, PeerState};
use switchboard_analytics::AnalyticsSettings;
use switchboard_proto::v1 as wire;

const WINDOWS: [&str; 3] = ["1h", "24h", "7d"];
const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;
/// Reconcile often, so a lost broadcast or a new account shows within the tests' deadlines.
const RECONCILE_MS: u64 = 200;

#[tokio::test]
#[ignore = "runs only as the child process of the analytics tests"]
async fn analytics_node_process() {
    child_main(switchboard_analytics::start).await;
}

fn spawn_analytics(name: &str, cluster: &Cluster) -> ChildNode {
    let env = [(
        "SWITCHBOARD_ANALYTICS_RECONCILE_MS",
        RECONCILE_MS.to_string(),
    )];
    ChildNode::spawn(
        "analytics_node_process",
        name,
        &cluster.seed,
        &cluster.cookie,
        &env,
    )
}

/// Starts an in-process analytics replica and waits until it has bootstrapped (it advertises
/// `analytics`) and the database nodes broadcast to it.
async fn add_replica(cluster: &Cluster, name: &str) -> Node {
    add_replica_reconciling(cluster, name, RECONCILE_MS).await
}

/// [`add_replica`] with its own reconcile period.
async fn add_replica_reconciling(cluster: &Cluster, name: &str, reconcile_ms: u64) -> Node {
    let config = NodeConfig {
        node_name: Some(name.to_owned()),
        seeds: vec![cluster.seed.clone()],
        seed_refresh_ms: 200,
        ..NodeConfig::loopback()
    };
    let settings = AnalyticsSettings {
        analytics_reconcile_ms: reconcile_ms,
    };
    let node = switchboard_analytics::serve(config, cluster.node_cookie(), settings)
        .await
        .unwrap();
    wait_until_serving(cluster, name).await;
    node
}

/// Waits until every database and http node sees `name` up, in `chat.events` and advertising
/// `analytics`.
async fn wait_until_serving(cluster: &Cluster, name: &str) {
    let watchers = cluster
        .databases
        .iter()
        .chain(cluster.https.iter().map(|(node, _)| node));
    for watcher in watchers {
        let ready = switchboard::eventually(DEADLINE, || async {
            watcher.nodes().iter().any(|n| {
                n.name == name
                    && n.state == PeerState::Up
                    && n.groups.iter().any(|g| g == "chat.events")
                    && n.services.iter().any(|s| s == "analytics")
            })
        })
        .await;
        assert!(ready, "{} never saw {name} serve analytics", watcher.name());
    }
}

/// A report from the replica on `target` (or whichever `caller` picks with `None`).
async fn report(
    caller: &Node,
    target: Option<&str>,
    room_id: i64,
    window: &str,
) -> Option<wire::AnalyticsReport> {
    let request = wire::AnalyticsRequest {
        room_id,
        window: window.into(),
    };
    let reply = match target {
        Some(node) => {
            caller
                .call_on(
                    node,
                    "analytics",
                    "report",
                    request.encode_to_vec(),
                    CallOptions::idempotent(),
                )
                .await
        }
        None => {
            caller
                .call(
                    "analytics",
                    "report",
                    request.encode_to_vec(),
                    CallOptions::idempotent(),
                )
                .await
        }
    };
    wire::AnalyticsReport::decode(reply.ok()?).ok()
}

/// A message as the test knows it and as the database holds it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Posted {
    id: i64,
    room_id: i64,
    author_id: i64,
    author: String,
    /// Current text; `None` once deleted.
    body: Option<String>,
    created_ms: i64,
}

/// Totals, non-empty buckets and non-empty days of a series: what must agree whenever the
/// figures are asked (the window slides, the figures inside it do not).
type SeriesFigures = (i64, BTreeMap<i64, i64>, BTreeMap<i64, i64>);

/// Every figure of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Figures {
    messages: SeriesFigures,
    active_users: SeriesFigures,
    new_users: Option<SeriesFigures>,
    top_rooms: Option<Vec<(i64, i64)>>,
    top_posters: Vec<(i64, String, i64)>,
    message_length: (i64, Option<i64>, Option<i64>),
    messages_by_hour: Vec<i64>,
    busiest_hour: Option<i64>,
    latency_count: Option<i64>,
    /// Bucket counts, compared between replicas and the API (the test cannot know them).
    latency_buckets: Option<Vec<i64>>,
}

impl Figures {
    /// Whether these (actual) figures are the expected ones; latency buckets are not known in
    /// advance, only their count.
    fn matches(&self, expected: &Figures) -> bool {
        let mut actual = self.clone();
        actual.latency_buckets = None;
        actual == *expected
    }
}

fn nonzero(points: impl Iterator<Item = (i64, i64)>) -> BTreeMap<i64, i64> {
    points.filter(|(_, count)| *count != 0).collect()
}

fn wire_series(series: &wire::Series) -> SeriesFigures {
    (
        series.total,
        nonzero(series.series.iter().map(|p| (p.at_ms, p.count))),
        nonzero(series.daily.iter().map(|p| (p.at_ms, p.count))),
    )
}

fn from_wire(report: &wire::AnalyticsReport) -> Figures {
    let lengths = report.message_length.unwrap_or_default();
    let cluster = report.new_users.is_some();
    Figures {
        messages: wire_series(report.messages.as_ref().unwrap()),
        active_users: wire_series(report.active_users.as_ref().unwrap()),
        new_users: report.new_users.as_ref().map(wire_series),
        top_rooms: cluster.then(|| {
            report
                .top_rooms
                .iter()
                .map(|r| (r.room_id, r.count))
                .collect()
        }),
        top_posters: report
            .top_posters
            .iter()
            .map(|p| {
                let user = p.user.clone().unwrap();
                (user.id, user.username, p.count)
            })
            .collect(),
        message_length: (lengths.count, lengths.median, lengths.p95),
        messages_by_hour: report.messages_by_hour.clone(),
        busiest_hour: report.busiest_hour.map(i64::from),
        latency_count: report.delivery_latency.as_ref().map(|l| l.count),
        latency_buckets: report
            .delivery_latency
            .as_ref()
            .map(|l| l.buckets.iter().map(|b| b.count).collect()),
    }
}

fn ms(rfc3339: &Value) -> i64 {
    let time = humantime::parse_rfc3339(rfc3339.as_str().unwrap()).unwrap();
    time.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

fn json_points(points: &Value) -> BTreeMap<i64, i64> {
    nonzero(
        points
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (ms(&p["t"]), p["count"].as_i64().unwrap())),
    )
}

fn json_series(series: &Value) -> SeriesFigures {
    (
        series["total"].as_i64().unwrap(),
        json_points(&series["series"]),
        json_points(&series["daily"]),
    )
}

fn from_json(body: &Value) -> Figures {
    let latency = body.get("delivery_latency_ms");
    Figures {
        messages: json_series(&body["messages"]),
        active_users: json_series(&body["active_users"]),
        new_users: body.get("new_users").map(json_series),
        top_rooms: body.get("top_rooms").map(|rooms| {
            rooms
                .as_array()
                .unwrap()
                .iter()
                .map(|r| (r["room_id"].as_i64().unwrap(), r["count"].as_i64().unwrap()))
                .collect()
        }),
        top_posters: body["top_posters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["user"]["id"].as_i64().unwrap(),
                    p["user"]["username"].as_str().unwrap().to_owned(),
                    p["count"].as_i64().unwrap(),
                )
            })
            .collect(),
        message_length: (
            body["message_length"]["count"].as_i64().unwrap(),
            body["message_length"]["median"].as_i64(),
            body["message_length"]["p95"].as_i64(),
        ),
        messages_by_hour: body["messages_by_hour"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h.as_i64().unwrap())
            .collect(),
        busiest_hour: body["busiest_hour"].as_i64(),
        latency_count: latency.map(|l| l["count"].as_i64().unwrap()),
        latency_buckets: latency.map(|l| {
            l["buckets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b["count"].as_i64().unwrap())
                .collect()
        }),
    }
}

/// The nearest-rank percentile of sorted values.
fn percentile(sorted: &[i64], p: usize) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    Some(sorted[rank - 1])
}

/// The figures a window must show, computed from the messages and registration times alone.
fn expected(
    posted: &[Posted],
    registered: &[i64],
    window: &str,
    room: Option<i64>,
    deliveries: i64,
) -> Figures {
    let width = if window == "1h" { MINUTE_MS } else { HOUR_MS };
    let posts: Vec<&Posted> = posted
        .iter()
        .filter(|p| room.is_none_or(|r| r == p.room_id))
        .collect();
    let distinct = |of: &dyn Fn(&Posted) -> i64| -> BTreeMap<i64, i64> {
        let mut sets: BTreeMap<i64, BTreeSet<i64>> = BTreeMap::new();
        for post in &posts {
            sets.entry(of(post)).or_default().insert(post.author_id);
        }
        sets.into_iter()
            .map(|(at, ids)| (at, ids.len() as i64))
            .collect()
    };
    let count = |at: &dyn Fn(i64) -> i64, times: &mut dyn Iterator<Item = i64>| {
        let mut counts = BTreeMap::new();
        for time in times {
            *counts.entry(at(time)).or_insert(0) += 1;
        }
        counts
    };
    let bucket = |t: i64| t - t.rem_euclid(width);
    let day = |t: i64| t - t.rem_euclid(DAY_MS);
    let authors: BTreeSet<i64> = posts.iter().map(|p| p.author_id).collect();
    let mut per_room: HashMap<i64, i64> = HashMap::new();
    let mut per_author: BTreeMap<(i64, String), i64> = BTreeMap::new();
    let mut by_hour = vec![0; 24];
    for post in &posts {
        *per_room.entry(post.room_id).or_default() += 1;
        *per_author
            .entry((post.author_id, post.author.clone()))
            .or_default() += 1;
        by_hour[(post.created_ms.rem_euclid(DAY_MS) / HOUR_MS) as usize] += 1;
    }
    let mut top_rooms: Vec<(i64, i64)> = per_room.into_iter().collect();
    top_rooms.sort_by_key(|&(id, n)| (-n, id));
    let mut top_posters: Vec<(i64, String, i64)> = per_author
        .into_iter()
        .map(|((id, name), n)| (id, name, n))
        .collect();
    top_posters.sort_by_key(|(id, _, n)| (-n, *id));
    let mut lengths: Vec<i64> = posts
        .iter()
        .filter_map(|p| p.body.as_ref())
        .map(|b| b.chars().count() as i64)
        .collect();
    lengths.sort();
    let busiest_hour = (!posts.is_empty()).then(|| {
        let most = *by_hour.iter().max().unwrap();
        by_hour.iter().position(|&n| n == most).unwrap() as i64
    });
    Figures {
        messages: (
            posts.len() as i64,
            count(&bucket, &mut posts.iter().map(|p| p.created_ms)),
            count(&day, &mut posts.iter().map(|p| p.created_ms)),
        ),
        active_users: (
            authors.len() as i64,
            distinct(&|p| bucket(p.created_ms)),
            distinct(&|p| day(p.created_ms)),
        ),
        new_users: room.is_none().then(|| {
            (
                registered.len() as i64,
                count(&bucket, &mut registered.iter().copied()),
                count(&day, &mut registered.iter().copied()),
            )
        }),
        top_rooms: room.is_none().then_some(top_rooms),
        top_posters,
        message_length: (
            lengths.len() as i64,
            percentile(&lengths, 50),
            percentile(&lengths, 95),
        ),
        messages_by_hour: by_hour,
        busiest_hour,
        latency_count: room.is_none().then_some(deliveries),
        latency_buckets: None,
    }
}

/// The messages and registration times as the database holds them.
async fn database_contents(url: &str) -> (Vec<Posted>, Vec<i64>) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let rows = sqlx::query(
        "SELECT m.id, m.room_id, m.author_id, u.username, m.body, m.deleted_at, m.created_at \
         FROM messages m JOIN users u ON u.id = m.author_id ORDER BY m.id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let posted = rows
        .iter()
        .map(|row| {
            let deleted_at: i64 = row.get("deleted_at");
            Posted {
                id: row.get("id"),
                room_id: row.get("room_id"),
                author_id: row.get("author_id"),
                author: row.get("username"),
                body: (deleted_at == 0).then(|| row.get("body")),
                created_ms: row.get("created_at"),
            }
        })
        .collect();
    let registered = sqlx::query("SELECT created_at FROM users ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap()
        .iter()
        .map(|row| row.get("created_at"))
        .collect();
    pool.close().await;
    (posted, registered)
}

/// Posts `body` as `user` and records it.
async fn post(user: &Api, name: &str, room: i64, body: &str, posted: &mut Vec<Posted>) {
    let reply = user.post_message(room, body, None).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    posted.push(Posted {
        id: reply.body["id"].as_i64().unwrap(),
        room_id: room,
        author_id: user.user_id,
        author: name.to_owned(),
        body: Some(body.to_owned()),
        created_ms: ms(&reply.body["created_at"]),
    });
}

/// Waits until `fetch` gives figures for which `ok` holds; returns whether it did and the last
/// figures seen.
async fn eventually_figures<F, Fut>(
    fetch: F,
    ok: impl Fn(&Figures) -> bool,
) -> (bool, Option<Figures>)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Option<Figures>>,
{
    let last = RefCell::new(None);
    let held = switchboard::eventually(DEADLINE, || async {
        let figures = fetch().await;
        let held = figures.as_ref().is_some_and(&ok);
        *last.borrow_mut() = figures;
        held
    })
    .await;
    (held, last.into_inner())
}

/// Waits until the replica on `target` reports `expected` for `room` (0: cluster) and `window`.
async fn assert_replica_reports(
    caller: &Node,
    target: &str,
    room: i64,
    window: &str,
    expected: &Figures,
) {
    let (agreed, last) = eventually_figures(
        || async {
            report(caller, Some(target), room, window)
                .await
                .map(|r| from_wire(&r))
        },
        |figures| figures.matches(expected),
    )
    .await;
    assert!(
        agreed,
        "{target}, room {room}, {window}:\n got      {last:?}\n expected {expected:?}"
    );
}

on_both_backends!(
    figures_are_exact_agree_with_the_database_and_outlive_a_replica,
    killing_an_analytics_process_under_query_traffic_changes_no_figure,
    lost_broadcasts_are_read_from_the_database,
);

async fn figures_are_exact_agree_with_the_database_and_outlive_a_replica(backend: Backend) {
    let Some(cluster) = Cluster::start(backend, 1, 1).await else {
        return;
    };
    let http = cluster.https[0].0.clone();
    let replicas = [
        add_replica(&cluster, "analytics-a@test").await,
        add_replica(&cluster, "analytics-b@test").await,
    ];
    let api = cluster.api(0);
    let admin = Api {
        token: Some(ADMIN_TOKEN.into()),
        ..api.clone()
    };
    let alice = api.register("alice").await;
    let bob = api.register("bob").await;
    let carol = api.register("carol").await;
    let dave = api.register("dave").await; // registers, never posts, joins nothing
    let general = alice.create_room("general").await;
    let random = bob.create_room("random").await;
    let quiet = carol.create_room("quiet").await;
    for (user, room) in [(&bob, general), (&carol, general), (&alice, random)] {
        let joined = user
            .post(&format!("/v1/rooms/{room}/join"), json!({}))
            .await;
        assert_eq!(joined.status, StatusCode::OK, "{}", joined.body);
    }
    // A live stream opened before posting: every event it delivers is one latency sample.
    let Ok(mut stream) = SseStream::open(&alice, general, None).await else {
        panic!("the live stream opens");
    };

    let mut posted = Vec::new();
    let script: [(&Api, &str, i64, &str); 12] = [
        (&alice, "alice", general, "hi"),
        (&bob, "bob", general, "hello there"),
        (&carol, "carol", general, "héllo wörld ✓ ünïcödé"),
        (
            &alice,
            "alice",
            general,
            "a longer message with quite a few words in it",
        ),
        (&bob, "bob", general, "ok"),
        (&alice, "alice", general, "yes"),
        (&bob, "bob", random, &"x".repeat(40)),
        (&alice, "alice", random, "short"),
        (&bob, "bob", random, "…"),
        (&bob, "bob", random, "and one more for bob"),
        (&carol, "carol", general, "🙂🙂🙂"),
        (&alice, "alice", general, "the end"),
    ];
    for (user, name, room, body) in script {
        post(user, name, room, body, &mut posted).await;
    }
    // An edit changes a length; a deletion removes one but the message still counts.
    let edited = posted
        .iter()
        .position(|p| p.body.as_deref() == Some("yes"))
        .unwrap();
    let reply = alice
        .send(
            alice
                .request(
                    reqwest::Method::PATCH,
                    &format!("/v1/rooms/{general}/messages/{}", posted[edited].id),
                )
                .json(&json!({ "body": "yes, indeed it is" })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    posted[edited].body = Some("yes, indeed it is".into());
    let deleted = posted
        .iter()
        .position(|p| p.body.as_deref() == Some("ok"))
        .unwrap();
    let reply = bob
        .send(bob.request(
            reqwest::Method::DELETE,
            &format!("/v1/rooms/{general}/messages/{}", posted[deleted].id),
        ))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    posted[deleted].body = None;

    let live_in_general = posted.iter().filter(|p| p.room_id == general).count() + 2;
    for _ in 0..live_in_general {
        stream.next().await.expect("every live event is delivered");
    }
    drop(stream);
    let deliveries = live_in_general as i64;

    // What the test knows is what the database holds.
    let (stored, registered) = database_contents(&cluster.url).await;
    let mut known = posted.clone();
    known.sort();
    assert_eq!(stored, known, "the database holds exactly what was posted");
    assert_eq!(registered.len(), 4);

    let scopes = [
        (0, None),
        (general, Some(general)),
        (random, Some(random)),
        (quiet, Some(quiet)),
    ];
    for window in WINDOWS {
        for (room, scope) in scopes {
            let expected = expected(&stored, &registered, window, scope, deliveries);
            for replica in &replicas {
                assert_replica_reports(&http, replica.name(), room, window, &expected).await;
            }
            // Through the API, answered by either replica.
            let (path, user) = match scope {
                None => (format!("/v1/admin/analytics?window={window}"), &admin),
                Some(room) if room == quiet => (
                    format!("/v1/rooms/{room}/analytics?window={window}"),
                    &carol,
                ),
                Some(room) => (
                    format!("/v1/rooms/{room}/analytics?window={window}"),
                    &alice,
                ),
            };
            let reply = user.get(&path).await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
            assert_eq!(reply.body["window"], window);
            let figures = from_json(&reply.body);
            assert!(
                figures.matches(&expected),
                "{path}:\n got      {figures:?}\n expected {expected:?}"
            );
            if window == "1h" {
                assert_eq!(
                    reply.body["messages"]["series"].as_array().unwrap().len(),
                    60
                );
                assert_eq!(reply.body["bucket_seconds"], 60);
            } else {
                assert_eq!(reply.body["bucket_seconds"], 3600);
            }
        }
    }
    // Spot checks of the known figures, in plain words.
    let day = expected(&stored, &registered, "24h", None, deliveries);
    assert_eq!(day.messages.0, 12);
    assert_eq!(day.active_users.0, 3);
    assert_eq!(day.top_rooms, Some(vec![(general, 8), (random, 4)]));
    assert_eq!(day.top_posters[0], (alice.user_id, "alice".into(), 5));
    assert_eq!(day.message_length, (11, Some(11), Some(45)));
    assert_eq!(day.new_users.as_ref().unwrap().0, 4);

    // Both replicas hold the same delivery-latency histogram as the API shows.
    let admin_day = from_json(&admin.get("/v1/admin/analytics?window=24h").await.body);
    for replica in &replicas {
        let figures = from_wire(&report(&http, Some(replica.name()), 0, "24h").await.unwrap());
        assert_eq!(figures, admin_day);
    }

    // Who may ask.
    let outsider = dave.get(&format!("/v1/rooms/{general}/analytics")).await;
    assert_eq!(
        (outsider.status, outsider.code()),
        (StatusCode::FORBIDDEN, "not_a_member")
    );
    let missing = alice.get("/v1/rooms/999999/analytics").await;
    assert_eq!(
        (missing.status, missing.code()),
        (StatusCode::NOT_FOUND, "room_not_found")
    );
    let bad = alice
        .get(&format!("/v1/rooms/{general}/analytics?window=2h"))
        .await;
    assert_eq!(
        (bad.status, bad.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed")
    );
    assert_eq!(
        api.get("/v1/admin/analytics").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        alice.get("/v1/admin/analytics").await.status,
        StatusCode::FORBIDDEN
    );
    let default_window = alice.get(&format!("/v1/rooms/{general}/analytics")).await;
    assert_eq!(default_window.body["window"], "24h");

    // One replica leaves: the API keeps answering with the same figures.
    let before: Vec<Figures> = figures_through_api(&admin, &alice, general).await;
    replicas[0].shutdown().await;
    for _ in 0..10 {
        assert_eq!(figures_through_api(&admin, &alice, general).await, before);
    }

    // A replica started now bootstraps from the database (and copies the latency histogram
    // from the running one) to the same figures.
    let fresh = add_replica(&cluster, "analytics-c@test").await;
    for window in WINDOWS {
        for (room, _) in scopes {
            let survivor = report(&http, Some(replicas[1].name()), room, window)
                .await
                .unwrap();
            let expected = from_wire(&survivor);
            let (same, last) = eventually_figures(
                || async {
                    report(&http, Some(fresh.name()), room, window)
                        .await
                        .map(|r| from_wire(&r))
                },
                |figures| *figures == expected,
            )
            .await;
            assert!(
                same,
                "room {room}, {window}: bootstrapped {last:?}, running {expected:?}"
            );
        }
    }

    // Forged broadcasts: a duplicate of an applied event and one far beyond the room's log.
    // Neither changes a figure on any replica.
    let duplicate = wire::RoomEvent {
        room_id: general,
        cursor: 1,
        kind: "message".into(),
        message: Some(wire::ChatMessage {
            id: 999_999,
            room_id: general,
            seq: 999_999,
            author: Some(wire::User {
                id: dave.user_id,
                username: "dave".into(),
                created_at_ms: 0,
            }),
            body: "counted twice?".into(),
            created_at_ms: stored[0].created_ms,
            ..Default::default()
        }),
        user: None,
        at_ms: stored[0].created_ms,
    };
    let beyond = wire::RoomEvent {
        cursor: 1000,
        ..duplicate.clone()
    };
    for event in [duplicate, beyond] {
        http.broadcast("chat.events", "room_event", event.encode_to_vec());
    }
    // The replicas reconcile with the database several times over while this check runs.
    let until = tokio::time::Instant::now() + std::time::Duration::from_millis(RECONCILE_MS * 5);
    while tokio::time::Instant::now() < until {
        for replica in [&replicas[1], &fresh] {
            for (room, scope) in scopes {
                let expected = expected(&stored, &registered, "24h", scope, deliveries);
                let figures = from_wire(
                    &report(&http, Some(replica.name()), room, "24h")
                        .await
                        .unwrap(),
                );
                assert!(
                    figures.matches(&expected),
                    "{}: forged events changed {figures:?}",
                    replica.name()
                );
            }
        }
    }
}

/// The cluster's and a room's figures for every window, through the API.
async fn figures_through_api(admin: &Api, member: &Api, room: i64) -> Vec<Figures> {
    let mut figures = Vec::new();
    for window in WINDOWS {
        for (user, path) in [
            (admin, format!("/v1/admin/analytics?window={window}")),
            (
                member,
                format!("/v1/rooms/{room}/analytics?window={window}"),
            ),
        ] {
            let reply = user.get(&path).await;
            assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
            figures.push(from_json(&reply.body));
        }
    }
    figures
}

async fn killing_an_analytics_process_under_query_traffic_changes_no_figure(backend: Backend) {
    let Some(cluster) = Cluster::start(backend, 1, 1).await else {
        return;
    };
    let http = cluster.https[0].0.clone();
    let local = add_replica(&cluster, "analytics-local@test").await;
    let mut process = spawn_analytics("analytics-process@test", &cluster);
    wait_until_serving(&cluster, "analytics-process@test").await;

    let api = cluster.api(0);
    let admin = Api {
        token: Some(ADMIN_TOKEN.into()),
        ..api.clone()
    };
    let erin = api.register("erin").await;
    let frank = api.register("frank").await;
    let room = erin.create_room("busy").await;
    assert_eq!(
        frank
            .post(&format!("/v1/rooms/{room}/join"), json!({}))
            .await
            .status,
        StatusCode::OK
    );
    let mut posted = Vec::new();
    for i in 0..40 {
        let (user, name) = if i % 3 == 0 {
            (&frank, "frank")
        } else {
            (&erin, "erin")
        };
        post(user, name, room, &"m".repeat(1 + i % 17), &mut posted).await;
    }
    let (stored, registered) = database_contents(&cluster.url).await;
    assert_eq!(stored.len(), 40);
    for window in WINDOWS {
        for (id, scope) in [(0, None), (room, Some(room))] {
            let expected = expected(&stored, &registered, window, scope, 0);
            for replica in [local.name(), "analytics-process@test"] {
                assert_replica_reports(&http, replica, id, window, &expected).await;
            }
        }
    }
    let before = figures_through_api(&admin, &erin, room).await;

    // Query traffic from four clients while the process replica is killed mid-way: every query
    // answers 200 with exactly the same figures.
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (admin, erin, before) = (admin.clone(), erin.clone(), before.clone());
        clients.push(tokio::spawn(async move {
            for _ in 0..15 {
                assert_eq!(figures_through_api(&admin, &erin, room).await, before);
            }
        }));
    }
    let _ = figures_through_api(&admin, &erin, room).await;
    process.kill(); // SIGKILL
    for client in clients {
        client
            .await
            .expect("every query during the kill answered the same figures");
    }
    let down = switchboard::eventually(DEADLINE, || async {
        !http
            .nodes()
            .iter()
            .any(|n| n.name == "analytics-process@test" && n.state == PeerState::Up)
    })
    .await;
    assert!(down);
    assert_eq!(figures_through_api(&admin, &erin, room).await, before);

    // The survivor keeps counting exactly.
    for i in 0..10 {
        post(
            &frank,
            "frank",
            room,
            &format!("after the kill {i}"),
            &mut posted,
        )
        .await;
    }
    let (stored, registered) = database_contents(&cluster.url).await;
    assert_eq!(stored.len(), 50);
    for window in WINDOWS {
        let expected = expected(&stored, &registered, window, None, 0);
        let (exact, last) = eventually_figures(
            || async {
                let reply = admin
                    .get(&format!("/v1/admin/analytics?window={window}"))
                    .await;
                (reply.status == StatusCode::OK).then(|| from_json(&reply.body))
            },
            |figures| figures.matches(&expected),
        )
        .await;
        assert!(exact, "{window}: got {last:?}, expected {expected:?}");
    }
}

/// Commits a message straight into the database, as a database node would, without
/// broadcasting it: exactly what a lost `chat.events` broadcast leaves behind.
async fn commit_unbroadcast(url: &str, room_id: i64, author: &Api, name: &str, body: &str) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    let counters = sqlx::query(
        "UPDATE rooms SET last_seq = last_seq + 1, last_cursor = last_cursor + 1 \
         WHERE id = $1 RETURNING last_seq, last_cursor",
    )
    .bind(room_id)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    let (seq, cursor): (i64, i64) = (counters.get("last_seq"), counters.get("last_cursor"));
    let now = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let id: i64 = sqlx::query(
        "INSERT INTO messages (room_id, seq, author_id, body, created_at) \
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(room_id)
    .bind(seq)
    .bind(author.user_id)
    .bind(body)
    .bind(now)
    .fetch_one(&mut *tx)
    .await
    .unwrap()
    .get("id");
    let event = wire::RoomEvent {
        room_id,
        cursor,
        kind: "message".into(),
        message: Some(wire::ChatMessage {
            id,
            room_id,
            seq,
            author: Some(wire::User {
                id: author.user_id,
                username: name.into(),
                created_at_ms: 0,
            }),
            body: body.into(),
            created_at_ms: now,
            ..Default::default()
        }),
        user: None,
        at_ms: now,
    };
    sqlx::query(
        "INSERT INTO room_events (room_id, cursor, payload, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(room_id)
    .bind(cursor)
    .bind(event.encode_to_vec())
    .bind(now)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    pool.close().await;
}

async fn lost_broadcasts_are_read_from_the_database(backend: Backend) {
    let Some(cluster) = Cluster::start(backend, 1, 1).await else {
        return;
    };
    let http = cluster.https[0].0.clone();
    let api = cluster.api(0);
    let gina = api.register("gina").await;
    let room = gina.create_room("lossy").await;
    // One replica learns of missed events only from the next event's cursor (it never
    // reconciles within the test), the other only from reconciling (no event follows).
    let by_gap = add_replica_reconciling(&cluster, "analytics-gap@test", 3_600_000).await;
    let by_tick = add_replica(&cluster, "analytics-tick@test").await;
    let mut posted = Vec::new();
    post(&gina, "gina", room, "first", &mut posted).await;
    post(&gina, "gina", room, "second", &mut posted).await;
    let (stored, registered) = database_contents(&cluster.url).await;
    let two = expected(&stored, &registered, "24h", None, 0);
    assert_replica_reports(&http, by_gap.name(), 0, "24h", &two).await;
    commit_unbroadcast(&cluster.url, room, &gina, "gina", "never broadcast").await;

    let (stored, registered) = database_contents(&cluster.url).await;
    assert_eq!(stored.len(), 3);
    let three = expected(&stored, &registered, "24h", None, 0);
    assert_replica_reports(&http, by_tick.name(), 0, "24h", &three).await;
    let seen = from_wire(&report(&http, Some(by_gap.name()), 0, "24h").await.unwrap());
    assert_eq!(seen.messages.0, 2, "nothing has told this replica yet");

    post(&gina, "gina", room, "third, after the gap", &mut posted).await;
    let (stored, registered) = database_contents(&cluster.url).await;
    assert_eq!(stored.len(), 4);
    for window in WINDOWS {
        for (id, scope) in [(0, None), (room, Some(room))] {
            let expected = expected(&stored, &registered, window, scope, 0);
            for replica in [&by_gap, &by_tick] {
                assert_replica_reports(&http, replica.name(), id, window, &expected).await;
            }
        }
    }
}
