//! Revisions as the registry keeps them: every change of what a service runs (its
//! [`RevisionSpec`]) is an immutable, numbered [`Revision`] with who deployed it and
//! when; the service keeps the newest `revision_history` of them, never dropping the
//! serving one. Pure: `apply` calls these and records the events.

use serde::{Deserialize, Serialize};
use strata_settings::{RevisionSpec, DEFAULT_REVISION_HISTORY};

use super::Service;

/// Who made the first revision of a service from a registry written before
/// revisions existed.
pub const ADOPTED_BY: &str = "a registry from before revisions";

/// One immutable record of what a service ran, who deployed it and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    pub number: u64,
    pub spec: RevisionSpec,
    pub created_at_ms: u64,
    /// Who deployed it: the audited principal's name (e.g. `admin token`), or the
    /// part of Strata that wrote it (`the control plane`).
    pub created_by: String,
    /// Why its rollout stopped, when its instances failed before one was ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

impl Service {
    /// The record of revision `number`, if it is kept.
    pub fn revision(&self, number: u64) -> Option<&Revision> {
        self.revisions.iter().find(|revision| revision.number == number)
    }

    /// How many revisions the service keeps.
    pub fn revision_history(&self) -> usize {
        self.revision_history.unwrap_or(DEFAULT_REVISION_HISTORY) as usize
    }

    /// The revisions as a reader sees them: a service from before revisions (none
    /// recorded yet) shows what it runs now as revision 1.
    pub fn revision_records(&self) -> Vec<Revision> {
        if self.revisions.is_empty() {
            return vec![self.adopted_revision()];
        }
        self.revisions.clone()
    }

    /// The serving revision's number as a reader sees it (1 for a service from
    /// before revisions).
    pub fn serving(&self) -> u64 {
        self.serving_revision.max(1)
    }

    /// Gives a service from before revisions its first revision (what it runs now),
    /// so that the next one is numbered after it. Does nothing to any other.
    pub(super) fn adopt_revisions(&mut self) {
        if self.revisions.is_empty() {
            self.revisions.push(self.adopted_revision());
            self.latest_revision = 1;
            self.serving_revision = 1;
        }
    }

    fn adopted_revision(&self) -> Revision {
        Revision {
            number: 1,
            spec: self.runs.clone(),
            created_at_ms: self.created_at_ms,
            created_by: ADOPTED_BY.into(),
            failure: None,
        }
    }

    /// Records `spec` as the next revision, makes it the one serving, drops the
    /// oldest beyond the history, and returns its number.
    pub(super) fn record_revision(&mut self, spec: RevisionSpec, now_ms: u64, by: &str) -> u64 {
        let number = self.record_revision_beside(spec.clone(), now_ms, by);
        self.runs = spec;
        self.serving_revision = number;
        self.prune_revisions();
        number
    }

    /// Records `spec` as the next revision without serving it (a canary's), and
    /// returns its number.
    pub(super) fn record_revision_beside(&mut self, spec: RevisionSpec, now_ms: u64, by: &str) -> u64 {
        self.adopt_revisions();
        self.latest_revision += 1;
        let number = self.latest_revision;
        self.revisions.push(Revision {
            number,
            spec,
            created_at_ms: now_ms,
            created_by: by.to_owned(),
            failure: None,
        });
        number
    }

    /// Records why revision `number`'s rollout stopped.
    pub(super) fn mark_failed(&mut self, number: u64, reason: &str) {
        if let Some(revision) = self.revisions.iter_mut().find(|revision| revision.number == number) {
            revision.failure = Some(reason.to_owned());
        }
    }

    /// The revision a rollback with no number goes to: the one a rollout under way
    /// started from, else the newest earlier revision that did not fail.
    pub fn rollback_target(&self) -> Option<u64> {
        let serving = self.serving();
        if let Some(rollout) = self.rollout.as_ref().filter(|rollout| rollout.to == serving) {
            return Some(rollout.from);
        }
        let earlier = || self.revision_records().into_iter().filter(|r| r.number < serving);
        earlier()
            .filter(|r| r.failure.is_none())
            .map(|r| r.number)
            .max()
            .or_else(|| earlier().map(|r| r.number).max())
    }

    /// Drops the oldest revisions beyond the history, never the serving one or a
    /// canary.
    pub(super) fn prune_revisions(&mut self) {
        let serving = self.serving_revision;
        let canary = self.canary.as_ref().map(|canary| canary.revision);
        while self.revisions.len() > self.revision_history() {
            let Some(oldest) = self
                .revisions
                .iter()
                .position(|revision| revision.number != serving && Some(revision.number) != canary)
            else {
                break;
            };
            self.revisions.remove(oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{IdleTimes, Shard};

    fn service(runs: RevisionSpec) -> Service {
        Service {
            name: "cart".into(),
            runs,
            min_scale: 0,
            max_scale: 1,
            target_concurrency: 1,
            scale_to_zero_grace_ms: 0,
            stable_window_ms: None,
            keep_alive: None,
            prewarm_percentile: 5,
            keep_alive_percentile: 99,
            hold_timeout_ms: None,
            revision_history: None,
            idle_times: IdleTimes::default(),
            descriptor_set: None,
            entities: Vec::new(),
            subscriptions: Vec::new(),
            next_timer_due_ms: None,
            generation: 1,
            revisions: Vec::new(),
            latest_revision: 0,
            serving_revision: 0,
            rollout: None,
            canary: None,
            desired_replicas: 0,
            created_at_ms: 5,
            updated_at_ms: 5,
            shards: vec![Shard::unowned()],
        }
    }

    #[test]
    fn a_service_from_before_revisions_reads_as_revision_one_and_counts_on_from_it() {
        let mut cart = service(RevisionSpec::command("./cart"));
        let adopted = cart.revision_records();
        assert_eq!(adopted.len(), 1);
        assert_eq!(
            (
                adopted[0].number,
                adopted[0].created_by.as_str(),
                adopted[0].created_at_ms
            ),
            (1, ADOPTED_BY, 5)
        );
        assert_eq!(cart.serving(), 1);
        let number = cart.record_revision(RevisionSpec::command("./cart --v2"), 9, "admin token");
        assert_eq!(number, 2);
        assert_eq!(cart.serving(), 2);
        assert_eq!(cart.runs, RevisionSpec::command("./cart --v2"));
        let numbers: Vec<u64> = cart.revision_records().iter().map(|r| r.number).collect();
        assert_eq!(numbers, vec![1, 2]);
        assert_eq!(
            cart.revision(1).map(|r| r.spec.clone()),
            Some(RevisionSpec::command("./cart"))
        );
    }

    #[test]
    fn the_history_keeps_the_newest_and_never_drops_the_serving_one() {
        let mut cart = service(RevisionSpec::command("./cart"));
        cart.revision_history = Some(3);
        for version in 2..=10 {
            cart.record_revision(
                RevisionSpec::command(format!("./cart --v{version}")),
                version,
                "admin token",
            );
        }
        let numbers: Vec<u64> = cart.revisions.iter().map(|r| r.number).collect();
        assert_eq!(numbers, vec![8, 9, 10]);
        assert_eq!(cart.latest_revision, 10, "numbers are never reused");
        cart.revision_history = Some(1);
        cart.prune_revisions();
        let numbers: Vec<u64> = cart.revisions.iter().map(|r| r.number).collect();
        assert_eq!(numbers, vec![10]);
    }
}
