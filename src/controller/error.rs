//! Errors of a reconcile and the one function that decides what each means:
//! stall until the user changes something, wait until a known time, or back
//! off and retry. Every error has a short static reason used for the
//! condition reason, the event reason and the metric label.

use std::time::Duration;

use crate::{
    api::conditions::reason,
    embed::EmbedError,
    pipeline::PipelineError,
    retry::{Retry, RetryPolicy},
    source::{CredentialsError, SourceError, proxy::ProxyError},
    store::StoreError,
};

use super::validate::SpecError;

/// A failed reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid spec: {0}")]
    Spec(#[from] SpecError),

    #[error("Secret {namespace}/{name} (referenced by {field}) not found")]
    SecretNotFound {
        namespace: String,
        name: String,
        field: &'static str,
    },

    #[error("Secret {namespace}/{name} (referenced by {field}): {source}")]
    InvalidSecret {
        namespace: String,
        name: String,
        field: &'static str,
        #[source]
        source: CredentialsError,
    },

    #[error("Secret {namespace}/{name} (referenced by spec.proxySecretRef): {source}")]
    InvalidProxySecret {
        namespace: String,
        name: String,
        #[source]
        source: ProxyError,
    },

    #[error("cannot set up the source: {0}")]
    Source(#[source] SourceError),

    #[error("cannot set up embeddings: {0}")]
    Embedding(#[source] EmbedError),

    #[error(transparent)]
    Pipeline(#[from] PipelineError),

    #[error("store: {0}")]
    Store(#[from] StoreError),

    #[error("kubernetes API: {action}: {source}")]
    Kube {
        action: &'static str,
        #[source]
        source: kube::Error,
    },

    #[error("the sync run was cancelled before it finished (operator shutting down)")]
    Cancelled,

    #[error(
        "the run exceeded its deadline of {}s ({set_by}) and was cancelled",
        limit.as_secs_f64()
    )]
    RunDeadlineExceeded {
        limit: Duration,
        set_by: &'static str,
    },

    #[error(
        "spec.embedding.reuseScope is Cluster, but this operator does not allow reusing embeddings across namespaces (--allow-cluster-embedding-reuse): use Project or Namespace"
    )]
    EmbeddingReuseNotAllowed,

    #[error(
        "spec.restore.syncId {sync}: {problem}; pick a COMPLETED run of this resource from its history, or remove spec.restore"
    )]
    RestoreTarget { sync: String, problem: String },

    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

/// The requeue after consecutive failures that back off: 5s doubling to 5
/// minutes, jittered so that resources that failed together do not retry
/// together. The controller never gives up (`attempts` is not read).
pub const REQUEUE_BACKOFF: RetryPolicy = RetryPolicy {
    attempts: u32::MAX,
    base_delay: Duration::from_secs(5),
    max_delay: Duration::from_secs(300),
};

impl Error {
    /// The short reason: condition reason, event reason, metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Spec(_) => reason::INVALID_SPEC,
            Error::SecretNotFound { .. } => reason::SECRET_NOT_FOUND,
            Error::InvalidSecret { source, .. } => source.reason(),
            Error::InvalidProxySecret { source, .. } => source.reason(),
            Error::Source(e) => e.reason(),
            Error::Embedding(e) => e.reason(),
            Error::Pipeline(e) => e.reason(),
            Error::Store(e) => e.reason(),
            Error::Kube { .. } => reason::KUBERNETES_API_FAILED,
            Error::Cancelled => reason::PROGRESSING_WITH_RETRY,
            Error::RunDeadlineExceeded { .. } => reason::RUN_DEADLINE_EXCEEDED,
            Error::EmbeddingReuseNotAllowed => reason::EMBEDDING_REUSE_SCOPE_NOT_ALLOWED,
            Error::RestoreTarget { .. } => reason::RESTORE_TARGET_INVALID,
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.reason(),
                _ => reason::KUBERNETES_API_FAILED,
            },
        }
    }

    /// How to handle this error: stall until the user changes something,
    /// wait until a known time, or back off.
    pub fn retry(&self) -> Retry {
        match self {
            Error::Spec(_)
            | Error::SecretNotFound { .. }
            | Error::InvalidSecret { .. }
            | Error::InvalidProxySecret { .. }
            | Error::EmbeddingReuseNotAllowed
            | Error::RestoreTarget { .. } => Retry::Stalled,
            Error::Source(e) => e.retry(),
            Error::Pipeline(e) => e.retry(),
            Error::Embedding(e) => e.retry(),
            Error::Store(_)
            | Error::Kube { .. }
            | Error::Cancelled
            | Error::RunDeadlineExceeded { .. } => Retry::Transient,
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.retry(),
                _ => Retry::Transient,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_past_its_deadline_names_the_limit_and_backs_off() {
        let error = Error::RunDeadlineExceeded {
            limit: Duration::from_secs(2),
            set_by: "spec.runTimeout",
        };
        assert_eq!(error.reason(), "RunDeadlineExceeded");
        assert_eq!(error.retry(), Retry::Transient);
        assert_eq!(
            error.to_string(),
            "the run exceeded its deadline of 2s (spec.runTimeout) and was cancelled"
        );
        assert_eq!(Error::EmbeddingReuseNotAllowed.retry(), Retry::Stalled);
    }

    #[test]
    fn backoff_grows_exponentially_and_is_capped() {
        let secs = |n| REQUEUE_BACKOFF.delay_at(n, 0.0).as_secs();
        assert_eq!([secs(1), secs(2), secs(3), secs(4)], [5, 10, 20, 40]);
        assert_eq!(secs(20), 300);
        assert!(REQUEUE_BACKOFF.delay_at(1, 1.0).as_secs_f64() <= 5.5);
    }

    #[test]
    fn user_fixable_errors_stall() {
        let error = Error::SecretNotFound {
            namespace: "ns".into(),
            name: "s".into(),
            field: "spec.source.github.secretRef",
        };
        assert_eq!(error.retry(), Retry::Stalled);
        assert_eq!(error.reason(), "SecretNotFound");
        assert_eq!(
            error.to_string(),
            "Secret ns/s (referenced by spec.source.github.secretRef) not found"
        );
    }
}
