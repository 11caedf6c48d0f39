//! One reconcile of a ProjectSync: hand over to kube-runtime's finalizer
//! helper, which calls [`apply`] (decide → validate → dereference → run the
//! pipeline → report) or [`cleanup`] (the Kubernetes finalizer branch, on
//! delete). Errors go through [`error_policy`], the one place that decides
//! between stalling, waiting and backing off.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use futures::StreamExt;
use kube::{
    Api, Resource, ResourceExt,
    runtime::{
        controller::Action,
        events::{Event as KubeEvent, EventType},
        finalizer::{Event, finalizer},
    },
};
use tracing::{Instrument, field};

use crate::source::short_sha;
use crate::{
    api::{DeletionPolicy, ObservedInputs, Progress, ProjectSync, ProjectSyncStatus},
    pipeline::{
        Outcome, Pipeline, PipelineError, ProcessingInputs, Reprocess, Step, SyncEvent, SyncRequest,
    },
    store::ProjectId,
};

use super::{
    context::{CachedSource, Context},
    dereference::{
        build_clients, build_identity, cache_name_for, dereference, describe_repository,
        project_key,
    },
    error::{Error, Policy, backoff_delay},
    git_cache,
    status::{self, StatusWriter},
    triggers::{self, Decision},
    validate::{ValidSpec, validate},
};

/// The finalizer that keeps a resource until its data is handled per
/// `spec.deletionPolicy`.
pub const FINALIZER: &str = "projectsync.dev/cleanup";

/// Interval used when a spec is too broken to read one.
const FALLBACK_INTERVAL: Duration = Duration::from_secs(300);

/// Reconciles one resource.
pub async fn reconcile(obj: Arc<ProjectSync>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = tracing::info_span!(
        "reconcile",
        namespace = %obj.namespace().unwrap_or_default(),
        name = %obj.name_any(),
        generation = obj.metadata.generation.unwrap_or_default(),
        result = field::Empty,
    );
    ctx.metrics.reconciliations.inc();
    let api: Api<ProjectSync> =
        Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let result = finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            Event::Apply(obj) => apply(obj, ctx.clone()).await,
            Event::Cleanup(obj) => cleanup(obj, ctx.clone()).await,
        }
    })
    .instrument(span.clone())
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    span.record("result", if result.is_ok() { "ok" } else { "error" });
    result
}

/// Decides what follows a failed reconcile.
pub fn error_policy(obj: Arc<ProjectSync>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = project_key(&obj);
    ctx.metrics
        .reconcile_errors
        .with_label_values(&[error.reason()])
        .inc();
    tracing::warn!(resource = %key, reason = error.reason(), %error, "reconcile failed");
    match error.policy() {
        Policy::Stall => Action::requeue(
            validate(&obj.spec)
                .map(|v| v.interval)
                .unwrap_or(FALLBACK_INTERVAL),
        ),
        Policy::WaitUntil(at) => {
            let wait = (at - Utc::now()).to_std().unwrap_or_default();
            Action::requeue(wait.max(Duration::from_secs(1)))
        }
        Policy::Backoff => Action::requeue(backoff_delay(ctx.record_failure(&key), jitter())),
    }
}

fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 1000) / 1000.0
}

/// The apply branch: sync if needed, report the result in status and events.
async fn apply(obj: Arc<ProjectSync>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = project_key(&obj);
    let api: Api<ProjectSync> =
        Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let mut writer = StatusWriter::new(api, &obj.name_any());
    let mut status = obj.status.clone().unwrap_or_default();
    status.repository = Some(describe_repository(&obj.spec.source));
    let request = triggers::new_request(&obj).map(str::to_string);
    let reindex = triggers::new_reindex(&obj).map(str::to_string);

    let mut project = None;
    let result = apply_inner(&obj, &ctx, &key, &mut status, &mut writer, &mut project).await;
    // Only a git source's reconcile can have grown the cache.
    if obj.spec.source.git.is_some() {
        git_cache::enforce_limit(&ctx).await;
    }
    // Handled once, whether the run succeeded or not (as a request is): a
    // failed reindex is asked for again with a new value.
    if request.is_some() {
        status.last_handled_requested_at = request;
    }
    if reindex.is_some() {
        status.last_handled_reindex_at = reindex;
    }
    match result {
        Ok(action) => {
            ctx.record_success(&key);
            writer.write(&status).await.map_err(|source| Error::Kube {
                action: "write status",
                source,
            })?;
            Ok(action)
        }
        Err(error) => {
            let history = match project {
                Some(project) => ctx.store.history(project, history_limit(&obj)).await.ok(),
                None => None,
            };
            status::mark_failed(
                &mut status,
                error.reason(),
                &error.to_string(),
                error.policy() == Policy::Stall,
                history.as_deref(),
                obj.metadata.generation,
            );
            if let Err(write_error) = writer.write(&status).await {
                tracing::warn!(%write_error, "could not write the failure to status");
            }
            publish(
                &ctx,
                &obj,
                EventType::Warning,
                "SyncFailed",
                error.reason(),
                error.to_string(),
            )
            .await;
            Err(error)
        }
    }
}

