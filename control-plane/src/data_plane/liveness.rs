//! Instance liveness, kept by the leader in memory and never in the Raft log: when each
//! registered instance was last heard from, and which ones have been silent too long.
//! Pure bookkeeping over given instants; the reaper task in `super` acts on it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Liveness {
    timeout: Duration,
    last_seen: HashMap<String, Instant>,
}

impl Liveness {
    pub fn new(timeout: Duration) -> Self {
        Liveness {
            timeout,
            last_seen: HashMap::new(),
        }
    }

    /// The instance proved it is alive at `now`.
    pub fn seen(&mut self, instance: &str, now: Instant) {
        self.last_seen.insert(instance.to_owned(), now);
    }

    /// A new leader knows nothing about past heartbeats: every instance starts a fresh
    /// grace period the next time it is checked.
    pub fn reset(&mut self) {
        self.last_seen.clear();
    }

    pub fn forget(&mut self, instance: &str) {
        self.last_seen.remove(instance);
    }

    /// The registered instances silent for longer than the timeout, with how long each
    /// has been silent. An instance seen here for the first time starts its grace
    /// period at `now`; instances no longer registered are forgotten.
    pub fn expired<'a>(
        &mut self,
        registered: impl IntoIterator<Item = &'a str>,
        now: Instant,
    ) -> Vec<(String, Duration)> {
        let mut still_registered = HashMap::with_capacity(self.last_seen.len());
        let mut expired = Vec::new();
        for instance in registered {
            let last = self.last_seen.get(instance).copied().unwrap_or(now);
            let silent = now.saturating_duration_since(last);
            if silent > self.timeout {
                expired.push((instance.to_owned(), silent));
            }
            still_registered.insert(instance.to_owned(), last);
        }
        self.last_seen = still_registered;
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(5);

    #[test]
    fn silent_instances_expire_after_the_timeout() {
        let t0 = Instant::now();
        let mut liveness = Liveness::new(TIMEOUT);
        assert!(
            liveness.expired(["a", "b"], t0).is_empty(),
            "first sight starts a grace period"
        );
        liveness.seen("a", t0 + Duration::from_secs(4));
        assert!(
            liveness.expired(["a", "b"], t0 + TIMEOUT).is_empty(),
            "exactly at the timeout is still alive"
        );
        let expired = liveness.expired(["a", "b"], t0 + Duration::from_secs(6));
        assert_eq!(expired, vec![("b".to_owned(), Duration::from_secs(6))]);
        let expired = liveness.expired(["a"], t0 + Duration::from_secs(10));
        assert_eq!(expired, vec![("a".to_owned(), Duration::from_secs(6))]);
    }

    #[test]
    fn a_new_leader_gives_everyone_a_fresh_grace_period() {
        let t0 = Instant::now();
        let mut liveness = Liveness::new(TIMEOUT);
        liveness.seen("a", t0);
        liveness.reset();
        let later = t0 + Duration::from_secs(60);
        assert!(liveness.expired(["a"], later).is_empty());
        assert_eq!(liveness.expired(["a"], later + Duration::from_secs(6)).len(), 1);
    }

    #[test]
    fn unregistered_instances_are_forgotten() {
        let t0 = Instant::now();
        let mut liveness = Liveness::new(TIMEOUT);
        liveness.seen("gone", t0);
        assert!(liveness.expired([], t0).is_empty());
        // Registered again later under the same id: a fresh grace period, not the old time.
        let later = t0 + Duration::from_secs(60);
        assert!(liveness.expired(["gone"], later).is_empty());
    }
}
