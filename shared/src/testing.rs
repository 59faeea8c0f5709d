//! Real node processes for tests, with no other binary to build: a test binary re-runs itself,
//! running one of its own `#[ignore]`d tests, which starts a node with [`child_main`]; the parent
//! holds a [`ChildNode`] it can kill with SIGKILL. Compiled only with the `testing` feature,
//! which the workspace's crates enable for their tests alone.

use std::future::Future;
use std::process::{Child, Command, Stdio};

use crate::config::NodeConfig;
use crate::cookie::Cookie;
use crate::error::NodeError;
use crate::node::Node;

/// Set in a child's environment; the ignored test returns at once without it.
pub const CHILD_MARKER: &str = "SWITCHBOARD_TEST_CHILD";

/// The body of the ignored test a child process runs: as a child, runs a node started by `start`
/// (exactly as a service binary's `main` does) until it is killed; otherwise returns at once.
pub async fn child_main<F, Fut>(start: F)
where
    F: FnOnce(NodeConfig, Cookie) -> Fut,
    Fut: Future<Output = Result<Node, NodeError>>,
{
    if std::env::var(CHILD_MARKER).is_err() {
        return;
    }
    crate::startup::run(start)
        .await
        .expect("the child node ran");
}

/// A node running in a child process; killed when dropped.
#[derive(Debug)]
pub struct ChildNode {
    child: Child,
}

impl ChildNode {
    /// Re-runs this test binary's ignored test `test` as node `name`, seeded with `seed`, with
    /// `cookie` and any further `SWITCHBOARD_*`/`DATABASE_URL` settings in `env`.
    pub fn spawn(test: &str, name: &str, seed: &str, cookie: &str, env: &[(&str, String)]) -> Self {
        let exe = std::env::current_exe().expect("the test binary's path");
        let child = Command::new(exe)
            .args([test, "--exact", "--ignored", "--nocapture"])
            .env(CHILD_MARKER, "1")
            .env("SWITCHBOARD_COOKIE", cookie)
            .env("SWITCHBOARD_NODE_NAME", name)
            .env("SWITCHBOARD_LISTEN", "127.0.0.1:0")
            .env("SWITCHBOARD_SEEDS", seed)
            .env("SWITCHBOARD_SEED_REFRESH_MS", "200")
            .env("RUST_LOG", "warn")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn a child node process");
        Self { child }
    }

    /// SIGKILL, and wait until it is gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildNode {
    fn drop(&mut self) {
        self.kill();
    }
}
