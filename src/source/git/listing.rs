//! Trees and changes from the cache repository (I/O: local git only): the
//! recursive `git ls-tree` of a commit and the `git diff-tree` between two
//! commits, with the parsing of their NUL-separated output kept pure.

use super::GitRemote;
use super::error::GitError;
use crate::source::content::classify_path;
use crate::source::tree::build_tree_entry;
use crate::source::{Change, ChangeStatus, Tree, is_object_id};

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
    ) -> Result<Option<Vec<Change>>, GitError> {
        if !is_object_id(base) {
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
        parse_diff_tree(&out).map_err(|detail| self.invalid("diff-tree", &detail))
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

/// The changes in `git diff-tree -r -z --no-renames --raw` output, sorted;
/// `None` when a record cannot be expressed as a [`Change`] (a path the
/// pipeline would not accept, an unknown status), so the caller compares
/// trees instead. `Err` holds what could not be read.
fn parse_diff_tree(out: &[u8]) -> Result<Option<Vec<Change>>, String> {
    let mut changes = Vec::new();
    let mut fields = out.split(|b| *b == 0).filter(|f| !f.is_empty());
    while let Some(meta) = fields.next() {
        let path = fields
            .next()
            .ok_or_else(|| "record without a path".to_string())?;
        let meta = std::str::from_utf8(meta).map_err(|_| "metadata is not UTF-8".to_string())?;
        let parts: Vec<&str> = meta.trim_start_matches(':').split(' ').collect();
        let [_, _, _, new_sha, status] = parts[..] else {
            return Err(meta.to_string());
        };
        let Ok(path) = classify_path(path) else {
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
        let changes = parse_diff_tree(out.as_bytes()).unwrap().unwrap();
        let seen: Vec<_> = changes
            .iter()
            .map(|c| (c.path.as_str(), c.status, c.blob_sha.as_deref()))
            .collect();
        assert_eq!(
            seen,
            [
                ("a.rs", ChangeStatus::Added, Some(A)),
                ("m.rs", ChangeStatus::Removed, None),
                ("z.rs", ChangeStatus::Modified, Some(B)),
            ]
        );
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
