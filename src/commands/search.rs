//! `projectsync search NAMESPACE/NAME QUERY`: finds chunks in a project's
//! active memory only (the latest completed sync's picture; superseded
//! entries never show), by case-insensitive text, or with `--vector` by
//! cosine similarity to the embedded query. Reads the store (or, with
//! `--server`, the operator's API, which embeds a `--vector` query with the
//! ProjectSync's own `spec.embedding`); `--vector` also calls the embedding
//! endpoint.

use serde::Serialize;

use crate::{
    cli::SearchArgs,
    http::api::model::{HitView, SearchView},
    store::{MemoryHit, ProjectId, Store},
};

use super::{
    CommandError,
    embedder::build_embedder,
    find_project,
    output::{Table, emit, truncate_to_width},
    remote::{Remote, resource_path},
};

/// What `search` prints.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchReport {
    pub project: String,
    pub query: String,
    /// `text` or `vector`.
    pub mode: &'static str,
    /// The embedding model, for a vector search.
    pub model: Option<String>,
    pub hits: Vec<HitRow>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HitRow {
    pub path: String,
    pub chunk_index: u32,
    pub start_line: u32,
    pub end_line: u32,
    pub language: Option<String>,
    /// Cosine similarity, for a vector search.
    pub score: Option<f64>,
    pub content: String,
}

impl From<HitView> for HitRow {
    fn from(hit: HitView) -> Self {
        HitRow {
            path: hit.path,
            chunk_index: hit.chunk_index,
            start_line: hit.start_line,
            end_line: hit.end_line,
            language: hit.language,
            score: hit.score,
            content: hit.content,
        }
    }
}

impl From<MemoryHit> for HitRow {
    fn from(hit: MemoryHit) -> Self {
        HitRow {
            path: hit.path,
            chunk_index: hit.chunk_index,
            start_line: hit.start_line,
            end_line: hit.end_line,
            language: hit.language,
            score: hit.score,
            content: hit.content,
        }
    }
}

pub async fn run(args: &SearchArgs) -> Result<(), CommandError> {
    if args.query.trim().is_empty() {
        return Err(CommandError::Usage("the query is empty".into()));
    }
    if let Some(remote) = Remote::connect(&args.server).await? {
        if args.embedding.endpoint.is_some() {
            return Err(CommandError::Usage(
                "--endpoint and --model do not apply with --server: the operator embeds the query with the ProjectSync's spec.embedding".into(),
            ));
        }
        let path = format!("{}/search", resource_path(&args.project)?);
        let mode = if args.vector { "vector" } else { "text" };
        let query = [
            ("q", args.query.clone()),
            ("limit", args.limit.clamp(1, 100).to_string()),
            ("mode", mode.to_string()),
        ];
        let answer: SearchView = remote.get(&path, &query).await?;
        let report = SearchReport {
            project: args.project.clone(),
            query: answer.query,
            mode,
            model: answer.model,
            hits: answer.items.into_iter().map(HitRow::from).collect(),
        };
        return emit(args.output.format, &report, build_table);
    }
    let store = Store::connect_with(args.database.url()?, args.database.limits()).await?;
    let project = find_project(&store, &args.project).await?;
    let report = if args.vector {
        let embedder = build_embedder(&args.embedding, &args.project).await?;
        let model = embedder.model().to_string();
        let vectors = embedder.embed(std::slice::from_ref(&args.query)).await?;
        let vector = vectors
            .into_iter()
            .next()
            .ok_or(CommandError::EmbeddingCount {
                expected: 1,
                got: 0,
            })?;
        let hits = store
            .search_vector(project.id, &model, &vector, args.limit)
            .await?;
        if hits.is_empty() {
            match fetch_stored_dimension(&store, project.id, &model).await? {
                None => {
                    return Err(CommandError::NoEmbeddings {
                        project: project.identity.key,
                        model,
                    });
                }
                Some(stored) if stored != vector.len() => {
                    return Err(CommandError::DimensionMismatch {
                        project: project.identity.key,
                        model,
                        stored,
                        query: vector.len(),
                    });
                }
                Some(_) => {}
            }
        }
        SearchReport {
            project: project.identity.key,
            query: args.query.clone(),
            mode: "vector",
            model: Some(model),
            hits: hits.into_iter().map(HitRow::from).collect(),
        }
    } else {
        let hits = store
            .search_text(project.id, &args.query, args.limit)
            .await?;
        SearchReport {
            project: project.identity.key,
            query: args.query.clone(),
            mode: "text",
            model: None,
            hits: hits.into_iter().map(HitRow::from).collect(),
        }
    };
    emit(args.output.format, &report, build_table)
}

/// The dimension of the stored embeddings of `model` on the project's
/// active entries, `None` when there are none. (Not a store method yet: an
/// unchecked query over the documented view.)
async fn fetch_stored_dimension(
    store: &Store,
    project: ProjectId,
    model: &str,
) -> Result<Option<usize>, CommandError> {
    let dimension = sqlx::query_scalar::<_, Option<i32>>(
        "SELECT cardinality(embedding) FROM active_memory_entries \
          WHERE project_id = $1 AND embedding_model = $2 AND embedding IS NOT NULL LIMIT 1",
    )
    .bind(project.get())
    .bind(model)
    .fetch_optional(store.pool())
    .await
    .map_err(|source| crate::store::StoreError::Database {
        op: "read the dimension of stored embeddings",
        source,
    })?;
    Ok(dimension.flatten().and_then(|d| usize::try_from(d).ok()))
}

/// `PATH LINES LANGUAGE MATCH`, with `SCORE` first for a vector search. The
/// match column shows the first line containing the query (text search) or
/// the first non-blank line of the chunk.
fn build_table(report: &SearchReport) -> String {
    if report.hits.is_empty() {
        return format!(
            "no active memory entries of {} match {:?}\n",
            report.project, report.query
        );
    }
    let vector = report.mode == "vector";
    let mut table = Table::new(if vector {
        &["SCORE", "PATH", "LINES", "LANGUAGE", "CONTENT"]
    } else {
        &["PATH", "LINES", "LANGUAGE", "MATCH"]
    });
    let needle = report.query.to_lowercase();
    for hit in &report.hits {
        let line = hit
            .content
            .lines()
            .find(|l| !vector && l.to_lowercase().contains(&needle))
            .or_else(|| hit.content.lines().find(|l| !l.trim().is_empty()))
            .unwrap_or_default();
        let mut cells = vec![
            hit.path.clone(),
            format!("{}-{}", hit.start_line, hit.end_line),
            hit.language.clone().unwrap_or_else(|| "-".into()),
            truncate_to_width(line.trim(), 80),
        ];
        if vector {
            cells.insert(
                0,
                hit.score
                    .map(|s| format!("{s:.3}"))
                    .unwrap_or_else(|| "-".into()),
            );
        }
        table.row(cells);
    }
    table.render()
}
