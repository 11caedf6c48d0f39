//! Memory entries: recording the chunks of the file versions a run wrote (in
//! bounded `UNNEST` batches), reusing embeddings by content hash (within a
//! scope, from the same endpoint, of completed runs), and the embedding
//! backfill. Does I/O.

use std::collections::HashMap;

use sqlx::PgConnection;

use super::batch::{
    LOOKUP_BATCH, MEMORY_BATCH_BYTES, MEMORY_BATCH_ROWS, build_memory_columns, push_embedding,
    split_batches,
};
use super::error::{db, violated_constraint};
use super::model::{
    Embedding, EmbeddingReuse, MissingEmbedding, NewMemoryEntry, ReuseScope, SyncStatus,
};
use super::{ContentHash, FileId, MemoryEntryId, ProjectId, Store, StoreError, SyncId};

/// Adds `n` to the run's count of written memory entries.
pub(crate) async fn add_memory_written(
    conn: &mut PgConnection,
    sync: SyncId,
    n: i64,
) -> Result<(), StoreError> {
    if n == 0 {
        return Ok(());
    }
    sqlx::query!(
        "UPDATE project_syncs SET memory_entries_written = memory_entries_written + $2 WHERE id = $1",
        sync.0,
        i32::try_from(n).unwrap_or(i32::MAX)
    )
    .execute(conn)
    .await
    .map_err(db("count memory entries"))?;
    Ok(())
}

