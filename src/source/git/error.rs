//! Git source errors, and the mapping from git's own messages to them
//! (pure, no I/O).

use crate::{api::conditions::reason, source::Retry};

/// Everything that can go wrong reading a git remote.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("git url {url:?} is not supported: {detail}")]
    UnsupportedUrl { url: String, detail: &'static str },
    #[error(
        "git url {url:?} reads the operator's own filesystem; file:// sources need --allow-file-urls"
    )]
    FileUrlNotAllowed { url: String },
    #[error("git {url}: authentication failed: {detail}")]
    AuthenticationFailed { url: String, detail: String },
    #[error("git {url}: the server's host key is not in known_hosts or does not match")]
    HostKeyVerificationFailed { url: String },
    #[error("git {url}: repository not found, or the credentials have no access to it")]
    RepositoryNotFound { url: String },
    #[error("git {url}: branch {branch:?} not found")]
    BranchNotFound { url: String, branch: String },
    #[error("git {url}: {branch:?} is not a valid branch name")]
    InvalidBranchName { url: String, branch: String },
    #[error("git {url}: commit {commit} not found on the remote")]
    CommitNotFound { url: String, commit: String },
    #[error("git {url}: repository is empty (no branches)")]
    EmptyRepository { url: String },
    #[error("git {url}: object {sha} is not in the cache; fetch its commit's tree first")]
    ObjectNotFound { url: String, sha: String },
    #[error("git {url}: object {sha} is a {kind}, not a blob")]
    NotABlob {
        url: String,
        sha: String,
        kind: String,
    },
    #[error("git {url}: blob {sha} is {size} bytes, over the limit of {max} bytes")]
    BlobTooLarge {
        url: String,
        sha: String,
        size: u64,
        max: u64,
    },
    #[error(
        "git {url}: the tree of commit {commit} has more than {limit} entries, the limit set by {set_by}"
    )]
    TreeTooLarge {
        url: String,
        commit: String,
        limit: usize,
        set_by: &'static str,
    },
    #[error(
        "git {url}: the remote's branch listing is larger than {limit} bytes; the operator reads no more of it"
    )]
    TooManyBranches { url: String, limit: usize },
    #[error("git {url}: {what:?} is not a full object id")]
    InvalidObjectId { url: String, what: String },
    #[error("git {url}: remote unreachable: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("git {url}: {source}")]
    EgressDenied {
        url: String,
        #[source]
        source: Box<crate::egress::EgressDenied>,
    },
    #[error("git {url}: {operation} timed out after {seconds}s (spec.timeout)")]
    Timeout {
        url: String,
        operation: &'static str,
        seconds: u64,
    },
    #[error(
        "git {url}: all {max_helpers} git helper processes stayed busy for {seconds}s (--git-helpers); the read is retried, raise --git-helpers if this persists"
    )]
    HelpersBusy {
        url: String,
        max_helpers: usize,
        seconds: u64,
    },
    #[error("git {url}: {operation} failed ({status}): {detail}")]
    CommandFailed {
        url: String,
        operation: &'static str,
        status: String,
        detail: String,
    },
    #[error("git {url}: {operation} gave unexpected output: {detail}")]
    InvalidOutput {
        url: String,
        operation: &'static str,
        detail: String,
    },
    #[error("git {url}: running {operation}")]
    Io {
        url: String,
        operation: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "git {url}: the fetch grew the cache to {bytes} bytes, over the operator's limit of {limit} bytes (--git-cache-max-size); raise the limit or sync a smaller repository"
    )]
    CacheLimitExceeded { url: String, bytes: u64, limit: u64 },
    #[error("git {url}: the proxy refused the credentials (407): {detail}")]
    ProxyAuthenticationFailed { url: String, detail: String },
    #[error("git cache directory {path} is unusable")]
    CacheDirectory {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl GitError {
    /// Short static category (condition reason, event reason, metric label).
    pub fn reason(&self) -> &'static str {
        match self {
            GitError::UnsupportedUrl { .. } => reason::UNSUPPORTED_URL,
            GitError::FileUrlNotAllowed { .. } => reason::FILE_URL_NOT_ALLOWED,
            GitError::AuthenticationFailed { .. } => reason::AUTHENTICATION_FAILED,
            GitError::HostKeyVerificationFailed { .. } => reason::HOST_KEY_VERIFICATION_FAILED,
            GitError::RepositoryNotFound { .. } => reason::REPOSITORY_NOT_FOUND,
            GitError::BranchNotFound { .. } => reason::BRANCH_NOT_FOUND,
            GitError::InvalidBranchName { .. } => reason::INVALID_BRANCH_NAME,
            GitError::CommitNotFound { .. } => reason::COMMIT_NOT_FOUND,
            GitError::EmptyRepository { .. } => reason::EMPTY_REPOSITORY,
            GitError::ObjectNotFound { .. } => reason::OBJECT_NOT_FOUND,
            GitError::NotABlob { .. } => reason::NOT_A_BLOB,
            GitError::BlobTooLarge { .. } => reason::BLOB_TOO_LARGE,
            GitError::TreeTooLarge { .. } => reason::TREE_TOO_LARGE,
            GitError::TooManyBranches { .. } => reason::TOO_MANY_BRANCHES,
            GitError::InvalidObjectId { .. } => reason::INVALID_OBJECT_ID,
            GitError::Unreachable { .. } => reason::REMOTE_UNREACHABLE,
            GitError::EgressDenied { .. } => reason::EGRESS_DENIED,
            GitError::Timeout { .. } => reason::GIT_TIMEOUT,
            GitError::HelpersBusy { .. } => reason::GIT_HELPERS_BUSY,
            GitError::CommandFailed { .. } => reason::GIT_COMMAND_FAILED,
            GitError::InvalidOutput { .. } => reason::INVALID_GIT_OUTPUT,
            GitError::Io { .. } => reason::GIT_NOT_RUNNABLE,
            GitError::CacheDirectory { .. } => reason::CACHE_DIRECTORY_UNUSABLE,
            GitError::CacheLimitExceeded { .. } => reason::CACHE_LIMIT_EXCEEDED,
            GitError::ProxyAuthenticationFailed { .. } => reason::PROXY_AUTHENTICATION_FAILED,
        }
    }

    /// Stall (user must act) or back off; git has no rate limits to wait on.
    pub fn retry(&self) -> Retry {
        match self {
            GitError::Unreachable { .. }
            | GitError::Timeout { .. }
            | GitError::HelpersBusy { .. }
            | GitError::CommandFailed { .. }
            | GitError::InvalidOutput { .. }
            | GitError::ObjectNotFound { .. } => Retry::Transient,
            GitError::UnsupportedUrl { .. }
            | GitError::FileUrlNotAllowed { .. }
            | GitError::AuthenticationFailed { .. }
            | GitError::HostKeyVerificationFailed { .. }
            | GitError::RepositoryNotFound { .. }
            | GitError::BranchNotFound { .. }
            | GitError::InvalidBranchName { .. }
            | GitError::CommitNotFound { .. }
            | GitError::EmptyRepository { .. }
            | GitError::NotABlob { .. }
            | GitError::BlobTooLarge { .. }
            | GitError::TreeTooLarge { .. }
            | GitError::TooManyBranches { .. }
            | GitError::InvalidObjectId { .. }
            | GitError::Io { .. }
            | GitError::CacheDirectory { .. }
            | GitError::CacheLimitExceeded { .. }
            | GitError::EgressDenied { .. }
            | GitError::ProxyAuthenticationFailed { .. } => Retry::Stalled,
        }
    }
}

