//! The plain git source (I/O): any remote over https, http, ssh, git:// or,
//! with an explicit flag, file://, through the git CLI.
//!
//! Branches and heads come from `git ls-remote` (no object transfer). For a
//! tree, only the commit is fetched, shallow (`--depth 1` by default), into a
//! bare cache repository per source; trees are read with
//! `git ls-tree -r -l -z` and blobs through one long-lived
//! `git cat-file --batch-command`, which checks a blob's size before
//! reading it. `--filter=blob:none` is deliberately not used: `ls-tree -l`
//! needs every blob's size, which a partial clone would fetch lazily one
//! object at a time. Changes between two cached commits come from
//! `git diff-tree`, locally.

mod batch;
pub mod cache;
mod command;
mod error;

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::Mutex;

pub use command::{Transport, classify_url, is_valid_branch_name, redact_url};
pub use error::GitError;

use self::batch::{BlobRead, CatFile};
use self::command::GitRunner;
use super::stats::StatsRecorder;
use super::tree::build_tree_entry;
use super::{
    Branch, Change, ChangeStatus, Credentials, HeadCache, HeadLookup, Source, SourceResult,
    SourceStats, Tree,
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
        }
    }
}

/// A git remote read through a local cache.
#[derive(Debug)]
pub struct GitSource {
    runner: GitRunner,
    depth: Option<u32>,
    retry: RetryPolicy,
    cache_dir: PathBuf,
    max_cache_bytes: Option<u64>,
    /// Serialises fetches into the cache (shallow file, pack writes).
    fetch_lock: Mutex<()>,
    cat_file: Mutex<Option<CatFile>>,
    stats: StatsRecorder,
}

