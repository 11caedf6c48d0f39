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
mod lookup;
mod memory;
mod migrate;
mod model;
mod pages;
mod projects;
mod restore;
mod retention;
mod search;
mod syncs;

use std::{str::FromStr, sync::Arc, time::Duration};

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

pub use error::StoreError;
pub use ids::{ContentHash, EndpointFingerprint, FileId, MemoryEntryId, ProjectId, SyncId};
pub use migrate::MIGRATOR;
pub use model::{
    ActiveFile, Completion, DeleteReport, Embedding, EmbeddingReuse, FileKind, MemoryHit,
    MissingEmbedding, NewFile, NewMemoryEntry, NewSync, Project, ProjectIdentity, ProjectSource,
    PruneReport, Rename, ReuseScope, RunMetrics, SourceMemory, SyncDiff, SyncFailure, SyncRecord,
    SyncStatus,
};
pub use pages::RunCursor;

/// Handle on the Postgres store. Cheap to clone (a pool inside).
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
    /// Recorded on every run this handle starts; recovery of abandoned
    /// runs touches only runs of this owner.
    owner: Arc<str>,
    /// `statement_timeout` of the connection that migrates (zero: none).
    migration_statement_timeout: Duration,
}

/// Limits of the store's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Postgres `statement_timeout` of every pooled connection (zero: none).
    pub statement_timeout: Duration,
    /// Postgres `lock_timeout` of every pooled connection (zero: none).
    pub lock_timeout: Duration,
    /// `statement_timeout` of the connection that applies migrations, which
    /// may rewrite large tables and waits on the migration advisory lock
    /// (its `lock_timeout` is always none).
    pub migration_statement_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            statement_timeout: Duration::from_secs(60),
            lock_timeout: Duration::from_secs(10),
            migration_statement_timeout: Duration::ZERO,
        }
    }
}

/// A duration as a Postgres setting value in milliseconds (`0` disables).
fn setting_millis(duration: Duration) -> String {
    let ms = duration.as_millis();
    // A sub-millisecond limit must not turn into "no limit".
    let ms = if ms == 0 && !duration.is_zero() {
        1
    } else {
        ms
    };
    ms.min(i32::MAX as u128).to_string()
}

impl Store {
    /// Connects with a pool sized for the operator (one run per project at a
    /// time, plus readers) and the default [`ConnectionLimits`]. Does not
    /// migrate: call [`Store::migrate`].
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, ConnectionLimits::default()).await
    }

    /// Connects with `limits` on every connection of the pool.
    pub async fn connect_with(url: &str, limits: ConnectionLimits) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(StoreError::Connect)?
            .options([
                (
                    "statement_timeout",
                    setting_millis(limits.statement_timeout),
                ),
                ("lock_timeout", setting_millis(limits.lock_timeout)),
            ]);
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(StoreError::Connect)?;
        let mut store = Store::new(pool);
        store.migration_statement_timeout = limits.migration_statement_timeout;
        Ok(store)
    }

    /// Wraps an existing pool. Runs are owned by this process alone (a
    /// unique owner) until [`Store::with_owner`] names an install.
    pub fn new(pool: PgPool) -> Self {
        Store {
            pool,
            owner: format!("process/{}", uuid::Uuid::new_v4()).into(),
            migration_statement_timeout: Duration::ZERO,
        }
    }

    /// The same store, recording `owner` on the runs it starts and
    /// recovering only that owner's abandoned runs. An empty owner is
    /// ignored.
    pub fn with_owner(mut self, owner: &str) -> Self {
        if !owner.is_empty() {
            self.owner = owner.into();
        }
        self
    }

    /// Who the runs this handle starts belong to.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_become_millisecond_settings_and_zero_stays_off() {
        assert_eq!(setting_millis(Duration::from_secs(60)), "60000");
        assert_eq!(setting_millis(Duration::ZERO), "0");
        assert_eq!(setting_millis(Duration::from_micros(10)), "1");
        assert_eq!(
            setting_millis(Duration::from_secs(u64::MAX)),
            i32::MAX.to_string()
        );
    }
}
