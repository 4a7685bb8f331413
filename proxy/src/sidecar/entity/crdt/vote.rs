//! A vote: each replica's vote as a counter that it alone moves (odd is for).
//! The function sees its own replica's vote and the tally over the voters that
//! are live now (the instances serving the service), as CloudState counted the
//! cluster's members that were up.

use std::collections::BTreeMap;

use super::View;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Vote {
    votes: BTreeMap<String, u64>,
}

/// Who votes: this replica, and every replica whose vote counts now (this one
/// included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Voters {
    pub own: String,
    pub live: Vec<String>,
}

impl Voters {
    /// Only this replica votes (a standalone proxy).
    pub(crate) fn alone(own: &str) -> Self {
        Self {
            own: own.to_string(),
            live: vec![own.to_string()],
        }
    }
}

impl Vote {
    pub(crate) fn from_votes(votes: BTreeMap<String, u64>) -> Self {
        Self { votes }
    }

    pub(crate) fn votes(&self) -> &BTreeMap<String, u64> {
        &self.votes
    }

    fn of(&self, replica: &str) -> bool {
        self.votes.get(replica).is_some_and(|count| count % 2 == 1)
    }

    /// Sets `replica`'s vote (moving its counter on when the vote changes).
    pub(crate) fn vote(&mut self, replica: &str, vote: bool) {
        if self.of(replica) != vote {
            *self.votes.entry(replica.to_string()).or_default() += 1;
        }
    }

    pub(crate) fn merge(&mut self, other: &Vote) {
        for (replica, count) in &other.votes {
            let mine = self.votes.entry(replica.clone()).or_default();
            *mine = (*mine).max(*count);
        }
    }

    pub(crate) fn view(&self, voters: &Voters) -> View {
        let mut live: Vec<&str> = voters.live.iter().map(String::as_str).collect();
        if !live.contains(&voters.own.as_str()) {
            live.push(&voters.own);
        }
        live.sort_unstable();
        live.dedup();
        View::Vote {
            self_vote: self.of(&voters.own),
            votes_for: live.iter().filter(|r| self.of(r)).count() as i32,
            total_voters: live.len() as i32,
        }
    }
}
