//! Restore: make an earlier completed run's picture current again by
//! recording a new completed run whose content is that run's. Paths that
//! differ are copied (rows and memory entries, inside Postgres), paths the
//! earlier picture lacks are superseded; the chain stays linear and nothing
//! is destroyed. One transaction. Does I/O.

use super::batch::FILE_BATCH_ROWS;
use super::complete::complete_in;
use super::error::db;
use super::files::{add_files_recorded, copy_file_versions};
use super::memory::add_memory_written;
use super::model::{Completion, SyncRecord, SyncStatus};
use super::{Store, StoreError, SyncId};

impl Store {
    /// Records a new run (trigger `"restore of <target>"`) whose picture is
    /// `target`'s, on top of the project's latest completed run. `target`
    /// must be completed and not pruned by retention.
    #[tracing::instrument(skip(self))]
    pub async fn restore(&self, target: SyncId) -> Result<SyncRecord, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db("begin transaction"))?;
        // FOR SHARE: retention marks a run pruned before deleting its rows,
        // and that update waits for this transaction.
        let run = sqlx::query!(
            r#"SELECT project_id, branch, commit_sha, status, content_pruned_at IS NOT NULL AS "pruned!"
                 FROM project_syncs WHERE id = $1 FOR SHARE"#,
            target.0
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(db("lock restored sync"))?
        .ok_or(StoreError::SyncNotFound { sync: target })?;
        let status = SyncStatus::parse(&run.status).ok_or_else(|| StoreError::Corrupt {
            column: "project_syncs.status",
            value: run.status.clone(),
        })?;
        if status != SyncStatus::Completed {
            return Err(StoreError::SyncNotCompleted {
                sync: target,
                status,
                op: "restored",
            });
        }
        if run.pruned {
            return Err(StoreError::SyncPruned {
                sync: target,
                op: "restored",
            });
        }

        let id = SyncId::new_v7();
        sqlx::query!(
            r#"
            INSERT INTO project_syncs (id, project_id, branch, commit_sha, status, stage, trigger,
                                       base_sync_id, restored_from_sync_id, owner)
            SELECT $1, $2, $3, $4, 'IN_PROGRESS', 'finalize', $5,
                   (SELECT id FROM project_syncs WHERE project_id = $2 AND status = 'COMPLETED'
                     ORDER BY chain_seq DESC LIMIT 1),
                   $6, $7
            "#,
            id.0,
            run.project_id,
            run.branch,
            run.commit_sha,
            format!("restore of {target}"),
            target.0,
            self.owner()
        )
        .execute(&mut *tx)
        .await
        .map_err(db("insert restore run"))?;

        // Paths of the current picture that the target lacks.
        let deleted_paths = sqlx::query_scalar!(
            r#"
            SELECT f.path FROM active_repository_files f
             WHERE f.project_id = $1
               AND NOT EXISTS (SELECT 1 FROM sync_files($2) t WHERE t.path = f.path)
            "#,
            run.project_id,
            target.0
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(db("list paths the restored sync lacks"))?
        .into_iter()
        .flatten()
        .collect::<Vec<String>>();

        // Versions of the target that the current picture lacks or holds
        // differently: copy them, with their memory entries.
        let versions = sqlx::query!(
            r#"
            SELECT t.id AS "id!", t.path AS "path!" FROM sync_files($1) t
             WHERE NOT EXISTS (
                   SELECT 1 FROM active_repository_files c
                    WHERE c.project_id = t.project_id AND c.path = t.path
                      AND c.blob_sha = t.blob_sha AND c.mode = t.mode AND c.kind = t.kind)
            "#,
            target.0
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(db("list restored file versions"))?;
        let (from, to): (Vec<i64>, Vec<String>) =
            versions.into_iter().map(|v| (v.id, v.path)).unzip();
        let (mut copied_files, mut copied_entries) = (0usize, 0i64);
        for (from, to) in from.chunks(FILE_BATCH_ROWS).zip(to.chunks(FILE_BATCH_ROWS)) {
            let rows = copy_file_versions(&mut tx, id, from, to)
                .await
                .map_err(db("copy restored file versions"))?;
            copied_files += rows.len();
            copied_entries += rows.first().map_or(0, |row| row.copied);
        }
        add_files_recorded(&mut tx, id, copied_files).await?;
        add_memory_written(&mut tx, id, copied_entries).await?;

        let completion = Completion {
            deleted_paths,
            ..Completion::default()
        };
        let row = complete_in(&mut tx, id, &completion).await?;
        tx.commit().await.map_err(db("commit restore"))?;
        let record = SyncRecord::try_from(row)?;
        tracing::info!(
            sync = %id,
            %target,
            copied_files,
            copied_entries,
            "restored an earlier sync"
        );
        Ok(record)
    }
}
