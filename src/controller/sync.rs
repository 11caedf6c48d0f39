//! One check of a prepared ProjectSync: build the request from the spec and
//! what earlier runs recorded, run the pipeline within the run's deadline,
//! and fold each of its events into the progress hub, the metrics, the
//! status (throttled) and Kubernetes events. I/O: the pipeline, the store's
//! history, the status writer.

use futures::StreamExt;
use kube::runtime::{controller::Action, events::EventType};

use crate::{
    api::{ObservedInputs, Progress, ProjectSync, ProjectSyncStatus, conditions::reason},
    pipeline::{
        Outcome, Pipeline, PipelineError, ProcessingInputs, Reprocess, Step, SyncEvent, SyncRequest,
    },
    source::{BRANCHES_SEEN, HeadCache, Source, short_sha},
    store::{ProjectId, SyncId},
};

use super::{
    context::Context,
    error::Error,
    limits::RunDeadline,
    reconcile::{Prepared, publish, publish_later},
    status::{self, StatusWriter},
    triggers::{self, Trigger},
    validate::ValidSpec,
};

/// Runs the pipeline for `prepared` and reports its outcome in `status`;
/// the next check is due at the interval.
pub(super) async fn run(
    ctx: &Context,
    obj: &ProjectSync,
    key: &str,
    trigger: &Trigger,
    prepared: &Prepared,
    report: Report<'_>,
) -> Result<Action, Error> {
    let Report {
        status,
        writer,
        retention,
    } = report;
    let Prepared {
        valid,
        cached,
        project,
        ..
    } = prepared;
    let project = *project;
    let generation = obj.metadata.generation;
    let inputs = ObservedInputs {
        include: obj.spec.include.clone(),
        exclude: obj.spec.exclude.clone(),
        max_file_size: i64::try_from(valid.max_file_size).unwrap_or(i64::MAX),
        chunker: ctx.chunker.fingerprint(),
        embedding_model: cached
            .embedder
            .enabled()
            .then(|| cached.embedder.model().to_string()),
    };
    // What this process completed last is newer than a status whose write
    // failed; without it a completed run would be forced again, every file
    // reprocessed, after an API server outage.
    let previous = ctx
        .completed_inputs(key)
        .or_else(|| status.observed_inputs.clone());
    let request = build_request(
        obj,
        project,
        valid,
        trigger,
        previous.as_ref(),
        &inputs,
        ctx.head(key),
    );
    let pipeline = Pipeline {
        source: cached.source.clone(),
        store: ctx.store.clone(),
        chunker: ctx.chunker,
        embedder: cached.embedder.clone(),
        reuse: ctx.limits.build_reuse_policy(obj)?,
        budget: ctx.settings.fetch_budget.clone(),
    };
    let deadline = ctx.limits.build_deadline(valid.run_timeout);

    ctx.metrics.running_syncs.inc();
    let outcome = tokio::time::timeout(
        deadline.limit,
        follow(pipeline, request, obj, ctx, key, status, writer),
    )
    .await;
    ctx.metrics.running_syncs.dec();
    let outcome = match outcome {
        Ok(outcome) => outcome,
        // The pipeline's task is aborted with its stream; the run it began
        // is failed here, naming the limit.
        Err(_elapsed) => Err(fail_past_deadline(ctx, status, deadline).await),
    };
    ctx.export_source_stats(key, cached.source.as_ref(), source_kind(obj));

    match outcome? {
        Outcome::Unchanged { commit, head } => {
            // Status keeps the names of the last run; what the poll saw is
            // not held between polls (memory per resource stays small).
            drop(cached.source.take_branches_seen());
            ctx.remember_source(key, project, head, cached.source.as_ref())
                .await;
            status::mark_unchanged(status, &commit, generation);
            // The run that synced this commit completed, but its status was
            // never written (the status does not show this commit and these
            // inputs): write it now. Polls of an up-to-date status skip the
            // lookup.
            let stale = status.last_synced_commit.as_deref() != Some(commit.as_str())
                || status.observed_inputs.as_ref() != Some(&inputs);
            if stale
                && let Some(record) = ctx.store.latest_completed(project).await?
                && status.last_sync.as_ref().map(|s| s.id.as_str())
                    != Some(record.id.to_string().as_str())
            {
                let history = ctx.store.history(project, history_limit(obj)).await?;
                status::mark_synced(status, &record, &history, inputs, generation);
            }
        }
        Outcome::Completed {
            record,
            summary,
            head,
        } => {
            ctx.remember_source(key, project, head, cached.source.as_ref())
                .await;
            ctx.set_completed_inputs(key, inputs.clone());
            *retention = Some(Retention {
                project,
                sync: record.id,
                keep: history_limit(obj),
            });
            // The branch names come from the run's own head lookup where it
            // listed them (git); otherwise they are listed beside the
            // history query, not after it.
            let (history, branches) = tokio::join!(
                ctx.store.history(project, history_limit(obj)),
                fetch_branch_names(cached.source.as_ref()),
            );
            status::mark_synced(status, &record, &history?, inputs, generation);
            status.branches = branches;
            ctx.export_source_stats(key, cached.source.as_ref(), source_kind(obj));
            let files = summary.files;
            publish_later(
                ctx,
                obj,
                reason::SYNC_SUCCEEDED,
                format!(
                    "synced commit {}: {} added, {} modified, {} deleted, {} unchanged, {} skipped; {} memory entries",
                    short_sha(&summary.commit, 7),
                    files.added,
                    files.modified,
                    files.deleted,
                    files.unchanged,
                    files.skipped,
                    summary.memory_entries
                ),
            );
        }
    }
    Ok(Action::requeue(valid.interval))
}

