//! The diff-aware sync pipeline: prepare → scan → import → finalize, driven
//! as a `Stream` of steps that a caller polls like a generator: each step is
//! a progress event for status, metrics and the live stream; the last step
//! is the outcome. This file is the driver only: the order of the stages,
//! what every stage does around its body ([`Pipeline::stage`]) and how a run
//! ends; each stage's work and store I/O are in its own file. No Kubernetes
//! types here: the controller adapts.
//!
//! A run that fails at any stage is marked FAILED in the store with the
//! stage and the reason; its partial rows never become active, and the last
//! completed sync stays current.

pub mod embeddings;
pub mod error;
pub mod event;
pub mod filter;
pub mod finalize;
pub mod import;
pub mod prepare;
pub mod scan;

use std::{future::Future, sync::Arc, time::Instant};

use futures::Stream;
use tokio::sync::mpsc;
use tracing::Instrument;

pub use embeddings::EmbeddingReusePolicy;
pub use error::{FailureKind, PipelineError};
pub use event::{RunSummary, SyncEvent};
pub use import::FetchBudget;

use crate::{
    chunk::ChunkerConfig,
    embed::Embedder,
    run::{FileCounts, GitTransfer, Stage, StageDurations},
    source::{HeadCache, Source},
    store::{ProjectId, Store, SyncRecord},
};

use self::{
    filter::PathFilter,
    finalize::{build_completion, finalize},
    import::{ImportContext, ImportTotals, import},
    prepare::{Prepare, Prepared, prepare},
    scan::scan,
};

/// How files are selected and processed in a run.
#[derive(Debug, Clone)]
pub struct ProcessingInputs {
    pub filter: PathFilter,
    pub max_file_size: u64,
    /// `maxFileSize` of the base sync, when known: files that cross the
    /// difference are processed again.
    pub previous_max_file_size: Option<u64>,
    /// What the base sync's outcome can no longer be trusted for.
    pub reprocess: Reprocess,
}

/// How much of an unchanged file's recorded outcome a run reuses, from what
/// changed in the inputs since the base sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reprocess {
    /// Nothing that shapes processing changed: unchanged files cost nothing.
    #[default]
    Nothing,
    /// Only the embedding model (or whether there is one) changed: the
    /// chunks are still right, so text files are re-recorded from their
    /// stored chunks with new embeddings; no blob is fetched or chunked.
    Embeddings,
    /// The chunker changed, the base is of unknown make, or a reindex was
    /// asked for: every file is fetched and processed again.
    Everything,
}

/// One run to attempt.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub project: ProjectId,
    pub branch: String,
    /// Sync this commit instead of the branch head.
    pub pinned_commit: Option<String>,
    /// The branch head of the previous poll, for a conditional request.
    pub head_cache: Option<HeadCache>,
    /// Why the run starts (stored with it).
    pub trigger: String,
    /// Run even when the commit is already synced (the inputs changed).
    pub force: bool,
    pub inputs: ProcessingInputs,
}

/// Everything a run talks to.
#[derive(Clone)]
pub struct Pipeline {
    pub source: Arc<dyn Source>,
    pub store: Store,
    pub chunker: ChunkerConfig,
    pub embedder: Arc<dyn Embedder>,
    /// Which stored embeddings the run may reuse.
    pub reuse: EmbeddingReusePolicy,
    /// Content bytes in flight: the operator's budget, shared by all runs.
    pub budget: FetchBudget,
}

/// How a run ended.
#[derive(Debug, Clone)]
// One value per run, moved once: boxing the record buys nothing.
#[allow(clippy::large_enum_variant)]
pub enum Outcome {
    /// The commit was already synced: no run.
    Unchanged {
        commit: String,
        head: Option<HeadCache>,
    },
    /// A run completed.
    Completed {
        record: SyncRecord,
        summary: RunSummary,
        head: Option<HeadCache>,
    },
}

/// One item of the pipeline's stream.
// A handful per run, moved once: boxing the summary buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Step {
    /// Progress to publish.
    Event(SyncEvent),
    /// The last item.
    Done(Result<Outcome, PipelineError>),
}

