//! Waking a service at zero for its earliest pending timer: how far ahead of the
//! timer's due time an instance must be started, from the service's learned cold
//! start (bounded, assumed until one is seen). Pure: the decision in `kpa.rs`
//! asks [`TimerDue::wakes`]; where the due time comes from is the shell's business.

use std::time::Duration;

/// The cold start assumed before the service has had one.
pub const ASSUMED_COLD_START: Duration = Duration::from_secs(5);
/// Learned cold starts are read within these bounds: a freak fast start must not
/// make every later wake late, nor a freak slow one keep an instance for minutes.
pub const MIN_COLD_START: Duration = Duration::from_millis(500);
pub const MAX_COLD_START: Duration = Duration::from_secs(60);
/// Started this much earlier than the cold start alone asks: the autoscaler decides
/// once a second, and the new instance's timer runner reads the store once a second.
pub const WAKE_MARGIN: Duration = Duration::from_secs(2);

/// The service's earliest pending timer, as one observation sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerDue {
    /// How long until it is due; zero when it is due already.
    pub due_in: Duration,
    /// The service's last cold start, `None` until it has had one.
    pub learned_cold_start: Option<Duration>,
}

impl TimerDue {
    /// The cold start to plan for: the learned one within its bounds, or the assumed one.
    pub fn cold_start(&self) -> Duration {
        self.learned_cold_start.map_or(ASSUMED_COLD_START, |learned| {
            learned.clamp(MIN_COLD_START, MAX_COLD_START)
        })
    }

    /// How far ahead of the due time an instance is started.
    pub fn lead(&self) -> Duration {
        self.cold_start() + WAKE_MARGIN
    }

    /// Whether an instance must run now for the timer to be called on time.
    pub fn wakes(&self) -> bool {
        self.due_in <= self.lead()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due(due_in_ms: u64, learned_ms: Option<u64>) -> TimerDue {
        TimerDue {
            due_in: Duration::from_millis(due_in_ms),
            learned_cold_start: learned_ms.map(Duration::from_millis),
        }
    }

    #[test]
    fn the_lead_is_the_learned_cold_start_within_bounds_plus_the_margin() {
        assert_eq!(due(0, Some(1_200)).lead(), Duration::from_millis(3_200));
        assert_eq!(due(0, Some(10)).lead(), MIN_COLD_START + WAKE_MARGIN);
        assert_eq!(due(0, Some(600_000)).lead(), MAX_COLD_START + WAKE_MARGIN);
        assert_eq!(due(0, None).lead(), ASSUMED_COLD_START + WAKE_MARGIN);
    }

    #[test]
    fn a_timer_wakes_once_it_is_within_the_lead() {
        assert!(!due(3_201, Some(1_200)).wakes());
        assert!(due(3_200, Some(1_200)).wakes());
        assert!(due(0, Some(1_200)).wakes());
        assert!(!due(7_001, None).wakes());
        assert!(due(7_000, None).wakes());
    }
}
