//! Shard ownership: every shard of a service belongs to one READY instance, counts differ
//! by at most one, and a change of the ready set moves as few shards as possible. Each
//! move bumps the shard's epoch so the previous owner can be fenced.

use std::collections::{BTreeMap, BTreeSet};

use super::Shard;

/// One shard that changed owner during a rebalance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardMove {
    pub shard: u32,
    pub from: Option<String>,
    pub to: Option<String>,
    pub epoch: u64,
}

/// Reassigns `shards` to the instances in `ready`, returning the moves in shard order.
///
/// Minimal moves: an instance keeps `min(held, quota)` of its shards, and the larger
/// quotas (`ceil(k/n)`) go to the instances that hold the most already, which maximizes
/// the shards kept. With no ready instance every owned shard becomes unowned.
pub fn rebalance(shards: &mut [Shard], ready: &BTreeSet<String>) -> Vec<ShardMove> {
    let mut pool: Vec<usize> = Vec::new();
    let mut held: BTreeMap<&str, Vec<usize>> = ready.iter().map(|id| (id.as_str(), Vec::new())).collect();
    for (index, shard) in shards.iter().enumerate() {
        match shard.owner.as_deref().and_then(|owner| held.get_mut(owner)) {
            Some(list) => list.push(index),
            None => pool.push(index),
        }
    }

    let mut new_owner: BTreeMap<usize, Option<String>> = BTreeMap::new();
    if ready.is_empty() {
        for index in pool {
            if shards[index].owner.is_some() {
                new_owner.insert(index, None);
            }
        }
    } else {
        let count = shards.len();
        let (base, extra) = (count / ready.len(), count % ready.len());
        // The `extra` instances holding the most (ties: smallest id) get one more.
        let mut by_holdings: Vec<(&str, usize)> = held.iter().map(|(id, list)| (*id, list.len())).collect();
        by_holdings.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let quota: BTreeMap<&str, usize> = by_holdings
            .iter()
            .enumerate()
            .map(|(rank, (id, _))| (*id, base + usize::from(rank < extra)))
            .collect();
        for (id, list) in held.iter_mut() {
            let keep = quota[id];
            if list.len() > keep {
                // Release the highest-numbered shards: any choice is minimal, this one is stable.
                pool.extend(list.drain(keep..));
            }
        }
        pool.sort_unstable();
        let mut pool = pool.into_iter();
        for (id, list) in &held {
            for _ in list.len()..quota[id] {
                if let Some(index) = pool.next() {
                    new_owner.insert(index, Some((*id).to_owned()));
                }
            }
        }
        debug_assert!(pool.next().is_none(), "quotas add up to the shard count");
    }

    new_owner
        .into_iter()
        .map(|(index, to)| move_to(&mut shards[index], index, to))
        .collect()
}

