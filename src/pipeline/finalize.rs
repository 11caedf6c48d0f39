//! Stage finalize: completes the run (supersede and mark COMPLETED in one
//! store transaction), then prunes history beyond the retention bound.
//! Does I/O against the store.

use crate::store::{Completion, ProjectId, Store, SyncId, SyncRecord};

use super::{Stage, error::PipelineError};

/// Completes `sync` and applies retention (`keep` completed runs).
pub async fn finalize(
    store: &Store,
    project: ProjectId,
    sync: SyncId,
    completion: Completion,
    keep: u32,
) -> Result<SyncRecord, PipelineError> {
    let record = store
        .complete_sync(sync, completion)
        .await
        .map_err(|e| PipelineError::new(Stage::Finalize, Some(sync), e))?;
    // The run is complete and visible; a retention failure must not undo
    // that. It is retried after the next run.
    match store.prune_history(project, keep).await {
        Ok(report) if report.files_deleted + report.memory_entries_deleted > 0 => tracing::info!(
            syncs = report.syncs_pruned,
            files = report.files_deleted,
            memory_entries = report.memory_entries_deleted,
            "pruned history"
        ),
        Ok(_) => {}
        Err(error) => {
            tracing::warn!(%error, %sync, "pruning history failed; retrying after the next run")
        }
    }
    Ok(record)
}