/// Where a check reports: the status (written as the run goes), and the
/// retention a completed run leaves to apply after the final status write.
pub(super) struct Report<'a> {
    pub status: &'a mut ProjectSyncStatus,
    pub writer: &'a mut StatusWriter,
    pub retention: &'a mut Option<Retention>,
}

/// Retention owed by a completed run.
pub(super) struct Retention {
    project: ProjectId,
    sync: SyncId,
    keep: u32,
}

impl Retention {
    pub async fn apply(self, store: &crate::store::Store) {
        crate::pipeline::finalize::apply_retention(store, self.project, self.sync, self.keep).await;
    }
}

/// Runs the pipeline, feeding each event to the hub, the metrics, the status
/// (throttled) and events; returns the outcome.
async fn follow(
    pipeline: Pipeline,
    request: SyncRequest,
    obj: &ProjectSync,
    ctx: &Context,
    key: &str,
    status: &mut ProjectSyncStatus,
    writer: &mut StatusWriter,
) -> Result<Outcome, Error> {
    let generation = obj.metadata.generation;
    let mut steps = std::pin::pin!(pipeline.run(request));
    let mut commit = String::new();
    while let Some(step) = steps.next().await {
        let event = match step {
            Step::Done(result) => return result.map_err(|e: PipelineError| Error::Pipeline(e)),
            Step::Event(event) => event,
        };
        ctx.hub.publish(key, event.clone());
        ctx.metrics.record_event(&event);
        match &event {
            SyncEvent::Started {
                sync_id,
                commit: started,
                ..
            } => {
                commit = started.clone();
                let progress = Progress {
                    sync_id: sync_id.clone(),
                    stage: "scan".into(),
                    files_done: 0,
                    files_total: 0,
                    started_at: status::now(),
                };
                status::mark_syncing(status, progress, &commit, generation);
                ctx.export_status(key, status, obj.spec.suspend);
                if let Err(error) = writer.write(status).await {
                    tracing::warn!(%error, "could not write progress to status");
                }
                publish(
                    ctx,
                    obj,
                    EventType::Normal,
                    "Sync",
                    reason::SYNC_STARTED,
                    format!("syncing commit {}", short_sha(&commit, 7)),
                )
                .await;
            }
            SyncEvent::StageStarted { stage } | SyncEvent::Progress { stage, .. } => {
                // Before `Started` there is no run to show yet.
                let Some(mut progress) = status.progress.clone() else {
                    continue;
                };
                progress.stage = stage.as_str().to_string();
                if let SyncEvent::Progress {
                    files_done,
                    files_total,
                    ..
                } = &event
                {
                    progress.files_done = i64::try_from(*files_done).unwrap_or(i64::MAX);
                    progress.files_total = i64::try_from(*files_total).unwrap_or(i64::MAX);
                }
                status::mark_syncing(status, progress, &commit, generation);
                if let Err(error) = writer.write_progress(status).await {
                    tracing::warn!(%error, "could not write progress to status");
                }
            }
            _ => {}
        }
    }
    // The pipeline always ends with `Done`; a stream that ends early was cancelled.
    Err(Error::Cancelled)
}

