//! Completing a run: in one transaction, claim the next link of the chain
//! (the race guard), supersede the rows the run replaced or deleted (files
//! and their memory entries), and store the counts. Readers see the old
//! picture until the commit and the new one after it. Does I/O.

use sqlx::PgConnection;

use super::batch::build_path_set;
use super::error::{db, violated_constraint};
use super::model::{Completion, SyncRecord, SyncStatus};
use super::syncs::{SyncRow, millis_column};
use super::{ProjectId, Store, StoreError, SyncId};

/// The counts a completion derives from the rows, relative to the base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DerivedCounts {
    pub added: i64,
    pub modified: i64,
    pub deleted: i64,
    pub unchanged: i64,
    pub total: i64,
}

/// `recorded` rows written by the run; `superseded` rows of the base picture
/// it replaced, `modified` of which were replaced by a recorded path (the
/// rest were deleted); `base_total` files in the base picture.
pub(crate) fn derive_counts(
    recorded: i64,
    modified: i64,
    superseded: i64,
    base_total: i64,
) -> DerivedCounts {
    let added = recorded - modified;
    let deleted = superseded - modified;
    DerivedCounts {
        added,
        modified,
        deleted,
        unchanged: base_total - modified - deleted,
        total: base_total + added - deleted,
    }
}

fn to_i32(n: i64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

impl Store {
    /// Completes a running run: its rows become the project's picture, the
    /// rows they replace and the deleted paths are superseded, all in one
    /// transaction. Fails with [`StoreError::ConcurrentSync`] when another
    /// run completed on the same base first (this run then stays live: fail
    /// it). File counts are computed here from the rows.
    #[tracing::instrument(skip(self, completion), fields(deleted = completion.deleted_paths.len()))]
    pub async fn complete_sync(
        &self,
        sync: SyncId,
        completion: Completion,
    ) -> Result<SyncRecord, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db("begin transaction"))?;
        let row = complete_in(&mut tx, sync, &completion).await?;
        tx.commit().await.map_err(db("commit sync completion"))?;
        let record = SyncRecord::try_from(row)?;
        tracing::info!(
            %sync,
            chain_seq = record.chain_seq,
            added = record.files.added,
            modified = record.files.modified,
            deleted = record.files.deleted,
            unchanged = record.files.unchanged,
            skipped = record.files.skipped,
            "sync run completed"
        );
        Ok(record)
    }
}

