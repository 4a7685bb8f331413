//! Idle times between a service's invocations, and the keep-alive and pre-warm windows
//! they predict: the hybrid histogram policy of Shahrad et al., "Serverless in the Wild"
//! (USENIX ATC 2020). Pure: the decision records idle times and asks for windows; where
//! the histogram is stored (the registry, so it survives failover) is the control plane's
//! business.
//!
//! Two departures from the paper, both for Strata's time scales (idle times from seconds
//! to hours, where the paper's were minutes): bins are geometric (each 10% wider than the
//! one before, from 1 s to 4 h) rather than one minute wide, so a window's error is a
//! fixed fraction of it; and the coefficient of variation of the bin counts is estimated
//! without counting each idle time as sharing a bin with itself, a bias that makes any
//! handful of idle times look concentrated (with 10 random idle times the plain estimate
//! is above the threshold whatever their spread).

use std::time::Duration;

/// Each bin's upper edge is this many times its lower edge.
pub const BIN_RATIO: f64 = 1.1;
/// Idle times this long or longer are out of bounds: counted, not binned.
pub const RANGE: Duration = Duration::from_secs(4 * 3_600);
/// Bin 0 holds idle times under one second; bin `k >= 1` holds `[r^(k-1), r^k)` seconds.
pub const BIN_COUNT: usize = 102;
/// Fewer idle times than this predict nothing.
pub const MIN_SAMPLES: u64 = 10;
/// The paper's test of a representative histogram: the coefficient of variation of the
/// bin counts must reach this. A pattern concentrated in a few bins passes; idle times
/// spread over many bins (random arrivals) do not, and the fixed grace applies.
pub const CV_THRESHOLD: f64 = 2.0;
/// The histogram decides only where the next request is expected at least this long
/// after the last: only then is there an instance to stop and pre-warm. With a shorter
/// head the histogram could only keep the instance for less time than the fixed policy
/// does, saving little at the price of cold starts in the tail (a timer every few
/// seconds would also restart its instance on every tick), so the fixed policy decides.
pub const MIN_PREWARM: Duration = Duration::from_secs(10);
/// Safety margin on both windows, as in the paper: pre-warm 10% earlier, keep alive 10% longer.
pub const MARGIN: f64 = 0.1;
/// Once this many idle times are counted, every count is halved: old patterns fade, and
/// the counts stay small.
pub const MAX_SAMPLES: u64 = 1_000;

/// Which percentiles of the idle-time distribution set the windows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HistogramPolicy {
    /// The head: an instance is started (pre-warmed) after this percentile of idle time.
    pub prewarm_percentile: f64,
    /// The tail: the instance is kept until this percentile of idle time has passed.
    pub keep_alive_percentile: f64,
}

impl Default for HistogramPolicy {
    /// The paper's choice: the 5th and 99th percentiles.
    fn default() -> Self {
        HistogramPolicy {
            prewarm_percentile: 5.0,
            keep_alive_percentile: 99.0,
        }
    }
}

/// What the histogram predicts for the time after an invocation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Prediction {
    /// The next invocation is expected `prewarm` to `prewarm + keep_alive` after the last
    /// one: no instance before, one instance during, none after.
    Windows { prewarm: Duration, keep_alive: Duration },
    /// No windows (the pattern is not predictable, or there is nothing to pre-warm);
    /// the fixed policy applies.
    Unpredictable(Unpredictable),
}

/// Why the histogram sets no windows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unpredictable {
    TooFewSamples {
        samples: u64,
    },
    /// Idle times spread over many bins (coefficient of variation below the threshold).
    Spread {
        cv: f64,
    },
    /// The percentile that sets a window lies beyond the histogram's range.
    OutOfBounds,
    /// The next request is expected within [`MIN_PREWARM`]: nothing to pre-warm.
    ShortIdle {
        prewarm: Duration,
    },
}

/// Counts of idle times per geometric bin, plus those beyond the range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdleHistogram {
    /// Empty until the first idle time, then `BIN_COUNT` long.
    counts: Vec<u32>,
    out_of_bounds: u32,
}

impl IdleHistogram {
    pub fn new() -> Self {
        Self::default()
    }

