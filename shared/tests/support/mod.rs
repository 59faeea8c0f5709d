//! Helpers shared by the runtime's integration tests: nodes on port 0 in this process, and real
//! node processes (`switchboard-testnode`) that can be killed, stopped and resumed.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use switchboard::{Bytes, Cookie, Node, NodeBuilder, NodeConfig, Request, ServiceError};

pub const COOKIE: &str = "integration-test-cookie-0123456789";

pub fn cookie() -> Cookie {
    Cookie::new(COOKIE).unwrap()
}

/// Loopback, port 0, fast discovery.
pub fn config(name: &str, seeds: &[&str]) -> NodeConfig {
    NodeConfig {
        node_name: Some(name.to_owned()),
        seeds: seeds.iter().map(|s| s.to_string()).collect(),
        seed_refresh_ms: 200,
        ..NodeConfig::loopback()
    }
}

/// An `echo` service answering `<node>|<payload>`, or an error for method `fail`.
pub fn echo(name: &str) -> impl switchboard::Service {
    let prefix = format!("{name}|");
    move |request: Request| {
        let prefix = prefix.clone();
        async move {
            if request.method == "fail" {
                return Err(ServiceError::new(
                    "asked_to_fail",
                    "the caller asked for an error",
                ));
            }
            let mut reply = prefix.into_bytes();
            reply.extend_from_slice(&request.payload);
            Ok(Bytes::from(reply))
        }
    }
}

/// A node in this process hosting `echo`.
pub async fn echo_node(name: &str, seeds: &[&str]) -> Node {
    NodeBuilder::new("test", config(name, seeds), cookie())
        .service("echo", echo(name))
        .start()
        .await
        .unwrap()
}

/// A node in this process hosting nothing.
pub async fn bare_node(name: &str, seeds: &[&str]) -> Node {
    NodeBuilder::new("test", config(name, seeds), cookie())
        .start()
        .await
        .unwrap()
}

/// Whether `node` sees every name in `names` up.
pub fn sees_up(node: &Node, names: &[&str]) -> bool {
    let nodes = node.nodes();
    names.iter().all(|name| {
        nodes
            .iter()
            .any(|n| n.name == *name && n.state == switchboard::PeerState::Up)
    })
}

/// A `switchboard-testnode` OS process.
pub struct Process {
    pub child: Child,
    pub name: String,
    pub address: String,
    /// Every line the process wrote to stderr so far.
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl Process {
    pub fn spawn(name: &str, seeds: &[&str]) -> Process {
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard-testnode"))
            .env("SWITCHBOARD_NODE_NAME", name)
            .env("SWITCHBOARD_LISTEN", "127.0.0.1:0")
            .env("SWITCHBOARD_SEEDS", seeds.join(","))
            .env("SWITCHBOARD_SEED_REFRESH_MS", "200")
            .env("SWITCHBOARD_COOKIE", COOKIE)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn switchboard-testnode");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let seen = lines.clone();
        std::thread::spawn(move || {
            // Keep draining so the child never blocks on a full pipe.
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(address) = line.strip_prefix("LISTENING ") {
                    let _ = tx.send(address.to_owned());
                }
                seen.lock().unwrap().push(line);
            }
        });
        let address = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("testnode reports its address");
        Process {
            child,
            name: name.to_owned(),
            address,
            lines,
        }
    }

    /// Whether the process has written a line starting with `prefix`.
    pub fn said(&self, prefix: &str) -> bool {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with(prefix))
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn kill9(&mut self) {
        self.signal("KILL");
        let _ = self.child.wait();
    }

    pub fn stop(&self) {
        self.signal("STOP");
    }

    pub fn resume(&self) {
        self.signal("CONT");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
