//! What a measurement is: operations completed over an elapsed time, with latency percentiles
//! when each operation was timed, added up over the slices a point is measured in; and the
//! checks the report holds results to: ratios between measurements, durations, counts and
//! amounts of memory, each against the floor (or ceiling) the runtime promises.

use std::time::Duration;

/// Operations counted, and when timed their latencies in nanoseconds, over one or more
/// measured slices of a point.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tally {
    ops: u64,
    samples: Vec<u64>,
    elapsed: Duration,
    timed: bool,
}

impl Tally {
    /// A slice in which every operation was timed.
    pub(crate) fn timed(samples: Vec<u64>, elapsed: Duration) -> Self {
        Self::sampled(samples.len() as u64, samples, elapsed)
    }

    /// A slice of `ops` operations of which some were timed, `samples` their latencies: every
    /// operation equally likely to be one of them.
    pub(crate) fn sampled(ops: u64, samples: Vec<u64>, elapsed: Duration) -> Self {
        Self {
            ops,
            samples,
            elapsed,
            timed: true,
        }
    }

    /// A slice in which operations were only counted.
    pub(crate) fn counted(ops: u64, elapsed: Duration) -> Self {
        Self {
            ops,
            samples: Vec::new(),
            elapsed,
            timed: false,
        }
    }

    /// Adds another slice of the same point.
    pub(crate) fn add(&mut self, slice: Tally) {
        let first = self.elapsed.is_zero() && self.ops == 0;
        self.ops += slice.ops;
        self.elapsed += slice.elapsed;
        self.timed = if first {
            slice.timed
        } else {
            self.timed && slice.timed
        };
        self.samples.extend(slice.samples);
    }

    /// The point measured over every slice added so far.
    pub(crate) fn measurement(mut self) -> Measurement {
        if self.timed {
            Measurement {
                ops: self.ops,
                ..Measurement::from_samples(&mut self.samples, self.elapsed)
            }
        } else {
            Measurement::rate(self.ops, self.elapsed)
        }
    }
}

/// Latency percentiles of the timed operations of one measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Latency {
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
}

/// One measured point.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Measurement {
    /// Operations completed (round trips, or messages delivered).
    pub(crate) ops: u64,
    pub(crate) elapsed: Duration,
    /// Present when each operation was timed on its own.
    pub(crate) latency: Option<Latency>,
}

impl Measurement {
    /// A throughput-only measurement (one-way messages are not timed one by one).
    pub(crate) fn rate(ops: u64, elapsed: Duration) -> Self {
        Self {
            ops,
            elapsed,
            latency: None,
        }
    }

    /// A measurement from every operation's latency, in nanoseconds; sorts `samples`.
    pub(crate) fn from_samples(samples: &mut [u64], elapsed: Duration) -> Self {
        samples.sort_unstable();
        Self {
            ops: samples.len() as u64,
            elapsed,
            latency: (!samples.is_empty()).then(|| Latency {
                p50: Duration::from_nanos(percentile(samples, 50.0)),
                p99: Duration::from_nanos(percentile(samples, 99.0)),
            }),
        }
    }

    /// Operations per second.
    pub(crate) fn per_second(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.ops as f64 / seconds
        } else {
            0.0
        }
    }
}

/// The nearest-rank percentile `p` (0..=100) of sorted, non-empty `sorted`.
pub(crate) fn percentile(sorted: &[u64], p: f64) -> u64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// How a checked number is judged against its floor (or ceiling).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Bound {
    /// The number must be at least this.
    AtLeast(f64),
    /// The number must be at most this.
    AtMost(f64),
    /// The number must be exactly this (a count, such as failed calls).
    Exactly(f64),
}

/// What a checked number is, which decides how it and its bound read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scale {
    /// A ratio of two measurements, read as `1.60x`.
    Ratio,
    /// A duration in seconds, read as `85.2 ms`.
    Time,
    /// A count, read as `0`.
    Count,
    /// An amount of memory in MiB, read as `12.3 MiB`.
    Mebibytes,
    /// A percentage (of a CPU core), read as `0.42%`.
    Percent,
}

/// A number the report checks and the bound it is held to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Check {
    pub(crate) what: String,
    /// NaN when it could not be computed (a point was not measured); infinite when what it
    /// times never happened within the run.
    pub(crate) measured: f64,
    pub(crate) bound: Bound,
    pub(crate) scale: Scale,
}

