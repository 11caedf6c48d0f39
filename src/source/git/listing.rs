//! Trees from the cache repository (I/O: local git only): the recursive
//! `git ls-tree` of a commit, parsed as it streams from git and refused past
//! the tree limit, with the parsing of its NUL-separated output kept pure.
//! The change set between two commits is in `changes`.

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use super::GitRemote;
use super::error::{GitError, build_error_from_stderr};
use crate::source::Tree;
use crate::source::tree::build_tree_entry;

impl GitRemote {
    pub(super) async fn fetch_tree_impl(&self, commit: &str) -> Result<Tree, GitError> {
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
        self.stream_ls_tree(commit, &mut tree).await?;
        tree.normalise();
        Ok(tree)
    }

    /// Runs `git ls-tree -r -l -z` on `commit` and parses its records as
    /// they arrive on the pipe, never holding the whole listing: past the
    /// tree limit, git is killed and the tree refused. Within the timeout.
    async fn stream_ls_tree(&self, commit: &str, tree: &mut Tree) -> Result<(), GitError> {
        let operation = "ls-tree";
        let io_err = |source| GitError::Io {
            url: self.url(),
            operation,
            source,
        };
        let mut cmd = self.runner.command();
        cmd.args(["ls-tree", "-r", "-l", "-z", "--full-tree", commit]);
        let mut child = cmd.spawn().map_err(io_err)?;
        let _running = self.runner.command_running();
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(io_err(std::io::Error::other("ls-tree pipes missing")));
        };
        let limit = self.tree_limit;
        let read = async {
            // stderr is drained beside stdout (bounded), so git never blocks on it.
            let errors = async {
                let mut kept = Vec::new();
                let _ = stderr.take(64 * 1024).read_to_end(&mut kept).await;
                kept
            };
            let records = async {
                let mut stdout = BufReader::new(stdout);
                let mut record = Vec::new();
                loop {
                    record.clear();
                    if stdout.read_until(0, &mut record).await.map_err(io_err)? == 0 {
                        return Ok(());
                    }
                    if record.last() == Some(&0) {
                        record.pop();
                    }
                    parse_ls_tree_record(&record, tree)
                        .map_err(|detail| self.invalid(operation, &detail))?;
                    if tree.entries.len() + tree.rejected.len() > limit.max_entries {
                        return Err(GitError::TreeTooLarge {
                            url: self.url(),
                            commit: commit.to_string(),
                            limit: limit.max_entries,
                            set_by: limit.set_by,
                        });
                    }
                }
            };
            let (records, errors) = tokio::join!(records, errors);
            records?;
            let status = child.wait().await.map_err(io_err)?;
            if status.success() {
                return Ok(());
            }
            let stderr = String::from_utf8_lossy(&errors)
                .replace(&self.runner.url, &self.runner.display_url);
            Err(build_error_from_stderr(
                &self.runner.display_url,
                operation,
                status.to_string(),
                &stderr,
            ))
        };
        // On a refusal or a timeout `child` is dropped here, which kills git.
        match tokio::time::timeout(self.runner.timeout, read).await {
            Ok(result) => result,
            Err(_) => Err(GitError::Timeout {
                url: self.url(),
                operation,
                seconds: self.runner.timeout.as_secs(),
            }),
        }
    }
}

/// Adds the records of `git ls-tree -r -l -z` to `tree`: accepted entries
/// and rejected ones (unsafe paths, unknown modes). `Err` holds what could
/// not be read.
#[cfg(test)]
fn parse_ls_tree(listing: &[u8], tree: &mut Tree) -> Result<(), String> {
    for record in listing.split(|b| *b == 0).filter(|r| !r.is_empty()) {
        parse_ls_tree_record(record, tree)?;
    }
    Ok(())
}

/// Adds one record of `git ls-tree -r -l -z` (without its NUL) to `tree`;
/// an empty record adds nothing.
fn parse_ls_tree_record(record: &[u8], tree: &mut Tree) -> Result<(), String> {
    if record.is_empty() {
        return Ok(());
    }
    let (meta, path) =
        split_at_tab(record).ok_or_else(|| String::from_utf8_lossy(record).into_owned())?;
    let meta = std::str::from_utf8(meta).map_err(|_| "metadata is not UTF-8".to_string())?;
    let mut fields = meta.split_ascii_whitespace();
    let (Some(mode), Some(_kind), Some(sha), Some(size)) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(meta.to_string());
    };
    let mode = u32::from_str_radix(mode, 8).map_err(|_| meta.to_string())?;
    match build_tree_entry(path, mode, sha, size.parse().ok()) {
        Ok(entry) => tree.entries.push(entry),
        Err(rejected) => tree.rejected.push(rejected),
    }
    Ok(())
}

pub(super) fn split_at_tab(record: &[u8]) -> Option<(&[u8], &[u8])> {
    let tab = record.iter().position(|b| *b == b'\t')?;
    Some((&record[..tab], &record[tab + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "a12243f2e0d67a9ab5e1c0e3b3c9bd9c8f2b6e0b";

    #[test]
    fn ls_tree_records_become_entries_and_garbage_is_reported() {
        let listing = format!("100644 blob {A}      12\tsrc/main.rs\0");
        let mut tree = Tree::default();
        parse_ls_tree(listing.as_bytes(), &mut tree).unwrap();
        assert_eq!(tree.entries.len(), 1, "{tree:?}");
        assert_eq!(tree.entries[0].path, "src/main.rs");

        let mut tree = Tree::default();
        let err = parse_ls_tree(b"100644 blob\0", &mut tree).unwrap_err();
        assert_eq!(err, "100644 blob");
    }
}
