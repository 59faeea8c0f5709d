//! `switchboard-bench chaos`: a chaos run with a history checker. It drives a cluster of 3
//! database nodes, 2 http behind a balancer, 2 of each other service and PostgreSQL, either a
//! docker compose project ([`compose`]) or, where Docker does not answer, processes in network
//! namespaces it builds itself ([`netns`]), under keyed posts, edits, deletes, SSE clients and
//! admin reads ([`load`]); it injects faults on a seeded schedule ([`faults`]), records every
//! request, answer and event ([`history`]), waits for the cluster to settle, then checks the
//! history against the rooms' final state ([`checker`]) and prints one table; it fails (exit
//! code 1) if any floor fails.
//!
//! Why: each fault has its own test elsewhere, but only a run that mixes them under load, with
//! the clients' view written down and checked afterwards, shows that a post acknowledged once
//! is never lost or doubled and that a live stream resumes exactly, whatever broke meanwhile.

mod balancer;
mod checker;
mod compose;
mod faults;
mod followers;
mod history;
mod impairment;
mod load;
mod netns;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use hyper::Method;
use serde_json::{Value, json};
use tokio::sync::watch;

use self::checker::Stored;
use self::compose::ComposeCluster;
use self::faults::Target;
use self::history::History;
use self::load::{Http, Load};
use self::netns::NetnsCluster;

/// The scale of the cluster the run brings up.
const SCALE: [(&str, usize); 5] = [
    ("http", 2),
    ("database", 3),
    ("log", 2),
    ("reporting", 2),
    ("analytics", 2),
];
const ROOMS: usize = 10;
const USERS: usize = 25;
const WRITERS: usize = 6;
/// A full run's length: long enough for every kind of fault and a kill of each node service.
const FULL_RUN: Duration = Duration::from_secs(180);

/// The chaos run's options.
#[derive(Debug, Clone)]
pub(crate) struct ChaosOptions {
    pub(crate) duration: Duration,
    pub(crate) quick: bool,
    pub(crate) seed: Option<u64>,
    pub(crate) project: String,
    /// Attach to a running stack's balancer (`http://host:port`) rather than bringing one up.
    pub(crate) url: Option<String>,
    pub(crate) repo: PathBuf,
    pub(crate) history: PathBuf,
    pub(crate) keep: bool,
    /// Run the cluster in network namespaces even where Docker answers.
    pub(crate) netns: bool,
}

pub(crate) const USAGE: &str = "\
usage: switchboard-bench chaos [options]

  --duration SECS   how long the load and the faults run (default 180: every kind of fault,
                    then a kill -9 of each node service, then more at random)
  --quick           a 20 s run with 40 SSE clients and one fault of each kind
  --seed N          the fault schedule's seed (default: random; printed, replays the schedule)
  --project NAME    compose project name (default sbchaos)
  --url URL         use the stack of --project that is already up, its balancer at URL
  --repo DIR        the repository whose docker-compose.yml to run (default .)
  --history FILE    the history, JSON lines (default chaos-history.jsonl)
  --keep            leave the compose stack running at the end (no down -v)
  --netns           run the cluster as processes in network namespaces (the default where
                    `docker info` fails): needs root, iproute2 and Debian's postgresql
";

/// Parses `chaos`'s arguments.
pub(crate) fn parse(args: &[String]) -> anyhow::Result<ChaosOptions> {
    let mut options = ChaosOptions {
        duration: FULL_RUN,
        quick: false,
        seed: None,
        project: "sbchaos".into(),
        url: None,
        repo: PathBuf::from("."),
        history: PathBuf::from("chaos-history.jsonl"),
        keep: false,
        netns: false,
    };
    let mut duration = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--duration" => duration = Some(Duration::from_secs(value()?.parse()?)),
            "--quick" => options.quick = true,
            "--seed" => options.seed = Some(value()?.parse()?),
            "--project" => options.project = value()?.clone(),
            "--url" => options.url = Some(value()?.clone()),
            "--repo" => options.repo = PathBuf::from(value()?),
            "--history" => options.history = PathBuf::from(value()?),
            "--keep" => options.keep = true,
            "--netns" => options.netns = true,
            other => bail!("unknown chaos option {other:?}\n\n{USAGE}"),
        }
    }
    ensure!(
        !(options.netns && options.url.is_some()),
        "--url attaches to a compose stack; --netns builds its own cluster"
    );
    options.duration = duration.unwrap_or(if options.quick {
        Duration::from_secs(20)
    } else {
        FULL_RUN
    });
    Ok(options)
}

/// A line of the report on stdout.
fn say(line: &str) {
    let _ = crate::table::write_stdout(&format!("{}\n", line.trim_end_matches('\n')));
}

pub(crate) fn progress(line: &str) {
    eprintln!("[chaos] {line}");
}

