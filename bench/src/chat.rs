//! The `chat` scenario family: the chat end to end, on the real node binaries and a real
//! PostgreSQL, beside a plain database baseline measured in the same run. It reports
//! `POST /v1/rooms/{id}/messages` through an http node and a database node against a raw
//! single-row `INSERT` loop at the same concurrency (64 and 256 clients), with both p99s, as
//! figures without a floor: on two shared CPUs the bench, both nodes and PostgreSQL share what the
//! raw loop has to itself. Its floors: post p99 under 20 ms at 64 clients; live delivery over
//! Server-Sent Events, from a post on one http node to receipt on another, with p99 under 50 ms
//! at 1,000 subscribers and nothing lost; and the database node's guarded batch writes on
//! PostgreSQL at least as fast as the locking transaction every backend can run (the same chat
//! with `SWITCHBOARD_BATCH_WRITES=locked`): they exist only while they are faster. It also prints
//! what 1,000 open SSE connections cost an http node in resident memory.
//!
//! Why the baseline can be beaten: every post is acknowledged only after its commit, as an
//! autocommit insert is, but the database node commits the posts that arrive together in one
//! transaction (group commit), while each raw insert pays a commit (a WAL flush) of its own.
//!
//! The set-up ([`cluster`], [`postgres`]): a fresh database; one `switchboard-database` and one
//! `switchboard-http` process; one registered user per client, all members of one room ([`api`]);
//! one PostgreSQL connection per baseline client; for the locked points, a second database node
//! and http node on a second fresh database, with users and a room of their own. The end-to-end,
//! locked and raw points take turns slice by slice ([`crate::points`]). Then a second http node joins, opens the SSE streams, and posts
//! through the first are timed to every subscriber ([`sse`]).

mod api;
mod cluster;
mod postgres;
mod sse;
mod stalled;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use futures::{StreamExt, TryStreamExt};

use self::api::{Api, User};
use self::cluster::{Batches, Cluster, metric};
use self::postgres::{Postgres, RawInserts};
use self::sse::Subscribers;
use crate::cli::RunOptions;
use crate::load::open_loop;
use crate::placement::Placement;
use crate::points::{Point, find, measure_in_turn, selected};
use crate::server_process::{self, Memory};
use crate::stats::{Bound, Check, Measurement, throughput_ratio};
use crate::table::{
    Grid, MemoryRow, Observation, Quantity, Row, Section, duration, progress, seconds, thousands,
};

/// Clients of the throughput points; the first is the one the p99 floor names.
const CLIENTS: [usize; 2] = [64, 256];

/// Bytes of every message body, posted or inserted.
const BODY_BYTES: usize = 100;

/// The points' names, shared by the table, `--only` and the checks.
const E2E: &str = "chat post end to end (http node -> database node -> PostgreSQL)";
const RAW: &str = "raw single-row INSERT, autocommit (same PostgreSQL)";
const LOCKED: &str = "chat post end to end, batches in a locking transaction (same PostgreSQL)";
const SSE: &str = "SSE delivery: post on http node A -> receipt on http node B";

/// SSE subscribers, and under `--quick`.
const SUBSCRIBERS: usize = 1000;
const QUICK_SUBSCRIBERS: usize = 200;

/// Timed posts per second during the SSE run.
const SSE_RATE: u32 = 50;

/// The floors. The guarded batch writes (`post_batch/guarded.rs`, `in_turn.rs`) exist only while
/// they are faster than the locking transaction every backend can run.
const GUARDED_FLOOR: f64 = 1.0;
const DELIVERY_P99: Duration = Duration::from_millis(50);
/// Post p99 is held to [`POST_P99`] at the first client count only; at 256 clients on two shared
/// CPUs a 20 ms p99 needs more posts a second than the raw loop itself manages there.
const POST_P99: Duration = Duration::from_millis(20);

/// Registrations, joins and stream openings in flight at once during set-up.
const SETUP_IN_FLIGHT: usize = 16;

