//! The store: Postgres persistence of projects, sync runs, file versions and
//! memory entries, with the sync chain and the `active_*` views. This is the
//! data layer under the pipeline; it knows nothing of Kubernetes. Every
//! public method does I/O against Postgres; the types and their checks in
//! [`ids`], [`model`] and [`batch`] are pure.
//!
//! A run's rows are written while it runs (tagged with the run as their
//! introducer) and become visible in one transaction when it completes, which
//! also supersedes the rows they replace. Readers therefore see exactly the
//! latest completed run's picture, never half of one.

mod batch;
mod complete;
mod error;
mod files;
mod history;
mod ids;
mod memory;
mod migrate;
mod model;
mod projects;
mod restore;
mod retention;
mod search;
mod syncs;

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

pub use error::StoreError;
pub use ids::{ContentHash, FileId, MemoryEntryId, ProjectId, SyncId};
pub use migrate::MIGRATOR;
pub use model::{
    ActiveFile, Completion, DeleteReport, Embedding, FileKind, MemoryHit, MissingEmbedding,
    NewFile, NewMemoryEntry, NewSync, Project, ProjectIdentity, ProjectSource, PruneReport, Rename,
    RunMetrics, SourceMemory, SyncDiff, SyncFailure, SyncRecord, SyncStatus,
};

/// Handle on the Postgres store. Cheap to clone (a pool inside).
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    /// Connects with a pool sized for the operator (one run per project at a
    /// time, plus readers). Does not migrate: call [`Store::migrate`].
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(StoreError::Connect)?;
        Ok(Store::new(pool))
    }

    /// Wraps an existing pool.
    pub fn new(pool: PgPool) -> Self {
        Store { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}