    /// A histogram from stored bins (`(bin, count)`); bins past the range are ignored.
    pub fn from_bins(bins: impl IntoIterator<Item = (usize, u32)>, out_of_bounds: u32) -> Self {
        let mut histogram = IdleHistogram {
            counts: Vec::new(),
            out_of_bounds,
        };
        for (bin, count) in bins {
            if bin < BIN_COUNT && count > 0 {
                let counts = histogram.counts_mut();
                counts[bin] = counts[bin].saturating_add(count);
            }
        }
        histogram
    }

    /// The non-empty bins as `(bin, count)`, for storage.
    pub fn bins(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, count)| **count > 0)
            .map(|(bin, count)| (bin, *count))
    }

    pub fn out_of_bounds(&self) -> u32 {
        self.out_of_bounds
    }

    /// Every idle time counted, in range or not.
    pub fn samples(&self) -> u64 {
        self.counts.iter().map(|count| u64::from(*count)).sum::<u64>() + u64::from(self.out_of_bounds)
    }

    pub fn record(&mut self, idle: Duration) {
        if idle >= RANGE {
            self.out_of_bounds = self.out_of_bounds.saturating_add(1);
        } else {
            let counts = self.counts_mut();
            let bin = bin_of(idle);
            counts[bin] = counts[bin].saturating_add(1);
        }
        if self.samples() >= MAX_SAMPLES {
            for count in &mut self.counts {
                *count /= 2;
            }
            self.out_of_bounds /= 2;
        }
    }

    /// The pre-warm and keep-alive windows, or why there are none.
    pub fn predict(&self, policy: &HistogramPolicy) -> Prediction {
        let samples = self.samples();
        if samples < MIN_SAMPLES {
            return Prediction::Unpredictable(Unpredictable::TooFewSamples { samples });
        }
        let cv = self.bin_count_cv();
        if cv < CV_THRESHOLD {
            return Prediction::Unpredictable(Unpredictable::Spread { cv });
        }
        let (Some(head), Some(tail)) = (
            self.percentile_bin(policy.prewarm_percentile),
            self.percentile_bin(policy.keep_alive_percentile),
        ) else {
            return Prediction::Unpredictable(Unpredictable::OutOfBounds);
        };
        let prewarm = lower_edge(head).mul_f64(1.0 - MARGIN);
        if prewarm < MIN_PREWARM {
            return Prediction::Unpredictable(Unpredictable::ShortIdle { prewarm });
        }
        let keep_until = upper_edge(tail).mul_f64(1.0 + MARGIN);
        Prediction::Windows {
            prewarm,
            keep_alive: keep_until.saturating_sub(prewarm),
        }
    }

    /// The bin that holds the `percentile`-th idle time, `None` when it is out of bounds.
    fn percentile_bin(&self, percentile: f64) -> Option<usize> {
        let samples = self.samples();
        // The rank of the idle time at this percentile, counting from 1.
        let rank = ((percentile / 100.0) * samples as f64).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (bin, count) in self.counts.iter().enumerate() {
            seen += u64::from(*count);
            if seen >= rank {
                return Some(bin);
            }
        }
        None
    }

    /// Coefficient of variation of the counts over every bin of the range. Over `B` bins
    /// with counts `c` summing to `n`, `CV² + 1 = B·Σc²/n²`; `Σc²/n²` is the chance that two
    /// idle times drawn with replacement share a bin, which counts each idle time paired
    /// with itself. Drawn without replacement (`Σc(c-1) / n(n-1)`) the estimate has no such
    /// bias, so a few spread-out idle times no longer pass as a pattern.
    fn bin_count_cv(&self) -> f64 {
        let samples = self.samples() as f64;
        if samples < 2.0 {
            return 0.0;
        }
        let pairs: f64 = self
            .counts
            .iter()
            .map(|count| f64::from(*count) * (f64::from(*count) - 1.0))
            .sum();
        let shared = pairs / (samples * (samples - 1.0));
        (BIN_COUNT as f64 * shared - 1.0).max(0.0).sqrt()
    }

    fn counts_mut(&mut self) -> &mut Vec<u32> {
        if self.counts.is_empty() {
            self.counts = vec![0; BIN_COUNT];
        }
        &mut self.counts
    }
}

