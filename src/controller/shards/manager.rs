//! The shard Leases in the API server: each tick renews this replica's
//! member Lease (`<lease>-member-<identity>`), reads every Lease of the
//! install, carries out the [`super::plan`] (renew, drain and hand back,
//! take free ones) with optimistic concurrency (a `replace` with the
//! resourceVersion read: of two replicas reaching for one shard, one gets
//! a conflict), recovers the abandoned runs of a shard it takes, and
//! triggers a reconcile of that shard's resources. I/O against the API
//! server and Postgres.

use std::{collections::BTreeSet, time::Duration};

use chrono::Utc;
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    runtime::reflector::{ObjectRef, Store as Reader},
};
use serde_json::json;
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};

use super::{
    Shards, fence_margin,
    plan::{ObservedShard, build_plan},
    shard_of,
};
use crate::{
    api::ProjectSync, controller::dereference::project_key, metrics::Metrics, store::Store,
};

/// The annotation on a member Lease with the shard count the member runs
/// with: members that disagree hold nothing (see [`super::plan`]).
pub const SHARDS_ANNOTATION: &str = "projectsync.dev/shards";

/// Where the shard Leases live and who we are.
#[derive(Debug, Clone)]
pub struct ShardSettings {
    pub namespace: String,
    /// Prefix of the Lease names (`--lease-name`).
    pub lease_name: String,
    pub identity: String,
    pub count: u32,
    /// How long a Lease stays valid without renewal: the takeover time.
    pub lease_duration: Duration,
}

impl ShardSettings {
    /// The Lease of shard `shard`.
    pub fn shard_lease(&self, shard: u32) -> String {
        format!("{}-shard-{shard}", self.lease_name)
    }

    fn member_prefix(&self) -> String {
        format!("{}-member-", self.lease_name)
    }

    /// This replica's member Lease: a DNS-safe form of the identity and a
    /// hash of it (two identities that sanitize alike stay apart).
    pub fn member_lease(&self) -> String {
        let safe: String = self
            .identity
            .chars()
            .map(|c| {
                let c = c.to_ascii_lowercase();
                if c.is_ascii_alphanumeric() { c } else { '-' }
            })
            .take(40)
            .collect();
        let hash = super::shard_of_uid(&self.identity, u32::MAX);
        format!(
            "{}{}-{hash:08x}",
            self.member_prefix(),
            safe.trim_matches('-')
        )
    }
}

/// Runs the shard Leases of one replica.
pub struct ShardManager {
    api: Api<Lease>,
    settings: ShardSettings,
    shards: Shards,
    store: Store,
    metrics: Metrics,
    readers: Vec<Reader<ProjectSync>>,
    triggers: Vec<mpsc::UnboundedSender<ObjectRef<ProjectSync>>>,
}

/// A failed call to the API server, with the Lease it was about.
#[derive(Debug, thiserror::Error)]
enum LeaseCallError {
    #[error("{action} Lease {name}: {source}")]
    Kube {
        action: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("{action} Lease {name}: no answer within {secs}s")]
    Timeout {
        action: &'static str,
        name: String,
        secs: u64,
    },
}

impl LeaseCallError {
    fn is_conflict(&self) -> bool {
        matches!(self, LeaseCallError::Kube { source: kube::Error::Api(status), .. } if status.code == 409)
    }

    fn is_not_found(&self) -> bool {
        matches!(self, LeaseCallError::Kube { source: kube::Error::Api(status), .. } if status.code == 404)
    }
}

impl ShardManager {
    pub fn new(
        client: Client,
        settings: ShardSettings,
        shards: Shards,
        store: Store,
        metrics: Metrics,
        readers: Vec<Reader<ProjectSync>>,
        triggers: Vec<mpsc::UnboundedSender<ObjectRef<ProjectSync>>>,
    ) -> Self {
        ShardManager {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            shards,
            store,
            metrics,
            readers,
            triggers,
        }
    }

    fn tick_period(&self) -> Duration {
        fence_margin(self.settings.lease_duration)
    }

