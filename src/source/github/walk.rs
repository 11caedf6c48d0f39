//! Reading a commit's tree from GitHub (I/O), at a cost that grows with the
//! change rather than with the repository.
//!
//! One `recursive=1` request answers most repositories. When GitHub answers
//! `truncated: true` (over 100,000 entries or 7 MB), the tree is walked one
//! directory at a time. With the previous sync's tree, directory hashes are
//! recomputed locally ([`build_directory_hashes`]) and every subtree whose
//! id is unchanged is copied from the previous tree without a request: only
//! the directories on the path to a change are listed. Subtrees new to the
//! walk are tried with `recursive=1` first, since most fit in one answer.
//! A repository whose last tree needed a walk (as this source remembers, or
//! as its size says) is walked from the root at once: asking for the
//! recursive listing again would cost a full, truncated answer every run.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::Ordering;

use futures::StreamExt;
use http::StatusCode;
use serde::Deserialize;

use super::error::Missing;
use super::{GitHubError, GitHubRepo};
use crate::source::content::classify_path;
use crate::source::tree::{
    RejectReason, RejectedEntry, Tree, TreeEntry, build_directory_hashes, build_tree_entry,
};

/// GitHub truncates a recursive listing above this many entries (or 7 MB):
/// a previous tree with as many files needs a walk whatever the source
/// remembers.
const TREE_ENTRY_LIMIT: usize = 100_000;

/// One `GET /git/trees/{sha}` answer.
#[derive(Deserialize)]
pub(super) struct Listing {
    pub sha: String,
    pub tree: Vec<Item>,
    #[serde(default)]
    pub truncated: bool,
}

/// One item of a listing; `path` is relative to the listed tree.
#[derive(Deserialize)]
pub(super) struct Item {
    pub path: String,
    pub mode: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub sha: String,
    pub size: Option<u64>,
}

/// The previous tree, indexed for the walk.
struct Previous<'a> {
    tree: &'a Tree,
    hashes: HashMap<String, String>,
}

impl Previous<'_> {
    fn unchanged(&self, dir: &str, sha: &str) -> bool {
        self.hashes.get(dir).is_some_and(|h| h == sha)
    }

    fn has_dir(&self, dir: &str) -> bool {
        self.hashes.contains_key(dir)
    }

    /// Entries and rejections at or below `dir` (the root is `""`).
    fn under(&self, dir: &str) -> (Vec<TreeEntry>, Vec<RejectedEntry>) {
        if dir.is_empty() {
            return (self.tree.entries.clone(), self.tree.rejected.clone());
        }
        let prefix = format!("{dir}/");
        let start = self
            .tree
            .entries
            .partition_point(|e| e.path.as_str() < prefix.as_str());
        let entries = self.tree.entries[start..]
            .iter()
            .take_while(|e| e.path.starts_with(&prefix))
            .cloned()
            .collect();
        let rejected = self
            .tree
            .rejected
            .iter()
            .filter(|r| r.path.starts_with(&prefix))
            .cloned()
            .collect();
        (entries, rejected)
    }
}

/// One directory still to read.
struct Pending {
    sha: String,
    prefix: String,
    /// Known to be truncated with `recursive=1`: list it flat.
    flat: bool,
}

#[derive(Default)]
struct Found {
    entries: Vec<TreeEntry>,
    rejected: Vec<RejectedEntry>,
    dirs: Vec<Pending>,
}

pub(super) async fn fetch_tree(
    src: &GitHubRepo,
    commit: &str,
    previous: Option<&Tree>,
) -> Result<Tree, GitHubError> {
    src.require_object_id(commit)?;
    let walk_again = src.last_tree_walked.load(Ordering::Relaxed);
    let walk_first =
        previous.is_some_and(|t| walk_again || t.walked || t.entries.len() >= TREE_ENTRY_LIMIT);
    let mut found = Found::default();
    let mut truncated_root = None;
    if !walk_first {
        let listing = fetch_listing(src, commit, true, commit).await?;
        if !listing.truncated {
            let root_sha = listing.sha;
            add_items(src, "", listing.tree, &mut found, false)?;
            check_limit(src, commit, &found)?;
            return Ok(finish(src, commit, root_sha, found, false));
        }
        truncated_root = Some(listing.sha);
    }

    // A walk. The previous tree, sorted and hashed, tells which subtrees did
    // not change (only now: a tree answered in one request needs neither).
    let sorted: Option<Cow<'_, Tree>> = previous.map(|tree| {
        if tree.entries.is_sorted_by(|a, b| a.path <= b.path) {
            Cow::Borrowed(tree)
        } else {
            let mut owned = tree.clone();
            owned.normalise();
            Cow::Owned(owned)
        }
    });
    let prev = sorted.as_deref().and_then(|tree| {
        build_directory_hashes(&tree.entries).map(|hashes| Previous { tree, hashes })
    });
    let root_sha = match truncated_root {
        Some(root_sha) => {
            found.dirs.push(Pending {
                sha: root_sha.clone(),
                prefix: String::new(),
                flat: true,
            });
            root_sha
        }
        None => {
            // The previous tree needed a walk: skip the recursive request
            // that would be truncated again, and compare the root first.
            let listing = fetch_listing(src, commit, false, commit).await?;
            match prev.as_ref() {
                Some(p) if p.unchanged("", &listing.sha) => {
                    (found.entries, found.rejected) = p.under("")
                }
                _ => add_items(src, "", listing.tree, &mut found, true)?,
            }
            listing.sha
        }
    };
    check_limit(src, commit, &found)?;
    // Breadth first, one wave per depth; requests within a wave run
    // concurrently under the client's request bound. The number of waves is
    // bounded by the depth of the tree. Directories still to read count
    // towards the tree limit with the entries found, checked as each answer
    // arrives: a tree that fans out stops the walk at the limit, not after
    // it has been listed.
    let mut pending = std::mem::take(&mut found.dirs);
    while !pending.is_empty() {
        let reads = pending
            .into_iter()
            .map(|dir| read_dir(src, commit, prev.as_ref(), dir));
        let mut parts = futures::stream::iter(reads).buffer_unordered(WAVE_CONCURRENCY);
        pending = Vec::new();
        while let Some(part) = parts.next().await {
            let part = part?;
            found.entries.extend(part.entries);
            found.rejected.extend(part.rejected);
            pending.extend(part.dirs);
            if found.entries.len() + found.rejected.len() + pending.len()
                > src.tree_limit.max_entries
            {
                return Err(too_large(src, commit));
            }
        }
    }
    Ok(finish(src, commit, root_sha, found, true))
}