/// Gives `shard` (number `index`) to `to` at once, at the next epoch.
pub(super) fn move_to(shard: &mut Shard, index: usize, to: Option<String>) -> ShardMove {
    let from = std::mem::replace(&mut shard.owner, to.clone());
    shard.epoch += 1;
    ShardMove {
        shard: u32::try_from(index).unwrap_or(u32::MAX),
        from,
        to,
        epoch: shard.epoch,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ids(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    fn unowned(count: usize) -> Vec<Shard> {
        (0..count).map(|_| Shard::unowned()).collect()
    }

    fn counts(shards: &[Shard]) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for shard in shards {
            if let Some(owner) = &shard.owner {
                *counts.entry(owner.clone()).or_insert(0) += 1;
            }
        }
        counts
    }

    #[test]
    fn first_instance_takes_every_shard() {
        let mut shards = unowned(4);
        let moves = rebalance(&mut shards, &ids(&["a"]));
        assert_eq!(moves.len(), 4);
        assert!(moves
            .iter()
            .all(|m| m.from.is_none() && m.to.as_deref() == Some("a") && m.epoch == 1));
    }

    #[test]
    fn second_instance_takes_half_from_the_first() {
        let mut shards = unowned(4);
        rebalance(&mut shards, &ids(&["a"]));
        let moves = rebalance(&mut shards, &ids(&["a", "b"]));
        let expected: Vec<ShardMove> = [2, 3]
            .into_iter()
            .map(|shard| ShardMove {
                shard,
                from: Some("a".into()),
                to: Some("b".into()),
                epoch: 2,
            })
            .collect();
        assert_eq!(moves, expected);
    }

    #[test]
    fn leaving_instance_hands_over_only_its_shards() {
        let mut shards = unowned(6);
        rebalance(&mut shards, &ids(&["a", "b", "c"]));
        let before = shards.clone();
        let moves = rebalance(&mut shards, &ids(&["a", "c"]));
        assert_eq!(moves.len(), 2);
        assert!(moves.iter().all(|m| m.from.as_deref() == Some("b")));
        for (index, shard) in shards.iter().enumerate() {
            if before[index].owner.as_deref() != Some("b") {
                assert_eq!(shard, &before[index]);
            }
        }
    }

    #[test]
    fn no_ready_instance_unowns_everything() {
        let mut shards = unowned(3);
        rebalance(&mut shards, &ids(&["a"]));
        let moves = rebalance(&mut shards, &BTreeSet::new());
        assert_eq!(moves.len(), 3);
        assert!(shards.iter().all(|s| s.owner.is_none() && s.epoch == 2));
        assert!(
            rebalance(&mut shards, &BTreeSet::new()).is_empty(),
            "nothing left to move"
        );
    }

    /// The fewest moves any balanced assignment needs, by trying every choice of which
    /// instances get the larger quota: independent of the algorithm under test.
    fn brute_force_minimum(held: &[usize], count: usize) -> usize {
        let n = held.len();
        let (base, extra) = (count / n, count % n);
        let mut best_kept = 0;
        for mask in 0u32..(1 << n) {
            if mask.count_ones() as usize != extra {
                continue;
            }
            let kept: usize = held
                .iter()
                .enumerate()
                .map(|(i, h)| (*h).min(base + usize::from(mask & (1 << i) != 0)))
                .sum();
            best_kept = best_kept.max(kept);
        }
        count - best_kept
    }

    proptest! {
        #[test]
        fn rebalancing_is_balanced_minimal_and_fenced(
            shard_count in 1usize..80,
            initial in proptest::collection::vec(0usize..8, 0..80),
            ready_mask in 0u8..=255,
        ) {
            let universe: Vec<String> = (0..8).map(|i| format!("i{i}")).collect();
            // Arbitrary (even unbalanced or stale) starting owners: index 7 means unowned.
            let mut shards: Vec<Shard> = (0..shard_count)
                .map(|i| {
                    let owner = initial.get(i).copied().unwrap_or(7);
                    Shard { owner: (owner < 7).then(|| universe[owner].clone()), epoch: (i as u64) % 3, handoff: None }
                })
                .collect();
            let ready: BTreeSet<String> =
                (0..8).filter(|i| ready_mask & (1 << i) != 0).map(|i| universe[i].clone()).collect();
            let before = shards.clone();
            let moves = rebalance(&mut shards, &ready);

            // Only ready instances own shards, and all shards are owned when any is ready.
            for shard in &shards {
                match &shard.owner {
                    Some(owner) => prop_assert!(ready.contains(owner)),
                    None => prop_assert!(ready.is_empty()),
                }
            }
            // Balanced within one shard.
            if !ready.is_empty() {
                let counts = counts(&shards);
                let per_instance: Vec<usize> = ready.iter().map(|id| counts.get(id).copied().unwrap_or(0)).collect();
                let (min, max) = (per_instance.iter().min().unwrap(), per_instance.iter().max().unwrap());
                prop_assert!(max - min <= 1, "unbalanced: {per_instance:?}");
                // Minimal moves.
                let held_before = counts_of(&before, &ready);
                prop_assert_eq!(moves.len(), brute_force_minimum(&held_before, shard_count));
            }
            // A shard's epoch grows by exactly one when it moves and never otherwise.
            let moved: BTreeSet<u32> = moves.iter().map(|m| m.shard).collect();
            for (index, (old, new)) in before.iter().zip(&shards).enumerate() {
                if moved.contains(&(index as u32)) {
                    prop_assert_eq!(new.epoch, old.epoch + 1);
                    prop_assert_ne!(&new.owner, &old.owner);
                } else {
                    prop_assert_eq!(new, old);
                }
            }
            // Rebalancing a balanced map is a no-op.
            prop_assert!(rebalance(&mut shards, &ready).is_empty());
        }
    }

    fn counts_of(shards: &[Shard], ready: &BTreeSet<String>) -> Vec<usize> {
        let counts = counts(shards);
        ready.iter().map(|id| counts.get(id).copied().unwrap_or(0)).collect()
    }
}
