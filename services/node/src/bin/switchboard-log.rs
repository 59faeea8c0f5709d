//! `switchboard-log`: a node hosting the `log` application, i.e. `switchboard-node --apps log`.
//! Configuration comes from `SWITCHBOARD_*` variables (see README.md); the cookie is required.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    switchboard_node::run("log").await
}
