//! Counting a cache repository's objects without a git process
//! (filesystem I/O, blocking): what a fetch brought is the difference of
//! two counts, taken on every run that fetches, and `git count-objects` was
//! two processes of the run's fixed cost.
//!
//! Packed objects are counted from each pack's index (the last entry of
//! its fan-out table is the number of objects in the pack), loose ones from
//! the two-hex-digit directories; bytes are the packs' and the loose files'
//! sizes. A pack still being written has no index yet and is not counted,
//! as git does not count it.

use std::io::{self, Read};
use std::path::Path;

use crate::source::Transfer;

/// The first bytes of a version 2 (or later) pack index.
const INDEX_MAGIC: [u8; 4] = [0xff, b't', b'O', b'c'];

/// Objects and bytes under `objects` (a repository's `objects` directory).
pub(super) fn count(objects: &Path) -> io::Result<Transfer> {
    let mut total = Transfer::default();
    for entry in std::fs::read_dir(objects)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.len() == 2 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
            for object in std::fs::read_dir(entry.path())? {
                let metadata = object?.metadata()?;
                if metadata.is_file() {
                    total.objects += 1;
                    total.bytes += metadata.len();
                }
            }
        }
    }
    let packs = objects.join("pack");
    let listing = match std::fs::read_dir(&packs) {
        Ok(listing) => listing,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(total),
        Err(error) => return Err(error),
    };
    for entry in listing {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "idx") {
            continue;
        }
        let pack = path.with_extension("pack");
        let (Ok(objects), Ok(metadata)) = (objects_in_index(&path), std::fs::metadata(&pack))
        else {
            // Removed by a repack meanwhile, or not written yet.
            continue;
        };
        total.objects += objects;
        total.bytes += metadata.len();
    }
    Ok(total)
}

/// The number of objects a pack index lists: the last of the fan-out
/// table's 256 big-endian counts, after an 8-byte header in version 2.
fn objects_in_index(path: &Path) -> io::Result<u64> {
    let mut head = [0u8; 8 + 256 * 4];
    std::fs::File::open(path)?.read_exact(&mut head)?;
    Ok(u64::from(parse_fanout_total(&head)))
}

fn parse_fanout_total(head: &[u8; 8 + 256 * 4]) -> u32 {
    // Version 1 has no header: the table starts at the first byte.
    let table = if head[..4] == INDEX_MAGIC {
        &head[8..]
    } else {
        &head[..256 * 4]
    };
    let last = &table[255 * 4..256 * 4];
    u32::from_be_bytes([last[0], last[1], last[2], last[3]])
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .output()
            .expect("git runs");
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    /// `count` and `in-pack` of `git count-objects -v`.
    fn counted_by_git(dir: &Path) -> u64 {
        git(dir, &["count-objects", "-v"])
            .lines()
            .filter_map(|l| l.split_once(": "))
            .filter(|(k, _)| matches!(*k, "count" | "in-pack"))
            .map(|(_, v)| v.parse::<u64>().unwrap())
            .sum()
    }

    #[test]
    fn the_count_agrees_with_git_for_loose_and_packed_objects() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path();
        git(repo, &["init", "-q"]);
        assert_eq!(count(&repo.join(".git/objects")).unwrap().objects, 0);
        for i in 0..3 {
            std::fs::write(repo.join(format!("f{i}")), format!("content {i}")).unwrap();
            git(repo, &["add", "."]);
            git(repo, &["commit", "-q", "-m", &format!("c{i}")]);
        }
        let loose = count(&repo.join(".git/objects")).unwrap();
        assert_eq!(loose.objects, counted_by_git(repo));
        assert!(loose.bytes > 0);
        git(repo, &["repack", "-q", "-a", "-d"]);
        std::fs::write(repo.join("f9"), "one more").unwrap();
        git(repo, &["add", "."]);
        git(repo, &["commit", "-q", "-m", "loose beside a pack"]);
        let mixed = count(&repo.join(".git/objects")).unwrap();
        assert_eq!(mixed.objects, counted_by_git(repo));
        assert_eq!(mixed.objects, loose.objects + 3);
    }

    #[test]
    fn both_index_versions_give_their_last_fanout_count() {
        let mut v2 = [0u8; 8 + 256 * 4];
        v2[..8].copy_from_slice(&[0xff, b't', b'O', b'c', 0, 0, 0, 2]);
        v2[8 + 255 * 4..].copy_from_slice(&1234u32.to_be_bytes());
        assert_eq!(parse_fanout_total(&v2), 1234);
        let mut v1 = [0u8; 8 + 256 * 4];
        v1[255 * 4..256 * 4].copy_from_slice(&77u32.to_be_bytes());
        assert_eq!(parse_fanout_total(&v1), 77);
    }
}
