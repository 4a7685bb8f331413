//! Automatic canary analysis: the leader keeps, per service, what each revision's
//! instances answered in the last analysis window (from the same scrapes as the
//! charts: calls, server errors and the latency histogram), and [`judge`]s the
//! canary against the serving revision. A canary is rolled back when it has
//! answered enough calls in the window and its error rate is above both its limit
//! and the serving revision's (a failure both share, such as a store outage, is not
//! the canary's fault), or, when a p99 ratio is set, its p99 latency is above that
//! many times the serving revision's (and slower by a margin). In memory: a new
//! leader judges from its own first window.

use std::collections::{BTreeMap, VecDeque};

use super::latency::LatencyHistogram;
use super::outcomes::Outcomes;
use crate::registry::{Canary, CanaryAnalysis, P99_MARGIN_MS};

/// What one revision's instances answered in one round.
#[derive(Debug, Clone, PartialEq)]
struct Round {
    at_ms: u64,
    revision: u64,
    answered: Answered,
}

/// Calls and their latency: one instance's cumulative reading, what it answered
/// between two readings, or a sum of those over a round or a window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answered {
    pub outcomes: Outcomes,
    pub latency: LatencyHistogram,
}

impl Answered {
    /// What was answered between `earlier` and this reading of one instance.
    pub fn since(&self, earlier: &Answered) -> Answered {
        Answered {
            outcomes: self.outcomes.since(&earlier.outcomes),
            latency: self.latency.since(&earlier.latency),
        }
    }

    pub fn add(&mut self, other: &Answered) {
        self.outcomes.add(&other.outcomes);
        self.latency.add(&other.latency);
    }
}

/// Each service's rounds within the longest window any canary asks for.
#[derive(Debug, Default)]
pub struct CanaryWindows {
    rounds: BTreeMap<String, VecDeque<Round>>,
}

/// Sums of one window: the canary's and the serving revision's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Comparison {
    pub canary: Answered,
    pub stable: Answered,
}

impl CanaryWindows {
    /// Records what `revision`'s instances of `service` answered in the round at
    /// `at_ms`.
    pub fn record(&mut self, service: &str, at_ms: u64, revision: u64, answered: Answered) {
        if answered.outcomes.calls == 0.0 {
            return;
        }
        self.rounds.entry(service.to_owned()).or_default().push_back(Round {
            at_ms,
            revision,
            answered,
        });
    }

    /// Drops what `service` answered (it has no canary under analysis).
    pub fn forget(&mut self, service: &str) {
        self.rounds.remove(service);
    }

    /// The canary's and the serving revision's sums over the canary's window (and
    /// since it started), dropping older rounds. Services without a canary forget
    /// theirs.
    pub fn compare(&mut self, service: &str, canary: Option<&Canary>, serving: u64, now_ms: u64) -> Option<Comparison> {
        let Some((canary, analysis)) = canary.and_then(|canary| Some((canary, canary.analysis?))) else {
            self.forget(service);
            return None;
        };
        let since = now_ms.saturating_sub(analysis.window_ms).max(canary.started_at_ms);
        let rounds = self.rounds.entry(service.to_owned()).or_default();
        while rounds.front().is_some_and(|round| round.at_ms < since) {
            rounds.pop_front();
        }
        let mut comparison = Comparison::default();
        for round in rounds.iter() {
            if round.revision == canary.revision {
                comparison.canary.add(&round.answered);
            } else if round.revision == serving {
                comparison.stable.add(&round.answered);
            }
        }
        Some(comparison)
    }
}

/// Why the canary must be rolled back, or `None` while it may go on.
pub fn judge(comparison: &Comparison, analysis: &CanaryAnalysis, serving: u64) -> Option<String> {
    let (canary, stable) = (&comparison.canary.outcomes, &comparison.stable.outcomes);
    if canary.calls < f64::from(analysis.min_calls) {
        return None;
    }
    let rate = canary.error_rate()?;
    let limit = f64::from(analysis.max_error_rate_bp) / 10_000.0;
    let stable_rate = stable.error_rate().unwrap_or(0.0);
    if rate <= limit || rate <= stable_rate {
        return judge_latency(comparison, analysis, serving);
    }
    let percent = |rate: f64| format!("{:.1}%", rate * 100.0);
    Some(format!(
        "its error rate over the last {} s was {} ({} of {} calls), above its limit of {} and revision {serving}'s {} ({} calls)",
        analysis.window_ms / 1000,
        percent(rate),
        canary.errors,
        canary.calls,
        percent(limit),
        percent(stable_rate),
        stable.calls,
    ))
}

