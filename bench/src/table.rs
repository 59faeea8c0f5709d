//! The report: per scenario family, a table of measured points (rates and latencies), a table of
//! observations that are not rates (how long a failover took, how many calls failed), for a
//! family that measures memory one of process footprints, for a family whose results are a
//! curve captioned tables of its own shape ([`Grid`]), and one of checks against the
//! runtime's floors, under a header that states how the run was set up (worker counts,
//! durations, CPUs, commit); rendered as aligned text for the terminal and as Markdown for
//! `BENCHMARKS.md`. A family that could not run (a tool or binary missing) reports a section
//! whose notes say why, with no tables.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Duration;

use crate::cli::RunOptions;
use crate::stats::{Bound, Check, Measurement, Scale};

/// One measured point of a section.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) scenario: String,
    /// Operations in flight, or how the load was applied.
    pub(crate) in_flight: String,
    /// What an operation is, e.g. `calls`, as in `calls/s`.
    pub(crate) unit: &'static str,
    pub(crate) measurement: Measurement,
}

/// One observed quantity that is not a rate: a duration or a count, such as the time from a
/// fault to the moment routing settled, or the calls that failed.
#[derive(Debug, Clone)]
pub(crate) struct Observation {
    pub(crate) what: String,
    pub(crate) value: Quantity,
    /// A reference to read the value against, shown beside it (e.g. Erlang's default).
    pub(crate) reference: Option<String>,
}

impl Observation {
    pub(crate) fn new(what: impl Into<String>, value: Quantity) -> Self {
        Self {
            what: what.into(),
            value,
            reference: None,
        }
    }

    /// Shows `reference` beside the value.
    pub(crate) fn beside(mut self, reference: impl Into<String>) -> Self {
        self.reference = Some(reference.into());
        self
    }
}

/// The value of an [`Observation`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Quantity {
    Time(Duration),
    Count(u64),
    /// What was to be timed did not happen; says why (e.g. `not within 10 s`).
    Absent(String),
}

/// The memory of one process in a given state, as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemoryRow {
    pub(crate) process: String,
    /// What the process was doing when measured, e.g. `idle`.
    pub(crate) state: String,
    /// Resident set size (`VmRSS`), in bytes.
    pub(crate) rss: u64,
    /// Peak resident set size since the process started (`VmHWM`), in bytes.
    pub(crate) peak: u64,
}

/// A captioned table of a family's own shape, for results that are a curve: one row per setting
/// (a cluster size, say) and one column per figure. The first column is left-aligned, the rest
/// right-aligned.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Grid {
    /// One line above the table saying what it shows.
    pub(crate) caption: String,
    pub(crate) header: Vec<String>,
    pub(crate) rows: Vec<Vec<String>>,
}

/// What one scenario family reports. A family skipped (for lack of a tool or a binary) has notes
/// saying why and no tables.
#[derive(Debug, Clone, Default)]
pub(crate) struct Section {
    pub(crate) title: String,
    /// Set-up details specific to the family, one line each.
    pub(crate) notes: Vec<String>,
    pub(crate) rows: Vec<Row>,
    pub(crate) observations: Vec<Observation>,
    pub(crate) memory: Vec<MemoryRow>,
    pub(crate) grids: Vec<Grid>,
    pub(crate) checks: Vec<Check>,
}

impl Section {
    /// A section that measured nothing, saying why.
    pub(crate) fn skipped(title: impl Into<String>, why: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            notes: vec![why.into()],
            ..Self::default()
        }
    }

    /// The section's tables, those that have rows, in order: each with its caption if it has
    /// one, as cells with its columns' right-alignment (for Markdown).
    fn tables(&self) -> Vec<Table<'_>> {
        let plain = |cells, right: &[bool]| Table {
            caption: None,
            cells,
            right: right.to_vec(),
        };
        let mut tables = Vec::new();
        if !self.rows.is_empty() {
            tables.push(plain(
                measurement_cells(self),
                &[false, true, true, true, true],
            ));
        }
        if !self.observations.is_empty() {
            tables.push(plain(observation_cells(self), &[false, true, false]));
        }
        if !self.memory.is_empty() {
            tables.push(plain(memory_cells(self), &[false, false, true, true]));
        }
        for grid in self.grids.iter().filter(|g| !g.rows.is_empty()) {
            let mut cells = vec![grid.header.clone()];
            cells.extend(grid.rows.iter().cloned());
            let right = (0..grid.header.len()).map(|c| c > 0).collect();
            tables.push(Table {
                caption: Some(&grid.caption),
                cells,
                right,
            });
        }
        if !self.checks.is_empty() {
            tables.push(plain(check_cells(self), &[false, true, true, false]));
        }
        tables
    }
}

