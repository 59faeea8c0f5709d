//! The Switchboard side of the scenarios: an `echo` service and an `echo` process group that
//! behave exactly as `switchboard-testnode`'s (reply `<node name>|<payload>`; method `received`
//! answers how many group messages arrived), served by the hidden `serve-node` subcommand and
//! reused in-process as the provider of the local-call scenario; and the pieces every family
//! needs to stand a cluster up around them: starting server nodes, the bench's own client node
//! linked to them, payloads, and the call itself.
//!
//! The bench re-executes itself for this rather than requiring `switchboard-testnode`, because
//! `cargo run -p switchboard-bench` builds only the bench: a separately built testnode could be
//! stale, or from another build of the runtime than the client's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, ensure};
use bytes::{BufMut, Bytes, BytesMut};
use rand::Rng;
use switchboard::{
    CallOptions, Cookie, Node, NodeBuilder, NodeConfig, Request, Service, ServiceError,
};

use crate::cli::{RunOptions, ServerKind};
use crate::server_process::{ServerProcess, announce};

/// The service and group the runtime scenarios use, as the testnode names them.
pub(crate) const ECHO: &str = "echo";

/// The node name of a `serve-node` server unless `SWITCHBOARD_NODE_NAME` names it otherwise
/// (the failover scenarios run two, which must be told apart).
pub(crate) const SERVER_NAME: &str = "bench-server";

/// The payload of every small call, in bytes.
pub(crate) const PAYLOAD_BYTES: usize = 150;

/// The node name of the bench's own node, the client of every remote scenario.
const CLIENT_NAME: &str = "bench-client";

/// How long a server node may take to advertise `echo` once linked.
const ADVERTISE_TIMEOUT: Duration = Duration::from_secs(10);

/// An `echo` service answering `<name>|<payload>`, and `received` with the count in `received`.
pub(crate) fn service(name: &str, received: Arc<AtomicU64>) -> impl Service {
    let prefix = Bytes::from(format!("{name}|"));
    move |request: Request| {
        let prefix = prefix.clone();
        let received = received.clone();
        async move {
            match &*request.method {
                "received" => Ok(Bytes::from(received.load(Ordering::Relaxed).to_string())),
                "fail" => Err(ServiceError::new(
                    "asked_to_fail",
                    "the caller asked for an error",
                )),
                _ => {
                    let mut reply = BytesMut::with_capacity(prefix.len() + request.payload.len());
                    reply.put_slice(&prefix);
                    reply.put_slice(&request.payload);
                    Ok(reply.freeze())
                }
            }
        }
    }
}

/// `serve-node`: a node on a loopback port hosting `echo` and joining group `echo`, until killed.
/// The cookie comes from `SWITCHBOARD_COOKIE` and the name from `SWITCHBOARD_NODE_NAME` (default
/// [`SERVER_NAME`]), both set by the bench that started it, as for `switchboard-testnode`.
pub(crate) async fn serve() -> anyhow::Result<()> {
    let cookie = Cookie::from_env()?;
    let name = std::env::var("SWITCHBOARD_NODE_NAME").unwrap_or_else(|_| SERVER_NAME.to_owned());
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let config = NodeConfig {
        node_name: Some(name.clone()),
        ..NodeConfig::loopback()
    };
    let node = NodeBuilder::new(name.as_str(), config, cookie)
        .service(ECHO, service(&name, received))
        .group(ECHO, move |_message: Request| {
            counter.fetch_add(1, Ordering::Relaxed);
        })
        .start()
        .await?;
    announce(node.address());
    node.run_until_signal().await;
    Ok(())
}

/// Starts server node `name` in a process of its own: the bench re-executed as `serve-node`, or
/// `switchboard-testnode` under `--testnode`.
pub(crate) fn start_server(
    options: &RunOptions,
    name: &str,
    cookie: &str,
) -> anyhow::Result<ServerProcess> {
    if options.testnode {
        ServerProcess::testnode(name, cookie, options)
    } else {
        ServerProcess::bench(
            ServerKind::Node,
            options,
            &[
                ("SWITCHBOARD_COOKIE", cookie),
                ("SWITCHBOARD_NODE_NAME", name),
            ],
        )
    }
}

/// What a family's notes say about the server nodes.
pub(crate) fn server_description(options: &RunOptions) -> &'static str {
    if options.testnode {
        "switchboard-testnode (next to the bench executable)"
    } else {
        "the bench re-executed as `serve-node` (same echo service and group as switchboard-testnode)"
    }
}

/// The bench's own node, in the bench process, linked to every server of `servers`, returned
/// once some node provides `echo`.
pub(crate) async fn client_node(cookie: &str, servers: &[&ServerProcess]) -> anyhow::Result<Node> {
    let config = NodeConfig {
        node_name: Some(CLIENT_NAME.into()),
        ..NodeConfig::loopback()
    };
    let node = NodeBuilder::new(CLIENT_NAME, config, Cookie::new(cookie)?)
        .start()
        .await?;
    for server in servers {
        node.connect(&server.address)
            .await
            .with_context(|| format!("connecting the bench node to {}", server.address))?;
    }
    ensure!(
        node.wait_for_service(ECHO, ADVERTISE_TIMEOUT).await,
        "no server node advertised `{ECHO}`"
    );
    Ok(node)
}

/// A fresh cookie, so that each scenario's nodes form a cluster of their own.
pub(crate) fn fresh_cookie() -> String {
    format!("bench-{:032x}", rand::rng().random::<u128>())
}

/// `len` printable bytes, so the same payload is also a valid JSON string.
pub(crate) fn payload(len: usize) -> Bytes {
    let pattern = b"switchboard-bench payload 0123456789 ";
    Bytes::from(
        pattern
            .iter()
            .cycle()
            .take(len)
            .copied()
            .collect::<Vec<u8>>(),
    )
}

/// One call to `echo`; checks the reply carries the payload and returns it.
pub(crate) async fn call(
    node: &Node,
    payload: Bytes,
    options: CallOptions,
) -> anyhow::Result<Bytes> {
    let reply = node.call(ECHO, "echo", payload.clone(), options).await?;
    ensure!(reply.ends_with(&payload), "a wrong echo");
    Ok(reply)
}

/// One call to `echo` with default options, for a load loop: it takes its node and payload by
/// value so that a loop's closure can hand it clones.
pub(crate) async fn echo_once(node: Node, payload: Bytes) -> anyhow::Result<()> {
    call(&node, payload, CallOptions::default()).await?;
    Ok(())
}

/// The name of the node that served an echo reply (`<node name>|<payload>`).
pub(crate) fn served_by(reply: &[u8]) -> Option<&str> {
    let bar = reply.iter().position(|&b| b == b'|')?;
    std::str::from_utf8(&reply[..bar]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_name_their_server() {
        assert_eq!(
            served_by(b"bench-provider-a|hello|world"),
            Some("bench-provider-a")
        );
        assert_eq!(served_by(b"no separator"), None);
        assert_eq!(payload(40).len(), 40);
        assert!(payload(40).starts_with(b"switchboard-bench payload"));
    }
}
