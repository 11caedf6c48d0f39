//! Searching the active memory of a project: substring search over chunk
//! content, and cosine similarity over stored embeddings (computed in SQL
//! over `REAL[]`; no pgvector needed). Only the latest completed picture is
//! searched. Does I/O.

use super::error::db;
use super::model::MemoryHit;
use super::{FileId, MemoryEntryId, ProjectId, Store, StoreError};

struct HitRow {
    id: i64,
    file_id: i64,
    path: String,
    chunk_index: i32,
    start_line: i32,
    end_line: i32,
    language: Option<String>,
    content: String,
    score: Option<f64>,
}

impl From<HitRow> for MemoryHit {
    fn from(row: HitRow) -> Self {
        MemoryHit {
            id: MemoryEntryId(row.id),
            file: FileId(row.file_id),
            path: row.path,
            chunk_index: u32::try_from(row.chunk_index).unwrap_or(0),
            start_line: u32::try_from(row.start_line).unwrap_or(0),
            end_line: u32::try_from(row.end_line).unwrap_or(0),
            language: row.language,
            content: row.content,
            score: row.score,
        }
    }
}

impl Store {
    /// Active chunks whose content contains `query` (case-insensitive), by
    /// path and position, at most `limit`.
    pub async fn search_text(
        &self,
        project: ProjectId,
        query: &str,
        limit: u32,
    ) -> Result<Vec<MemoryHit>, StoreError> {
        let rows = sqlx::query_as!(
            HitRow,
            r#"SELECT id AS "id!", file_id AS "file_id!", path AS "path!",
                      chunk_index AS "chunk_index!", start_line AS "start_line!",
                      end_line AS "end_line!", language, content AS "content!",
                      NULL::float8 AS score
                 FROM active_memory_entries
                WHERE project_id = $1 AND strpos(lower(content), lower($2)) > 0
                ORDER BY path, chunk_index
                LIMIT $3"#,
            project.0,
            query,
            i64::from(limit)
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db("search memory text"))?;
        Ok(rows.into_iter().map(MemoryHit::from).collect())
    }

    /// The `limit` active chunks most similar (cosine) to `vector` among
    /// those embedded by `model` with the same dimension, best first.
    pub async fn search_vector(
        &self,
        project: ProjectId,
        model: &str,
        vector: &[f32],
        limit: u32,
    ) -> Result<Vec<MemoryHit>, StoreError> {
        let rows = sqlx::query_as!(
            HitRow,
            r#"
            SELECT id AS "id!", file_id AS "file_id!", path AS "path!",
                   chunk_index AS "chunk_index!", start_line AS "start_line!",
                   end_line AS "end_line!", language, content AS "content!",
                   score
              FROM active_memory_entries m
             CROSS JOIN LATERAL (
                   SELECT sum(a::float8 * b::float8)
                          / NULLIF(sqrt(sum(a::float8 * a::float8)) * sqrt(sum(b::float8 * b::float8)), 0)
                          AS score
                     FROM unnest(m.embedding, $3::real[]) AS t(a, b)) s
             WHERE m.project_id = $1
               AND m.embedding_model = $2
               AND cardinality(m.embedding) = cardinality($3::real[])
             ORDER BY score DESC NULLS LAST, path, chunk_index
             LIMIT $4
            "#,
            project.0,
            model,
            vector,
            i64::from(limit)
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db("search memory by vector"))?;
        Ok(rows.into_iter().map(MemoryHit::from).collect())
    }
}