/// Maps a failed remote operation to an error from git's stderr. Git's
/// messages are stable enough across versions for these phrases; anything
/// else is a generic, retried failure.
pub(crate) fn build_error_from_stderr(
    url: &str,
    operation: &'static str,
    status: String,
    stderr: &str,
) -> GitError {
    let url = url.to_string();
    let lower = stderr.to_ascii_lowercase();
    let detail = summarise(stderr);
    let has = |needles: &[&str]| needles.iter().any(|n| lower.contains(n));
    if has(&[
        "code 407",
        "response 407",
        "returned error: 407",
        "proxy authentication required",
    ]) {
        GitError::ProxyAuthenticationFailed { url, detail }
    } else if has(&[
        "host key verification failed",
        "no matching host key",
        "remote host identification has changed",
    ]) {
        GitError::HostKeyVerificationFailed { url }
    } else if has(&[
        "authentication failed",
        "could not read username",
        "could not read password",
        "terminal prompts disabled",
        "permission denied (publickey",
        "http basic: access denied",
        "the requested url returned error: 401",
        "the requested url returned error: 403",
    ]) {
        GitError::AuthenticationFailed { url, detail }
    } else if has(&[
        "repository not found",
        "does not appear to be a git repository",
        "no such repository",
        "not found",
        "the requested url returned error: 404",
        "access denied",
    ]) {
        GitError::RepositoryNotFound { url }
    } else if has(&[
        "could not resolve host",
        "connection refused",
        "connection timed out",
        "unable to connect",
        "failed to connect",
        "network is unreachable",
        "early eof",
        "the remote end hung up",
        "returned error: 5",
        "rpc failed",
    ]) {
        GitError::Unreachable { url, detail }
    } else {
        GitError::CommandFailed {
            url,
            operation,
            status,
            detail,
        }
    }
}

