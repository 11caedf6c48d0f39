//! `projectsync restore NAMESPACE/NAME SYNC_ID`: makes the files and memory of
//! an earlier completed sync current again, by recording a new run whose
//! content is that sync's. Nothing is destroyed and the chain stays linear.
//! Prints the new run as `history` does.
//!
//! With `--server`, declaratively through the operator's API: it sets
//! `spec.restore`, waits until the operator holds the sync (the resource's
//! phase is `Restored`), and prints the run that made it current; `--lift`
//! removes the hold. Without it, once, against the store: the next sync of
//! a moved branch supersedes the restore.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::{
    api::{Phase, conditions},
    cli::RestoreArgs,
    http::api::model::ProjectSyncView,
    store::{Store, SyncId, SyncRecord},
};

use super::{
    CommandError, find_project,
    history::{RunRow, build_runs_table},
    output::emit,
    remote::{Remote, resource_path},
};

/// Pause between two looks at the resource while waiting for the hold.
const POLL: Duration = Duration::from_millis(500);

/// Restores `sync` for the project `key` (`namespace/name`).
pub async fn restore(store: &Store, key: &str, sync: &str) -> Result<SyncRecord, CommandError> {
    let target: SyncId = sync
        .parse()
        .map_err(|_| CommandError::BadSyncId(sync.to_string()))?;
    let project = find_project(store, key).await?;
    let record = store.get_sync(target).await?;
    if record.project != project.id {
        return Err(CommandError::WrongProject {
            sync: sync.to_string(),
            project: key.to_string(),
        });
    }
    Ok(store.restore(target).await?)
}

pub async fn run(args: &RestoreArgs) -> Result<(), CommandError> {
    if let Some(remote) = Remote::connect(&args.server).await? {
        let row = restore_remote(&remote, args).await?;
        return emit(args.output.format, &row, |row| {
            build_runs_table(std::slice::from_ref(row))
        });
    }
    if args.lift {
        return Err(CommandError::Usage(
            "--lift removes spec.restore through the operator: use it with --server".into(),
        ));
    }
    let sync = args.sync.as_deref().unwrap_or_default();
    let store = Store::connect_with(args.database.url()?, args.database.limits()).await?;
    let record = restore(&store, &args.project, sync).await?;
    let row = RunRow::from(&record);
    emit(args.output.format, &row, |row| {
        build_runs_table(std::slice::from_ref(row))
    })
}

/// Sets (or lifts) `spec.restore` through the API and waits for the
/// operator to act on it; the resource's newest run.
async fn restore_remote(remote: &Remote, args: &RestoreArgs) -> Result<RunRow, CommandError> {
    let path = resource_path(&args.project)?;
    let patched: ProjectSyncView = match (&args.sync, args.lift) {
        (_, true) => remote.delete(&format!("{path}/restore")).await?,
        (Some(sync), false) => {
            let id: SyncId = sync
                .parse()
                .map_err(|_| CommandError::BadSyncId(sync.to_string()))?;
            let body = json!({"syncId": id.to_string()});
            remote.post(&format!("{path}/restore"), Some(&body)).await?
        }
        (None, false) => return Err(CommandError::Usage("name the sync to restore".into())),
    };
    let generation = patched.generation.unwrap_or_default();
    let deadline = Instant::now() + args.wait;
    loop {
        let view: ProjectSyncView = remote.get(&path, &[]).await?;
        let status = view.status.as_ref();
        let observed = status
            .and_then(|s| s.observed_generation)
            .unwrap_or_default()
            >= generation;
        if let Some(stalled) = status
            .and_then(|s| conditions::find_condition(&s.conditions, conditions::STALLED))
            .filter(|_| observed)
        {
            return Err(CommandError::Api {
                status: 409,
                message: format!("{}: {}", stalled.reason, stalled.message),
            });
        }
        let held = status.and_then(|s| s.phase) == Some(Phase::Restored);
        let done = observed && (held != args.lift);
        if done || args.wait.is_zero() || Instant::now() >= deadline {
            if !done && !args.wait.is_zero() {
                tracing::warn!(
                    "the operator has not acted on the restore within {:?}; it will when it reconciles",
                    args.wait
                );
            }
            let latest = view.latest_run.ok_or_else(|| CommandError::Api {
                status: 404,
                message: format!("{} has no runs yet", args.project),
            })?;
            return Ok(RunRow::from(&latest));
        }
        tokio::time::sleep(POLL).await;
    }
}
