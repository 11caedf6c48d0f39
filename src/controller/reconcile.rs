//! One reconcile of a ProjectSync: hand over to kube-runtime's finalizer
//! helper, which calls [`apply`] (decide → validate → dereference → run the
//! pipeline, in [`super::sync`] → report; or hold a restored sync, in
//! [`super::restore`]) or [`cleanup`] (the Kubernetes
//! finalizer branch, on delete). Errors go through [`error_policy`], the one
//! place that decides between stalling, waiting and backing off.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use kube::{
    Api, Resource, ResourceExt,
    runtime::{
        controller::Action,
        events::{Event as KubeEvent, EventType},
        finalizer::{Event, finalizer},
    },
};
use tracing::{Instrument, field};

use crate::{
    api::{DeletionPolicy, ProjectSync, ProjectSyncStatus},
    retry::Retry,
    source::git::cache::CacheLease,
    store::ProjectId,
};

use super::{
    context::{CachedSource, Context},
    dereference::{
        build_clients, build_identity, cache_name_for, dereference, describe_repository,
        project_key,
    },
    error::{Error, REQUEUE_BACKOFF},
    git_cache,
    limits::NAMESPACE_WAIT,
    restore,
    status::{self, StatusWriter},
    sync::{self, history_limit},
    triggers::{self, Decision, Trigger},
    validate::{ValidSpec, validate},
};

/// The finalizer that keeps a resource until its data is handled per
/// `spec.deletionPolicy`.
pub const FINALIZER: &str = "projectsync.dev/cleanup";

/// When a reconcile cut off by the fence is asked again.
const FENCED_RETRY: Duration = Duration::from_secs(5);

/// Interval used when a spec is too broken to read one.
const FALLBACK_INTERVAL: Duration = Duration::from_secs(300);

/// Reconciles one resource, when its shard is this replica's. A resource of
/// another replica's shard is left alone until a shard change triggers it
/// here; a reconcile whose shard is lost (or about to lapse) is cancelled
/// before another replica could take the shard, and the run it left open is
/// failed by the next holder.
pub async fn reconcile(obj: Arc<ProjectSync>, ctx: Arc<Context>) -> Result<Action, Error> {
    let Some(ticket) = ctx.shards.admit(&obj) else {
        return Ok(Action::await_change());
    };
    tokio::select! {
        result = reconcile_owned(obj.clone(), ctx.clone()) => result,
        () = ticket.fenced() => {
            tracing::warn!(
                resource = %project_key(&obj),
                shard = ticket.shard(),
                "the resource's shard is no longer held here: stopped its reconcile"
            );
            // Asked again shortly: if the shard is still (or again) ours by
            // then, the reconcile runs; if not, it is dropped at once and
            // the new holder reconciles it when it takes the shard.
            Ok(Action::requeue(FENCED_RETRY))
        }
    }
}

