//! `projectsync restore NAMESPACE/NAME SYNC_ID`: makes the files and memory of
//! an earlier completed sync current again, by recording a new run whose
//! content is that sync's. Nothing is destroyed and the chain stays linear.
//! I/O against the store.

use crate::store::{Store, SyncId, SyncRecord};

use super::{CommandError, parse_project_key};

/// Restores `sync` for the project `key` (`namespace/name`).
pub async fn restore(store: &Store, key: &str, sync: &str) -> Result<SyncRecord, CommandError> {
    let key = parse_project_key(key)?;
    let target: SyncId = sync.parse().map_err(|_| CommandError::BadSyncId(sync.to_string()))?;
    let project = store.find_project(key).await?.ok_or_else(|| CommandError::UnknownProject(key.to_string()))?;
    let record = store.get_sync(target).await?;
    if record.project != project.id {
        return Err(CommandError::WrongProject { sync: sync.to_string(), project: key.to_string() });
    }
    Ok(store.restore(target).await?)
}
