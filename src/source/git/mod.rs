//! The plain git source (I/O): any remote over https, http, ssh, git:// or,
//! with an explicit flag, file://, through the git CLI.
//!
//! Branches and heads come from `git ls-remote` (no object transfer). For a
//! tree, only the commit is fetched, shallow (`--depth 1` by default), into a
//! bare cache repository per source; trees are read with
//! `git ls-tree -r -l -z`, parsed as they stream and refused past the tree
//! limit, and blobs through a long-lived
//! `git cat-file --batch-command` taken from the operator's bounded pool of
//! helpers ([`pool`]), which checks a blob's size before reading it. `--filter=blob:none` is deliberately not used: `ls-tree -l`
//! needs every blob's size, which a partial clone would fetch lazily one
//! object at a time. Changes between two cached commits come from
//! `git diff-tree`, locally; every fetched commit stays under a ref, so
//! later fetches negotiate (send only what the cache lacks) and the last
//! synced commit is there to diff against, across restarts.

mod batch;
pub mod cache;
mod changes;
mod command;
pub mod connector;
mod environment;
mod error;
mod fetch;
mod listing;
mod objects;
pub mod pool;
mod remote;

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::Mutex;

pub use error::GitError;
pub use pool::{GitHelpers, PoolSettings};
pub use remote::{Transport, classify_url, is_valid_branch_name, redact_url};

use self::batch::{CatFile, ObjectRead};
use self::command::GitRunner;
use self::fetch::init_bare;
use self::remote::split_userinfo;
use super::stats::StatsRecorder;
use super::{
    BRANCHES_SEEN, Branch, Changes, Credentials, HeadCache, HeadLookup, Source, SourceResult,
    SourceStats, Tree, TreeLimit,
};
use crate::retry::RetryPolicy;

/// How to reach one git remote.
#[derive(Clone, Debug)]
pub struct GitConfig {
    pub url: String,
    /// A directory owned by this source (one per repository); created if
    /// missing. Holds the bare cache repository and credential files.
    pub cache_dir: PathBuf,
    pub credentials: Credentials,
    /// Permit `file://` URLs and local paths (development only: they read
    /// the operator's own filesystem).
    pub allow_file_urls: bool,
    /// Time limit for each git process.
    pub timeout: Duration,
    /// History depth to fetch; `None` fetches full history.
    pub depth: Option<u32>,
    /// Retries of remote operations that failed transiently (unreachable,
    /// timed out); everything else fails at once.
    pub retry: RetryPolicy,
    /// Send http(s) traffic through this proxy (`spec.proxySecretRef`).
    pub proxy: Option<crate::source::proxy::ProxySettings>,
    /// Fail a fetch (and kill it) once `cache_dir` grows past this size.
    pub max_cache_bytes: Option<u64>,
    /// Refuse trees with more entries than this (the listing stops there).
    pub tree_limit: TreeLimit,
    /// Which addresses the remote and the proxy may resolve to (default:
    /// no internal ones); checked before every remote operation.
    pub egress: crate::egress::EgressPolicy,
    /// Where blob reads take their `cat-file` helper: the operator shares
    /// one pool among all sources; the default is a pool of this source's.
    pub helpers: GitHelpers,
    /// The operator's own binary, which makes `git://` connections for git
    /// ([`connector`]); `None` lets git connect by itself. By default the
    /// running binary, when it is `projectsync` ([`connector::program`]).
    pub connector: Option<PathBuf>,
}

impl GitConfig {
    pub fn new(url: impl Into<String>, cache_dir: impl Into<PathBuf>) -> Self {
        GitConfig {
            url: url.into(),
            cache_dir: cache_dir.into(),
            credentials: Credentials::Anonymous,
            allow_file_urls: false,
            timeout: Duration::from_secs(300),
            depth: Some(1),
            retry: RetryPolicy::default(),
            proxy: None,
            max_cache_bytes: None,
            tree_limit: TreeLimit::default(),
            egress: crate::egress::EgressPolicy::default(),
            helpers: GitHelpers::default(),
            connector: connector::program(),
        }
    }
}

