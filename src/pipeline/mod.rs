//! The diff-aware sync pipeline: prepare → scan → import → finalize, driven
//! as a `Stream` of steps (the seed's AsyncGenerator). Each step is a
//! progress event for status, metrics and the live stream; the last step is
//! the outcome. No Kubernetes types here: the controller adapts.
//!
//! A run that fails at any stage is marked FAILED in the store with the
//! stage and the reason; its partial rows never become active, and the last
//! completed sync stays current.

pub mod error;
pub mod event;
pub mod finalize;
pub mod import;
pub mod prepare;
pub mod scan;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures::Stream;
use tokio::sync::mpsc;
use tracing::Instrument;

pub use error::{FailureKind, PipelineError};
pub use event::{ChangeCounts, RunSummary, Stage, StageTimings, SyncEvent};

use crate::{
    chunk::ChunkerConfig,
    controller::validate::PathFilter,
    embed::Embedder,
    source::{HeadCache, Source},
    store::{Completion, ProjectId, RunMetrics, StageDurations, Store, SyncRecord, SyncStage},
};

use self::{
    import::{ImportContext, ImportTotals, import, worth_an_archive},
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
    /// Completed runs whose rows retention keeps.
    pub history_limit: u32,
}

/// Everything a run talks to.
#[derive(Clone)]
pub struct Pipeline {
    pub source: Arc<dyn Source>,
    pub store: Store,
    pub chunker: ChunkerConfig,
    pub embedder: Arc<dyn Embedder>,
}