/// The stalled-reader run: posts of the largest body the API takes, enough of them that every
/// stalled stream's buffers fill, and the write stall timeout of the http node holding them.
const STALL_POSTS: usize = 200;
const STALL_BODY_CHARS: usize = 4000;
const STALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The most a stalled stream may add to its http node's peak memory, in KiB.
const STALLED_STREAM_CEILING_KIB: f64 = 256.0;

/// How long every stream has to receive what was posted before the rest counts as lost.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(10);

/// The node binaries the family runs.
const BINARIES: [&str; 2] = ["switchboard-database", "switchboard-http"];

/// Runs the family and returns its section of the report: none when `--only` selects none of
/// its points, and one that says why, with nothing measured, when a node binary is missing or
/// PostgreSQL cannot be had.
pub(crate) async fn run(options: &RunOptions) -> anyhow::Result<Option<Section>> {
    let plan = Plan::of(options);
    if !plan.throughput && !plan.delivery {
        return Ok(None);
    }
    if let Some(why) = server_process::missing_services(&BINARIES)? {
        progress(format_args!("chat: {why}"));
        return Ok(Some(Section::skipped(title(options), why)));
    }
    progress("chat: getting PostgreSQL");
    let postgres = match Postgres::create().await {
        Ok(postgres) => postgres,
        Err(why) => {
            progress(format_args!("chat: skipped, no PostgreSQL: {why:#}"));
            return Ok(Some(skipped(options, &format!("{why:#}"))));
        }
    };
    let locked = if plan.throughput {
        match Postgres::create().await {
            Ok(locked) => Some(locked),
            Err(why) => {
                let _ = postgres.drop_database().await;
                return Err(why.context("a second database for the locked batch writes"));
            }
        }
    } else {
        None
    };
    let measured = measure(options, &plan, &postgres, locked.as_ref()).await;
    let dropped = postgres.drop_database().await;
    let locked_dropped = match locked {
        Some(locked) => locked.drop_database().await,
        None => Ok(()),
    };
    let section = measured?;
    dropped?;
    locked_dropped?;
    Ok(Some(section))
}

/// Which parts of the family `--only` selects, and their sizes.
#[derive(Debug)]
struct Plan {
    throughput: bool,
    delivery: bool,
    subscribers: usize,
    /// The SSE point's 'in flight' column.
    delivery_load: String,
}

impl Plan {
    fn of(options: &RunOptions) -> Self {
        let subscribers = if options.quick {
            QUICK_SUBSCRIBERS
        } else {
            SUBSCRIBERS
        };
        let delivery_load = format!("{} subs, {SSE_RATE} posts/s", thousands(subscribers as f64));
        Self {
            throughput: CLIENTS.iter().any(|n| {
                [E2E, RAW, LOCKED]
                    .iter()
                    .any(|scenario| options.selects(scenario, &n.to_string()))
            }),
            delivery: options.selects(SSE, &delivery_load),
            subscribers,
            delivery_load,
        }
    }
}