async fn apply_inner(
    obj: &ProjectSync,
    ctx: &Context,
    key: &str,
    status: &mut ProjectSyncStatus,
    writer: &mut StatusWriter,
    project_out: &mut Option<ProjectId>,
) -> Result<Action, Error> {
    let generation = obj.metadata.generation;
    let trigger = match triggers::decide(obj) {
        Decision::Suspended => {
            status::mark_suspended(status, generation);
            return Ok(Action::await_change());
        }
        Decision::Check(trigger) => trigger,
    };
    let valid = validate(&obj.spec)?;
    // Before the source is resolved: from here on its cache is not evicted.
    let _cache_lease = git_cache::lease_for(ctx, obj);
    let cached = resolve_source(ctx, obj, key).await?;
    let project = ctx.store.ensure_project(&build_identity(obj)).await?;
    *project_out = Some(project);
    // Reconciles of one resource never overlap and only the leader runs
    // them, so a live run of this project now is one whose failure could not
    // be recorded (the database was down when it failed): fail it here
    // rather than leave it IN_PROGRESS until the next operator start.
    let stale = ctx
        .store
        .fail_abandoned(
            Some(project),
            Utc::now(),
            "the run stopped without its failure being recorded (the database was unreachable)",
        )
        .await?;
    if !stale.is_empty() {
        tracing::warn!(
            count = stale.len(),
            "marked unfinished runs of this project FAILED"
        );
    }

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
        &valid,
        &trigger,
        previous.as_ref(),
        &inputs,
        ctx.head(key),
    );
    let pipeline = Pipeline {
        source: cached.source.clone(),
        store: ctx.store.clone(),
        chunker: ctx.chunker,
        embedder: cached.embedder.clone(),
    };

    ctx.metrics.running_syncs.inc();
    let outcome = follow(pipeline, request, obj, ctx, key, status, writer).await;
    ctx.metrics.running_syncs.dec();
    ctx.export_source_stats(key, cached.source.as_ref(), source_kind(obj));

    match outcome? {
        Outcome::Unchanged { commit, head } => {
            ctx.set_head(key, head);
            ctx.metrics.no_change_polls.inc();
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
            ctx.set_head(key, head);
            ctx.set_completed_inputs(key, inputs.clone());
            let history = ctx.store.history(project, history_limit(obj)).await?;
            status::mark_synced(status, &record, &history, inputs, generation);
            status.branches = fetch_branch_names(cached.source.as_ref()).await;
            ctx.export_source_stats(key, cached.source.as_ref(), source_kind(obj));
            let files = summary.files;
            publish(
                ctx,
                obj,
                EventType::Normal,
                "Sync",
                "SyncSucceeded",
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
            )
            .await;
        }
    }
    Ok(Action::requeue(valid.interval))
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
                if let Err(error) = writer.write(status).await {
                    tracing::warn!(%error, "could not write progress to status");
                }
                publish(
                    ctx,
                    obj,
                    EventType::Normal,
                    "Sync",
                    "SyncStarted",
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
            SyncEvent::StageFinished { stage, duration_ms } => {
                ctx.metrics
                    .stage_duration
                    .with_label_values(&[stage.as_str()])
                    .observe(*duration_ms as f64 / 1000.0);
            }
            SyncEvent::Completed(summary) => {
                let m = &ctx.metrics;
                m.runs.with_label_values(&["completed"]).inc();
                let total_ms = summary.timings.prepare_ms
                    + summary.timings.scan_ms
                    + summary.timings.import_ms
                    + summary.timings.finalize_ms;
                m.run_duration
                    .with_label_values(&["completed"])
                    .observe(total_ms as f64 / 1000.0);
                for (change, n) in [
                    ("added", summary.files.added),
                    ("modified", summary.files.modified),
                    ("deleted", summary.files.deleted),
                    ("unchanged", summary.files.unchanged),
                    ("renamed", summary.files.renamed),
                    ("skipped", summary.files.skipped),
                ] {
                    m.files.with_label_values(&[change]).inc_by(n);
                }
                m.memory_entries.inc_by(summary.memory_entries);
                m.embeddings
                    .with_label_values(&["computed"])
                    .inc_by(summary.embeddings_computed);
                m.embeddings
                    .with_label_values(&["reused"])
                    .inc_by(summary.embeddings_reused);
                m.bytes_fetched.inc_by(summary.bytes_fetched);
            }
            SyncEvent::Failed {
                sync_id: Some(_), ..
            } => ctx.metrics.runs.with_label_values(&["failed"]).inc(),
            _ => {}
        }
    }
    // The pipeline always ends with `Done`; a stream that ends early was cancelled.
    Err(Error::Cancelled)
}

