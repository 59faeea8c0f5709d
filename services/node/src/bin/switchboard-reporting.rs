//! `switchboard-reporting`: a node hosting the `reporting` application, i.e. `switchboard-node --apps reporting`.
//! Configuration comes from `SWITCHBOARD_*` variables (see README.md); the cookie is required.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    switchboard_node::run("reporting").await
}