/// Everything measured with the database in place.
async fn measure(
    options: &RunOptions,
    plan: &Plan,
    postgres: &Postgres,
    locked: Option<&Postgres>,
) -> anyhow::Result<Section> {
    let cluster = Cluster::start(options, &postgres.url(), "guarded")?;
    let (mut http_a, api) = cluster.add_http(options, "bench-http-a").await?;
    let (poster, room) = Poster::in_a_new_room(api).await?;

    let mut rows = Vec::new();
    let mut batches = Vec::new();
    if let Some(locked) = locked {
        progress("chat: a second database node and http node, with locked batch writes");
        let locked_cluster = Cluster::start(options, &locked.url(), "locked")?;
        let (mut locked_http, locked_api) = locked_cluster
            .add_http(options, "bench-http-locked")
            .await?;
        let (locked_poster, _) = Poster::in_a_new_room(locked_api).await?;
        progress(format_args!(
            "chat: opening {} PostgreSQL connections for the baseline",
            CLIENTS[1]
        ));
        let raw = postgres.raw_inserts(CLIENTS[1]).await?;
        let (points, per_point) = throughput_points(&poster, &locked_poster, &raw, &cluster, room);
        rows = measure_in_turn("chat", selected(points, options), options).await?;
        locked_http.check_alive()?;
        locked_cluster.finish()?;
        batches = per_point
            .into_iter()
            .map(|(clients, b)| (clients, *b.lock().unwrap_or_else(|p| p.into_inner())))
            .filter(|(_, b)| b.commits > 0.0)
            .collect();
        raw.close().await;
    }
    let (delivery, stalled) = if plan.delivery {
        (
            Some(deliver(options, plan, &cluster, &poster, room).await?),
            Some(stall(options, plan, &cluster, &poster, room).await?),
        )
    } else {
        (None, None)
    };
    http_a.check_alive()?;
    cluster.finish()?;

    if let Some(delivery) = &delivery {
        rows.push(Row {
            scenario: SSE.into(),
            in_flight: plan.delivery_load.clone(),
            unit: "events",
            measurement: delivery.latency.clone(),
        });
    }
    let mut checks = checks(plan, &rows, delivery.as_ref());
    let mut memory = delivery.as_ref().map(Delivery::memory).unwrap_or_default();
    let mut observations = delivery
        .as_ref()
        .map(Delivery::observations)
        .unwrap_or_default();
    if let Some(stalled) = &stalled {
        checks.extend(stalled.checks());
        memory.extend(stalled.memory());
        observations.extend(stalled.observations());
    }
    let grids = if plan.throughput {
        vec![against_raw(&rows)]
    } else {
        Vec::new()
    };
    Ok(Section {
        title: title(options),
        notes: notes(options, plan, postgres, &batches, delivery.as_ref()),
        rows,
        observations,
        memory,
        grids,
        checks,
    })
}

fn title(options: &RunOptions) -> String {
    format!(
        "chat: posts end to end vs raw INSERTs, and SSE delivery (node binaries, PostgreSQL, {} CPUs shared)",
        options.cpus
    )
}

/// Registers `count` users, `bench-user-<i>`.
async fn register(api: &Api, count: usize) -> anyhow::Result<Vec<User>> {
    progress(format_args!(
        "chat: registering {count} users (argon2 on the http node)"
    ));
    futures::stream::iter(0..count)
        .map(|i| async move { api.register(&format!("bench-user-{i}")).await })
        .buffered(SETUP_IN_FLIGHT)
        .try_collect()
        .await
        .context("registering the clients' users")
}

/// Makes every user of `users` a member of `room`.
async fn join(api: &Api, users: &[User], room: i64) -> anyhow::Result<()> {
    futures::stream::iter(users)
        .map(|user| api.join(user, room))
        .buffer_unordered(SETUP_IN_FLIGHT)
        .try_collect::<()>()
        .await
        .context("joining the users to the room")
}

/// `text` padded with `x` to [`BODY_BYTES`].
fn padded(mut text: String) -> String {
    while text.len() < BODY_BYTES {
        text.push('x');
    }
    text
}

/// Posts as the clients do: user `client`'s token, a fresh `Idempotency-Key` per post.
#[derive(Debug, Clone)]
struct Poster {
    api: Api,
    users: Arc<Vec<User>>,
    messages: hyper::Uri,
    /// Posts made so far, which numbers the next key.
    posted: Arc<AtomicU64>,
}

impl Poster {
    /// Registers a user per client of the largest point, all members of a new room: the
    /// poster, and the room.
    async fn in_a_new_room(api: Api) -> anyhow::Result<(Self, i64)> {
        let users = Arc::new(register(&api, CLIENTS[1]).await?);
        let room = api.create_room(&users[0], "bench").await?;
        join(&api, &users[1..], room).await?;
        let messages = api.uri(&format!("/v1/rooms/{room}/messages"))?;
        let poster = Poster {
            api,
            users,
            messages,
            posted: Arc::new(AtomicU64::new(0)),
        };
        Ok((poster, room))
    }

