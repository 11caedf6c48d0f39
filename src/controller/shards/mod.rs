//! Automatic shards (`projectsync run --shards N`): every resource belongs
//! to one of N shards by a stable hash of its UID, each shard is a
//! `coordination.k8s.io` Lease, and only the replica holding a shard's Lease
//! reconciles its resources. This module is the replica's own view of what
//! it holds ([`Shards`], no I/O): the controller asks it before every
//! reconcile, and it fences a shard (stops admitting its reconciles and
//! cancels those in flight) before the Lease could expire in anyone else's
//! eyes. [`plan`] decides what to acquire and hand back (pure), [`manager`]
//! talks to the API server.
//!
//! With one shard (the default) there are no shard Leases: the leader
//! election of [`super::leader`] decides, and [`Shards::single`] admits
//! everything.

pub mod manager;
pub mod plan;

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use kube::ResourceExt;
use tokio::{sync::watch, time::Instant};

use crate::{api::ProjectSync, metrics::Metrics};

pub use manager::{ShardManager, ShardSettings};

/// Most shards an install may have: each is a Lease renewed every few
/// seconds, and the shard number is a metric label.
pub const MAX_SHARDS: u32 = 256;

/// The shard of a resource: FNV-1a (64 bit) of its UID, modulo `count`.
/// Stable across replicas, restarts and versions; the UID (not the name)
/// so that a resource deleted and created again may land elsewhere, and a
/// tenant cannot choose names to pile its resources onto one shard.
pub fn shard_of_uid(uid: &str, count: u32) -> u32 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = uid.bytes().fold(OFFSET, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    });
    // `count` is at least 1 and at most MAX_SHARDS: the remainder fits.
    u32::try_from(hash % u64::from(count.max(1))).unwrap_or(0)
}

/// The shard of `obj` among `count`.
pub fn shard_of(obj: &ProjectSync, count: u32) -> u32 {
    shard_of_uid(obj.uid().as_deref().unwrap_or_default(), count)
}

/// Where this replica stands on one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// Another replica's, or nobody's.
    None,
    /// Ours until `valid_until` unless renewed: reconciles are admitted.
    Owned { valid_until: Instant },
    /// Ours, being handed back: reconciles in flight finish, no new ones.
    Draining { valid_until: Instant },
}

impl Hold {
    fn valid_until(self) -> Option<Instant> {
        match self {
            Hold::None => None,
            Hold::Owned { valid_until } | Hold::Draining { valid_until } => Some(valid_until),
        }
    }
}

struct Slot {
    hold: Hold,
    in_flight: usize,
}

struct Inner {
    count: u32,
    /// `false` with one shard under leader election: everything is admitted.
    fenced: bool,
    slots: Mutex<Vec<Slot>>,
    /// Bumped on every change of a hold or of reconciles in flight.
    changed: watch::Sender<u64>,
    metrics: Option<Metrics>,
}

/// This replica's shards. Cheap to clone.
#[derive(Clone)]
pub struct Shards {
    inner: Arc<Inner>,
}

impl Default for Shards {
    fn default() -> Self {
        Self::single()
    }
}

impl Shards {
    /// One shard, decided by leader election: every resource is admitted.
    pub fn single() -> Self {
        Self::build(1, false, None)
    }

    /// `count` shards, none held yet, reported in `metrics`.
    pub fn fenced(count: u32, metrics: Option<Metrics>) -> Self {
        Self::build(count.clamp(1, MAX_SHARDS), true, metrics)
    }

    fn build(count: u32, fenced: bool, metrics: Option<Metrics>) -> Self {
        let slots = (0..count)
            .map(|_| Slot {
                hold: Hold::None,
                in_flight: 0,
            })
            .collect();
        Shards {
            inner: Arc::new(Inner {
                count,
                fenced,
                slots: Mutex::new(slots),
                changed: watch::channel(0).0,
                metrics,
            }),
        }
    }

    /// How many shards the install has.
    pub fn count(&self) -> u32 {
        self.inner.count
    }

