//! Condition types and reasons, and the one pure function that updates a
//! condition list the way the Kubernetes API conventions ask (the transition
//! time moves only when the status flips). No I/O.
//!
//! Following Flux and kstatus: `Ready` always exists once the controller has
//! looked at the object; `Reconciling` and `Stalled` exist only while true.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The object is in its desired state: the last completed sync matches the spec.
pub const READY: &str = "Ready";
/// The controller is working towards the desired state (a run is in progress or retrying).
pub const RECONCILING: &str = "Reconciling";
/// The controller cannot make progress until the user changes something.
pub const STALLED: &str = "Stalled";

/// The catalogue of reasons: every condition reason, event reason and
/// `reason` metric label the operator sets is one of these constants, and
/// each error type's `reason()` returns them. docs/troubleshooting.md
/// explains every entry of [`reason::ALL`] (a test checks it). The values
/// are part of the interface: users match on them in alerts and scripts.
pub mod reason {
    /// Declares the constants and [`ALL`], so that no reason can be left
    /// out of the list the documentation is checked against.
    macro_rules! catalogue {
        ($($(#[$doc:meta])* $name:ident = $value:literal;)*) => {
            $($(#[$doc])* pub const $name: &str = $value;)*
            /// Every reason above, in catalogue order.
            pub const ALL: &[&str] = &[$($name),*];
        };
    }

    catalogue! {
        // Normal operation.
        /// The last run completed (or the branch is unchanged since it).
        SUCCEEDED = "Succeeded";
        /// A run is in progress.
        PROGRESSING = "Progressing";
        /// A run failed and will be retried with backoff.
        PROGRESSING_WITH_RETRY = "ProgressingWithRetry";
        /// Event: a run started.
        SYNC_STARTED = "SyncStarted";
        /// Event: a run completed.
        SYNC_SUCCEEDED = "SyncSucceeded";

        // Actions through the operator's HTTP API (events naming the user).
        /// Event: a user asked for a sync now (the request annotation).
        SYNC_REQUESTED = "SyncRequested";
        /// Event: a user suspended the resource (`spec.suspend: true`).
        SUSPEND_REQUESTED = "SuspendRequested";
        /// Event: a user resumed the resource (`spec.suspend: false`).
        RESUME_REQUESTED = "ResumeRequested";
        /// Event: a user set `spec.restore` to hold the mirror at a sync.
        RESTORE_REQUESTED = "RestoreRequested";
        /// Event: a user removed `spec.restore`; the branch is followed again.
        RESTORE_LIFTED = "RestoreLifted";

        // Declarative restore (`spec.restore`).
        /// Ready reason and event: the mirror holds the sync `spec.restore`
        /// names; no polls or runs until the field is removed.
        RESTORE_HELD = "RestoreHeld";
        /// `spec.restore` names a sync that is not a completed, unpruned run
        /// of this resource.
        RESTORE_TARGET_INVALID = "RestoreTargetInvalid";

        // The spec and its Secrets.
        /// The spec cannot be acted on as written.
        INVALID_SPEC = "InvalidSpec";
        /// A referenced Secret does not exist.
        SECRET_NOT_FOUND = "SecretNotFound";
        /// The Secret lacks the key a `secretRef` names.
        SECRET_KEY_MISSING = "SecretKeyMissing";
        /// The key is present but empty.
        SECRET_KEY_EMPTY = "SecretKeyEmpty";
        /// The value is not text.
        SECRET_KEY_NOT_UTF8 = "SecretKeyNotUtf8";
        /// Half a pair of keys (username without password, and the like).
        SECRET_INCOMPLETE = "SecretIncomplete";
        /// None of the keys a git Secret can hold.
        SECRET_HAS_NO_CREDENTIALS = "SecretHasNoCredentials";
        /// `githubAppID` or `githubAppInstallationID` is not a positive number.
        GITHUB_APP_ID_INVALID = "GithubAppIdInvalid";
        /// `githubAppPrivateKey` is not a PEM RSA private key.
        GITHUB_APP_PRIVATE_KEY_INVALID = "GithubAppPrivateKeyInvalid";

        // Proxies.
        /// The proxy Secret cannot be used.
        PROXY_SECRET_INVALID = "ProxySecretInvalid";
        /// The proxy answered 407 (GitHub and git sources).
        PROXY_AUTHENTICATION_FAILED = "ProxyAuthenticationFailed";
        /// The proxy refused to open a tunnel.
        PROXY_TUNNEL_REFUSED = "ProxyTunnelRefused";
        /// No connection to the proxy itself.
        PROXY_UNREACHABLE = "ProxyUnreachable";

        // The egress policy.
        /// A source, proxy or embedding endpoint resolves to an address the
        /// operator's egress policy refuses (loopback, link-local, private).
        EGRESS_DENIED = "EgressDenied";

        // Repository hosts: GitHub, and git where the meaning is the same.
        /// GitHub rejected the token.
        BAD_CREDENTIALS = "BadCredentials";
        /// GitHub refused the App's JWT.
        GITHUB_APP_JWT_REJECTED = "GithubAppJwtRejected";
        /// The App has no such installation.
        GITHUB_APP_INSTALLATION_NOT_FOUND = "GithubAppInstallationNotFound";
        /// The App installation is suspended.
        GITHUB_APP_INSTALLATION_SUSPENDED = "GithubAppInstallationSuspended";
        /// Missing, or invisible to the credentials (GitHub and git).
        REPOSITORY_NOT_FOUND = "RepositoryNotFound";
        /// The token lacks a permission.
        ACCESS_DENIED = "AccessDenied";
        /// The organization requires SAML single sign-on for the token.
        SAML_SSO_REQUIRED = "SamlSsoRequired";
        /// `spec.branch` does not exist (GitHub and git).
        BRANCH_NOT_FOUND = "BranchNotFound";
        /// `spec.commit` does not exist (GitHub and git).
        COMMIT_NOT_FOUND = "CommitNotFound";
        /// The repository has no commits (GitHub and git).
        EMPTY_REPOSITORY = "EmptyRepository";
        /// The hourly API quota is used up.
        RATE_LIMITED = "RateLimited";
        /// GitHub's secondary (abuse) limit.
        SECONDARY_RATE_LIMITED = "SecondaryRateLimited";
        /// 5xx after retries.
        PROVIDER_UNAVAILABLE = "ProviderUnavailable";
        /// Requests timed out after retries.
        PROVIDER_TIMEOUT = "ProviderTimeout";
        /// No connection to the API.
        PROVIDER_UNREACHABLE = "ProviderUnreachable";
        /// Something that is not the provider's JSON.
        INVALID_PROVIDER_RESPONSE = "InvalidProviderResponse";
        /// An answer larger than the operator accepts.
        PROVIDER_RESPONSE_TOO_LARGE = "ProviderResponseTooLarge";
        /// A status code the operator does not expect.
        UNEXPECTED_PROVIDER_RESPONSE = "UnexpectedProviderResponse";
        /// A blob over the size limit (GitHub and git).
        BLOB_TOO_LARGE = "BlobTooLarge";
        /// A tree with more entries than `spec.maxTreeEntries` (GitHub and git).
        TREE_TOO_LARGE = "TreeTooLarge";
        /// A blob whose content does not match its id.
        BLOB_CORRUPT = "BlobCorrupt";
        /// More branches than the operator pages through.
        TOO_MANY_BRANCHES = "TooManyBranches";
        /// Not a full object id (GitHub and git).
        INVALID_OBJECT_ID = "InvalidObjectId";
        /// The GitHub source cannot be built from the spec.
        INVALID_SOURCE_CONFIG = "InvalidSourceConfig";

        // Git sources.
        /// A URL git cannot use here.
        UNSUPPORTED_URL = "UnsupportedUrl";
        /// `file://` without `--allow-file-urls`.
        FILE_URL_NOT_ALLOWED = "FileUrlNotAllowed";
        /// The remote refused the credentials.
        AUTHENTICATION_FAILED = "AuthenticationFailed";
        /// The ssh host key is unknown or changed.
        HOST_KEY_VERIFICATION_FAILED = "HostKeyVerificationFailed";
        /// `spec.branch` is not a valid branch name.
        INVALID_BRANCH_NAME = "InvalidBranchName";
        /// An object missing from the git cache.
        OBJECT_NOT_FOUND = "ObjectNotFound";
        /// A tree entry that is not a file.
        NOT_A_BLOB = "NotABlob";
        /// No connection to the git host.
        REMOTE_UNREACHABLE = "RemoteUnreachable";
        /// A git command outlived `spec.timeout`.
        GIT_TIMEOUT = "GitTimeout";
        /// Every git helper process stayed busy for `spec.timeout`.
        GIT_HELPERS_BUSY = "GitHelpersBusy";
        /// git failed with a message the operator does not classify.
        GIT_COMMAND_FAILED = "GitCommandFailed";
        /// git printed something the operator could not parse.
        INVALID_GIT_OUTPUT = "InvalidGitOutput";
        /// The `git` binary could not be run.
        GIT_NOT_RUNNABLE = "GitNotRunnable";
        /// The cache directory is not writable or full.
        CACHE_DIRECTORY_UNUSABLE = "CacheDirectoryUnusable";
        /// One fetch grew the cache past `--git-cache-max-size`.
        CACHE_LIMIT_EXCEEDED = "CacheLimitExceeded";

        // Embeddings.
        /// `spec.embedding` is incomplete or unusable.
        EMBEDDING_CONFIG_INVALID = "EmbeddingConfigInvalid";
        /// Embeddings asked of the `None` provider.
        EMBEDDING_DISABLED = "EmbeddingDisabled";
        /// The HTTP client could not be built.
        EMBEDDING_CLIENT_FAILED = "EmbeddingClientFailed";
        /// The endpoint refused the API key.
        EMBEDDING_AUTH_FAILED = "EmbeddingAuthFailed";
        /// Wrong endpoint URL or model name.
        EMBEDDING_NOT_FOUND = "EmbeddingNotFound";
        /// The account's quota is exhausted.
        EMBEDDING_QUOTA_EXCEEDED = "EmbeddingQuotaExceeded";
        /// The endpoint refused the request (400/413/422).
        EMBEDDING_REQUEST_REJECTED = "EmbeddingRequestRejected";
        /// 429 after the client's own retries.
        EMBEDDING_RATE_LIMITED = "EmbeddingRateLimited";
        /// 5xx after retries.
        EMBEDDING_SERVER_ERROR = "EmbeddingServerError";
        /// Requests timed out after retries.
        EMBEDDING_TIMEOUT = "EmbeddingTimeout";
        /// No connection to the endpoint.
        EMBEDDING_ENDPOINT_UNREACHABLE = "EmbeddingEndpointUnreachable";
        /// Not an embeddings response, or the wrong vectors.
        EMBEDDING_RESPONSE_INVALID = "EmbeddingResponseInvalid";
        /// An embeddings answer larger than the operator reads.
        EMBEDDING_RESPONSE_TOO_LARGE = "EmbeddingResponseTooLarge";

        /// `reuseScope: Cluster` without the operator's
        /// `--allow-cluster-embedding-reuse`.
        EMBEDDING_REUSE_SCOPE_NOT_ALLOWED = "EmbeddingReuseScopeNotAllowed";

        // Limits of a run.
        /// The run took longer than `spec.runTimeout` (capped by
        /// `--max-run-duration`) and was cancelled.
        RUN_DEADLINE_EXCEEDED = "RunDeadlineExceeded";

        // Why a run's scan compared whole trees instead of applying the
        // source's change set (`status.lastSync.scan.reason`).
        /// No completed sync with a commit to start from.
        FIRST_SYNC = "FirstSync";
        /// The run reprocesses (new globs, size limit, chunker, model, reindex).
        INPUTS_CHANGED = "InputsChanged";
        /// The base sync's commit is not in the git cache (evicted or lost).
        BASE_NOT_IN_CACHE = "BaseNotInCache";
        /// The new commit shares no history or content with the base.
        UNRELATED_HISTORY = "UnrelatedHistory";
        /// The provider could not list every change between the two commits.
        CHANGES_INCOMPLETE = "ChangesIncomplete";

        // The database and the cluster.
        /// The database could not be reached or refused a write.
        STORE_FAILED = "StoreFailed";
        /// Another run completed on the same base first.
        CONCURRENT_SYNC = "ConcurrentSync";
        /// The API server refused a request of the operator.
        KUBERNETES_API_FAILED = "KubernetesApiFailed";
    }

    // Why a tree path is refused. Labels of skipped entries, never a
    // condition reason: outside [`ALL`].
    /// An empty path.
    pub const EMPTY_PATH: &str = "EmptyPath";
    /// A path starting with `/`.
    pub const ABSOLUTE_PATH: &str = "AbsolutePath";
    /// A `..` component.
    pub const PARENT_DIRECTORY_COMPONENT: &str = "ParentDirectoryComponent";
    /// An empty or `.` component.
    pub const EMPTY_OR_DOT_COMPONENT: &str = "EmptyOrDotComponent";
    /// A NUL byte.
    pub const NUL_IN_PATH: &str = "NulInPath";
    /// Not UTF-8.
    pub const PATH_NOT_UTF8: &str = "PathNotUtf8";
    /// A `.git` component.
    pub const GIT_DIRECTORY_IN_PATH: &str = "GitDirectoryInPath";
    /// Longer than Postgres can index.
    pub const PATH_TOO_LONG: &str = "PathTooLong";
}

/// The status of a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    True,
    False,
    /// The controller is working on it (e.g. `Ready` while a run is in progress).
    Unknown,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }
}

/// Sets `type_` to the given status, reason and message. The transition time
/// changes only when the status changes; `observedGeneration` always moves.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: Status,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) {
    let status = status.as_str().to_string();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => {
            if existing.status != status {
                existing.last_transition_time = now.clone();
            }
            existing.status = status;
            existing.reason = reason.to_string();
            existing.message = message.to_string();
            existing.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_string(),
            status,
            reason: reason.to_string(),
            message: message.to_string(),
            observed_generation: generation,
            last_transition_time: now.clone(),
        }),
    }
}