impl Pipeline {
    /// Runs `request`, yielding events as it goes and the outcome last.
    /// The run is a task of its own: it goes on while the caller handles
    /// events (status and Event writes to the API server take their time,
    /// and a run must not wait for them). Dropping the stream aborts the run
    /// where it stands and leaves it IN_PROGRESS; the caller then fails it
    /// (see the controller's shutdown).
    pub fn run(self, request: SyncRequest) -> impl Stream<Item = Step> + Send {
        let (sender, mut receiver) = mpsc::unbounded_channel();
        let task =
            tokio::spawn(async move { self.drive(&request, &sender).await }.in_current_span());
        let mut task = AbortOnDrop(task);
        async_stream::stream! {
            loop {
                tokio::select! {
                    biased;
                    Some(event) = receiver.recv() => yield Step::Event(event),
                    result = &mut task.0 => {
                        while let Ok(event) = receiver.try_recv() {
                            yield Step::Event(event);
                        }
                        yield Step::Done(joined(result));
                        break;
                    }
                }
            }
        }
    }

    /// The run, reporting through `events`, and how it ended: a failed run
    /// is marked FAILED (once it was opened) and announced.
    async fn drive(
        &self,
        request: &SyncRequest,
        events: &mpsc::UnboundedSender<SyncEvent>,
    ) -> Result<Outcome, PipelineError> {
        let emit = |event: SyncEvent| {
            // The receiver lives as long as the stream that polls this future.
            let _ = events.send(event);
        };
        match self.run_stages(request, &emit).await {
            Ok(outcome) => Ok(outcome),
            Err(Exit::Unchanged { commit, head }) => {
                emit(SyncEvent::Unchanged {
                    commit: commit.clone(),
                });
                Ok(Outcome::Unchanged { commit, head })
            }
            Err(Exit::Failed(error)) => {
                self.record_failure(&error).await;
                emit(failed_event(&error));
                Err(error)
            }
        }
    }

    /// The four stages in order.
    async fn run_stages(
        &self,
        request: &SyncRequest,
        emit: &(dyn Fn(SyncEvent) + Sync),
    ) -> Result<Outcome, Exit> {
        let mut stages = Stages {
            store: &self.store,
            branch: &request.branch,
            emit,
            durations: StageDurations::default(),
        };
        let prepared = async {
            let prepared = prepare(self.source.as_ref(), &self.store, request).await?;
            match prepared.decision {
                Prepare::Run(run) => Ok((run, prepared.head)),
                Prepare::Unchanged { commit } => Err(Exit::Unchanged {
                    commit,
                    head: prepared.head,
                }),
            }
        };
        let (run, head) = stages.run(Stage::Prepare, None, prepared).await?;
        emit(SyncEvent::Started {
            sync_id: run.sync.to_string(),
            commit: run.commit.clone(),
            base_commit: run.base.as_ref().and_then(|b| b.commit.clone()),
            trigger: request.trigger.clone(),
        });
        let stats_before = self.source.stats();

        let source = self.source.as_ref();
        let (store, inputs) = (&self.store, &request.inputs);
        let scanned = scan(source, store, request.project, &run, inputs, request.force);
        let plan = stages.run(Stage::Scan, Some(&run), scanned).await?;

        let ctx = ImportContext {
            source: &self.source,
            store: &self.store,
            sync: run.sync,
            chunker: &self.chunker,
            embedder: &self.embedder,
            max_file_size: request.inputs.max_file_size,
            project: request.project,
            reuse: &self.reuse,
            dimension: Default::default(),
            budget: &self.budget,
        };
        let files_total = plan.files.len() as u64;
        let progress = |files_done| {
            emit(SyncEvent::Progress {
                stage: Stage::Import,
                files_done,
                files_total,
            })
        };
        let imported = async {
            progress(0);
            let done = |totals: &ImportTotals| progress(totals.files_done);
            import(&ctx, &plan, &run.commit, done).await
        };
        let totals = stages.run(Stage::Import, Some(&run), imported).await?;

        let counts = plan.counts;
        let stats = self.source.stats();
        let api_calls = stats.total();
        let transfer = stats.since(&stats_before).transfer.map(|t| GitTransfer {
            objects: t.objects,
            bytes: t.bytes,
        });
        let completion = build_completion(plan, &totals, stages.durations, api_calls, transfer);
        let finalized = finalize(&self.store, run.sync, completion);
        let record = stages.run(Stage::Finalize, Some(&run), finalized).await?;

        let requests = self.source.stats().since(&stats_before).total();
        let timings = stages.durations;
        let summary =
            build_run_summary(&run, request, &record, &counts, &totals, timings, requests);
        emit(SyncEvent::Completed(summary.clone()));
        Ok(Outcome::Completed {
            record,
            summary,
            head,
        })
    }

