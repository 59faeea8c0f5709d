//! The `erlang` scenario family: Switchboard against the system it is modelled on. Two real
//! Erlang nodes (Debian's `erlang-base`, started with `-sname` and a shared cookie) ping-pong a
//! 150-byte binary between a process on each node at 1 and at 64 in flight, and one process
//! sends the binary one way to a counting process; a Switchboard client node in the bench and a
//! server node in another process do the same shapes (a remote `echo` call, and group messages
//! counted where they arrive). The floors: Switchboard at least matches Erlang's round trips/s
//! at 64 in flight and its one-way messages/s, with a p99 no worse; the aim is 1.5x.
//!
//! The Erlang side is the module `erlang/sb_pingpong.erl`, embedded in the bench and compiled with
//! `erlc` at run time. The Erlang client node is driven over stdin/stdout one command per slice,
//! so its points take turns with the Switchboard ones exactly as every other point of the bench
//! does. Both Erlang nodes get one scheduler (`+S 1:1`) and the CPUs the bench gives its own
//! client and servers, so the comparison is one worker against one worker on each side.
//!
//! Without `erl` the section says so and measures nothing: an absent baseline is never faked.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use rand::Rng;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::cli::RunOptions;
use crate::echo_node::{self, PAYLOAD_BYTES, RemoteEcho};
use crate::points::{self, Point, find, measure_in_turn};
use crate::server_process::{self, ServerProcess};
use crate::stats::{Bound, Check, Tally, p99_ratio, throughput_ratio};
use crate::table::{Row, Section, thousands};

/// The Erlang module, compiled into a temporary directory at run time.
const SOURCE: &str = include_str!("erlang/sb_pingpong.erl");

/// The module's name, as Erlang knows it (and so its file's).
const MODULE: &str = "sb_pingpong";

/// The concurrency of the "many in flight" points.
const MANY: usize = 64;

/// What the issue hopes for, beyond the floors of 1.0x.
const AIM: f64 = 1.5;

/// How long the Erlang client node may take to start and connect, and a command may overrun
/// its own warm-up and window before the bench gives up on it.
const GRACE: Duration = Duration::from_secs(30);

/// The points' names, shared by the table and the checks.
const SB_CALL: &str = "Switchboard remote call";
const SB_CAST: &str = "Switchboard one-way (group cast, delivered)";
const ERL_CALL: &str = "Erlang ping-pong (send/receive)";
const ERL_CAST: &str = "Erlang one-way (send, delivered)";

const TITLE: &str = "erlang: Switchboard vs Erlang distribution (2 nodes, 2 processes, loopback)";

/// Every point as (scenario, in flight), to see what `--only` selects before starting anything.
const POINTS: [(&str, &str); 6] = [
    (SB_CALL, "1"),
    (SB_CALL, "64"),
    (SB_CAST, "one-way"),
    (ERL_CALL, "1"),
    (ERL_CALL, "64"),
    (ERL_CAST, "one-way"),
];

