//! The embedding step of import: fills in the embeddings of a batch's memory
//! entries, reusing stored vectors where the project's reuse policy allows
//! and computing the rest. A stored vector is reused only when it was
//! computed by the same endpoint under the same model, in a run that
//! completed, by a project in the allowed scope, and when it has the
//! dimension the endpoint answers with now. Does I/O (the store's reuse
//! lookup, the embeddings endpoint).

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, OnceLock},
};

use crate::{
    embed::Embedder,
    run::Stage,
    store::{
        ContentHash, Embedding, EmbeddingReuse, EndpointFingerprint, NewMemoryEntry, ReuseScope,
    },
};

use super::{
    error::{FailureKind, PipelineError},
    import::{ImportContext, ImportTotals},
};

/// Which stored embeddings a run may reuse, besides the model name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EmbeddingReusePolicy {
    /// The endpoint the embedder calls; `None` reuses nothing, and the
    /// vectors computed are stored without an endpoint (never reused).
    pub endpoint: Option<EndpointFingerprint>,
    /// Whose stored vectors count.
    pub scope: ReuseScope,
}

/// The dimension the endpoint answered with in this run, learnt from its
/// first answer: reused vectors must have it.
pub(super) type RunDimension = OnceLock<usize>;

/// Fills in embeddings: reused for content hashes the policy finds stored,
/// computed (batched by the provider) for the rest.
pub(super) async fn attach_embeddings(
    ctx: &ImportContext<'_>,
    embedder: &Arc<dyn Embedder>,
    entries: &mut [NewMemoryEntry],
    totals: &mut ImportTotals,
) -> Result<(), PipelineError> {
    let fail = |kind: FailureKind| PipelineError::new(Stage::Import, Some(ctx.sync), kind);
    let model = embedder.model().to_string();
    let mut contents: HashMap<ContentHash, &str> = HashMap::new();
    for entry in entries.iter() {
        contents
            .entry(entry.content_hash.clone())
            .or_insert(entry.content.as_str());
    }
    let hashes: Vec<ContentHash> = contents.keys().cloned().collect();
    let mut known = match &ctx.reuse.endpoint {
        Some(endpoint) if !hashes.is_empty() => {
            let reuse = EmbeddingReuse {
                project: ctx.project,
                scope: ctx.reuse.scope,
                model: model.clone(),
                endpoint: endpoint.clone(),
            };
            ctx.store
                .embeddings_by_hash(&reuse, &hashes)
                .await
                .map_err(|e| fail(e.into()))?
        }
        _ => HashMap::new(),
    };

    let mut missing: Vec<ContentHash> = hashes
        .iter()
        .filter(|h| !known.contains_key(*h))
        .cloned()
        .collect();
    // Everything is stored and the endpoint has not answered in this run:
    // ask it for one of them, so the others are checked against what it
    // answers now (one small request; the dimension is kept for the run).
    if missing.is_empty()
        && ctx.dimension.get().is_none()
        && let Some(probe) = known.keys().next().cloned()
    {
        known.remove(&probe);
        missing.push(probe);
    }
    let mut computed = compute(ctx, embedder, &contents, &missing).await?;
    // A stored vector of another dimension (the endpoint now serves another
    // model under the same name) is computed again, never mixed in.
    if let Some(&dimension) = ctx.dimension.get() {
        let stale: Vec<ContentHash> = known
            .iter()
            .filter(|(_, vector)| vector.len() != dimension)
            .map(|(hash, _)| hash.clone())
            .collect();
        if !stale.is_empty() {
            tracing::info!(
                sync = %ctx.sync,
                count = stale.len(),
                dimension,
                "stored embeddings of another dimension are not reused"
            );
            for hash in &stale {
                known.remove(hash);
            }
            computed.extend(compute(ctx, embedder, &contents, &stale).await?);
        }
    }
    totals.embeddings_computed += computed.len() as u64;
    let endpoint = ctx.reuse.endpoint.clone();
    for entry in entries.iter_mut() {
        let vector = match known.get(&entry.content_hash) {
            Some(vector) => {
                totals.embeddings_reused += 1;
                vector
            }
            None => match computed.get(&entry.content_hash) {
                Some(vector) => vector,
                None => continue,
            },
        };
        entry.embedding = Some(Embedding {
            model: model.clone(),
            endpoint: endpoint.clone(),
            vector: vector.clone(),
        });
    }
    Ok(())
}

/// Asks the endpoint for the embeddings of `hashes`' contents and records
/// the dimension of its first answer in this run.
async fn compute(
    ctx: &ImportContext<'_>,
    embedder: &Arc<dyn Embedder>,
    contents: &HashMap<ContentHash, &str>,
    hashes: &[ContentHash],
) -> Result<HashMap<ContentHash, Vec<f32>>, PipelineError> {
    if hashes.is_empty() {
        return Ok(HashMap::new());
    }
    let fail = |kind: FailureKind| PipelineError::new(Stage::Import, Some(ctx.sync), kind);
    let mut seen = HashSet::new();
    let hashes: Vec<&ContentHash> = hashes.iter().filter(|h| seen.insert(*h)).collect();
    let texts: Vec<String> = hashes
        .iter()
        .map(|h| contents.get(*h).copied().unwrap_or_default().to_string())
        .collect();
    let vectors = embedder.embed(&texts).await.map_err(|e| fail(e.into()))?;
    if let Some(first) = vectors.first() {
        let _ = ctx.dimension.set(first.len());
    }
    Ok(hashes.into_iter().cloned().zip(vectors).collect())
}