fn build_request(
    obj: &ProjectSync,
    project: ProjectId,
    valid: &ValidSpec,
    trigger: &triggers::Trigger,
    previous: Option<&ObservedInputs>,
    inputs: &ObservedInputs,
    head: Option<crate::source::HeadCache>,
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
        history_limit: history_limit(obj),
    }
}

/// The source and embedder for `obj`: reused while the spec and Secrets are
/// unchanged (so the remembered branch head and the git cache carry over);
/// the Secrets are read every time, the clients built only when they changed.
async fn resolve_source(
    ctx: &Context,
    obj: &ProjectSync,
    key: &str,
) -> Result<CachedSource, Error> {
    let inputs = dereference(&ctx.client, obj).await?;
    // A cache evicted since the source was built is rebuilt with it.
    if let Some(cached) = ctx.cached_source(key, &inputs.fingerprint)
        && cached.cache_dir.as_ref().is_none_or(|dir| dir.exists())
    {
        return Ok(cached);
    }
    let resolved = build_clients(obj, inputs, &ctx.settings)?;
    let cache_dir = obj
        .spec
        .source
        .git
        .as_ref()
        .map(|_| ctx.settings.cache_dir.join(cache_name_for(obj)));
    let cached = CachedSource {
        fingerprint: resolved.fingerprint,
        source: resolved.source,
        embedder: resolved.embedder,
        cache_dir,
    };
    ctx.cache_source(key, cached.clone());
    Ok(cached)
}

/// Branch names for status, at most 100; a failure here never fails a run.
async fn fetch_branch_names(source: &dyn crate::source::Source) -> Vec<String> {
    match source.fetch_branches().await {
        Ok(branches) => branches.into_iter().take(100).map(|b| b.name).collect(),
        Err(error) => {
            tracing::info!(%error, "could not list branches");
            Vec::new()
        }
    }
}

/// The cleanup branch: handle the project's rows per `spec.deletionPolicy`,
/// then let the finalizer go.
async fn cleanup(obj: Arc<ProjectSync>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = project_key(&obj);
    if obj.spec.deletion_policy == DeletionPolicy::Delete
        && let Some(project) = ctx.store.find_project(&key).await?
    {
        let report = ctx.store.delete_project(project.id).await?;
        tracing::info!(
            resource = %key,
            syncs = report.syncs_deleted,
            files = report.files_deleted,
            memory_entries = report.memory_entries_deleted,
            "deleted the project's data (deletionPolicy: Delete)"
        );
    }
    ctx.forget(&key);
    git_cache::remove_for(&ctx, &obj).await;
    Ok(Action::await_change())
}

/// Publishes an event. Failures use the error's specific reason (what
/// `kubectl describe` shows) with action `SyncFailed`, so that different
/// failures are different events rather than one series under one reason.
async fn publish(
    ctx: &Context,
    obj: &ProjectSync,
    type_: EventType,
    action: &str,
    reason: &str,
    note: String,
) {
    let event = KubeEvent {
        type_,
        reason: reason.to_string(),
        note: Some(note.chars().take(1000).collect()),
        action: action.to_string(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(%error, reason, "could not publish an event");
    }
}

fn history_limit(obj: &ProjectSync) -> u32 {
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
