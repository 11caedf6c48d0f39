//! Why a run failed, with the stage it failed in and what to do next. Wraps
//! the source, store and embedding errors; the controller's error policy
//! reads [`PipelineError::retry`] and [`PipelineError::reason`].

use crate::{
    api::conditions::reason,
    embed::EmbedError,
    run::Stage,
    source::{Retry, SourceError},
    store::{StoreError, SyncId},
};

/// What went wrong underneath.
#[derive(Debug, thiserror::Error)]
pub enum FailureKind {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Embedding(#[from] EmbedError),
    #[error("{0}")]
    SourceProtocol(String),
}

/// A failed run (or a check that could not be made).
#[derive(Debug, thiserror::Error)]
#[error("{} stage of sync {}: {kind}", stage.as_str(), sync.map(|s| s.to_string()).unwrap_or_else(|| "(not started)".into()))]
pub struct PipelineError {
    pub stage: Stage,
    /// The run, when one was opened.
    pub sync: Option<SyncId>,
    #[source]
    pub kind: FailureKind,
}

impl PipelineError {
    pub fn new(stage: Stage, sync: Option<SyncId>, kind: impl Into<FailureKind>) -> Self {
        PipelineError {
            stage,
            sync,
            kind: kind.into(),
        }
    }

    /// Short CamelCase category for condition reasons, events and metrics.
    pub fn reason(&self) -> &'static str {
        match &self.kind {
            FailureKind::Source(e) => e.reason(),
            FailureKind::Store(e) => e.reason(),
            FailureKind::Embedding(e) => e.reason(),
            FailureKind::SourceProtocol(_) => reason::INVALID_PROVIDER_RESPONSE,
        }
    }

    /// Stall, wait until a known time, or back off.
    pub fn retry(&self) -> Retry {
        match &self.kind {
            FailureKind::Source(e) => e.retry(),
            // Another run won the race: the next attempt starts from its result.
            FailureKind::Store(StoreError::ConcurrentSync { .. }) => Retry::Transient,
            FailureKind::Store(e) if e.is_transient() => Retry::Transient,
            // Anything else from the store is a bug or corruption: retrying
            // with backoff surfaces it without a hot loop.
            FailureKind::Store(_) => Retry::Transient,
            FailureKind::Embedding(e) => e.retry(),
            FailureKind::SourceProtocol(_) => Retry::Transient,
        }
    }
}
