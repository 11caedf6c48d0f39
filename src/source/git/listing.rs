//! Trees from the cache repository (I/O: local git only): the recursive
//! `git ls-tree` of a commit, with the parsing of its NUL-separated output
//! kept pure. The change set between two commits is in `changes`.

use super::GitRemote;
use super::error::GitError;
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