/// What git adds after every failed connection through a command (ssh, the
/// `git://` connector): it would push the cause out of [`summarise`]'s lines.
const BOILERPLATE: [&str; 3] = [
    "fatal: Could not read from remote repository.",
    "Please make sure you have the correct access rights",
    "and the repository exists.",
];

/// The last meaningful lines of stderr, bounded.
fn summarise(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !BOILERPLATE.contains(l))
        .collect();
    let text = lines[lines.len().saturating_sub(3)..].join("; ");
    text.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(stderr: &str) -> &'static str {
        build_error_from_stderr("u", "ls-remote", "exit status: 128".into(), stderr).reason()
    }

    #[test]
    fn a_proxy_refusing_credentials_is_named() {
        for stderr in [
            "fatal: unable to access 'https://x/r.git/': CONNECT tunnel failed, response 407",
            "fatal: unable to access 'https://x/r.git/': Received HTTP code 407 from proxy after CONNECT",
            "fatal: unable to access 'http://x/r.git/': The requested URL returned error: 407",
        ] {
            assert_eq!(reason(stderr), "ProxyAuthenticationFailed", "{stderr}");
        }
    }

    #[test]
    fn git_messages_map_to_specific_reasons() {
        assert_eq!(
            reason("fatal: could not read Username for 'http://x': terminal prompts disabled"),
            "AuthenticationFailed"
        );
        assert_eq!(
            reason("fatal: Authentication failed for 'http://x/'"),
            "AuthenticationFailed"
        );
        assert_eq!(
            reason("fatal: remote error: access denied or repository not exported: /r.git"),
            "RepositoryNotFound"
        );
        assert_eq!(
            reason("fatal: repository 'http://x/r.git/' not found"),
            "RepositoryNotFound"
        );
        assert_eq!(
            reason(
                "fatal: unable to connect to 127.0.0.1:\n127.0.0.1[0: 127.0.0.1]: errno=Connection refused"
            ),
            "RemoteUnreachable"
        );
        assert_eq!(
            reason("Host key verification failed.\nfatal: Could not read from remote repository."),
            "HostKeyVerificationFailed"
        );
        assert_eq!(reason("fatal: something new"), "GitCommandFailed");
    }
}
