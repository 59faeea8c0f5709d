//! Points measured in turn: a [`Point`] is one row of a family's rate table (a scenario at some
//! concurrency) together with how to measure one slice of it. A family measures every point's
//! first slice, then every point's second, and so on ([`measure_in_turn`]), so that a ratio
//! between two points compares them under the same conditions: on a small shared machine, other
//! work and the CPUs' idle states shift results over a run by far more than the differences
//! being measured.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;

use crate::cli::RunOptions;
use crate::load::{Load, closed_loop, closed_loop_per_client};
use crate::stats::{Measurement, Tally};
use crate::table::{Row, progress};

/// The warm-up of every slice after a point's first: enough to get back to speed.
const REWARM: Duration = Duration::from_millis(100);

/// One slice of a point: its warm-up and measured window, as a future.
pub(crate) type Slice = Pin<Box<dyn Future<Output = anyhow::Result<Tally>> + Send>>;

/// A point of the table: what it is, how to measure a slice of it, and the slices so far.
pub(crate) struct Point {
    pub(crate) scenario: &'static str,
    pub(crate) in_flight: String,
    /// What an operation is, as in `calls/s`.
    pub(crate) unit: &'static str,
    /// Measures one slice: (warm-up, measured window) -> tally.
    pub(crate) slice: Box<dyn Fn(Duration, Duration) -> Slice + Send + Sync>,
    pub(crate) tally: Tally,
}

impl std::fmt::Debug for Point {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Point")
            .field("scenario", &self.scenario)
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

impl Point {
    /// A point measured by `slice`, called with (warm-up, measured window) for every slice.
    pub(crate) fn new<F>(
        scenario: &'static str,
        in_flight: impl Into<String>,
        unit: &'static str,
        slice: F,
    ) -> Self
    where
        F: Fn(Duration, Duration) -> Slice + Send + Sync + 'static,
    {
        Self {
            scenario,
            in_flight: in_flight.into(),
            unit,
            slice: Box::new(slice),
            tally: Tally::default(),
        }
    }

    /// A closed-loop point: `in_flight` tasks of the bench looping `operation`.
    pub(crate) fn closed<F, Fut>(scenario: &'static str, in_flight: usize, operation: F) -> Self
    where
        F: Fn() -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        Self::closed_per_client(scenario, in_flight, move |_| operation())
    }

    /// A closed-loop point whose task `i` loops `operation(i)`, so that each task can be a
    /// client of its own (see [`crate::load::closed_loop_per_client`]).
    pub(crate) fn closed_per_client<F, Fut>(
        scenario: &'static str,
        in_flight: usize,
        operation: F,
    ) -> Self
    where
        F: Fn(usize) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        Self::new(
            scenario,
            in_flight.to_string(),
            "calls",
            move |warmup, measure| {
                let load = Load {
                    in_flight,
                    warmup,
                    measure,
                };
                Box::pin(closed_loop_per_client(load, operation.clone()))
            },
        )
    }

    /// A closed-loop point measured while `background` loads the same server over the same
    /// warm-up and window, so its operations are timed only under that load; `background`
    /// measures a slice of its own, which is added to `beside` (for a row of its own).
    pub(crate) fn closed_beside<F, Fut, B>(
        scenario: &'static str,
        in_flight: usize,
        operation: F,
        background: B,
        beside: Arc<Mutex<Tally>>,
    ) -> Self
    where
        F: Fn() -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
        B: Fn(Duration, Duration) -> Slice + Send + Sync + 'static,
    {
        let background = Arc::new(background);
        Self::new(
            scenario,
            in_flight.to_string(),
            "calls",
            move |warmup, measure| {
                let operation = operation.clone();
                let background = background.clone();
                let beside = beside.clone();
                Box::pin(async move {
                    let load = Load {
                        in_flight,
                        warmup,
                        measure,
                    };
                    let (tally, other) = tokio::try_join!(
                        closed_loop(load, operation),
                        background(warmup, measure),
                    )?;
                    beside.lock().unwrap_or_else(|p| p.into_inner()).add(other);
                    Ok(tally)
                })
            },
        )
    }

    /// The row of the table: every slice measured so far, added up.
    pub(crate) fn into_row(self) -> Row {
        Row {
            scenario: self.scenario.into(),
            in_flight: self.in_flight,
            unit: self.unit,
            measurement: self.tally.measurement(),
        }
    }
}

/// The points `--only` selects (all of them without it). A family none of whose points is
/// selected reports nothing: with several families in a run, `--only` usually names points of
/// one.
pub(crate) fn selected(points: Vec<Point>, options: &RunOptions) -> Vec<Point> {
    points
        .into_iter()
        .filter(|point| options.selects(point.scenario, &point.in_flight))
        .collect()
}

/// Measures `options.rounds` slices of every point, taking the points in turn within a round,
/// and returns their rows in the points' order.
pub(crate) async fn measure_in_turn(
    family: &str,
    mut points: Vec<Point>,
    options: &RunOptions,
) -> anyhow::Result<Vec<Row>> {
    let slice = options.measure / options.rounds as u32;
    for round in 0..options.rounds {
        progress(format_args!(
            "{family}: slice {}/{} of every point",
            round + 1,
            options.rounds
        ));
        // The first slice warms connections and pools up; later ones only get back to speed.
        let warmup = if round == 0 {
            options.warmup
        } else {
            options.warmup.min(REWARM)
        };
        for point in &mut points {
            let tally = (point.slice)(warmup, slice)
                .await
                .with_context(|| format!("{} at {} in flight", point.scenario, point.in_flight))?;
            point.tally.add(tally);
        }
    }
    Ok(points.into_iter().map(Point::into_row).collect())
}

/// The measurement of `scenario` at `in_flight` among `rows`; one that was not measured (see
/// `--only`) has no elapsed time, so every ratio with it is not a number and its check reads n/a.
pub(crate) fn find(rows: &[Row], scenario: &str, in_flight: &str) -> Measurement {
    rows.iter()
        .find(|row| row.scenario == scenario && row.in_flight == in_flight)
        .map_or_else(
            || Measurement::rate(0, Duration::ZERO),
            |row| row.measurement.clone(),
        )
}