    async fn call<T>(
        &self,
        action: &'static str,
        name: &str,
        fut: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, LeaseCallError> {
        let limit = self.tick_period();
        match tokio::time::timeout(limit, fut).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err(LeaseCallError::Kube {
                action,
                name: name.to_string(),
                source,
            }),
            Err(_) => Err(LeaseCallError::Timeout {
                action,
                name: name.to_string(),
                secs: limit.as_secs(),
            }),
        }
    }

    /// Ticks until `stop` turns true, then hands every shard back (after
    /// failing the runs the replica leaves unfinished in them) and removes
    /// its member Lease. The caller stops reconciling first.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        tracing::info!(
            shards = self.settings.count,
            identity = %self.settings.identity,
            lease_prefix = %self.settings.lease_name,
            "sharding: joining"
        );
        loop {
            let started = Instant::now();
            self.tick().await;
            let draining = self
                .shards
                .held()
                .into_iter()
                .any(|s| self.shards.is_draining(s));
            tokio::select! {
                () = tokio::time::sleep_until(started + self.tick_period()) => {}
                _ = stop.wait_for(|stop| *stop) => break,
                // A drained shard is handed back at once, not at the next tick.
                () = self.drained(), if draining => {}
            }
        }
        self.release_all().await;
    }

    /// Resolves when a draining shard has nothing in flight.
    async fn drained(&self) {
        loop {
            let done = self
                .shards
                .held()
                .into_iter()
                .any(|s| self.shards.is_draining(s) && self.shards.in_flight(s) == 0);
            if done {
                return;
            }
            self.shards.changed().await;
        }
    }

    async fn tick(&self) {
        let now = Timestamp::now();
        let t0 = Instant::now();
        for shard in self.shards.expired(t0) {
            tracing::warn!(
                shard,
                "sharding: the shard Lease was not renewed in time; stopped reconciling its resources"
            );
            self.shards.forget(shard);
            self.count_handover("lost");
        }
        if let Err(error) = self.renew_member(now).await {
            tracing::warn!(%error, "sharding: could not renew the member Lease");
        }
        let leases = match self
            .call("list", "*", self.api.list(&ListParams::default()))
            .await
        {
            Ok(list) => list.items,
            Err(error) => {
                tracing::warn!(%error, "sharding: could not read the shard Leases; held shards stay until their validity runs out");
                return;
            }
        };
        let (members, agreed) = self.live_members(&leases, now);
        if !agreed {
            tracing::warn!(
                shards = self.settings.count,
                "sharding: live replicas run with different --shards; holding no shard until they agree"
            );
        }
        let observed: Vec<ObservedShard> = (0..self.settings.count)
            .map(|shard| {
                let lease = self.find(&leases, shard);
                let holder = lease
                    .and_then(|l| l.spec.as_ref())
                    .and_then(|s| s.holder_identity.clone())
                    .filter(|h| !h.is_empty());
                ObservedShard {
                    shard,
                    expired: lease.is_none_or(|l| is_expired(l, now)),
                    holder,
                }
            })
            .collect();
        let held: BTreeSet<u32> = self.shards.held().into_iter().collect();
        let plan = build_plan(
            self.settings.count,
            &self.settings.identity,
            &members,
            agreed,
            &held,
            &observed,
        );
        for shard in &plan.lost {
            tracing::warn!(
                shard,
                "sharding: another replica holds the shard now; stopped reconciling its resources"
            );
            self.shards.forget(*shard);
            self.count_handover("lost");
        }
        for shard in &plan.release {
            if !self.shards.is_draining(*shard) {
                tracing::info!(
                    shard,
                    share = plan.share,
                    "sharding: draining the shard to hand it back"
                );
                self.shards.drain(*shard);
            }
        }
        // Renewals at once, not one after another: under a slow API server
        // a sequence of them could outlast a shard's validity.
        let renewals = plan.renew.iter().filter_map(|&shard| {
            let lease = self.find(&leases, shard)?;
            if !plan.release.contains(&shard) && self.shards.is_draining(shard) {
                tracing::info!(shard, "sharding: keeping the shard after all");
                self.shards.undrain(shard);
            }
            Some(async move {
                if self.shards.is_draining(shard) && self.shards.in_flight(shard) == 0 {
                    self.hand_back(shard, lease, Timestamp::now()).await;
                } else {
                    self.renew(shard, lease).await;
                }
            })
        });
        futures::future::join_all(renewals).await;
        for shard in plan.acquire {
            self.acquire(shard, self.find(&leases, shard)).await;
        }
        let owned = self.shards.owned_now().len();
        self.metrics
            .shards_owned
            .set(i64::try_from(owned).unwrap_or(i64::MAX));
    }

    /// Until when a Lease renewed (or taken) at `start` is ours to act on:
    /// one renewal period before it could expire in another's eyes.
    fn valid_from(&self, start: Instant) -> Instant {
        start + self.settings.lease_duration - fence_margin(self.settings.lease_duration)
    }

    fn find<'a>(&self, leases: &'a [Lease], shard: u32) -> Option<&'a Lease> {
        let name = self.settings.shard_lease(shard);
        leases
            .iter()
            .find(|l| l.metadata.name.as_deref() == Some(name.as_str()))
    }

    fn count_handover(&self, change: &str) {
        self.metrics
            .shard_handovers
            .with_label_values(&[change])
            .inc();
    }

    /// Live members (unexpired member Leases) and whether all of them run
    /// with our shard count.
    fn live_members(&self, leases: &[Lease], now: Timestamp) -> (Vec<String>, bool) {
        let prefix = self.settings.member_prefix();
        let mut agreed = true;
        let mut members = Vec::new();
        for lease in leases {
            if !lease.name_any().starts_with(&prefix) || is_expired(lease, now) {
                continue;
            }
            let Some(holder) = lease
                .spec
                .as_ref()
                .and_then(|s| s.holder_identity.clone())
                .filter(|h| !h.is_empty())
            else {
                continue;
            };
            let count = lease
                .annotations()
                .get(SHARDS_ANNOTATION)
                .and_then(|v| v.parse::<u32>().ok());
            if count != Some(self.settings.count) {
                agreed = false;
            }
            members.push(holder);
        }
        (members, agreed)
    }

    async fn renew_member(&self, now: Timestamp) -> Result<(), LeaseCallError> {
        let name = self.settings.member_lease();
        let duration = lease_seconds(self.settings.lease_duration);
        let patch = json!({
            "metadata": {"annotations": {SHARDS_ANNOTATION: self.settings.count.to_string()}},
            "spec": {
                "holderIdentity": self.settings.identity,
                "leaseDurationSeconds": duration,
                "renewTime": MicroTime(now),
            }
        });
        let patched = self
            .call(
                "renew member",
                &name,
                self.api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch)),
            )
            .await;
        match patched {
            Ok(_) => Ok(()),
            Err(error) if error.is_not_found() => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        annotations: Some(
                            [(
                                SHARDS_ANNOTATION.to_string(),
                                self.settings.count.to_string(),
                            )]
                            .into(),
                        ),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.settings.identity.clone()),
                        lease_duration_seconds: Some(duration),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        ..LeaseSpec::default()
                    }),
                };
                self.call(
                    "create member",
                    &name,
                    self.api.create(&PostParams::default(), &lease),
                )
                .await
                .map(|_| ())
            }
            Err(error) => Err(error),
        }
    }

    /// Renews one shard Lease. The validity counts from this call (the
    /// renewTime written is taken with it), not from the tick's start: a
    /// slow tick must not leave a renewal looking older than it is.
    async fn renew(&self, shard: u32, lease: &Lease) {
        let now = Timestamp::now();
        let valid_until = self.valid_from(Instant::now());
        let mut lease = lease.clone();
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(lease_seconds(self.settings.lease_duration));
        let name = self.settings.shard_lease(shard);
        match self
            .call(
                "renew",
                &name,
                self.api.replace(&name, &PostParams::default(), &lease),
            )
            .await
        {
            Ok(_) => self.shards.renewed(shard, valid_until),
            Err(error) if error.is_conflict() => {
                // Changed since we read it: read again next tick. If another
                // replica took it, the plan says so; until then the
                // validity runs out on its own.
                tracing::debug!(shard, %error, "sharding: renewal conflicted");
            }
            Err(error) => {
                tracing::warn!(shard, %error, "sharding: could not renew the shard Lease")
            }
        }
    }

    async fn hand_back(&self, shard: u32, lease: &Lease, now: Timestamp) {
        let mut lease = lease.clone();
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = None;
        spec.renew_time = Some(MicroTime(now));
        let name = self.settings.shard_lease(shard);
        // Ours no more before the Lease says so: if the write fails, the
        // Lease still names us and the next tick may take it back.
        self.shards.forget(shard);
        match self
            .call(
                "release",
                &name,
                self.api.replace(&name, &PostParams::default(), &lease),
            )
            .await
        {
            Ok(_) => {
                self.count_handover("released");
                tracing::info!(shard, "sharding: handed the shard back");
            }
            Err(error) => tracing::warn!(shard, %error, "sharding: could not hand the shard back"),
        }
    }

    async fn acquire(&self, shard: u32, lease: Option<&Lease>) {
        let now = Timestamp::now();
        let valid_until = self.valid_from(Instant::now());
        let name = self.settings.shard_lease(shard);
        let spec = |previous: Option<&LeaseSpec>| LeaseSpec {
            holder_identity: Some(self.settings.identity.clone()),
            lease_duration_seconds: Some(lease_seconds(self.settings.lease_duration)),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(
                previous
                    .and_then(|s| s.lease_transitions)
                    .unwrap_or(0)
                    .saturating_add(1),
            ),
            ..LeaseSpec::default()
        };
        let result = match lease {
            Some(lease) => {
                let mut lease = lease.clone();
                lease.spec = Some(spec(lease.spec.as_ref()));
                self.call(
                    "acquire",
                    &name,
                    self.api.replace(&name, &PostParams::default(), &lease),
                )
                .await
            }
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(spec(None)),
                };
                self.call(
                    "create",
                    &name,
                    self.api.create(&PostParams::default(), &lease),
                )
                .await
            }
        };
        match result {
            Ok(_) => {
                self.shards.renewed(shard, valid_until);
                self.count_handover("acquired");
                tracing::info!(shard, "sharding: acquired the shard");
                self.recover(shard, Utc::now()).await;
                self.trigger(shard);
            }
            Err(error) if error.is_conflict() => {
                tracing::debug!(shard, %error, "sharding: another replica took the shard first");
            }
            Err(error) => tracing::warn!(shard, %error, "sharding: could not acquire the shard"),
        }
    }

    /// The resources of `shard` this replica watches, as `namespace/name`.
    fn keys_of(&self, shard: u32) -> Vec<String> {
        self.readers
            .iter()
            .flat_map(|reader| reader.state())
            .filter(|obj| shard_of(obj, self.settings.count) == shard)
            .map(|obj| project_key(&obj))
            .collect()
    }

    /// Fails the runs of `shard`'s resources that started before `before`
    /// and never finished: a replica that held the shard died (or, at our
    /// own shutdown, ran out of grace). Runs started after `before` are
    /// this replica's own and are left alone.
    async fn recover(&self, shard: u32, before: chrono::DateTime<Utc>) {
        let mut failed = 0usize;
        for key in self.keys_of(shard) {
            let project = match self.store.find_project(&key).await {
                Ok(Some(project)) => project,
                Ok(None) => continue,
                Err(error) => {
                    tracing::warn!(shard, resource = %key, %error, "sharding: could not look the project up for recovery");
                    continue;
                }
            };
            match self
                .store
                .fail_abandoned(
                    Some(project.id),
                    before,
                    "the replica that held the resource's shard stopped before the run finished",
                )
                .await
            {
                Ok(runs) => failed += runs.len(),
                Err(error) => {
                    tracing::warn!(shard, resource = %key, %error, "sharding: could not fail abandoned runs")
                }
            }
        }
        if failed > 0 {
            tracing::warn!(
                shard,
                runs = failed,
                "sharding: marked abandoned runs of the shard FAILED"
            );
        }
    }

    /// Asks the controllers to reconcile every resource of `shard` (the
    /// watch events that arrived while another replica held it were
    /// skipped).
    fn trigger(&self, shard: u32) {
        for (reader, trigger) in self.readers.iter().zip(&self.triggers) {
            for obj in reader.state() {
                if shard_of(&obj, self.settings.count) == shard {
                    let _ = trigger.send(ObjectRef::from_obj(obj.as_ref()));
                }
            }
        }
    }

    async fn release_all(&self) {
        let now = Timestamp::now();
        let leases = self
            .call("list", "*", self.api.list(&ListParams::default()))
            .await
            .map(|list| list.items)
            .unwrap_or_default();
        for shard in self.shards.held() {
            // Nothing of this replica runs any more: whatever is open is
            // abandoned, and failing it before the hand-back means the next
            // holder starts from a clean chain.
            self.recover(shard, Utc::now()).await;
            match self.find(&leases, shard) {
                Some(lease) => self.hand_back(shard, lease, now).await,
                None => self.shards.forget(shard),
            }
        }
        self.metrics.shards_owned.set(0);
        let name = self.settings.member_lease();
        if let Err(error) = self
            .call(
                "delete member",
                &name,
                self.api.delete(&name, &DeleteParams::default()),
            )
            .await
        {
            tracing::warn!(%error, "sharding: could not remove the member Lease; it expires on its own");
        }
        tracing::info!("sharding: left");
    }
}

