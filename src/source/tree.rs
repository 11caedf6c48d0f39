//! Tree types shared by the sources, and git tree hashing (pure, no I/O).
//!
//! A [`Tree`] is the flat, recursive listing of a commit. Entries whose path
//! is unsafe are kept apart in [`Tree::rejected`] with the reason, never
//! dropped silently. [`build_directory_hashes`] recomputes git's tree object
//! ids from a listing, which lets the GitHub source compare a new commit's
//! subtrees with the previous sync's without asking for the old trees.

use std::collections::{BTreeMap, HashMap};

use sha1::{Digest, Sha1};

use super::content::{PathIssue, classify_path, display_path};

/// The default of `spec.maxTreeEntries`: ten times what most monorepos
/// hold, and about 40 MiB of listing in memory.
pub const DEFAULT_MAX_TREE_ENTRIES: usize = 200_000;

/// The default of the operator's `--max-tree-entries`, the ceiling on
/// `spec.maxTreeEntries`: a listing of this size is about 100 MiB in
/// memory, a fifth of the chart's memory limit.
pub const DEFAULT_TREE_ENTRIES_CEILING: usize = 500_000;

/// The most entries a tree listing may have before it is refused, and which
/// setting made it so (named in the error, so the user knows what to
/// change). Both sources stop listing as soon as the count passes it: a
/// few KB of nested trees that expand to millions of paths cost no more
/// memory than the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeLimit {
    pub max_entries: usize,
    /// `spec.maxTreeEntries`, or the operator's `--max-tree-entries`.
    pub set_by: &'static str,
}

impl TreeLimit {
    /// The limit of `spec.maxTreeEntries` (`None`: the default) under the
    /// operator's ceiling: the lower of the two, named.
    pub fn new(spec: Option<u64>, ceiling: usize) -> TreeLimit {
        let spec = spec
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
            .unwrap_or(DEFAULT_MAX_TREE_ENTRIES);
        if spec <= ceiling {
            TreeLimit {
                max_entries: spec,
                set_by: "spec.maxTreeEntries",
            }
        } else {
            TreeLimit {
                max_entries: ceiling,
                set_by: "the operator's --max-tree-entries",
            }
        }
    }
}

impl Default for TreeLimit {
    fn default() -> Self {
        TreeLimit {
            max_entries: DEFAULT_MAX_TREE_ENTRIES,
            set_by: "spec.maxTreeEntries",
        }
    }
}

/// What a tree entry is, from its git mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EntryKind {
    /// Mode 100644 (and legacy 100664).
    File,
    /// Mode 100755.
    Executable,
    /// Mode 120000: the blob holds the link target; never followed.
    Symlink,
    /// Mode 160000 (gitlink): `blob_sha` is the submodule's commit; recorded,
    /// not fetched.
    Submodule,
}

impl EntryKind {
    /// The kind for a git mode; `None` for trees and unknown modes.
    pub fn from_mode(mode: u32) -> Option<EntryKind> {
        match mode {
            0o100644 | 0o100664 => Some(EntryKind::File),
            0o100755 => Some(EntryKind::Executable),
            0o120000 => Some(EntryKind::Symlink),
            0o160000 => Some(EntryKind::Submodule),
            _ => None,
        }
    }

    /// Whether the entry has blob content a caller may fetch.
    pub fn has_blob(self) -> bool {
        !matches!(self, EntryKind::Submodule)
    }
}

/// One non-directory entry of a recursive tree.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TreeEntry {
    /// Repository-relative path, checked by [`classify_path`].
    pub path: String,
    /// The blob id (for submodules: the pinned commit id).
    pub blob_sha: String,
    /// Blob size in bytes; `None` for submodules.
    pub size: Option<u64>,
    /// The git mode, e.g. `0o100644`.
    pub mode: u32,
    pub kind: EntryKind,
}