impl GitSource {
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
        let runner = GitRunner::new(
            &url,
            transport,
            git_dir.clone(),
            &config.cache_dir.join("state"),
            &credentials,
            config.proxy.as_ref(),
            config.timeout,
        )?;
        if !git_dir.join("HEAD").exists() {
            init_bare(&runner)?;
        }
        Ok(GitSource {
            runner,
            depth: config.depth,
            retry: config.retry,
            cache_dir: config.cache_dir.clone(),
            max_cache_bytes: config.max_cache_bytes,
            fetch_lock: Mutex::new(()),
            cat_file: Mutex::new(None),
            stats: StatsRecorder::default(),
        })
    }

    fn url(&self) -> String {
        self.runner.display_url.clone()
    }

    /// A remote operation, counted in the stats (200 ok, 0 failed), retried
    /// with backoff while the remote is unreachable or slow.
    async fn remote(&self, operation: &'static str, args: &[&str]) -> Result<Vec<u8>, GitError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            // Only fetches write to the cache; they are watched for size.
            let limit = (operation == "fetch")
                .then_some(self.max_cache_bytes)
                .flatten()
                .map(|l| (self.cache_dir.as_path(), l));
            let mut result = self.runner.run_bounded(operation, args, None, limit).await;
            if let (Ok(_), Some((dir, max))) = (&result, limit) {
                // A fetch faster than the watch's first look is measured here.
                let dir = dir.to_path_buf();
                let bytes = tokio::task::spawn_blocking(move || cache::dir_size(&dir))
                    .await
                    .unwrap_or(0);
                if bytes > max {
                    result = Err(GitError::CacheLimitExceeded {
                        url: self.url(),
                        bytes,
                        limit: max,
                    });
                }
            }
            if matches!(result, Err(GitError::CacheLimitExceeded { .. })) {
                self.reset_cache();
            }
            self.stats
                .record(operation, if result.is_ok() { 200 } else { 0 });
            match result {
                Err(GitError::Unreachable { .. } | GitError::Timeout { .. })
                    if attempt < self.retry.attempts =>
                {
                    let delay = self.retry.delay(attempt);
                    tracing::debug!(url = %self.runner.display_url, operation, attempt, ?delay, "retrying git");
                    tokio::time::sleep(delay).await;
                }
                other => return other.map(|o| o.stdout),
            }
        }
    }

    async fn list_heads(&self, pattern: Option<&str>) -> Result<Vec<Branch>, GitError> {
        let url = self.runner.url.clone();
        let mut args = vec!["ls-remote", "--heads", url.as_str()];
        args.extend(pattern);
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

    /// Empties the cache repository after a fetch too large for the cache:
    /// neither its partial nor its complete pack may stay on disk. The
    /// blob reader goes too (it has the old packs open).
    fn reset_cache(&self) {
        if let Ok(mut slot) = self.cat_file.try_lock() {
            *slot = None;
        }
        let _ = std::fs::remove_dir_all(&self.runner.git_dir);
        if let Err(error) = init_bare(&self.runner) {
            tracing::warn!(url = %self.runner.display_url, %error, "could not re-create the git cache after an oversized fetch");
        }
    }

    fn invalid(&self, operation: &'static str, detail: &str) -> GitError {
        GitError::InvalidOutput {
            url: self.url(),
            operation,
            detail: detail.chars().take(200).collect(),
        }
    }

    async fn has_commit(&self, commit: &str) -> bool {
        let spec = format!("{commit}^{{commit}}");
        self.runner
            .run("cat-file", &["cat-file", "-e", &spec], None)
            .await
            .is_ok()
    }

    /// Makes `commit` present in the cache: a shallow fetch of exactly that
    /// commit, falling back to fetching every branch with full history for
    /// servers that refuse to serve a commit by id (protocol v0 serves only
    /// advertised tips).
    async fn ensure_commit(&self, commit: &str) -> Result<(), GitError> {
        if !super::is_object_id(commit) {
            return Err(GitError::InvalidObjectId {
                url: self.url(),
                what: commit.to_string(),
            });
        }
        let _guard = self.fetch_lock.lock().await;
        if self.has_commit(commit).await {
            return Ok(());
        }
        let url = self.runner.url.clone();
        let depth = self.depth.map(|d| format!("--depth={}", d.max(1)));
        let mut args = vec![
            "fetch",
            "--quiet",
            "--no-tags",
            "--no-write-fetch-head",
            "--no-recurse-submodules",
        ];
        args.extend(depth.as_deref());
        args.extend([url.as_str(), commit]);
        match self.remote("fetch", &args).await {
            Ok(_) => {}
            Err(GitError::CommandFailed { .. }) => {
                let refspec = "+refs/heads/*:refs/remotes/origin/*";
                let mut args = vec!["fetch", "--quiet", "--no-tags", "--no-recurse-submodules"];
                // A full fetch into a shallow cache stops at the shallow
                // boundary, so a commit older than what earlier shallow
                // fetches brought would stay missing.
                if self.runner.git_dir.join("shallow").exists() {
                    args.push("--unshallow");
                }
                args.extend([url.as_str(), refspec]);
                self.remote("fetch", &args).await?;
            }
            Err(e) => return Err(e),
        }
        if self.has_commit(commit).await {
            Ok(())
        } else {
            Err(GitError::CommitNotFound {
                url: self.url(),
                commit: commit.to_string(),
            })
        }
    }

    async fn fetch_tree_impl(&self, commit: &str) -> Result<Tree, GitError> {
        self.ensure_commit(commit).await?;
        let root = format!("{commit}^{{tree}}");
        let tree_sha = self
            .runner
            .run(
                "rev-parse",
                &["rev-parse", "--verify", "--quiet", &root],
                None,
            )
            .await?
            .stdout;
        let mut tree = Tree {
            commit_sha: commit.to_string(),
            tree_sha: String::from_utf8_lossy(&tree_sha).trim().to_string(),
            ..Tree::default()
        };
        let listing = self
            .runner
            .run(
                "ls-tree",
                &["ls-tree", "-r", "-l", "-z", "--full-tree", commit],
                None,
            )
            .await?
            .stdout;
        for record in listing.split(|b| *b == 0).filter(|r| !r.is_empty()) {
            let (meta, path) = split_at_tab(record)
                .ok_or_else(|| self.invalid("ls-tree", &String::from_utf8_lossy(record)))?;
            let meta = std::str::from_utf8(meta)
                .map_err(|_| self.invalid("ls-tree", "metadata is not UTF-8"))?;
            let mut fields = meta.split_ascii_whitespace();
            let (Some(mode), Some(_kind), Some(sha), Some(size)) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                return Err(self.invalid("ls-tree", meta));
            };
            let mode = u32::from_str_radix(mode, 8).map_err(|_| self.invalid("ls-tree", meta))?;
            match build_tree_entry(path, mode, sha, size.parse().ok()) {
                Ok(entry) => tree.entries.push(entry),
                Err(rejected) => tree.rejected.push(rejected),
            }
        }
        tree.normalise();
        Ok(tree)
    }

    async fn fetch_blob_impl(&self, sha: &str, max_size: u64) -> Result<Bytes, GitError> {
        if !super::is_object_id(sha) {
            return Err(GitError::InvalidObjectId {
                url: self.url(),
                what: sha.to_string(),
            });
        }
        let mut slot = self.cat_file.lock().await;
        if slot.is_none() {
            *slot = Some(CatFile::spawn(&self.runner)?);
        }
        let cat_file = slot.as_mut().expect("spawned above");
        let read =
            tokio::time::timeout(self.runner.timeout, cat_file.read_blob(sha, max_size)).await;
        let (url, sha) = (self.url(), sha.to_string());
        match read {
            Ok(Ok(BlobRead::Blob(bytes))) => Ok(bytes),
            Ok(Ok(BlobRead::Missing)) => Err(GitError::ObjectNotFound { url, sha }),
            Ok(Ok(BlobRead::NotABlob(kind))) => Err(GitError::NotABlob { url, sha, kind }),
            Ok(Ok(BlobRead::TooLarge(size))) => Err(GitError::BlobTooLarge {
                url,
                sha,
                size,
                max: max_size,
            }),
            Ok(Err(source)) => {
                *slot = None;
                Err(GitError::Io {
                    url,
                    operation: "cat-file",
                    source,
                })
            }
            Err(_) => {
                *slot = None;
                Err(GitError::Timeout {
                    url,
                    operation: "cat-file",
                    seconds: self.runner.timeout.as_secs(),
                })
            }
        }
    }

    async fn fetch_changes_impl(
        &self,
        base: &str,
        head: &str,
    ) -> Result<Option<Vec<Change>>, GitError> {
        if !super::is_object_id(base) {
            return Err(GitError::InvalidObjectId {
                url: self.url(),
                what: base.to_string(),
            });
        }
        if !self.has_commit(base).await {
            return Ok(None);
        }
        self.ensure_commit(head).await?;
        let out = self
            .runner
            .run(
                "diff-tree",
                &["diff-tree", "-r", "-z", "--no-renames", "--raw", base, head],
                None,
            )
            .await?
            .stdout;
        let mut changes = Vec::new();
        let mut fields = out.split(|b| *b == 0).filter(|f| !f.is_empty());
        while let Some(meta) = fields.next() {
            let path = fields
                .next()
                .ok_or_else(|| self.invalid("diff-tree", "record without a path"))?;
            let meta = std::str::from_utf8(meta)
                .map_err(|_| self.invalid("diff-tree", "metadata is not UTF-8"))?;
            let parts: Vec<&str> = meta.trim_start_matches(':').split(' ').collect();
            let [_, _, _, new_sha, status] = parts[..] else {
                return Err(self.invalid("diff-tree", meta));
            };
            let Ok(path) = super::content::classify_path(path) else {
                return Ok(None);
            };
            let (status, blob_sha) = match status {
                "A" => (ChangeStatus::Added, Some(new_sha.to_string())),
                "M" | "T" => (ChangeStatus::Modified, Some(new_sha.to_string())),
                "D" => (ChangeStatus::Removed, None),
                _ => return Ok(None),
            };
            changes.push(Change {
                path: path.to_string(),
                status,
                blob_sha,
            });
        }
        changes.sort();
        Ok(Some(changes))
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
        let pattern = format!("refs/heads/{branch}");
        let found = self
            .list_heads(Some(&pattern))
            .await?
            .into_iter()
            .find(|b| b.name == branch);
        match found {
            Some(b) if cached.is_some_and(|c| c.sha == b.commit_sha) => Ok(HeadLookup::Unchanged),
            Some(b) => Ok(HeadLookup::Changed {
                sha: b.commit_sha,
                etag: None,
            }),
            None if self.list_heads(None).await?.is_empty() => {
                Err(GitError::EmptyRepository { url: self.url() })
            }
            None => Err(GitError::BranchNotFound {
                url: self.url(),
                branch: branch.to_string(),
            }),
        }
    }
}