/// The completion, inside the caller's transaction (also used by restore).
pub(crate) async fn complete_in(
    conn: &mut PgConnection,
    sync: SyncId,
    completion: &Completion,
) -> Result<SyncRow, StoreError> {
    // Lock the run: a concurrent fail_sync / fail_abandoned waits for us, or
    // we see its result.
    let run = sqlx::query!(
        r#"SELECT s.status, s.project_id, s.base_sync_id, s.commit_sha, s.files_recorded, p.key
             FROM project_syncs s JOIN projects p ON p.id = s.project_id
            WHERE s.id = $1
              FOR UPDATE OF s"#,
        sync.0
    )
    .fetch_optional(&mut *conn)
    .await
    .map_err(db("lock sync run"))?
    .ok_or(StoreError::SyncNotFound { sync })?;
    let status = SyncStatus::parse(&run.status).ok_or_else(|| StoreError::Corrupt {
        column: "project_syncs.status",
        value: run.status.clone(),
    })?;
    if status != SyncStatus::InProgress {
        return Err(StoreError::SyncNotRunning {
            project: run.key,
            sync,
            status,
            op: "complete",
        });
    }
    if run.commit_sha.is_none() {
        return Err(StoreError::InvalidInput {
            sync,
            reason: "no commit was recorded for the run".to_string(),
        });
    }
    let project = ProjectId(run.project_id);
    let base = run.base_sync_id.map(SyncId);

    // The base must still be the latest completed run. Two runs racing past
    // this check both try to take the same chain position below; the unique
    // keys let only one commit.
    let latest = sqlx::query!(
        r#"SELECT id, chain_seq AS "chain_seq!", files_total FROM project_syncs
            WHERE project_id = $1 AND status = 'COMPLETED'
            ORDER BY chain_seq DESC LIMIT 1"#,
        project.0
    )
    .fetch_optional(&mut *conn)
    .await
    .map_err(db("read latest completed sync"))?;
    if latest.as_ref().map(|l| SyncId(l.id)) != base {
        return Err(StoreError::ConcurrentSync {
            project: run.key,
            sync: Some(sync),
            base,
            latest: latest.map(|l| SyncId(l.id)),
        });
    }
    let (chain_seq, base_total) =
        latest.map_or((1, 0), |l| (l.chain_seq + 1, i64::from(l.files_total)));

    sqlx::query!(
        r#"UPDATE project_syncs
              SET status = 'COMPLETED', previous_sync_id = $2, chain_seq = $3,
                  finished_at = now(), stage = NULL
            WHERE id = $1"#,
        sync.0,
        base.map(|b| b.0),
        chain_seq
    )
    .execute(&mut *conn)
    .await
    .map_err(|error| match violated_constraint(&error) {
        Some("project_syncs_previous_sync_id_key" | "project_syncs_chain_seq_key") => {
            StoreError::ConcurrentSync {
                project: run.key.clone(),
                sync: Some(sync),
                base,
                latest: None,
            }
        }
        _ => StoreError::Database {
            op: "mark sync run completed",
            source: error,
        },
    })?;

    let deleted_paths = build_path_set(&completion.deleted_paths);
    let recorded = i64::from(run.files_recorded);
    // A first run has no completed rows to supersede.
    let (modified, superseded) = if base.is_some() {
        supersede_replaced(conn, sync, project, &deleted_paths).await?
    } else {
        (0, 0)
    };
    let counts = derive_counts(recorded, modified, superseded, base_total);
    let metrics = &completion.metrics;
    sqlx::query_as!(
        SyncRow,
        r#"
        UPDATE project_syncs
           SET files_added = $2, files_modified = $3, files_deleted = $4, files_unchanged = $5,
               files_total = $6, files_skipped = $7, bytes_fetched = $8, api_calls = $9,
               prepare_ms = COALESCE($10, prepare_ms), scan_ms = COALESCE($11, scan_ms),
               import_ms = COALESCE($12, import_ms), finalize_ms = COALESCE($13, finalize_ms),
               git_objects_fetched = $14, git_bytes_fetched = $15,
               scan_route = $16, scan_reason = $17
         WHERE id = $1
        RETURNING *
        "#,
        sync.0,
        to_i32(counts.added),
        to_i32(counts.modified),
        to_i32(counts.deleted),
        to_i32(counts.unchanged),
        to_i32(counts.total),
        i32::try_from(metrics.files_skipped).unwrap_or(i32::MAX),
        i64::try_from(metrics.bytes_fetched).unwrap_or(i64::MAX),
        i32::try_from(metrics.api_calls).unwrap_or(i32::MAX),
        millis_column(metrics.durations.prepare_ms),
        millis_column(metrics.durations.scan_ms),
        millis_column(metrics.durations.import_ms),
        millis_column(metrics.durations.finalize_ms),
        metrics
            .git_transfer
            .map(|t| i64::try_from(t.objects).unwrap_or(i64::MAX)),
        metrics
            .git_transfer
            .map(|t| i64::try_from(t.bytes).unwrap_or(i64::MAX)),
        completion.scan.as_ref().map(|s| s.route.as_str()),
        completion.scan.as_ref().and_then(|s| s.reason.as_deref()),
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(db("store sync counts"))
}

/// Supersedes the base picture's rows (and their memory entries) for every
/// path the run recorded or deleted. Returns `(modified, superseded)`.
///
/// Three statements with plans that do not depend on statistics (which lag
/// right after a bulk import): the current row of each target path is found
/// by one index probe per path, and the updates go by primary key and by
/// `file_id`. Cost follows the number of changed paths, not the repository.
///
/// The run's own rows are found through `(introduced_sync_id, path,
/// project_id)`, planned for this run's id: a prepared statement's generic
/// plan would estimate them as the project's rows over its few runs and read
/// the whole partition (as a change of two files did, at 5,558 files).
async fn supersede_replaced(
    conn: &mut PgConnection,
    sync: SyncId,
    project: ProjectId,
    deleted_paths: &[String],
) -> Result<(i64, i64), StoreError> {
    sqlx::query("SET LOCAL plan_cache_mode = force_custom_plan")
        .execute(&mut *conn)
        .await
        .map_err(db("plan the completion for this run"))?;
    let targets = sqlx::query!(
        r#"
        WITH targets AS (
            SELECT path, bool_or(recorded) AS recorded, bool_and(recorded) AS only_recorded
              FROM (SELECT path, true AS recorded FROM repository_files
                     WHERE introduced_sync_id = $1 AND project_id = $2
                    UNION ALL
                    SELECT unnest($3::text[]), false) AS paths
             GROUP BY path
        )
        SELECT t.recorded AS "recorded!", t.only_recorded AS "only_recorded!", cur.id AS "current?"
          FROM targets t
          LEFT JOIN LATERAL (
                SELECT f.id
                  FROM repository_files f
                  JOIN project_syncs i ON i.id = f.introduced_sync_id
                 WHERE f.project_id = $2
                   AND f.path = t.path
                   AND f.superseded_sync_id IS NULL
                   AND i.status = 'COMPLETED'
                   AND i.id <> $1
                OFFSET 0 -- keeps this a per-path index probe (no pull-up into a hash join)
          ) cur ON true
        "#,
        sync.0,
        project.0,
        deleted_paths
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(db("find rows to supersede"))?;

    let conflicts = targets
        .iter()
        .filter(|t| t.recorded && !t.only_recorded)
        .count();
    if conflicts > 0 {
        return Err(StoreError::InvalidInput {
            sync,
            reason: format!("{conflicts} path(s) are both recorded and listed as deleted"),
        });
    }
    let ids: Vec<i64> = targets.iter().filter_map(|t| t.current).collect();
    let modified = targets
        .iter()
        .filter(|t| t.recorded && t.current.is_some())
        .count() as i64;
    if ids.is_empty() {
        return Ok((0, 0));
    }
    // The project pins both updates to its partition (0010).
    sqlx::query!(
        "UPDATE repository_files SET superseded_sync_id = $1 WHERE project_id = $3 AND id = ANY($2)",
        sync.0,
        &ids,
        project.0
    )
    .execute(&mut *conn)
    .await
    .map_err(db("supersede replaced file versions"))?;
    let entries = sqlx::query!(
        "UPDATE memory_entries SET superseded_sync_id = $1 WHERE project_id = $3 AND file_id = ANY($2)",
        sync.0,
        &ids,
        project.0
    )
    .execute(&mut *conn)
    .await
    .map_err(db("supersede replaced memory entries"))?
    .rows_affected();
    tracing::debug!(files = ids.len(), entries, "superseded replaced rows");
    Ok((modified, ids.len() as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_of_a_first_sync_are_all_added() {
        let c = derive_counts(10, 0, 0, 0);
        assert_eq!(
            (c.added, c.modified, c.deleted, c.unchanged, c.total),
            (10, 0, 0, 0, 10)
        );
    }

    #[test]
    fn counts_split_replaced_rows_into_modified_and_deleted() {
        // base of 100 files; run wrote 5 rows: 3 replace existing paths, 2
        // are new; 4 rows superseded in total, so 1 path was deleted.
        let c = derive_counts(5, 3, 4, 100);
        assert_eq!(
            (c.added, c.modified, c.deleted, c.unchanged, c.total),
            (2, 3, 1, 96, 101)
        );
    }
}
