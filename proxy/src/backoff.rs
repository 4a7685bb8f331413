//! The one pacing of the data plane's retry loops (discovery, registration, the
//! route watches): 100 ms doubling to 2 s, back to the start after a success;
//! optionally a number of equal short pauses first, for something expected any
//! moment (a function spawned beside its sidecar). Owns only the arithmetic and
//! the pause; what to retry is the caller's.

use std::time::Duration;

/// Exponential backoff between a first and a largest pause.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
    /// Pauses of `first` still to take before doubling starts.
    steady: u32,
    /// `steady` as configured, for [`Backoff::reset`].
    steady_from: u32,
}

impl Default for Backoff {
    /// 100 ms doubling to 2 s.
    fn default() -> Self {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(2))
    }
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        debug_assert!(first <= max, "the first pause is the smallest");
        Backoff {
            first,
            max,
            next: first,
            steady: 0,
            steady_from: 0,
        }
    }

    /// The same backoff, holding the first pause for `pauses` pauses before the
    /// doubling starts from it.
    pub fn steady_for(self, pauses: u32) -> Self {
        Backoff {
            steady: pauses,
            steady_from: pauses,
            ..self
        }
    }

    /// The pause the next [`Backoff::wait`] takes.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// The next pause, doubling the one after it (up to the largest).
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        if self.steady > 0 {
            self.steady -= 1;
        } else {
            self.next = (self.next * 2).min(self.max);
        }
        delay
    }

    /// Sleeps for the next pause.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }

    /// Starts again from the first pause (after a success).
    pub fn reset(&mut self) {
        self.next = self.first;
        self.steady = self.steady_from;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_largest_and_resets() {
        let mut backoff = Backoff::default();
        let delays: Vec<u64> = (0..7).map(|_| backoff.next_delay().as_millis() as u64).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 2000, 2000]);
        backoff.reset();
        assert_eq!(backoff.peek(), Duration::from_millis(100));
    }

    #[test]
    fn steady_pauses_come_before_the_doubling_and_again_after_a_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(10)).steady_for(3);
        let delays =
            |backoff: &mut Backoff| -> Vec<u64> { (0..8).map(|_| backoff.next_delay().as_millis() as u64).collect() };
        assert_eq!(delays(&mut backoff), [1, 1, 1, 1, 2, 4, 8, 10]);
        backoff.reset();
        assert_eq!(delays(&mut backoff), [1, 1, 1, 1, 2, 4, 8, 10]);
    }
}
