//! Pages of what the HTTP API lists: a project's runs newest first and the
//! files of a completed run's picture by path, each continued from a cursor
//! (keyset paging: the cost of a page does not grow with how far in it is),
//! and the owner of a run. Does I/O.

use chrono::{DateTime, Utc};

use super::error::db;
use super::files::FileRow;
use super::syncs::SyncRow;
use super::{ActiveFile, ProjectId, Store, StoreError, SyncId, SyncRecord};

/// Where a page of runs continues: after the run that started at `started_at`
/// with id `id` (runs are ordered by start, then id, newest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunCursor {
    pub started_at: DateTime<Utc>,
    pub id: SyncId,
}

impl Store {
    /// Up to `limit` runs of `project` older than `after` (from the newest
    /// when `None`), newest first.
    pub async fn history_page(
        &self,
        project: ProjectId,
        after: Option<RunCursor>,
        limit: u32,
    ) -> Result<Vec<SyncRecord>, StoreError> {
        sqlx::query_as!(
            SyncRow,
            r#"SELECT * FROM project_syncs
                WHERE project_id = $1
                  AND ($2::timestamptz IS NULL OR (started_at, id) < ($2, $3::uuid))
                ORDER BY started_at DESC, id DESC
                LIMIT $4"#,
            project.0,
            after.map(|c| c.started_at),
            after.map(|c| c.id.0),
            i64::from(limit)
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db("read a page of sync history"))?
        .into_iter()
        .map(SyncRecord::try_from)
        .collect()
    }

    /// Up to `limit` files of completed run `sync`'s picture whose path
    /// starts with `prefix` and sorts after `after` (by bytes), in path
    /// order.
    pub async fn files_page(
        &self,
        sync: SyncId,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ActiveFile>, StoreError> {
        self.check_readable(sync, "read").await?;
        sqlx::query_as!(
            FileRow,
            r#"SELECT id AS "id!", path AS "path!", blob_sha AS "blob_sha!", size AS "size!",
                      mode AS "mode!", kind AS "kind!"
                 FROM sync_files($1)
                WHERE starts_with(path, $2)
                  AND ($3::text IS NULL OR path COLLATE "C" > $3::text COLLATE "C")
                ORDER BY path COLLATE "C"
                LIMIT $4"#,
            sync.0,
            prefix,
            after,
            i64::from(limit)
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db("read a page of files of a sync"))?
        .into_iter()
        .map(ActiveFile::try_from)
        .collect()
    }

    /// The run `sync` with the key (`namespace/name`) of the project it
    /// belongs to, or `None` for an unknown id.
    pub async fn sync_with_owner(
        &self,
        sync: SyncId,
    ) -> Result<Option<(SyncRecord, String)>, StoreError> {
        let key = sqlx::query_scalar!(
            r#"SELECT p.key FROM project_syncs s JOIN projects p ON p.id = s.project_id
                WHERE s.id = $1"#,
            sync.0
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(db("read the project of a sync run"))?;
        let Some(key) = key else {
            return Ok(None);
        };
        match self.get_sync(sync).await {
            Ok(record) => Ok(Some((record, key))),
            Err(StoreError::SyncNotFound { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }
}