/// One table of a section, ready to render.
struct Table<'a> {
    caption: Option<&'a str>,
    cells: Vec<Vec<String>>,
    /// Whether each column is right-aligned in Markdown.
    right: Vec<bool>,
}

/// The whole run.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    pub(crate) command_line: String,
    pub(crate) cpus: usize,
    pub(crate) commit: Option<String>,
    pub(crate) client_workers: usize,
    pub(crate) server_workers: usize,
    pub(crate) measure: Duration,
    pub(crate) warmup: Duration,
    pub(crate) rounds: usize,
    /// Where client and servers ran.
    pub(crate) placement: String,
    pub(crate) sections: Vec<Section>,
}

impl Report {
    pub(crate) fn new(options: &RunOptions) -> Self {
        Self {
            command_line: options.command_line.clone(),
            cpus: options.cpus,
            commit: git_commit(),
            client_workers: options.client_workers,
            server_workers: options.server_workers,
            measure: options.measure,
            warmup: options.warmup,
            rounds: options.rounds,
            placement: options.placement.describe(),
            sections: Vec::new(),
        }
    }

    fn setup(&self) -> String {
        format!(
            "client (bench) process: {} tokio worker(s); each server process: {} tokio worker(s); \
             {} s per point after {} s of warm-up, measured in {} slices taken in turn with the \
             other points; {}; {} CPU(s)",
            self.client_workers,
            self.server_workers,
            seconds(self.measure),
            seconds(self.warmup),
            self.rounds,
            self.placement,
            self.cpus,
        )
    }

    /// The report as aligned plain text.
    pub(crate) fn render_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "switchboard-bench — {}", self.setup());
        let _ = writeln!(
            out,
            "commit {}; command: {}",
            self.commit.as_deref().unwrap_or("unknown"),
            self.command_line
        );
        for section in &self.sections {
            let _ = writeln!(out, "\n== {} ==", section.title);
            for note in &section.notes {
                let _ = writeln!(out, "   {note}");
            }
            for table in section.tables() {
                out.push('\n');
                if let Some(caption) = table.caption {
                    let _ = writeln!(out, "{caption}");
                }
                out.push_str(&aligned(&table.cells));
            }
        }
        out
    }

    /// The report as Markdown, with the machine and command needed to reproduce it.
    pub(crate) fn render_markdown(&self) -> String {
        let mut out = String::from("# switchboard-bench results\n\n");
        let _ = writeln!(out, "- Command: `{}`", self.command_line);
        let _ = writeln!(
            out,
            "- CPUs (`std::thread::available_parallelism`): {}",
            self.cpus
        );
        let _ = writeln!(
            out,
            "- Git commit: `{}`",
            self.commit.as_deref().unwrap_or("unknown")
        );
        let _ = writeln!(out, "- Set-up: {}", self.setup());
        for section in &self.sections {
            let _ = writeln!(out, "\n## {}\n", section.title);
            for note in &section.notes {
                let _ = writeln!(out, "- {note}");
            }
            for table in section.tables() {
                out.push('\n');
                if let Some(caption) = table.caption {
                    let _ = writeln!(out, "{caption}\n");
                }
                out.push_str(&markdown(&table.cells, &table.right));
            }
        }
        out
    }
}

