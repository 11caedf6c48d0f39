//! Changed paths between two commits from GitHub's compare API (I/O), used
//! only where its answer is complete: `base` must be an ancestor of `head`
//! (after a force push the file list is relative to the merge base), and
//! the list must be under GitHub's cap of 300 files. Otherwise the answer is
//! `None` and the caller diffs the two trees. The answer carries no modes
//! or sizes, so it is not yet a [`crate::source::ChangeSet`].

use http::StatusCode;
use serde::Deserialize;

use super::error::Missing;
use super::{GitHubError, GitHubRepo};
use crate::source::content::classify_path;

/// How a path changed between two commits, as the compare API says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChangeStatus {
    Added,
    Modified,
    Removed,
}

/// One changed path of a comparison. A rename is a removal of the old path
/// and an addition of the new one. `blob_sha` is the object at `head`
/// (`None` for removals).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Change {
    pub path: String,
    pub status: ChangeStatus,
    pub blob_sha: Option<String>,
}

/// GitHub lists at most this many files in a comparison.
const COMPARE_FILE_LIMIT: usize = 300;

pub(super) async fn fetch_changes(
    src: &GitHubRepo,
    base: &str,
    head: &str,
) -> Result<Option<Vec<Change>>, GitHubError> {
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
    src.require_object_id(base)?;
    src.require_object_id(head)?;
    // per_page=1: the commit list is not needed; files come on page 1.
    let path = format!("{}/compare/{base}...{head}?per_page=1", src.repo_path());
    let answer = src.get_json("compare", &path).await?;
    if answer.status != StatusCode::OK {
        return Err(src.error_for("compare", &answer, Missing::Commit(head)));
    }
    let comparison: Comparison = src.parse("compare", &answer)?;
    // The file list is relative to the merge base: only meaningful when
    // `base` is an ancestor of `head` (not after a force push).
    if !matches!(comparison.status.as_str(), "ahead" | "identical") {
        return Ok(None);
    }
    let Some(files) = comparison.files else {
        return Ok(None);
    };
    if files.len() >= COMPARE_FILE_LIMIT {
        return Ok(None);
    }
    let mut changes = Vec::with_capacity(files.len());
    for f in files {
        if classify_path(f.filename.as_bytes()).is_err() {
            return Ok(None);
        }
        let change = |path: String, status| Change {
            path,
            status,
            blob_sha: None,
        };
        match f.status.as_str() {
            "added" | "copied" => changes.push(Change {
                blob_sha: f.sha,
                ..change(f.filename, ChangeStatus::Added)
            }),
            "modified" | "changed" => changes.push(Change {
                blob_sha: f.sha,
                ..change(f.filename, ChangeStatus::Modified)
            }),
            "removed" => changes.push(change(f.filename, ChangeStatus::Removed)),
            "renamed" => {
                let Some(old) = f.previous_filename else {
                    return Ok(None);
                };
                changes.push(change(old, ChangeStatus::Removed));
                changes.push(Change {
                    blob_sha: f.sha,
                    ..change(f.filename, ChangeStatus::Added)
                });
            }
            "unchanged" => {}
            _ => return Ok(None),
        }
    }
    changes.sort();
    Ok(Some(changes))
}
