//! Whether a sidecar or a gateway should be sent traffic, as its admin
//! listener's `/readyz` tells a kubelet: not while it starts (and what it still
//! waits for), yes once it serves, no again from the moment it begins to drain.
//! Owns the state and its words; the route is `admin`'s, the moments are the
//! sidecar's and the gateway's.

use std::{collections::BTreeSet, sync::Arc};

use tokio::sync::watch;

/// Where a process is on its way to serving and back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// Starting; the steps it still waits for, in the words `/readyz` shows.
    Starting(BTreeSet<&'static str>),
    Ready,
    /// Stopping: it hands its work over and takes no new work.
    Draining,
}

impl Stage {
    /// What `/readyz` answers when not ready.
    pub fn reason(&self) -> String {
        match self {
            Stage::Starting(waiting) if waiting.is_empty() => "starting".to_owned(),
            Stage::Starting(waiting) => {
                let waiting: Vec<&str> = waiting.iter().copied().collect();
                format!("starting: waiting for {}", waiting.join(", "))
            }
            Stage::Ready => "ready".to_owned(),
            Stage::Draining => "draining: handing its work over before it stops".to_owned(),
        }
    }
}

/// The shared stage; cheap to clone. Only moves forward: a step reported done
/// after the process became ready, or anything after draining began, changes
/// nothing.
#[derive(Debug, Clone)]
pub struct Readiness(Arc<watch::Sender<Stage>>);

impl Readiness {
    /// Starting, waiting for `steps`.
    pub fn waiting_for(steps: &[&'static str]) -> Self {
        Readiness(Arc::new(watch::Sender::new(Stage::Starting(
            steps.iter().copied().collect(),
        ))))
    }

    /// One of the steps is done.
    pub fn done(&self, step: &'static str) {
        self.0.send_if_modified(|stage| match stage {
            Stage::Starting(waiting) => waiting.remove(step),
            _ => false,
        });
    }

    /// Serving: every step is done.
    pub fn ready(&self) {
        self.0.send_if_modified(|stage| match stage {
            Stage::Starting(_) => {
                *stage = Stage::Ready;
                true
            }
            _ => false,
        });
    }

    /// Stopping: no longer ready, for good.
    pub fn draining(&self) {
        self.0.send_replace(Stage::Draining);
    }

    pub fn stage(&self) -> Stage {
        self.0.borrow().clone()
    }

    pub fn is_ready(&self) -> bool {
        *self.0.borrow() == Stage::Ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_says_what_a_start_still_waits_for_then_is_ready_until_it_drains() {
        let readiness = Readiness::waiting_for(&["the store", "discovery"]);
        assert_eq!(readiness.stage().reason(), "starting: waiting for discovery, the store");
        readiness.done("the store");
        assert_eq!(readiness.stage().reason(), "starting: waiting for discovery");
        readiness.done("discovery");
        assert_eq!(readiness.stage().reason(), "starting");
        assert!(!readiness.is_ready());
        readiness.ready();
        assert!(readiness.is_ready());
        readiness.done("the store");
        assert_eq!(readiness.stage(), Stage::Ready);
        readiness.draining();
        assert!(!readiness.is_ready());
        readiness.ready();
        assert_eq!(readiness.stage(), Stage::Draining, "draining is for good");
        assert_eq!(
            readiness.stage().reason(),
            "draining: handing its work over before it stops"
        );
    }
}
