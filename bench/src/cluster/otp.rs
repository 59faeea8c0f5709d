//! The Erlang clusters measured beside Switchboard's: N `erl -sname` nodes on this host (Debian's
//! `erlang-base`), one scheduler each (`+S 1:1`, as each Switchboard node has one tokio worker),
//! each running `erlang/sb_cluster.erl`, seeded from the first; Erlang's default `-connect_all`
//! makes the full mesh. Each cluster is measured at rest twice: with the default `net_ticktime`
//! (60 s, so a hung node is found in 45–75 s), then, changed on every node, with `net_ticktime` 1
//! (0.75–1.25 s, as close as Erlang gets to Switchboard's detection), since Erlang's cheapness at
//! rest is bought with its slow detection.
//!
//! The cluster is formed at the default and changed afterwards because 64 Erlang nodes started
//! at once at `net_ticktime` 1 on two CPUs never became a full mesh within two minutes: busy
//! starting, they missed each other's ticks. The cost at rest of the change is what is measured.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use rand::Rng;
use tempfile::TempDir;

use super::{Cluster, Idle};
use crate::cli::RunOptions;
use crate::erlang::{compile, on_path};

/// The module each member runs, compiled into a temporary directory at run time.
const SOURCE: &str = include_str!("../erlang/sb_cluster.erl");
const MODULE: &str = "sb_cluster";

/// Erlang's default `net_ticktime`, which the cluster forms with.
pub(super) const DEFAULT_TICKTIME: u32 = 60;

/// The lowest `net_ticktime` Erlang takes: a hang found in 0.75–1.25 s.
pub(super) const TUNED_TICKTIME: u32 = 1;

/// How long every node has to report the change to [`TUNED_TICKTIME`] (its transition is 5 s).
const TICKTIME_DEADLINE: Duration = Duration::from_secs(30);

/// How long an Erlang cluster may take to become a full mesh once every node has started:
/// `global` makes the mesh, and takes its time at a hundred nodes.
const MESH_DEADLINE: Duration = Duration::from_secs(120);

/// An Erlang installation with the member module compiled.
#[derive(Debug)]
pub(super) struct Otp {
    erl: PathBuf,
    code: TempDir,
    /// The OTP release, for the notes.
    pub(super) release: String,
}

/// One Erlang cluster measured at rest.
#[derive(Debug, Clone)]
pub(super) struct ErlangCluster {
    /// Last start -> every node sees every other up; `None` if not within the deadline.
    pub(super) mesh: Option<Duration>,
    /// At rest with the default `net_ticktime`.
    pub(super) idle: Option<Idle>,
    /// At rest with `net_ticktime` 1, if every node took it and the mesh held.
    pub(super) tuned: Option<Idle>,
    /// Why there is no tuned measurement, if there is none.
    pub(super) tuned_missing: Option<String>,
}

impl Otp {
    /// Finds `erl` and `erlc` and compiles the member module; `Ok(Err(why))` when Erlang is not
    /// installed.
    pub(super) fn find() -> anyhow::Result<Result<Self, String>> {
        let (Some(erl), Some(erlc)) = (on_path("erl"), on_path("erlc")) else {
            return Ok(Err(
                "Erlang skipped: erl or erlc not found (install erlang-base)".into(),
            ));
        };
        let code = tempfile::Builder::new()
            .prefix("switchboard-bench-cluster-")
            .tempdir()
            .context("a temporary directory for the Erlang module")?;
        compile(&erlc, code.path(), MODULE, SOURCE)?;
        let release = release(&erl).unwrap_or_else(|| "?".into());
        Ok(Ok(Self { erl, code, release }))
    }

    /// Starts an `n`-node cluster, waits for the full mesh, and measures it at rest for
    /// `window` after `settle`; then changes every node's `net_ticktime` to 1 and does it again.
    pub(super) async fn measure(
        &self,
        n: usize,
        options: &RunOptions,
        settle: Duration,
        window: Duration,
    ) -> anyhow::Result<ErlangCluster> {
        let run = format!(
            "sbc_{}_{:06x}",
            std::process::id(),
            rand::rng().random::<u32>() & 0xff_ffff
        );
        let cookie = format!("sbc{:032x}", rand::rng().random::<u128>());
        let names: Vec<String> = (0..n).map(|i| format!("{run}_{i:03}")).collect();
        let seed = names[0].clone();
        let command = |name: &str, _seed: Option<&str>| {
            let mut command = options.placement.shared_command(&self.erl);
            command
                .args([
                    "+S",
                    "1:1",
                    "-noshell",
                    "-sname",
                    name,
                    "-setcookie",
                    &cookie,
                ])
                .args(["-kernel", "net_ticktime", &DEFAULT_TICKTIME.to_string()])
                .arg("-pa")
                .arg(self.code.path())
                .args(["-eval", &format!("{MODULE}:member(\"{seed}\")")]);
            Ok(command)
        };
        let mut cluster = Cluster::start(names, command, MESH_DEADLINE)
            .await
            .context(
                "starting the Erlang nodes (`erl -sname` needs this host's name to resolve)",
            )?;
        let mut measured = ErlangCluster {
            mesh: cluster.formed,
            idle: None,
            tuned: None,
            tuned_missing: Some(cluster.unformed.take().unwrap_or_default()),
        };
        if cluster.formed.is_none() {
            return Ok(measured);
        }
        tokio::time::sleep(settle).await;
        measured.idle = Some(cluster.idle(window).await?);
        for member in &mut cluster.members {
            member.tell(&format!("ticktime {TUNED_TICKTIME}"))?;
        }
        let names = cluster.names.clone();
        let changed = cluster
            .wait(TICKTIME_DEADLINE, |j| {
                j.ticktime_is(&names, TUNED_TICKTIME).then_some(())
            })
            .await;
        measured.tuned_missing = if changed.is_none() {
            Some(format!(
                "not every node reported net_ticktime {TUNED_TICKTIME} within {} s",
                TICKTIME_DEADLINE.as_secs()
            ))
        } else {
            tokio::time::sleep(settle).await;
            measured.tuned = Some(cluster.idle(window).await?);
            let (lost, pairs) = cluster.journal.borrow().unmeshed(&names, None, 3);
            (lost > 0).then(|| {
                format!(
                    "the mesh did not hold at net_ticktime {TUNED_TICKTIME}: {lost} pairs down \
                     ({})",
                    pairs.join("; ")
                )
            })
        };
        if measured.tuned_missing.is_some() {
            measured.tuned = None;
        }
        Ok(measured)
    }
}

/// The OTP release `erl` runs, such as `25`.
fn release(erl: &Path) -> Option<String> {
    let output = Command::new(erl)
        .args([
            "-noshell",
            "-eval",
            "io:format(\"~s\", [erlang:system_info(otp_release)]), halt().",
        ])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let release = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    (output.status.success() && !release.is_empty()).then_some(release)
}
