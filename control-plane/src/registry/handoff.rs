//! Moving shards with one writer per entity: a shard whose owner is alive is not
//! reassigned at once but handed off. The registry names the shard's next owner
//! ([`Handoff`]); gateways route its calls there, where they wait; the old owner
//! takes no new command for it, finishes the ones it has, passivates its entities
//! (their writes durable) and releases it; only then does the next owner hold it,
//! at a higher epoch. So an entity never runs commands on two instances at once,
//! and the journal's sequence numbers stay the backstop (an owner that never
//! releases is overtaken after [`HANDOFF_TIMEOUT_MS`]). A few hand-offs per
//! service run at a time ([`max_handoffs`]), so a move costs each shard's callers
//! a short wait rather than the whole service a pause. Pure: `apply` calls these.

use std::collections::BTreeSet;

use super::rollout::Owners;
use super::shard_map::{move_to, rebalance, ShardMove};
use super::{Handoff, Shard};

/// How long a live owner has to release a shard before the next owner takes it
/// anyway (fenced by the epoch): long enough for in-flight commands to finish,
/// short enough that an owner that cannot answer costs its callers little.
pub const HANDOFF_TIMEOUT_MS: u64 = 10_000;

/// How many of a service's shards may be in hand-off at once.
pub fn max_handoffs(shard_count: usize) -> usize {
    shard_count.div_ceil(8).max(1)
}

/// What one pass of [`place_all`] changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Shards that changed owner now (their old owner was gone, or there is none).
    pub moves: Vec<ShardMove>,
    /// Shards whose hand-off began, changed target or was called off.
    pub handoffs_changed: usize,
}

impl Placement {
    pub fn changed(&self) -> bool {
        !self.moves.is_empty() || self.handoffs_changed > 0
    }
}

/// Brings `shards` toward their owners: a canary's slice toward the canary's, the
/// rest toward the serving revision's, each slice by [`place_from`].
pub fn place_all(shards: &mut [Shard], owners: &Owners, live: &BTreeSet<String>, now_ms: u64) -> Placement {
    let split = owners
        .canary
        .as_ref()
        .map_or(0, |(count, _)| (*count).min(shards.len()));
    let (canary, stable) = shards.split_at_mut(split);
    let mut placement = place_from(stable, split, &owners.stable, live, now_ms);
    if let Some((_, canary_owners)) = &owners.canary {
        let slice = place_from(canary, 0, canary_owners, live, now_ms);
        placement.moves.splice(0..0, slice.moves);
        placement.handoffs_changed += slice.handoffs_changed;
    }
    placement
}

/// Brings `shards` (a slice of a service's, whose first is number
/// `first`) toward an even spread over `eligible` (the ready instances that
/// may own shards): a shard whose owner is not in `live` (gone, or never set)
/// moves at once; a live owner's shard is handed off, at most
/// [`max_handoffs`] at a time. Hand-offs already under way count as done for the
/// spread, so a pass never undoes one that still fits.
fn place_from(
    shards: &mut [Shard],
    first: usize,
    eligible: &BTreeSet<String>,
    live: &BTreeSet<String>,
    now_ms: u64,
) -> Placement {
    // Where each shard is headed, from where it will be once its hand-off is done.
    let mut headed: Vec<Shard> = shards
        .iter()
        .map(|shard| Shard {
            owner: shard
                .handoff
                .as_ref()
                .map(|handoff| handoff.to.clone())
                .or_else(|| shard.owner.clone()),
            epoch: shard.epoch,
            handoff: None,
        })
        .collect();
    rebalance(&mut headed, eligible);

    let mut placement = Placement::default();
    let mut under_way = shards.iter().filter(|shard| shard.handoff.is_some()).count();
    let limit = max_handoffs(shards.len());
    for (index, (shard, target)) in shards.iter_mut().zip(headed).enumerate() {
        let target = target.owner;
        if target == shard.owner {
            if shard.handoff.take().is_some() {
                under_way -= 1;
                placement.handoffs_changed += 1;
            }
            continue;
        }
        let owner_alive = shard.owner.as_ref().is_some_and(|owner| live.contains(owner));
        let to = match target {
            Some(to) if owner_alive => to,
            // Nobody to wait for, or nobody to hand to: move now.
            target => {
                if shard.handoff.take().is_some() {
                    under_way -= 1;
                }
                placement.moves.push(move_to(shard, first + index, target));
                continue;
            }
        };
        match &mut shard.handoff {
            Some(handoff) if handoff.to == to => {}
            Some(handoff) => {
                handoff.to = to;
                handoff.since_ms = now_ms;
                placement.handoffs_changed += 1;
            }
            None if under_way < limit => {
                shard.handoff = Some(Handoff { to, since_ms: now_ms });
                under_way += 1;
                placement.handoffs_changed += 1;
            }
            None => {}
        }
    }
    placement
}

/// `instance` released `released` (shards it was handing off): each goes to its
/// hand-off's target if that may still own shards; a hand-off whose target left
/// is called off (the shard stays where it is until the next [`place_all`]).
pub fn release(shards: &mut [Shard], instance: &str, released: &[u32], owners: &Owners) -> Placement {
    let mut placement = Placement::default();
    for &number in released {
        let Some(shard) = shards.get_mut(number as usize) else {
            continue;
        };
        if shard.owner.as_deref() != Some(instance) {
            continue;
        }
        let Some(handoff) = shard.handoff.take() else {
            continue;
        };
        if owners.of_shard(number as usize).contains(&handoff.to) {
            placement.moves.push(move_to(shard, number as usize, Some(handoff.to)));
        } else {
            placement.handoffs_changed += 1;
        }
    }
    placement
}

/// Hand-offs begun [`HANDOFF_TIMEOUT_MS`] or more before `now_ms` complete without
/// the old owner's release (its writes, if any, are fenced by the new epoch).
pub fn expire(shards: &mut [Shard], owners: &Owners, now_ms: u64) -> Placement {
    let mut placement = Placement::default();
    for (index, shard) in shards.iter_mut().enumerate() {
        let overdue = shard
            .handoff
            .as_ref()
            .is_some_and(|handoff| now_ms.saturating_sub(handoff.since_ms) >= HANDOFF_TIMEOUT_MS);
        if !overdue {
            continue;
        }
        let handoff = shard.handoff.take().expect("overdue hand-off");
        if owners.of_shard(index).contains(&handoff.to) {
            placement.moves.push(move_to(shard, index, Some(handoff.to)));
        } else {
            placement.handoffs_changed += 1;
        }
    }
    placement
}
