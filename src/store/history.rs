//! Comparing runs: which paths differ between the pictures of two completed
//! runs of a project. Does I/O.

use super::error::db;
use super::model::SyncDiff;
use super::{Store, StoreError, SyncId};

impl Store {
    /// Paths added, modified (blob, mode or kind changed) and deleted from
    /// the picture of `from` to the picture of `to`. Both must be completed,
    /// unpruned runs of the same project; either order works.
    #[tracing::instrument(skip(self))]
    pub async fn diff(&self, from: SyncId, to: SyncId) -> Result<SyncDiff, StoreError> {
        let from_run = self.check_readable(from, "diffed").await?;
        let to_run = self.check_readable(to, "diffed").await?;
        if from_run.project != to_run.project {
            return Err(StoreError::ProjectMismatch { from, to });
        }
        let rows = sqlx::query!(
            r#"
            WITH a AS (SELECT path, blob_sha, mode, kind FROM sync_files($1)),
                 b AS (SELECT path, blob_sha, mode, kind FROM sync_files($2))
            SELECT COALESCE(a.path, b.path) AS "path!",
                   CASE WHEN a.path IS NULL THEN 'added'
                        WHEN b.path IS NULL THEN 'deleted'
                        ELSE 'modified' END AS "change!"
              FROM a FULL JOIN b ON a.path = b.path
             WHERE a.path IS NULL OR b.path IS NULL
                OR (a.blob_sha, a.mode, a.kind) IS DISTINCT FROM (b.blob_sha, b.mode, b.kind)
             ORDER BY 1
            "#,
            from.0,
            to.0
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db("diff two syncs"))?;
        let mut diff = SyncDiff {
            from: Some(from),
            to: Some(to),
            ..SyncDiff::default()
        };
        for row in rows {
            match row.change.as_str() {
                "added" => diff.added.push(row.path),
                "deleted" => diff.deleted.push(row.path),
                _ => diff.modified.push(row.path),
            }
        }
        Ok(diff)
    }
}
