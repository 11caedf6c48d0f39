//! Typed identifiers of store rows, and the content hash that keys embedding
//! reuse. Pure: no I/O.

use std::fmt;

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// A project: what one `ProjectSync` resource syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProjectId(pub(crate) i64);

/// One sync run. UUIDv7, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SyncId(pub(crate) Uuid);

/// One version of one file (a `repository_files` row).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub(crate) i64);

/// One chunk of a file version (a `memory_entries` row).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemoryEntryId(pub(crate) i64);

impl ProjectId {
    pub fn get(self) -> i64 {
        self.0
    }
}

impl SyncId {
    pub(crate) fn new_v7() -> Self {
        SyncId(Uuid::now_v7())
    }

    pub fn as_uuid(self) -> Uuid {
        self.0
    }
}

impl From<Uuid> for SyncId {
    fn from(id: Uuid) -> Self {
        SyncId(id)
    }
}

impl std::str::FromStr for SyncId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(SyncId)
    }
}

impl FileId {
    pub fn get(self) -> i64 {
        self.0
    }
}

impl MemoryEntryId {
    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for ProjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for SyncId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for MemoryEntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// SHA-256 of a chunk's content, as 64 lowercase hex digits. Chunks with the
/// same hash and embedding model share an embedding, whatever their project.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash(String);

impl ContentHash {
    /// Hashes `content`.
    pub fn of(content: &str) -> Self {
        ContentHash(hex::encode(Sha256::digest(content.as_bytes())))
    }

    /// Accepts an already computed hash: 64 hex digits (case-insensitive).
    pub fn parse(hex: &str) -> Option<Self> {
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| ContentHash(hex.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_hash_is_lowercase_sha256_hex() {
        assert_eq!(
            ContentHash::of("hello").as_str(),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
    }

    #[test]
    fn content_hash_parse_accepts_only_64_hex_digits() {
        let upper = "2CF24DBA5FB0A30E26E83B2AC5B9E29E1B161E5C1FA7425E73043362938B9824";
        assert_eq!(ContentHash::parse(upper), Some(ContentHash::of("hello")));
        assert_eq!(ContentHash::parse("abc"), None);
        assert_eq!(ContentHash::parse(&"g".repeat(64)), None);
    }

    #[test]
    fn sync_ids_sort_by_creation_time() {
        let first = SyncId::new_v7();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = SyncId::new_v7();
        assert!(first < second);
        assert_eq!(second.to_string().parse::<SyncId>().unwrap(), second);
    }
}
