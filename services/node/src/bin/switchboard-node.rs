//! `switchboard-node`: a node hosting any set of the applications, all five by default. The set
//! comes from `--apps` or `SWITCHBOARD_APPS`; the rest of the configuration from `SWITCHBOARD_*`
//! variables (see README.md); the cookie is required.

use clap::Parser;

/// A Switchboard node hosting any set of the applications.
#[derive(Debug, Parser)]
#[command(name = "switchboard-node", version)]
struct Args {
    /// Applications to run, comma-separated (database, log, reporting, analytics, http), or
    /// `all`. Defaults to SWITCHBOARD_APPS, then to all.
    #[arg(long)]
    apps: Option<String>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let selection = args
        .apps
        .or_else(|| std::env::var("SWITCHBOARD_APPS").ok())
        .filter(|apps| !apps.trim().is_empty())
        .unwrap_or_else(|| "all".into());
    switchboard_node::run(&selection).await
}
