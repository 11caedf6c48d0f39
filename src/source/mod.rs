//! Sources: where the pipeline reads a repository from (I/O layer).
//!
//! The pipeline asks a [`Source`] four questions — which branches exist,
//! which commit a branch points at, what the tree of a commit is, what the
//! bytes of a blob are — plus, where the provider answers it cheaply, which
//! files changed between two commits. Two implementations sit behind the one
//! trait: [`github::GitHubRepo`] (a repository on GitHub, through the REST
//! API with octocrab, no clone) and [`git::GitRemote`] (any git remote,
//! through the git CLI, shallow fetches into a per-repository cache
//! directory). The CRD's `source.github` and `source.git` describe them; the
//! controller turns those into a [`github::GitHubConfig`] or a
//! [`git::GitConfig`].
//!
//! The cheap way to sync, which [`Source`] is shaped for: ask
//! [`Source::fetch_branch_head`] with the cached head (an unchanged branch
//! ends there, on GitHub with a free 304); read [`Source::fetch_tree`] with
//! the previous sync's tree (on GitHub a truncated tree is walked only where
//! subtree ids changed); compare blob ids with the previous tree; fetch only
//! added and modified blobs. [`Source::fetch_changes`] replaces the tree
//! read when the provider answers completely: a [`ChangeSet`] carries every
//! changed path with the blob id, size and mode the scan needs. A run that
//! processes most of a repository (a first sync) asks
//! [`Source::fetch_archive`] instead: one download (GitHub's tarball) for all
//! files, each checked against its blob id, the rest fetched one by one.
//!
//! Every error carries what to do next ([`Retry`]) and a short static
//! [`SourceError::reason`] used for condition reasons, event reasons and
//! metric labels. The pure parts — content classification ([`content`]),
//! credentials from a Secret ([`credentials`]) and git tree hashing
//! ([`tree`]) — do no I/O and are tested beside the code.

pub mod archive;
pub mod content;
pub mod credentials;
pub mod git;
pub mod github;
pub mod proxy;
pub mod stats;
pub mod tree;

use std::fmt;

use bytes::Bytes;
use futures::future::BoxFuture;

pub use crate::retry::{Retry, RetryPolicy};
pub use archive::Archive;
pub use credentials::{
    Credentials, CredentialsError, GitHubAppCredentials, build_credentials_from_secret,
    build_github_credentials_from_secret,
};
pub use stats::{RateLimit, SourceStats, Transfer};
pub use tree::{EntryKind, RejectedEntry, Tree, TreeEntry, TreeLimit};

/// A branch and the commit it points at.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Branch {
    pub name: String,
    pub commit_sha: String,
}

/// What the caller remembers of a branch head from the previous poll.
///
/// `etag` is the validator the provider returned with that answer (GitHub);
/// sources without conditional requests compare `sha` only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeadCache {
    pub sha: String,
    pub etag: Option<String>,
}

/// What a source learned about its repository that makes its next reads
/// cheaper, kept by the caller across operator restarts (the store keeps it
/// with the project). Only ever a cost: a source given stale or default
/// hints reads the same trees, with more requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceHints {
    /// The last tree read had to be walked (GitHub answered `truncated`):
    /// the next read walks at once instead of asking for a recursive
    /// listing that would be truncated again.
    pub tree_walked: bool,
}

/// The answer to "where does this branch point now?".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeadLookup {
    /// The branch still points at the cached commit (GitHub: a 304, which
    /// costs no rate limit).
    Unchanged,
    /// A new answer: the branch points at `sha`; keep `etag` for the next
    /// poll. `sha` can equal the cached one when only the provider's
    /// validator changed, so callers compare commits, not variants.
    Changed { sha: String, etag: Option<String> },
}

impl HeadLookup {
    /// The new commit, if the branch moved.
    pub fn changed_sha(&self) -> Option<&str> {
        match self {
            HeadLookup::Unchanged => None,
            HeadLookup::Changed { sha, .. } => Some(sha),
        }
    }
}

/// What happened to one path between two commits.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChangeKind {
    /// The path exists at the head commit as this entry (added, or changed
    /// in content, mode or type).
    Upsert(TreeEntry),
    /// The path is gone at the head commit.
    Removed,
}

/// One changed path between two commits, as a provider reports it.
///
/// A rename is a removal of the old path and an upsert of the new one, so
/// callers apply changes path by path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Change {
    pub path: String,
    pub kind: ChangeKind,
}

/// Every change between two commits, with what the pipeline needs of each
/// new entry (blob id, size, mode, kind), sorted by path. Entries at the
/// head with unsafe paths are in `rejected`, as in a [`Tree`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangeSet {
    pub changes: Vec<Change>,
    pub rejected: Vec<RejectedEntry>,
}

/// The answer to "what changed from `base` to `head`?".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Changes {
    /// Every change, complete: a scan may rely on it alone.
    Complete(ChangeSet),
    /// The source cannot say completely and cheaply; `reason` is one of the
    /// [`crate::api::conditions::reason`] constants (why the full tree diff
    /// runs instead).
    Unavailable { reason: &'static str },
}

/// A source failure: the provider family's own error, wrapped.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    GitHub(#[from] github::GitHubError),
    #[error(transparent)]
    Git(#[from] git::GitError),
}