    /// Whether ownership is decided by shard Leases (more than one shard).
    pub fn is_sharded(&self) -> bool {
        self.inner.fenced
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Slot>> {
        self.inner
            .slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn notify(&self) {
        self.inner.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Admits a reconcile of `obj` when its shard is ours and not being
    /// handed back; the ticket counts it in flight until dropped.
    pub fn admit(&self, obj: &ProjectSync) -> Option<Ticket> {
        let shard = shard_of(obj, self.inner.count);
        if !self.inner.fenced {
            return Some(Ticket {
                shards: self.clone(),
                shard,
                counted: false,
            });
        }
        let now = Instant::now();
        let mut slots = self.lock();
        let slot = slots.get_mut(usize::try_from(shard).ok()?)?;
        match slot.hold {
            Hold::Owned { valid_until } if now < valid_until => {
                slot.in_flight += 1;
                drop(slots);
                self.gauge(shard, 1);
                self.notify();
                Some(Ticket {
                    shards: self.clone(),
                    shard,
                    counted: true,
                })
            }
            _ => None,
        }
    }

    /// Whether a run of `obj` may start now: checked again after waiting
    /// for a run slot, so that a shard being handed back drains quickly.
    pub fn may_start(&self, obj: &ProjectSync) -> bool {
        if !self.inner.fenced {
            return true;
        }
        let shard = shard_of(obj, self.inner.count);
        let now = Instant::now();
        self.hold(shard)
            .is_some_and(|hold| matches!(hold, Hold::Owned { valid_until } if now < valid_until))
    }

    fn hold(&self, shard: u32) -> Option<Hold> {
        let slots = self.lock();
        slots
            .get(usize::try_from(shard).ok()?)
            .map(|slot| slot.hold)
    }

    fn gauge(&self, shard: u32, delta: i64) {
        if let Some(metrics) = &self.inner.metrics {
            metrics
                .shard_queue_depth
                .with_label_values(&[shard.to_string().as_str()])
                .add(delta);
        }
    }

    fn set(&self, shard: u32, hold: Hold) {
        {
            let mut slots = self.lock();
            if let Some(slot) = usize::try_from(shard).ok().and_then(|i| slots.get_mut(i)) {
                slot.hold = hold;
            }
        }
        self.notify();
    }

    /// The shard is ours (acquired or renewed) until `valid_until`; a shard
    /// being drained stays draining.
    pub fn renewed(&self, shard: u32, valid_until: Instant) {
        let draining = matches!(self.hold(shard), Some(Hold::Draining { .. }));
        self.set(
            shard,
            if draining {
                Hold::Draining { valid_until }
            } else {
                Hold::Owned { valid_until }
            },
        );
    }

    /// Stops admitting reconciles of `shard`; those in flight finish.
    pub fn drain(&self, shard: u32) {
        if let Some(Hold::Owned { valid_until } | Hold::Draining { valid_until }) = self.hold(shard)
        {
            self.set(shard, Hold::Draining { valid_until });
        }
    }

    /// Admits reconciles of a draining `shard` again (it is ours to keep
    /// after all: the membership changed back).
    pub fn undrain(&self, shard: u32) {
        if let Some(Hold::Draining { valid_until }) = self.hold(shard) {
            self.set(shard, Hold::Owned { valid_until });
        }
    }

    /// The shard is no longer ours: reconciles in flight are cancelled.
    pub fn forget(&self, shard: u32) {
        self.set(shard, Hold::None);
    }

    /// Shards held (owned or draining), including those whose validity ran
    /// out but that the manager has not yet noticed.
    pub fn held(&self) -> Vec<u32> {
        self.lock()
            .iter()
            .zip(0u32..)
            .filter(|(slot, _)| slot.hold != Hold::None)
            .map(|(_, shard)| shard)
            .collect()
    }

    /// Shards this replica reconciles right now (held and valid; draining
    /// ones included, as their runs still finish here).
    pub fn owned_now(&self) -> Vec<u32> {
        let now = Instant::now();
        self.lock()
            .iter()
            .zip(0u32..)
            .filter(|(slot, _)| slot.hold.valid_until().is_some_and(|v| now < v))
            .map(|(_, shard)| shard)
            .collect()
    }

    /// Held shards whose validity ran out without a renewal: fenced.
    pub fn expired(&self, now: Instant) -> Vec<u32> {
        self.lock()
            .iter()
            .zip(0u32..)
            .filter(|(slot, _)| slot.hold.valid_until().is_some_and(|v| now >= v))
            .map(|(_, shard)| shard)
            .collect()
    }

    /// Whether `shard` is being handed back.
    pub fn is_draining(&self, shard: u32) -> bool {
        matches!(self.hold(shard), Some(Hold::Draining { .. }))
    }

    /// Reconciles of `shard` in flight (admitted and not finished).
    pub fn in_flight(&self, shard: u32) -> usize {
        let slots = self.lock();
        usize::try_from(shard)
            .ok()
            .and_then(|i| slots.get(i))
            .map_or(0, |slot| slot.in_flight)
    }

    /// Resolves at the next change of a hold or of reconciles in flight.
    pub async fn changed(&self) {
        let mut rx = self.inner.changed.subscribe();
        let _ = rx.changed().await;
    }

    /// Resolves once `shard` is not ours any more, or its validity ran out.
    async fn lost(&self, shard: u32) {
        let mut rx = self.inner.changed.subscribe();
        loop {
            let Some(valid_until) = self.hold(shard).and_then(Hold::valid_until) else {
                return;
            };
            if Instant::now() >= valid_until {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep_until(valid_until) => {}
                changed = rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// An admitted reconcile of one shard's resource.
pub struct Ticket {
    shards: Shards,
    shard: u32,
    counted: bool,
}

impl Ticket {
    /// The shard the resource belongs to.
    pub fn shard(&self) -> u32 {
        self.shard
    }

    /// Resolves when the reconcile must stop: its shard was lost or will
    /// be by the time another replica could take it. Never, without shards.
    pub async fn fenced(&self) {
        if self.counted {
            self.shards.lost(self.shard).await;
        } else {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.counted {
            return;
        }
        {
            let mut slots = self.shards.lock();
            if let Some(slot) = usize::try_from(self.shard)
                .ok()
                .and_then(|i| slots.get_mut(i))
            {
                slot.in_flight = slot.in_flight.saturating_sub(1);
            }
        }
        self.shards.gauge(self.shard, -1);
        self.shards.notify();
    }
}

/// How long before the Lease could expire in another replica's eyes this
/// replica stops: it renews every `lease / 4`, and stops admitting (and
/// cancels what runs) one renewal period before the expiry.
pub fn fence_margin(lease: Duration) -> Duration {
    (lease / 4).max(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(uid: &str) -> ProjectSync {
        let spec: crate::api::ProjectSyncSpec = serde_json::from_value(serde_json::json!({
            "source": { "git": { "url": "https://example.com/r.git" } },
            "branch": "main",
        }))
        .unwrap();
        let mut obj = ProjectSync::new("a", spec);
        obj.metadata.uid = Some(uid.into());
        obj
    }

    #[test]
    fn a_uid_always_lands_on_the_same_shard_and_all_shards_are_used() {
        assert_eq!(
            shard_of_uid("6f1c0b1e-0000-4000-8000-000000000001", 6),
            shard_of_uid("6f1c0b1e-0000-4000-8000-000000000001", 6)
        );
        let mut seen = [0usize; 6];
        for i in 0..600 {
            seen[shard_of_uid(&format!("uid-{i}"), 6) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 60), "uneven spread: {seen:?}");
        assert_eq!(shard_of_uid("anything", 1), 0);
        assert_eq!(shard_of_uid("anything", 0), 0, "no division by zero");
    }

    #[test]
    fn one_shard_admits_everything_without_leases() {
        let shards = Shards::single();
        let obj = resource("u");
        assert!(shards.admit(&obj).is_some());
        assert!(shards.may_start(&obj));
    }

    #[tokio::test]
    async fn only_an_owned_shard_admits_and_a_lapsed_one_fences_its_reconciles() {
        let shards = Shards::fenced(4, None);
        let obj = resource("some-uid");
        let shard = shard_of(&obj, 4);
        assert!(shards.admit(&obj).is_none(), "nothing is held at first");
        shards.renewed(shard, Instant::now() + Duration::from_millis(300));
        let ticket = shards.admit(&obj).expect("owned");
        assert_eq!(shards.in_flight(shard), 1);
        // Not renewed: the ticket is fenced when the validity runs out.
        tokio::time::timeout(Duration::from_secs(5), ticket.fenced())
            .await
            .expect("fenced at the end of the validity");
        assert!(shards.admit(&obj).is_none(), "lapsed");
        assert_eq!(shards.expired(Instant::now()), vec![shard]);
        drop(ticket);
        assert_eq!(shards.in_flight(shard), 0);
    }

    #[tokio::test]
    async fn a_draining_shard_lets_running_reconciles_finish_but_admits_none() {
        let shards = Shards::fenced(2, None);
        let obj = resource("x");
        let shard = shard_of(&obj, 2);
        shards.renewed(shard, Instant::now() + Duration::from_secs(60));
        let ticket = shards.admit(&obj).expect("owned");
        shards.drain(shard);
        assert!(shards.admit(&obj).is_none());
        assert!(!shards.may_start(&obj));
        assert!(
            tokio::time::timeout(Duration::from_millis(200), ticket.fenced())
                .await
                .is_err(),
            "draining does not cancel what runs"
        );
        shards.renewed(shard, Instant::now() + Duration::from_secs(60));
        assert!(shards.is_draining(shard), "a renewal keeps it draining");
        shards.forget(shard);
        tokio::time::timeout(Duration::from_secs(1), ticket.fenced())
            .await
            .expect("forgetting fences at once");
        assert!(shards.held().is_empty());
    }
}