/// Whether a Docker engine answers.
fn docker_answers() -> bool {
    std::process::Command::new("docker")
        .arg("info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs the chaos run; `Ok(true)` if every floor held.
pub(crate) async fn run_chaos(options: ChaosOptions) -> anyhow::Result<bool> {
    let seed = options.seed.unwrap_or_else(rand::random);
    let sse_clients = if options.quick { 40 } else { 200 };
    let netns = options.netns || (options.url.is_none() && !docker_answers());
    let cluster = if netns {
        "processes in network namespaces".to_string()
    } else {
        format!("compose project {}", options.project)
    };
    say(&format!(
        "chaos: seed {seed} (replay with --seed {seed}), {} s, {sse_clients} SSE clients, {cluster}",
        options.duration.as_secs(),
    ));
    let target = if netns {
        Target::Netns(NetnsCluster::start(&SCALE).await?)
    } else {
        let repo = options.repo.clone();
        Target::Compose(match &options.url {
            Some(url) => ComposeCluster::attach(&options.project, repo, url),
            None => ComposeCluster::up(&options.project, repo, &SCALE)?,
        })
    };
    let result = chaos_on(&options, &target, seed, sse_clients).await;
    match target {
        Target::Compose(cluster) => cluster.down(options.keep),
        Target::Netns(cluster) => cluster.down().await,
    }
    result
}

/// Waits until `/readyz` answers 200 three times in a row and the admin cluster table answers,
/// listing as many nodes as the cluster's scale, within `deadline`; returns how long it took.
async fn settle(http: &Http, admin: &str, deadline: Duration) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut streak = 0;
    while start.elapsed() < deadline {
        let ready = http.call(Method::GET, "/readyz", None, None, None).await;
        streak = if ready.status == 200 { streak + 1 } else { 0 };
        if streak >= 3 {
            let cluster = http
                .call(Method::GET, "/v1/admin/cluster", Some(admin), None, None)
                .await;
            if cluster.status == 200 && all_up(&cluster.body) {
                return Ok(start.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("the cluster did not settle within {deadline:?}")
}

/// Whether the admin cluster table lists every node of [`SCALE`] as `up` (or `self`): a killed
/// node's old incarnation may still be listed as down while its new one is up.
fn all_up(body: &Value) -> bool {
    let up = body
        .get("nodes")
        .and_then(Value::as_array)
        .map_or(0, |nodes| {
            nodes
                .iter()
                .filter(|n| matches!(n.get("state").and_then(Value::as_str), Some("up" | "self")))
                .filter_map(|n| n.get("name").and_then(Value::as_str))
                .collect::<std::collections::HashSet<_>>()
                .len()
        });
    let expected: usize = SCALE.iter().map(|(_, n)| n).sum();
    up >= expected
}

async fn chaos_on(
    options: &ChaosOptions,
    target: &Target,
    seed: u64,
    sse_clients: usize,
) -> anyhow::Result<bool> {
    let http = Http::new(match target {
        Target::Compose(cluster) => &cluster.base,
        Target::Netns(cluster) => &cluster.base,
    });
    // Ready, and the admin token.
    let start = Instant::now();
    while http
        .call(Method::GET, "/readyz", None, None, None)
        .await
        .status
        != 200
    {
        ensure!(
            start.elapsed() < Duration::from_secs(240),
            "/readyz not 200 within 240 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let admin = match target {
        Target::Compose(cluster) => cluster.admin_token()?,
        Target::Netns(cluster) => cluster.admin_token.clone(),
    };
    let settled = settle(&http, &admin, Duration::from_secs(120)).await?;
    progress(&format!("cluster up and settled in {settled:?} more"));

    // Users and rooms.
    let run_id = seed % 1_000_000;
    let mut tokens = Vec::new();
    for u in 0..USERS {
        let a = http
            .call(
                Method::POST,
                "/v1/auth/register",
                None,
                Some(&json!({"username": format!("chaos{run_id}u{u}"), "password": "correct horse battery"})),
                None,
            )
            .await;
        let token = a.body.get("token").and_then(Value::as_str);
        tokens.push(
            token
                .with_context(|| format!("register answered {}", a.status))?
                .to_string(),
        );
    }
    let mut rooms = Vec::new();
    for r in 0..ROOMS {
        let a = http
            .call(
                Method::POST,
                "/v1/rooms",
                Some(&tokens[0]),
                Some(&json!({"name": format!("chaos-{run_id}-{r}"), "topic": "chaos"})),
                None,
            )
            .await;
        let id = a.body.get("id").and_then(Value::as_i64);
        let id = id.with_context(|| format!("create room answered {}", a.status))?;
        for token in &tokens[1..] {
            let j = http
                .call(
                    Method::POST,
                    &format!("/v1/rooms/{id}/join"),
                    Some(token),
                    None,
                    None,
                )
                .await;
            ensure!((200..300).contains(&j.status), "join answered {}", j.status);
        }
        rooms.push(id);
    }

    // Load and faults. The log is read back from a little before the load starts.
    let since_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64
        - 1_000;
    let history = History::create(&options.history)?;
    let (stop_tx, stop) = watch::channel(false);
    let load = Load {
        http: http.clone(),
        tokens,
        admin: admin.clone(),
        rooms: rooms.clone(),
        history: history.clone(),
        stop,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..sse_clients {
        let room = rooms[c % rooms.len()];
        tasks.spawn(load.clone().sse_client(c, room, Duration::from_secs(5)));
    }
    for w in 0..WRITERS {
        tasks.spawn(load.clone().writer(w, Duration::from_millis(100)));
    }
    tasks.spawn(load.clone().reader());

    let schedule = faults::schedule(seed, options.duration);
    for fault in &schedule {
        say(&format!(
            "chaos: at {:>5.1} s {:<22} on {} #{} for {:.1} s",
            fault.at.as_secs_f64(),
            fault.kind.name(),
            fault.service,
            fault.replica,
            fault.hold.as_secs_f64()
        ));
    }
    let load_start = Instant::now();
    for fault in &schedule {
        if let Some(wait) = fault.at.checked_sub(load_start.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        progress(&format!("{} on {}", fault.kind.name(), fault.service));
        if let Err(error) = target.apply(fault, &history).await {
            progress(&format!("fault failed: {error:#}"));
        }
    }
    if let Some(rest) = options.duration.checked_sub(load_start.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    progress("faults healed; settling");
    let settle_result = settle(&http, &admin, Duration::from_secs(120)).await;
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}

    // Final state.
    let mut state = BTreeMap::new();
    for &room in &rooms {
        let mut messages = Vec::new();
        let mut after = 0i64;
        loop {
            let a = http
                .call(
                    Method::GET,
                    &format!("/v1/rooms/{room}/messages?after={after}&limit=100"),
                    Some(&load.tokens[0]),
                    None,
                    None,
                )
                .await;
            ensure!(a.status == 200, "listing room {room} answered {}", a.status);
            let page = a
                .body
                .get("messages")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if page.is_empty() {
                break;
            }
            for m in &page {
                messages.push(Stored {
                    id: m.get("id").and_then(Value::as_i64).unwrap_or(0),
                    seq: m.get("seq").and_then(Value::as_i64).unwrap_or(0),
                    body: m
                        .get("body")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    deleted: m.get("deleted").and_then(Value::as_bool).unwrap_or(false),
                });
            }
            let next = a
                .body
                .get("next_after")
                .and_then(Value::as_i64)
                .unwrap_or(after);
            if next <= after {
                break;
            }
            after = next;
        }
        state.insert(room, messages);
    }
    let records = history.records();
    let mut rows = checker::check(&records, &state);
    rows.insert(
        0,
        checker::Row::new(
            "cluster settled after the last fault",
            match &settle_result {
                Ok(d) => format!("in {:.1} s", d.as_secs_f64()),
                Err(e) => format!("{e:#}"),
            },
            "within 120 s",
            Some(settle_result.is_ok()),
        ),
    );
    rows.extend(followers::check(&http, &admin, &state, since_ms).await);
    let failures = faults_failed(&records);
    rows.push(checker::Row::new(
        "faults that could not be applied",
        failures,
        "reported",
        None,
    ));
    say(&render(&rows));
    say(&format!("chaos: history in {}", options.history.display()));
    let passed = rows.iter().filter(|r| r.pass == Some(true)).count();
    let failed = rows.iter().filter(|r| r.pass == Some(false)).count();
    say(&format!("chaos: {passed} passed, {failed} failed"));
    Ok(failed == 0)
}

fn faults_failed(records: &[Value]) -> usize {
    records
        .iter()
        .filter(|r| r.get("op").and_then(Value::as_str) == Some("fault_end"))
        .filter(|r| r.get("error").is_some_and(|e| !e.is_null()))
        .count()
}

/// The checker's table, aligned, in the bench's plain style.
fn render(rows: &[checker::Row]) -> String {
    let w0 = rows.iter().map(|r| r.check.len()).max().unwrap_or(0).max(5);
    let w1 = rows.iter().map(|r| r.value.len()).max().unwrap_or(0).max(5);
    let w2 = rows.iter().map(|r| r.floor.len()).max().unwrap_or(0).max(5);
    let mut out = format!(
        "\n{:<w0$}  {:<w1$}  {:<w2$}  result\n{}\n",
        "check",
        "value",
        "floor",
        "-".repeat(w0 + w1 + w2 + 12)
    );
    for r in rows {
        let result = match r.pass {
            Some(true) => "pass",
            Some(false) => "FAIL",
            None => "-",
        };
        out.push_str(&format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {result}\n",
            r.check, r.value, r.floor
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn netns_is_chosen_by_flag_and_cannot_attach_to_a_compose_stack() {
        let options = parse(&args(&["--netns", "--quick"])).unwrap();
        assert!(options.netns);
        assert_eq!(options.duration, Duration::from_secs(20));
        assert!(!parse(&args(&[])).unwrap().netns);
        let both = parse(&args(&["--netns", "--url", "http://127.0.0.1:8080"]));
        assert!(both.unwrap_err().to_string().contains("--url"));
    }
}
