//! Bringing commits into the cache repository (I/O: the remote and the
//! local cache directory): shallow fetches of exactly the commit asked for,
//! with a full fetch for servers that refuse that, retried while the remote
//! is unreachable, bounded by the cache's size limit, and `git init --bare`
//! of the cache itself.
//!
//! Every commit a fetch brought is kept under
//! `refs/projectsync/commits/<sha>` (the [`KEPT_COMMITS`] most recent ones),
//! so the next fetch offers them to the server as `have`s and receives only
//! the objects the cache lacks, and the base of the next scan stays in the
//! cache for `git diff-tree`, across restarts too. What each fetch added is
//! counted from the object directory ([`objects`]) in the source's stats.

use super::command::GitRunner;
use super::error::GitError;
use super::{GitRemote, cache, objects};
use crate::source::{Transfer, is_object_id};

/// The most of a remote's branch listing the operator reads: about 100,000
/// heads (a line is a 40-character id, a tab and `refs/heads/<name>`).
pub(super) const MAX_LISTING_BYTES: usize = 8 << 20;

/// Where fetched commits are kept reachable.
pub(super) const KEPT_PREFIX: &str = "refs/projectsync/commits/";

/// How many fetched commits stay under [`KEPT_PREFIX`]: the one just synced
/// (the next run's base), and a few before it for pinned commits and
/// branches that move back and forth.
pub(super) const KEPT_COMMITS: usize = 4;

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
            let mut result = if operation == "ls-remote" {
                self.runner
                    .run_listing(operation, args, MAX_LISTING_BYTES)
                    .await
            } else {
                self.runner.run_bounded(operation, args, None, limit).await
            };
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
    /// neither its partial nor its complete pack may stay on disk. Idle
    /// blob readers go too (they have the old packs open).
    pub(super) fn reset_cache(&self) {
        self.helpers.discard(&self.runner.git_dir);
        let _ = std::fs::remove_dir_all(&self.runner.git_dir);
        if let Err(error) = init_bare(&self.runner) {
            tracing::warn!(url = %self.runner.display_url, %error, "could not re-create the git cache after an oversized fetch");
        }
    }

    /// Whether `commit` is in the cache, asked of the `cat-file` helper
    /// (which sees packs a fetch added since it started: git looks again
    /// when an object is not where it looked). A helper that cannot answer
    /// counts as absent: the commit is then fetched.
    pub(super) async fn has_commit(&self, commit: &str) -> bool {
        self.resolves(&format!("{commit}^{{commit}}")).await
    }

    /// Whether git resolves `name` in the cache.
    async fn resolves(&self, name: &str) -> bool {
        match self
            .with_helper(|mut cat| async move {
                let found = cat.info(name).await;
                (cat, found)
            })
            .await
        {
            Ok(found) => found.is_some(),
            Err(error) => {
                tracing::debug!(url = %self.runner.display_url, %error, "could not ask the cache");
                false
            }
        }
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
            return self.keep_commit(commit).await;
        }
        let before = self.object_counts().await;
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
        let after = self.object_counts().await;
        if let (Some(before), Some(after)) = (before, after) {
            self.stats.record_transfer(Transfer {
                objects: after.objects.saturating_sub(before.objects),
                bytes: after.bytes.saturating_sub(before.bytes),
            });
        }
        if self.has_commit(commit).await {
            self.keep_commit(commit).await
        } else {
            Err(GitError::CommitNotFound {
                url: self.url(),
                commit: commit.to_string(),
            })
        }
    }
}

impl GitRemote {
    /// Objects and bytes in the cache, loose and packed, counted from the
    /// object directory; `None` when it cannot be read (the transfer then
    /// goes uncounted, the fetch is fine).
    async fn object_counts(&self) -> Option<Transfer> {
        let objects = self.runner.git_dir.join("objects");
        tokio::task::spawn_blocking(move || objects::count(&objects))
            .await
            .ok()?
            .ok()
    }

    /// Puts `commit` under [`KEPT_PREFIX`] and drops the oldest kept
    /// commits beyond [`KEPT_COMMITS`], never `commit` itself: one listing
    /// and one `update-ref --stdin` transaction (a run's fixed cost is
    /// counted in git processes). Nothing to do when it is kept already
    /// (an unchanged or repeated commit): the kept set stays as it is.
    async fn keep_commit(&self, commit: &str) -> Result<(), GitError> {
        let name = format!("{KEPT_PREFIX}{commit}");
        if self.resolves(&name).await {
            return Ok(());
        }
        let listed = self
            .runner
            .run(
                "for-each-ref",
                &[
                    "for-each-ref",
                    "--sort=-committerdate",
                    "--format=%(refname)",
                    KEPT_PREFIX,
                ],
                None,
            )
            .await?
            .stdout;
        let listed = String::from_utf8_lossy(&listed);
        let stale = build_stale_refs(listed.lines(), &name, KEPT_COMMITS);
        let script: String = std::iter::once(format!("update {name} {commit}\n"))
            .chain(stale.iter().map(|r| format!("delete {r}\n")))
            .collect();
        self.runner
            .run(
                "update-ref",
                &["update-ref", "--stdin"],
                Some(script.as_bytes()),
            )
            .await?;
        Ok(())
    }
}

/// The kept refs to delete: all but the `keep` first of `newest_first`,
/// where `current` always counts as one of those kept.
fn build_stale_refs<'a>(
    newest_first: impl Iterator<Item = &'a str>,
    current: &str,
    keep: usize,
) -> Vec<&'a str> {
    newest_first
        .filter(|r| *r != current && !r.is_empty())
        .skip(keep.saturating_sub(1))
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_commit_and_the_newest_others_are_kept() {
        let refs = ["r/e", "r/d", "r/c", "r/b", "r/a"];
        assert_eq!(build_stale_refs(refs.into_iter(), "r/a", 3), ["r/c", "r/b"]);
        assert!(build_stale_refs(["r/a"].into_iter(), "r/a", 3).is_empty());
    }
}
