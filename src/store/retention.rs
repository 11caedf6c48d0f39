//! Retention: delete file versions and memory entries that only runs older
//! than the last N completed ones still need, and the partial rows of failed
//! runs. Older runs stay in the history, marked as pruned (no longer
//! restorable or diffable). Deletes run in bounded batches, each its own
//! statement, so pruning never holds long locks and can resume after an
//! interruption. Does I/O.

use super::batch::DELETE_BATCH_ROWS;
use super::error::db;
use super::model::PruneReport;
use super::{ProjectId, Store, StoreError};

/// The lowest chain position whose picture must stay complete when the last
/// `keep` completed runs (at least one) are kept.
pub(crate) fn build_cutoff(latest_seq: i32, keep: u32) -> i32 {
    let keep = i32::try_from(keep.max(1)).unwrap_or(i32::MAX);
    latest_seq.saturating_sub(keep).saturating_add(1).max(1)
}

/// Runs one bounded DELETE (`batch`) until it deletes nothing; returns the
/// rows deleted in all.
async fn delete_in_batches<F, Fut>(mut batch: F) -> Result<u64, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<u64, StoreError>>,
{
    let mut total = 0;
    loop {
        match batch().await? {
            0 => return Ok(total),
            n => total += n,
        }
    }
}

impl Store {
    /// Keeps the pictures of the project's last `keep` completed runs (0 is
    /// taken as 1: the current picture is never pruned) and deletes rows
    /// that only older pictures need, plus the rows of failed runs.
    #[tracing::instrument(skip(self))]
    pub async fn prune_history(
        &self,
        project: ProjectId,
        keep: u32,
    ) -> Result<PruneReport, StoreError> {
        let mut report = PruneReport::default();
        let latest = sqlx::query_scalar!(
            r#"SELECT max(chain_seq) AS "seq" FROM project_syncs
                WHERE project_id = $1 AND status = 'COMPLETED'"#,
            project.0
        )
        .fetch_one(&self.pool)
        .await
        .map_err(db("read latest chain position"))?;

        if let Some(latest) = latest {
            let cutoff = build_cutoff(latest, keep);
            // Mark first: from here on restore and diff refuse these runs
            // (a restore in flight holds a share lock this update waits for).
            report.syncs_pruned = sqlx::query!(
                r#"UPDATE project_syncs SET content_pruned_at = now()
                    WHERE project_id = $1 AND status = 'COMPLETED'
                      AND chain_seq < $2 AND content_pruned_at IS NULL"#,
                project.0,
                cutoff
            )
            .execute(&self.pool)
            .await
            .map_err(db("mark pruned syncs"))?
            .rows_affected();
            report.memory_entries_deleted += delete_in_batches(|| async {
                sqlx::query!(
                    r#"DELETE FROM memory_entries WHERE id IN (
                           SELECT m.id FROM project_syncs x
                             JOIN repository_files f ON f.superseded_sync_id = x.id AND f.project_id = $1
                             JOIN memory_entries m ON m.file_id = f.id
                            WHERE x.project_id = $1 AND x.chain_seq <= $2
                            LIMIT $3)"#,
                    project.0,
                    cutoff,
                    DELETE_BATCH_ROWS
                )
                .execute(&self.pool)
                .await
                .map(|done| done.rows_affected())
                .map_err(db("delete superseded memory entries"))
            })
            .await?;
            report.files_deleted += delete_in_batches(|| async {
                sqlx::query!(
                    r#"DELETE FROM repository_files WHERE id IN (
                           SELECT f.id FROM project_syncs x
                             JOIN repository_files f ON f.superseded_sync_id = x.id AND f.project_id = $1
                            WHERE x.project_id = $1 AND x.chain_seq <= $2
                            LIMIT $3)"#,
                    project.0,
                    cutoff,
                    DELETE_BATCH_ROWS
                )
                .execute(&self.pool)
                .await
                .map(|done| done.rows_affected())
                .map_err(db("delete superseded file versions"))
            })
            .await?;
        }

        // Partial rows of failed runs never become active.
        report.memory_entries_deleted += delete_in_batches(|| async {
            sqlx::query!(
                r#"DELETE FROM memory_entries WHERE id IN (
                       SELECT m.id FROM project_syncs x
                         JOIN repository_files f ON f.introduced_sync_id = x.id
                         JOIN memory_entries m ON m.file_id = f.id
                        WHERE x.project_id = $1 AND x.status = 'FAILED'
                        LIMIT $2)"#,
                project.0,
                DELETE_BATCH_ROWS
            )
            .execute(&self.pool)
            .await
            .map(|done| done.rows_affected())
            .map_err(db("delete memory entries of failed runs"))
        })
        .await?;
        report.files_deleted += delete_in_batches(|| async {
            sqlx::query!(
                r#"DELETE FROM repository_files WHERE id IN (
                       SELECT f.id FROM project_syncs x
                         JOIN repository_files f ON f.introduced_sync_id = x.id
                        WHERE x.project_id = $1 AND x.status = 'FAILED'
                        LIMIT $2)"#,
                project.0,
                DELETE_BATCH_ROWS
            )
            .execute(&self.pool)
            .await
            .map(|done| done.rows_affected())
            .map_err(db("delete file versions of failed runs"))
        })
        .await?;
        tracing::info!(?report, keep, "pruned sync history");
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutoff_keeps_the_last_n_pictures_and_never_the_current_one_less() {
        assert_eq!(build_cutoff(10, 3), 8);
        assert_eq!(build_cutoff(10, 0), 10);
        assert_eq!(build_cutoff(2, 5), 1);
        assert_eq!(build_cutoff(1, u32::MAX), 1);
    }
}
