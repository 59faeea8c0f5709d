//! `switchboard-analytics`: a node hosting the `analytics` application, i.e. `switchboard-node --apps analytics`.
//! Configuration comes from `SWITCHBOARD_*` variables (see README.md); the cookie is required.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    switchboard_node::run("analytics").await
}