/// A git remote read through a local cache.
#[derive(Debug)]
pub struct GitRemote {
    runner: GitRunner,
    depth: Option<u32>,
    retry: RetryPolicy,
    cache_dir: PathBuf,
    max_cache_bytes: Option<u64>,
    tree_limit: TreeLimit,
    /// Serialises fetches into the cache (shallow file, pack writes).
    fetch_lock: Mutex<()>,
    /// Serialises questions to `cat-file` helpers: a source uses one
    /// helper at a time, so one resource cannot take the whole pool.
    read_lock: Mutex<()>,
    helpers: GitHelpers,
    stats: StatsRecorder,
    /// The heads the last head lookup listed, for
    /// [`Source::take_branches_seen`].
    branches_seen: std::sync::Mutex<Option<Vec<Branch>>>,
}

impl GitRemote {
    /// Validates the URL and prepares the cache repository (runs
    /// `git init --bare` once, synchronously).
    pub fn new(config: GitConfig) -> Result<Self, GitError> {
        let transport = classify_url(&config.url, config.allow_file_urls)?;
        let git_dir = config.cache_dir.join("repo.git");
        // Credentials written into an http(s) URL move to the askpass
        // environment, so they are not in git's argv (process lists).
        let (url, from_url) = split_userinfo(&config.url);
        let credentials = match (from_url, &config.credentials) {
            (Some(url_credentials), Credentials::Anonymous) => url_credentials,
            _ => config.credentials.clone(),
        };
        let state_dir = config.cache_dir.join("state");
        let runner = GitRunner::new(
            &url,
            transport,
            git_dir.clone(),
            &state_dir,
            &credentials,
            config.proxy.as_ref(),
            config.timeout,
        )?
        .with_connector(config.connector.as_deref(), &state_dir)?
        .with_egress(config.egress.clone())
        .with_commands_gauge(config.helpers.settings().commands_gauge.clone());
        if !git_dir.join("HEAD").exists() {
            init_bare(&runner)?;
        }
        Ok(GitRemote {
            runner,
            depth: config.depth,
            retry: config.retry,
            cache_dir: config.cache_dir.clone(),
            max_cache_bytes: config.max_cache_bytes,
            tree_limit: config.tree_limit,
            fetch_lock: Mutex::new(()),
            read_lock: Mutex::new(()),
            helpers: config.helpers.clone(),
            stats: StatsRecorder::with_transfers(),
            branches_seen: std::sync::Mutex::new(None),
        })
    }

    fn url(&self) -> String {
        self.runner.display_url.clone()
    }

