//! Stage prepare: resolves the commit to sync (the branch head, asked
//! conditionally, or the pinned commit) and the base sync, and opens the run
//! in the store, unless the commit is already synced and nothing else asks
//! for a run. Does I/O (one source request, two store queries).

use crate::{
    run::Stage,
    source::{HeadCache, HeadLookup, Source},
    store::{NewSync, Store, SyncId, SyncRecord},
};

use super::{
    SyncRequest,
    error::{FailureKind, PipelineError},
};

/// A run opened on a base.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub sync: SyncId,
    pub commit: String,
    pub base: Option<SyncRecord>,
}

/// What prepare decided.
#[derive(Debug, Clone)]
// One value per run, moved once: boxing the record buys nothing.
#[allow(clippy::large_enum_variant)]
pub enum Prepare {
    /// The commit is the one already synced: no run.
    Unchanged { commit: String },
    /// A run is open.
    Run(Prepared),
}

/// The result of prepare and the head to remember for the next poll.
pub struct PrepareResult {
    pub decision: Prepare,
    pub head: Option<HeadCache>,
}

pub async fn prepare(
    source: &dyn Source,
    store: &Store,
    request: &SyncRequest,
) -> Result<PrepareResult, PipelineError> {
    let fail = |e: crate::store::StoreError| PipelineError::new(Stage::Prepare, None, e);
    let base = store
        .latest_completed(request.project)
        .await
        .map_err(fail)?;
    let (commit, head) = match &request.pinned_commit {
        Some(pinned) => (pinned.clone(), None),
        None => {
            let cached = request.head_cache.as_ref();
            let lookup = source
                .fetch_branch_head(&request.branch, cached)
                .await
                .map_err(|e| PipelineError::new(Stage::Prepare, None, e))?;
            match (lookup, cached) {
                (HeadLookup::Changed { sha, etag }, _) => {
                    (sha.clone(), Some(HeadCache { sha, etag }))
                }
                (HeadLookup::Unchanged, Some(cached)) => (cached.sha.clone(), Some(cached.clone())),
                (HeadLookup::Unchanged, None) => {
                    return Err(PipelineError::new(
                        Stage::Prepare,
                        None,
                        FailureKind::SourceProtocol(format!(
                            "{} answered 'unchanged' for branch {} without a cached head",
                            source.describe(),
                            request.branch
                        )),
                    ));
                }
            }
        }
    };
    let synced = base.as_ref().and_then(|b| b.commit.as_deref()) == Some(commit.as_str());
    if synced && !request.force {
        return Ok(PrepareResult {
            decision: Prepare::Unchanged { commit },
            head,
        });
    }
    let sync = store
        .begin_sync(
            request.project,
            NewSync {
                branch: request.branch.clone(),
                commit: Some(commit.clone()),
                base: base.as_ref().map(|b| b.id),
                trigger: request.trigger.clone(),
            },
        )
        .await
        .map_err(fail)?;
    Ok(PrepareResult {
        decision: Prepare::Run(Prepared { sync, commit, base }),
        head,
    })
}
