//! Talking to a running cluster as a hidden node: it authenticates with the cluster's cookie,
//! is served like any member, but is never gossiped or routed to (Erlang's hidden nodes).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use prost::Message;
use switchboard::handshake::HandshakeError;
use switchboard::{CallOptions, Cookie, Node, NodeBuilder, NodeConfig, NodeError, system};
use switchboard_proto::v1 as wire;

/// How to reach a running cluster.
#[derive(Debug, Args)]
pub(crate) struct RemoteArgs {
    /// Members' inter-node addresses, comma-separated; the first that answers is used. Default:
    /// every node `switchboard up` runs, from the data dir.
    #[arg(long)]
    seed: Option<String>,
    /// The cluster's data directory (for its cookie and seeds files).
    #[arg(long, default_value_os_t = crate::default_data_dir())]
    data_dir: PathBuf,
}

/// A connected hidden node and the name of the member it reached first.
pub(crate) struct Session {
    pub(crate) node: Node,
    pub(crate) seed: String,
}

/// The addresses to try: `--seed`, or every node `switchboard up` wrote to the data dir.
fn seeds(args: &RemoteArgs) -> Result<Vec<String>> {
    let text = match &args.seed {
        Some(seed) => seed.clone(),
        None => std::fs::read_to_string(args.data_dir.join(crate::supervisor::SEEDS_FILE))
            .context("no --seed given and no running `switchboard up` found in the data dir")?,
    };
    let seeds: Vec<String> = text
        .split([',', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if seeds.is_empty() {
        bail!("no member address to try");
    }
    Ok(seeds)
}

/// Connects to the first member of `seeds` that answers: any live member will do, as a running
/// cluster may have lost any one node.
pub(crate) async fn connect(args: &RemoteArgs) -> Result<Session> {
    let cookie = match Cookie::from_env() {
        Ok(cookie) => cookie,
        Err(_) => Cookie::from_file(&args.data_dir.join("cookie")).context(
            "no cookie: set SWITCHBOARD_COOKIE or SWITCHBOARD_COOKIE_FILE, or run where `switchboard up` keeps its data",
        )?,
    };
    let seeds = seeds(args)?;
    // A TLS cluster takes only TLS peers: the command uses the node settings' TLS files, as a
    // node on the same host would (`docker compose exec http switchboard nodes`).
    let settings = NodeConfig::from_env().context("reading the SWITCHBOARD_* settings")?;
    let config = NodeConfig {
        node_name: Some(format!("cli-{}@localhost", std::process::id())),
        tls_cert: settings.tls_cert,
        tls_key: settings.tls_key,
        tls_ca: settings.tls_ca,
        ..NodeConfig::loopback()
    };
    let node = NodeBuilder::new("cli", config, cookie)
        .hidden(true)
        .start()
        .await?;
    let mut unreachable = Vec::new();
    for seed in &seeds {
        match node.connect(seed).await {
            Ok(name) => return Ok(Session { node, seed: name }),
            Err(NodeError::Handshake(HandshakeError::BadProof)) => {
                bail!("{seed} refused the handshake: this cookie is not the cluster's")
            }
            Err(error) => unreachable.push(format!("{seed} ({error})")),
        }
    }
    bail!("cannot reach any member: {}", unreachable.join(", "))
}

pub(crate) async fn members(session: &Session) -> Result<Vec<wire::MemberInfo>> {
    let reply = session
        .node
        .call_on(
            &session.seed,
            system::SERVICE,
            "members",
            Vec::new(),
            CallOptions::default(),
        )
        .await?;
    Ok(wire::MembersReply::decode(reply)?.members)
}

/// `switchboard nodes`.
#[allow(clippy::print_stdout, reason = "a command's output is its job")]
pub(crate) async fn nodes(args: RemoteArgs) -> Result<()> {
    let session = connect(&args).await?;
    let members = members(&session).await?;
    println!(
        "{:<28} {:<22} {:<22} {:<26} GROUPS",
        "NODE", "ADDRESS", "STATE", "SERVICES"
    );
    for member in members {
        println!(
            "{:<28} {:<22} {:<22} {:<26} {}",
            member.name,
            member.address,
            member.state,
            member.services.join(","),
            member.groups.join(",")
        );
    }
    Ok(())
}

/// `switchboard ping <node>`.
#[allow(clippy::print_stdout, reason = "a command's output is its job")]
pub(crate) async fn ping(args: RemoteArgs, target: &str, count: u32) -> Result<()> {
    let session = connect(&args).await?;
    if target != session.seed {
        let member = members(&session)
            .await?
            .into_iter()
            .find(|m| m.name == target)
            .with_context(|| format!("{} does not know a node called {target}", session.seed))?;
        session.node.connect(&member.address).await?;
    }
    let payload = vec![0x5au8; 150];
    let mut samples = Vec::new();
    for _ in 0..count.max(1) {
        let started = Instant::now();
        let reply = session
            .node
            .call_on(
                target,
                system::SERVICE,
                "ping",
                payload.clone(),
                CallOptions::default(),
            )
            .await?;
        let elapsed = started.elapsed();
        if reply.as_ref() != payload.as_slice() {
            bail!("{target} answered the ping with different bytes");
        }
        println!(
            "reply from {target}: time={:.3} ms",
            elapsed.as_secs_f64() * 1e3
        );
        samples.push(elapsed);
    }
    let min = samples.iter().min().copied().unwrap_or_default();
    let max = samples.iter().max().copied().unwrap_or_default();
    let avg = samples.iter().sum::<Duration>() / samples.len() as u32;
    println!(
        "{} round trips: min {:.3} ms, avg {:.3} ms, max {:.3} ms",
        samples.len(),
        min.as_secs_f64() * 1e3,
        avg.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    );
    Ok(())
}

/// `switchboard call <service> <method> [payload]`.
#[allow(clippy::print_stdout, reason = "a command's output is its job")]
pub(crate) async fn call(
    args: RemoteArgs,
    service: &str,
    method: &str,
    payload: String,
) -> Result<()> {
    let session = connect(&args).await?;
    // Gossip from the seed dials the other members; wait until one provides the service.
    if !session
        .node
        .wait_for_service(service, Duration::from_secs(5))
        .await
    {
        bail!("no node provides the service {service}");
    }
    let reply = session
        .node
        .call(
            service,
            method.to_owned(),
            payload.into_bytes(),
            CallOptions::default(),
        )
        .await?;
    println!("{}", String::from_utf8_lossy(&reply));
    Ok(())
}

/// Which entries `switchboard logs` shows.
#[derive(Debug, Clone)]
pub(crate) struct LogFilter {
    /// Only this kind; empty for all.
    pub(crate) kind: String,
    /// Only this level or worse; empty for all.
    pub(crate) level: String,
}

/// `switchboard logs [-f]`. A hidden node receives no broadcasts, so following polls the log
/// service once a second for entries newer than the last one printed.
#[allow(clippy::print_stdout, reason = "a command's output is its job")]
pub(crate) async fn logs(
    args: RemoteArgs,
    filter: LogFilter,
    lines: u32,
    follow: bool,
) -> Result<()> {
    let session = connect(&args).await?;
    if !session
        .node
        .wait_for_service("log", Duration::from_secs(5))
        .await
    {
        bail!("no node provides the log service");
    }
    let mut since_ms = 0;
    // Entries at the boundary millisecond come back on the next poll; remember them to skip.
    let mut printed = std::collections::HashMap::new();
    loop {
        let query = wire::LogQuery {
            kind: filter.kind.clone(),
            level: filter.level.to_ascii_uppercase(),
            since_ms,
            limit: if since_ms == 0 {
                lines.clamp(1, 1000)
            } else {
                1000
            },
            ..Default::default()
        };
        let page: wire::LogPage = session
            .node
            .call_message("log", "query", &query, CallOptions::idempotent())
            .await?;
        for entry in page.entries.iter().rev() {
            if printed.insert(entry.id.clone(), entry.at_ms).is_some() {
                continue;
            }
            since_ms = since_ms.max(entry.at_ms);
            let at = std::time::UNIX_EPOCH + Duration::from_millis(entry.at_ms.max(0) as u64);
            println!(
                "{} {:<5} {:<22} {:<16} {} {}",
                humantime::format_rfc3339_millis(at),
                entry.level,
                entry.node,
                entry.kind,
                entry.message,
                entry.fields_json
            );
        }
        if !follow {
            return Ok(());
        }
        printed.retain(|_, at| *at >= since_ms);
        if since_ms == 0 {
            // Nothing yet: follow from now on.
            since_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = switchboard::signal::terminated() => return Ok(()),
        }
    }
}
