//! The knobs of one service's autoscaling with their defaults, and the checks that make
//! them safe to hand to the decision function. Where the registry stores them and how
//! users spell them (flags, REST fields) is the control plane's business.

use std::time::Duration;

use thiserror::Error;

use crate::idle::HistogramPolicy;

/// Longest stable window accepted: one bucket per second, so this bounds memory per service.
pub const MAX_STABLE_WINDOW: Duration = Duration::from_secs(3_600);

const ONE_SECOND: Duration = Duration::from_secs(1);

/// How one service scales. The defaults follow Knative's KPA where Strata has no reason to
/// differ (docs/architecture.md, "Autoscaler defaults", says where and why); target, bounds
/// and grace match the registry's defaults for a new service.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalingSettings {
    /// In-flight requests one instance should carry on average. Knative's default target
    /// is 100 at 70% utilisation, so it aims at 70; Strata's default is that 70.
    pub target_concurrency: f64,
    pub min_scale: u32,
    pub max_scale: u32,
    /// The window whose average drives ordinary scaling.
    pub stable_window: Duration,
    /// The short window that detects bursts.
    pub panic_window: PanicWindow,
    /// Panic when the panic window asks for this many times the ready instances (2.0 = 200%).
    pub panic_threshold: f64,
    /// One decision asks for at most this many times the ready instances.
    pub max_scale_up_rate: f64,
    /// One decision asks for no fewer than the ready instances divided by this.
    pub max_scale_down_rate: f64,
    /// How long one instance stays after the stable window has averaged zero, before the
    /// service goes to zero (only with `min_scale` 0). Knative's scale-to-zero grace period.
    pub scale_to_zero_grace: Duration,
    /// How the last instance is kept after traffic stops.
    pub keep_alive: KeepAlive,
}

/// The keep-alive policy for a service's last instance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KeepAlive {
    /// Knative's: zero once the stable window has averaged zero and the grace has passed.
    Fixed,
    /// Learn the service's idle times and keep an instance only where the next request is
    /// expected (pre-warming it shortly before); the fixed policy while the pattern is not
    /// predictable or there is nothing to pre-warm. The default: in the trace benchmark it
    /// never had more cold starts than `Fixed` and cost 40% fewer idle instance-hours.
    Histogram(HistogramPolicy),
}

/// The panic window, fixed or as a share of the stable window (Knative's default is 10%,
/// which keeps the two in proportion when a user shortens the stable window).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PanicWindow {
    Fixed(Duration),
    PercentOfStable(f64),
}

impl Default for ScalingSettings {
    fn default() -> Self {
        ScalingSettings {
            target_concurrency: 70.0,
            min_scale: 0,
            max_scale: 10,
            stable_window: Duration::from_secs(60),
            panic_window: PanicWindow::PercentOfStable(10.0),
            panic_threshold: 2.0,
            max_scale_up_rate: 1000.0,
            max_scale_down_rate: 2.0,
            scale_to_zero_grace: Duration::from_secs(30),
            keep_alive: KeepAlive::Histogram(HistogramPolicy::default()),
        }
    }
}

/// A setting out of range; the message names the setting and what it accepts.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid autoscaling setting {setting}: {message}")]
pub struct SettingsError {
    pub setting: &'static str,
    pub message: String,
}

impl SettingsError {
    fn new(setting: &'static str, message: impl Into<String>) -> Self {
        SettingsError {
            setting,
            message: message.into(),
        }
    }
}

