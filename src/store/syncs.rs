//! Sync runs: beginning one on the right base, following its stage, failing
//! it, sweeping runs abandoned by a dead process, and reading runs back
//! (latest completed, history). Completing a run is in `complete`. Does I/O.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::run::{FileCounts, GitTransfer, ScanChoice, ScanRoute, Stage, StageDurations};

use super::error::{db, violated_constraint};
use super::model::{NewSync, SyncFailure, SyncRecord, SyncStatus};
use super::{ProjectId, Store, StoreError, SyncId};

/// A `project_syncs` row as read by `SELECT *` / `RETURNING *`.
#[derive(Debug)]
pub(crate) struct SyncRow {
    pub id: Uuid,
    pub project_id: i64,
    pub branch: String,
    pub commit_sha: Option<String>,
    pub status: String,
    pub stage: Option<String>,
    pub trigger: String,
    pub base_sync_id: Option<Uuid>,
    pub previous_sync_id: Option<Uuid>,
    pub chain_seq: Option<i32>,
    pub restored_from_sync_id: Option<Uuid>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error_message: Option<String>,
    pub failed_stage: Option<String>,
    pub content_pruned_at: Option<DateTime<Utc>>,
    pub files_added: i32,
    pub files_modified: i32,
    pub files_deleted: i32,
    pub files_unchanged: i32,
    pub files_total: i32,
    pub files_recorded: i32,
    pub memory_entries_written: i32,
    pub files_skipped: i32,
    pub bytes_fetched: i64,
    pub api_calls: i32,
    pub prepare_ms: Option<i64>,
    pub scan_ms: Option<i64>,
    pub import_ms: Option<i64>,
    pub finalize_ms: Option<i64>,
    pub git_objects_fetched: Option<i64>,
    pub git_bytes_fetched: Option<i64>,
    pub scan_route: Option<String>,
    pub scan_reason: Option<String>,
    pub owner: Option<String>,
}