impl Check {
    /// A ratio between two measurements; one that is not a finite number reads n/a.
    pub(crate) fn new(what: impl Into<String>, ratio: f64, bound: Bound) -> Self {
        Self {
            what: what.into(),
            measured: if ratio.is_finite() { ratio } else { f64::NAN },
            bound,
            scale: Scale::Ratio,
        }
    }

    /// A duration that must not exceed `ceiling`; `None` (what it times never happened within
    /// the run) misses.
    pub(crate) fn within(
        what: impl Into<String>,
        measured: Option<Duration>,
        ceiling: Duration,
    ) -> Self {
        Self {
            what: what.into(),
            measured: measured.map_or(f64::INFINITY, |d| d.as_secs_f64()),
            bound: Bound::AtMost(ceiling.as_secs_f64()),
            scale: Scale::Time,
        }
    }

    /// An amount of memory, in MiB, held to `bound` (also in MiB).
    pub(crate) fn mebibytes(what: impl Into<String>, mebibytes: f64, bound: Bound) -> Self {
        Self {
            what: what.into(),
            measured: mebibytes,
            bound,
            scale: Scale::Mebibytes,
        }
    }

    /// A percentage (such as CPU time as a share of one core), held to `bound`; `None` (not
    /// measured) reads n/a.
    pub(crate) fn percent(what: impl Into<String>, measured: Option<f64>, bound: Bound) -> Self {
        Self {
            what: what.into(),
            measured: measured.unwrap_or(f64::NAN),
            bound,
            scale: Scale::Percent,
        }
    }

    /// A rate, in operations per second, held to `bound`; n/a when it was not measured.
    pub(crate) fn rate(what: impl Into<String>, measurement: &Measurement, bound: Bound) -> Self {
        Self {
            what: what.into(),
            measured: if measurement.elapsed.is_zero() {
                f64::NAN
            } else {
                measurement.per_second()
            },
            bound,
            scale: Scale::Count,
        }
    }

    /// A count that must be zero.
    pub(crate) fn none(what: impl Into<String>, count: u64) -> Self {
        Self {
            what: what.into(),
            measured: count as f64,
            bound: Bound::Exactly(0.0),
            scale: Scale::Count,
        }
    }

    /// The same check for a scenario that was not run (see `--only`): it reads n/a.
    pub(crate) fn not_run(mut self) -> Self {
        self.measured = f64::NAN;
        self
    }

    /// PASS or MISS, or n/a when the number could not be computed (a point was not measured).
    pub(crate) fn verdict(&self) -> &'static str {
        if self.measured.is_nan() {
            "n/a"
        } else if self.passes() {
            "PASS"
        } else {
            "MISS"
        }
    }

    /// Whether the number meets its bound; one that could not be computed does not.
    pub(crate) fn passes(&self) -> bool {
        self.measured.is_finite()
            && match self.bound {
                Bound::AtLeast(floor) => self.measured >= floor,
                Bound::AtMost(ceiling) => self.measured <= ceiling,
                Bound::Exactly(value) => self.measured == value,
            }
    }
}

/// `a / b` throughputs; NaN when either was not measured.
pub(crate) fn throughput_ratio(a: &Measurement, b: &Measurement) -> f64 {
    if a.elapsed.is_zero() || b.elapsed.is_zero() {
        return f64::NAN;
    }
    a.per_second() / b.per_second()
}

/// `a / b` median latencies; NaN when either was not timed.
pub(crate) fn p50_ratio(a: &Measurement, b: &Measurement) -> f64 {
    latency_ratio(a, b, |l| l.p50)
}

/// `a / b` 99th-percentile latencies; NaN when either was not timed.
pub(crate) fn p99_ratio(a: &Measurement, b: &Measurement) -> f64 {
    latency_ratio(a, b, |l| l.p99)
}