impl SourceError {
    /// Short CamelCase category for condition reasons, event reasons and
    /// metric labels. A fixed set of static strings.
    pub fn reason(&self) -> &'static str {
        match self {
            SourceError::GitHub(e) => e.reason(),
            SourceError::Git(e) => e.reason(),
        }
    }

    /// What the caller should do next.
    pub fn retry(&self) -> Retry {
        match self {
            SourceError::GitHub(e) => e.retry(),
            SourceError::Git(e) => e.retry(),
        }
    }
}

/// The result type of every source call.
pub type SourceResult<T> = Result<T, SourceError>;

/// A repository provider. Object-safe: the pipeline holds an
/// `Arc<dyn Source>`.
pub trait Source: Send + Sync + fmt::Debug {
    /// A short description for logs and events (`github:owner/repo`,
    /// `git:https://host/repo.git`), never containing credentials.
    fn describe(&self) -> String;

    /// Every branch with its head commit, sorted by name. Paginated and
    /// bounded: a repository with more branches than the bound fails with a
    /// specific error rather than returning a silent prefix.
    fn fetch_branches(&self) -> BoxFuture<'_, SourceResult<Vec<Branch>>>;

    /// Where `branch` points now; `Unchanged` when it still points at
    /// `cached` (GitHub asks conditionally, so this costs no rate limit).
    fn fetch_branch_head<'a>(
        &'a self,
        branch: &'a str,
        cached: Option<&'a HeadCache>,
    ) -> BoxFuture<'a, SourceResult<HeadLookup>>;

    /// The full recursive tree of `commit`. With `previous` (the tree of an
    /// earlier commit of the same repository, e.g. rebuilt from the last
    /// sync), a source that walks subtrees skips every subtree whose hash
    /// is unchanged.
    fn fetch_tree<'a>(
        &'a self,
        commit: &'a str,
        previous: Option<&'a Tree>,
    ) -> BoxFuture<'a, SourceResult<Tree>>;

    /// The bytes of blob `sha`, refusing blobs larger than `max_size` bytes
    /// before reading them where the provider allows.
    fn fetch_blob<'a>(&'a self, sha: &'a str, max_size: u64) -> BoxFuture<'a, SourceResult<Bytes>>;

    /// Every change from `base` to `head` when the provider can say so
    /// cheaply and completely (without listing the whole tree of `head`);
    /// otherwise [`Changes::Unavailable`] with the reason, and the caller
    /// compares trees.
    fn fetch_changes<'a>(
        &'a self,
        base: &'a str,
        head: &'a str,
    ) -> BoxFuture<'a, SourceResult<Changes>>;

    /// Every file of `commit` in one download, where the provider has one
    /// (GitHub's tarball); `None` where it does not or where reading files
    /// one by one costs no requests (a local clone). For runs that process
    /// most of a repository; its content is checked file by file.
    fn fetch_archive<'a>(
        &'a self,
        commit: &'a str,
    ) -> BoxFuture<'a, SourceResult<Option<Archive>>> {
        let _ = commit;
        Box::pin(async { Ok(None) })
    }

    /// The branches (at most [`BRANCHES_SEEN`], sorted by name) that the
    /// last [`Source::fetch_branch_head`] received anyway, taken once: git's
    /// `ls-remote` brings every head even when asked for one, so a run
    /// shows branch names in status without a second round trip. `None`
    /// where the head lookup asks for one branch only (GitHub).
    fn take_branches_seen(&self) -> Option<Vec<Branch>> {
        None
    }

    /// Requests made so far, by endpoint and status, and the last rate limit
    /// the provider reported.
    fn stats(&self) -> SourceStats;

    /// What this source has learned so far, for [`Source::restore_hints`]
    /// on a source built after a restart.
    fn hints(&self) -> SourceHints {
        SourceHints::default()
    }

    /// Gives this source what an earlier instance learned.
    fn restore_hints(&self, hints: SourceHints) {
        let _ = hints;
    }
}

/// How many branch names a status shows (and a source keeps from a head
/// lookup for it).
pub const BRANCHES_SEEN: usize = 100;

/// The first `len` characters of commit `sha`, as people quote it (status
/// messages and events use 7, git's default abbreviation; the CLI 12).
pub fn short_sha(sha: &str, len: usize) -> String {
    sha.chars().take(len).collect()
}

/// True when `s` looks like a full hex object id (SHA-1 or SHA-256).
pub fn is_object_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_shas_are_prefixes_of_the_given_length() {
        let sha = "a12243f2e0d67a9ab5e1c0e3b3c9bd9c8f2b6e0b";
        assert_eq!(short_sha(sha, 7), "a12243f");
        assert_eq!(short_sha(sha, 12), "a12243f2e0d6");
        assert_eq!(short_sha("abc", 7), "abc");
    }

    #[test]
    fn object_ids_are_forty_or_sixty_four_hex_digits() {
        assert!(is_object_id("a12243f2e0d67a9ab5e1c0e3b3c9bd9c8f2b6e0b"));
        assert!(!is_object_id("main"));
        assert!(!is_object_id("a12243f2"));
        assert!(!is_object_id(
            "../../../../../../../../../../etc/passwd0000"
        ));
    }
}