/// How a run ended.
#[derive(Debug, Clone)]
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

    /// The four stages, reporting through `events`.
    async fn drive(
        &self,
        request: &SyncRequest,
        events: &mpsc::UnboundedSender<SyncEvent>,
    ) -> Result<Outcome, PipelineError> {
        let emit = |event: SyncEvent| {
            // The receiver lives as long as the stream that polls this future.
            let _ = events.send(event);
        };
        let mut timings = StageTimings::default();

        emit(SyncEvent::StageStarted {
            stage: Stage::Prepare,
        });
        let started = Instant::now();
        let span = tracing::info_span!("stage", stage = "prepare", branch = %request.branch);
        let prepared = prepare(self.source.as_ref(), &self.store, request)
            .instrument(span)
            .await;
        let prepared = match prepared {
            Ok(prepared) => prepared,
            Err(error) => {
                emit(failed_event(&error));
                return Err(error);
            }
        };
        let head = prepared.head;
        let run = match prepared.decision {
            Prepare::Unchanged { commit } => {
                emit(SyncEvent::Unchanged {
                    commit: commit.clone(),
                });
                return Ok(Outcome::Unchanged { commit, head });
            }
            Prepare::Run(run) => run,
        };
        timings.set(Stage::Prepare, ms(started.elapsed()));
        emit(SyncEvent::StageFinished {
            stage: Stage::Prepare,
            duration_ms: timings.prepare_ms,
        });
        emit(SyncEvent::Started {
            sync_id: run.sync.to_string(),
            commit: run.commit.clone(),
            base_commit: run.base.as_ref().and_then(|b| b.commit.clone()),
            trigger: request.trigger.clone(),
        });

        let stats_before = self.source.stats();
        match self.run_stages(request, &run, &mut timings, &emit).await {
            Ok(finished) => {
                let requests = self.source.stats().since(&stats_before).total();
                let summary = build_run_summary(&run, request, &finished, timings, requests);
                emit(SyncEvent::Completed(summary.clone()));
                Ok(Outcome::Completed {
                    record: finished.record,
                    summary,
                    head,
                })
            }
            Err(error) => {
                self.record_failure(&error).await;
                emit(failed_event(&error));
                Err(error)
            }
        }
    }

    /// Scan, import and finalize of an open run.
    async fn run_stages(
        &self,
        request: &SyncRequest,
        run: &Prepared,
        timings: &mut StageTimings,
        emit: &(dyn Fn(SyncEvent) + Sync),
    ) -> Result<Finished, PipelineError> {
        let sync = run.sync;
        let store_error = |stage: Stage| {
            move |e: crate::store::StoreError| PipelineError::new(stage, Some(sync), e)
        };

        // scan
        let plan = {
            let stage = Stage::Scan;
            emit(SyncEvent::StageStarted { stage });
            let started = Instant::now();
            let span =
                tracing::info_span!("stage", stage = stage.as_str(), %sync, commit = %run.commit);
            let plan = async {
                self.store
                    .mark_stage(sync, SyncStage::Scan)
                    .await
                    .map_err(store_error(stage))?;
                let previous = match run.base {
                    Some(_) => self
                        .store
                        .active_files(request.project)
                        .await
                        .map_err(store_error(stage))?,
                    None => Vec::new(),
                };
                scan(
                    self.source.as_ref(),
                    &run.commit,
                    &previous,
                    &request.inputs,
                )
                .await
                .map_err(|e| PipelineError::new(stage, Some(sync), e))
            }
            .instrument(span)
            .await?;
            timings.set(stage, ms(started.elapsed()));
            emit(SyncEvent::StageFinished {
                stage,
                duration_ms: timings.scan_ms,
            });
            plan
        };
        if !plan.rejected.is_empty() {
            tracing::warn!(%sync, count = plan.rejected.len(), first = %plan.rejected[0], "tree entries refused (unsafe paths or unknown modes)");
        }

        // import
        let totals = {
            let stage = Stage::Import;
            emit(SyncEvent::StageStarted { stage });
            let started = Instant::now();
            let span =
                tracing::info_span!("stage", stage = stage.as_str(), %sync, commit = %run.commit);
            let files_total = plan.files.len() as u64;
            emit(SyncEvent::Progress {
                stage,
                files_done: 0,
                files_total,
            });
            let ctx = ImportContext {
                source: &self.source,
                store: &self.store,
                sync,
                chunker: &self.chunker,
                embedder: &self.embedder,
                max_file_size: request.inputs.max_file_size,
            };
            let totals = async {
                self.store
                    .mark_stage(sync, SyncStage::Import)
                    .await
                    .map_err(store_error(stage))?;
                let to_process = plan
                    .files
                    .iter()
                    .filter(|f| f.action == scan::Action::Process)
                    .count();
                let use_archive = worth_an_archive(
                    to_process,
                    usize::try_from(plan.counts.total).unwrap_or(usize::MAX),
                );
                import(
                    &ctx,
                    &plan.files,
                    &run.commit,
                    use_archive,
                    |totals: &ImportTotals| {
                        emit(SyncEvent::Progress {
                            stage,
                            files_done: totals.files_done,
                            files_total,
                        });
                    },
                )
                .await
            }
            .instrument(span)
            .await?;
            timings.set(stage, ms(started.elapsed()));
            emit(SyncEvent::StageFinished {
                stage,
                duration_ms: timings.import_ms,
            });
            totals
        };

        // finalize
        let stage = Stage::Finalize;
        emit(SyncEvent::StageStarted { stage });
        let started = Instant::now();
        let span =
            tracing::info_span!("stage", stage = stage.as_str(), %sync, commit = %run.commit);
        let completion = Completion {
            deleted_paths: plan.deleted_paths,
            metrics: RunMetrics {
                files_skipped: u32::try_from(plan.counts.skipped + totals.skipped_content)
                    .unwrap_or(u32::MAX),
                bytes_fetched: totals.bytes_fetched,
                api_calls: u32::try_from(self.source.stats().total()).unwrap_or(u32::MAX),
                durations: StageDurations {
                    prepare: Some(Duration::from_millis(timings.prepare_ms)),
                    scan: Some(Duration::from_millis(timings.scan_ms)),
                    import: Some(Duration::from_millis(timings.import_ms)),
                    finalize: None,
                },
            },
        };
        let record = async {
            self.store
                .mark_stage(sync, SyncStage::Finalize)
                .await
                .map_err(store_error(stage))?;
            finalize::finalize(
                &self.store,
                request.project,
                sync,
                completion,
                request.history_limit,
            )
            .await
        }
        .instrument(span)
        .await?;
        timings.set(stage, ms(started.elapsed()));
        emit(SyncEvent::StageFinished {
            stage,
            duration_ms: timings.finalize_ms,
        });
        Ok(Finished {
            record,
            counts: plan.counts,
            totals,
        })
    }

    /// Marks the failed run FAILED with its stage (best effort: if the store
    /// is unreachable, the run is failed as abandoned on the next start).
    async fn record_failure(&self, error: &PipelineError) {
        let Some(sync) = error.sync else { return };
        if let Err(store_error) = self
            .store
            .fail_sync(sync, Some(to_store_stage(error.stage)), &error.to_string())
            .await
        {
            tracing::error!(%sync, error = %store_error, "could not mark the failed run FAILED");
        }
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

/// What the stages after prepare produced.
struct Finished {
    record: SyncRecord,
    counts: ChangeCounts,
    totals: ImportTotals,
}

/// The summary of a completed run: the store's counts (authoritative for
/// added / modified / deleted / unchanged / total) and the pipeline's own.
fn build_run_summary(
    run: &Prepared,
    request: &SyncRequest,
    finished: &Finished,
    timings: StageTimings,
    requests: u64,
) -> RunSummary {
    let files = &finished.record.files;
    RunSummary {
        sync_id: run.sync.to_string(),
        commit: run.commit.clone(),
        base_commit: run.base.as_ref().and_then(|b| b.commit.clone()),
        trigger: request.trigger.clone(),
        files: ChangeCounts {
            added: files.added.into(),
            modified: files.modified.into(),
            deleted: files.deleted.into(),
            unchanged: files.unchanged.into(),
            renamed: finished.counts.renamed,
            skipped: finished.counts.skipped + finished.totals.skipped_content,
            total: files.total.into(),
        },
        memory_entries: finished.totals.memory_entries,
        embeddings_computed: finished.totals.embeddings_computed,
        embeddings_reused: finished.totals.embeddings_reused,
        bytes_fetched: finished.totals.bytes_fetched,
        source_requests: requests,
        timings,
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

fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn to_store_stage(stage: Stage) -> SyncStage {
    match stage {
        Stage::Prepare => SyncStage::Prepare,
        Stage::Scan => SyncStage::Scan,
        Stage::Import => SyncStage::Import,
        Stage::Finalize => SyncStage::Finalize,
    }
}