    /// Marks the failed run FAILED with its stage (best effort: if the store
    /// is unreachable, the run is failed as abandoned on the next start).
    async fn record_failure(&self, error: &PipelineError) {
        let Some(sync) = error.sync else { return };
        if let Err(store_error) = self
            .store
            .fail_sync(sync, Some(error.stage), &error.to_string())
            .await
        {
            tracing::error!(%sync, error = %store_error, "could not mark the failed run FAILED");
        }
    }
}

/// Why the stages stop before a run completes.
enum Exit {
    /// Prepare found the commit already synced: no run.
    Unchanged {
        commit: String,
        head: Option<HeadCache>,
    },
    Failed(PipelineError),
}

impl From<PipelineError> for Exit {
    fn from(error: PipelineError) -> Self {
        Exit::Failed(error)
    }
}

/// What every stage of one run reports through: the store its stages are
/// marked in, the event sink, and the durations measured so far.
struct Stages<'a> {
    store: &'a Store,
    branch: &'a str,
    emit: &'a (dyn Fn(SyncEvent) + Sync),
    durations: StageDurations,
}

impl Stages<'_> {
    /// What every stage does around its `body`: announces the stage, marks
    /// it in the store once the run is open (`run` is `None` for prepare,
    /// which opens it), runs the body in the stage's span and times it, then
    /// records and announces its duration. A body that fails, or that ends
    /// the run early, ends the stage without a `StageFinished`.
    async fn run<T, E: From<PipelineError>>(
        &mut self,
        stage: Stage,
        run: Option<&Prepared>,
        body: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        (self.emit)(SyncEvent::StageStarted { stage });
        let started = Instant::now();
        let span = match run {
            None => tracing::info_span!("stage", stage = stage.as_str(), branch = %self.branch),
            Some(run) => {
                tracing::info_span!("stage", stage = stage.as_str(), sync = %run.sync, commit = %run.commit, route = tracing::field::Empty, reason = tracing::field::Empty)
            }
        };
        let output = async {
            if let Some(run) = run {
                self.store
                    .mark_stage(run.sync, stage)
                    .await
                    .map_err(|e| PipelineError::new(stage, Some(run.sync), e))?;
            }
            body.await
        }
        .instrument(span)
        .await?;
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.durations.set(stage, duration_ms);
        (self.emit)(SyncEvent::StageFinished { stage, duration_ms });
        Ok(output)
    }
}

/// A task that must not outlive its owner (a run's task, the fetches ahead
/// of an import): aborted when dropped.
pub(crate) struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The output of a finished task this code awaited: its panic goes on in
/// the awaiting task. Only dropping an [`AbortOnDrop`] (or shutting the
/// runtime down) cancels one, and then nobody is awaiting it.
pub(crate) fn joined<T>(result: Result<T, tokio::task::JoinError>) -> T {
    match result {
        Ok(output) => output,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(error) => unreachable!("an awaited task was cancelled: {error}"),
    }
}

/// The summary of a completed run: the store's counts (authoritative for
/// added / modified / deleted / unchanged / total) and the pipeline's own.
fn build_run_summary(
    run: &Prepared,
    request: &SyncRequest,
    record: &SyncRecord,
    counts: &FileCounts,
    totals: &ImportTotals,
    timings: StageDurations,
    source_requests: u64,
) -> RunSummary {
    RunSummary {
        sync_id: run.sync.to_string(),
        commit: run.commit.clone(),
        base_commit: run.base.as_ref().and_then(|b| b.commit.clone()),
        trigger: request.trigger.clone(),
        files: FileCounts {
            renamed: counts.renamed,
            skipped: counts.skipped + totals.skipped_content,
            ..record.files
        },
        memory_entries: totals.memory_entries,
        embeddings_computed: totals.embeddings_computed,
        embeddings_reused: totals.embeddings_reused,
        bytes_fetched: totals.bytes_fetched,
        source_requests,
        timings,
        scan: record.scan.clone(),
        git_transfer: record.git_transfer,
    }
}

fn failed_event(error: &PipelineError) -> SyncEvent {
    SyncEvent::Failed {
        sync_id: error.sync.map(|s| s.to_string()),
        stage: error.stage,
        reason: error.reason().to_string(),
        message: error.to_string(),
    }
}
