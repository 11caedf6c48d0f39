//! Classification of odd or hostile repository content (pure, no I/O).
//!
//! A repository is untrusted input: tree entries may carry paths with `..`,
//! absolute paths, NUL or bytes that are not UTF-8; blobs may be binary, not
//! UTF-8, Git LFS pointers or larger than the configured limit; symlinks may
//! point outside the repository. These functions say what a thing is; the
//! sources and the pipeline decide what to do with it (reject, record,
//! skip and count), so nothing is silently dropped.

use std::fmt;

use crate::api::conditions::reason;

/// Why a tree path cannot be used as a file path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PathIssue {
    Empty,
    Absolute,
    ParentComponent,
    EmptyOrDotComponent,
    Nul,
    NotUtf8,
    GitDirectory,
    TooLong,
}

/// The longest path accepted, in bytes. The store indexes paths in btrees,
/// whose entries cannot exceed about 2.7 KB; a longer path that does not
/// compress would fail the whole run at import, on every retry.
pub const MAX_PATH_BYTES: usize = 2048;

impl PathIssue {
    /// Short static category for events and metric labels.
    pub fn reason(self) -> &'static str {
        match self {
            PathIssue::Empty => reason::EMPTY_PATH,
            PathIssue::Absolute => reason::ABSOLUTE_PATH,
            PathIssue::ParentComponent => reason::PARENT_DIRECTORY_COMPONENT,
            PathIssue::EmptyOrDotComponent => reason::EMPTY_OR_DOT_COMPONENT,
            PathIssue::Nul => reason::NUL_IN_PATH,
            PathIssue::NotUtf8 => reason::PATH_NOT_UTF8,
            PathIssue::GitDirectory => reason::GIT_DIRECTORY_IN_PATH,
            PathIssue::TooLong => reason::PATH_TOO_LONG,
        }
    }
}

impl fmt::Display for PathIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            PathIssue::Empty => "empty path",
            PathIssue::Absolute => "absolute path",
            PathIssue::ParentComponent => "path contains a '..' component",
            PathIssue::EmptyOrDotComponent => "path contains an empty or '.' component",
            PathIssue::Nul => "path contains a NUL byte",
            PathIssue::NotUtf8 => "path is not valid UTF-8",
            PathIssue::GitDirectory => "path contains a '.git' component",
            PathIssue::TooLong => "path is longer than 2048 bytes",
        };
        f.write_str(text)
    }
}

/// Checks a repository path (as raw bytes from a tree) and returns it as
/// UTF-8 when it is a safe, relative, normalised path.
pub fn classify_path(raw: &[u8]) -> Result<&str, PathIssue> {
    if raw.is_empty() {
        return Err(PathIssue::Empty);
    }
    if raw.contains(&0) {
        return Err(PathIssue::Nul);
    }
    if raw.len() > MAX_PATH_BYTES {
        return Err(PathIssue::TooLong);
    }
    let path = std::str::from_utf8(raw).map_err(|_| PathIssue::NotUtf8)?;
    if path.starts_with('/') || path.starts_with('\\') || has_drive_prefix(path) {
        return Err(PathIssue::Absolute);
    }
    for component in path.split(['/', '\\']) {
        match component {
            ".." => return Err(PathIssue::ParentComponent),
            "" | "." => return Err(PathIssue::EmptyOrDotComponent),
            c if c.eq_ignore_ascii_case(".git") => return Err(PathIssue::GitDirectory),
            _ => {}
        }
    }
    Ok(path)
}

fn has_drive_prefix(path: &str) -> bool {
    let b = path.as_bytes();
    b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':'
}

/// Renders a raw path for messages: lossy UTF-8 with NUL made visible.
pub fn display_path(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).replace('\0', "\\0")
}