/// Runs the family and returns its section of the report: none when `--only` selects none of
/// its points, and one saying so, with nothing measured, without `erl` or `erlc`.
pub(crate) async fn run(options: &RunOptions) -> anyhow::Result<Option<Section>> {
    if !POINTS
        .iter()
        .any(|&(scenario, in_flight)| options.selects(scenario, in_flight))
    {
        return Ok(None);
    }
    let Some(erl) = on_path("erl") else {
        return Ok(Some(Section::skipped(
            TITLE,
            "skipped: erl not found (install erlang-base)",
        )));
    };
    let Some(erlc) = on_path("erlc") else {
        return Ok(Some(Section::skipped(
            TITLE,
            "skipped: erlc not found (install erlang-base)",
        )));
    };
    let payload = echo_node::payload(PAYLOAD_BYTES);
    let code = tempfile::Builder::new()
        .prefix("switchboard-bench-erlang-")
        .tempdir()
        .context("a temporary directory for the Erlang module")?;
    compile(&erlc, code.path(), MODULE, SOURCE)?;
    let erlang = ErlangPair::start(&erl, code.path(), options).await?;
    let switchboard = RemoteEcho::start(options).await?;
    let casts = Arc::new(Mutex::new(ErlangCasts::default()));
    let points = points::selected(
        vec![
            round_trips(switchboard.call_point(SB_CALL, 1, &payload)),
            round_trips(switchboard.call_point(SB_CALL, MANY, &payload)),
            switchboard.cast_point(SB_CAST, &payload),
            erlang.round_trip_point(1),
            erlang.round_trip_point(MANY),
            erlang.cast_point(casts.clone()),
        ],
        options,
    );
    let rows = measure_in_turn("erlang", points, options).await?;
    let switchboard_casts = switchboard
        .casts
        .note("Switchboard one-way", "broadcast", options);
    switchboard.finish().await?;
    let otp = erlang.finish().await?;
    let checks = checks(&rows);
    let aim = aim_note(&rows);
    let erlang_casts = casts
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .note(options);
    Ok(Some(Section {
        title: TITLE.into(),
        notes: vec![
            format!(
                "payload {PAYLOAD_BYTES} B; 'in flight' = concurrent tasks (Switchboard) or \
                 processes (Erlang) each looping send -> await the reply"
            ),
            format!(
                "Erlang: OTP {otp} (erlang-base), two `erl` nodes started with `-sname` on this \
                 host and a shared random cookie, one scheduler each (`+S 1:1`), the client node \
                 placed like the bench and the server node like the bench's servers (see the \
                 header), as the Switchboard client and server each have one tokio worker"
            ),
            "Erlang round trips: processes on the client node each send `{self(), Ref, Bin}` to \
             one echo process on the server node and wait for `{Ref, Bin}`; timed on the client \
             node, and, as for Switchboard, only round trips started and finished inside the \
             window count"
                .into(),
            erlang_casts,
            "Switchboard: the bench's node calls `echo` on a server node (the bench re-executed \
             as `serve-node`, or switchboard-testnode with --testnode)"
                .into(),
            switchboard_casts,
            aim,
        ],
        rows,
        checks,
        ..Section::default()
    }))
}

/// A Switchboard call point, reported in the same unit as the Erlang round trips beside it.
fn round_trips(point: Point) -> Point {
    Point {
        unit: "round trips",
        ..point
    }
}

/// The floors: Switchboard's throughputs at least Erlang's, its p99 at 64 in flight no worse.
fn checks(rows: &[Row]) -> Vec<Check> {
    let many = MANY.to_string();
    let sb_many = find(rows, SB_CALL, &many);
    let erl_many = find(rows, ERL_CALL, &many);
    vec![
        Check::new(
            format!("Switchboard @{MANY} / Erlang @{MANY} (round trips/s)"),
            throughput_ratio(&sb_many, &erl_many),
            Bound::AtLeast(1.0),
        ),
        Check::new(
            "Switchboard one-way / Erlang one-way (msgs/s delivered)",
            throughput_ratio(
                &find(rows, SB_CAST, "one-way"),
                &find(rows, ERL_CAST, "one-way"),
            ),
            Bound::AtLeast(1.0),
        ),
        Check::new(
            format!("Switchboard p99 @{MANY} / Erlang p99 @{MANY} (latency)"),
            p99_ratio(&sb_many, &erl_many),
            Bound::AtMost(1.0),
        ),
    ]
}

/// The aim, 1.5x Erlang's throughputs, against what was measured.
fn aim_note(rows: &[Row]) -> String {
    let many = MANY.to_string();
    let ratio = |a: &str, b: &str, in_flight: &str| {
        let ratio = throughput_ratio(&find(rows, a, in_flight), &find(rows, b, in_flight));
        if ratio.is_finite() {
            format!("{ratio:.2}x")
        } else {
            "n/a".to_owned()
        }
    };
    format!(
        "aim (beyond the 1.0x floors): {AIM:.1}x Erlang's round trips/s @{MANY} (measured {}) \
         and one-way msgs/s (measured {})",
        ratio(SB_CALL, ERL_CALL, &many),
        ratio(SB_CAST, ERL_CAST, "one-way"),
    )
}

