//! The front door of the cluster in network namespaces, in place of compose's HAProxy: a TCP
//! balancer on a loopback port that spreads connections round-robin over the http nodes it finds
//! healthy, with HAProxy's settings from deploy/docker/haproxy/haproxy.cfg. A node is taken out
//! after two failed `/healthz` checks (1 s apart, 1 s timeout each) and back in after one good
//! one; a connection that cannot be made within 1 s is tried on the next node, up to 3 nodes.
//!
//! It balances connections, not requests: a kept-alive connection stays on its node until either
//! end closes it. The chaos run's clients give up on a request after a timeout and reconnect,
//! which is what a client behind a TCP balancer does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use hyper::Method;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::load::Http;

/// How long a connection to a node, or a health check, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Failed checks in a row that take a node out.
const FALL: u32 = 2;
/// Nodes a connection is tried on before the client's connection is closed.
const TRIES: usize = 3;

/// A running balancer; stops when dropped.
pub(crate) struct Balancer {
    /// Where clients connect.
    pub(crate) address: SocketAddr,
    _tasks: JoinSet<()>,
}

/// The nodes and what the health checks last saw of each.
struct Nodes {
    addresses: Vec<SocketAddr>,
    failed_checks: Vec<AtomicU32>,
    next: AtomicUsize,
}

impl Nodes {
    fn up(&self, i: usize) -> bool {
        self.failed_checks[i].load(Ordering::Relaxed) < FALL
    }

    /// The nodes to try for a new connection: those up, from the next in turn, then the rest
    /// (with every node out, trying them beats refusing at once).
    fn order(&self) -> Vec<SocketAddr> {
        let n = self.addresses.len();
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        let turn: Vec<usize> = (0..n).map(|k| (first + k) % n).collect();
        let up = turn.iter().copied().filter(|&i| self.up(i));
        let down = turn.iter().copied().filter(|&i| !self.up(i));
        up.chain(down).map(|i| self.addresses[i]).collect()
    }
}

impl Balancer {
    /// Listens on a free loopback port and balances over the http nodes at `nodes` (each an
    /// API address).
    pub(crate) async fn start(nodes: Vec<SocketAddr>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let nodes = Arc::new(Nodes {
            failed_checks: nodes.iter().map(|_| AtomicU32::new(0)).collect(),
            addresses: nodes,
            next: AtomicUsize::new(0),
        });
        let mut tasks = JoinSet::new();
        for i in 0..nodes.addresses.len() {
            tasks.spawn(check(nodes.clone(), i));
        }
        tasks.spawn(accept(listener, nodes));
        Ok(Self {
            address,
            _tasks: tasks,
        })
    }
}

/// Checks node `i`'s `/healthz` every second.
async fn check(nodes: Arc<Nodes>, i: usize) {
    let http = Http::new(&format!("http://{}", nodes.addresses[i]));
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let healthy = tokio::time::timeout(
            CONNECT_TIMEOUT,
            http.call(Method::GET, "/healthz", None, None, None),
        )
        .await
        .is_ok_and(|answer| answer.status == 200);
        if healthy {
            nodes.failed_checks[i].store(0, Ordering::Relaxed);
        } else {
            nodes.failed_checks[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn accept(listener: TcpListener, nodes: Arc<Nodes>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((client, _)) = accepted {
                    connections.spawn(proxy(client, nodes.clone()));
                }
            }
            // Reap finished connections so the set does not grow for the whole run.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Connects `client` to the first node of [`Nodes::order`] that answers, and copies both ways
/// until either end closes.
async fn proxy(mut client: TcpStream, nodes: Arc<Nodes>) {
    for address in nodes.order().into_iter().take(TRIES) {
        if let Ok(Ok(mut node)) =
            tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await
        {
            let _ = client.set_nodelay(true);
            let _ = node.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut node).await;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_take_turns_over_the_nodes_up_and_fall_back_to_those_out() {
        let addresses: Vec<SocketAddr> = (1..=3)
            .map(|p| format!("10.0.0.{p}:8080").parse().unwrap())
            .collect();
        let nodes = Nodes {
            failed_checks: addresses.iter().map(|_| AtomicU32::new(0)).collect(),
            addresses: addresses.clone(),
            next: AtomicUsize::new(0),
        };
        let firsts: Vec<SocketAddr> = (0..3).map(|_| nodes.order()[0]).collect();
        assert_eq!(firsts, addresses);
        // One failed check leaves a node in; two take it out, to the end of the order.
        nodes.failed_checks[1].store(1, Ordering::Relaxed);
        assert!(nodes.up(1));
        nodes.failed_checks[1].store(FALL, Ordering::Relaxed);
        for _ in 0..3 {
            let order = nodes.order();
            assert_eq!(order.len(), 3);
            assert_eq!(order[2], addresses[1]);
        }
    }
}
