//! A slow, lossy link on one container, in place of `tc qdisc add dev eth0 root netem delay
//! 200ms loss 5%`, which this machine's kernel cannot run (it is built without
//! `CONFIG_NET_SCH_NETEM`; netfilter's NFQUEUE target is there).
//!
//! An iptables rule in the container's network namespace queues every packet leaving its `eth0`
//! to user space. A thread of this process that has joined that namespace holds each packet for
//! the delay, in arrival order, then drops it with the loss probability or lets it go. So the
//! container's traffic sees what netem would give it: every packet it sends is late, and one in
//! twenty never arrives. The rule has `--queue-bypass`: if the thread is gone, packets pass.

use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::Rng;

use super::faults::run;

/// The netfilter queue the rule feeds.
const QUEUE: u16 = 4711;

/// A link impaired until [`Impairment::heal`].
pub(crate) struct Impairment {
    pid: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

/// The iptables rule, for `-I` or `-D`.
fn rule(verb: &str) -> Vec<String> {
    [
        verb,
        "OUTPUT",
        "-o",
        "eth0",
        "-j",
        "NFQUEUE",
        "--queue-num",
        &QUEUE.to_string(),
        "--queue-bypass",
    ]
    .iter()
    .map(|s| (*s).to_string())
    .collect()
}

fn iptables(pid: &str, verb: &str) -> anyhow::Result<String> {
    let mut args: Vec<String> = ["-t", pid, "-n", "iptables"]
        .iter()
        .map(|s| (*s).to_string())
        .collect();
    args.extend(rule(verb));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run("nsenter", &args)
}

impl Impairment {
    /// Delays every packet the process `pid`'s network namespace sends on `eth0` by `delay`,
    /// and drops a `loss` fraction of them.
    pub(crate) fn start(pid: &str, delay: Duration, loss: f64) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let namespace = std::fs::File::open(format!("/proc/{pid}/ns/net"))
            .with_context(|| format!("the network namespace of process {pid}"))?;
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let opened = (|| {
                    // Only this thread moves into the namespace.
                    nix::sched::setns(namespace.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)?;
                    let mut queue = nfq::Queue::open()?;
                    queue.bind(QUEUE)?;
                    queue.set_copy_range(QUEUE, 0)?;
                    queue.set_fail_open(QUEUE, true)?;
                    queue.set_nonblocking(true);
                    anyhow::Ok(queue)
                })();
                let mut queue = match opened {
                    Ok(queue) => {
                        let _ = ready_tx.send(Ok(()));
                        queue
                    }
                    Err(error) => {
                        let _ = ready_tx.send(Err(format!("{error:#}")));
                        return Ok(());
                    }
                };
                hold(&mut queue, &stop, delay, loss)
            })
        };
        ready_rx
            .recv()
            .context("the impairment thread ended")?
            .map_err(|e| anyhow::anyhow!("opening netfilter queue {QUEUE}: {e}"))?;
        iptables(pid, "-I")?;
        Ok(Self {
            pid: pid.to_string(),
            stop,
            thread: Some(thread),
        })
    }

    /// Removes the rule and lets every held packet go.
    pub(crate) fn heal(mut self) -> anyhow::Result<()> {
        let removed = iptables(&self.pid, "-D");
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread
                .join()
                .map_err(|_| anyhow::anyhow!("the impairment thread panicked"))??;
        }
        removed.map(drop)
    }
}

impl Drop for Impairment {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = iptables(&self.pid, "-D");
            self.stop.store(true, Ordering::Relaxed);
        }
    }
}

/// Holds each queued packet for `delay`, in order, then drops it with probability `loss` or
/// accepts it; once `stop` is set, accepts what it holds and returns.
fn hold(
    queue: &mut nfq::Queue,
    stop: &AtomicBool,
    delay: Duration,
    loss: f64,
) -> anyhow::Result<()> {
    let mut held: VecDeque<(Instant, nfq::Message)> = VecDeque::new();
    let mut rng = rand::rng();
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        let now = Instant::now();
        while held.front().is_some_and(|(due, _)| stopping || *due <= now) {
            let Some((_, mut packet)) = held.pop_front() else {
                break;
            };
            let lost = !stopping && rng.random_bool(loss);
            packet.set_verdict(if lost {
                nfq::Verdict::Drop
            } else {
                nfq::Verdict::Accept
            });
            queue.verdict(packet)?;
        }
        match queue.recv() {
            Ok(packet) => held.push_back((Instant::now() + delay, packet)),
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                if stopping {
                    return Ok(());
                }
                // Nothing queued: the next due packet is at most this late.
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Delays by 200 ms, and drops one in twenty of, the packets process `pid`'s network namespace
/// sends on `eth0`, for `length`.
pub(crate) async fn impaired_for(pid: &str, length: Duration) -> anyhow::Result<()> {
    let pid = pid.to_string();
    let impairment = tokio::task::spawn_blocking(move || {
        Impairment::start(&pid, Duration::from_millis(200), 0.05)
    })
    .await??;
    tokio::time::sleep(length).await;
    tokio::task::spawn_blocking(move || impairment.heal()).await?
}
