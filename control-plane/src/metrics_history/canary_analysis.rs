//! Automatic canary analysis: the leader keeps, per service, what each revision's
//! instances answered in the last analysis window (from the same scrapes as the
//! charts), and [`judge`]s the canary against the serving revision. A canary is
//! rolled back when it has answered enough calls in the window and its error rate
//! is above both its limit and the serving revision's (a failure both share, such
//! as a store outage, is not the canary's fault). Latency is not judged yet. In
//! memory: a new leader judges from its own first window.

use std::collections::{BTreeMap, VecDeque};

use super::outcomes::Outcomes;
use crate::registry::{Canary, CanaryAnalysis};

/// What one revision's instances answered in one round.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Round {
    at_ms: u64,
    revision: u64,
    outcomes: Outcomes,
}

/// Each service's rounds within the longest window any canary asks for.
#[derive(Debug, Default)]
pub struct CanaryWindows {
    rounds: BTreeMap<String, VecDeque<Round>>,
}

/// Sums of one window: the canary's and the serving revision's.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Comparison {
    pub canary: Outcomes,
    pub stable: Outcomes,
}

impl CanaryWindows {
    /// Records what `revision`'s instances of `service` answered in the round at
    /// `at_ms`.
    pub fn record(&mut self, service: &str, at_ms: u64, revision: u64, outcomes: Outcomes) {
        if outcomes.calls == 0.0 {
            return;
        }
        self.rounds.entry(service.to_owned()).or_default().push_back(Round {
            at_ms,
            revision,
            outcomes,
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
                comparison.canary.add(&round.outcomes);
            } else if round.revision == serving {
                comparison.stable.add(&round.outcomes);
            }
        }
        Some(comparison)
    }
}

/// Why the canary must be rolled back, or `None` while it may go on.
pub fn judge(comparison: &Comparison, analysis: &CanaryAnalysis, serving: u64) -> Option<String> {
    let Comparison { canary, stable } = comparison;
    if canary.calls < f64::from(analysis.min_calls) {
        return None;
    }
    let rate = canary.error_rate()?;
    let limit = f64::from(analysis.max_error_rate_bp) / 10_000.0;
    let stable_rate = stable.error_rate().unwrap_or(0.0);
    if rate <= limit || rate <= stable_rate {
        return None;
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

#[cfg(test)]
mod tests {
    use super::*;

    const ANALYSIS: CanaryAnalysis = CanaryAnalysis {
        max_error_rate_bp: 500,
        min_calls: 20,
        window_ms: 60_000,
    };

    fn canary(started_at_ms: u64) -> Canary {
        Canary {
            revision: 3,
            percent: 25,
            started_at_ms,
            analysis: Some(ANALYSIS),
        }
    }

    fn outcomes(calls: f64, errors: f64) -> Outcomes {
        Outcomes { calls, errors }
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
        let judged = |canary: Outcomes, stable: Outcomes| judge(&Comparison { canary, stable }, &ANALYSIS, 2);
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
        assert_eq!(comparison.canary, outcomes(0.0, 0.0), "before the canary started");
        assert_eq!(windows.compare("cart", None, 2, 80_000), None);
        assert!(windows.rounds.is_empty(), "a service without a canary keeps nothing");
    }
}
