//! `switchboard-bench`: measures the Switchboard runtime between two OS processes on loopback,
//! side by side with plain tonic and JSON/HTTP baselines built into the same binary, and prints
//! one table (optionally also written as Markdown).
//!
//! The bench process is always the client. Every server is a separate process: the bench
//! re-executes itself with a hidden `serve-*` subcommand (or, with `--testnode`, runs the
//! `switchboard-testnode` binary found next to it), so that client and server each get exactly
//! the tokio worker count the table header states.
//!
//! Layout: [`cli`] parses arguments; the scenario families, listed in [`cli::Family`], are
//! [`runtime`] (remote, cast and local calls against the baselines in [`baseline`]),
//! [`failover`] (a provider killed or hung under load), [`hol`] (small calls beside 1 MiB
//! transfers), [`erlang`] (the runtime's shapes against two Erlang nodes), [`footprint`] (idle
//! memory of the service binaries), [`chat`] (the chat's node binaries on PostgreSQL against
//! raw inserts, and SSE delivery), [`fanout`] (small calls beside casts to a group at full
//! rate), [`cluster`] (membership and failure detection from 5 to 128 nodes) and [`codec`] (the
//! hand-written batch codec against prost), and [`chaos`] (a compose cluster, or processes in
//! network namespaces, under load and faults, its history checked afterwards); [`echo_node`]
//! is the Switchboard server they call and the client side they share (cluster set-up, calls,
//! one-way casts); [`points`] measures a family's points in turn;
//! [`load`] drives closed- and open-loop load; [`stats`] turns samples into rates, percentiles
//! and checks; [`table`] renders the report; [`server_process`] starts, faults and stops the
//! server processes; and [`placement`] pins client and servers to disjoint CPUs.

mod baseline;
mod chaos;
mod chat;
mod cli;
mod cluster;
mod codec;
mod echo_node;
mod erlang;
mod failover;
mod fanout;
mod footprint;
mod hol;
mod load;
mod placement;
mod points;
mod runtime;
mod server_process;
mod stats;
mod table;

use anyhow::{Context, ensure};

use crate::cli::{Command, Family, RunOptions, ServerKind};
use crate::placement::Placement;
use crate::table::Report;

/// Logs warnings and errors (or what `RUST_LOG` asks for) to stderr, stdout being the report's.
///
/// The bench's nodes and servers then run as a node binary does, under a subscriber whose
/// level lets tracing skip the libraries' trace spans and events where they are written. With
/// no subscriber at all, each of them would be turned into a `log` record instead (sqlx turns on
/// tracing's `log` feature), a cost no deployed node pays.
fn log_to_stderr() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .init();
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = cli::parse(&args);
    // A cluster member's log is its report: JSON lines on stdout, read by the bench that
    // started it (see `cluster::serve_member`).
    if !matches!(
        command,
        Ok(Command::Serve {
            kind: ServerKind::ClusterNode,
            ..
        })
    ) {
        log_to_stderr();
    }
    match command? {
        Command::Help => {
            table::write_stdout(cli::USAGE)?;
            Ok(())
        }
        Command::Serve { kind, workers } => {
            server_process::exit_when_parent_goes();
            runtime_with(workers)?.block_on(async move {
                match kind {
                    ServerKind::Node => echo_node::serve().await,
                    ServerKind::Tonic => baseline::tonic_echo::serve().await,
                    ServerKind::JsonHttp => baseline::json_http::serve().await,
                    ServerKind::ClusterNode => cluster::serve_member().await,
                }
            })
        }
        Command::Chaos(options) => {
            let passed = runtime_with(2)?.block_on(chaos::run_chaos(*options))?;
            if !passed {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Run {
            families,
            mut options,
        } => {
            // Before the runtime exists, so every thread it starts inherits the placement.
            options.placement = if options.pin {
                Placement::plan(options.client_workers, options.server_workers).pin_self()
            } else {
                Placement::Unpinned("--no-pin".into())
            };
            let report =
                runtime_with(options.client_workers)?.block_on(run(&families, &options))?;
            table::write_stdout(&report.render_text())?;
            if let Some(path) = &options.markdown {
                std::fs::write(path, report.render_markdown())
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(())
        }
    }
}

/// A multi-threaded tokio runtime with exactly `workers` worker threads: the bench sets every
/// process's worker count deliberately, because on a small machine it decides the results.
fn runtime_with(workers: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_all()
        .build()
        .context("building the tokio runtime")
}

/// Runs the chosen scenario families in order and collects their sections. A family none of
/// whose points `--only` selects reports nothing.
async fn run(families: &[Family], options: &RunOptions) -> anyhow::Result<Report> {
    let mut report = Report::new(options);
    for family in families {
        let section = match family {
            Family::Runtime => runtime::run(options).await?,
            Family::Failover => failover::run(options).await?,
            Family::Hol => hol::run(options).await?,
            Family::Erlang => erlang::run(options).await?,
            Family::Footprint => footprint::run(options).await?,
            Family::Chat => chat::run(options).await?,
            Family::Fanout => fanout::run(options).await?,
            Family::Cluster => cluster::run(options).await?,
            Family::Codec => codec::run(options).await?,
        };
        report.sections.extend(section);
    }
    ensure!(
        !report.sections.is_empty(),
        "--only matched no point of the chosen scenario families"
    );
    Ok(report)
}
