//! Spreading stateless calls (actions) over a service's ready instances: each
//! call goes to the instance with the fewest calls this gateway has outstanding
//! on it, ties broken in turn so equal instances share the load. The choice is a
//! pure function; [`Spread`] keeps the counts.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

use super::routes::Target;

/// The index in `ready` of the instance with the fewest outstanding calls; among
/// equals, the first at or after `turn` (wrapping).
pub fn least_outstanding(ready: &[Target], outstanding: &HashMap<String, usize>, turn: usize) -> Option<usize> {
    let count = |target: &Target| outstanding.get(&target.address).copied().unwrap_or(0);
    let fewest = ready.iter().map(count).min()?;
    (0..ready.len())
        .map(|offset| (turn + offset) % ready.len())
        .find(|&i| count(&ready[i]) == fewest)
}

/// Outstanding calls per instance address.
#[derive(Default)]
pub struct Spread {
    outstanding: Mutex<HashMap<String, usize>>,
    turn: AtomicUsize,
    /// Calls counted for splits between revisions (see [`Spread::draw`]).
    draws: AtomicUsize,
}

/// One outstanding call; the count goes down when it is dropped.
pub struct Ticket {
    spread: Arc<Spread>,
    address: String,
}

impl Spread {
    /// The next number of a count of calls, which a canary's split goes by.
    pub fn draw(&self) -> usize {
        self.draws.fetch_add(1, Ordering::Relaxed)
    }

    /// Picks the instance for the next call and counts the call on it.
    pub fn pick(self: &Arc<Self>, ready: &[Target]) -> Option<(Target, Ticket)> {
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let mut outstanding = self.outstanding.lock().expect("spread counts poisoned");
        let target = ready[least_outstanding(ready, &outstanding, turn)?].clone();
        *outstanding.entry(target.address.clone()).or_default() += 1;
        let ticket = Ticket {
            spread: self.clone(),
            address: target.address.clone(),
        };
        Some((target, ticket))
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut outstanding = self.spread.outstanding.lock().expect("spread counts poisoned");
        if let Some(count) = outstanding.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                outstanding.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(n: usize) -> Vec<Target> {
        (0..n)
            .map(|i| Target {
                instance: format!("i{i}"),
                address: format!("127.0.0.1:{}", 1000 + i),
            })
            .collect()
    }

    #[test]
    fn the_least_busy_instance_wins_and_ties_take_turns() {
        let ready = targets(3);
        let mut outstanding = HashMap::new();
        assert_eq!(least_outstanding(&ready, &outstanding, 0), Some(0));
        assert_eq!(least_outstanding(&ready, &outstanding, 1), Some(1));
        assert_eq!(least_outstanding(&ready, &outstanding, 5), Some(2));
        outstanding.insert(ready[0].address.clone(), 2);
        outstanding.insert(ready[1].address.clone(), 1);
        outstanding.insert(ready[2].address.clone(), 3);
        assert_eq!(least_outstanding(&ready, &outstanding, 0), Some(1));
        assert_eq!(least_outstanding(&[], &outstanding, 0), None);
    }

    #[test]
    fn tickets_count_calls_until_dropped() {
        let spread = Arc::new(Spread::default());
        let ready = targets(2);
        let (first, a) = spread.pick(&ready).unwrap();
        let (second, b) = spread.pick(&ready).unwrap();
        assert_ne!(first, second, "two idle instances share the first calls");
        let (third, c) = spread.pick(&ready).unwrap();
        drop(b);
        // The second instance has nothing outstanding now, the first has two.
        let (fourth, _d) = spread.pick(&ready).unwrap();
        assert_eq!(third, first);
        assert_eq!(fourth, second);
        drop((a, c));
        assert!(spread.outstanding.lock().unwrap().get(&first.address).is_none());
    }
}