/// `git init --bare` of the cache repository (synchronous, local).
fn init_bare(runner: &GitRunner) -> Result<(), GitError> {
    let mut cmd = runner.command().into_std();
    cmd.args(["init", "--bare", "--quiet"]);
    let out = cmd.output().map_err(|source| GitError::Io {
        url: runner.display_url.clone(),
        operation: "init",
        source,
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(GitError::CacheDirectory {
        path: runner.git_dir.display().to_string(),
        source: std::io::Error::other(String::from_utf8_lossy(&out.stderr).into_owned()),
    })
}

/// Splits `user:password@` out of an http(s) URL.
fn split_userinfo(url: &str) -> (String, Option<Credentials>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_string(), None);
    };
    if !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") {
        return (url.to_string(), None);
    }
    let host_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..host_end].rfind('@') else {
        return (url.to_string(), None);
    };
    let (username, password) = rest[..at].split_once(':').unwrap_or((&rest[..at], ""));
    let credentials = match (username, password) {
        ("", "") => None,
        ("", token) | (token, "") => Some(Credentials::Token(token.to_string())),
        (user, pass) => Some(Credentials::Basic {
            username: user.to_string(),
            password: pass.to_string(),
        }),
    };
    (format!("{scheme}://{}", &rest[at + 1..]), credentials)
}

fn split_at_tab(record: &[u8]) -> Option<(&[u8], &[u8])> {
    let tab = record.iter().position(|b| *b == b'\t')?;
    Some((&record[..tab], &record[tab + 1..]))
}

impl Source for GitSource {
    fn describe(&self) -> String {
        format!("git:{}", self.runner.display_url)
    }

    fn fetch_branches(&self) -> BoxFuture<'_, SourceResult<Vec<Branch>>> {
        Box::pin(async move { Ok(self.list_heads(None).await?) })
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
    ) -> BoxFuture<'a, SourceResult<Option<Vec<Change>>>> {
        Box::pin(async move { Ok(self.fetch_changes_impl(base, head).await?) })
    }

    fn stats(&self) -> SourceStats {
        self.stats.snapshot()
    }
}
