//! Changed paths between two commits from GitHub's compare API (I/O), at a
//! cost that grows with the change: one compare request, then one
//! non-recursive tree listing per directory on the path to a changed file.
//!
//! The compare answer is used only where it is complete: `base` must be an
//! ancestor of `head` (after a force push the file list is relative to the
//! merge base, or there is none), and the list must be under GitHub's cap of
//! 300 files. Otherwise the answer is [`Changes::Unavailable`] with the
//! reason and the caller diffs the two trees.
//!
//! Compare gives paths, statuses and blob ids but no modes or sizes, which
//! the store needs exactly as a tree read gives them. So the directories
//! holding changed files are listed, starting at `head`'s root tree and
//! descending only into subtrees that lead to a changed path, and each
//! changed entry is built from its directory's listing — the same items,
//! checks and rejections a recursive tree listing gives. A listing
//! that disagrees with the compare answer (a missing entry, another blob
//! id) makes the answer unavailable rather than trusted.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use futures::future::try_join_all;
use http::StatusCode;
use serde::Deserialize;

use super::error::Missing;
use super::walk::{Item, fetch_listing};
use super::{GitHubError, GitHubRepo};
use crate::source::content::classify_path;
use crate::source::tree::build_tree_entry;
use crate::source::{Change, ChangeKind, ChangeSet, Changes};

/// GitHub lists at most this many files in a comparison: a list this long
/// may be cut short.
const COMPARE_FILE_LIMIT: usize = 300;

/// Why a comparison cannot stand in for a tree diff, recorded on the run:
/// catalogue reasons (the scan's `FullDiff` reasons), one per cause. What
/// exactly was wrong is logged at debug level where it is found.
pub mod unavailable {
    use crate::api::conditions::reason;

    /// Over GitHub's cap of 300 files.
    pub const TRUNCATED: &str = reason::CHANGES_INCOMPLETE;
    /// `base` is behind or diverged from `head` (a force push).
    pub const NOT_AN_ANCESTOR: &str = reason::UNRELATED_HISTORY;
    /// GitHub's 404 "No common ancestor between ...".
    pub const NO_COMMON_HISTORY: &str = reason::UNRELATED_HISTORY;
    /// `base` is not in the repository any more (rewritten away).
    pub const BASE_GONE: &str = reason::UNRELATED_HISTORY;
    /// The answer had no file list.
    pub const NO_FILE_LIST: &str = reason::CHANGES_INCOMPLETE;
    /// A file status this code does not know.
    pub const UNKNOWN_STATUS: &str = reason::CHANGES_INCOMPLETE;
    /// A directory listing lacks a changed entry or has another blob id.
    pub const TREE_DISAGREES: &str = reason::CHANGES_INCOMPLETE;
    /// A directory listing was truncated.
    pub const LISTING_TRUNCATED: &str = reason::CHANGES_INCOMPLETE;
}

#[derive(Deserialize)]
struct Comparison {
    status: String,
    files: Option<Vec<File>>,
}

#[derive(Deserialize)]
struct File {
    filename: String,
    status: String,
    sha: Option<String>,
    previous_filename: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: String,
}

/// What compare says is at `head`, path by path, before the tree listings
/// fill in modes and sizes.
enum Listed {
    /// The path holds blob (or submodule commit) `sha` at `head`.
    Present(String),
    Removed,
}

