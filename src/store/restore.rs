//! Restore: make an earlier completed run's picture current again by
//! recording a new completed run whose content is that run's. Paths that
//! differ are copied (rows and memory entries, inside Postgres), paths the
//! earlier picture lacks are superseded; the chain stays linear and nothing
//! is destroyed. One transaction. Does I/O.

use super::complete::complete_in;
use super::error::db;
use super::files::add_files_recorded;
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
        let copied = sqlx::query!(
            r#"
            WITH src AS (
                SELECT t.* FROM sync_files($2) t
                 WHERE NOT EXISTS (
                       SELECT 1 FROM active_repository_files c
                        WHERE c.project_id = t.project_id AND c.path = t.path
                          AND c.blob_sha = t.blob_sha AND c.mode = t.mode AND c.kind = t.kind)
            ),
            ins AS (
                INSERT INTO repository_files (project_id, path, blob_sha, size, mode, kind, introduced_sync_id)
                SELECT project_id, path, blob_sha, size, mode, kind, $1 FROM src
                RETURNING id, path
            ),
            mem AS (
                INSERT INTO memory_entries (project_id, file_id, path, chunk_index, start_line, end_line,
                                            language, content, content_hash, embedding, embedding_model,
                                            introduced_sync_id)
                SELECT m.project_id, ins.id, ins.path, m.chunk_index, m.start_line, m.end_line,
                       m.language, m.content, m.content_hash, m.embedding, m.embedding_model, $1
                  FROM ins
                  JOIN src ON src.path = ins.path
                  JOIN memory_entries m ON m.file_id = src.id
                RETURNING 1
            )
            SELECT (SELECT count(*) FROM ins) AS "files!", (SELECT count(*) FROM mem) AS "entries!"
            "#,
            id.0,
            target.0
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(db("copy restored file versions"))?;
        add_files_recorded(&mut tx, id, usize::try_from(copied.files).unwrap_or(0)).await?;
        add_memory_written(&mut tx, id, copied.entries).await?;

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
            copied_files = copied.files,
            copied_entries = copied.entries,
            "restored an earlier sync"
        );
        Ok(record)
    }
}