/// `name` in a directory of `PATH`, if it is there and can be run.
pub(crate) fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| server_process::is_executable(candidate))
}

/// Writes the Erlang module `module` (its text `text`) into `dir` and compiles it there with
/// `erlc`.
pub(crate) fn compile(erlc: &Path, dir: &Path, module: &str, text: &str) -> anyhow::Result<()> {
    let source = dir.join(format!("{module}.erl"));
    std::fs::write(&source, text).with_context(|| format!("writing {}", source.display()))?;
    let output = std::process::Command::new(erlc)
        .arg("-o")
        .arg(dir)
        .arg(&source)
        .stdin(Stdio::null())
        .output()
        .context("running erlc")?;
    ensure!(
        output.status.success(),
        "erlc failed to compile {module}.erl ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// The two Erlang nodes: the server in a [`ServerProcess`], the client driven by the bench.
#[derive(Debug)]
struct ErlangPair {
    server: ServerProcess,
    client: Arc<tokio::sync::Mutex<ErlangClient>>,
    /// The OTP release the client node reported.
    otp: String,
}

impl ErlangPair {
    /// Starts the server node, waits for its `LISTENING <node>` line, then starts the client
    /// node connected to it and waits for its `READY <otp release>` line. Node names are unique
    /// per run, and the cookie is fresh.
    async fn start(erl: &Path, code: &Path, options: &RunOptions) -> anyhow::Result<Self> {
        let run = format!(
            "sbbench_{}_{:08x}",
            std::process::id(),
            rand::rng().random::<u32>()
        );
        let cookie = format!("sbbench{:032x}", rand::rng().random::<u128>());
        let node = |command: &mut std::process::Command, name: &str, eval: &str| {
            command
                .args(["+S", "1:1", "-noshell", "-sname", name, "-setcookie"])
                .arg(&cookie)
                .arg("-pa")
                .arg(code)
                .args(["-eval", eval]);
        };
        let mut command = options.placement.server_command(erl);
        node(
            &mut command,
            &format!("{run}_server"),
            &format!("{MODULE}:server()"),
        );
        // The node halts when its stdin closes: when the bench is gone, however it went.
        command.stdin(Stdio::piped());
        let server = ServerProcess::start(
            command,
            "the Erlang server node",
            server_process::listening,
            &[server_process::LISTENING],
        )
        .context(
            "starting the Erlang server node (`erl -sname` needs this host's name to resolve)",
        )?;
        let mut command = options.placement.client_command(erl);
        node(
            &mut command,
            &format!("{run}_client"),
            &format!("{MODULE}:client('{}', {PAYLOAD_BYTES})", server.address),
        );
        let (client, otp) = ErlangClient::start(command).await?;
        Ok(Self {
            server,
            client: Arc::new(tokio::sync::Mutex::new(client)),
            otp,
        })
    }

    /// A point of `in_flight` processes on the client node each looping a round trip.
    fn round_trip_point(&self, in_flight: usize) -> Point {
        let client = self.client.clone();
        Point::new(
            ERL_CALL,
            in_flight.to_string(),
            "round trips",
            move |warmup, measure| {
                let client = client.clone();
                Box::pin(async move {
                    let line = format!(
                        "roundtrips {in_flight} {} {}",
                        warmup.as_millis(),
                        measure.as_millis()
                    );
                    match client.lock().await.command(&line, warmup + measure).await? {
                        Reply::RoundTrips { elapsed, samples } => {
                            Ok(Tally::timed(samples, elapsed))
                        }
                        other => bail!("expected round trips, got {other:?}"),
                    }
                })
            },
        )
    }

    /// A point of one-way sends from one process on the client node to the counting process on
    /// the server node, counted where they arrive.
    fn cast_point(&self, casts: Arc<Mutex<ErlangCasts>>) -> Point {
        let client = self.client.clone();
        Point::new(ERL_CAST, "one-way", "msgs", move |warmup, measure| {
            let client = client.clone();
            let casts = casts.clone();
            Box::pin(async move {
                let line = format!("casts {} {}", warmup.as_millis(), measure.as_millis());
                match client.lock().await.command(&line, warmup + measure).await? {
                    Reply::Casts {
                        delivered,
                        elapsed,
                        sent,
                    } => {
                        ensure!(delivered > 0, "no Erlang message reached the server node");
                        let mut casts = casts.lock().unwrap_or_else(|p| p.into_inner());
                        casts.sent += sent;
                        casts.delivered += delivered;
                        Ok(Tally::counted(delivered, elapsed))
                    }
                    other => bail!("expected casts, got {other:?}"),
                }
            })
        })
    }

    /// Fails if either node died during the run, then stops both; returns the OTP release.
    async fn finish(mut self) -> anyhow::Result<String> {
        self.server.check_alive()?;
        let mut client = self.client.lock().await;
        if let Some(status) = client.child.try_wait()? {
            bail!(
                "the Erlang client node exited with {status}{}",
                client.explain()
            );
        }
        client.child.kill().await?;
        Ok(self.otp)
    }
}

/// The Erlang client node: a child process that takes one command line on stdin and answers
/// one line on stdout.
#[derive(Debug)]
struct ErlangClient {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    /// Its last lines of stderr, to explain a failure.
    tail: Arc<Mutex<Vec<String>>>,
}

impl ErlangClient {
    /// Starts the node and waits for its `READY <otp release>` line; returns it and the release.
    async fn start(command: std::process::Command) -> anyhow::Result<(Self, String)> {
        let mut command = tokio::process::Command::from(command);
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().context("starting the Erlang client node")?;
        let stdin = child.stdin.take().context("the Erlang client's stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("the Erlang client's stdout")?);
        let stderr = child.stderr.take().context("the Erlang client's stderr")?;
        let tail = Arc::new(Mutex::new(Vec::new()));
        let lines = tail.clone();
        tokio::spawn(async move {
            let mut stderr = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = stderr.next_line().await {
                server_process::remember(&lines, line);
            }
        });
        let mut client = Self {
            child,
            stdin,
            stdout: stdout.lines(),
            tail,
        };
        let otp = loop {
            let line = client
                .next_line(GRACE)
                .await
                .context("starting the Erlang client node")?;
            if let Some(otp) = line.strip_prefix("READY") {
                break otp.trim().to_owned();
            }
        };
        Ok((client, otp))
    }

    /// Sends one command and parses its reply, allowing `expected` plus a grace period.
    async fn command(&mut self, line: &str, expected: Duration) -> anyhow::Result<Reply> {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .context("writing to the Erlang client node")?;
        self.stdin.flush().await?;
        let reply = self.next_line(expected + GRACE).await?;
        parse_reply(&reply).with_context(|| format!("the Erlang client's reply to `{line}`"))
    }

    /// The next line of stdout within `timeout`.
    async fn next_line(&mut self, timeout: Duration) -> anyhow::Result<String> {
        match tokio::time::timeout(timeout, self.stdout.next_line()).await {
            Ok(Ok(Some(line))) => Ok(line),
            Ok(Ok(None)) => bail!("the Erlang client node ended{}", self.explain()),
            Ok(Err(error)) => Err(error).context("reading the Erlang client node's output"),
            Err(_) => bail!(
                "the Erlang client node said nothing for {} s{}",
                timeout.as_secs(),
                self.explain()
            ),
        }
    }

    fn explain(&self) -> String {
        server_process::explain(&self.tail)
    }
}

/// What the Erlang client node sent and the server node received, over every slice.
#[derive(Debug, Default)]
struct ErlangCasts {
    sent: u64,
    delivered: u64,
}

impl ErlangCasts {
    fn note(&self, options: &RunOptions) -> String {
        format!(
            "Erlang one-way: one process sends the binary to one counting process on the server \
             node, 64 sends per clock read, for {} s; {} sent, {} delivered (the receiver's \
             count, read back after the window: messages between two processes arrive in \
             order); rate = delivered / (first send to last delivery)",
            crate::table::seconds(options.measure),
            thousands(self.sent as f64),
            thousands(self.delivered as f64),
        )
    }
}

/// One reply line of the Erlang client node.
#[derive(Debug, PartialEq)]
enum Reply {
    /// `roundtrips <elapsed ns> <sample ns>...`: every round trip of the window, timed.
    RoundTrips {
        elapsed: Duration,
        samples: Vec<u64>,
    },
    /// `casts <delivered> <elapsed ns> <sent>`.
    Casts {
        delivered: u64,
        elapsed: Duration,
        sent: u64,
    },
}

/// Parses a reply line; an `error ...` line is the Erlang side's failure.
fn parse_reply(line: &str) -> anyhow::Result<Reply> {
    let mut words = line.split_ascii_whitespace();
    let number = |word: Option<&str>, what: &str| -> anyhow::Result<u64> {
        word.with_context(|| format!("no {what}"))?
            .parse()
            .with_context(|| format!("{what} is not a count"))
    };
    match words.next() {
        Some("roundtrips") => {
            let elapsed = Duration::from_nanos(number(words.next(), "elapsed time")?);
            let samples = words
                .map(|word| number(Some(word), "a round trip's time"))
                .collect::<anyhow::Result<Vec<u64>>>()?;
            Ok(Reply::RoundTrips { elapsed, samples })
        }
        Some("casts") => {
            let delivered = number(words.next(), "delivered count")?;
            let elapsed = Duration::from_nanos(number(words.next(), "elapsed time")?);
            let sent = number(words.next(), "sent count")?;
            ensure!(words.next().is_none(), "more than three numbers");
            Ok(Reply::Casts {
                delivered,
                elapsed,
                sent,
            })
        }
        Some("error") => bail!(
            "the Erlang side failed: {}",
            line.trim_start_matches("error").trim()
        ),
        _ => bail!("an unexpected line: {line:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_round_trips() {
        assert_eq!(
            parse_reply("roundtrips 500000000 61000 58000 1200000").unwrap(),
            Reply::RoundTrips {
                elapsed: Duration::from_millis(500),
                samples: vec![61_000, 58_000, 1_200_000],
            }
        );
        // A window in which nothing completed is still a reply.
        assert_eq!(
            parse_reply("roundtrips 500000000").unwrap(),
            Reply::RoundTrips {
                elapsed: Duration::from_millis(500),
                samples: vec![],
            }
        );
    }

    #[test]
    fn parses_casts() {
        assert_eq!(
            parse_reply("casts 86976 515994134 86976").unwrap(),
            Reply::Casts {
                delivered: 86_976,
                elapsed: Duration::from_nanos(515_994_134),
                sent: 86_976,
            }
        );
    }

    #[test]
    fn errors_and_garbage_are_errors() {
        let error = parse_reply("error error:{unknown_command,[\"bogus\"]}").unwrap_err();
        assert!(error.to_string().contains("unknown_command"), "{error:#}");
        assert!(parse_reply("casts 1 2").is_err());
        assert!(parse_reply("casts 1 2 3 4").is_err());
        assert!(parse_reply("roundtrips 10 x").is_err());
        assert!(parse_reply("roundtrips").is_err());
        assert!(parse_reply("READY 25").is_err());
        assert!(parse_reply("").is_err());
    }

    #[test]
    fn the_embedded_module_answers_the_commands_parsed_here() {
        assert!(SOURCE.contains(&format!("-module({MODULE}).")));
        for command in ["\"roundtrips\"", "\"casts\"", "LISTENING", "READY"] {
            assert!(SOURCE.contains(command), "{command}");
        }
    }
}
