//! Bringing commits into the cache repository (I/O: the remote and the
//! local cache directory): shallow fetches of exactly the commit asked for,
//! with a full fetch for servers that refuse that, retried while the remote
//! is unreachable, bounded by the cache's size limit, and `git init --bare`
//! of the cache itself.

use super::command::GitRunner;
use super::error::GitError;
use super::{GitRemote, cache};
use crate::source::is_object_id;

impl GitRemote {
    /// A remote operation, counted in the stats (200 ok, 0 failed), retried
    /// with backoff while the remote is unreachable or slow.
    pub(super) async fn remote(
        &self,
        operation: &'static str,
        args: &[&str],
    ) -> Result<Vec<u8>, GitError> {
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

    /// Empties the cache repository after a fetch too large for the cache:
    /// neither its partial nor its complete pack may stay on disk. The
    /// blob reader goes too (it has the old packs open).
    pub(super) fn reset_cache(&self) {
        if let Ok(mut slot) = self.cat_file.try_lock() {
            *slot = None;
        }
        let _ = std::fs::remove_dir_all(&self.runner.git_dir);
        if let Err(error) = init_bare(&self.runner) {
            tracing::warn!(url = %self.runner.display_url, %error, "could not re-create the git cache after an oversized fetch");
        }
    }

    pub(super) async fn has_commit(&self, commit: &str) -> bool {
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
    pub(super) async fn ensure_commit(&self, commit: &str) -> Result<(), GitError> {
        if !is_object_id(commit) {
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
}

/// `git init --bare` of the cache repository (synchronous, local).
pub(super) fn init_bare(runner: &GitRunner) -> Result<(), GitError> {
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
