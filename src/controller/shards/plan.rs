//! What a replica does with the shard Leases on one tick, decided from what
//! it read (the live members and each shard's holder) and what it holds.
//! Pure: [`super::manager`] reads the Leases and carries the plan out.
//!
//! Fair shares: the live members sorted by identity; with N shards and M
//! members, the first `N mod M` take `ceil(N / M)` and the rest
//! `floor(N / M)`, so the shares add up to N exactly and never exceed the
//! ceiling. A replica above its share drains and hands back the excess; one
//! below takes free shards (no holder, or a Lease expired). A member that
//! announces a different shard count means an upgrade in progress: nobody
//! holds anything until the counts agree, as two counts map resources to
//! shards differently.

use std::collections::BTreeSet;

/// One shard Lease as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedShard {
    pub shard: u32,
    /// `None` when the Lease does not exist or has no holder.
    pub holder: Option<String>,
    /// The holder's renewal is older than the Lease's duration.
    pub expired: bool,
}

/// What to do on this tick.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Held shards to renew (including those being drained).
    pub renew: Vec<u32>,
    /// Held shards to drain and then hand back.
    pub release: Vec<u32>,
    /// Free shards to try to take, in order of preference.
    pub acquire: Vec<u32>,
    /// Shards we believed held that another replica now holds.
    pub lost: Vec<u32>,
    /// This replica's fair share.
    pub share: u32,
}

/// The fair share of `me` among `members` (sorted, unique, `me` included).
pub fn fair_share(count: u32, members: &[String], me: &str) -> u32 {
    let m = u32::try_from(members.len()).unwrap_or(u32::MAX).max(1);
    let rank = members
        .iter()
        .position(|member| member == me)
        .and_then(|i| u32::try_from(i).ok())
        .unwrap_or(m.saturating_sub(1));
    count / m + u32::from(rank < count % m)
}