    fn post(
        &self,
        client: usize,
        body: String,
    ) -> impl Future<Output = anyhow::Result<()>> + use<> {
        let n = self.posted.fetch_add(1, Ordering::Relaxed);
        let this = self.clone();
        async move {
            let user = &this.users[client % this.users.len()];
            this.api
                .post(user, &this.messages, &body, &format!("bench-{n}"))
                .await
        }
    }
}

/// The end-to-end, locked and raw points at each client count, in table order, and the
/// group-commit batches each end-to-end point's slices saw.
fn throughput_points(
    poster: &Poster,
    locked: &Poster,
    raw: &RawInserts,
    cluster: &Cluster,
    room: i64,
) -> (Vec<Point>, Vec<(usize, SeenBatches)>) {
    let raw_body: Arc<str> = padded("switchboard-bench raw insert ".into()).into();
    let mut points = Vec::new();
    let mut batches = Vec::new();
    for clients in CLIENTS {
        let post = |poster: &Poster| {
            let poster = poster.clone();
            move |client: usize| {
                poster.post(client, padded(format!("switchboard-bench post {client} ")))
            }
        };
        let insert = {
            let raw = raw.clone();
            let body = raw_body.clone();
            move |client: usize| {
                let raw = raw.clone();
                let body = body.clone();
                async move { raw.insert(client, room, &body).await }
            }
        };
        let seen = Arc::new(Mutex::new(Batches::default()));
        points.push(counting_batches(
            Point::closed_per_client(E2E, clients, post(poster)),
            cluster,
            seen.clone(),
        ));
        points.push(Point::closed_per_client(LOCKED, clients, post(locked)));
        points.push(Point::closed_per_client(RAW, clients, insert));
        batches.push((clients, seen));
    }
    (points, batches)
}

/// The group-commit batches an end-to-end point's slices saw, added up.
type SeenBatches = Arc<Mutex<Batches>>;

/// `point` with the database node's group-commit histogram read before and after every slice
/// (outside its measured window), the difference added to `seen`.
fn counting_batches(mut point: Point, cluster: &Cluster, seen: SeenBatches) -> Point {
    let slice = point.slice;
    let metrics = cluster.metrics_reader();
    point.slice = Box::new(move |warmup, measure| {
        let slice = slice(warmup, measure);
        let metrics = metrics.clone();
        let seen = seen.clone();
        Box::pin(async move {
            let before = metrics.read().await?;
            let tally = slice.await?;
            let after = metrics.read().await?;
            seen.lock()
                .unwrap_or_else(|p| p.into_inner())
                .add(after.since(before));
            Ok(tally)
        })
    });
    point
}

/// What the SSE run measured.
#[derive(Debug)]
struct Delivery {
    subscribers: usize,
    /// Users holding the streams.
    holders: usize,
    posts: usize,
    latency: Measurement,
    lost: u64,
    /// http node B before the streams opened, and with all of them open.
    before: Memory,
    after: Memory,
}

impl Delivery {
    /// http node B's memory before and with the streams.
    fn memory(&self) -> Vec<MemoryRow> {
        let row = |state: String, memory: Memory| MemoryRow {
            process: "switchboard-http (node B)".into(),
            state,
            rss: memory.rss,
            peak: memory.peak,
        };
        vec![
            row("before the SSE streams opened".into(), self.before),
            row(
                format!("{} SSE streams open", thousands(self.subscribers as f64)),
                self.after,
            ),
        ]
    }