/// Why the canary is too slow, with a p99 ratio set: both revisions answered
/// enough calls, and the canary's p99 is above the ratio of the serving revision's
/// and slower by at least the margin.
fn judge_latency(comparison: &Comparison, analysis: &CanaryAnalysis, serving: u64) -> Option<String> {
    let ratio = f64::from(analysis.max_p99_ratio_pct?) / 100.0;
    let enough = |answered: &Answered| answered.outcomes.calls >= f64::from(analysis.min_calls);
    if !enough(&comparison.canary) || !enough(&comparison.stable) {
        return None;
    }
    let canary_ms = comparison.canary.latency.quantile(0.99)? * 1000.0;
    let stable_ms = comparison.stable.latency.quantile(0.99)? * 1000.0;
    if canary_ms <= stable_ms * ratio || canary_ms - stable_ms < P99_MARGIN_MS {
        return None;
    }
    Some(format!(
        "its p99 latency over the last {} s was {canary_ms:.1} ms ({} calls), above {ratio} times revision {serving}'s {stable_ms:.1} ms ({} calls)",
        analysis.window_ms / 1000,
        comparison.canary.outcomes.calls,
        comparison.stable.outcomes.calls,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANALYSIS: CanaryAnalysis = CanaryAnalysis {
        max_error_rate_bp: 500,
        min_calls: 20,
        window_ms: 60_000,
        max_p99_ratio_pct: None,
    };

    fn canary(started_at_ms: u64) -> Canary {
        Canary {
            revision: 3,
            percent: 25,
            started_at_ms,
            analysis: Some(ANALYSIS),
        }
    }

    fn outcomes(calls: f64, errors: f64) -> Answered {
        answered(calls, errors, 0.001)
    }

    /// `calls` calls, `errors` of them failed, each answered in `seconds`.
    fn answered(calls: f64, errors: f64, seconds: f64) -> Answered {
        Answered {
            outcomes: Outcomes { calls, errors },
            latency: LatencyHistogram::from_buckets([(seconds, calls), (f64::INFINITY, calls)]),
        }
    }

    #[test]
    fn a_canary_failing_a_fifth_of_its_calls_is_rolled_back_with_the_figures() {
        let mut windows = CanaryWindows::default();
        for second in 0..10 {
            windows.record("cart", 1_000 * second, 3, outcomes(5.0, 1.0));
            windows.record("cart", 1_000 * second, 2, outcomes(15.0, 0.0));
        }
        let comparison = windows.compare("cart", Some(&canary(0)), 2, 10_000).unwrap();
        assert_eq!(comparison.canary, outcomes(50.0, 10.0));
        let reason = judge(&comparison, &ANALYSIS, 2).expect("rolled back");
        assert_eq!(
            reason,
            "its error rate over the last 60 s was 20.0% (10 of 50 calls), above its limit of 5.0% and revision 2's 0.0% (150 calls)"
        );
    }

    #[test]
    fn too_few_calls_an_error_rate_under_the_limit_or_one_the_stable_shares_is_no_reason() {
        let judged = |canary: Answered, stable: Answered| judge(&Comparison { canary, stable }, &ANALYSIS, 2);
        assert_eq!(
            judged(outcomes(19.0, 19.0), outcomes(100.0, 0.0)),
            None,
            "too few calls"
        );
        assert_eq!(judged(outcomes(100.0, 5.0), outcomes(100.0, 0.0)), None, "at the limit");
        assert_eq!(
            judged(outcomes(100.0, 30.0), outcomes(100.0, 40.0)),
            None,
            "the stable fails as much"
        );
        assert!(judged(outcomes(100.0, 30.0), outcomes(0.0, 0.0)).is_some());
    }

    #[test]
    fn the_window_forgets_old_rounds_and_rounds_from_before_the_canary() {
        let mut windows = CanaryWindows::default();
        windows.record("cart", 1_000, 3, outcomes(100.0, 100.0));
        windows.record("cart", 70_000, 3, outcomes(10.0, 0.0));
        let comparison = windows.compare("cart", Some(&canary(0)), 2, 80_000).unwrap();
        assert_eq!(comparison.canary, outcomes(10.0, 0.0), "outside the window");
        let comparison = windows.compare("cart", Some(&canary(75_000)), 2, 80_000).unwrap();
        assert_eq!(comparison.canary, Answered::default(), "before the canary started");
        assert_eq!(windows.compare("cart", None, 2, 80_000), None);
        assert!(windows.rounds.is_empty(), "a service without a canary keeps nothing");
    }

    #[test]
    fn a_canary_slower_than_its_ratio_and_the_margin_is_rolled_back() {
        let analysis = CanaryAnalysis {
            max_p99_ratio_pct: Some(200),
            ..ANALYSIS
        };
        let judged = |canary: Answered, stable: Answered| judge(&Comparison { canary, stable }, &analysis, 2);
        let reason = judged(answered(100.0, 0.0, 0.050), answered(300.0, 0.0, 0.010)).expect("too slow");
        assert!(
            reason.starts_with("its p99 latency over the last 60 s was ")
                && reason.contains("ms (100 calls), above 2 times revision 2's"),
            "{reason}"
        );
        assert_eq!(
            judged(answered(100.0, 0.0, 0.015), answered(300.0, 0.0, 0.010)),
            None,
            "within the ratio"
        );
        assert_eq!(
            judged(answered(100.0, 0.0, 0.003), answered(300.0, 0.0, 0.001)),
            None,
            "within the margin"
        );
        assert_eq!(
            judged(answered(100.0, 0.0, 0.050), answered(10.0, 0.0, 0.010)),
            None,
            "too few calls of the serving revision to compare with"
        );
        let no_ratio = judge(
            &Comparison {
                canary: answered(100.0, 0.0, 0.050),
                stable: answered(300.0, 0.0, 0.010),
            },
            &ANALYSIS,
            2,
        );
        assert_eq!(no_ratio, None, "latency is judged only when asked");
    }
}
