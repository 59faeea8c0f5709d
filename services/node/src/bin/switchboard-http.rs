//! `switchboard-http`: a node hosting the `http` application, i.e. `switchboard-node --apps http`.
//! Configuration comes from `SWITCHBOARD_*` variables (see README.md); the cookie is required.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    switchboard_node::run("http").await
}