/// The bin an in-range idle time falls into.
pub fn bin_of(idle: Duration) -> usize {
    let seconds = idle.as_secs_f64();
    if seconds < 1.0 {
        return 0;
    }
    let bin = 1 + (seconds.ln() / BIN_RATIO.ln()).floor() as usize;
    bin.min(BIN_COUNT - 1)
}

/// Where bin `bin` starts.
pub fn lower_edge(bin: usize) -> Duration {
    if bin == 0 {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(BIN_RATIO.powi(bin as i32 - 1))
}

/// Where bin `bin` ends.
pub fn upper_edge(bin: usize) -> Duration {
    Duration::from_secs_f64(BIN_RATIO.powi(bin as i32))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(seconds: f64) -> Duration {
        Duration::from_secs_f64(seconds)
    }

    fn histogram(idle_times: &[f64]) -> IdleHistogram {
        let mut histogram = IdleHistogram::new();
        for idle in idle_times {
            histogram.record(secs(*idle));
        }
        histogram
    }

    #[test]
    fn bins_are_geometric_from_one_second_to_four_hours() {
        assert_eq!(bin_of(secs(0.4)), 0);
        assert_eq!(bin_of(secs(1.0)), 1);
        assert_eq!(bin_of(secs(1.09)), 1);
        assert_eq!(bin_of(secs(1.11)), 2);
        assert_eq!((lower_edge(0), upper_edge(0)), (Duration::ZERO, secs(1.0)));
        // Every in-range idle time lies inside its bin's edges.
        for idle in [1.0, 3.3, 45.0, 299.9, 300.0, 3_600.0, 14_399.0] {
            let bin = bin_of(secs(idle));
            assert!(
                lower_edge(bin) <= secs(idle) && secs(idle) < upper_edge(bin),
                "{idle}s in bin {bin}"
            );
        }
        assert_eq!(bin_of(RANGE - Duration::from_millis(1)), BIN_COUNT - 1);
        assert!(upper_edge(BIN_COUNT - 1) >= RANGE);
    }

    #[test]
    fn records_idle_times_and_round_trips_through_storage() {
        let mut recorded = histogram(&[45.0, 44.0, 0.2]);
        recorded.record(RANGE);
        assert_eq!(recorded.samples(), 4);
        assert_eq!(recorded.out_of_bounds(), 1);
        let bins: Vec<(usize, u32)> = recorded.bins().collect();
        assert_eq!(bins, vec![(0, 1), (bin_of(secs(45.0)), 2)]);
        assert_eq!(IdleHistogram::from_bins(bins.clone(), 1), recorded);
        // Bins beyond the range (a newer build's, say) are dropped, not a panic.
        let stored = IdleHistogram::from_bins([(BIN_COUNT, 7), (3, 0)], 0);
        assert_eq!(stored.samples(), 0);
    }

    #[test]
    fn old_counts_fade_by_halving() {
        let mut histogram = IdleHistogram::new();
        for _ in 0..MAX_SAMPLES - 1 {
            histogram.record(secs(10.0));
        }
        histogram.record(secs(100.0));
        // 999 + 1 reached the cap: 499 and 0 remain.
        assert_eq!(histogram.samples(), 499);
        assert_eq!(histogram.bins().collect::<Vec<_>>(), vec![(bin_of(secs(10.0)), 499)]);
    }

    #[test]
    fn a_periodic_timer_predicts_prewarm_and_keep_alive_windows() {
        let timer = histogram(&[45.0; 10]);
        let bin = bin_of(secs(45.0));
        let Prediction::Windows { prewarm, keep_alive } = timer.predict(&HistogramPolicy::default()) else {
            panic!(
                "a timer is predictable: {:?}",
                timer.predict(&HistogramPolicy::default())
            );
        };
        assert_eq!(prewarm, lower_edge(bin).mul_f64(0.9));
        assert_eq!(prewarm + keep_alive, upper_edge(bin).mul_f64(1.1));
        // About 37 s of no instance, then about 13 s of one, around the 45 s tick.
        assert!(prewarm > secs(36.0) && prewarm < secs(38.0), "{prewarm:?}");
        assert!(prewarm + keep_alive > secs(49.0) && prewarm + keep_alive < secs(51.0));
    }

    #[test]
    fn percentiles_pick_the_head_and_the_tail() {
        // 2 of 40 idle times are shorter (5%), one is long (2.5% > 1%): the tail covers it.
        let mut idle = vec![60.0; 37];
        idle.extend([20.0, 20.0, 200.0]);
        let mixed = histogram(&idle);
        let policy = HistogramPolicy::default();
        let Prediction::Windows { prewarm, keep_alive } = mixed.predict(&policy) else {
            panic!("{:?}", mixed.predict(&policy));
        };
        assert_eq!(prewarm, lower_edge(bin_of(secs(20.0))).mul_f64(0.9));
        assert_eq!(prewarm + keep_alive, upper_edge(bin_of(secs(200.0))).mul_f64(1.1));

        // Narrower percentiles ignore the outliers.
        let narrow = HistogramPolicy {
            prewarm_percentile: 10.0,
            keep_alive_percentile: 95.0,
        };
        let Prediction::Windows { prewarm, keep_alive } = mixed.predict(&narrow) else {
            panic!("{:?}", mixed.predict(&narrow));
        };
        assert_eq!(prewarm, lower_edge(bin_of(secs(60.0))).mul_f64(0.9));
        assert_eq!(prewarm + keep_alive, upper_edge(bin_of(secs(60.0))).mul_f64(1.1));
    }

    #[test]
    fn a_short_head_leaves_it_to_the_fixed_policy() {
        // Most idle times are a few seconds: stopping the instance in between would cost
        // a restart every time, and keeping it through the tail is what the fixed policy
        // already does (for longer).
        let mut idle = vec![3.0; 9];
        idle.push(20.0);
        let chatty = histogram(&idle);
        assert_eq!(
            chatty.predict(&HistogramPolicy::default()),
            Prediction::Unpredictable(Unpredictable::ShortIdle {
                prewarm: lower_edge(bin_of(secs(3.0))).mul_f64(0.9)
            })
        );
    }

    #[test]
    fn falls_back_when_the_pattern_is_not_predictable() {
        let policy = HistogramPolicy::default();
        assert_eq!(
            histogram(&[45.0; 9]).predict(&policy),
            Prediction::Unpredictable(Unpredictable::TooFewSamples { samples: 9 })
        );
        // Twelve idle times, no two in one bin: however few, they show no pattern.
        let spread: Vec<f64> = (0..12).map(|bin| BIN_RATIO.powi(3 * bin) * 1.01).collect();
        assert_eq!(
            histogram(&spread).predict(&policy),
            Prediction::Unpredictable(Unpredictable::Spread { cv: 0.0 })
        );
        // Random arrivals (idle times of an exponential distribution, mean 20 s, from a
        // fixed seed): spread over some 30 bins.
        let mut seed = 42u64;
        let random: Vec<f64> = (0..40)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let uniform = ((seed >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
                -20.0 * uniform.ln()
            })
            .collect();
        let Prediction::Unpredictable(Unpredictable::Spread { cv }) = histogram(&random).predict(&policy) else {
            panic!("{:?}", histogram(&random).predict(&policy));
        };
        assert!(cv < CV_THRESHOLD, "{cv}");
        // A timer with a little jitter either side of a bin edge is still a pattern.
        let edge = upper_edge(bin_of(secs(45.0))).as_secs_f64();
        let jittered: Vec<f64> = (0..10).map(|i| edge + if i % 2 == 0 { -0.3 } else { 0.3 }).collect();
        assert!(matches!(
            histogram(&jittered).predict(&policy),
            Prediction::Windows { .. }
        ));
        // Mostly longer than the range: the tail is out of bounds.
        let mut beyond = histogram(&[45.0; 10]);
        for _ in 0..10 {
            beyond.record(RANGE + Duration::from_secs(60));
        }
        assert_eq!(
            beyond.predict(&policy),
            Prediction::Unpredictable(Unpredictable::OutOfBounds)
        );
        assert_eq!(
            IdleHistogram::new().predict(&policy),
            Prediction::Unpredictable(Unpredictable::TooFewSamples { samples: 0 })
        );
    }
}