impl Store {
    /// Records chunks of file versions this running run recorded. One
    /// transaction; statements bounded by [`MEMORY_BATCH_ROWS`] rows and
    /// [`MEMORY_BATCH_BYTES`] of content. Path, project and introducing run
    /// are taken from the file row.
    #[tracing::instrument(skip(self, entries), fields(rows = entries.len()))]
    pub async fn record_memory(
        &self,
        sync: SyncId,
        entries: &[NewMemoryEntry],
    ) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(db("begin transaction"))?;
        let batches = split_batches(entries, MEMORY_BATCH_ROWS, MEMORY_BATCH_BYTES, |e| {
            e.content.len() + e.embedding.as_ref().map_or(0, |e| e.vector.len() * 4)
        });
        for batch in batches {
            let c = build_memory_columns(batch)
                .map_err(|reason| StoreError::InvalidInput { sync, reason })?;
            let inserted = sqlx::query!(
                r#"
                INSERT INTO memory_entries (project_id, file_id, path, chunk_index, start_line, end_line,
                                            language, content, content_hash, embedding, embedding_model,
                                            embedding_endpoint, introduced_sync_id)
                SELECT f.project_id, f.id, f.path, u.chunk_index, u.start_line, u.end_line,
                       u.language, u.content, u.content_hash,
                       CASE WHEN u.emb_len IS NULL THEN NULL
                            ELSE ($10::real[])[u.emb_off + 1 : u.emb_off + u.emb_len] END,
                       u.model, u.endpoint, f.introduced_sync_id
                  FROM UNNEST($2::int8[], $3::int4[], $4::int4[], $5::int4[], $6::text[], $7::text[],
                              $8::text[], $9::text[], $11::int4[], $12::int4[], $13::text[])
                         AS u(file_id, chunk_index, start_line, end_line, language, content,
                              content_hash, model, emb_off, emb_len, endpoint)
                  JOIN repository_files f ON f.id = u.file_id AND f.introduced_sync_id = $1
                                          -- the run's partition only (0010)
                                          AND f.project_id = (SELECT project_id FROM project_syncs WHERE id = $1)
                                          -- this batch's rows by primary key: the statistics of
                                          -- a run's first batches say the table is empty, and a
                                          -- join planned on them read every row the run had
                                          -- written so far, once per batch
                                          AND f.id = ANY($2::int8[])
                 WHERE EXISTS (SELECT 1 FROM project_syncs WHERE id = $1 AND status = 'IN_PROGRESS')
                "#,
                sync.0,
                &c.file_ids,
                &c.chunk_indexes,
                &c.start_lines,
                &c.end_lines,
                &c.languages as &[Option<&str>],
                &c.contents as &[&str],
                &c.content_hashes as &[&str],
                &c.models as &[Option<&str>],
                &c.embeddings_flat,
                &c.embedding_offsets as &[Option<i32>],
                &c.embedding_lengths as &[Option<i32>],
                &c.endpoints as &[Option<&str>],
            )
            .execute(&mut *tx)
            .await
            .map_err(|error| match violated_constraint(&error) {
                Some("memory_entries_file_chunk_key") => StoreError::InvalidInput {
                    sync,
                    reason: "a chunk index was recorded twice for one file version".to_string(),
                },
                _ => StoreError::Database {
                    op: "record memory entries",
                    source: error,
                },
            })?;
            if inserted.rows_affected() != batch.len() as u64 {
                drop(tx);
                return Err(self.memory_error(sync, batch).await);
            }
        }
        add_memory_written(&mut tx, sync, entries.len() as i64).await?;
        tx.commit().await.map_err(db("commit memory entries"))?;
        Ok(())
    }

    /// Why a batch of memory entries did not insert every row.
    async fn memory_error(&self, sync: SyncId, batch: &[NewMemoryEntry]) -> StoreError {
        match self.get_sync(sync).await {
            Ok(run) if run.status == SyncStatus::InProgress => {}
            Ok(_) => return self.not_live_error(sync, "record memory entries").await,
            Err(error) => return error,
        }
        let ids: Vec<i64> = batch.iter().map(|e| e.file.0).collect();
        let own = sqlx::query_scalar!(
            "SELECT id FROM repository_files WHERE id = ANY($1) AND introduced_sync_id = $2",
            &ids,
            sync.0
        )
        .fetch_all(&self.pool)
        .await;
        match own {
            Ok(own) => StoreError::FileNotUsable {
                sync,
                file: batch
                    .iter()
                    .map(|e| e.file)
                    .find(|file| !own.contains(&file.0))
                    .unwrap_or(FileId(0)),
                reason: "memory entries may only be recorded for file versions this run recorded",
            },
            Err(source) => StoreError::Database {
                op: "check memory entry files",
                source,
            },
        }
    }

    /// The chunks of existing file versions, without their embeddings, as
    /// entries of those versions: a run that only re-embeds (the embedding
    /// model changed) copies them to its own rows by setting `file`, instead
    /// of fetching and chunking the blobs again. Ordered by file and chunk.
    pub async fn chunks_of(&self, files: &[FileId]) -> Result<Vec<NewMemoryEntry>, StoreError> {
        let mut chunks = Vec::new();
        for batch in files.chunks(LOOKUP_BATCH) {
            let ids: Vec<i64> = batch.iter().map(|f| f.0).collect();
            let rows = sqlx::query!(
                r#"SELECT file_id, chunk_index, start_line, end_line, language, content, content_hash
                     FROM memory_entries
                    WHERE file_id = ANY($1)
                    ORDER BY file_id, chunk_index"#,
                &ids
            )
            .fetch_all(&self.pool)
            .await
            .map_err(db("read the chunks of file versions"))?;
            for row in rows {
                let content_hash =
                    ContentHash::parse(&row.content_hash).ok_or_else(|| StoreError::Corrupt {
                        column: "memory_entries.content_hash",
                        value: row.content_hash.clone(),
                    })?;
                chunks.push(NewMemoryEntry {
                    file: FileId(row.file_id),
                    chunk_index: u32::try_from(row.chunk_index).unwrap_or_default(),
                    start_line: u32::try_from(row.start_line).unwrap_or(1),
                    end_line: u32::try_from(row.end_line).unwrap_or(1),
                    language: row.language,
                    content: row.content,
                    content_hash,
                    embedding: None,
                });
            }
        }
        Ok(chunks)
    }

    /// Stored embeddings that `reuse` allows for these content hashes, the
    /// newest per hash: of the same model and endpoint, of projects in the
    /// scope, of runs that COMPLETED (rows of failed or running runs never
    /// count). The caller checks the dimension against what the endpoint
    /// answers now.
    pub async fn embeddings_by_hash(
        &self,
        reuse: &EmbeddingReuse,
        hashes: &[ContentHash],
    ) -> Result<HashMap<ContentHash, Vec<f32>>, StoreError> {
        let mut found = HashMap::new();
        for batch in hashes.chunks(LOOKUP_BATCH) {
            let keys: Vec<String> = batch.iter().map(|h| h.as_str().to_string()).collect();
            let rows = self.reusable_embeddings(reuse, &keys).await?;
            for (hash, vector) in rows {
                if let Some(hash) = ContentHash::parse(&hash) {
                    found.insert(hash, vector);
                }
            }
        }
        Ok(found)
    }

    /// One batch of [`Store::embeddings_by_hash`]: one query per scope, so
    /// that each is planned on the index made for it.
    async fn reusable_embeddings(
        &self,
        reuse: &EmbeddingReuse,
        keys: &[String],
    ) -> Result<Vec<(String, Vec<f32>)>, StoreError> {
        let op = "look up embeddings by content hash";
        let model = reuse.model.as_str();
        let endpoint = reuse.endpoint.as_str();
        let rows = match reuse.scope {
            ReuseScope::Project => sqlx::query!(
                r#"SELECT DISTINCT ON (m.content_hash) m.content_hash, m.embedding AS "embedding!"
                     FROM memory_entries m
                     JOIN project_syncs s ON s.id = m.introduced_sync_id AND s.status = 'COMPLETED'
                    WHERE m.project_id = $1 AND m.embedding_model = $2 AND m.embedding_endpoint = $3
                      AND m.content_hash = ANY($4) AND m.embedding IS NOT NULL
                    ORDER BY m.content_hash, m.id DESC"#,
                reuse.project.0,
                model,
                endpoint,
                keys
            )
            .fetch_all(&self.pool)
            .await
            .map_err(db(op))?
            .into_iter()
            .map(|r| (r.content_hash, r.embedding))
            .collect(),
            ReuseScope::Namespace => sqlx::query!(
                r#"SELECT DISTINCT ON (m.content_hash) m.content_hash, m.embedding AS "embedding!"
                     FROM memory_entries m
                     JOIN project_syncs s ON s.id = m.introduced_sync_id AND s.status = 'COMPLETED'
                     JOIN projects p ON p.id = m.project_id
                    WHERE m.embedding_model = $2 AND m.embedding_endpoint = $3
                      AND m.content_hash = ANY($4) AND m.embedding IS NOT NULL
                      AND split_part(p.key, '/', 1)
                          = (SELECT split_part(key, '/', 1) FROM projects WHERE id = $1)
                    ORDER BY m.content_hash, m.id DESC"#,
                reuse.project.0,
                model,
                endpoint,
                keys
            )
            .fetch_all(&self.pool)
            .await
            .map_err(db(op))?
            .into_iter()
            .map(|r| (r.content_hash, r.embedding))
            .collect(),
            ReuseScope::Cluster => sqlx::query!(
                r#"SELECT DISTINCT ON (m.content_hash) m.content_hash, m.embedding AS "embedding!"
                     FROM memory_entries m
                     JOIN project_syncs s ON s.id = m.introduced_sync_id AND s.status = 'COMPLETED'
                    WHERE m.embedding_model = $1 AND m.embedding_endpoint = $2
                      AND m.content_hash = ANY($3) AND m.embedding IS NOT NULL
                    ORDER BY m.content_hash, m.id DESC"#,
                model,
                endpoint,
                keys
            )
            .fetch_all(&self.pool)
            .await
            .map_err(db(op))?
            .into_iter()
            .map(|r| (r.content_hash, r.embedding))
            .collect(),
        };
        Ok(rows)
    }

    /// Sets embeddings on existing entries (the backfill, or a provider that
    /// answers after import). Returns how many entries were updated.
    #[tracing::instrument(skip(self, embeddings), fields(rows = embeddings.len()))]
    pub async fn set_embeddings(
        &self,
        embeddings: &[(MemoryEntryId, Embedding)],
    ) -> Result<u64, StoreError> {
        let mut updated = 0;
        for batch in embeddings.chunks(MEMORY_BATCH_ROWS) {
            let mut ids = Vec::with_capacity(batch.len());
            let mut models = Vec::with_capacity(batch.len());
            let mut endpoints = Vec::with_capacity(batch.len());
            let mut offsets = Vec::with_capacity(batch.len());
            let mut lengths = Vec::with_capacity(batch.len());
            let mut flat = Vec::new();
            for (id, embedding) in batch {
                let (offset, length) = push_embedding(&mut flat, embedding)
                    .map_err(|reason| StoreError::InvalidEmbedding { entry: *id, reason })?;
                ids.push(id.0);
                models.push(embedding.model.clone());
                endpoints.push(embedding.endpoint.as_ref().map(|e| e.as_str().to_string()));
                offsets.push(offset);
                lengths.push(length);
            }
            updated += sqlx::query!(
                r#"
                UPDATE memory_entries m
                   SET embedding = ($2::real[])[u.off + 1 : u.off + u.len],
                       embedding_model = u.model,
                       embedding_endpoint = u.endpoint
                  FROM UNNEST($1::int8[], $3::int4[], $4::int4[], $5::text[], $6::text[])
                         AS u(id, off, len, model, endpoint)
                 WHERE m.id = u.id
                "#,
                &ids,
                &flat,
                &offsets,
                &lengths,
                &models,
                &endpoints as &[Option<String>]
            )
            .execute(&self.pool)
            .await
            .map_err(db("set embeddings"))?
            .rows_affected();
        }
        Ok(updated)
    }

    /// Active entries of the project without an embedding of `model`, at
    /// most `limit`, in id order (for the backfill).
    pub async fn entries_missing_embedding(
        &self,
        project: ProjectId,
        model: &str,
        limit: u32,
    ) -> Result<Vec<MissingEmbedding>, StoreError> {
        let rows = sqlx::query!(
            r#"SELECT id AS "id!", content_hash AS "content_hash!", content AS "content!"
                 FROM active_memory_entries
                WHERE project_id = $1 AND embedding_model IS DISTINCT FROM $2
                ORDER BY id
                LIMIT $3"#,
            project.0,
            model,
            i64::from(limit)
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db("list entries missing embeddings"))?;
        rows.into_iter()
            .map(|row| {
                Ok(MissingEmbedding {
                    id: MemoryEntryId(row.id),
                    content_hash: ContentHash::parse(&row.content_hash).ok_or(
                        StoreError::Corrupt {
                            column: "memory_entries.content_hash",
                            value: row.content_hash,
                        },
                    )?,
                    content: row.content,
                })
            })
            .collect()
    }
}
