//! Canaries as the registry sees them: a revision that serves a stable slice of a
//! service's entities beside the serving revision. The slice is by shard, the
//! first [`canary_shards`] of them, so an entity goes to the same revision on every
//! call; the canary's ready instances are the only ones that may own those shards
//! (until one is ready, the serving revision keeps them), and the shards move to and
//! fro by hand-off like any other move (`handoff.rs`). Promoting makes the canary
//! the serving revision (a rollout whose new instances are already running); ending
//! it (a rollback, by hand or by the analysis) hands its shards back. Pure: `apply`
//! calls these.

use serde::{Deserialize, Serialize};

use strata_settings::parse_duration_ms;

use super::{RegistryError, Service};

/// Calls the canary must have answered in the window before the analysis judges it,
/// unless the canary says otherwise.
pub const DEFAULT_MIN_CALLS: u32 = 20;
/// The window the analysis judges over, unless the canary says otherwise.
pub const DEFAULT_ANALYSIS_WINDOW_MS: u64 = 60_000;

/// A revision serving `percent` of a service's shards beside the serving revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Canary {
    pub revision: u64,
    /// The share of the shards (and of the actions' calls) it serves, 1 to 99.
    pub percent: u32,
    pub started_at_ms: u64,
    /// When set, the control plane rolls the canary back on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<CanaryAnalysis>,
}

/// When the control plane rolls a canary back on its own, once it has answered at
/// least `min_calls` calls in the window: its error rate over the window is above
/// `max_error_rate_bp` (and above the serving revision's), or, with
/// `max_p99_ratio_pct`, its p99 latency is above that share of the serving
/// revision's (and slower by at least [`P99_MARGIN_MS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryAnalysis {
    /// In basis points (1/100 of a percent): 500 is 5%.
    pub max_error_rate_bp: u32,
    pub min_calls: u32,
    pub window_ms: u64,
    /// The canary's p99 over the serving revision's, in percent: 150 is 1.5 times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p99_ratio_pct: Option<u32>,
}

/// A canary is judged slower only when its p99 is also this much above the
/// serving revision's: at a millisecond or two, a ratio is noise.
pub const P99_MARGIN_MS: f64 = 5.0;

impl CanaryAnalysis {
    /// The analysis asked for by the three fields users give (the REST API's
    /// `canary_max_error_rate`, `canary_min_calls`, `canary_window`, and the
    /// `StatefulService`'s camelCase ones): `rate` a fraction ("0.05") or a
    /// percentage ("5%"), `window` a duration ("60s"). Without a rate, none; the
    /// minimum or the window without one is refused.
    pub fn from_fields(
        rate: Option<&str>,
        min_calls: Option<u32>,
        window: Option<&str>,
        p99_ratio: Option<f64>,
    ) -> Result<Option<CanaryAnalysis>, RegistryError> {
        let Some(rate) = rate else {
            if min_calls.is_some() || window.is_some() || p99_ratio.is_some() {
                return Err(RegistryError::invalid(
                    "canary_max_error_rate",
                    "canary_min_calls, canary_window and canary_max_p99_ratio go with canary_max_error_rate, which is not set",
                ));
            }
            return Ok(None);
        };
        let max_p99_ratio_pct = match p99_ratio {
            Some(ratio) if ratio > 1.0 && ratio <= 100.0 => Some((ratio * 100.0).round() as u32),
            Some(ratio) => {
                return Err(RegistryError::invalid(
                    "canary_max_p99_ratio",
                    format!(
                        "canary_max_p99_ratio is how many times the serving revision's p99 the canary's may be, above 1 and at most 100, not {ratio}"
                    ),
                ))
            }
            None => None,
        };
        let bad = || {
            RegistryError::invalid(
                "canary_max_error_rate",
                format!("canary_max_error_rate must be a fraction like 0.05 or a percentage like \"5%\", not {rate}"),
            )
        };
        let fraction = match rate.trim().strip_suffix('%') {
            Some(percent) => percent.trim().parse::<f64>().map_err(|_| bad())? / 100.0,
            None => rate.trim().parse::<f64>().map_err(|_| bad())?,
        };
        if !(fraction > 0.0 && fraction < 1.0) {
            return Err(RegistryError::invalid(
                "canary_max_error_rate",
                format!("canary_max_error_rate must be above 0 and below 1 (100%), not {rate}"),
            ));
        }
        let window_ms = match window {
            Some(text) => parse_duration_ms(text)
                .map_err(|error| RegistryError::invalid("canary_window", format!("canary_window: {error}")))?,
            None => DEFAULT_ANALYSIS_WINDOW_MS,
        };
        Ok(Some(CanaryAnalysis {
            max_error_rate_bp: (fraction * 10_000.0).round().clamp(1.0, 9_999.0) as u32,
            min_calls: min_calls.unwrap_or(DEFAULT_MIN_CALLS),
            window_ms,
            max_p99_ratio_pct,
        }))
    }
}

/// What a deploy or a traffic change asks of a canary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanarySpec {
    pub percent: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<CanaryAnalysis>,
}

/// How many of `shard_count` shards a canary of `percent` serves: the nearest whole
/// number, at least one and never all.
pub fn canary_shards(shard_count: usize, percent: u32) -> usize {
    let wanted = (shard_count * percent as usize + 50) / 100;
    wanted.clamp(1, shard_count.saturating_sub(1).max(1))
}

