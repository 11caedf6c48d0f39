//! Stage import: records the planned file versions and turns the content of
//! the ones to process into memory entries. Files go in batches: while one
//! batch is written to the store, the next ones are fetched and chunked on
//! tasks of their own, so the source and the database work at the same time
//! instead of taking turns. Memory stays bounded by design, not by the
//! repository: a batch holds at most [`BATCH_FILES`] files and
//! [`BATCH_BYTES`] of content, and every batch reserves its content bytes
//! from a [`FetchBudget`] (one per run, one for the operator) before it is
//! fetched, releasing them once written. Paths that share a blob fetch it
//! once per batch, and blobs shared across the plan once per run (up to
//! [`SHARED_BLOB_CACHE_BYTES`]). Embeddings are reused by content hash
//! before any are computed (see [`super::embeddings`]). Does I/O (source, store, embeddings endpoint).

use std::{
    borrow::Cow,
    collections::HashMap,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use crate::{
    chunk::{Chunk, ChunkerConfig, build_chunks},
    embed::Embedder,
    run::Stage,
    source::{
        Archive, Source, SourceError,
        content::{BlobClass, classify_blob},
        tree::build_blob_sha1,
    },
    store::{
        ContentHash, FileId, FileKind, NewFile, NewMemoryEntry, ProjectId, Rename, Store, SyncId,
    },
};

use super::{
    AbortOnDrop,
    embeddings::{EmbeddingReusePolicy, RunDimension, attach_embeddings},
    error::{FailureKind, PipelineError},
    joined,
    scan::{Action, Plan, PlannedFile},
};

/// Files handled per batch: fetched, chunked, embedded and written together.
pub const BATCH_FILES: usize = 128;
/// Blob requests in flight at once per batch (a source bounds its own total).
pub const FETCH_CONCURRENCY: usize = 8;
/// Batches fetched ahead of the one being written. Two keep the source busy
/// across a write without holding much more than three batches of content.
pub const PREFETCH_BATCHES: usize = 2;
/// Batches written at once, on connections of their own: the database then
/// works on one batch while committing another.
pub const WRITE_CONCURRENCY: usize = 2;
/// Content bytes (sizes of the files to process) one batch holds at most:
/// a batch of large files is cut short of [`BATCH_FILES`] (a file larger
/// than this is a batch of its own). Its chunks, rows and SQL buffers cost a
/// few times this while it is written.
pub const BATCH_BYTES: u64 = 8 * 1024 * 1024;
/// Blobs that several paths of a run share are kept for the run's later
/// batches up to this many bytes, so each is fetched once.
pub const SHARED_BLOB_CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// The budget unit: semaphore permits count KiB, so budgets of any size fit.
const BUDGET_UNIT: u64 = 1024;

/// Bytes of file content fetched and not yet written: one semaphore for the
/// operator shared by all runs, and a budget each run gets of its own
/// ([`FetchBudget::start_run`]). Batches reserve their bytes in order, run
/// budget first, so the oldest batch always holds what it needs to finish
/// and no run or batch waits on one that waits on it.
#[derive(Clone, Debug)]
pub struct FetchBudget {
    operator: Arc<Semaphore>,
    operator_units: usize,
    run_units: usize,
}

impl FetchBudget {
    /// The operator's default (`--max-inflight-bytes`).
    pub const DEFAULT_OPERATOR_BYTES: u64 = 64 * 1024 * 1024;
    /// A run's default (`--max-inflight-bytes-per-run`).
    pub const DEFAULT_RUN_BYTES: u64 = 32 * 1024 * 1024;

    /// A budget of `operator_bytes` for all runs and `run_bytes` for each.
    pub fn new(operator_bytes: u64, run_bytes: u64) -> FetchBudget {
        let units = |bytes: u64| {
            usize::try_from(bytes.div_ceil(BUDGET_UNIT))
                .unwrap_or(usize::MAX)
                .clamp(1, u32::MAX as usize)
        };
        let operator_units = units(operator_bytes);
        FetchBudget {
            operator: Arc::new(Semaphore::new(operator_units)),
            operator_units,
            run_units: units(run_bytes),
        }
    }

    /// The budget of one run.
    pub fn start_run(&self) -> RunBudget {
        RunBudget {
            run: Arc::new(Semaphore::new(self.run_units)),
            run_units: self.run_units,
            operator: Arc::clone(&self.operator),
            operator_units: self.operator_units,
        }
    }

    /// Bytes the operator's budget has left now (for tests and metrics).
    pub fn available_bytes(&self) -> u64 {
        self.operator.available_permits() as u64 * BUDGET_UNIT
    }
}

impl Default for FetchBudget {
    fn default() -> Self {
        FetchBudget::new(Self::DEFAULT_OPERATOR_BYTES, Self::DEFAULT_RUN_BYTES)
    }
}

/// One run's share of a [`FetchBudget`].
pub struct RunBudget {
    run: Arc<Semaphore>,
    run_units: usize,
    operator: Arc<Semaphore>,
    operator_units: usize,
}

impl RunBudget {
    /// Waits until `bytes` fit in the run's and the operator's budgets. A
    /// reservation larger than a budget takes all of it (it then runs
    /// alone) rather than waiting forever.
    async fn reserve(&self, bytes: u64) -> Reservation {
        // No reservation exceeds the smaller budget: one run never holds
        // more of the operator's than its own.
        let most = self.run_units.min(self.operator_units);
        let units = usize::try_from(bytes.div_ceil(BUDGET_UNIT))
            .unwrap_or(usize::MAX)
            .clamp(1, most);
        let units = u32::try_from(units).unwrap_or(u32::MAX);
        // The semaphores are never closed, so these only fail if one were:
        // then the batch goes on without a reservation rather than failing.
        let run = Arc::clone(&self.run).acquire_many_owned(units).await.ok();
        let operator = Arc::clone(&self.operator)
            .acquire_many_owned(units)
            .await
            .ok();
        Reservation {
            _run: run,
            _operator: operator,
        }
    }
}

/// Budget held by a batch until it is written (dropped with it).
#[derive(Default)]
struct Reservation {
    _run: Option<OwnedSemaphorePermit>,
    _operator: Option<OwnedSemaphorePermit>,
}

/// Blobs that more than one path of the plan uses, kept once fetched (up
/// to [`SHARED_BLOB_CACHE_BYTES`]) so later batches do not fetch them again.
#[derive(Default)]
struct SharedBlobs {
    /// Blob ids used by two or more paths to process.
    shared: std::collections::HashSet<String>,
    kept: Mutex<(HashMap<String, Bytes>, u64)>,
}

impl SharedBlobs {
    fn for_files(files: &[PlannedFile]) -> SharedBlobs {
        let mut uses: HashMap<&str, usize> = HashMap::new();
        for file in files.iter().filter(|f| f.action == Action::Process) {
            *uses.entry(file.entry.blob_sha.as_str()).or_default() += 1;
        }
        SharedBlobs {
            shared: uses
                .into_iter()
                .filter(|(_, n)| *n > 1)
                .map(|(sha, _)| sha.to_string())
                .collect(),
            kept: Mutex::default(),
        }
    }

    fn get(&self, sha: &str) -> Option<Bytes> {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.0.get(sha).cloned()
    }

    fn keep(&self, sha: &str, bytes: &Bytes) {
        if !self.shared.contains(sha) {
            return;
        }
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let size = bytes.len() as u64;
        if kept.1.saturating_add(size) <= SHARED_BLOB_CACHE_BYTES {
            kept.1 += size;
            kept.0.insert(sha.to_string(), bytes.clone());
        }
    }
}

/// The content bytes of a batch's files to process, as the tree gives them.
fn process_bytes(batch: &[PlannedFile]) -> u64 {
    batch
        .iter()
        .filter(|f| f.action == Action::Process)
        .map(|f| f.entry.size.unwrap_or(0))
        .fold(0, u64::saturating_add)
}

/// Cuts `files` into batches of at most [`BATCH_FILES`] files and
/// [`BATCH_BYTES`] of content to process (at least one file each).
fn split_batches(files: &[PlannedFile]) -> Vec<&[PlannedFile]> {
    let mut batches = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (i, file) in files.iter().enumerate() {
        let size = match file.action {
            Action::Process => file.entry.size.unwrap_or(0),
            _ => 0,
        };
        let full =
            i - start == BATCH_FILES || (i > start && bytes.saturating_add(size) > BATCH_BYTES);
        if full {
            batches.push(&files[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes = bytes.saturating_add(size);
    }
    if start < files.len() {
        batches.push(&files[start..]);
    }
    batches
}

/// What import needs besides the plan.
pub struct ImportContext<'a> {
    pub source: &'a Arc<dyn Source>,
    pub store: &'a Store,
    pub sync: SyncId,
    pub chunker: &'a ChunkerConfig,
    pub embedder: &'a Arc<dyn Embedder>,
    pub max_file_size: u64,
    /// The project the run syncs and whose stored embeddings may be reused.
    pub project: ProjectId,
    pub reuse: &'a EmbeddingReusePolicy,
    pub dimension: RunDimension,
    /// Content bytes in flight, for the operator and for this run.
    pub budget: &'a FetchBudget,
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

impl ImportTotals {
    fn add(&mut self, other: &ImportTotals) {
        self.files_done += other.files_done;
        self.memory_entries += other.memory_entries;
        self.bytes_fetched += other.bytes_fetched;
        self.skipped_content += other.skipped_content;
        self.embeddings_computed += other.embeddings_computed;
        self.embeddings_reused += other.embeddings_reused;
    }
}

/// A run that processes at least this many files, and at least half of the
/// tree, reads them from one archive where the source offers one.
pub const ARCHIVE_MIN_FILES: usize = 1_000;

/// Whether processing `to_process` of a tree of `total` files is worth one
/// download of the whole commit rather than a request per file.
pub fn worth_an_archive(to_process: usize, total: usize) -> bool {
    to_process >= ARCHIVE_MIN_FILES && to_process.saturating_mul(2) >= total
}

/// Imports the files `plan` records at `commit`, calling `progress` after
/// each batch is written. When [`worth_an_archive`], the files to process
/// are first taken from the source's archive of the commit where their bytes
/// match the tree; the rest (and everything when there is no archive) are
/// fetched one by one, running ahead of the writes by [`PREFETCH_BATCHES`].
/// A failure anywhere stops the import; dropping the future aborts the
/// fetches in flight.
pub async fn import(
    ctx: &ImportContext<'_>,
    plan: &Plan,
    commit: &str,
    mut progress: impl FnMut(&ImportTotals),
) -> Result<ImportTotals, PipelineError> {
    let files = plan.files.as_slice();
    let to_process = files.iter().filter(|f| f.action == Action::Process).count();
    let use_archive = worth_an_archive(
        to_process,
        usize::try_from(plan.counts.total).unwrap_or(usize::MAX),
    );
    let mut totals = ImportTotals::default();
    let budget = ctx.budget.start_run();
    let archive = match use_archive {
        true => ctx.source.fetch_archive(commit).await.unwrap_or_else(|error| {
            tracing::warn!(%error, "could not download the commit's archive; fetching files one by one");
            None
        }),
        false => None,
    };
    let rest = match archive {
        Some(archive) => Cow::Owned(
            import_archive(ctx, files, archive, &budget, &mut totals, &mut progress).await?,
        ),
        None => Cow::Borrowed(files),
    };
    import_one_by_one(ctx, &rest, &budget, &mut totals, &mut progress).await?;
    Ok(totals)
}

/// Imports the files to process that `archive` holds with the right bytes,
/// read and chunked on a blocking thread while the writes go on here.
/// Returns the files left: those not to process, and those the archive
/// lacked, held with other bytes, or never reached because it broke off.
async fn import_archive(
    ctx: &ImportContext<'_>,
    files: &[PlannedFile],
    archive: Archive,
    budget: &RunBudget,
    totals: &mut ImportTotals,
    progress: &mut impl FnMut(&ImportTotals),
) -> Result<Vec<PlannedFile>, PipelineError> {
    let wanted: HashMap<String, PlannedFile> = files
        .iter()
        .filter(|f| f.action == Action::Process)
        .map(|f| (f.entry.path.clone(), f.clone()))
        .collect();
    let (sender, batches) =
        tokio::sync::mpsc::channel::<(Vec<PlannedFile>, Fetched)>(PREFETCH_BATCHES);
    let (chunker, max_file_size) = (*ctx.chunker, ctx.max_file_size);
    // The reader reserves each batch's bytes before handing it over (in
    // order, from this one thread), so it runs ahead of the writes only as
    // far as the budget allows.
    let handle = tokio::runtime::Handle::current();
    let budget = RunBudget {
        run: Arc::clone(&budget.run),
        run_units: budget.run_units,
        operator: Arc::clone(&budget.operator),
        operator_units: budget.operator_units,
    };
    let reader = tokio::task::spawn_blocking(move || {
        let mut wanted = wanted;
        let mut batch = (Vec::new(), Fetched::default());
        let mut open = true;
        let read = archive.for_each_file(max_file_size, |path, bytes| {
            let matches = wanted
                .get(&path)
                .is_some_and(|f| build_blob_sha1(&bytes) == f.entry.blob_sha);
            if !matches {
                return true;
            }
            let file = wanted.remove(&path).expect("looked up above");
            batch.1.bytes += bytes.len() as u64;
            batch
                .1
                .contents
                .push(build_content(&chunker, &path, &bytes));
            batch.0.push(file);
            if batch.0.len() == BATCH_FILES || batch.1.bytes >= BATCH_BYTES {
                let mut full = std::mem::take(&mut batch);
                full.1.reservation = handle.block_on(budget.reserve(full.1.bytes));
                open = sender.blocking_send(full).is_ok();
            }
            open
        });
        if open && !batch.0.is_empty() {
            batch.1.reservation = handle.block_on(budget.reserve(batch.1.bytes));
            // A batch that cannot be sent was never written: its files stay wanted.
            if let Err(unsent) = sender.blocking_send(batch) {
                wanted.extend(unsent.0.0.into_iter().map(|f| (f.entry.path.clone(), f)));
            }
        }
        (read, wanted)
    });
    let batches = tokio_stream::wrappers::ReceiverStream::new(batches).map(Ok);
    write_all(ctx, batches, totals, progress).await?;
    let (read, left) = joined(reader.await);
    if let Err(error) = read {
        tracing::warn!(%error, files_left = left.len(), "the archive broke off; fetching the rest one by one");
    } else if !left.is_empty() {
        tracing::debug!(
            files = left.len(),
            "files not in the archive as the tree lists them; fetching them one by one"
        );
    }
    Ok(files
        .iter()
        .filter(|f| f.action != Action::Process || left.contains_key(&f.entry.path))
        .cloned()
        .collect())
}

/// Imports `files` batch by batch, each batch's blobs fetched one request
/// per distinct blob, [`PREFETCH_BATCHES`] batches ahead of the writes and
/// within the run's budget: each batch reserves its bytes, in order, before
/// its fetch starts.
async fn import_one_by_one(
    ctx: &ImportContext<'_>,
    files: &[PlannedFile],
    budget: &RunBudget,
    totals: &mut ImportTotals,
    progress: &mut impl FnMut(&ImportTotals),
) -> Result<(), PipelineError> {
    let shared = Arc::new(SharedBlobs::for_files(files));
    let batches = split_batches(files);
    // `buffered` pulls the next batch from this stream only while fewer
    // than that many are in flight; each one spawns its fetch, which runs
    // whether or not the stream is being polled.
    let fetches = async_stream::stream! {
        for batch in batches {
            let reservation = budget.reserve(process_bytes(batch)).await;
            let task = FetchTask::spawn(ctx, batch, &shared, reservation);
            yield async move {
                let fetched = task.join().await;
                let fetched =
                    fetched.map_err(|e| PipelineError::new(Stage::Import, Some(ctx.sync), e))?;
                Ok((batch.to_vec(), fetched))
            };
        }
    };
    let batches = fetches.buffered(PREFETCH_BATCHES + 1);
    write_all(ctx, batches, totals, progress).await
}

/// Writes fetched batches as they come, [`WRITE_CONCURRENCY`] at a time
/// (each batch is its own transactions; no two hold the same path).
async fn write_all(
    ctx: &ImportContext<'_>,
    batches: impl futures::Stream<Item = Result<(Vec<PlannedFile>, Fetched), PipelineError>>,
    totals: &mut ImportTotals,
    progress: &mut impl FnMut(&ImportTotals),
) -> Result<(), PipelineError> {
    let writes = batches
        .map(|fetched| async move {
            let (batch, fetched) = fetched?;
            write_batch(ctx, &batch, fetched).await
        })
        .buffer_unordered(WRITE_CONCURRENCY);
    let mut writes = std::pin::pin!(writes);
    while let Some(written) = writes.next().await {
        totals.add(&written?);
        progress(totals);
    }
    Ok(())
}

/// The content of one file to process, ready to record.
enum Content {
    Chunks(Vec<Chunk>),
    LfsPointer,
    /// Binary or not UTF-8: recorded, not chunked.
    Skipped,
}

/// A batch's `Process` files, fetched and chunked, in batch order, with
/// the budget it holds until written.
#[derive(Default)]
struct Fetched {
    contents: Vec<Content>,
    bytes: u64,
    reservation: Reservation,
}

/// The fetch and chunking of one batch on a task of its own. Dropping it
/// aborts the task, so a cancelled or failed import leaves nothing running.
struct FetchTask(AbortOnDrop<Result<Fetched, SourceError>>);

impl FetchTask {
    fn spawn(
        ctx: &ImportContext<'_>,
        batch: &[PlannedFile],
        shared: &Arc<SharedBlobs>,
        reservation: Reservation,
    ) -> FetchTask {
        let wanted: Vec<(String, String)> = batch
            .iter()
            .filter(|f| f.action == Action::Process)
            .map(|f| (f.entry.blob_sha.clone(), f.entry.path.clone()))
            .collect();
        let source = Arc::clone(ctx.source);
        let shared = Arc::clone(shared);
        let chunker = *ctx.chunker;
        let max_file_size = ctx.max_file_size;
        FetchTask(AbortOnDrop(tokio::spawn(
            async move {
                // Each distinct blob once: paths sharing one share its bytes.
                let mut blobs: HashMap<&str, Bytes> = HashMap::new();
                let mut to_fetch: Vec<&str> = Vec::new();
                for (sha, _) in &wanted {
                    if blobs.contains_key(sha.as_str()) || to_fetch.contains(&sha.as_str()) {
                        continue;
                    }
                    match shared.get(sha) {
                        Some(bytes) => {
                            blobs.insert(sha, bytes);
                        }
                        None => to_fetch.push(sha),
                    }
                }
                // A plain loop rather than `map` over the iterator: a closure
                // here trips the compiler's higher-ranked lifetime check on the
                // Send future.
                let mut fetches = Vec::with_capacity(to_fetch.len());
                for sha in &to_fetch {
                    let source = &source;
                    fetches
                        .push(async move { (*sha, source.fetch_blob(sha, max_file_size).await) });
                }
                let mut fetched_blobs =
                    futures::stream::iter(fetches).buffer_unordered(FETCH_CONCURRENCY);
                while let Some((sha, blob)) = fetched_blobs.next().await {
                    let blob = blob?;
                    shared.keep(sha, &blob);
                    blobs.insert(sha, blob);
                }
                drop(fetched_blobs);
                let mut fetched = Fetched {
                    contents: Vec::with_capacity(wanted.len()),
                    bytes: 0,
                    reservation,
                };
                for (sha, path) in &wanted {
                    // Every wanted blob was taken from the run's cache or
                    // fetched above (a failed fetch returned early).
                    let blob = blobs.get(sha.as_str()).expect("fetched above");
                    fetched.bytes += blob.len() as u64;
                    fetched.contents.push(build_content(&chunker, path, blob));
                }
                Ok(fetched)
            }
            .in_current_span(),
        )))
    }

    async fn join(mut self) -> Result<Fetched, SourceError> {
        joined((&mut self.0.0).await)
    }
}

/// Classifies a blob and chunks it when it is text.
fn build_content(chunker: &ChunkerConfig, path: &str, bytes: &[u8]) -> Content {
    match classify_blob(bytes) {
        BlobClass::Text => {
            let text = std::str::from_utf8(bytes).expect("classified as UTF-8 text");
            Content::Chunks(build_chunks(chunker, path, text))
        }
        BlobClass::LfsPointer(_) => Content::LfsPointer,
        BlobClass::Binary | BlobClass::NotUtf8 => Content::Skipped,
    }
}

/// Writes one fetched batch: renames, file rows (LFS pointers change the
/// row's kind), then memory entries with their embeddings.
async fn write_batch(
    ctx: &ImportContext<'_>,
    batch: &[PlannedFile],
    fetched: Fetched,
) -> Result<ImportTotals, PipelineError> {
    let fail = |kind: FailureKind| PipelineError::new(Stage::Import, Some(ctx.sync), kind);
    let mut totals = ImportTotals::default();
    let totals = &mut totals;

    let renames: Vec<Rename> = batch
        .iter()
        .filter_map(|f| match f.action {
            Action::Reuse(from) => Some(Rename {
                from,
                to_path: f.entry.path.clone(),
            }),
            _ => None,
        })
        .collect();
    ctx.store
        .record_renames(ctx.sync, &renames)
        .await
        .map_err(|e| fail(e.into()))?;

    totals.bytes_fetched += fetched.bytes;
    let processed: Vec<(&PlannedFile, Content)> = batch
        .iter()
        .filter(|f| f.action == Action::Process)
        .zip(fetched.contents)
        .collect();
    let mut kinds: HashMap<&str, FileKind> = HashMap::new();
    for (file, content) in &processed {
        match content {
            Content::Chunks(_) => {}
            Content::LfsPointer => {
                kinds.insert(file.entry.path.as_str(), FileKind::Lfs);
                totals.skipped_content += 1;
            }
            Content::Skipped => totals.skipped_content += 1,
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
            kind: kinds
                .get(f.entry.path.as_str())
                .copied()
                .unwrap_or_else(|| f.file_kind()),
        })
        .collect();
    let ids = ctx
        .store
        .record_files(ctx.sync, &new_files)
        .await
        .map_err(|e| fail(e.into()))?;
    let id_by_path: HashMap<&str, _> = new_files.iter().map(|f| f.path.as_str()).zip(ids).collect();

    let mut entries: Vec<NewMemoryEntry> = copy_chunks(ctx, batch, &id_by_path)
        .await
        .map_err(|e| fail(e.into()))?;
    for (planned, content) in processed {
        let Content::Chunks(chunks) = content else {
            continue;
        };
        let file = id_by_path[planned.entry.path.as_str()];
        entries.extend(chunks.into_iter().map(|chunk| {
            NewMemoryEntry {
                file,
                chunk_index: chunk.index,
                start_line: chunk.start_line,
                end_line: chunk.end_line,
                language: chunk.language.map(|l| l.as_str().to_string()),
                content_hash: ContentHash::parse(&chunk.content_hash)
                    .unwrap_or_else(|| ContentHash::of(&chunk.content)),
                content: chunk.content,
                embedding: None,
            }
        }));
    }
    if ctx.embedder.enabled() {
        let embedder = ctx.embedder;
        attach_embeddings(ctx, embedder, &mut entries, totals).await?;
    }
    ctx.store
        .record_memory(ctx.sync, &entries)
        .await
        .map_err(|e| fail(e.into()))?;
    totals.memory_entries += entries.len() as u64;
    totals.files_done += batch.len() as u64;
    Ok(*totals)
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
            targets
                .entry(from)
                .or_default()
                .push(id_by_path[file.entry.path.as_str()]);
        }
    }
    if targets.is_empty() {
        return Ok(Vec::new());
    }
    let sources: Vec<FileId> = targets.keys().copied().collect();
    let mut entries = Vec::new();
    for chunk in ctx.store.chunks_of(&sources).await? {
        for &to in &targets[&chunk.file] {
            entries.push(NewMemoryEntry {
                file: to,
                ..chunk.clone()
            });
        }
    }
    Ok(entries)
}
