//! The declarative restore (`spec.restore`): make the named sync's picture
//! current, once, by recording a restore run in the store, then hold it:
//! no polls and no runs, so neither the interval, nor a request, nor a new
//! commit on the branch undoes it until the field is removed (then the next
//! check diffs the branch head against the restored picture, as any run
//! does). The hold is re-checked at the interval, at the cost of two store
//! reads. I/O: the store, an event.

use std::time::Duration;

use kube::runtime::{controller::Action, events::EventType};

use crate::{
    api::{ProjectSync, ProjectSyncStatus, conditions::reason},
    source::short_sha,
    store::{StoreError, SyncId},
};

use super::{
    context::Context, dereference::build_identity, error::Error, reconcile::publish, status,
    sync::history_limit,
};

/// The re-check of a hold when the spec's interval cannot be read.
const FALLBACK_RECHECK: Duration = Duration::from_secs(300);

/// Makes `target` current if it is not yet, and reports the hold.
pub(super) async fn hold(
    ctx: &Context,
    obj: &ProjectSync,
    key: &str,
    target: &str,
    status: &mut ProjectSyncStatus,
) -> Result<Action, Error> {
    let invalid = |problem: &str| Error::RestoreTarget {
        sync: target.to_string(),
        problem: problem.to_string(),
    };
    let sync: SyncId = target
        .parse()
        .map_err(|_| invalid("is not a sync run id (a UUID)"))?;
    let project = ctx.store.ensure_project(&build_identity(obj)).await?;
    let latest = ctx.store.latest_completed(project).await?;
    let held = latest.filter(|run| run.id == sync || run.restored_from == Some(sync));
    let current = match held {
        Some(current) => current,
        None => {
            let run = match ctx.store.get_sync(sync).await {
                Ok(run) => run,
                Err(StoreError::SyncNotFound { .. }) => {
                    return Err(invalid("names no sync run"));
                }
                Err(error) => return Err(error.into()),
            };
            if run.project != project {
                return Err(invalid("is a run of another resource"));
            }
            let restored = ctx.store.restore(sync).await.map_err(|error| match error {
                StoreError::SyncNotCompleted { status, .. } => {
                    invalid(&format!("is {status}, not COMPLETED"))
                }
                StoreError::SyncPruned { .. } => {
                    invalid("was pruned by retention (spec.historyLimit): its content is gone")
                }
                other => Error::Store(other),
            })?;
            tracing::info!(resource = %key, %sync, run = %restored.id, "restored a sync: holding it");
            publish(
                ctx,
                obj,
                EventType::Normal,
                "Restore",
                reason::RESTORE_HELD,
                format!(
                    "restored sync {sync} (commit {}): {} files current, held until spec.restore is removed",
                    short_sha(restored.commit.as_deref().unwrap_or_default(), 7),
                    restored.files.total
                ),
            )
            .await;
            restored
        }
    };
    let history = ctx.store.history(project, history_limit(obj)).await?;
    status::mark_restored(status, &current, target, &history, obj.metadata.generation);
    let recheck = crate::units::parse_duration(&obj.spec.interval).unwrap_or(FALLBACK_RECHECK);
    Ok(Action::requeue(recheck))
}
