//! Stage import: records the planned file versions and turns the content of
//! the ones to process into memory entries. Blobs are fetched with bounded
//! concurrency and handled one batch at a time, so memory stays bounded by
//! the batch, not by the repository. Embeddings are reused by content hash
//! before any are computed. Does I/O (source, store, embeddings endpoint).

use std::{collections::HashMap, sync::Arc};

use futures::{StreamExt, TryStreamExt, stream};

use crate::{
    chunk::{ChunkerConfig, build_chunks},
    embed::EmbeddingProvider,
    source::{
        Source,
        content::{BlobClass, classify_blob},
    },
    store::{ContentHash, Embedding, FileId, FileKind, NewFile, NewMemoryEntry, Rename, Store, SyncId},
};

use super::{
    Stage,
    error::{FailureKind, PipelineError},
    scan::{Action, PlannedFile},
};

/// Files handled per batch: fetched, chunked, embedded and written together.
pub const BATCH_FILES: usize = 128;
/// Blob requests in flight at once.
pub const FETCH_CONCURRENCY: usize = 8;

/// What import needs besides the plan.
pub struct ImportContext<'a> {
    pub source: &'a dyn Source,
    pub store: &'a Store,
    pub sync: SyncId,
    pub chunker: &'a ChunkerConfig,
    pub embedder: &'a Arc<dyn EmbeddingProvider>,
    pub max_file_size: u64,
}

/// What import did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ImportTotals {
    pub files_done: u64,
    pub memory_entries: u64,
    pub bytes_fetched: u64,
    /// Fetched but not chunked: binary, not UTF-8, LFS pointers.
    pub skipped_content: u64,
    pub embeddings_computed: u64,
    pub embeddings_reused: u64,
}

/// Imports one batch of planned files; the caller loops over batches and
/// reports progress between them.
pub async fn import_batch(ctx: &ImportContext<'_>, batch: &[PlannedFile], totals: &mut ImportTotals) -> Result<(), PipelineError> {
    let fail = |kind: FailureKind| PipelineError::new(Stage::Import, Some(ctx.sync), kind);

    let renames: Vec<Rename> = batch
        .iter()
        .filter_map(|f| match f.action {
            Action::Reuse(from) => Some(Rename { from, to_path: f.entry.path.clone() }),
            _ => None,
        })
        .collect();
    ctx.store.record_renames(ctx.sync, &renames).await.map_err(|e| fail(e.into()))?;

    let to_fetch: Vec<&PlannedFile> = batch.iter().filter(|f| f.action == Action::Process).collect();
    // A plain loop rather than `map` over the iterator: a closure here trips
    // the compiler's higher-ranked lifetime check on the Send stream.
    let mut fetches = Vec::with_capacity(to_fetch.len());
    for file in &to_fetch {
        fetches.push(ctx.source.fetch_blob(&file.entry.blob_sha, ctx.max_file_size));
    }
    let blobs: Vec<bytes::Bytes> = stream::iter(fetches)
        .buffered(FETCH_CONCURRENCY)
        .try_collect()
        .await
        .map_err(|e| fail(e.into()))?;

    // Classify and chunk; LFS pointers change the row's kind.
    let mut kinds: HashMap<&str, FileKind> = HashMap::new();
    let mut chunked: Vec<(usize, Vec<crate::chunk::Chunk>)> = Vec::new();
    for (i, bytes) in blobs.iter().enumerate() {
        totals.bytes_fetched += bytes.len() as u64;
        let file = to_fetch[i];
        match classify_blob(bytes) {
            BlobClass::Text => {
                let text = std::str::from_utf8(bytes).expect("classified as UTF-8 text");
                chunked.push((i, build_chunks(ctx.chunker, &file.entry.path, text)));
            }
            BlobClass::LfsPointer(_) => {
                kinds.insert(file.entry.path.as_str(), FileKind::Lfs);
                totals.skipped_content += 1;
            }
            BlobClass::Binary | BlobClass::NotUtf8 => totals.skipped_content += 1,
        }
    }

    let new_files: Vec<NewFile> = batch
        .iter()
        .filter(|f| !matches!(f.action, Action::Reuse(_)))
        .map(|f| NewFile {
            path: f.entry.path.clone(),
            blob_sha: f.entry.blob_sha.clone(),
            size: f.entry.size.unwrap_or(0),
            mode: f.entry.mode,
            kind: kinds.get(f.entry.path.as_str()).copied().unwrap_or_else(|| f.file_kind()),
        })
        .collect();
    let ids = ctx.store.record_files(ctx.sync, &new_files).await.map_err(|e| fail(e.into()))?;
    let id_by_path: HashMap<&str, _> = new_files.iter().map(|f| f.path.as_str()).zip(ids).collect();

    let mut entries: Vec<NewMemoryEntry> = copy_chunks(ctx, batch, &id_by_path).await.map_err(|e| fail(e.into()))?;
    for (i, chunks) in chunked {
        let file = id_by_path[to_fetch[i].entry.path.as_str()];
        entries.extend(chunks.into_iter().map(|chunk| NewMemoryEntry {
            file,
            chunk_index: chunk.index,
            start_line: chunk.start_line,
            end_line: chunk.end_line,
            language: chunk.language.map(|l| l.as_str().to_string()),
            content_hash: ContentHash::parse(&chunk.content_hash).unwrap_or_else(|| ContentHash::of(&chunk.content)),
            content: chunk.content,
            embedding: None,
        }));
    }
    if ctx.embedder.enabled() {
        let embedder = ctx.embedder;
        attach_embeddings(ctx, embedder, &mut entries, totals).await?;
    }
    ctx.store.record_memory(ctx.sync, &entries).await.map_err(|e| fail(e.into()))?;
    totals.memory_entries += entries.len() as u64;
    totals.files_done += batch.len() as u64;
    Ok(())
}

