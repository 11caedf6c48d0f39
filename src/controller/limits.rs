//! Fair shares of the operator between tenants: a global limit on runs at
//! once, a per-namespace limit beside it (one tenant with many resources
//! cannot hold every global slot), the operator-wide ceiling of a run's
//! deadline, and whether embeddings may be reused across namespaces. No
//! I/O; the slots are in-memory semaphores of this process.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{
    api::{EmbeddingProvider, EmbeddingReuseScope, ProjectSync},
    pipeline::EmbeddingReusePolicy,
    store::{EndpointFingerprint, ReuseScope},
};

use super::error::Error;

/// How long a resource of a namespace at its limit waits before it asks
/// again: short, so it starts soon after a slot frees, and without holding
/// anything meanwhile.
pub const NAMESPACE_WAIT: Duration = Duration::from_secs(3);

/// The operator's limits, shared by every reconcile.
#[derive(Debug)]
pub struct RunLimits {
    global: Arc<Semaphore>,
    per_namespace: usize,
    running: Mutex<HashMap<String, usize>>,
    /// Ceiling of every run's deadline (`--max-run-duration`).
    pub max_run_duration: Duration,
    /// `--allow-cluster-embedding-reuse`.
    pub allow_cluster_embedding_reuse: bool,
}

/// A namespace's share, held for a run; released when dropped.
#[derive(Debug)]
pub struct NamespaceSlot {
    limits: Arc<RunLimits>,
    namespace: String,
}

impl Drop for NamespaceSlot {
    fn drop(&mut self) {
        let mut running = self
            .limits
            .running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = running.get_mut(&self.namespace) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                running.remove(&self.namespace);
            }
        }
    }
}

/// Both slots of a run: its namespace's and a global one.
#[derive(Debug)]
pub struct RunSlot {
    _global: OwnedSemaphorePermit,
    _namespace: NamespaceSlot,
}

/// The operator's defaults: 4 runs at once, 2 per namespace, runs of at
/// most 2h, embeddings never reused across namespaces.
impl Default for RunLimits {
    fn default() -> Self {
        RunLimits::new(4, 2, Duration::from_secs(7200), false)
    }
}

impl RunLimits {
    /// `global` runs at once in all, `per_namespace` of one namespace (both
    /// at least 1).
    pub fn new(
        global: usize,
        per_namespace: usize,
        max_run_duration: Duration,
        allow_cluster_embedding_reuse: bool,
    ) -> Self {
        RunLimits {
            global: Arc::new(Semaphore::new(global.max(1))),
            per_namespace: per_namespace.max(1),
            running: Mutex::default(),
            max_run_duration,
            allow_cluster_embedding_reuse,
        }
    }

    /// A share of `namespace`, or `None` when it runs as many as it may:
    /// the caller requeues after [`NAMESPACE_WAIT`] instead of waiting, so
    /// it holds no global slot (nor a controller worker) meanwhile.
    pub fn try_namespace(self: &Arc<Self>, namespace: &str) -> Option<NamespaceSlot> {
        let mut running = self
            .running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = running.entry(namespace.to_string()).or_default();
        if *count >= self.per_namespace {
            return None;
        }
        *count += 1;
        Some(NamespaceSlot {
            limits: self.clone(),
            namespace: namespace.to_string(),
        })
    }

    /// Waits for a global slot (first come, first served among the
    /// namespaces' shares: at most `per_namespace` of any one namespace
    /// wait or run).
    pub async fn acquire(&self, namespace: NamespaceSlot) -> RunSlot {
        let global = self
            .global
            .clone()
            .acquire_owned()
            .await
            .expect("the run semaphore is never closed");
        RunSlot {
            _global: global,
            _namespace: namespace,
        }
    }

    /// Runs of `namespace` holding a share now.
    pub fn running_in(&self, namespace: &str) -> usize {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(namespace)
            .copied()
            .unwrap_or(0)
    }

    /// The deadline of a run whose spec asks for `requested`.
    pub fn build_deadline(&self, requested: Duration) -> RunDeadline {
        if requested > self.max_run_duration {
            RunDeadline {
                limit: self.max_run_duration,
                set_by: "the operator's --max-run-duration",
            }
        } else {
            RunDeadline {
                limit: requested,
                set_by: "spec.runTimeout",
            }
        }
    }

    /// Which stored embeddings a run of `obj` may reuse; refuses the
    /// Cluster scope unless the operator allows it.
    pub fn build_reuse_policy(&self, obj: &ProjectSync) -> Result<EmbeddingReusePolicy, Error> {
        let Some(spec) = obj.spec.embedding.as_ref() else {
            return Ok(EmbeddingReusePolicy::default());
        };
        let scope = match spec.reuse_scope {
            EmbeddingReuseScope::Project => ReuseScope::Project,
            EmbeddingReuseScope::Namespace => ReuseScope::Namespace,
            EmbeddingReuseScope::Cluster if self.allow_cluster_embedding_reuse => {
                ReuseScope::Cluster
            }
            EmbeddingReuseScope::Cluster => return Err(Error::EmbeddingReuseNotAllowed),
        };
        let endpoint = match spec.provider {
            EmbeddingProvider::OpenAI => spec.endpoint.as_deref().map(EndpointFingerprint::of_url),
            EmbeddingProvider::None => None,
        };
        Ok(EmbeddingReusePolicy { endpoint, scope })
    }
}

/// How long a run may take, and which setting decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunDeadline {
    pub limit: Duration,
    pub set_by: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Arc<RunLimits> {
        Arc::new(RunLimits::new(4, 2, Duration::from_secs(3600), false))
    }

    #[test]
    fn a_namespace_at_its_limit_gets_no_share_and_others_still_do() {
        let limits = limits();
        let first = limits.try_namespace("a").unwrap();
        let _second = limits.try_namespace("a").unwrap();
        assert!(limits.try_namespace("a").is_none());
        assert!(limits.try_namespace("b").is_some());
        assert_eq!(limits.running_in("a"), 2);
        drop(first);
        assert_eq!(limits.running_in("a"), 1);
        assert!(limits.try_namespace("a").is_some());
    }

    #[tokio::test]
    async fn one_namespace_holds_at_most_its_share_of_the_global_slots() {
        let limits = limits();
        let mut held = Vec::new();
        for _ in 0..12 {
            if let Some(slot) = limits.try_namespace("a") {
                held.push(limits.acquire(slot).await);
            }
        }
        assert_eq!(held.len(), 2);
        let b = limits.try_namespace("b").unwrap();
        let run = tokio::time::timeout(Duration::from_secs(1), limits.acquire(b)).await;
        assert!(run.is_ok(), "namespace b waited for a global slot");
    }

    #[test]
    fn the_operator_ceiling_caps_the_spec_deadline_and_says_so() {
        let limits = limits();
        assert_eq!(
            limits.build_deadline(Duration::from_secs(2)),
            RunDeadline {
                limit: Duration::from_secs(2),
                set_by: "spec.runTimeout"
            }
        );
        let capped = limits.build_deadline(Duration::from_secs(86_400));
        assert_eq!(capped.limit, Duration::from_secs(3600));
        assert!(capped.set_by.contains("--max-run-duration"));
    }
}
