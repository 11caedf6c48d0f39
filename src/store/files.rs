//! File versions: recording the paths a run added or modified (in bounded
//! `UNNEST` batches), recording renames that reuse an existing version's
//! chunks, and reading a picture's files. Does I/O.

use std::collections::HashMap;

use sqlx::PgConnection;

use super::batch::{FILE_BATCH_ROWS, build_file_columns, first_duplicate};
use super::error::{db, duplicate_path_from_detail, error_detail, violated_constraint};
use super::model::{ActiveFile, FileKind, NewFile, Rename, SyncStatus};
use super::{FileId, ProjectId, Store, StoreError, SyncId};

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// Maps a failed insert into `repository_files` onto a domain error.
fn insert_error(sync: SyncId, op: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    // Postgres names the index for other errors too (an index row too large).
    move |error| match violated_constraint(&error).filter(|_| is_unique_violation(&error)) {
        Some("repository_files_sync_path_key") => StoreError::DuplicatePath {
            sync,
            path: error_detail(&error)
                .and_then(|detail| duplicate_path_from_detail(&detail))
                .unwrap_or_else(|| "<unknown>".to_string()),
        },
        _ => StoreError::Database { op, source: error },
    }
}

pub(crate) struct FileRow {
    pub id: i64,
    pub path: String,
    pub blob_sha: String,
    pub size: i64,
    pub mode: i32,
    pub kind: String,
}

impl TryFrom<FileRow> for ActiveFile {
    type Error = StoreError;

    fn try_from(row: FileRow) -> Result<Self, StoreError> {
        Ok(ActiveFile {
            id: FileId(row.id),
            kind: FileKind::parse(&row.kind).ok_or_else(|| StoreError::Corrupt {
                column: "repository_files.kind",
                value: row.kind.clone(),
            })?,
            path: row.path,
            blob_sha: row.blob_sha,
            size: u64::try_from(row.size).unwrap_or(0),
            mode: u32::try_from(row.mode).unwrap_or(0),
        })
    }
}

/// The ids of `paths`, in that order, from what the inserts returned.
fn in_input_order<'a>(
    sync: SyncId,
    paths: impl Iterator<Item = &'a str>,
    ids: &HashMap<String, i64>,
) -> Result<Vec<FileId>, StoreError> {
    paths
        .map(|path| {
            ids.get(path)
                .map(|id| FileId(*id))
                .ok_or_else(|| StoreError::InvalidInput {
                    sync,
                    reason: format!("no row was returned for path {path:?}"),
                })
        })
        .collect()
}

/// Adds `n` to the run's count of recorded file rows.
pub(crate) async fn add_files_recorded(
    conn: &mut PgConnection,
    sync: SyncId,
    n: usize,
) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE project_syncs SET files_recorded = files_recorded + $2 WHERE id = $1",
        sync.0,
        i32::try_from(n).unwrap_or(i32::MAX)
    )
    .execute(conn)
    .await
    .map_err(db("count recorded files"))?;
    Ok(())
}

/// A file row [`copy_file_versions`] inserted.
pub(crate) struct CopiedFile {
    pub id: i64,
    pub path: String,
    /// Memory entries copied by the whole statement (the same on every row).
    pub copied: i64,
}

/// Copies file versions `from[i]` to path `to[i]` of run `sync`, with their
/// memory entries (embeddings included), inside Postgres: what renames and
/// restores record instead of processing content again. Only versions of a
/// completed run are copied, and only into an in-progress run of the same
/// project; the rows returned are those inserted. `to` must not repeat a
/// path.
pub(crate) async fn copy_file_versions(
    conn: &mut PgConnection,
    sync: SyncId,
    from: &[i64],
    to: &[String],
) -> Result<Vec<CopiedFile>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"
        WITH src AS (
            SELECT u.to_path, f.id AS from_id, f.project_id, f.blob_sha, f.size, f.mode, f.kind
              FROM UNNEST($2::int8[], $3::text[]) AS u(from_id, to_path)
              JOIN repository_files f ON f.id = u.from_id
              JOIN project_syncs origin ON origin.id = f.introduced_sync_id
                                       AND origin.status = 'COMPLETED'
              JOIN project_syncs s ON s.id = $1 AND s.status = 'IN_PROGRESS'
                                  AND s.project_id = f.project_id
        ),
        ins AS (
            INSERT INTO repository_files (project_id, path, blob_sha, size, mode, kind, introduced_sync_id)
            SELECT project_id, to_path, blob_sha, size, mode, kind, $1 FROM src
            RETURNING id, path
        ),
        mem AS (
            INSERT INTO memory_entries (project_id, file_id, path, chunk_index, start_line, end_line,
                                        language, content, content_hash, embedding, embedding_model,
                                        introduced_sync_id)
            SELECT m.project_id, ins.id, ins.path, m.chunk_index, m.start_line, m.end_line,
                   m.language, m.content, m.content_hash, m.embedding, m.embedding_model, $1
              FROM ins
              JOIN src ON src.to_path = ins.path
              JOIN memory_entries m ON m.file_id = src.from_id
            RETURNING 1
        )
        SELECT ins.id AS "id!", ins.path AS "path!", (SELECT count(*) FROM mem) AS "copied!"
          FROM ins
        "#,
        sync.0,
        from,
        to,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| CopiedFile {
            id: row.id,
            path: row.path,
            copied: row.copied,
        })
        .collect())
}