/// Directory reads of one wave started at once; the client's own request
/// bound still applies beneath it.
const WAVE_CONCURRENCY: usize = 16;

fn too_large(src: &GitHubRepo, commit: &str) -> GitHubError {
    GitHubError::TreeTooLarge {
        repo: src.repo(),
        commit: commit.to_string(),
        limit: src.tree_limit.max_entries,
        set_by: src.tree_limit.set_by,
    }
}

/// Refuses what was found so far when it is over the tree limit.
fn check_limit(src: &GitHubRepo, commit: &str, found: &Found) -> Result<(), GitHubError> {
    let count = found.entries.len() + found.rejected.len() + found.dirs.len();
    if count > src.tree_limit.max_entries {
        return Err(too_large(src, commit));
    }
    Ok(())
}

fn finish(src: &GitHubRepo, commit: &str, tree_sha: String, found: Found, walked: bool) -> Tree {
    src.last_tree_walked.store(walked, Ordering::Relaxed);
    let mut tree = Tree {
        commit_sha: commit.to_string(),
        tree_sha,
        entries: found.entries,
        rejected: found.rejected,
        walked,
    };
    tree.normalise();
    tree
}

/// Reads one directory: copied from the previous tree when its id is
/// unchanged; one `recursive=1` request when it is new and fits; otherwise
/// a flat listing whose subdirectories go to the next wave.
async fn read_dir(
    src: &GitHubRepo,
    commit: &str,
    prev: Option<&Previous<'_>>,
    dir: Pending,
) -> Result<Found, GitHubError> {
    let mut found = Found::default();
    if let Some(p) = prev.filter(|p| p.unchanged(&dir.prefix, &dir.sha)) {
        (found.entries, found.rejected) = p.under(&dir.prefix);
        return Ok(found);
    }
    let known = prev.is_some_and(|p| p.has_dir(&dir.prefix));
    if !dir.flat && !known {
        let listing = fetch_listing(src, &dir.sha, true, commit).await?;
        if !listing.truncated {
            add_items(src, &dir.prefix, listing.tree, &mut found, false)?;
            return Ok(found);
        }
    }
    let listing = fetch_listing(src, &dir.sha, false, commit).await?;
    add_items(src, &dir.prefix, listing.tree, &mut found, true)?;
    Ok(found)
}

pub(super) async fn fetch_listing(
    src: &GitHubRepo,
    sha: &str,
    recursive: bool,
    commit: &str,
) -> Result<Listing, GitHubError> {
    let query = if recursive { "?recursive=1" } else { "" };
    let path = format!("{}/git/trees/{sha}{query}", src.repo_path());
    let answer = src.get_json("tree", &path).await?;
    if answer.status != StatusCode::OK {
        return Err(src.error_for("tree", &answer, Missing::Commit(commit)));
    }
    src.parse("tree", &answer)
}

fn add_items(
    src: &GitHubRepo,
    prefix: &str,
    items: Vec<Item>,
    found: &mut Found,
    descend: bool,
) -> Result<(), GitHubError> {
    for item in items {
        let path = if prefix.is_empty() {
            item.path
        } else {
            format!("{prefix}/{}", item.path)
        };
        let mode =
            u32::from_str_radix(&item.mode, 8).map_err(|_| GitHubError::InvalidResponse {
                repo: src.repo(),
                endpoint: "tree",
                detail: format!("mode {:?} of {path:?} is not octal", item.mode),
            })?;
        if item.kind == "tree" {
            if !descend {
                continue;
            }
            match classify_path(path.as_bytes()) {
                Ok(_) => found.dirs.push(Pending {
                    sha: item.sha,
                    prefix: path,
                    flat: false,
                }),
                Err(issue) => found.rejected.push(RejectedEntry {
                    path,
                    object_sha: item.sha,
                    mode,
                    issue: RejectReason::UnsafePath(issue),
                }),
            }
            continue;
        }
        match build_tree_entry(path.as_bytes(), mode, &item.sha, item.size) {
            Ok(entry) => found.entries.push(entry),
            Err(rejected) => found.rejected.push(rejected),
        }
    }
    Ok(())
}