    fn observations(&self) -> Vec<Observation> {
        let growth = self.after.rss.saturating_sub(self.before.rss) as f64
            * (1000.0 / self.subscribers as f64);
        vec![
            Observation::new(
                "http node B: RSS growth per 1,000 open SSE connections (KiB)",
                Quantity::Count(growth as u64 / 1024),
            ),
            Observation::new(
                "timed posts through http node A during the SSE run",
                Quantity::Count(self.posts as u64),
            ),
            Observation::new(
                format!(
                    "SSE events not received within {} s of the last post",
                    seconds(DELIVERY_DEADLINE)
                ),
                Quantity::Count(self.lost),
            ),
        ]
    }
}

/// The SSE run: a second http node, the streams opened on it, then timed posts through the first.
async fn deliver(
    options: &RunOptions,
    plan: &Plan,
    cluster: &Cluster,
    poster: &Poster,
    room: i64,
) -> anyhow::Result<Delivery> {
    let (mut http_b, api_b) = cluster.add_http(options, "bench-http-b").await?;
    let before = http_b.memory()?;
    let count = plan.subscribers;
    progress(format_args!(
        "chat: opening {count} SSE streams on http node B"
    ));
    let users = poster.users.clone();
    let streams = futures::stream::iter(0..count)
        .map(|i| {
            let api = api_b.clone();
            let user = users[i % users.len()].clone();
            async move { api.events(&user, room).await }
        })
        .buffer_unordered(SETUP_IN_FLIGHT)
        .try_collect::<Vec<_>>()
        .await
        .context("opening the SSE streams")?;
    // The stamps count from here.
    let base = Instant::now();
    let subscribers = Subscribers::read(streams, base);
    // A probe: once every stream has received it, every stream is live, and node B holds
    // whatever a subscribed connection costs it.
    poster.post(0, "probe".into()).await?;
    let everywhere = switchboard::eventually(DELIVERY_DEADLINE, || async {
        subscribers.received() >= count as u64
    })
    .await;
    ensure!(
        everywhere,
        "the probe post reached only {} of {count} SSE streams within {DELIVERY_DEADLINE:?}",
        subscribers.received()
    );
    let after = http_b.memory()?;

    progress(format_args!(
        "chat: posting {SSE_RATE}/s through http node A for {} s",
        seconds(options.measure)
    ));
    let started = Instant::now();
    let timed = {
        let poster = poster.clone();
        let client = AtomicU64::new(0);
        open_loop(SSE_RATE, move || {
            let client = client.fetch_add(1, Ordering::Relaxed) as usize;
            let sent = base.elapsed().as_nanos() as u64;
            poster.post(client, sse::stamped_body(sent, BODY_BYTES))
        })
    };
    // The measured window: posts go out on the open loop's schedule meanwhile.
    tokio::time::sleep(options.measure).await;
    let posts = timed.finish().await?;
    if let Some(failed) = posts.iter().find_map(|p| p.outcome.as_ref().err()) {
        anyhow::bail!("a timed post failed: {failed}");
    }
    let expected = (count * (1 + posts.len())) as u64;
    switchboard::eventually(DELIVERY_DEADLINE, || async {
        subscribers.received() >= expected
    })
    .await;
    let elapsed = started.elapsed();
    let received = subscribers.received();
    let holders = subscribers.len().min(users.len());
    let mut latencies = subscribers.finish().await?;
    http_b.check_alive()?;
    Ok(Delivery {
        subscribers: count,
        holders,
        posts: posts.len(),
        latency: Measurement::from_samples(&mut latencies, elapsed),
        lost: expected.saturating_sub(received),
        before,
        after,
    })
}

/// What stalled readers cost http node C, and whether it let them all go.
#[derive(Debug)]
struct Stalled {
    streams: usize,
    before: Memory,
    /// With the streams open, before the posts.
    opened: Memory,
    /// Once every stream was dropped (its `peak` is the episode's peak).
    after: Memory,
    dropped: usize,
    /// From the first post until the last stream was dropped.
    took: Duration,
}

impl Stalled {
    /// Peak growth per stalled stream, in KiB.
    fn peak_per_stream_kib(&self) -> f64 {
        self.after.peak.saturating_sub(self.before.rss) as f64 / 1024.0 / self.streams as f64
    }