/// What a blob's bytes are, for the chunking stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobClass {
    /// UTF-8 text.
    Text,
    /// Contains NUL in the first 8000 bytes (git's own heuristic).
    Binary,
    /// No NUL but not valid UTF-8 (e.g. Latin-1): stored, not chunked.
    NotUtf8,
    /// A Git LFS pointer: the real content lives in LFS storage.
    LfsPointer(LfsPointer),
}

/// The fields of a Git LFS pointer file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LfsPointer {
    pub oid_sha256: String,
    pub size: u64,
}

/// Bytes git looks at to decide whether content is binary.
const BINARY_PROBE: usize = 8000;
/// LFS pointer files are small by specification.
const LFS_POINTER_MAX: usize = 1024;
const LFS_VERSION_LINE: &str = "version https://git-lfs.github.com/spec/v1";

/// Classifies blob content.
pub fn classify_blob(bytes: &[u8]) -> BlobClass {
    if bytes[..bytes.len().min(BINARY_PROBE)].contains(&0) {
        return BlobClass::Binary;
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        return BlobClass::NotUtf8;
    };
    match parse_lfs_pointer(text) {
        Some(pointer) => BlobClass::LfsPointer(pointer),
        None => BlobClass::Text,
    }
}

/// Parses a Git LFS pointer (spec v1): a version line first, then sorted
/// `key value` lines including `oid sha256:<64 hex>` and `size <n>`.
pub fn parse_lfs_pointer(text: &str) -> Option<LfsPointer> {
    if text.len() > LFS_POINTER_MAX {
        return None;
    }
    let mut lines = text.lines();
    if lines.next()?.trim_end() != LFS_VERSION_LINE {
        return None;
    }
    let (mut oid, mut size) = (None, None);
    for line in lines.filter(|l| !l.is_empty()) {
        let (key, value) = line.split_once(' ')?;
        match key {
            "oid" => {
                let hex = value.strip_prefix("sha256:")?;
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                oid = Some(hex.to_ascii_lowercase());
            }
            "size" => size = Some(value.parse().ok()?),
            _ => {}
        }
    }
    Some(LfsPointer {
        oid_sha256: oid?,
        size: size?,
    })
}

/// True when a blob of `size` bytes must be skipped under `max_size`.
pub fn exceeds_size_limit(size: u64, max_size: u64) -> bool {
    size > max_size
}

/// Where a symlink points, judged without touching any filesystem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SymlinkTarget {
    /// Resolves to this path inside the repository.
    Inside(String),
    /// Absolute, leaves the repository, or is not valid UTF-8: recorded as
    /// a link and never followed.
    Outside,
}

