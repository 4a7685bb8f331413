//! Request latency from the sidecars' cumulative Prometheus histogram
//! (`strata_proxy_request_duration_seconds`): read one exposition into buckets, take
//! the difference between two readings of one instance, and estimate a quantile the
//! way Prometheus' `histogram_quantile` does.

use std::collections::BTreeMap;

use strata_autoscaler::scrape::parse_line;

/// The sidecar's request latency histogram, in seconds.
pub const LATENCY_METRIC: &str = "strata_proxy_request_duration_seconds";

/// Cumulative counts by upper bound (`le`, in seconds; `+Inf` included), summed over
/// every service and method of one instance, or a difference of two such readings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencyHistogram {
    /// Upper bound in seconds (as its bit pattern, so it can key a map) to count.
    buckets: BTreeMap<u64, f64>,
}

impl LatencyHistogram {
    /// Reads the latency buckets out of an exposition; lines that do not parse or
    /// belong to other metrics are skipped (the autoscaler's parser judges the text).
    pub fn from_exposition(text: &str) -> Self {
        let bucket_name = format!("{LATENCY_METRIC}_bucket");
        let mut histogram = LatencyHistogram::default();
        for line in text.lines() {
            let Ok(Some(sample)) = parse_line(line) else {
                continue;
            };
            if sample.name != bucket_name || !sample.value.is_finite() {
                continue;
            }
            let Some(upper) = sample.label("le").and_then(parse_bound) else {
                continue;
            };
            *histogram.buckets.entry(upper.to_bits()).or_default() += sample.value;
        }
        histogram
    }

    /// Builds a histogram from `(upper bound in seconds, cumulative count)` pairs.
    pub fn from_buckets(buckets: impl IntoIterator<Item = (f64, f64)>) -> Self {
        LatencyHistogram {
            buckets: buckets
                .into_iter()
                .map(|(upper, count)| (upper.to_bits(), count))
                .collect(),
        }
    }

    /// What was observed between `earlier` and `self` (two readings of one instance).
    /// A counter that went down means the instance restarted: then all of `self` is new.
    pub fn since(&self, earlier: &LatencyHistogram) -> LatencyHistogram {
        let restarted = self
            .buckets
            .iter()
            .any(|(upper, count)| earlier.buckets.get(upper).is_some_and(|before| before > count));
        if restarted {
            return self.clone();
        }
        let buckets = self
            .buckets
            .iter()
            .map(|(upper, count)| (*upper, count - earlier.buckets.get(upper).copied().unwrap_or(0.0)))
            .collect();
        LatencyHistogram { buckets }
    }

    /// Adds another instance's histogram to this one.
    pub fn add(&mut self, other: &LatencyHistogram) {
        for (upper, count) in &other.buckets {
            *self.buckets.entry(*upper).or_default() += count;
        }
    }

    /// Buckets in increasing order of their upper bound.
    fn sorted(&self) -> Vec<(f64, f64)> {
        let mut buckets: Vec<(f64, f64)> = self
            .buckets
            .iter()
            .map(|(upper, count)| (f64::from_bits(*upper), *count))
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        buckets
    }

    /// The `q` quantile in seconds; `None` when nothing was observed.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        quantile(q, &self.sorted())
    }
}

fn parse_bound(text: &str) -> Option<f64> {
    match text {
        "+Inf" => Some(f64::INFINITY),
        _ => text.parse().ok(),
    }
}

