//! Reads for a change-set scan (I/O): the current rows of the paths a change
//! set names, and the current rows that already hold given blobs (what a
//! changed path can reuse instead of being fetched). Both are index probes
//! (`repository_files (project_id, path)` and `(project_id, blob_sha)`), so
//! their cost follows the change, not the repository.

use super::error::db;
use super::files::FileRow;
use super::model::ActiveFile;
use super::{ProjectId, Store, StoreError};

impl Store {
    /// The project's current rows at `paths` (paths without one are left
    /// out), sorted by path bytes.
    pub async fn active_files_at(
        &self,
        project: ProjectId,
        paths: &[String],
    ) -> Result<Vec<ActiveFile>, StoreError> {
        if paths.is_empty() {
            return Ok(Vec::new());
        }
        sqlx::query_as!(
            FileRow,
            r#"SELECT id AS "id!", path AS "path!", blob_sha AS "blob_sha!", size AS "size!",
                      mode AS "mode!", kind AS "kind!"
                 FROM active_repository_files
                WHERE project_id = $1 AND path = ANY($2)
                ORDER BY path COLLATE "C""#,
            project.0,
            paths
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db("read active files at paths"))?
        .into_iter()
        .map(ActiveFile::try_from)
        .collect()
    }

    /// The project's current rows whose blob is one of `shas`, sorted by
    /// path bytes (the order in which a full scan meets them, so both scans
    /// pick the same version to reuse).
    pub async fn active_files_with_blobs(
        &self,
        project: ProjectId,
        shas: &[String],
    ) -> Result<Vec<ActiveFile>, StoreError> {
        if shas.is_empty() {
            return Ok(Vec::new());
        }
        sqlx::query_as!(
            FileRow,
            r#"SELECT id AS "id!", path AS "path!", blob_sha AS "blob_sha!", size AS "size!",
                      mode AS "mode!", kind AS "kind!"
                 FROM active_repository_files
                WHERE project_id = $1 AND blob_sha = ANY($2)
                ORDER BY path COLLATE "C""#,
            project.0,
            shas
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db("read active files by blob"))?
        .into_iter()
        .map(ActiveFile::try_from)
        .collect()
    }
}
