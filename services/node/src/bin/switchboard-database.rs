//! `switchboard-database`: a node hosting the `database` application, i.e. `switchboard-node --apps database`.
//! Configuration comes from `SWITCHBOARD_*` variables (see README.md); the cookie is required.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    switchboard_node::run("database").await
}
