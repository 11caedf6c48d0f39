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

/// SHA-256 of a chunk's content, as 64 lowercase hex digits. With the model,
/// the endpoint ([`EndpointFingerprint`]) and the dimension, the key under
/// which a stored embedding is reused (within the scope a project allows).
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

/// Who computed an embedding: SHA-256 (64 lowercase hex digits) of the
/// endpoint's normalised base URL. Stored with each embedding so that a
/// vector is reused only for the endpoint that answered it, never for a
/// different server that merely claims the same model name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EndpointFingerprint(String);

impl EndpointFingerprint {
    /// The fingerprint of the base URL `url` (e.g. `https://api.openai.com/v1`),
    /// normalised so that spellings of one endpoint agree: surrounding space
    /// and trailing slashes dropped, scheme and host lowercased, the default
    /// port of the scheme removed. Query and path keep their case.
    pub fn of_url(url: &str) -> Self {
        EndpointFingerprint(hex::encode(Sha256::digest(
            normalise_endpoint(url).as_bytes(),
        )))
    }

    /// Accepts a stored fingerprint: 64 hex digits.
    pub fn parse(hex: &str) -> Option<Self> {
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| EndpointFingerprint(hex.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The canonical spelling of an endpoint base URL (see
/// [`EndpointFingerprint::of_url`]).
fn normalise_endpoint(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let scheme = scheme.to_ascii_lowercase();
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    let mut authority = authority.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => Some(":443"),
        "http" => Some(":80"),
        _ => None,
    };
    if let Some(port) = default_port
        && authority.ends_with(port)
    {
        authority.truncate(authority.len() - port.len());
    }
    format!("{scheme}://{authority}{}", path.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_endpoint_share_a_fingerprint_and_other_hosts_do_not() {
        let canonical = EndpointFingerprint::of_url("https://api.openai.com/v1");
        for spelling in [
            "https://api.openai.com/v1/",
            " HTTPS://API.OpenAI.com:443/v1 ",
        ] {
            assert_eq!(
                EndpointFingerprint::of_url(spelling),
                canonical,
                "{spelling}"
            );
        }
        for other in [
            "http://api.openai.com/v1",
            "https://api.openai.com:8443/v1",
            "https://api.openai.com/v2",
            "http://127.0.0.1:9000/v1",
        ] {
            assert_ne!(EndpointFingerprint::of_url(other), canonical, "{other}");
        }
        assert_eq!(canonical.as_str().len(), 64);
        assert_eq!(
            EndpointFingerprint::parse(canonical.as_str()),
            Some(canonical)
        );
    }

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
