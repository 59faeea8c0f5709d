//! `switchboard`: the operator's command. `up` runs a whole cluster on this machine as separate
//! OS processes (one node per service, each its own binary); `nodes`, `ping` and `call` talk to a
//! running cluster as a hidden node (`logs` tails its activity log), the way Erlang's remote shell does.

mod apps;
mod remote;
mod secrets;
mod supervisor;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Switchboard: a chat system built the way Erlang builds distributed systems.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the whole cluster on this machine (SQLite), until Ctrl-C.
    Up(supervisor::UpArgs),
    /// Lists the members a running cluster knows, with their services and state.
    Nodes(remote::RemoteArgs),
    /// Measures round trips to one node of a running cluster.
    Ping {
        /// The node's name, as `switchboard nodes` shows it.
        node: String,
        /// How many round trips.
        #[arg(long, default_value_t = 5)]
        count: u32,
        #[command(flatten)]
        remote: remote::RemoteArgs,
    },
    /// Prints the cluster's activity log (newest last); `-f` keeps following it.
    Logs {
        /// Keep printing new entries as they are committed.
        #[arg(short, long)]
        follow: bool,
        /// How many recent entries to print first.
        #[arg(short = 'n', long, default_value_t = 50)]
        lines: u32,
        /// Only entries of this kind (e.g. `node_down`, `message_posted`).
        #[arg(long)]
        kind: Option<String>,
        /// Only this level or worse (`error`, `warn`, `info`).
        #[arg(long)]
        level: Option<String>,
        #[command(flatten)]
        remote: remote::RemoteArgs,
    },
    /// Calls a method of a service on a running cluster and prints the reply.
    Call {
        /// The service, e.g. `database`.
        service: String,
        /// The method.
        method: String,
        /// The payload, sent as UTF-8 bytes.
        #[arg(default_value = "")]
        payload: String,
        #[command(flatten)]
        remote: remote::RemoteArgs,
    },
    /// Lists which node runs which application, since when.
    Apps(remote::RemoteArgs),
    /// Starts or stops an application on a node at run time.
    #[command(subcommand)]
    App(apps::AppCommand),
    /// Prints the admin token (SWITCHBOARD_ADMIN_TOKEN, SWITCHBOARD_ADMIN_TOKEN_FILE or
    /// ./switchboard-data/admin-token).
    AdminToken,
    /// Manages the cluster's secret files (`secrets init` for containers).
    Secrets(secrets::SecretsArgs),
}

/// Where `up` keeps the cluster's files, and where the other commands look for its cookie.
fn default_data_dir() -> PathBuf {
    PathBuf::from("./switchboard-data")
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(args) => supervisor::up(args).await,
        Command::Nodes(remote) => remote::nodes(remote).await,
        Command::Ping {
            node,
            count,
            remote,
        } => remote::ping(remote, &node, count).await,
        Command::Logs {
            follow,
            lines,
            kind,
            level,
            remote,
        } => {
            let filter = remote::LogFilter {
                kind: kind.unwrap_or_default(),
                level: level.unwrap_or_default(),
            };
            remote::logs(remote, filter, lines, follow).await
        }
        Command::Call {
            service,
            method,
            payload,
            remote,
        } => remote::call(remote, &service, &method, payload).await,
        Command::Apps(remote) => apps::list(remote).await,
        Command::App(command) => apps::control(command).await,
        Command::AdminToken => secrets::print_admin_token(),
        Command::Secrets(args) => secrets::secrets(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("switchboard: {error:#}");
            ExitCode::FAILURE
        }
    }
}