fn measurement_cells(section: &Section) -> Vec<Vec<String>> {
    let mut cells = vec![vec![
        "scenario".to_owned(),
        "in flight".to_owned(),
        "throughput".to_owned(),
        "p50".to_owned(),
        "p99".to_owned(),
    ]];
    for row in &section.rows {
        let latency = row.measurement.latency;
        cells.push(vec![
            row.scenario.clone(),
            row.in_flight.clone(),
            format!("{} {}/s", thousands(row.measurement.per_second()), row.unit),
            latency.map_or_else(|| "—".to_owned(), |l| duration(l.p50)),
            latency.map_or_else(|| "—".to_owned(), |l| duration(l.p99)),
        ]);
    }
    cells
}

/// The observations, with a third column only when some observation has a reference.
fn observation_cells(section: &Section) -> Vec<Vec<String>> {
    let references = section.observations.iter().any(|o| o.reference.is_some());
    let mut header = vec!["observation".to_owned(), "measured".to_owned()];
    if references {
        header.push("for comparison".to_owned());
    }
    let mut cells = vec![header];
    for observation in &section.observations {
        let mut row = vec![
            observation.what.clone(),
            match &observation.value {
                Quantity::Time(d) => duration(*d),
                Quantity::Count(n) => thousands(*n as f64),
                Quantity::Absent(why) => why.clone(),
            },
        ];
        if references {
            row.push(observation.reference.clone().unwrap_or_default());
        }
        cells.push(row);
    }
    cells
}

fn memory_cells(section: &Section) -> Vec<Vec<String>> {
    let mut cells = vec![vec![
        "process".to_owned(),
        "state".to_owned(),
        "RSS (VmRSS)".to_owned(),
        "peak RSS (VmHWM)".to_owned(),
    ]];
    for row in &section.memory {
        cells.push(vec![
            row.process.clone(),
            row.state.clone(),
            mebibytes(row.rss as f64 / MIB),
            mebibytes(row.peak as f64 / MIB),
        ]);
    }
    cells
}

fn check_cells(section: &Section) -> Vec<Vec<String>> {
    let mut cells = vec![vec![
        "check".to_owned(),
        "measured".to_owned(),
        "bound".to_owned(),
        "result".to_owned(),
    ]];
    for check in &section.checks {
        let (relation, limit) = match check.bound {
            Bound::AtLeast(floor) => ("≥", floor),
            Bound::AtMost(ceiling) => ("≤", ceiling),
            Bound::Exactly(value) => ("=", value),
        };
        let measured = if check.measured.is_nan() {
            "n/a".to_owned()
        } else if check.measured.is_infinite() {
            "never".to_owned()
        } else {
            checked_value(check.scale, check.measured, false)
        };
        cells.push(vec![
            check.what.clone(),
            measured,
            format!("{relation} {}", checked_value(check.scale, limit, true)),
            check.verdict().to_owned(),
        ]);
    }
    cells
}

/// A checked number as its scale reads; a bound (`round`) as the round number it was set as.
fn checked_value(scale: Scale, value: f64, round: bool) -> String {
    match scale {
        Scale::Ratio => format!("{value:.2}x"),
        Scale::Count => thousands(value),
        Scale::Mebibytes => mebibytes(value),
        Scale::Percent => percent(value),
        Scale::Time if round => {
            let d = Duration::from_secs_f64(value);
            if d >= Duration::from_secs(1) {
                format!("{} s", seconds(d))
            } else {
                format!("{} ms", thousands(d.as_secs_f64() * 1e3))
            }
        }
        Scale::Time => duration(Duration::from_secs_f64(value)),
    }
}

/// Columns padded to their widest cell; the first left-aligned, the rest right-aligned.
fn aligned(rows: &[Vec<String>]) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, &width))| {
                let pad = " ".repeat(width - cell.chars().count());
                if c == 0 {
                    format!("{cell}{pad}")
                } else {
                    format!("{pad}{cell}")
                }
            })
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
        if i == 0 {
            let total = widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1);
            let _ = writeln!(out, "{}", "-".repeat(total));
        }
    }
    out
}

/// A Markdown table; `right[c]` right-aligns column `c`.
fn markdown(rows: &[Vec<String>], right: &[bool]) -> String {
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        let _ = writeln!(out, "| {} |", row.join(" | "));
        if i == 0 {
            let rule: Vec<&str> = (0..row.len())
                .map(|c| {
                    if right.get(c).copied().unwrap_or(false) {
                        "---:"
                    } else {
                        "---"
                    }
                })
                .collect();
            let _ = writeln!(out, "| {} |", rule.join(" | "));
        }
    }
    out
}