    fn memory(&self) -> Vec<MemoryRow> {
        let row = |state: String, memory: Memory| MemoryRow {
            process: "switchboard-http (node C)".into(),
            state,
            rss: memory.rss,
            peak: memory.peak,
        };
        let streams = thousands(self.streams as f64);
        vec![
            row("before the stalled readers".into(), self.before),
            row(format!("{streams} stalled readers open"), self.opened),
            row(
                format!(
                    "after {STALL_POSTS} posts of {STALL_BODY_CHARS} chars piled up and every stalled reader was dropped"
                ),
                self.after,
            ),
        ]
    }

    fn observations(&self) -> Vec<Observation> {
        vec![
            Observation::new(
                "http node C: peak RSS growth per stalled reader (KiB)",
                Quantity::Count(self.peak_per_stream_kib() as u64),
            ),
            Observation::new(
                format!(
                    "stalled readers dropped by http node C (write stall timeout {} s), of {}",
                    seconds(STALL_TIMEOUT),
                    thousands(self.streams as f64)
                ),
                Quantity::Count(self.dropped as u64),
            ),
            Observation::new(
                "from the first post until the last stalled reader was dropped (ms)",
                Quantity::Count(self.took.as_millis() as u64),
            ),
        ]
    }

    fn checks(&self) -> Vec<Check> {
        vec![
            Check::mebibytes(
                format!(
                    "http node C peak RSS growth per 1,000 stalled readers (MiB; {} open)",
                    thousands(self.streams as f64)
                ),
                self.peak_per_stream_kib() * 1000.0 / 1024.0,
                Bound::AtMost(STALLED_STREAM_CEILING_KIB * 1000.0 / 1024.0),
            ),
            Check::none(
                "stalled readers not dropped",
                self.streams.saturating_sub(self.dropped) as u64,
            ),
        ]
    }
}