/// A tree entry that cannot be used, with the reason.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RejectedEntry {
    /// The path for display (lossy UTF-8, NUL shown as `\0`).
    pub path: String,
    pub object_sha: String,
    pub mode: u32,
    pub issue: RejectReason,
}

/// Why an entry was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RejectReason {
    UnsafePath(PathIssue),
    UnknownMode,
}

/// The recursive tree of a commit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    pub commit_sha: String,
    /// The root tree object id.
    pub tree_sha: String,
    /// Entries sorted by path.
    pub entries: Vec<TreeEntry>,
    pub rejected: Vec<RejectedEntry>,
    /// True when the provider could not list the tree in one answer and the
    /// source walked subtrees (GitHub's `truncated: true`).
    pub walked: bool,
}

impl Tree {
    /// Sorts entries and rejections by path, the order callers rely on.
    pub fn normalise(&mut self) {
        self.entries.sort_by(|a, b| a.path.cmp(&b.path));
        self.rejected.sort();
    }
}

/// Classifies one raw entry into a usable entry or a rejection.
pub fn build_tree_entry(
    raw_path: &[u8],
    mode: u32,
    sha: &str,
    size: Option<u64>,
) -> Result<TreeEntry, RejectedEntry> {
    let reject = |issue| RejectedEntry {
        path: display_path(raw_path),
        object_sha: sha.to_string(),
        mode,
        issue,
    };
    let path = classify_path(raw_path).map_err(|i| reject(RejectReason::UnsafePath(i)))?;
    let kind = EntryKind::from_mode(mode).ok_or_else(|| reject(RejectReason::UnknownMode))?;
    let size = if kind.has_blob() { size } else { None };
    Ok(TreeEntry {
        path: path.to_string(),
        blob_sha: sha.to_string(),
        size,
        mode,
        kind,
    })
}