fn lease_seconds(duration: Duration) -> i32 {
    i32::try_from(duration.as_secs().max(1)).unwrap_or(i32::MAX)
}

/// Whether the Lease's holder let it lapse (or it never had a renewal).
fn is_expired(lease: &Lease, now: Timestamp) -> bool {
    let Some(spec) = lease.spec.as_ref() else {
        return true;
    };
    let (Some(renewed), Some(duration)) = (spec.renew_time.as_ref(), spec.lease_duration_seconds)
    else {
        return true;
    };
    let age_ms = now
        .as_millisecond()
        .saturating_sub(renewed.0.as_millisecond());
    age_ms > i64::from(duration).saturating_mul(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(identity: &str) -> ShardSettings {
        ShardSettings {
            namespace: "ns".into(),
            lease_name: "projectsync-leader".into(),
            identity: identity.into(),
            count: 6,
            lease_duration: Duration::from_secs(15),
        }
    }

    #[test]
    fn member_lease_names_are_dns_safe_and_distinct() {
        let a = settings("Pod_A.1").member_lease();
        let b = settings("pod-a-1").member_lease();
        assert!(a.starts_with("projectsync-leader-member-pod-a-1-"), "{a}");
        assert_ne!(a, b);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
        let long = settings(&"x".repeat(500)).member_lease();
        assert!(long.len() < 90, "{long}");
        assert_eq!(settings("a").shard_lease(3), "projectsync-leader-shard-3");
    }

    #[test]
    fn a_lease_without_a_fresh_renewal_is_expired() {
        let now = Timestamp::now();
        let lease = |age_secs: i64| Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: Some("a".into()),
                lease_duration_seconds: Some(10),
                renew_time: Some(MicroTime(
                    Timestamp::from_millisecond(now.as_millisecond() - age_secs * 1000).unwrap(),
                )),
                ..LeaseSpec::default()
            }),
        };
        assert!(!is_expired(&lease(5), now));
        assert!(is_expired(&lease(11), now));
        assert!(is_expired(&Lease::default(), now));
    }
}
