//! Schema migrations: the numbered SQL files in `migrations/`, embedded in
//! the binary. Applied under sqlx's Postgres advisory lock (one lock per
//! database), so replicas starting together migrate exactly once, on a
//! connection without the pool's statement and lock timeouts. Does I/O.

use sqlx::Connection;
use sqlx::migrate::Migrator;

use super::{Store, StoreError};

/// The embedded migrations.
pub static MIGRATOR: Migrator = {
    let mut migrator = sqlx::migrate!("./migrations");
    // A replica of an older release must still start while a newer one has
    // already migrated (rolling upgrades): migrations are additive, so newer
    // versions in the database are tolerated.
    migrator.ignore_missing = true;
    migrator
};

impl Store {
    /// Applies the migrations this binary knows and the database lacks.
    ///
    /// The advisory lock is session-level: on failure the connection is
    /// closed rather than returned to the pool, so the lock cannot leak into
    /// a pooled connection and stall the next migrator.
    #[tracing::instrument(skip(self))]
    pub async fn migrate(&self) -> Result<(), StoreError> {
        // The pool's statement and lock timeouts must not cut a migration
        // (a large table rewritten) or the wait for the advisory lock while
        // another replica migrates: this connection is opened apart from the
        // pool with its own settings (later `-c` options override earlier
        // ones), and closed afterwards.
        let options = (*self.pool.connect_options()).clone().options([
            (
                "statement_timeout",
                super::setting_millis(self.migration_statement_timeout),
            ),
            ("lock_timeout", "0".to_string()),
        ]);
        let mut conn = sqlx::PgConnection::connect_with(&options)
            .await
            .map_err(StoreError::Connect)?;
        // `run_direct` is what `run` calls; `run` itself is not `Send` for a
        // `&mut PgConnection` (sqlx's "Acquire is not general enough"), and
        // start-up code spawns this future.
        match MIGRATOR.run_direct(&mut conn).await {
            Ok(()) => {
                let _ = conn.close().await;
                tracing::info!(
                    latest = MIGRATOR.iter().map(|m| m.version).max(),
                    "database schema is up to date"
                );
                Ok(())
            }
            Err(error) => {
                let _ = conn.close().await;
                Err(StoreError::Migrate(error))
            }
        }
    }

    /// The migration versions applied to the database, in order.
    pub async fn applied_migrations(&self) -> Result<Vec<i64>, StoreError> {
        // sqlx's own bookkeeping table: not part of our schema, so not checked
        // against it at compile time.
        sqlx::query_scalar::<_, i64>(
            "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(super::error::db("list applied migrations"))
    }
}
