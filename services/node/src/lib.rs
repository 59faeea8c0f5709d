//! The node binaries. `switchboard-node` hosts any set of the five applications
//! (`--apps log,reporting`, `SWITCHBOARD_APPS`, or all of them by default); `switchboard-http`,
//! `switchboard-database`, `switchboard-log`, `switchboard-reporting` and
//! `switchboard-analytics` are the same program with one application fixed. Every one of them
//! carries the whole catalog, so an operator can start any application on any node at run time
//! (`switchboard app start reporting --on analytics@host`).

use std::sync::Arc;

use switchboard::application::SharedApplication;

/// Every application, in start order: storage first, the front door last, so that a node
/// hosting several opens its API once what the API calls is up.
pub fn catalog() -> Vec<SharedApplication> {
    vec![
        Arc::new(switchboard_database::DatabaseApp::default()),
        Arc::new(switchboard_log::LogApp),
        Arc::new(switchboard_reporting::ReportingApp::default()),
        Arc::new(switchboard_analytics::AnalyticsApp::default()),
        Arc::new(switchboard_http::HttpApp::default()),
    ]
}

/// Runs a node hosting `selection` of the catalog until SIGTERM or Ctrl-C, and gives the process
/// exit code.
pub async fn run(selection: &str) -> std::process::ExitCode {
    switchboard::startup::exit_code(
        switchboard::startup::run_applications(catalog(), selection).await,
    )
}
