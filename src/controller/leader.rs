//! Leader election through a `coordination.k8s.io/v1` Lease (with the
//! `kube-lease-manager` crate), so that of several replicas exactly one runs
//! the controller and syncs. I/O against the API server.
//!
//! The leader renews the Lease before it expires; a replica that loses it
//! stops reconciling at once (its caller exits), and a replica that stops
//! gracefully releases it so another takes over without waiting for expiry.

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::{sync::watch, task::JoinHandle};

/// Where the Lease lives and who we are.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    /// This replica's identity (the pod name in a cluster).
    pub identity: String,
    /// Seconds a Lease stays valid without renewal: the failover time.
    pub duration_secs: u64,
    /// Seconds before expiry at which the holder renews.
    pub grace_secs: u64,
}

/// Errors of leader election.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("cannot use Lease {namespace}/{name} for leader election: {source}")]
    Lease {
        namespace: String,
        name: String,
        #[source]
        source: LeaseManagerError,
    },
    #[error(
        "lost the leader Lease {namespace}/{name} to another replica; stopping so that only one replica syncs"
    )]
    Lost { namespace: String, name: String },
    #[error("leader election for Lease {namespace}/{name} stopped unexpectedly")]
    Stopped { namespace: String, name: String },
}

/// A running election: wait to lead, notice losing it, release it.
pub struct Election {
    settings: LeaseSettings,
    state: watch::Receiver<bool>,
    task: JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>,
}

impl Election {
    /// Joins the election for the Lease (created if missing).
    pub async fn join(client: Client, settings: LeaseSettings) -> Result<Self, LeaderError> {
        let manager = LeaseManagerBuilder::new(client, &settings.name)
            .with_namespace(&settings.namespace)
            .with_identity(&settings.identity)
            .with_duration(settings.duration_secs)
            .with_grace(settings.grace_secs)
            .build()
            .await
            .map_err(|source| LeaderError::Lease {
                namespace: settings.namespace.clone(),
                name: settings.name.clone(),
                source,
            })?;
        let (state, task) = manager.watch().await;
        Ok(Election {
            settings,
            state,
            task,
        })
    }

    /// Resolves once this replica holds the Lease.
    pub async fn leading(&mut self) -> Result<(), LeaderError> {
        let waited = self.state.wait_for(|leader| *leader).await.map(|_| ());
        waited.map_err(|_| self.stopped())
    }

    /// Resolves when this replica, having led, no longer holds the Lease.
    pub async fn lost(&mut self) -> LeaderError {
        let waited = self.state.wait_for(|leader| !*leader).await.map(|_| ());
        match waited {
            Ok(()) => LeaderError::Lost {
                namespace: self.settings.namespace.clone(),
                name: self.settings.name.clone(),
            },
            Err(_) => self.stopped(),
        }
    }

    /// Steps down: releases the Lease so another replica takes over at once.
    pub async fn release(self) {
        let Election {
            state,
            task,
            settings,
        } = self;
        drop(state);
        match task.await {
            Ok(Ok(_)) => tracing::info!(lease = %settings.name, "released the leader Lease"),
            Ok(Err(error)) => {
                tracing::warn!(%error, lease = %settings.name, "releasing the leader Lease failed")
            }
            Err(error) => {
                tracing::warn!(%error, lease = %settings.name, "leader election task failed")
            }
        }
    }

    fn stopped(&self) -> LeaderError {
        LeaderError::Stopped {
            namespace: self.settings.namespace.clone(),
            name: self.settings.name.clone(),
        }
    }
}