fn latency_ratio(a: &Measurement, b: &Measurement, pick: fn(&Latency) -> Duration) -> f64 {
    match (&a.latency, &b.latency) {
        (Some(a), Some(b)) => pick(a).as_secs_f64() / pick(b).as_secs_f64(),
        _ => f64::NAN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut samples: Vec<u64> = (1..=100).rev().collect();
        let m = Measurement::from_samples(&mut samples, Duration::from_secs(2));
        assert_eq!(m.ops, 100);
        assert_eq!(m.per_second(), 50.0);
        let latency = m.latency.unwrap();
        assert_eq!(latency.p50, Duration::from_nanos(50));
        assert_eq!(latency.p99, Duration::from_nanos(99));
        assert_eq!(percentile(&[7], 99.0), 7);
    }

    #[test]
    fn tallies_add_slices_up() {
        let mut tally = Tally::default();
        tally.add(Tally::timed(vec![30, 10], Duration::from_secs(1)));
        tally.add(Tally::timed(vec![20], Duration::from_secs(2)));
        let m = tally.measurement();
        assert_eq!(m.ops, 3);
        assert_eq!(m.elapsed, Duration::from_secs(3));
        assert_eq!(m.latency.unwrap().p50, Duration::from_nanos(20));
        let mut counted = Tally::default();
        counted.add(Tally::counted(10, Duration::from_secs(1)));
        counted.add(Tally::counted(20, Duration::from_secs(1)));
        let m = counted.measurement();
        assert_eq!((m.ops, m.latency), (30, None));
    }

    #[test]
    fn checks_hold_ratios_to_their_bounds() {
        assert!(Check::new("x", 1.5, Bound::AtLeast(1.5)).passes());
        assert!(!Check::new("x", 1.4, Bound::AtLeast(1.5)).passes());
        assert!(Check::new("x", 1.3, Bound::AtMost(1.3)).passes());
        assert!(!Check::new("x", f64::NAN, Bound::AtMost(1.3)).passes());
        assert_eq!(
            Check::new("x", f64::NAN, Bound::AtMost(1.3)).verdict(),
            "n/a"
        );
        assert_eq!(Check::new("x", 2.0, Bound::AtMost(1.3)).verdict(), "MISS");
        assert_eq!(
            Check::new("x", f64::INFINITY, Bound::AtLeast(1.0)).verdict(),
            "n/a"
        );
        let timed = Measurement::from_samples(&mut [10, 10], Duration::from_secs(1));
        let untimed = Measurement::rate(5, Duration::from_secs(1));
        assert!(p50_ratio(&timed, &untimed).is_nan());
        assert!(p99_ratio(&untimed, &timed).is_nan());
        assert_eq!(throughput_ratio(&timed, &untimed), 0.4);
        assert!(throughput_ratio(&timed, &Measurement::rate(0, Duration::ZERO)).is_nan());
        let slower = Measurement::from_samples(&mut [10, 30], Duration::from_secs(1));
        assert!((p99_ratio(&slower, &timed) - 3.0).abs() < 1e-9);
    }

    #[test]
    fn durations_and_counts_have_bounds_too() {
        let ceiling = Duration::from_millis(100);
        let fast = Check::within("x", Some(Duration::from_millis(3)), ceiling);
        assert_eq!((fast.scale, fast.verdict()), (Scale::Time, "PASS"));
        assert_eq!(
            Check::within("x", Some(Duration::from_millis(101)), ceiling).verdict(),
            "MISS"
        );
        // What never happened within the run misses rather than reading n/a.
        assert_eq!(Check::within("x", None, ceiling).verdict(), "MISS");
        assert_eq!(Check::none("x", 0).verdict(), "PASS");
        assert_eq!(Check::none("x", 1).verdict(), "MISS");
        assert_eq!(Check::none("x", 0).not_run().verdict(), "n/a");
        let fast = Measurement::rate(300, Duration::from_secs(2));
        assert_eq!(
            Check::rate("x", &fast, Bound::AtLeast(100.0)).verdict(),
            "PASS"
        );
        assert_eq!(
            Check::rate("x", &fast, Bound::AtLeast(200.0)).verdict(),
            "MISS"
        );
        let none = Measurement::rate(0, Duration::ZERO);
        assert_eq!(
            Check::rate("x", &none, Bound::AtLeast(1.0)).verdict(),
            "n/a"
        );
        let small = Check::mebibytes("x", 12.3, Bound::AtMost(30.0));
        assert_eq!((small.scale, small.verdict()), (Scale::Mebibytes, "PASS"));
        assert_eq!(
            Check::mebibytes("x", 30.5, Bound::AtMost(30.0)).verdict(),
            "MISS"
        );
    }
}