/// Removes `type_`: abnormal-true conditions are dropped rather than set False.
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

/// The condition of `type_`, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalogue_lists_each_reason_once_in_camel_case() {
        let mut seen = std::collections::BTreeSet::new();
        for value in reason::ALL {
            assert!(seen.insert(*value), "{value} twice");
            assert!(
                value.starts_with(|c: char| c.is_ascii_uppercase())
                    && value.chars().all(|c| c.is_ascii_alphanumeric()),
                "{value}"
            );
        }
        assert!(reason::ALL.contains(&reason::RATE_LIMITED));
    }

    fn time(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            READY,
            Status::False,
            reason::PROGRESSING,
            "syncing",
            Some(1),
            &time(10),
        );
        set_condition(
            &mut conditions,
            READY,
            Status::False,
            reason::PROGRESSING,
            "still",
            Some(2),
            &time(20),
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, time(10));
        assert_eq!(conditions[0].message, "still");
        assert_eq!(conditions[0].observed_generation, Some(2));

        set_condition(
            &mut conditions,
            READY,
            Status::True,
            reason::SUCCEEDED,
            "done",
            Some(2),
            &time(30),
        );
        assert_eq!(conditions[0].last_transition_time, time(30));
        assert_eq!(conditions[0].status, "True");
    }

    #[test]
    fn abnormal_conditions_are_removed_not_set_false() {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            STALLED,
            Status::True,
            reason::INVALID_SPEC,
            "bad",
            None,
            &time(1),
        );
        set_condition(
            &mut conditions,
            READY,
            Status::False,
            reason::INVALID_SPEC,
            "bad",
            None,
            &time(1),
        );
        remove_condition(&mut conditions, STALLED);
        assert!(find_condition(&conditions, STALLED).is_none());
        assert!(find_condition(&conditions, READY).is_some());
    }
}