/// Fails the run in progress (if it had begun) of a check cut at its
/// deadline; returns the error that reports it.
async fn fail_past_deadline(
    ctx: &Context,
    status: &ProjectSyncStatus,
    deadline: RunDeadline,
) -> Error {
    let error = Error::RunDeadlineExceeded {
        limit: deadline.limit,
        set_by: deadline.set_by,
    };
    let sync = status
        .progress
        .as_ref()
        .and_then(|p| p.sync_id.parse::<SyncId>().ok());
    if let Some(sync) = sync
        && let Err(store_error) = ctx.store.fail_sync(sync, None, &error.to_string()).await
    {
        // A run that completed in the last instant, or a database that is
        // down: the per-project recovery fails it on the next check.
        tracing::warn!(%sync, %store_error, "could not fail the run past its deadline");
    }
    error
}

fn build_request(
    obj: &ProjectSync,
    project: ProjectId,
    valid: &ValidSpec,
    trigger: &Trigger,
    previous: Option<&ObservedInputs>,
    inputs: &ObservedInputs,
    head: Option<HeadCache>,
) -> SyncRequest {
    // A reindex trusts nothing recorded: every file is fetched and processed.
    let reprocess = match previous {
        _ if trigger.reindex() => Reprocess::Everything,
        Some(p) if p.chunker != inputs.chunker => Reprocess::Everything,
        Some(p) if p.embedding_model != inputs.embedding_model => Reprocess::Embeddings,
        Some(_) => Reprocess::Nothing,
        // Unknown settings (the resource was recreated over retained data):
        // process everything again rather than trust chunks of unknown make.
        None => Reprocess::Everything,
    };
    SyncRequest {
        project,
        branch: obj.spec.branch.clone(),
        pinned_commit: obj.spec.commit.clone(),
        head_cache: head,
        trigger: trigger.describe(),
        force: trigger.reindex() || triggers::inputs_changed(previous, inputs),
        inputs: ProcessingInputs {
            filter: valid.filter.clone(),
            max_file_size: valid.max_file_size,
            previous_max_file_size: previous.and_then(|p| u64::try_from(p.max_file_size).ok()),
            reprocess,
        },
    }
}

/// Branch names for status, at most [`BRANCHES_SEEN`]: those the run's head
/// lookup saw, or else a listing; a failure here never fails a run.
async fn fetch_branch_names(source: &dyn Source) -> Vec<String> {
    let listed = match source.take_branches_seen() {
        Some(seen) => Ok(seen),
        None => source.fetch_branches().await,
    };
    match listed {
        Ok(branches) => branches
            .into_iter()
            .take(BRANCHES_SEEN)
            .map(|b| b.name)
            .collect(),
        Err(error) => {
            tracing::info!(%error, "could not list branches");
            Vec::new()
        }
    }
}

/// Runs kept in history: `spec.historyLimit`, within 1..=100.
pub(super) fn history_limit(obj: &ProjectSync) -> u32 {
    u32::try_from(obj.spec.history_limit)
        .unwrap_or(10)
        .clamp(1, 100)
}

fn source_kind(obj: &ProjectSync) -> &'static str {
    if obj.spec.source.github.is_some() {
        "github"
    } else {
        "git"
    }
}
