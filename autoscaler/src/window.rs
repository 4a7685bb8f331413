//! Time-bucketed averages of a sampled gauge (a service's total in-flight requests) over
//! the stable and panic windows, one bucket per second. Owns no clock and no policy:
//! callers pass the time in and decide what the averages mean.

use std::collections::VecDeque;
use std::ops::Add;
use std::time::Duration;

/// A point in time, as the duration since an arbitrary fixed origin (the collector uses
/// the instant it started). The decision logic never reads a clock; it is handed these,
/// so tests can replay any series of ticks exactly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(Duration);

impl Timestamp {
    pub const ZERO: Timestamp = Timestamp(Duration::ZERO);

    pub const fn from_secs(secs: u64) -> Self {
        Timestamp(Duration::from_secs(secs))
    }

    pub const fn from_millis(millis: u64) -> Self {
        Timestamp(Duration::from_millis(millis))
    }

    pub const fn from_duration(since_origin: Duration) -> Self {
        Timestamp(since_origin)
    }

    pub const fn as_duration(self) -> Duration {
        self.0
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later: a clock that steps back
    /// must not panic the autoscaler.
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        self.0.saturating_sub(earlier.0)
    }

    /// The one-second bucket this instant falls into.
    fn second(self) -> u64 {
        self.0.as_secs()
    }
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;

    fn add(self, rhs: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(rhs))
    }
}

/// Per-second buckets of samples. A bucket's value is the mean of the samples recorded in
/// its second; a window's average is the mean of the buckets it covers. Seconds without a
/// sample are skipped rather than counted as zero: a failed scrape says nothing about the
/// load, and reading it as "idle" would scale a busy service down.
#[derive(Debug, Clone, Default)]
pub struct Window {
    /// Ascending by second, at most one bucket per second.
    buckets: VecDeque<Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    second: u64,
    sum: f64,
    samples: u32,
}

impl Bucket {
    fn value(&self) -> f64 {
        self.sum / f64::from(self.samples)
    }
}

impl Window {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a sample taken at `at`. Non-finite samples carry no information and are dropped.
    pub fn record(&mut self, at: Timestamp, value: f64) {
        if !value.is_finite() {
            return;
        }
        let second = at.second();
        // Samples almost always arrive in order, so search from the back.
        let position = self.buckets.iter().rposition(|bucket| bucket.second <= second);
        match position {
            Some(index) if self.buckets[index].second == second => {
                let bucket = &mut self.buckets[index];
                bucket.sum += value;
                bucket.samples = bucket.samples.saturating_add(1);
            }
            Some(index) => self.buckets.insert(
                index + 1,
                Bucket {
                    second,
                    sum: value,
                    samples: 1,
                },
            ),
            None => self.buckets.push_front(Bucket {
                second,
                sum: value,
                samples: 1,
            }),
        }
    }

    /// Mean of the buckets in the `span` ending at `now` (the current second included), or
    /// `None` when none of those seconds has a sample.
    pub fn average(&self, now: Timestamp, span: Duration) -> Option<f64> {
        let first = first_second(now, span);
        let last = now.second();
        let (sum, count) = self
            .buckets
            .iter()
            .rev()
            .skip_while(|bucket| bucket.second > last)
            .take_while(|bucket| bucket.second >= first)
            .fold((0.0, 0u32), |(sum, count), bucket| (sum + bucket.value(), count + 1));
        (count > 0).then(|| sum / f64::from(count))
    }

    /// Drops the buckets older than the `keep` span ending at `now`, so memory stays bounded
    /// by the longest window.
    pub fn prune(&mut self, now: Timestamp, keep: Duration) {
        let first = first_second(now, keep);
        while self.buckets.front().is_some_and(|bucket| bucket.second < first) {
            self.buckets.pop_front();
        }
    }