/// Resolves the target of the symlink at `link_path` lexically.
pub fn classify_symlink_target(link_path: &str, target: &[u8]) -> SymlinkTarget {
    let Ok(target) = std::str::from_utf8(target) else {
        return SymlinkTarget::Outside;
    };
    if target.is_empty() || target.starts_with('/') || target.contains('\0') {
        return SymlinkTarget::Outside;
    }
    let mut parts: Vec<&str> = link_path.split('/').collect();
    parts.pop();
    for component in target.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return SymlinkTarget::Outside;
                }
            }
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return SymlinkTarget::Outside;
    }
    SymlinkTarget::Inside(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_relative_paths_are_accepted() {
        assert_eq!(classify_path(b"src/main.rs"), Ok("src/main.rs"));
        assert_eq!(
            classify_path(b".github/workflows/ci.yml"),
            Ok(".github/workflows/ci.yml")
        );
        assert_eq!(classify_path("docs/é.md".as_bytes()), Ok("docs/é.md"));
        assert_eq!(classify_path(b"a..b/c"), Ok("a..b/c"));
    }

    #[test]
    fn paths_that_escape_or_are_malformed_are_rejected_with_a_reason() {
        assert_eq!(
            classify_path(b"../etc/passwd"),
            Err(PathIssue::ParentComponent)
        );
        assert_eq!(classify_path(b"a/../../b"), Err(PathIssue::ParentComponent));
        assert_eq!(classify_path(b"a\\..\\b"), Err(PathIssue::ParentComponent));
        assert_eq!(classify_path(b"/etc/passwd"), Err(PathIssue::Absolute));
        assert_eq!(classify_path(b"C:/x"), Err(PathIssue::Absolute));
        assert_eq!(classify_path(b"a\0b"), Err(PathIssue::Nul));
        assert_eq!(classify_path(b"a/\xffb"), Err(PathIssue::NotUtf8));
        assert_eq!(classify_path(b""), Err(PathIssue::Empty));
        let longest = "a/".repeat(MAX_PATH_BYTES / 2 - 1) + "ab";
        assert_eq!(classify_path(longest.as_bytes()), Ok(longest.as_str()));
        let too_long = longest + "c";
        assert_eq!(classify_path(too_long.as_bytes()), Err(PathIssue::TooLong));
        assert_eq!(classify_path(b"a//b"), Err(PathIssue::EmptyOrDotComponent));
        assert_eq!(classify_path(b"./a"), Err(PathIssue::EmptyOrDotComponent));
        assert_eq!(
            classify_path(b"x/.GIT/hooks/post-checkout"),
            Err(PathIssue::GitDirectory)
        );
        assert_eq!(
            PathIssue::ParentComponent.reason(),
            "ParentDirectoryComponent"
        );
    }

    #[test]
    fn content_with_nul_in_the_first_8000_bytes_is_binary() {
        assert_eq!(classify_blob(b"\x89PNG\r\n\x1a\n\0\0"), BlobClass::Binary);
        let mut late = vec![b'a'; 9000];
        late[8500] = 0;
        // NUL beyond the probe window: text by git's heuristic.
        assert_eq!(classify_blob(&late), BlobClass::Text);
    }

    #[test]
    fn latin1_text_is_not_utf8_and_utf8_text_is_text() {
        assert_eq!(classify_blob(b"caf\xe9\n"), BlobClass::NotUtf8);
        assert_eq!(classify_blob("café\n".as_bytes()), BlobClass::Text);
        assert_eq!(classify_blob(b""), BlobClass::Text);
    }

    #[test]
    fn git_lfs_pointers_are_detected_with_their_oid_and_size() {
        let pointer = "version https://git-lfs.github.com/spec/v1\n\
            oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n\
            size 12345\n";
        assert_eq!(
            classify_blob(pointer.as_bytes()),
            BlobClass::LfsPointer(LfsPointer {
                oid_sha256: "4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393"
                    .into(),
                size: 12345,
            })
        );
        let bad_oid = pointer.replace("sha256:4d", "sha256:zz");
        assert_eq!(classify_blob(bad_oid.as_bytes()), BlobClass::Text);
        let no_size = "version https://git-lfs.github.com/spec/v1\noid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n";
        assert_eq!(classify_blob(no_size.as_bytes()), BlobClass::Text);
    }

    #[test]
    fn size_limit_is_inclusive_of_the_maximum() {
        assert!(!exceeds_size_limit(10, 10));
        assert!(exceeds_size_limit(11, 10));
    }

    #[test]
    fn symlinks_are_resolved_lexically_and_escapes_are_flagged() {
        assert_eq!(
            classify_symlink_target("a/link", b"b.txt"),
            SymlinkTarget::Inside("a/b.txt".into())
        );
        assert_eq!(
            classify_symlink_target("a/b/link", b"../c"),
            SymlinkTarget::Inside("a/c".into())
        );
        assert_eq!(
            classify_symlink_target("link", b"../outside"),
            SymlinkTarget::Outside
        );
        assert_eq!(
            classify_symlink_target("link", b"/etc/passwd"),
            SymlinkTarget::Outside
        );
        assert_eq!(
            classify_symlink_target("a/link", b".."),
            SymlinkTarget::Outside
        );
        assert_eq!(
            classify_symlink_target("link", b"\xff"),
            SymlinkTarget::Outside
        );
    }
}