/// The `q` quantile of a cumulative histogram given as `(upper bound, count)` pairs in
/// increasing order of bound, interpolating linearly inside the bucket it falls in
/// (from 0 for the first bucket). A quantile in the `+Inf` bucket is the largest finite
/// bound. `None` when the histogram is empty.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    // NaN counts are no observations either.
    let observed = total.is_finite() && total > 0.0;
    if !observed || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(upper, count) in buckets {
        if count >= rank {
            if upper.is_infinite() {
                return Some(lower.0);
            }
            let in_bucket = count - lower.1;
            if in_bucket <= 0.0 {
                return Some(upper);
            }
            return Some(lower.0 + (upper - lower.0) * (rank - lower.1) / in_bucket);
        }
        lower = (upper, count);
    }
    Some(lower.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = "\
# HELP strata_proxy_request_duration_seconds Request latency
# TYPE strata_proxy_request_duration_seconds histogram
strata_proxy_request_duration_seconds_bucket{service=\"a\",method=\"Get\",le=\"0.001\"} 2
strata_proxy_request_duration_seconds_bucket{service=\"a\",method=\"Get\",le=\"0.01\"} 8
strata_proxy_request_duration_seconds_bucket{service=\"a\",method=\"Get\",le=\"+Inf\"} 10
strata_proxy_request_duration_seconds_bucket{service=\"a\",method=\"Add\",le=\"0.001\"} 0
strata_proxy_request_duration_seconds_bucket{service=\"a\",method=\"Add\",le=\"0.01\"} 0
strata_proxy_request_duration_seconds_bucket{service=\"a\",method=\"Add\",le=\"+Inf\"} 10
strata_proxy_request_duration_seconds_sum{service=\"a\",method=\"Get\"} 0.5
strata_proxy_in_flight_requests{service=\"a\"} 3
";

    #[test]
    fn reads_and_sums_the_buckets_of_every_method() {
        let histogram = LatencyHistogram::from_exposition(EXPOSITION);
        assert_eq!(
            histogram,
            LatencyHistogram::from_buckets([(0.001, 2.0), (0.01, 8.0), (f64::INFINITY, 20.0)])
        );
    }

    #[test]
    fn quantiles_interpolate_inside_a_bucket() {
        let buckets = [(0.1, 50.0), (0.2, 100.0), (f64::INFINITY, 100.0)];
        assert_eq!(quantile(0.5, &buckets), Some(0.1));
        assert_eq!(quantile(0.25, &buckets), Some(0.05));
        let p75 = quantile(0.75, &buckets).unwrap();
        assert!((p75 - 0.15).abs() < 1e-12, "{p75}");
    }

    #[test]
    fn a_quantile_past_the_last_bound_is_that_bound() {
        let buckets = [(0.1, 1.0), (f64::INFINITY, 10.0)];
        assert_eq!(quantile(0.99, &buckets), Some(0.1));
    }

    #[test]
    fn nothing_observed_has_no_quantile() {
        assert_eq!(quantile(0.5, &[]), None);
        assert_eq!(quantile(0.5, &[(0.1, 0.0), (f64::INFINITY, 0.0)]), None);
        assert_eq!(LatencyHistogram::default().quantile(0.99), None);
    }

    #[test]
    fn the_difference_of_two_readings_is_what_happened_between() {
        let before = LatencyHistogram::from_buckets([(0.01, 5.0), (f64::INFINITY, 6.0)]);
        let after = LatencyHistogram::from_buckets([(0.01, 9.0), (f64::INFINITY, 12.0)]);
        assert_eq!(
            after.since(&before),
            LatencyHistogram::from_buckets([(0.01, 4.0), (f64::INFINITY, 6.0)])
        );
        // A restarted instance counts from zero again: everything it reports is new.
        let restarted = LatencyHistogram::from_buckets([(0.01, 1.0), (f64::INFINITY, 1.0)]);
        assert_eq!(restarted.since(&after), restarted);
    }

    #[test]
    fn instances_add_up() {
        let mut sum = LatencyHistogram::from_buckets([(0.01, 1.0), (f64::INFINITY, 2.0)]);
        sum.add(&LatencyHistogram::from_buckets([(0.01, 3.0), (f64::INFINITY, 3.0)]));
        assert_eq!(sum, LatencyHistogram::from_buckets([(0.01, 4.0), (f64::INFINITY, 5.0)]));
        assert_eq!(sum.quantile(0.5), Some(0.00625));
    }
}