    /// Number of seconds that hold at least one sample.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// The first second a `span` ending at `now` covers: a 60 s window at second 100 covers
/// seconds 41..=100. A span is at least one bucket; a fractional one rounds up.
fn first_second(now: Timestamp, span: Duration) -> u64 {
    let seconds = (span.as_secs() + u64::from(span.subsec_nanos() > 0)).max(1);
    (now.second() + 1).saturating_sub(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);
    const SIX: Duration = Duration::from_secs(6);

    fn at(secs: u64) -> Timestamp {
        Timestamp::from_secs(secs)
    }

    #[test]
    fn empty_window_has_no_average() {
        let window = Window::new();
        assert_eq!(window.average(at(10), MINUTE), None);
        assert!(window.is_empty());
    }

    #[test]
    fn averages_over_the_span_ending_now() {
        let mut window = Window::new();
        for second in 1..=10 {
            window.record(at(second), second as f64);
        }
        // Seconds 5..=10 for a 6 s span: (5+6+7+8+9+10)/6.
        assert_eq!(window.average(at(10), SIX), Some(7.5));
        assert_eq!(window.average(at(10), MINUTE), Some(5.5));
        // At second 14 only seconds 9 and 10 are still inside the 6 s span.
        assert_eq!(window.average(at(14), SIX), Some(9.5));
        assert_eq!(window.average(at(16), SIX), None);
    }

    #[test]
    fn samples_in_one_second_share_a_bucket() {
        let mut window = Window::new();
        window.record(Timestamp::from_millis(1_000), 2.0);
        window.record(Timestamp::from_millis(1_900), 4.0);
        window.record(Timestamp::from_millis(2_000), 9.0);
        assert_eq!(window.len(), 2);
        // Bucket 1 is the mean of its samples (3), bucket 2 is 9: the window mean is 6.
        assert_eq!(window.average(at(2), SIX), Some(6.0));
    }

    #[test]
    fn missing_seconds_are_skipped_not_zero() {
        let mut window = Window::new();
        window.record(at(1), 10.0);
        window.record(at(5), 20.0);
        assert_eq!(window.average(at(5), SIX), Some(15.0));
    }

    #[test]
    fn out_of_order_samples_land_in_their_own_second() {
        let mut window = Window::new();
        window.record(at(3), 3.0);
        window.record(at(1), 1.0);
        window.record(at(2), 2.0);
        window.record(at(1), 3.0);
        assert_eq!(window.len(), 3);
        assert_eq!(window.average(at(1), Duration::from_secs(1)), Some(2.0));
        assert_eq!(window.average(at(3), SIX), Some((2.0 + 2.0 + 3.0) / 3.0));
    }

    #[test]
    fn future_buckets_are_not_counted() {
        let mut window = Window::new();
        window.record(at(5), 1.0);
        window.record(at(9), 100.0);
        assert_eq!(window.average(at(6), SIX), Some(1.0));
    }

    #[test]
    fn non_finite_samples_are_dropped() {
        let mut window = Window::new();
        window.record(at(1), f64::NAN);
        window.record(at(1), f64::INFINITY);
        assert!(window.is_empty());
    }

    #[test]
    fn prune_keeps_only_the_span() {
        let mut window = Window::new();
        for second in 0..200 {
            window.record(at(second), 1.0);
            window.prune(at(second), MINUTE);
        }
        assert_eq!(window.len(), 60);
        assert_eq!(window.average(at(199), Duration::from_secs(3_600)), Some(1.0));
        window.prune(at(1_000), MINUTE);
        assert!(window.is_empty());
    }

    #[test]
    fn spans_are_at_least_one_bucket_and_round_up() {
        let mut window = Window::new();
        window.record(at(9), 1.0);
        window.record(at(10), 3.0);
        assert_eq!(window.average(at(10), Duration::ZERO), Some(3.0));
        assert_eq!(window.average(at(10), Duration::from_millis(1_500)), Some(2.0));
    }

    #[test]
    fn early_seconds_do_not_underflow() {
        let mut window = Window::new();
        window.record(at(0), 4.0);
        assert_eq!(window.average(at(0), MINUTE), Some(4.0));
        window.prune(at(0), MINUTE);
        assert_eq!(window.len(), 1);
    }

    #[test]
    fn timestamps_saturate() {
        assert_eq!(at(3).saturating_since(at(5)), Duration::ZERO);
        assert_eq!(at(5).saturating_since(at(3)), Duration::from_secs(2));
        assert_eq!(at(5) + Duration::from_millis(500), Timestamp::from_millis(5_500));
    }
}