/// The plan for `me`, holding `held`, given the live `members` (any order,
/// `me` is added), whether every member agrees on `count`, and the shards
/// as read.
pub fn build_plan(
    count: u32,
    me: &str,
    members: &[String],
    agreed: bool,
    held: &BTreeSet<u32>,
    observed: &[ObservedShard],
) -> Plan {
    let mut members: Vec<String> = members.to_vec();
    members.push(me.to_string());
    members.sort();
    members.dedup();
    let share = if agreed {
        fair_share(count, &members, me)
    } else {
        0
    };
    let mut plan = Plan {
        share,
        ..Plan::default()
    };
    let mut free = Vec::new();
    let mut kept = Vec::new();
    for shard in observed.iter().filter(|s| s.shard < count) {
        let mine = shard.holder.as_deref() == Some(me);
        let taken_by_other = shard.holder.is_some() && !mine && !shard.expired;
        if held.contains(&shard.shard) {
            if taken_by_other {
                plan.lost.push(shard.shard);
            } else {
                kept.push(shard.shard);
            }
        } else if !taken_by_other {
            // Free, expired, or ours from before (a restart with the same
            // identity, or a renewal that came too late): take it again.
            free.push(shard.shard);
        }
    }
    // Held but not observed (a read that missed it): keep renewing.
    for shard in held {
        if !observed.iter().any(|s| s.shard == *shard) && *shard < count {
            kept.push(*shard);
        }
    }
    kept.sort_unstable();
    kept.dedup();
    let share_len = usize::try_from(share).unwrap_or(usize::MAX);
    if kept.len() > share_len {
        plan.release = kept[share_len..].to_vec();
    } else {
        // Start at a point of our own so that replicas reaching for free
        // shards at once mostly reach for different ones.
        let start = super::shard_of_uid(me, count.max(1));
        free.sort_by_key(|shard| (shard + count - start) % count.max(1));
        plan.acquire = free.into_iter().take(share_len - kept.len()).collect();
    }
    plan.renew = kept;
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn observed(holders: &[Option<&str>]) -> Vec<ObservedShard> {
        holders
            .iter()
            .zip(0u32..)
            .map(|(holder, shard)| ObservedShard {
                shard,
                holder: holder.map(str::to_string),
                expired: false,
            })
            .collect()
    }

    #[test]
    fn fair_shares_add_up_to_the_shard_count_and_never_pass_the_ceiling() {
        for count in 1..=12u32 {
            for m in 1..=7usize {
                let names: Vec<String> = (0..m).map(|i| format!("r{i}")).collect();
                let shares: Vec<u32> = names
                    .iter()
                    .map(|me| fair_share(count, &names, me))
                    .collect();
                assert_eq!(shares.iter().sum::<u32>(), count, "{count} over {m}");
                let ceiling = count.div_ceil(m as u32);
                assert!(
                    shares.iter().all(|&s| s <= ceiling),
                    "{count} over {m}: {shares:?}"
                );
            }
        }
    }

    #[test]
    fn a_lone_replica_takes_every_free_shard() {
        let plan = build_plan(6, "a", &[], true, &BTreeSet::new(), &observed(&[None; 6]));
        assert_eq!(plan.share, 6);
        let mut acquire = plan.acquire.clone();
        acquire.sort_unstable();
        assert_eq!(acquire, vec![0, 1, 2, 3, 4, 5]);
        assert!(plan.release.is_empty() && plan.renew.is_empty());
    }

    #[test]
    fn a_joining_replica_makes_the_others_hand_back_their_excess() {
        // a, b and c hold two each; d joins: a and b keep two, c and d one.
        let shards = observed(&[
            Some("a"),
            Some("a"),
            Some("b"),
            Some("b"),
            Some("c"),
            Some("c"),
        ]);
        let all = members(&["a", "b", "c", "d"]);
        let held_c: BTreeSet<u32> = [4, 5].into();
        let plan_c = build_plan(6, "c", &all, true, &held_c, &shards);
        assert_eq!((plan_c.share, plan_c.release.clone()), (1, vec![5]));
        assert_eq!(plan_c.renew, vec![4, 5], "renewed while it drains");
        let plan_a = build_plan(6, "a", &all, true, &[0, 1].into(), &shards);
        assert!(plan_a.release.is_empty() && plan_a.acquire.is_empty());
        let plan_d = build_plan(6, "d", &all, true, &BTreeSet::new(), &shards);
        assert_eq!(plan_d.share, 1);
        assert!(
            plan_d.acquire.is_empty(),
            "nothing is free until c hands one back"
        );
        let mut after = shards.clone();
        after[5].holder = None;
        let plan_d = build_plan(6, "d", &all, true, &BTreeSet::new(), &after);
        assert_eq!(plan_d.acquire, vec![5]);
    }

    #[test]
    fn the_shards_of_a_dead_replica_are_taken_once_expired() {
        let mut shards = observed(&[
            Some("a"),
            Some("a"),
            Some("b"),
            Some("b"),
            Some("c"),
            Some("c"),
        ]);
        let plan = build_plan(6, "a", &members(&["b"]), true, &[0, 1].into(), &shards);
        assert!(plan.acquire.is_empty(), "c's Leases have not expired");
        shards[4].expired = true;
        shards[5].expired = true;
        let plan = build_plan(6, "a", &members(&["b"]), true, &[0, 1].into(), &shards);
        assert_eq!(plan.share, 3);
        assert_eq!(plan.acquire.len(), 1);
        assert!([4, 5].contains(&plan.acquire[0]));
    }

    #[test]
    fn a_shard_another_replica_holds_is_lost_and_never_renewed() {
        let shards = observed(&[Some("b"), Some("a")]);
        let plan = build_plan(2, "a", &members(&["b"]), true, &[0, 1].into(), &shards);
        assert_eq!(plan.lost, vec![0]);
        assert_eq!(plan.renew, vec![1]);
    }

    #[test]
    fn members_disagreeing_on_the_shard_count_hold_nothing() {
        let shards = observed(&[Some("a"), None]);
        let plan = build_plan(2, "a", &members(&["b"]), false, &[0].into(), &shards);
        assert_eq!((plan.share, plan.release.clone()), (0, vec![0]));
        assert!(plan.acquire.is_empty());
    }

    #[test]
    fn a_shard_still_leased_to_this_identity_is_taken_back_after_a_restart() {
        let shards = observed(&[Some("a"), Some("b")]);
        let plan = build_plan(2, "a", &members(&["b"]), true, &BTreeSet::new(), &shards);
        assert_eq!(plan.acquire, vec![0]);
    }
}
