//! Cold starts, read off the registry's effects: a service whose desired count leaves
//! zero waits until its first instance is ready; that wait is one cold start. Pure:
//! time comes from the events' own `at_ms`, so every replica sees the same cold starts.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::registry::{Effect, EventKind};

/// A finished cold start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColdStart {
    pub service: String,
    pub duration: Duration,
}

/// Services waiting for their first ready instance since desired left zero.
#[derive(Debug, Default)]
pub struct ColdStarts {
    waiting_since_ms: BTreeMap<String, u64>,
}

impl ColdStarts {
    /// Follows the effects of one applied entry (in their order) and returns the cold
    /// starts they finished.
    pub fn observe(&mut self, effects: &[Effect]) -> Vec<ColdStart> {
        let mut finished = Vec::new();
        // Every event of one entry carries that entry's time.
        let mut at_ms = None;
        for effect in effects {
            match effect {
                Effect::Event(event) => {
                    at_ms = Some(event.at_ms);
                    let Some(service) = &event.service else { continue };
                    match event.kind {
                        EventKind::InstanceReady => {
                            if let Some(since) = self.waiting_since_ms.remove(service) {
                                finished.push(ColdStart {
                                    service: service.clone(),
                                    duration: Duration::from_millis(event.at_ms.saturating_sub(since)),
                                });
                            }
                        }
                        EventKind::ServiceDeleted => {
                            self.waiting_since_ms.remove(service);
                        }
                        _ => {}
                    }
                }
                Effect::DesiredReplicasChanged { service, from: 0, to } if *to > 0 => {
                    if let Some(at_ms) = at_ms {
                        self.waiting_since_ms.insert(service.clone(), at_ms);
                    }
                }
                Effect::DesiredReplicasChanged { service, to: 0, .. } => {
                    self.waiting_since_ms.remove(service);
                }
                _ => {}
            }
        }
        finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Event;

    fn event(kind: EventKind, at_ms: u64) -> Effect {
        Effect::Event(Event {
            id: at_ms,
            at_ms,
            kind,
            service: Some("cart".into()),
            instance: None,
            reason: String::new(),
        })
    }

    fn desired(from: u32, to: u32) -> Effect {
        Effect::DesiredReplicasChanged {
            service: "cart".into(),
            from,
            to,
        }
    }

    #[test]
    fn from_zero_to_the_first_ready_instance() {
        let mut cold = ColdStarts::default();
        assert!(cold
            .observe(&[event(EventKind::Scale, 1_000), desired(0, 2)])
            .is_empty());
        assert!(cold.observe(&[event(EventKind::InstanceRegistered, 1_050)]).is_empty());
        let finished = cold.observe(&[event(EventKind::InstanceReady, 1_250)]);
        assert_eq!(
            finished,
            vec![ColdStart {
                service: "cart".into(),
                duration: Duration::from_millis(250),
            }]
        );
        // The second instance of the same scale-up is not another cold start.
        assert!(cold.observe(&[event(EventKind::InstanceReady, 1_300)]).is_empty());
    }

    #[test]
    fn scaling_between_non_zero_counts_is_not_a_cold_start() {
        let mut cold = ColdStarts::default();
        cold.observe(&[event(EventKind::Scale, 1_000), desired(1, 3)]);
        assert!(cold.observe(&[event(EventKind::InstanceReady, 1_200)]).is_empty());
    }

    #[test]
    fn back_to_zero_before_ready_cancels_the_wait() {
        let mut cold = ColdStarts::default();
        cold.observe(&[event(EventKind::Scale, 1_000), desired(0, 1)]);
        cold.observe(&[event(EventKind::Scale, 1_100), desired(1, 0)]);
        assert!(cold.observe(&[event(EventKind::InstanceReady, 1_200)]).is_empty());

        cold.observe(&[event(EventKind::Scale, 2_000), desired(0, 1)]);
        cold.observe(&[event(EventKind::ServiceDeleted, 2_100)]);
        assert!(cold.observe(&[event(EventKind::InstanceReady, 2_200)]).is_empty());
    }
}
