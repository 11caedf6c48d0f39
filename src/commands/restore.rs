//! `projectsync restore NAMESPACE/NAME SYNC_ID`: makes the files and memory of
//! an earlier completed sync current again, by recording a new run whose
//! content is that sync's. Nothing is destroyed and the chain stays linear.
//! Prints the new run as `history` does. I/O against the store.

use crate::{
    cli::RestoreArgs,
    store::{Store, SyncId, SyncRecord},
};

use super::{
    CommandError, find_project,
    history::{RunRow, build_runs_table},
    output::emit,
};

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
    let store = Store::connect_with(&args.database.database_url, args.database.limits()).await?;
    let record = restore(&store, &args.project, &args.sync).await?;
    let row = RunRow::from(&record);
    emit(args.output.format, &row, |row| {
        build_runs_table(std::slice::from_ref(row))
    })
}
