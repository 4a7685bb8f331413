//! Leader step-down for a leader cut off from its quorum. openraft 0.9 keeps such a
//! node in the leader state until it hears a higher term, and has no step-down call,
//! so this lease decides whether the node may *act* as leader: only while a quorum
//! acknowledged it within the lease (the election timeout). Writes, linearizable reads
//! and leader-only tasks check it; Raft itself is left alone.
//!
//! Why it is safe: followers refuse to vote while they heard from the leader within
//! openraft's leader lease (`election_timeout_max`) and then wait an election timeout
//! more, so a new leader cannot exist before this lease (`election_timeout_max` after
//! the last acknowledged heartbeat was *sent*) has run out.

use std::time::Duration;

use openraft::ServerState;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{NodeId, Raft};

/// Leadership as the APIs and leader-only tasks should see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Leadership {
    /// Raft says leader and a quorum acknowledged it within the lease.
    pub leading: bool,
    pub term: u64,
    /// While leading: when the lease runs out unless a quorum acknowledges again.
    pub until: Option<Instant>,
}

impl Leadership {
    /// Whether the lease holds right now (it may have run out since it was published).
    pub fn holds(&self, now: Instant) -> bool {
        self.leading && self.until.is_some_and(|until| now < until)
    }
}

/// Follows Raft's metrics and publishes [`Leadership`]; ends when Raft shuts down.
pub async fn follow(raft: Raft, node_id: NodeId, lease: Duration, publish: watch::Sender<Leadership>) {
    let mut metrics = raft.metrics();
    // The latest instant a quorum is known to have acknowledged this node, per term.
    let mut acked: Option<(u64, Instant)> = None;
    loop {
        let now = Instant::now();
        let (raft_leader, term, since_ack) = {
            let current = metrics.borrow_and_update();
            (
                current.state == ServerState::Leader,
                current.current_term,
                current.millis_since_quorum_ack,
            )
        };
        if !raft_leader {
            acked = None;
        } else if let Some(millis) = since_ack {
            let at = now.checked_sub(Duration::from_millis(millis)).unwrap_or(now);
            acked = match acked {
                Some((acked_term, previous)) if acked_term == term && previous >= at => Some((acked_term, previous)),
                _ => Some((term, at)),
            };
        }
        let until = acked
            .filter(|(acked_term, _)| raft_leader && *acked_term == term)
            .map(|(_, at)| at + lease);
        let next = Leadership {
            leading: until.is_some_and(|until| now < until),
            term,
            until,
        };
        let previous = *publish.borrow();
        if previous.leading != next.leading || previous.term != next.term {
            if next.leading {
                tracing::info!(node_id, term, "leading with a quorum");
            } else if previous.leading && raft_leader && previous.term == term {
                tracing::warn!(
                    node_id,
                    term,
                    lease_ms = lease.as_millis() as u64,
                    "no quorum contact within the lease: stepping down from acting as leader"
                );
            } else if previous.leading {
                tracing::info!(node_id, term, "no longer the leader");
            }
        }
        publish.send_replace(next);
        tokio::select! {
            changed = metrics.changed() => {
                if changed.is_err() {
                    publish.send_replace(Leadership { leading: false, term, until: None });
                    return;
                }
            }
            // Nothing new from Raft: the lease runs out on its own.
            () = sleep_until(until), if next.leading => {}
        }
    }
}

async fn sleep_until(until: Option<Instant>) {
    match until {
        Some(until) => tokio::time::sleep_until(until).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_holds_only_until_it_runs_out() {
        let now = Instant::now();
        let leadership = Leadership {
            leading: true,
            term: 3,
            until: Some(now + Duration::from_millis(100)),
        };
        assert!(leadership.holds(now));
        assert!(!leadership.holds(now + Duration::from_millis(100)));
        assert!(!Leadership::default().holds(now));
    }
}