/// The stored chunks of the versions that `Reembed` files copy, moved to the
/// rows this run recorded for them (embeddings are attached afterwards).
async fn copy_chunks(
    ctx: &ImportContext<'_>,
    batch: &[PlannedFile],
    id_by_path: &HashMap<&str, FileId>,
) -> Result<Vec<NewMemoryEntry>, crate::store::StoreError> {
    let mut targets: HashMap<FileId, Vec<FileId>> = HashMap::new();
    for file in batch {
        if let Action::Reembed(from) = file.action {
            targets.entry(from).or_default().push(id_by_path[file.entry.path.as_str()]);
        }
    }
    if targets.is_empty() {
        return Ok(Vec::new());
    }
    let sources: Vec<FileId> = targets.keys().copied().collect();
    let mut entries = Vec::new();
    for chunk in ctx.store.chunks_of(&sources).await? {
        for &to in &targets[&chunk.file] {
            entries.push(NewMemoryEntry { file: to, ..chunk.clone() });
        }
    }
    Ok(entries)
}

/// Fills in embeddings: reused for content hashes the store already has for
/// this model, computed (batched by the provider) for the rest.
async fn attach_embeddings(
    ctx: &ImportContext<'_>,
    embedder: &Arc<dyn EmbeddingProvider>,
    entries: &mut [NewMemoryEntry],
    totals: &mut ImportTotals,
) -> Result<(), PipelineError> {
    let fail = |kind: FailureKind| PipelineError::new(Stage::Import, Some(ctx.sync), kind);
    let model = embedder.model().to_string();
    let hashes: Vec<ContentHash> = entries.iter().map(|e| e.content_hash.clone()).collect();
    let mut known = ctx.store.embeddings_by_hash(&model, &hashes).await.map_err(|e| fail(e.into()))?;

    let mut missing: HashMap<ContentHash, String> = HashMap::new();
    for entry in entries.iter() {
        if known.contains_key(&entry.content_hash) {
            totals.embeddings_reused += 1;
        } else {
            missing.entry(entry.content_hash.clone()).or_insert_with(|| entry.content.clone());
        }
    }
    if !missing.is_empty() {
        let (hashes, texts): (Vec<ContentHash>, Vec<String>) = missing.into_iter().unzip();
        let vectors = embedder.embed(&texts).await.map_err(|e| fail(e.into()))?;
        totals.embeddings_computed += vectors.len() as u64;
        known.extend(hashes.into_iter().zip(vectors));
    }
    for entry in entries.iter_mut() {
        if let Some(vector) = known.get(&entry.content_hash) {
            entry.embedding = Some(Embedding { model: model.clone(), vector: vector.clone() });
        }
    }
    Ok(())
}
