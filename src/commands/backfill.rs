//! `projectsync backfill-embeddings NAMESPACE/NAME`: computes the embeddings
//! that active memory entries lack for a model (after embeddings were turned
//! on, a model changed, or an endpoint failed during a sync). Page by page:
//! entries whose content hash already has an embedding in the project, of
//! the model and from the same endpoint (of a completed run), reuse it; the
//! other distinct contents are sent to the endpoint in batches; the results
//! are written in one statement per page. Safe to interrupt and run again. I/O against the
//! store and the embedding endpoint.

use std::{
    collections::{HashMap, HashSet},
    time::Instant,
};

use serde::Serialize;

use crate::{
    cli::BackfillArgs,
    embed::Embedder,
    store::{
        ContentHash, Embedding, EmbeddingReuse, EndpointFingerprint, MemoryEntryId, ProjectId,
        ReuseScope, Store, StoreError,
    },
};

use super::{
    CommandError, cluster,
    embedder::build_embedder,
    find_project,
    output::{emit, human_duration, render_fields},
    terminal::Progress,
};

/// What `backfill-embeddings` prints.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackfillReport {
    pub project: String,
    pub model: String,
    /// Active entries without an embedding of the model when it started.
    pub missing: u64,
    /// Entries that got an embedding.
    pub embedded: u64,
    /// Distinct contents sent to the endpoint.
    pub computed: u64,
    /// Entries that reused a stored embedding of identical content.
    pub reused: u64,
    pub duration_ms: u64,
}

pub async fn run(args: &BackfillArgs) -> Result<(), CommandError> {
    let store = Store::connect_with(args.database.url()?, args.database.limits()).await?;
    let project = find_project(&store, &args.project).await?;
    let embedder = build_embedder(&args.embedding, &args.project).await?;
    let endpoint = match &args.embedding.endpoint {
        Some(endpoint) => Some(endpoint.clone()),
        // The endpoint build_embedder read from the ProjectSync's spec.
        None => {
            let client = cluster::connect().await?;
            cluster::fetch_project_sync(&client, &args.project)
                .await?
                .spec
                .embedding
                .and_then(|e| e.endpoint)
        }
    };
    let page = args.embedding.batch_size.clamp(1, 2048) * 4;
    let report = backfill(
        &store,
        project.id,
        &project.identity.key,
        embedder.as_ref(),
        endpoint.as_deref().map(EndpointFingerprint::of_url),
        page,
    )
    .await?;
    emit(args.output.format, &report, build_summary)
}

/// Fills in the missing embeddings of `project`, `page` entries at a time.
pub async fn backfill(
    store: &Store,
    project: ProjectId,
    key: &str,
    embedder: &dyn Embedder,
    endpoint: Option<EndpointFingerprint>,
    page: u32,
) -> Result<BackfillReport, CommandError> {
    let started = Instant::now();
    let model = embedder.model().to_string();
    let missing = count_missing(store, project, &model).await?;
    let mut report = BackfillReport {
        project: key.to_string(),
        model: model.clone(),
        missing,
        ..Default::default()
    };
    let progress = Progress::bar("embedding", missing);
    loop {
        let entries = store
            .entries_missing_embedding(project, &model, page)
            .await?;
        if entries.is_empty() {
            break;
        }
        let hashes: Vec<ContentHash> = entries
            .iter()
            .map(|e| e.content_hash.clone())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        // Only the project's own vectors from the same endpoint count (of
        // completed runs): never another tenant's.
        let mut vectors: HashMap<ContentHash, Vec<f32>> = match &endpoint {
            Some(endpoint) => {
                let reuse = EmbeddingReuse {
                    project,
                    scope: ReuseScope::Project,
                    model: model.clone(),
                    endpoint: endpoint.clone(),
                };
                store.embeddings_by_hash(&reuse, &hashes).await?
            }
            None => HashMap::new(),
        };

        // Distinct contents that nothing stored covers, in entry order.
        let mut to_compute: Vec<(ContentHash, String)> = Vec::new();
        let mut queued = HashSet::new();
        for entry in &entries {
            if !vectors.contains_key(&entry.content_hash)
                && queued.insert(entry.content_hash.clone())
            {
                to_compute.push((entry.content_hash.clone(), entry.content.clone()));
            }
        }
        let reused_here = entries
            .iter()
            .filter(|e| vectors.contains_key(&e.content_hash))
            .count() as u64;
        if !to_compute.is_empty() {
            let inputs: Vec<String> = to_compute
                .iter()
                .map(|(_, content)| content.clone())
                .collect();
            let computed = embedder.embed(&inputs).await?;
            if computed.len() != inputs.len() {
                return Err(CommandError::EmbeddingCount {
                    expected: inputs.len(),
                    got: computed.len(),
                });
            }
            report.computed += computed.len() as u64;
            for ((hash, _), vector) in to_compute.into_iter().zip(computed) {
                vectors.insert(hash, vector);
            }
        }
        let updates: Vec<(MemoryEntryId, Embedding)> = entries
            .iter()
            .filter_map(|e| {
                vectors.get(&e.content_hash).map(|v| {
                    (
                        e.id,
                        Embedding {
                            model: model.clone(),
                            endpoint: endpoint.clone(),
                            vector: v.clone(),
                        },
                    )
                })
            })
            .collect();
        let updated = store.set_embeddings(&updates).await?;
        if updated == 0 {
            // Nothing changed: stop rather than fetch the same page forever.
            break;
        }
        report.reused += reused_here;
        report.embedded += updated;
        progress.inc(entries.len() as u64);
    }
    progress.finish();
    report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(report)
}

/// Active entries of `project` without an embedding of `model` (the same
/// rule as `Store::entries_missing_embedding`). Not a store method yet: an
/// unchecked query over the documented view.
async fn count_missing(
    store: &Store,
    project: ProjectId,
    model: &str,
) -> Result<u64, CommandError> {
    let count = sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM active_memory_entries WHERE project_id = $1 AND embedding_model IS DISTINCT FROM $2",
    )
    .bind(project.get())
    .bind(model)
    .fetch_one(store.pool())
    .await
    .map_err(|source| StoreError::Database { op: "count entries missing embeddings", source })?;
    Ok(u64::try_from(count).unwrap_or(0))
}

fn build_summary(report: &BackfillReport) -> String {
    render_fields(&[
        ("project", report.project.clone()),
        ("model", report.model.clone()),
        ("missing", report.missing.to_string()),
        ("embedded", report.embedded.to_string()),
        (
            "computed",
            format!("{} distinct contents sent to the endpoint", report.computed),
        ),
        (
            "reused",
            format!(
                "{} entries reused a stored embedding of the same content",
                report.reused
            ),
        ),
        ("duration", human_duration(report.duration_ms)),
    ])
}