impl ScalingSettings {
    /// Checks every setting; the decision function assumes settings that pass.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if !(self.target_concurrency.is_finite() && self.target_concurrency > 0.0) {
            return Err(SettingsError::new("target_concurrency", "must be a number above 0"));
        }
        if self.max_scale == 0 {
            return Err(SettingsError::new("max_scale", "must be at least 1"));
        }
        if self.min_scale > self.max_scale {
            return Err(SettingsError::new(
                "min_scale",
                format!("{} must not exceed max_scale ({})", self.min_scale, self.max_scale),
            ));
        }
        if self.stable_window < ONE_SECOND || self.stable_window > MAX_STABLE_WINDOW {
            return Err(SettingsError::new("stable_window", "must be between 1s and 1h"));
        }
        match self.panic_window {
            PanicWindow::Fixed(window) if window < ONE_SECOND || window > self.stable_window => {
                return Err(SettingsError::new(
                    "panic_window",
                    "must be at least 1s and no longer than the stable window",
                ));
            }
            PanicWindow::PercentOfStable(percent) if !(percent > 0.0 && percent <= 100.0) => {
                return Err(SettingsError::new(
                    "panic_window",
                    "a percentage must be above 0 and at most 100",
                ));
            }
            _ => {}
        }
        if !(self.panic_threshold.is_finite() && self.panic_threshold >= 1.0) {
            return Err(SettingsError::new(
                "panic_threshold",
                "must be at least 1.0 (100% of capacity)",
            ));
        }
        if !(self.max_scale_up_rate.is_finite() && self.max_scale_up_rate > 1.0) {
            return Err(SettingsError::new("max_scale_up_rate", "must be a number above 1"));
        }
        if !(self.max_scale_down_rate.is_finite() && self.max_scale_down_rate > 1.0) {
            return Err(SettingsError::new("max_scale_down_rate", "must be a number above 1"));
        }
        if let KeepAlive::Histogram(policy) = self.keep_alive {
            if !(0.0..=50.0).contains(&policy.prewarm_percentile) {
                return Err(SettingsError::new("prewarm_percentile", "must be between 0 and 50"));
            }
            if !(50.0..=100.0).contains(&policy.keep_alive_percentile) {
                return Err(SettingsError::new(
                    "keep_alive_percentile",
                    "must be between 50 and 100",
                ));
            }
        }
        Ok(())
    }

    /// The stable window, at least one second even in settings that were never validated.
    pub fn effective_stable_window(&self) -> Duration {
        self.stable_window.max(ONE_SECOND)
    }

    /// The panic window in time: at least one second and never longer than the stable window.
    pub fn effective_panic_window(&self) -> Duration {
        let stable = self.effective_stable_window();
        let window = match self.panic_window {
            PanicWindow::Fixed(window) => window,
            // try_from rather than mul_f64, which panics on a negative or NaN factor.
            PanicWindow::PercentOfStable(percent) => {
                Duration::try_from_secs_f64(stable.as_secs_f64() * percent / 100.0).unwrap_or(ONE_SECOND)
            }
        };
        window.max(ONE_SECOND).min(stable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_give_a_six_second_panic_window() {
        let settings = ScalingSettings::default();
        assert_eq!(settings.validate(), Ok(()));
        assert_eq!(settings.effective_panic_window(), Duration::from_secs(6));
        assert_eq!(settings.stable_window, Duration::from_secs(60));
        assert_eq!(settings.keep_alive, KeepAlive::Histogram(HistogramPolicy::default()));
    }

    #[test]
    fn panic_window_follows_a_shorter_stable_window() {
        let settings = ScalingSettings {
            stable_window: Duration::from_secs(20),
            ..Default::default()
        };
        assert_eq!(settings.effective_panic_window(), Duration::from_secs(2));
        let tiny = ScalingSettings {
            stable_window: Duration::from_secs(5),
            ..Default::default()
        };
        assert_eq!(tiny.effective_panic_window(), Duration::from_secs(1));
        let fixed = ScalingSettings {
            panic_window: PanicWindow::Fixed(Duration::from_secs(9)),
            ..Default::default()
        };
        assert_eq!(fixed.effective_panic_window(), Duration::from_secs(9));
    }

    #[test]
    fn invalid_settings_name_the_setting() {
        let cases = [
            (
                "target_concurrency",
                ScalingSettings {
                    target_concurrency: 0.0,
                    ..Default::default()
                },
            ),
            (
                "target_concurrency",
                ScalingSettings {
                    target_concurrency: f64::NAN,
                    ..Default::default()
                },
            ),
            (
                "max_scale",
                ScalingSettings {
                    max_scale: 0,
                    ..Default::default()
                },
            ),
            (
                "min_scale",
                ScalingSettings {
                    min_scale: 11,
                    ..Default::default()
                },
            ),
            (
                "stable_window",
                ScalingSettings {
                    stable_window: Duration::from_millis(500),
                    ..Default::default()
                },
            ),
            (
                "stable_window",
                ScalingSettings {
                    stable_window: Duration::from_secs(7_200),
                    ..Default::default()
                },
            ),
            (
                "panic_window",
                ScalingSettings {
                    panic_window: PanicWindow::Fixed(Duration::from_secs(61)),
                    ..Default::default()
                },
            ),
            (
                "panic_window",
                ScalingSettings {
                    panic_window: PanicWindow::PercentOfStable(0.0),
                    ..Default::default()
                },
            ),
            (
                "panic_threshold",
                ScalingSettings {
                    panic_threshold: 0.5,
                    ..Default::default()
                },
            ),
            (
                "max_scale_up_rate",
                ScalingSettings {
                    max_scale_up_rate: 1.0,
                    ..Default::default()
                },
            ),
            (
                "max_scale_down_rate",
                ScalingSettings {
                    max_scale_down_rate: f64::INFINITY,
                    ..Default::default()
                },
            ),
            (
                "prewarm_percentile",
                ScalingSettings {
                    keep_alive: KeepAlive::Histogram(HistogramPolicy {
                        prewarm_percentile: 60.0,
                        keep_alive_percentile: 99.0,
                    }),
                    ..Default::default()
                },
            ),
            (
                "keep_alive_percentile",
                ScalingSettings {
                    keep_alive: KeepAlive::Histogram(HistogramPolicy {
                        prewarm_percentile: 5.0,
                        keep_alive_percentile: f64::NAN,
                    }),
                    ..Default::default()
                },
            ),
        ];
        for (setting, settings) in cases {
            let error = settings.validate().expect_err(setting);
            assert_eq!(error.setting, setting);
            assert!(error
                .to_string()
                .starts_with(&format!("invalid autoscaling setting {setting}: ")));
        }
    }

    #[test]
    fn unvalidated_windows_never_panic() {
        let settings = ScalingSettings {
            stable_window: Duration::ZERO,
            panic_window: PanicWindow::PercentOfStable(f64::NAN),
            ..Default::default()
        };
        assert_eq!(settings.effective_stable_window(), ONE_SECOND);
        assert_eq!(settings.effective_panic_window(), ONE_SECOND);
        let negative = ScalingSettings {
            panic_window: PanicWindow::PercentOfStable(-5.0),
            ..Default::default()
        };
        assert_eq!(negative.effective_panic_window(), ONE_SECOND);
    }
}