async fn reconcile_owned(obj: Arc<ProjectSync>, ctx: Arc<Context>) -> Result<Action, Error> {
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

/// Decides what follows a failed reconcile: a stall is checked again at the
/// interval the reconcile validated, a wait at its instant, anything else
/// after the requeue backoff.
pub fn error_policy(obj: Arc<ProjectSync>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = project_key(&obj);
    ctx.metrics.record_reconcile_error(error.reason());
    tracing::warn!(resource = %key, reason = error.reason(), %error, "reconcile failed");
    match error.retry() {
        Retry::Stalled => Action::requeue(ctx.interval(&key).unwrap_or(FALLBACK_INTERVAL)),
        Retry::WaitUntil(at) => {
            let wait = (at - Utc::now()).to_std().unwrap_or_default();
            Action::requeue(wait.max(Duration::from_secs(1)))
        }
        Retry::Transient => Action::requeue(REQUEUE_BACKOFF.delay(ctx.record_failure(&key))),
    }
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
    // Set by a completed run; applied once its status is written.
    let mut retention = None;
    let reindex = triggers::new_reindex(&obj).map(str::to_string);

    let result = match triggers::decide(&obj) {
        Decision::Suspended => {
            status::mark_suspended(&mut status, obj.metadata.generation);
            Ok(Action::await_change())
        }
        Decision::Restore(target) => restore::hold(&ctx, &obj, &key, &target, &mut status)
            .await
            .map_err(Failed::from),
        Decision::Check(trigger) => {
            // A namespace at its limit waits without holding a global slot:
            // one tenant's many resources cannot starve the others.
            let namespace = obj.namespace().unwrap_or_default();
            let Some(share) = ctx.limits.try_namespace(&namespace) else {
                tracing::debug!(resource = %key, "namespace at its run limit: waiting");
                return Ok(Action::requeue(NAMESPACE_WAIT));
            };
            let _slot = ctx.limits.acquire(share).await;
            // The shard may be handed back while this waited for a slot:
            // its new holder reconciles the resource.
            if !ctx.shards.may_start(&obj) {
                return Ok(Action::await_change());
            }
            check(
                &obj,
                &ctx,
                &key,
                trigger,
                &mut status,
                &mut writer,
                &mut retention,
            )
            .await
        }
    };
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
            ctx.export_status(&key, &status, obj.spec.suspend);
            let written = writer.write(&status).await;
            after_status(&ctx, &obj, retention).await;
            written.map_err(|source| Error::Kube {
                action: "write status",
                source,
            })?;
            Ok(action)
        }
        Err(Failed { error, project }) => {
            let history = match project {
                Some(project) => ctx.store.history(project, history_limit(&obj)).await.ok(),
                None => None,
            };
            status::mark_failed(
                &mut status,
                error.reason(),
                &error.to_string(),
                error.retry() == Retry::Stalled,
                history.as_deref(),
                obj.metadata.generation,
            );
            ctx.export_status(&key, &status, obj.spec.suspend);
            if let Err(write_error) = writer.write(&status).await {
                tracing::warn!(%write_error, "could not write the failure to status");
            }
            after_status(&ctx, &obj, retention).await;
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

/// The housekeeping of a reconcile, after its status is written so that a
/// run is reported without waiting for it: retention of a completed run's
/// project, and the git caches' size limit (only a git source's reconcile
/// can have grown its cache).
async fn after_status(ctx: &Context, obj: &ProjectSync, retention: Option<sync::Retention>) {
    if let Some(retention) = retention {
        retention.apply(&ctx.store).await;
    }
    if obj.spec.source.git.is_some() {
        git_cache::enforce_limit(ctx).await;
    }
}

/// A failed check, with the project it had reached: the project's history
/// goes into the status with the failure.
struct Failed {
    error: Error,
    project: Option<ProjectId>,
}

impl From<Error> for Failed {
    fn from(error: Error) -> Self {
        Failed {
            error,
            project: None,
        }
    }
}

/// Checks the source and syncs if anything changed.
async fn check(
    obj: &ProjectSync,
    ctx: &Context,
    key: &str,
    trigger: Trigger,
    status: &mut ProjectSyncStatus,
    writer: &mut StatusWriter,
    retention: &mut Option<sync::Retention>,
) -> Result<Action, Failed> {
    let prepared = prepare(ctx, obj, key).await?;
    let project = prepared.project;
    let report = sync::Report {
        status,
        writer,
        retention,
    };
    sync::run(ctx, obj, key, &trigger, &prepared, report)
        .await
        .map_err(|error| Failed {
            error,
            project: Some(project),
        })
}

/// What a run needs, each piece produced by the step before it: the valid
/// spec, the source built from its Secrets, and the project in the store.
pub struct Prepared {
    pub valid: ValidSpec,
    pub cached: CachedSource,
    pub project: ProjectId,
    /// Held for the run: a leased git cache is never evicted under it.
    _cache_lease: Option<CacheLease>,
}

/// Validates the spec (once per reconcile), resolves the source and
/// ensures the project, failing runs of it that were left unfinished.
async fn prepare(ctx: &Context, obj: &ProjectSync, key: &str) -> Result<Prepared, Error> {
    let valid = validate(&obj.spec);
    ctx.set_interval(key, valid.as_ref().ok().map(|v| v.interval));
    let valid = valid?;
    // Before the source is resolved: from here on its cache is not evicted.
    let cache_lease = git_cache::lease_for(ctx, obj);
    let cached = resolve_source(ctx, obj, key, &valid).await?;
    let project = ctx.store.ensure_project(&build_identity(obj)).await?;
    ctx.restore_source_memory(key, project, cached.source.as_ref())
        .await?;
    // Reconciles of one resource never overlap and only the leader runs
    // them, so a live run of this project that this install owns is one
    // whose failure could not be recorded (the database was down when it
    // failed): fail it here rather than leave it IN_PROGRESS until the next
    // operator start. Runs of other owners (a `sync --once`, another
    // install) are theirs to finish.
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
    Ok(Prepared {
        valid,
        cached,
        project,
        _cache_lease: cache_lease,
    })
}

/// The source and embedder for `obj`: reused while the spec and Secrets are
/// unchanged (so the remembered branch head and the git cache carry over);
/// the Secrets are read every time, the clients built only when they changed.
async fn resolve_source(
    ctx: &Context,
    obj: &ProjectSync,
    key: &str,
    valid: &ValidSpec,
) -> Result<CachedSource, Error> {
    let inputs = dereference(&ctx.client, obj).await?;
    // A cache evicted since the source was built is rebuilt with it.
    if let Some(cached) = ctx.cached_source(key, &inputs.fingerprint)
        && cached.cache_dir.as_ref().is_none_or(|dir| dir.exists())
    {
        return Ok(cached);
    }
    let resolved = build_clients(obj, valid.timeout, inputs, &ctx.settings)?;
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
pub(super) async fn publish(
    ctx: &Context,
    obj: &ProjectSync,
    type_: EventType,
    action: &str,
    reason: &str,
    note: String,
) {
    let event = build_event(type_, action, reason, note);
    if let Err(error) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(%error, reason, "could not publish an event");
    }
}

/// [`publish`] without waiting for the API server: for the event that
/// reports a finished run, so the status that says so is written one round
/// trip sooner (an event is a record, never what a reader waits on).
pub(super) fn publish_later(ctx: &Context, obj: &ProjectSync, reason: &'static str, note: String) {
    let recorder = ctx.recorder.clone();
    let reference = obj.object_ref(&());
    let event = build_event(EventType::Normal, "Sync", reason, note);
    tokio::spawn(
        async move {
            if let Err(error) = recorder.publish(&event, &reference).await {
                tracing::warn!(%error, reason, "could not publish an event");
            }
        }
        .in_current_span(),
    );
}

/// An event of this controller; the note is cut to the 1,000 characters an
/// event shows.
fn build_event(type_: EventType, action: &str, reason: &str, note: String) -> KubeEvent {
    KubeEvent {
        type_,
        reason: reason.to_string(),
        note: Some(note.chars().take(1000).collect()),
        action: action.to_string(),
        secondary: None,
    }
}