/// `1234567.8` as `1,234,568`.
pub(crate) fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// Bytes in a MiB.
pub(crate) const MIB: f64 = 1024.0 * 1024.0;

/// An amount of memory given in MiB, as `12.3 MiB`.
pub(crate) fn mebibytes(value: f64) -> String {
    format!("{value:.1} MiB")
}

/// A percentage (of a CPU core, say), as `0.42%`.
pub(crate) fn percent(value: f64) -> String {
    format!("{value:.2}%")
}

/// A latency in the unit that keeps three significant figures readable.
pub(crate) fn duration(d: Duration) -> String {
    let micros = d.as_secs_f64() * 1e6;
    if micros < 10.0 {
        format!("{micros:.2} µs")
    } else if micros < 1000.0 {
        format!("{micros:.1} µs")
    } else if micros < 1e6 {
        format!("{:.2} ms", micros / 1000.0)
    } else {
        format!("{:.2} s", micros / 1e6)
    }
}

/// A duration in seconds, without trailing zeros.
pub(crate) fn seconds(d: Duration) -> String {
    let s = format!("{:.2}", d.as_secs_f64());
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// `git rev-parse --short HEAD`, marked `+dirty` when tracked files have uncommitted changes;
/// `None` outside a repository or without git.
fn git_commit() -> Option<String> {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let commit = run(&["rev-parse", "--short", "HEAD"]).filter(|c| !c.is_empty())?;
    let dirty = run(&["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|status| !status.is_empty());
    Some(if dirty {
        format!("{commit}+dirty")
    } else {
        commit
    })
}

/// A progress line on stderr, so stdout carries nothing but the report.
pub(crate) fn progress(line: impl std::fmt::Display) {
    eprintln!("[switchboard-bench] {line}");
}

/// Writes to stdout. Printing the report is the bench's job; this is the one place it happens.
pub(crate) fn write_stdout(text: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            command_line: "switchboard-bench runtime --quick".into(),
            cpus: 2,
            commit: Some("abc1234".into()),
            client_workers: 1,
            server_workers: 1,
            measure: Duration::from_secs(1),
            warmup: Duration::from_millis(250),
            rounds: 2,
            placement: "client pinned to CPU 0, servers to CPU 1".into(),
            sections: vec![Section {
                title: "Runtime".into(),
                notes: vec!["payload 150 B".into()],
                rows: vec![
                    Row {
                        scenario: "remote call".into(),
                        in_flight: "64".into(),
                        unit: "calls",
                        measurement: Measurement::from_samples(
                            &mut [30_000, 40_000],
                            Duration::from_micros(10),
                        ),
                    },
                    Row {
                        scenario: "cast".into(),
                        in_flight: "pipelined".into(),
                        unit: "msgs",
                        measurement: Measurement::rate(1_234_567, Duration::from_secs(1)),
                    },
                ],
                checks: vec![Check::new("a vs b", 1.6, Bound::AtLeast(1.5))],
                ..Section::default()
            }],
        }
    }

    #[test]
    fn text_is_aligned_and_marks_checks() {
        let text = report().render_text();
        assert!(text.contains("1 tokio worker(s)"), "{text}");
        assert!(text.contains("0.25 s of warm-up"), "{text}");
        assert!(text.contains("200,000 calls/s"), "{text}");
        assert!(text.contains("1,234,567 msgs/s"), "{text}");
        assert!(text.contains("30.0 µs"), "{text}");
        assert!(text.contains("1.60x"), "{text}");
        assert!(text.contains("PASS"), "{text}");
    }

    #[test]
    fn markdown_has_machine_commit_and_command() {
        let markdown = report().render_markdown();
        assert!(markdown.contains("CPUs (`std::thread::available_parallelism`): 2"));
        assert!(markdown.contains("`abc1234`"));
        assert!(markdown.contains("`switchboard-bench runtime --quick`"));
        assert!(markdown.contains("| scenario | in flight | throughput | p50 | p99 |"));
        assert!(markdown.contains("| --- | ---: | ---: | ---: | ---: |"));
    }

    #[test]
    fn observations_and_non_ratio_checks() {
        let mut report = report();
        report.sections.push(Section {
            title: "Failover".into(),
            observations: vec![
                Observation::new(
                    "kill -> settled",
                    Quantity::Time(Duration::from_micros(850)),
                ),
                Observation::new("hang detected", Quantity::Time(Duration::from_millis(1130)))
                    .beside("Erlang: 45-75 s"),
                Observation::new("failed calls", Quantity::Count(0)),
                Observation::new("rejoined", Quantity::Absent("not within 10 s".into())),
            ],
            checks: vec![
                Check::within(
                    "kill -> settled",
                    Some(Duration::from_micros(850)),
                    Duration::from_millis(100),
                ),
                Check::within("hang -> settled", None, Duration::from_secs(1)),
                Check::none("failed calls", 0),
            ],
            ..Section::default()
        });
        let text = report.render_text();
        // A section without rate points prints no empty rate table.
        let failover = &text[text.find("== Failover ==").unwrap()..];
        assert!(!failover.contains("throughput"), "{text}");
        assert!(failover.contains("for comparison"), "{text}");
        assert!(failover.contains("1.13 s  Erlang: 45-75 s"), "{text}");
        assert!(failover.contains("Erlang: 45-75 s"), "{text}");
        assert!(failover.contains("not within 10 s"), "{text}");
        let check = |name: &str| {
            let line = failover.lines().rfind(|l| l.starts_with(name)).unwrap();
            line.split_whitespace().collect::<Vec<_>>().join(" ")
        };
        assert_eq!(check("kill"), "kill -> settled 850.0 µs ≤ 100 ms PASS");
        assert_eq!(check("hang -> settled"), "hang -> settled never ≤ 1 s MISS");
        assert_eq!(check("failed"), "failed calls 0 = 0 PASS");
        let markdown = report.render_markdown();
        assert!(markdown.contains("| observation | measured | for comparison |"));
        assert!(markdown.contains("| hang detected | 1.13 s | Erlang: 45-75 s |"));
        assert!(markdown.contains("| failed calls | 0 |  |"));
    }

    #[test]
    fn memory_rows_and_checks_print_in_mib_and_skipped_sections_print_no_table() {
        let mut report = report();
        report.sections = vec![
            Section {
                title: "footprint".into(),
                memory: vec![MemoryRow {
                    process: "switchboard-log".into(),
                    state: "idle".into(),
                    rss: 12 * 1024 * 1024 + 300 * 1024,
                    peak: 20 * 1024 * 1024,
                }],
                checks: vec![Check::mebibytes(
                    "switchboard-log idle RSS",
                    12.3,
                    Bound::AtMost(30.0),
                )],
                ..Section::default()
            },
            Section::skipped("erlang", "skipped: erl not found"),
        ];
        let text = report.render_text();
        assert!(text.contains("RSS (VmRSS)"), "{text}");
        assert!(text.contains("12.3 MiB"), "{text}");
        assert!(text.contains("20.0 MiB"), "{text}");
        assert!(text.contains("≤ 30.0 MiB"), "{text}");
        assert!(!text.contains("throughput"), "{text}");
        assert!(!text.contains("observation"), "{text}");
        let markdown = report.render_markdown();
        assert!(markdown.contains("| process | state | RSS (VmRSS) | peak RSS (VmHWM) |"));
        assert!(markdown.contains("| --- | --- | ---: | ---: |"));
        assert!(
            markdown.ends_with("## erlang\n\n- skipped: erl not found\n"),
            "{markdown}"
        );
    }

    #[test]
    fn numbers_are_readable() {
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(12_345_678.0), "12,345,678");
        assert_eq!(duration(Duration::from_nanos(2_500)), "2.50 µs");
        assert_eq!(duration(Duration::from_micros(2_500)), "2.50 ms");
        assert_eq!(duration(Duration::from_millis(1_500)), "1.50 s");
        assert_eq!(seconds(Duration::from_secs(3)), "3");
    }
}