impl Store {
    /// Records the file versions a running run added or modified; returns
    /// their ids in input order. One transaction; statements of at most
    /// [`FILE_BATCH_ROWS`] rows. A path may be recorded once per run.
    #[tracing::instrument(skip(self, files), fields(rows = files.len()))]
    pub async fn record_files(
        &self,
        sync: SyncId,
        files: &[NewFile],
    ) -> Result<Vec<FileId>, StoreError> {
        if files.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(path) = first_duplicate(files.iter().map(|f| f.path.as_str())) {
            return Err(StoreError::DuplicatePath {
                sync,
                path: path.to_string(),
            });
        }
        let columns = build_file_columns(files)
            .map_err(|reason| StoreError::InvalidInput { sync, reason })?;
        let mut ids: HashMap<String, i64> = HashMap::with_capacity(files.len());
        let mut tx = self.pool.begin().await.map_err(db("begin transaction"))?;
        for start in (0..files.len()).step_by(FILE_BATCH_ROWS) {
            let end = (start + FILE_BATCH_ROWS).min(files.len());
            let rows = sqlx::query!(
                r#"
                INSERT INTO repository_files (project_id, path, blob_sha, size, mode, kind, introduced_sync_id)
                SELECT s.project_id, u.path, u.blob_sha, u.size, u.mode, u.kind, s.id
                  FROM project_syncs s,
                       UNNEST($2::text[], $3::text[], $4::int8[], $5::int4[], $6::text[])
                         AS u(path, blob_sha, size, mode, kind)
                 WHERE s.id = $1 AND s.status = 'IN_PROGRESS'
                RETURNING id, path
                "#,
                sync.0,
                &columns.paths[start..end] as &[&str],
                &columns.blob_shas[start..end] as &[&str],
                &columns.sizes[start..end],
                &columns.modes[start..end],
                &columns.kinds[start..end] as &[&str],
            )
            .fetch_all(&mut *tx)
            .await
            .map_err(insert_error(sync, "record file versions"))?;
            if rows.len() != end - start {
                drop(tx);
                return Err(self.not_live_error(sync, "record files").await);
            }
            ids.extend(rows.into_iter().map(|row| (row.path, row.id)));
        }
        add_files_recorded(&mut tx, sync, files.len()).await?;
        tx.commit().await.map_err(db("commit file versions"))?;
        in_input_order(sync, files.iter().map(|f| f.path.as_str()), &ids)
    }