    async fn list_heads(&self) -> Result<Vec<Branch>, GitError> {
        let url = self.runner.url.clone();
        let args = ["ls-remote", "--heads", url.as_str()];
        let stdout = self.remote("ls-remote", &args).await?;
        let mut branches = Vec::new();
        for line in stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let line = std::str::from_utf8(line)
                .map_err(|_| self.invalid("ls-remote", "output is not UTF-8"))?;
            let (sha, name) = line
                .split_once('\t')
                .ok_or_else(|| self.invalid("ls-remote", line))?;
            if let Some(name) = name.strip_prefix("refs/heads/") {
                branches.push(Branch {
                    name: name.to_string(),
                    commit_sha: sha.to_string(),
                });
            }
        }
        branches.sort();
        Ok(branches)
    }

    fn invalid(&self, operation: &'static str, detail: &str) -> GitError {
        GitError::InvalidOutput {
            url: self.url(),
            operation,
            detail: detail.chars().take(200).collect(),
        }
    }

    async fn fetch_blob_impl(&self, sha: &str, max_size: u64) -> Result<Bytes, GitError> {
        if !super::is_object_id(sha) {
            return Err(GitError::InvalidObjectId {
                url: self.url(),
                what: sha.to_string(),
            });
        }
        let answer = self
            .with_helper(|mut cat| async move {
                let read = cat.read(sha, "blob", max_size).await;
                (cat, read)
            })
            .await?;
        let (url, sha) = (self.url(), sha.to_string());
        match answer {
            ObjectRead::Object(bytes) => Ok(bytes),
            ObjectRead::Missing => Err(GitError::ObjectNotFound { url, sha }),
            ObjectRead::WrongKind(kind) => Err(GitError::NotABlob { url, sha, kind }),
            ObjectRead::TooLarge(size) => Err(GitError::BlobTooLarge {
                url,
                sha,
                size,
                max: max_size,
            }),
        }
    }

    /// Asks this cache's `cat-file` helper, taken from the operator's pool
    /// for the time of `ask`, within the source's timeout.
    ///
    /// The helper is out of the pool while it answers: a question cut off
    /// (the run aborted, its fetches with it) leaves a half-read answer in
    /// the pipe, so that helper is dropped (and killed), never given back,
    /// and the next question gets another. A stream found broken (the
    /// process died) is replaced once.
    #[tracing::instrument(level = "debug", name = "cat_file", skip_all)]
    async fn with_helper<T, F, Fut>(&self, mut ask: F) -> Result<T, GitError>
    where
        F: FnMut(CatFile) -> Fut,
        Fut: Future<Output = (CatFile, std::io::Result<T>)>,
    {
        let _turn = self.read_lock.lock().await;
        let timeout = self.runner.timeout;
        let mut replaced = false;
        loop {
            let checkout = self
                .helpers
                .pool
                .checkout(&self.runner.git_dir, timeout, || {
                    CatFile::spawn(&self.runner)
                })
                .await;
            let mut leased = match checkout {
                Ok(Ok(leased)) => leased,
                Ok(Err(error)) => return Err(error),
                Err(busy) => {
                    return Err(GitError::HelpersBusy {
                        url: self.url(),
                        max_helpers: busy.max_helpers,
                        seconds: timeout.as_secs(),
                    });
                }
            };
            match tokio::time::timeout(timeout, ask(leased.take())).await {
                Ok((helper, Ok(answer))) => {
                    leased.put(helper);
                    leased.give_back();
                    return Ok(answer);
                }
                Ok((_broken, Err(_))) if !replaced => replaced = true,
                Ok((_broken, Err(source))) => {
                    return Err(GitError::Io {
                        url: self.url(),
                        operation: "cat-file",
                        source,
                    });
                }
                Err(_) => {
                    return Err(GitError::Timeout {
                        url: self.url(),
                        operation: "cat-file",
                        seconds: timeout.as_secs(),
                    });
                }
            }
        }
    }

    async fn fetch_branch_head_impl(
        &self,
        branch: &str,
        cached: Option<&HeadCache>,
    ) -> Result<HeadLookup, GitError> {
        if !is_valid_branch_name(branch) {
            return Err(GitError::InvalidBranchName {
                url: self.url(),
                branch: branch.to_string(),
            });
        }
        // `ls-remote --heads` receives every head whatever the pattern (git
        // asks the server for the `refs/heads/` prefix), so one listing
        // answers both the lookup and the branch names a run shows.
        let heads = self.list_heads().await?;
        let found = heads.iter().find(|b| b.name == branch).cloned();
        let empty = heads.is_empty();
        *self
            .branches_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(heads.into_iter().take(BRANCHES_SEEN).collect());
        match found {
            Some(b) if cached.is_some_and(|c| c.sha == b.commit_sha) => Ok(HeadLookup::Unchanged),
            Some(b) => Ok(HeadLookup::Changed {
                sha: b.commit_sha,
                etag: None,
            }),
            None if empty => Err(GitError::EmptyRepository { url: self.url() }),
            None => Err(GitError::BranchNotFound {
                url: self.url(),
                branch: branch.to_string(),
            }),
        }
    }
}

impl Source for GitRemote {
    fn describe(&self) -> String {
        format!("git:{}", self.runner.display_url)
    }

    fn fetch_branches(&self) -> BoxFuture<'_, SourceResult<Vec<Branch>>> {
        Box::pin(async move { Ok(self.list_heads().await?) })
    }

    fn fetch_branch_head<'a>(
        &'a self,
        branch: &'a str,
        cached: Option<&'a HeadCache>,
    ) -> BoxFuture<'a, SourceResult<HeadLookup>> {
        Box::pin(async move { Ok(self.fetch_branch_head_impl(branch, cached).await?) })
    }

    fn fetch_tree<'a>(
        &'a self,
        commit: &'a str,
        _previous: Option<&'a Tree>,
    ) -> BoxFuture<'a, SourceResult<Tree>> {
        Box::pin(async move { Ok(self.fetch_tree_impl(commit).await?) })
    }

    fn fetch_blob<'a>(&'a self, sha: &'a str, max_size: u64) -> BoxFuture<'a, SourceResult<Bytes>> {
        Box::pin(async move { Ok(self.fetch_blob_impl(sha, max_size).await?) })
    }

    fn fetch_changes<'a>(
        &'a self,
        base: &'a str,
        head: &'a str,
    ) -> BoxFuture<'a, SourceResult<Changes>> {
        Box::pin(async move { Ok(self.fetch_changes_impl(base, head).await?) })
    }

    fn take_branches_seen(&self) -> Option<Vec<Branch>> {
        self.branches_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    fn stats(&self) -> SourceStats {
        self.stats.snapshot()
    }
}