pub(super) async fn fetch_changes(
    src: &GitHubRepo,
    base: &str,
    head: &str,
) -> Result<Changes, GitHubError> {
    use unavailable::*;
    let unavailable = |reason| Ok(Changes::Unavailable { reason });
    src.require_object_id(base)?;
    src.require_object_id(head)?;
    // per_page=1: the commit list is not needed; files come on page 1.
    let path = format!("{}/compare/{base}...{head}?per_page=1", src.repo_path());
    let answer = src.get_json("compare", &path).await?;
    if answer.status == StatusCode::NOT_FOUND {
        // GitHub answers 404 both for unrelated histories ("No common
        // ancestor between ...") and for a commit it does not have (a base
        // rewritten away and collected). The tree diff that follows reports
        // a missing head or repository with its own specific error.
        let body: Option<ErrorBody> = serde_json::from_slice(&answer.body).ok();
        let unrelated = body.is_some_and(|b| b.message.starts_with("No common ancestor"));
        return unavailable(if unrelated {
            NO_COMMON_HISTORY
        } else {
            BASE_GONE
        });
    }
    if answer.status != StatusCode::OK {
        return Err(src.error_for("compare", &answer, Missing::Commit(head)));
    }
    let comparison: Comparison = src.parse("compare", &answer)?;
    match comparison.status.as_str() {
        "identical" => return Ok(Changes::Complete(ChangeSet::default())),
        "ahead" => {}
        _ => return unavailable(NOT_AN_ANCESTOR),
    }
    let Some(files) = comparison.files else {
        return unavailable(NO_FILE_LIST);
    };
    if files.len() >= COMPARE_FILE_LIMIT {
        return unavailable(TRUNCATED);
    }

    // Path by path; a path both removed and present (a rename onto a path
    // that was also re-added) is present at `head`.
    let mut listed: BTreeMap<String, Listed> = BTreeMap::new();
    let mut note = |path: String, what: Listed| {
        if matches!(what, Listed::Present(_)) || !listed.contains_key(&path) {
            listed.insert(path, what);
        }
    };
    for f in files {
        match (f.status.as_str(), f.sha) {
            ("added" | "modified" | "changed" | "copied", Some(sha)) => {
                note(f.filename, Listed::Present(sha))
            }
            ("removed", _) => note(f.filename, Listed::Removed),
            ("renamed", Some(sha)) => {
                let Some(old) = f.previous_filename else {
                    return unavailable(UNKNOWN_STATUS);
                };
                note(old, Listed::Removed);
                note(f.filename, Listed::Present(sha));
            }
            ("unchanged", _) => {}
            _ => return unavailable(UNKNOWN_STATUS),
        }
    }

    let present: Vec<&str> = listed
        .iter()
        .filter(|(_, what)| matches!(what, Listed::Present(_)))
        .map(|(path, _)| path.as_str())
        .collect();
    let dirs = match list_directories(src, head, &present).await? {
        Ok(dirs) => dirs,
        Err(reason) => return unavailable(reason),
    };

    let mut set = ChangeSet::default();
    for (path, what) in listed {
        let sha = match what {
            // A path no tree read would accept was never stored: there is
            // nothing to remove.
            Listed::Removed if classify_path(path.as_bytes()).is_err() => continue,
            Listed::Removed => {
                set.changes.push(Change {
                    path,
                    kind: ChangeKind::Removed,
                });
                continue;
            }
            Listed::Present(sha) => sha,
        };
        let (parent, name) = split_parent(&path);
        let Some(items) = dirs.get(parent) else {
            return unavailable(TREE_DISAGREES);
        };
        let Some(item) = items.iter().find(|i| i.path == name) else {
            return unavailable(TREE_DISAGREES);
        };
        if item.kind == "tree" || !item.sha.eq_ignore_ascii_case(&sha) {
            return unavailable(TREE_DISAGREES);
        }
        let mode = parse_mode(src, &path, &item.mode)?;
        match build_tree_entry(path.as_bytes(), mode, &item.sha, item.size) {
            Ok(entry) => set.changes.push(Change {
                path,
                kind: ChangeKind::Upsert(entry),
            }),
            Err(entry) => set.rejected.push(entry),
        }
    }
    set.rejected.sort();
    Ok(Changes::Complete(set))
}

/// Lists, breadth first, every directory that holds one of `paths` at
/// `head` (`""` is the root), one request each, the requests of one depth
/// concurrently. Directories whose own path a tree read would reject are
/// listed too, so that a changed file below one is rejected with its own
/// mode and id, as a recursive listing rejects it. `Ok(Err(reason))` when
/// the tree cannot answer completely.
async fn list_directories(
    src: &GitHubRepo,
    head: &str,
    paths: &[&str],
) -> Result<Result<HashMap<String, Vec<Item>>, &'static str>, GitHubError> {
    let mut wanted: BTreeSet<&str> = BTreeSet::new();
    for path in paths {
        let mut dir = split_parent(path).0;
        loop {
            wanted.insert(dir);
            if dir.is_empty() {
                break;
            }
            dir = split_parent(dir).0;
        }
    }
    let mut dirs = HashMap::new();
    if paths.is_empty() {
        return Ok(Ok(dirs));
    }
    // The root is listed by commit id: GitHub resolves it to its tree.
    let mut wave = vec![(String::new(), head.to_string())];
    while !wave.is_empty() {
        let listings = try_join_all(
            wave.iter()
                .map(|(_, sha)| fetch_listing(src, sha, false, head)),
        )
        .await?;
        let mut next = Vec::new();
        for ((dir, _), listing) in wave.into_iter().zip(listings) {
            if listing.truncated {
                return Ok(Err(unavailable::LISTING_TRUNCATED));
            }
            next.extend(
                listing
                    .tree
                    .iter()
                    .filter(|i| i.kind == "tree")
                    .map(|i| (join(&dir, &i.path), i.sha.clone()))
                    .filter(|(child, _)| wanted.contains(child.as_str())),
            );
            dirs.insert(dir, listing.tree);
        }
        wave = next;
    }
    Ok(Ok(dirs))
}

fn parse_mode(src: &GitHubRepo, path: &str, mode: &str) -> Result<u32, GitHubError> {
    u32::from_str_radix(mode, 8).map_err(|_| GitHubError::InvalidResponse {
        repo: src.repo(),
        endpoint: "tree",
        detail: format!("mode {mode:?} of {path:?} is not octal"),
    })
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

fn split_parent(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_split_at_the_last_slash() {
        assert_eq!(split_parent("a/b/c.rs"), ("a/b", "c.rs"));
        assert_eq!(split_parent("c.rs"), ("", "c.rs"));
        assert_eq!(join("", "a"), "a");
        assert_eq!(join("a", "b"), "a/b");
    }
}