    /// Records paths whose content is an existing file version of the same
    /// project (a rename or copy: same blob), without re-processing: the
    /// version's row is copied to the new path, and its memory entries (with
    /// their embeddings) are copied to the new row, all inside Postgres. The
    /// source must belong to a completed run. Returns the new ids in input
    /// order.
    #[tracing::instrument(skip(self, renames), fields(rows = renames.len()))]
    pub async fn record_renames(
        &self,
        sync: SyncId,
        renames: &[Rename],
    ) -> Result<Vec<FileId>, StoreError> {
        if renames.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(path) = first_duplicate(renames.iter().map(|r| r.to_path.as_str())) {
            return Err(StoreError::DuplicatePath {
                sync,
                path: path.to_string(),
            });
        }
        let mut ids: HashMap<String, i64> = HashMap::with_capacity(renames.len());
        let mut copied_entries = 0i64;
        let mut tx = self.pool.begin().await.map_err(db("begin transaction"))?;
        for batch in renames.chunks(FILE_BATCH_ROWS) {
            let from: Vec<i64> = batch.iter().map(|r| r.from.0).collect();
            let to: Vec<String> = batch.iter().map(|r| r.to_path.clone()).collect();
            let rows = copy_file_versions(&mut tx, sync, &from, &to)
                .await
                .map_err(insert_error(sync, "record renamed files"))?;
            if rows.len() != batch.len() {
                drop(tx);
                return Err(self.rename_error(sync, batch).await);
            }
            copied_entries += rows.first().map_or(0, |row| row.copied);
            ids.extend(rows.into_iter().map(|row| (row.path, row.id)));
        }
        add_files_recorded(&mut tx, sync, renames.len()).await?;
        super::memory::add_memory_written(&mut tx, sync, copied_entries).await?;
        tx.commit().await.map_err(db("commit renamed files"))?;
        tracing::debug!(copied_entries, "renames reused memory entries");
        in_input_order(sync, renames.iter().map(|r| r.to_path.as_str()), &ids)
    }

    /// Why a batch of renames did not insert every row.
    async fn rename_error(&self, sync: SyncId, batch: &[Rename]) -> StoreError {
        let run = match self.get_sync(sync).await {
            Ok(run) => run,
            Err(error) => return error,
        };
        if run.status != SyncStatus::InProgress {
            return self.not_live_error(sync, "record renames").await;
        }
        let from: Vec<i64> = batch.iter().map(|r| r.from.0).collect();
        let usable = sqlx::query_scalar!(
            r#"SELECT f.id FROM repository_files f
                 JOIN project_syncs origin ON origin.id = f.introduced_sync_id AND origin.status = 'COMPLETED'
                WHERE f.id = ANY($1) AND f.project_id = $2"#,
            &from,
            run.project.0
        )
        .fetch_all(&self.pool)
        .await;
        match usable {
            Ok(usable) => match batch.iter().find(|r| !usable.contains(&r.from.0)) {
                Some(rename) => StoreError::FileNotUsable {
                    sync,
                    file: rename.from,
                    reason: "a rename must copy a file version of a completed run of the same project",
                },
                None => StoreError::InvalidInput {
                    sync,
                    reason: "renames were not all recorded".to_string(),
                },
            },
            Err(source) => StoreError::Database {
                op: "check rename sources",
                source,
            },
        }
    }

    /// The files of the project's latest completed run, sorted by path
    /// bytes (`COLLATE "C"`: the order the tree walk wants, and a plain
    /// byte comparison; the database's collation sorts 100,000 paths several
    /// times slower).
    pub async fn active_files(&self, project: ProjectId) -> Result<Vec<ActiveFile>, StoreError> {
        sqlx::query_as!(
            FileRow,
            r#"SELECT id AS "id!", path AS "path!", blob_sha AS "blob_sha!", size AS "size!",
                      mode AS "mode!", kind AS "kind!"
                 FROM active_repository_files
                WHERE project_id = $1
                ORDER BY path COLLATE "C""#,
            project.0
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db("read active files"))?
        .into_iter()
        .map(ActiveFile::try_from)
        .collect()
    }

    /// The files of any completed run's picture, sorted by path bytes.
    pub async fn files_at(&self, sync: SyncId) -> Result<Vec<ActiveFile>, StoreError> {
        self.check_readable(sync, "read").await?;
        sqlx::query_as!(
            FileRow,
            r#"SELECT id AS "id!", path AS "path!", blob_sha AS "blob_sha!", size AS "size!",
                      mode AS "mode!", kind AS "kind!"
                 FROM sync_files($1)
                ORDER BY path COLLATE "C""#,
            sync.0
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db("read files of a sync"))?
        .into_iter()
        .map(ActiveFile::try_from)
        .collect()
    }

    /// A run whose picture can be read: completed and not pruned.
    pub(crate) async fn check_readable(
        &self,
        sync: SyncId,
        op: &'static str,
    ) -> Result<super::SyncRecord, StoreError> {
        let run = self.get_sync(sync).await?;
        if run.status != SyncStatus::Completed {
            return Err(StoreError::SyncNotCompleted {
                sync,
                status: run.status,
                op,
            });
        }
        if run.content_pruned {
            return Err(StoreError::SyncPruned { sync, op });
        }
        Ok(run)
    }
}
