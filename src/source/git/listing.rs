//! Trees and changes from the cache repository (I/O: local git only): the
//! recursive `git ls-tree` of a commit and the `git diff-tree` between two
//! commits, with the parsing of their NUL-separated output kept pure.

use super::GitRemote;
use super::error::GitError;
use crate::source::content::classify_path;
use crate::source::tree::build_tree_entry;
use crate::source::{Change, ChangeKind, ChangeSet, Changes, Tree, is_object_id};

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
        let listing = self
            .runner
            .run(
                "ls-tree",
                &["ls-tree", "-r", "-l", "-z", "--full-tree", commit],
                None,
            )
            .await?
            .stdout;
        parse_ls_tree(&listing, &mut tree).map_err(|detail| self.invalid("ls-tree", &detail))?;
        tree.normalise();
        Ok(tree)
    }

    pub(super) async fn fetch_changes_impl(
        &self,
        base: &str,
        head: &str,
    ) -> Result<Changes, GitError> {
        if !is_object_id(base) {
            return Err(GitError::InvalidObjectId {
                url: self.url(),
                what: base.to_string(),
            });
        }
        if !self.has_commit(base).await {
            return Ok(Changes::Unavailable {
                reason: "base commit is not in the cache",
            });
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
        let Some(mut set) =
            parse_diff_tree(&out).map_err(|detail| self.invalid("diff-tree", &detail))?
        else {
            return Ok(Changes::Unavailable {
                reason: "diff-tree reported a change that is not a file change",
            });
        };
        // diff-tree gives modes and ids but not sizes: one batch query.
        let ids: String = set
            .changes
            .iter()
            .filter_map(|c| match &c.kind {
                ChangeKind::Upsert(e) if e.kind.has_blob() => Some(format!("{}\n", e.blob_sha)),
                _ => None,
            })
            .collect();
        if !ids.is_empty() {
            let out = self
                .runner
                .run(
                    "cat-file",
                    &["cat-file", "--batch-check=%(objectsize)"],
                    Some(ids.as_bytes()),
                )
                .await?
                .stdout;
            let mut sizes = String::from_utf8_lossy(&out)
                .lines()
                .map(|l| l.trim().parse::<u64>().ok())
                .collect::<Vec<_>>()
                .into_iter();
            for change in &mut set.changes {
                if let ChangeKind::Upsert(e) = &mut change.kind
                    && e.kind.has_blob()
                {
                    e.size = sizes.next().flatten();
                }
            }
        }
        Ok(Changes::Complete(set))
    }
}

/// Adds the records of `git ls-tree -r -l -z` to `tree`: accepted entries
/// and rejected ones (unsafe paths, unknown modes). `Err` holds what could
/// not be read.
fn parse_ls_tree(listing: &[u8], tree: &mut Tree) -> Result<(), String> {
    for record in listing.split(|b| *b == 0).filter(|r| !r.is_empty()) {
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
    }
    Ok(())
}

/// The changes in `git diff-tree -r -z --no-renames --raw` output, sorted,
/// without sizes; `None` when a record cannot be expressed as a [`Change`]
/// (an unknown status), so the caller compares trees instead. Paths or
/// modes a tree read rejects are rejected here too. `Err` holds what could
/// not be read.
fn parse_diff_tree(out: &[u8]) -> Result<Option<ChangeSet>, String> {
    let mut set = ChangeSet::default();
    let mut fields = out.split(|b| *b == 0).filter(|f| !f.is_empty());
    while let Some(meta) = fields.next() {
        let path = fields
            .next()
            .ok_or_else(|| "record without a path".to_string())?;
        let meta = std::str::from_utf8(meta).map_err(|_| "metadata is not UTF-8".to_string())?;
        let parts: Vec<&str> = meta.trim_start_matches(':').split(' ').collect();
        let [_, new_mode, _, new_sha, status] = parts[..] else {
            return Err(meta.to_string());
        };
        let kind = match status {
            "A" | "M" | "T" => {
                let mode = u32::from_str_radix(new_mode, 8).map_err(|_| meta.to_string())?;
                match build_tree_entry(path, mode, new_sha, None) {
                    Ok(entry) => ChangeKind::Upsert(entry),
                    Err(rejected) => {
                        set.rejected.push(rejected);
                        continue;
                    }
                }
            }
            "D" => ChangeKind::Removed,
            _ => return Ok(None),
        };
        let Ok(path) = classify_path(path) else {
            continue;
        };
        set.changes.push(Change {
            path: path.to_string(),
            kind,
        });
    }
    set.changes.sort();
    set.rejected.sort();
    Ok(Some(set))
}

fn split_at_tab(record: &[u8]) -> Option<(&[u8], &[u8])> {
    let tab = record.iter().position(|b| *b == b'\t')?;
    Some((&record[..tab], &record[tab + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "a12243f2e0d67a9ab5e1c0e3b3c9bd9c8f2b6e0b";
    const B: &str = "b12243f2e0d67a9ab5e1c0e3b3c9bd9c8f2b6e0b";
    const ZERO: &str = "0000000000000000000000000000000000000000";

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

    #[test]
    fn diff_tree_records_become_sorted_changes() {
        let out = format!(
            ":100644 100644 {A} {B} M\0z.rs\0:000000 100644 {ZERO} {A} A\0a.rs\0\
             :100644 000000 {A} {ZERO} D\0m.rs\0"
        );
        let changes = parse_diff_tree(out.as_bytes()).unwrap().unwrap().changes;
        let seen: Vec<_> = changes
            .iter()
            .map(|c| match &c.kind {
                ChangeKind::Upsert(e) => (c.path.as_str(), Some(e.blob_sha.as_str())),
                ChangeKind::Removed => (c.path.as_str(), None),
            })
            .collect();
        assert_eq!(seen, [("a.rs", Some(A)), ("m.rs", None), ("z.rs", Some(B))]);
    }

    #[test]
    fn diff_tree_copies_and_unreadable_records_are_not_changes() {
        let copied = format!(":100644 100644 {A} {A} C100\0a.rs\0");
        assert_eq!(parse_diff_tree(copied.as_bytes()).unwrap(), None);
        let no_path = format!(":100644 100644 {A} {B} M\0");
        assert_eq!(
            parse_diff_tree(no_path.as_bytes()).unwrap_err(),
            "record without a path"
        );
    }
}
