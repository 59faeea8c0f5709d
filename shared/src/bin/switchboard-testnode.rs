//! A node that hosts an `echo` service and joins the `echo` process group: the stand-in peer for
//! the runtime's multi-process tests and for `switchboard-bench`. `echo` answers
//! `<node name>|<payload>`, so a caller can tell which provider served it; its method `plain`
//! answers with the payload alone, the work a baseline's echo does.
//!
//! Configured like every node (`SWITCHBOARD_*`); `SWITCHBOARD_TESTNODE_WORKERS` sets its tokio
//! worker count so benchmarks control it deliberately.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use bytes::{BufMut, Bytes, BytesMut};
use switchboard::{Cookie, NodeBuilder, NodeConfig, Request, ServiceError, telemetry};

fn main() -> anyhow::Result<()> {
    let workers: usize = std::env::var("SWITCHBOARD_TESTNODE_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(1);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_all()
        .build()
        .context("building the tokio runtime")?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    telemetry::init(telemetry::LogFormat::from_env(), Vec::new());
    let config = NodeConfig::from_env()?;
    let cookie = Cookie::from_env()?;
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let node = NodeBuilder::new("testnode", config.clone(), cookie)
        .group("echo", move |_message: Request| {
            counter.fetch_add(1, Ordering::Relaxed);
        })
        .start()
        .await?;
    let name = Bytes::from(format!("{}|", node.name()));
    let casts = received.clone();
    node.register_service("echo", move |request: Request| {
        let name = name.clone();
        let casts = casts.clone();
        async move {
            match &*request.method {
                "plain" => Ok(request.payload),
                // How many group messages this node received: lets a bench check delivery.
                "received" => Ok(Bytes::from(casts.load(Ordering::Relaxed).to_string())),
                "fail" => Err(ServiceError::new(
                    "asked_to_fail",
                    "the caller asked for an error",
                )),
                // Holds the call for the given number of milliseconds: a call in flight.
                "sleep" => {
                    let ms = std::str::from_utf8(&request.payload)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    // Tests wait for this line to know the call is in flight here.
                    eprintln!("SLEEPING {ms}");
                    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                    Ok(name)
                }
                _ => {
                    let mut reply = BytesMut::with_capacity(name.len() + request.payload.len());
                    reply.put_slice(&name);
                    reply.put_slice(&request.payload);
                    Ok(reply.freeze())
                }
            }
        }
    });
    // The address line lets a parent process that started this node on port 0 find it.
    eprintln!("LISTENING {}", node.address());
    node.run_until_signal().await;
    Ok(())
}