/// One item of a git tree object: name, mode text, raw object id.
type TreeItem = (String, &'static str, [u8; 20]);

/// Recomputes the git tree id of every directory of `entries` (`""` is the
/// root), as git would hash them. Only SHA-1 object ids are supported; the
/// result is `None` for others. A listing with rejected entries hashes
/// differently from the real tree for the affected directories, which only
/// makes a walk descend there: it can cost requests, never correctness.
pub fn build_directory_hashes(entries: &[TreeEntry]) -> Option<HashMap<String, String>> {
    let mut children: BTreeMap<String, Vec<TreeItem>> = BTreeMap::new();
    children.entry(String::new()).or_default();
    for entry in entries {
        let (dir, name) = split_parent(&entry.path);
        let mode = match entry.kind {
            EntryKind::File if entry.mode == 0o100664 => "100664",
            EntryKind::File => "100644",
            EntryKind::Executable => "100755",
            EntryKind::Symlink => "120000",
            EntryKind::Submodule => "160000",
        };
        children.entry(dir.to_string()).or_default().push((
            name.to_string(),
            mode,
            decode_sha1(&entry.blob_sha)?,
        ));
        let mut parent = dir;
        while !parent.is_empty() {
            let (up, _) = split_parent(parent);
            children.entry(up.to_string()).or_default();
            children.entry(parent.to_string()).or_default();
            parent = up;
        }
    }
    let mut dirs: Vec<String> = children.keys().cloned().collect();
    dirs.sort_by_key(|d| {
        std::cmp::Reverse(if d.is_empty() {
            0
        } else {
            d.matches('/').count() + 1
        })
    });
    let mut hashes = HashMap::new();
    for dir in dirs {
        let mut list = children.remove(&dir).unwrap_or_default();
        list.sort_by(|a, b| {
            git_tree_order(&a.0, a.1 == "40000").cmp(&git_tree_order(&b.0, b.1 == "40000"))
        });
        let mut body = Vec::new();
        for (name, mode, id) in &list {
            body.extend_from_slice(mode.as_bytes());
            body.push(b' ');
            body.extend_from_slice(name.as_bytes());
            body.push(0);
            body.extend_from_slice(id);
        }
        let mut hasher = Sha1::new();
        hasher.update(format!("tree {}\0", body.len()).as_bytes());
        hasher.update(&body);
        let id: [u8; 20] = hasher.finalize().into();
        if !dir.is_empty() {
            let (parent, name) = split_parent(&dir);
            children
                .entry(parent.to_string())
                .or_default()
                .push((name.to_string(), "40000", id));
        }
        hashes.insert(dir, hex::encode(id));
    }
    Some(hashes)
}

/// Git orders tree entries by name bytes, directories as if named `name/`.
fn git_tree_order(name: &str, is_dir: bool) -> Vec<u8> {
    let mut key = name.as_bytes().to_vec();
    if is_dir {
        key.push(b'/');
    }
    key
}

fn split_parent(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

fn decode_sha1(hex_id: &str) -> Option<[u8; 20]> {
    let mut id = [0u8; 20];
    hex::decode_to_slice(hex_id, &mut id).ok()?;
    Some(id)
}

/// The git blob id of `content` (SHA-1), to verify downloaded bytes.
pub fn build_blob_sha1(content: &[u8]) -> String {
    let mut hasher = Sha1::new();
    hasher.update(format!("blob {}\0", content.len()).as_bytes());
    hasher.update(content);
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_limit_is_the_lower_of_spec_and_ceiling_and_says_which() {
        assert_eq!(TreeLimit::new(None, 500_000).max_entries, 200_000);
        let spec = TreeLimit::new(Some(1_000), 500_000);
        assert_eq!(
            (spec.max_entries, spec.set_by),
            (1_000, "spec.maxTreeEntries")
        );
        let ceiling = TreeLimit::new(Some(u64::MAX), 500_000);
        assert_eq!(
            (ceiling.max_entries, ceiling.set_by),
            (500_000, "the operator's --max-tree-entries")
        );
    }

    fn file(path: &str, sha: &str) -> TreeEntry {
        build_tree_entry(path.as_bytes(), 0o100644, sha, Some(1)).unwrap()
    }

    #[test]
    fn the_empty_blob_has_gits_well_known_id() {
        assert_eq!(
            build_blob_sha1(b""),
            "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
        );
    }

    #[test]
    fn directory_hashes_match_git_for_nested_trees_and_git_name_order() {
        // The ids `git write-tree` gives for this layout (git 2.39); `a-b`
        // sorts before the directory `a` because git compares it as `a/`.
        let empty = "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391";
        let entries = [
            file("README", empty),
            file("a-b", "c1b0730e0133447badcfd47fd144e254807b06e1"),
            file("a/b/c", empty),
        ];
        let hashes = build_directory_hashes(&entries).unwrap();
        assert_eq!(hashes[""], "3a59190594fb33bd1bce90d5d43f632ebb08369f");
        assert_eq!(hashes["a"], "3a1db7138f7726dd81339a9d6f73c0c16b8ec12a");
        assert_eq!(hashes["a/b"], "587ff082e0b98914788500eae5dd6a33f04883c9");
        assert_eq!(hashes.len(), 3);
    }

    #[test]
    fn unsafe_paths_and_unknown_modes_become_rejections() {
        let rejected = build_tree_entry(
            b"../x",
            0o100644,
            "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391",
            Some(0),
        )
        .unwrap_err();
        assert_eq!(
            rejected.issue,
            RejectReason::UnsafePath(PathIssue::ParentComponent)
        );
        let rejected = build_tree_entry(
            b"x",
            0o100600,
            "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391",
            Some(0),
        )
        .unwrap_err();
        assert_eq!(rejected.issue, RejectReason::UnknownMode);
        let submodule = build_tree_entry(
            b"vendor/lib",
            0o160000,
            "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391",
            Some(9),
        )
        .unwrap();
        assert_eq!(
            (submodule.kind, submodule.size),
            (EntryKind::Submodule, None)
        );
    }
}
