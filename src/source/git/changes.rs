//! The change set between two cached commits (I/O: local git only): one
//! `git diff-tree -r -t` for what changed, the sizes of the new blobs from
//! the cache's `cat-file` helper, and a relatedness check that looks only
//! at directories the diff touched; never a listing of the whole tree. The
//! parsing and the building of the [`ChangeSet`] are pure.

use std::collections::{HashMap, HashSet};

use super::GitRemote;
use super::batch::ObjectRead;
use super::error::GitError;
use super::listing::split_at_tab;
use crate::api::conditions::reason;
use crate::source::content::classify_path;
use crate::source::tree::build_tree_entry;
use crate::source::{Change, ChangeKind, ChangeSet, Changes, is_object_id};

impl GitRemote {
    /// The change set from `base` to `head`: one `git diff-tree` between
    /// the two cached commits and the sizes of the new blobs from the
    /// `cat-file` helper; never a listing of the whole tree. Unavailable
    /// when `base` is not in the cache (evicted, or lost with the pod) or
    /// when the two commits share neither history nor content.
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
                reason: reason::BASE_NOT_IN_CACHE,
            });
        }
        self.ensure_commit(head).await?;
        let out = self
            .runner
            .run(
                "diff-tree",
                &[
                    "diff-tree",
                    "-r",
                    "-t",
                    "-z",
                    "--no-renames",
                    "--raw",
                    base,
                    head,
                ],
                None,
            )
            .await?
            .stdout;
        let records = parse_diff_tree(&out).map_err(|detail| self.invalid("diff-tree", &detail))?;
        if records
            .iter()
            .any(|r| !matches!(r.status, b'A' | b'M' | b'T' | b'D'))
        {
            return Ok(Changes::Unavailable {
                reason: reason::CHANGES_INCOMPLETE,
            });
        }
        if !records.is_empty() && !self.shares_history(base, head, &records).await? {
            return Ok(Changes::Unavailable {
                reason: reason::UNRELATED_HISTORY,
            });
        }
        let new_blobs: Vec<&str> = records
            .iter()
            .filter(|r| r.status != b'D' && has_blob(r.new_mode))
            .map(|r| r.new_sha.as_str())
            // Each becomes a line to the helper: only ids, never a command.
            .filter(|sha| is_object_id(sha))
            .collect();
        let sizes = self.fetch_blob_sizes(&new_blobs).await?;
        Ok(Changes::Complete(build_change_set(&records, &sizes)))
    }

    /// Sizes of the blobs `shas`, asked of the cache's `cat-file` helper.
    async fn fetch_blob_sizes(&self, shas: &[&str]) -> Result<HashMap<String, u64>, GitError> {
        if shas.is_empty() {
            return Ok(HashMap::new());
        }
        let answers = self
            .with_helper(|mut cat| async move {
                let answers = cat.infos(shas).await;
                (cat, answers)
            })
            .await?;
        Ok(shas
            .iter()
            .zip(answers)
            .filter_map(|(sha, answer)| match answer {
                Some((kind, size)) if kind == "blob" => Some((sha.to_string(), size)),
                _ => None,
            })
            .collect())
    }

    /// Whether `head` is related to `base`: a descendant or ancestor as far
    /// as the cache's (shallow) history shows, or else sharing at least one
    /// entry, same path and same object, in a directory the diff touched
    /// (a root-level check that descends only into changed directories).
    /// A force-push to an unrelated history shares nothing.
    async fn shares_history(
        &self,
        base: &str,
        head: &str,
        records: &[DiffRecord],
    ) -> Result<bool, GitError> {
        // A commit's header is a few hundred bytes; one far larger is read
        // no further (and the checks below decide).
        let commit = self
            .with_helper(|mut cat| async move {
                let read = cat.read(head, "commit", MAX_COMMIT_BYTES).await;
                (cat, read)
            })
            .await?;
        let parent = format!("parent {base}");
        if let ObjectRead::Object(commit) = commit
            && String::from_utf8_lossy(&commit)
                .lines()
                .take_while(|l| !l.is_empty())
                .any(|l| l == parent)
        {
            return Ok(true);
        }
        for (a, b) in [(base, head), (head, base)] {
            let args = ["merge-base", "--is-ancestor", a, b];
            if self.runner.run("merge-base", &args, None).await.is_ok() {
                return Ok(true);
            }
        }
        // The children, at the base, of every directory the diff touched.
        let touched: HashSet<&[u8]> = records
            .iter()
            .filter(|r| r.old_mode != 0)
            .map(|r| r.path.as_slice())
            .collect();
        let root = self
            .runner
            .run("ls-tree", &["ls-tree", "-z", base], None)
            .await?
            .stdout;
        if any_untouched(&root, &touched) {
            return Ok(true);
        }
        let dirs: Vec<String> = records
            .iter()
            .filter(|r| r.old_mode == TREE_MODE && r.new_mode == TREE_MODE)
            .filter_map(|r| std::str::from_utf8(&r.path).ok())
            .map(|p| format!("{p}/"))
            .collect();
        for batch in dirs.chunks(500) {
            let mut args = vec!["--literal-pathspecs", "ls-tree", "-z", base];
            args.extend(batch.iter().map(String::as_str));
            let listed = self.runner.run("ls-tree", &args, None).await?.stdout;
            if any_untouched(&listed, &touched) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// The largest commit object whose parents the relatedness check reads.
const MAX_COMMIT_BYTES: u64 = 1 << 20;

/// The git mode of a directory, as `diff-tree -t` and `ls-tree` show it.
const TREE_MODE: u32 = 0o040000;

/// One record of `git diff-tree -r -t -z --no-renames --raw`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DiffRecord {
    /// The raw path bytes (not yet checked).
    path: Vec<u8>,
    /// 0 when the path did not exist at the base.
    old_mode: u32,
    /// 0 when the path does not exist at the head.
    new_mode: u32,
    new_sha: String,
    /// `A`, `M`, `T`, `D` (others mean the output is not a plain change set).
    status: u8,
}

/// The records of `git diff-tree -r -t -z --no-renames --raw` output.
/// `Err` holds what could not be read.
fn parse_diff_tree(out: &[u8]) -> Result<Vec<DiffRecord>, String> {
    let mut records = Vec::new();
    let mut fields = out.split(|b| *b == 0).filter(|f| !f.is_empty());
    while let Some(meta) = fields.next() {
        let path = fields
            .next()
            .ok_or_else(|| "record without a path".to_string())?;
        let meta = std::str::from_utf8(meta).map_err(|_| "metadata is not UTF-8".to_string())?;
        let parts: Vec<&str> = meta.trim_start_matches(':').split(' ').collect();
        let [old_mode, new_mode, _, new_sha, status] = parts[..] else {
            return Err(meta.to_string());
        };
        let mode = |m: &str| u32::from_str_radix(m, 8).map_err(|_| meta.to_string());
        records.push(DiffRecord {
            path: path.to_vec(),
            old_mode: mode(old_mode)?,
            new_mode: mode(new_mode)?,
            new_sha: new_sha.to_string(),
            status: status.bytes().next().unwrap_or(b'?'),
        });
    }
    Ok(records)
}

/// Whether an entry of this mode has blob content (not a directory, not a
/// submodule, not absent).
fn has_blob(mode: u32) -> bool {
    mode != 0 && mode != TREE_MODE && mode != 0o160000
}

/// The change set from diff records (directories left out) and blob
/// sizes: upserts classified like tree entries (unsafe paths rejected),
/// removals of paths the pipeline could have recorded; sorted by path.
fn build_change_set(records: &[DiffRecord], sizes: &HashMap<String, u64>) -> ChangeSet {
    let mut set = ChangeSet::default();
    for record in records {
        let removed_file = record.old_mode != 0 && record.old_mode != TREE_MODE;
        let added_file = record.new_mode != 0 && record.new_mode != TREE_MODE;
        if record.status == b'D' || !added_file {
            // A file that became a directory is a removal here; its new
            // contents come as records of their own.
            if removed_file && let Ok(path) = classify_path(&record.path) {
                set.changes.push(Change {
                    path: path.to_string(),
                    kind: ChangeKind::Removed,
                });
            }
            continue;
        }
        let size = sizes.get(&record.new_sha).copied();
        match build_tree_entry(&record.path, record.new_mode, &record.new_sha, size) {
            Ok(entry) => set.changes.push(Change {
                path: entry.path.clone(),
                kind: ChangeKind::Upsert(entry),
            }),
            Err(rejected) => {
                set.rejected.push(rejected);
                // The base's version, if it was usable, is gone now.
                if removed_file && let Ok(path) = classify_path(&record.path) {
                    set.changes.push(Change {
                        path: path.to_string(),
                        kind: ChangeKind::Removed,
                    });
                }
            }
        }
    }
    set.changes.sort();
    set.rejected.sort();
    set
}

/// Whether an `ls-tree -z` listing has an entry whose path the diff did
/// not touch (content the two commits share).
fn any_untouched(listing: &[u8], touched: &HashSet<&[u8]>) -> bool {
    listing
        .split(|b| *b == 0)
        .filter(|r| !r.is_empty())
        .filter_map(split_at_tab)
        .any(|(_, path)| !touched.contains(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "a12243f2e0d67a9ab5e1c0e3b3c9bd9c8f2b6e0b";
    const B: &str = "b12243f2e0d67a9ab5e1c0e3b3c9bd9c8f2b6e0b";
    const ZERO: &str = "0000000000000000000000000000000000000000";

    #[test]
    fn diff_tree_records_become_a_sorted_change_set_without_directories() {
        let out = format!(
            ":100644 100755 {A} {B} M\0z.rs\0:000000 100644 {ZERO} {A} A\0a.rs\0\
             :100644 000000 {A} {ZERO} D\0m.rs\0:040000 040000 {A} {B} M\0dir\0\
             :000000 160000 {ZERO} {B} A\0vendor/lib\0:000000 100644 {ZERO} {B} A\0../x\0"
        );
        let records = parse_diff_tree(out.as_bytes()).unwrap();
        let sizes = HashMap::from([(A.to_string(), 5), (B.to_string(), 7)]);
        let set = build_change_set(&records, &sizes);
        let seen: Vec<_> = set
            .changes
            .iter()
            .map(|c| match &c.kind {
                ChangeKind::Upsert(e) => (c.path.as_str(), Some((e.mode, e.size))),
                ChangeKind::Removed => (c.path.as_str(), None),
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("a.rs", Some((0o100644, Some(5)))),
                ("m.rs", None),
                ("vendor/lib", Some((0o160000, None))),
                ("z.rs", Some((0o100755, Some(7)))),
            ]
        );
        assert_eq!(set.rejected.len(), 1, "the unsafe path is rejected");
    }

    #[test]
    fn a_file_that_becomes_a_directory_is_removed_and_its_contents_added() {
        let out = format!(
            ":100644 000000 {A} {ZERO} D\0x\0:000000 040000 {ZERO} {B} A\0x\0\
             :000000 100644 {ZERO} {B} A\0x/y\0"
        );
        let set = build_change_set(&parse_diff_tree(out.as_bytes()).unwrap(), &HashMap::new());
        let paths: Vec<_> = set.changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["x", "x/y"]);
        assert_eq!(set.changes[0].kind, ChangeKind::Removed);
    }

    #[test]
    fn unreadable_diff_records_are_reported() {
        let no_path = format!(":100644 100644 {A} {B} M\0");
        assert_eq!(
            parse_diff_tree(no_path.as_bytes()).unwrap_err(),
            "record without a path"
        );
    }

    #[test]
    fn a_listing_shares_content_when_some_path_was_not_touched() {
        let listing = format!("100644 blob {A}\tkept\0040000 tree {B}\tsrc\0");
        let touched: HashSet<&[u8]> = [b"src".as_slice()].into();
        assert!(any_untouched(listing.as_bytes(), &touched));
        let all: HashSet<&[u8]> = [b"src".as_slice(), b"kept".as_slice()].into();
        assert!(!any_untouched(listing.as_bytes(), &all));
    }
}