/// The stalled-reader run ([`stalled`]): a third http node with a short write stall timeout,
/// as many stalled readers on it as the SSE run had subscribers, then large posts through the
/// first node until every reader is dropped.
async fn stall(
    options: &RunOptions,
    plan: &Plan,
    cluster: &Cluster,
    poster: &Poster,
    room: i64,
) -> anyhow::Result<Stalled> {
    let timeout_ms = STALL_TIMEOUT.as_millis().to_string();
    let (mut http_c, api_c) = cluster
        .add_http_with(
            options,
            "bench-http-c",
            &[("SWITCHBOARD_WRITE_STALL_TIMEOUT_MS", timeout_ms)],
        )
        .await?;
    let address: std::net::SocketAddr = http_c.announced(server_process::HTTP)?.parse()?;
    let before = http_c.memory()?;
    let count = plan.subscribers;
    progress(format_args!(
        "chat: opening {count} stalled readers on http node C"
    ));
    let users = poster.users.clone();
    let streams = futures::stream::iter(0..count)
        .map(|i| {
            let user = users[i % users.len()].clone();
            async move { stalled::open(address, room, user.authorization()).await }
        })
        .buffer_unordered(SETUP_IN_FLIGHT)
        .try_collect::<Vec<_>>()
        .await
        .context("opening the stalled readers")?;
    let opened = http_c.memory()?;
    progress(format_args!(
        "chat: {STALL_POSTS} posts of {STALL_BODY_CHARS} chars through http node A"
    ));
    let started = Instant::now();
    let body = "x".repeat(STALL_BODY_CHARS);
    futures::stream::iter(0..STALL_POSTS)
        .map(|i| poster.post(i, body.clone()))
        .buffer_unordered(SETUP_IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await
        .context("posting behind the stalled readers")?;
    let dropped = || async {
        api_c
            .text("/metrics")
            .await
            .ok()
            .and_then(|(_, text)| metric(&text, "http_stalled_connections_dropped_total"))
            .unwrap_or(0.0) as usize
    };
    switchboard::eventually(STALL_TIMEOUT + DELIVERY_DEADLINE * 3, || async {
        dropped().await >= count
    })
    .await;
    let took = started.elapsed();
    let dropped = dropped().await;
    let after = http_c.memory()?;
    drop(streams);
    http_c.check_alive()?;
    Ok(Stalled {
        streams: count,
        before,
        opened,
        after,
        dropped,
        took,
    })
}

/// The chat against the raw INSERT loop at each client count: reported, with no floor. On this
/// machine's two shared CPUs the bench, both nodes and PostgreSQL share what the raw loop has to
/// itself, so the ratio is not a bound the chat can be held to here (BENCHMARKS.md, "Floors");
/// the figures still show what a change does to it.
fn against_raw(rows: &[Row]) -> Grid {
    let rate = |m: &Measurement| {
        if m.elapsed.is_zero() {
            "n/a".to_owned()
        } else {
            thousands(m.per_second())
        }
    };
    let p99 = |m: &Measurement| {
        m.latency
            .map_or_else(|| "n/a".to_owned(), |l| duration(l.p99))
    };
    let rows = CLIENTS
        .iter()
        .map(|clients| {
            let e2e = find(rows, E2E, &clients.to_string());
            let raw = find(rows, RAW, &clients.to_string());
            let ratio = throughput_ratio(&e2e, &raw);
            vec![
                clients.to_string(),
                rate(&e2e),
                rate(&raw),
                if ratio.is_finite() {
                    format!("{ratio:.2}x")
                } else {
                    "n/a".to_owned()
                },
                p99(&e2e),
                p99(&raw),
            ]
        })
        .collect();
    Grid {
        caption: "The chat against the raw INSERT loop (reported, no floor on 2 shared CPUs)"
            .into(),
        header: [
            "clients",
            "chat posts/s",
            "raw INSERTs/s",
            "chat / raw",
            "chat p99",
            "raw p99",
        ]
        .map(str::to_owned)
        .to_vec(),
        rows,
    }
}

/// The floors. A check whose points were not measured (see `--only`) reads n/a.
fn checks(plan: &Plan, rows: &[Row], delivery: Option<&Delivery>) -> Vec<Check> {
    let mut checks = Vec::new();
    for clients in CLIENTS {
        let e2e = find(rows, E2E, &clients.to_string());
        let locked = find(rows, LOCKED, &clients.to_string());
        checks.push(Check::new(
            format!("chat post @{clients} / locked batch writes @{clients} (throughput)"),
            throughput_ratio(&e2e, &locked),
            Bound::AtLeast(GUARDED_FLOOR),
        ));
        if clients == CLIENTS[0] {
            let p99 = Check::within(
                format!("chat post p99 @{clients}"),
                e2e.latency.map(|l| l.p99),
                POST_P99,
            );
            checks.push(if e2e.elapsed.is_zero() {
                p99.not_run()
            } else {
                p99
            });
        }
    }
    let sse = find(rows, SSE, &plan.delivery_load);
    let delivered = Check::within(
        format!(
            "SSE delivery p99 @{} subscribers",
            thousands(plan.subscribers as f64)
        ),
        sse.latency.map(|l| l.p99),
        DELIVERY_P99,
    );
    let lost = Check::none("SSE events lost", delivery.map_or(0, |d| d.lost));
    if delivery.is_some() {
        checks.extend([delivered, lost]);
    } else {
        checks.extend([delivered.not_run(), lost.not_run()]);
    }
    checks
}

/// The section of a run without PostgreSQL: why, and nothing measured.
fn skipped(options: &RunOptions, why: &str) -> Section {
    Section::skipped(
        title(options),
        format!(
            "skipped, nothing measured: no PostgreSQL ({why}); set {} to a server URL \
             (postgres://user:password@host:port, no database name) or let .ci/postgres.sh start one",
            postgres::SERVER_VARIABLE
        ),
    )
}

fn notes(
    options: &RunOptions,
    plan: &Plan,
    postgres: &Postgres,
    batches: &[(usize, Batches)],
    delivery: Option<&Delivery>,
) -> Vec<String> {
    let cpus = match &options.placement {
        Placement::Pinned { client, server } => format!(
            "the bench (load generator and baseline client) pinned to CPU {client}; the http and \
             database nodes to CPU {server}; PostgreSQL (started outside the bench) on any CPU"
        ),
        Placement::Unpinned(why) => {
            format!("nothing pinned ({why}): the bench, the nodes and PostgreSQL all on any CPU")
        }
    };
    let mut notes = vec![
        format!(
            "PostgreSQL: {} from {}, a fresh database per run (dropped at the end); \
             synchronous_commit = {}, fsync = {}",
            postgres.version, postgres.source, postgres.synchronous_commit, postgres.fsync
        ),
        format!(
            "nodes: the release switchboard-database and switchboard-http binaries, one process \
             each, {} tokio worker(s) each; database pool 16 connections (default); rate limit \
             off; nodes log at warn (the per-post info line is not written)",
            options.server_workers
        ),
        "locked batch writes: a second database node (SWITCHBOARD_BATCH_WRITES=locked: each \
         batch one transaction that locks the room first, the portable path) and http node, \
         on a second fresh database of the same server, with users and a room of their own; \
         idle while the other points are measured"
            .to_owned(),
        format!("CPUs: {} for everything: {cpus}", options.cpus),
        format!(
            "chat post: N closed-loop clients, each its own registered user, all in one room, \
             POST /v1/rooms/{{id}}/messages with a {BODY_BYTES}-byte body and a unique \
             Idempotency-Key over HTTP/1.1 keep-alive; a post counts when answered 201, which \
             the http node sends after the commit"
        ),
        format!(
            "raw INSERT: N clients, each with its own connection (sqlx), looping one autocommit \
             single-row INSERT of a {BODY_BYTES}-byte body into raw_messages (bigserial key, \
             index on (room_id, id)) in the same database"
        ),
    ];
    if !batches.is_empty() {
        let per_point: Vec<String> = batches
            .iter()
            .map(|(clients, b)| {
                format!(
                    "@{clients} {:.1} posts per commit over {} commits",
                    b.mean(),
                    thousands(b.commits)
                )
            })
            .collect();
        let fallbacks: f64 = batches.iter().map(|(_, b)| b.fallbacks).sum();
        notes.push(format!(
            "group commit on the database node (its group_commit_batch_posts histogram, over \
             each point's slices and warm-ups): {}; {} batches fell back to one post at a time",
            per_point.join("; "),
            thousands(fallbacks)
        ));
    }
    if plan.delivery {
        let subscribers = thousands(plan.subscribers as f64);
        let quick = if options.quick {
            format!(
                " (--quick: {subscribers} instead of {})",
                thousands(SUBSCRIBERS as f64)
            )
        } else {
            String::new()
        };
        let holders = delivery.map_or(0, |d| d.holders);
        notes.push(format!(
            "SSE: a second http node (B) joins the cluster; {subscribers} streams of the room \
             are opened on it{quick}, held by {holders} users; posts go through node A at \
             {SSE_RATE}/s for {} s, each stamped with its send time; latency = when the bytes \
             reached the bench on each stream minus the send time; each stream is read by a \
             task of its own; RSS is node B's VmRSS before the streams and once all have \
             received a probe post",
            seconds(options.measure)
        ));
        notes.push(format!(
            "stalled readers: a third http node (C, SWITCHBOARD_WRITE_STALL_TIMEOUT_MS={}) \
             gets as many streams as node B, each a raw connection with a 4 KiB receive buffer \
             that reads its response head and nothing more; {STALL_POSTS} posts of \
             {STALL_BODY_CHARS} characters go through node A; node C's peak RSS (VmHWM) is read \
             once its metric shows every stalled reader dropped",
            STALL_TIMEOUT.as_millis()
        ));
    }
    notes
}
