//! The Switchboard side of the runtime scenarios: an `echo` service and an `echo` process group
//! that behave exactly as `switchboard-testnode`'s (reply `<node name>|<payload>`; method
//! `received` answers how many group messages arrived), served by the hidden `serve-node`
//! subcommand, and reused in-process as the provider of the local-call scenario.
//!
//! The bench re-executes itself for this rather than requiring `switchboard-testnode`, because
//! `cargo run -p switchboard-bench` builds only the bench: a separately built testnode could be
//! stale, or from another build of the runtime than the client's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{BufMut, Bytes, BytesMut};
use switchboard::{Cookie, NodeBuilder, NodeConfig, Request, Service, ServiceError};

use crate::server_process::announce;

/// The service and group the runtime scenarios use, as the testnode names them.
pub(crate) const ECHO: &str = "echo";

/// The node name of a `serve-node` server.
pub(crate) const SERVER_NAME: &str = "bench-server";

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
/// The cookie comes from `SWITCHBOARD_COOKIE`, set by the bench that started it.
pub(crate) async fn serve() -> anyhow::Result<()> {
    let cookie = Cookie::from_env()?;
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let config = NodeConfig {
        node_name: Some(SERVER_NAME.to_owned()),
        ..NodeConfig::loopback()
    };
    let node = NodeBuilder::new(SERVER_NAME, config, cookie)
        .service(ECHO, service(SERVER_NAME, received))
        .group(ECHO, move |_message: Request| {
            counter.fetch_add(1, Ordering::Relaxed);
        })
        .start()
        .await?;
    announce(node.address());
    node.run_until_signal().await;
    Ok(())
}