impl CanarySpec {
    /// Refuses a share that is not a canary's, or one a service cannot split.
    pub fn validate(&self, shard_count: usize) -> Result<(), RegistryError> {
        if !(1..=99).contains(&self.percent) {
            return Err(RegistryError::invalid(
                "traffic",
                format!(
                    "a canary serves 1 to 99 percent of the traffic, not {} (100 promotes it, 0 ends it)",
                    self.percent
                ),
            ));
        }
        if shard_count < 2 {
            return Err(RegistryError::invalid(
                "traffic",
                "a canary needs a service with at least two shards (it serves a slice of them); this one has one",
            ));
        }
        if let Some(analysis) = &self.analysis {
            if analysis.max_error_rate_bp == 0 || analysis.max_error_rate_bp >= 10_000 {
                return Err(RegistryError::invalid(
                    "canary_max_error_rate",
                    "the canary's maximum error rate must be above 0% and below 100%",
                ));
            }
            if analysis.max_p99_ratio_pct.is_some_and(|pct| pct <= 100 || pct > 10_000) {
                return Err(RegistryError::invalid(
                    "canary_max_p99_ratio",
                    "the canary's p99 ratio must be above 1 and at most 100",
                ));
            }
            if analysis.min_calls == 0 {
                return Err(RegistryError::invalid(
                    "canary_min_calls",
                    "the canary's minimum of calls must be at least 1",
                ));
            }
            if !(1_000..=3_600_000).contains(&analysis.window_ms) {
                return Err(RegistryError::invalid(
                    "canary_window",
                    "the canary's analysis window must be between 1s and 1h",
                ));
            }
        }
        Ok(())
    }
}

impl Service {
    /// The canary's revision and how many of the shards (counted from the first) it
    /// serves.
    pub fn canary_slice(&self) -> Option<(u64, usize)> {
        let canary = self.canary.as_ref()?;
        Some((canary.revision, canary_shards(self.shards.len(), canary.percent)))
    }

    /// Refuses a new revision while a canary runs (promote it or roll it back
    /// first), and a new canary while a rollout runs (its new revision is not
    /// ready yet, and the service is not at zero). A deploy
    /// during a rollout is not refused: it supersedes it.
    pub(super) fn refuse_while_moving(&self, canary: bool) -> Result<(), RegistryError> {
        if let Some(running) = &self.canary {
            return Err(RegistryError::Conflict {
                message: format!(
                    "revision {} of {:?} is a canary at {}%: promote it or roll it back before deploying another revision",
                    running.revision, self.name, running.percent
                ),
            });
        }
        // At zero nothing runs yet: the rollout and the canary both start at the wake.
        if let Some(rollout) = self.rollout.as_ref().filter(|_| canary && self.desired_replicas > 0) {
            return Err(RegistryError::Conflict {
                message: format!(
                    "{:?} is rolling out from revision {} to {}: a canary can start once revision {} is ready",
                    self.name, rollout.from, rollout.to, rollout.to
                ),
            });
        }
        Ok(())
    }

    /// How many instances of the canary's revision should run: its share of the
    /// desired count, rounded up, at least one while the service runs at all.
    pub fn canary_replicas(&self) -> Option<(u64, u32)> {
        let canary = self.canary.as_ref()?;
        let wanted = if self.desired_replicas == 0 {
            0
        } else {
            (self.desired_replicas * canary.percent).div_ceil(100).max(1)
        };
        Some((canary.revision, wanted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_canary_serves_its_share_of_the_shards_at_least_one_and_never_all() {
        assert_eq!(canary_shards(64, 25), 16);
        assert_eq!(canary_shards(64, 10), 6);
        assert_eq!(canary_shards(64, 1), 1);
        assert_eq!(canary_shards(64, 99), 63);
        assert_eq!(canary_shards(2, 50), 1);
        assert_eq!(canary_shards(2, 90), 1);
        assert_eq!(canary_shards(3, 90), 2);
    }

    #[test]
    fn a_share_outside_one_to_ninety_nine_or_a_single_shard_is_refused_with_why() {
        let spec = |percent| CanarySpec {
            percent,
            analysis: None,
        };
        for percent in [0, 100, 250] {
            let error = spec(percent).validate(64).unwrap_err().to_string();
            assert!(error.contains("1 to 99 percent"), "{error}");
        }
        let error = spec(10).validate(1).unwrap_err().to_string();
        assert!(error.contains("at least two shards"), "{error}");
        assert!(spec(10).validate(2).is_ok());
        let analysed = |max_error_rate_bp, min_calls, window_ms| CanarySpec {
            percent: 10,
            analysis: Some(CanaryAnalysis {
                max_p99_ratio_pct: None,
                max_error_rate_bp,
                min_calls,
                window_ms,
            }),
        };
        assert!(analysed(500, 20, 60_000).validate(64).is_ok());
        for (bad, field) in [
            (analysed(0, 20, 60_000), "error rate"),
            (analysed(10_000, 20, 60_000), "error rate"),
            (analysed(500, 0, 60_000), "minimum of calls"),
            (analysed(500, 20, 10), "window"),
        ] {
            let error = bad.validate(64).unwrap_err().to_string();
            assert!(error.contains(field), "{error}");
        }
    }
}