fn count(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

fn file_count(n: i32) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn millis(ms: Option<i64>) -> Option<u64> {
    ms.and_then(|ms| u64::try_from(ms).ok())
}

/// A measured duration as its column value.
pub(crate) fn millis_column(ms: Option<u64>) -> Option<i64> {
    ms.map(|ms| i64::try_from(ms).unwrap_or(i64::MAX))
}

fn parse_stage(column: &'static str, value: Option<String>) -> Result<Option<Stage>, StoreError> {
    value
        .map(|s| Stage::parse(&s).ok_or(StoreError::Corrupt { column, value: s }))
        .transpose()
}

impl TryFrom<SyncRow> for SyncRecord {
    type Error = StoreError;

    fn try_from(row: SyncRow) -> Result<Self, StoreError> {
        let status = SyncStatus::parse(&row.status).ok_or_else(|| StoreError::Corrupt {
            column: "project_syncs.status",
            value: row.status.clone(),
        })?;
        let failed_stage = parse_stage("project_syncs.failed_stage", row.failed_stage)?;
        let failure = match (status, row.error_message) {
            (SyncStatus::Failed, message) => Some(SyncFailure {
                stage: failed_stage,
                message: message.unwrap_or_default(),
            }),
            _ => None,
        };
        Ok(SyncRecord {
            id: SyncId(row.id),
            project: ProjectId(row.project_id),
            branch: row.branch,
            commit: row.commit_sha,
            status,
            stage: parse_stage("project_syncs.stage", row.stage)?,
            trigger: row.trigger,
            base: row.base_sync_id.map(SyncId),
            previous: row.previous_sync_id.map(SyncId),
            chain_seq: row.chain_seq.map(count),
            restored_from: row.restored_from_sync_id.map(SyncId),
            started_at: row.started_at,
            finished_at: row.finished_at,
            failure,
            files: FileCounts {
                added: file_count(row.files_added),
                modified: file_count(row.files_modified),
                deleted: file_count(row.files_deleted),
                unchanged: file_count(row.files_unchanged),
                // Renames are counted as added; the split is not stored.
                renamed: 0,
                skipped: file_count(row.files_skipped),
                total: file_count(row.files_total),
            },
            files_recorded: count(row.files_recorded),
            memory_entries_written: count(row.memory_entries_written),
            bytes_fetched: u64::try_from(row.bytes_fetched).unwrap_or(0),
            api_calls: count(row.api_calls),
            durations: StageDurations {
                prepare_ms: millis(row.prepare_ms),
                scan_ms: millis(row.scan_ms),
                import_ms: millis(row.import_ms),
                finalize_ms: millis(row.finalize_ms),
            },
            scan: row
                .scan_route
                .map(|route| {
                    let route = ScanRoute::parse(&route).ok_or(StoreError::Corrupt {
                        column: "project_syncs.scan_route",
                        value: route,
                    })?;
                    Ok(ScanChoice {
                        route,
                        reason: row.scan_reason,
                    })
                })
                .transpose()?,
            git_transfer: match (row.git_objects_fetched, row.git_bytes_fetched) {
                (Some(objects), Some(bytes)) => Some(GitTransfer {
                    objects: u64::try_from(objects).unwrap_or(0),
                    bytes: u64::try_from(bytes).unwrap_or(0),
                }),
                _ => None,
            },
            content_pruned: row.content_pruned_at.is_some(),
            owner: row.owner,
        })
    }
}

impl Store {
    /// Starts a run (IN_PROGRESS, stage prepare) on `new.base`, which must be
    /// the project's latest completed run (`None` if it has none): otherwise
    /// the caller diffed against a stale picture and gets
    /// [`StoreError::ConcurrentSync`].
    #[tracing::instrument(skip(self, new), fields(base = ?new.base, trigger = %new.trigger))]
    pub async fn begin_sync(&self, project: ProjectId, new: NewSync) -> Result<SyncId, StoreError> {
        self.insert_run(project, new, SyncStatus::InProgress).await
    }

    /// Records a run that is queued but not started (PENDING); start it with
    /// [`Store::start_sync`].
    #[tracing::instrument(skip(self, new), fields(base = ?new.base, trigger = %new.trigger))]
    pub async fn queue_sync(&self, project: ProjectId, new: NewSync) -> Result<SyncId, StoreError> {
        self.insert_run(project, new, SyncStatus::Pending).await
    }

    async fn insert_run(
        &self,
        project: ProjectId,
        new: NewSync,
        status: SyncStatus,
    ) -> Result<SyncId, StoreError> {
        let id = SyncId::new_v7();
        let stage = (status == SyncStatus::InProgress).then_some(Stage::Prepare.as_str());
        let inserted = sqlx::query_scalar!(
            r#"
            INSERT INTO project_syncs (id, project_id, branch, commit_sha, status, stage, trigger,
                                       base_sync_id, owner)
            SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9
            WHERE $8::uuid IS NOT DISTINCT FROM (
                SELECT id FROM project_syncs
                 WHERE project_id = $2 AND status = 'COMPLETED'
                 ORDER BY chain_seq DESC LIMIT 1)
            RETURNING id
            "#,
            id.0,
            project.0,
            new.branch,
            new.commit,
            status.as_str(),
            stage,
            new.trigger,
            new.base.map(|b| b.0),
            self.owner(),
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(|error| match violated_constraint(&error) {
            Some("project_syncs_project_id_fkey") => StoreError::ProjectNotFound { project },
            _ => StoreError::Database {
                op: "insert sync run",
                source: error,
            },
        })?;
        if inserted.is_some() {
            tracing::info!(sync = %id, %status, "sync run created");
            return Ok(id);
        }
        let latest = self.latest_completed(project).await?.map(|run| run.id);
        Err(StoreError::ConcurrentSync {
            project: self.project_key(project).await?,
            sync: None,
            base: new.base,
            latest,
        })
    }

    /// Moves a queued run to IN_PROGRESS (stage prepare).
    pub async fn start_sync(&self, sync: SyncId) -> Result<(), StoreError> {
        let updated = sqlx::query!(
            "UPDATE project_syncs SET status = 'IN_PROGRESS', stage = 'prepare'
              WHERE id = $1 AND status = 'PENDING'",
            sync.0
        )
        .execute(&self.pool)
        .await
        .map_err(db("start sync run"))?;
        if updated.rows_affected() == 0 {
            return Err(self.not_live_error(sync, "start").await);
        }
        Ok(())
    }

    /// Records the stage a running run entered.
    pub async fn mark_stage(&self, sync: SyncId, stage: Stage) -> Result<(), StoreError> {
        let updated = sqlx::query!(
            "UPDATE project_syncs SET stage = $2 WHERE id = $1 AND status = 'IN_PROGRESS'",
            sync.0,
            stage.as_str()
        )
        .execute(&self.pool)
        .await
        .map_err(db("record sync stage"))?;
        if updated.rows_affected() == 0 {
            return Err(self.not_live_error(sync, "enter a stage").await);
        }
        Ok(())
    }

    /// Records the commit a running run resolved (when it began without one).
    pub async fn set_commit(&self, sync: SyncId, commit: &str) -> Result<(), StoreError> {
        let updated = sqlx::query!(
            "UPDATE project_syncs SET commit_sha = $2
              WHERE id = $1 AND status IN ('PENDING', 'IN_PROGRESS')",
            sync.0,
            commit
        )
        .execute(&self.pool)
        .await
        .map_err(db("record sync commit"))?;
        if updated.rows_affected() == 0 {
            return Err(self.not_live_error(sync, "set its commit").await);
        }
        Ok(())
    }

    /// Marks a live run FAILED. Its rows stay (never active) until
    /// retention removes them. `stage` defaults to the stage it was in.
    #[tracing::instrument(skip(self, message))]
    pub async fn fail_sync(
        &self,
        sync: SyncId,
        stage: Option<Stage>,
        message: &str,
    ) -> Result<SyncRecord, StoreError> {
        let row = sqlx::query_as!(
            SyncRow,
            r#"
            UPDATE project_syncs
               SET status = 'FAILED', finished_at = now(), error_message = $3,
                   failed_stage = COALESCE($2, stage), stage = NULL
             WHERE id = $1 AND status IN ('PENDING', 'IN_PROGRESS')
            RETURNING *
            "#,
            sync.0,
            stage.map(Stage::as_str),
            message
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(db("fail sync run"))?;
        match row {
            Some(row) => {
                tracing::info!(%sync, error = message, "sync run failed");
                row.try_into()
            }
            None => Err(self.not_live_error(sync, "fail").await),
        }
    }

    /// Marks FAILED every live run of this store's owner (of one project, or
    /// of all) that started before `started_before`: runs of a process of
    /// this install that is gone. Runs of other owners (another install
    /// sharing the database, a `sync --once`) are left alone; runs recorded
    /// without an owner (before owners were recorded) count as this
    /// owner's. The message is `"abandoned: <reason>"`, e.g. reason
    /// "operator restarted before the run finished"; the failed stage is the
    /// stage it was in.
    #[tracing::instrument(skip(self))]
    pub async fn fail_abandoned(
        &self,
        project: Option<ProjectId>,
        started_before: DateTime<Utc>,
        reason: &str,
    ) -> Result<Vec<SyncRecord>, StoreError> {
        let message = format!("abandoned: {reason}");
        let rows = sqlx::query_as!(
            SyncRow,
            r#"
            UPDATE project_syncs
               SET status = 'FAILED', finished_at = now(), error_message = $3,
                   failed_stage = stage, stage = NULL
             WHERE status IN ('PENDING', 'IN_PROGRESS')
               AND ($1::bigint IS NULL OR project_id = $1)
               AND started_at < $2
               AND (owner = $4 OR owner IS NULL)
            RETURNING *
            "#,
            project.map(|p| p.0),
            started_before,
            message,
            self.owner()
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db("fail abandoned sync runs"))?;
        for row in &rows {
            tracing::warn!(sync = %row.id, project = row.project_id, "{message}");
        }
        rows.into_iter().map(SyncRecord::try_from).collect()
    }

    /// One run.
    pub async fn get_sync(&self, sync: SyncId) -> Result<SyncRecord, StoreError> {
        sqlx::query_as!(SyncRow, "SELECT * FROM project_syncs WHERE id = $1", sync.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("read sync run"))?
            .ok_or(StoreError::SyncNotFound { sync })?
            .try_into()
    }

    /// The project's latest completed run: the picture the active views show.
    pub async fn latest_completed(
        &self,
        project: ProjectId,
    ) -> Result<Option<SyncRecord>, StoreError> {
        sqlx::query_as!(
            SyncRow,
            r#"SELECT * FROM project_syncs
                WHERE project_id = $1 AND status = 'COMPLETED'
                ORDER BY chain_seq DESC LIMIT 1"#,
            project.0
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(db("read latest completed sync"))?
        .map(SyncRecord::try_from)
        .transpose()
    }

    /// The project's runs, newest first, at most `limit`.
    pub async fn history(
        &self,
        project: ProjectId,
        limit: u32,
    ) -> Result<Vec<SyncRecord>, StoreError> {
        sqlx::query_as!(
            SyncRow,
            r#"SELECT * FROM project_syncs
                WHERE project_id = $1
                ORDER BY started_at DESC, id DESC
                LIMIT $2"#,
            project.0,
            i64::from(limit)
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db("read sync history"))?
        .into_iter()
        .map(SyncRecord::try_from)
        .collect()
    }

    /// The error for a write to a run that is missing or no longer live.
    pub(crate) async fn not_live_error(&self, sync: SyncId, op: &'static str) -> StoreError {
        let row = sqlx::query!(
            r#"SELECT s.status, p.key FROM project_syncs s JOIN projects p ON p.id = s.project_id
                WHERE s.id = $1"#,
            sync.0
        )
        .fetch_optional(&self.pool)
        .await;
        match row {
            Ok(Some(row)) => match SyncStatus::parse(&row.status) {
                Some(status) => StoreError::SyncNotRunning {
                    project: row.key,
                    sync,
                    status,
                    op,
                },
                None => StoreError::Corrupt {
                    column: "project_syncs.status",
                    value: row.status,
                },
            },
            Ok(None) => StoreError::SyncNotFound { sync },
            Err(source) => StoreError::Database {
                op: "read sync run",
                source,
            },
        }
    }
}
