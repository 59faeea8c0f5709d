//! `switchboard-reporting`: a node hosting the `reporting` service. Configuration comes from
//! `SWITCHBOARD_*` variables (see README.md); the cookie is required.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    switchboard::startup::exit_code(switchboard::startup::run(switchboard_reporting::start).await)
}
