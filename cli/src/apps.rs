//! `switchboard apps` and `switchboard app start|stop`: which node runs which application, and
//! moving applications between nodes at run time. Each is a call to the built-in
//! `switchboard.node` service of the node concerned, over the inter-node protocol, so only
//! cookie holders can do it (see `shared/src/application.rs`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use prost::Message;
use switchboard::{CallOptions, system};
use switchboard_proto::v1 as wire;

use crate::remote::{self, RemoteArgs, Session};

/// Stopping waits for in-flight calls within the node's grace period (10 s by default).
const CONTROL_TIMEOUT: Duration = Duration::from_secs(60);

/// `switchboard app ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum AppCommand {
    /// Starts an application on a node (nothing happens if it already runs there).
    Start {
        /// The application: database, log, reporting, analytics or http.
        app: String,
        /// The node, as `switchboard nodes` names it.
        #[arg(long)]
        on: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Stops an application on a node: it stops advertising, drains its in-flight calls, then
    /// stops its tasks. Refused when that node is the last provider of its service.
    Stop {
        /// The application.
        app: String,
        /// The node, as `switchboard nodes` names it.
        #[arg(long)]
        on: String,
        /// Stop it even when no other node provides its service.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

/// The applications of every reachable node that is up.
async fn everywhere(session: &Session) -> Result<Vec<(String, Result<Vec<wire::AppInfo>>)>> {
    let mut rows = Vec::new();
    for member in remote::members(session).await? {
        if member.state != "self" && member.state != "up" {
            continue;
        }
        let apps = apps_of(session, &member).await;
        rows.push((member.name, apps));
    }
    Ok(rows)
}

async fn apps_of(session: &Session, member: &wire::MemberInfo) -> Result<Vec<wire::AppInfo>> {
    if member.name != session.seed {
        session.node.connect(&member.address).await?;
    }
    let reply = session
        .node
        .call_on(
            &member.name,
            system::SERVICE,
            "apps",
            Vec::new(),
            CallOptions::default(),
        )
        .await?;
    Ok(wire::AppsReply::decode(reply)?.apps)
}

/// `switchboard apps`: one row per node and application that is not simply stopped.
#[allow(clippy::print_stdout, reason = "a command's output is its job")]
pub(crate) async fn list(args: RemoteArgs) -> Result<()> {
    let session = remote::connect(&args).await?;
    println!(
        "{:<28} {:<10} {:<9} {:<26} {:<8} SERVICES",
        "NODE", "APP", "STATE", "SINCE", "RESTARTS"
    );
    for (node, apps) in everywhere(&session).await? {
        match apps {
            Ok(apps) => {
                for app in apps.iter().filter(|a| a.state != "stopped") {
                    println!(
                        "{:<28} {:<10} {:<9} {:<26} {:<8} {}",
                        node,
                        app.name,
                        app.state,
                        since(app.since_ms),
                        app.restarts,
                        app.services.join(",")
                    );
                }
            }
            Err(error) => println!("{node:<28} (unreachable: {error:#})"),
        }
    }
    Ok(())
}

/// `switchboard app start|stop`.
#[allow(clippy::print_stdout, reason = "a command's output is its job")]
pub(crate) async fn control(command: AppCommand) -> Result<()> {
    let (method, app, on, force, remote_args) = match command {
        AppCommand::Start { app, on, remote } => ("app_start", app, on, false, remote),
        AppCommand::Stop {
            app,
            on,
            force,
            remote,
        } => ("app_stop", app, on, force, remote),
    };
    let session = remote::connect(&remote_args).await?;
    let member = remote::members(&session)
        .await?
        .into_iter()
        .find(|m| m.name == on)
        .with_context(|| format!("{} does not know a node called {on}", session.seed))?;
    if member.name != session.seed {
        session.node.connect(&member.address).await?;
    }
    let request = wire::AppControl {
        app: app.clone(),
        force,
    };
    let reply = session
        .node
        .call_on(
            &on,
            system::SERVICE,
            method,
            request.encode_to_vec(),
            CallOptions::default().timeout(CONTROL_TIMEOUT),
        )
        .await?;
    let apps = wire::AppsReply::decode(reply)?.apps;
    let Some(state) = apps.iter().find(|a| a.name == app) else {
        bail!("{on} did not report {app}");
    };
    println!("{app} on {on}: {}", state.state);
    Ok(())
}

/// When an application started, and how long ago.
fn since(since_ms: i64) -> String {
    if since_ms <= 0 {
        return "-".into();
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let seconds = ((now - since_ms) / 1000).max(0);
    let ago = match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m", seconds / 60),
        _ => format!("{}h{}m", seconds / 3600, seconds % 3600 / 60),
    };
    format!("{ago} ago")
}
