//! What callers put in paths and query strings, checked before anything
//! else runs: namespaces and names in the API server's syntax, sync ids as
//! UUIDs, bounded page sizes, opaque continue tokens, bounded search text.
//! A bad value is a 400 naming the parameter. Pure.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Serialize, de::DeserializeOwned};

use super::error::ApiError;
use crate::store::SyncId;

/// Items per page when `limit` is not given.
pub const DEFAULT_LIMIT: u32 = 100;
/// Most items per page.
pub const MAX_LIMIT: u32 = 500;
/// Longest continue token accepted (a file path cursor is the largest).
const MAX_CONTINUE_BYTES: usize = 8 * 1024;
/// Longest search text, in characters.
pub const MAX_QUERY_CHARS: usize = 256;
/// Longest path prefix of a file listing, in bytes (git paths in the store
/// are at most 4 KiB).
pub const MAX_PREFIX_BYTES: usize = 4096;

/// A namespace (a DNS label: at most 63 lowercase alphanumerics or `-`).
pub fn check_namespace(namespace: &str) -> Result<(), ApiError> {
    let ok = !namespace.is_empty() && namespace.len() <= 63 && is_dns_part(namespace);
    ok.then_some(()).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "namespace {:?} is not a valid namespace name (lowercase letters, digits and '-', at most 63)",
            cut(namespace)
        ))
    })
}

/// A ProjectSync name (a DNS subdomain: at most 253, labels joined by `.`).
pub fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty() && name.len() <= 253 && name.split('.').all(is_dns_part);
    ok.then_some(()).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "name {:?} is not a valid ProjectSync name (lowercase letters, digits, '-' and '.', at most 253)",
            cut(name)
        ))
    })
}

fn is_dns_part(part: &str) -> bool {
    !part.is_empty()
        && part
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !part.starts_with('-')
        && !part.ends_with('-')
}

/// A sync id: a UUID in its usual hyphenated form.
pub fn parse_sync_id(id: &str) -> Result<SyncId, ApiError> {
    let hyphenated = id.len() == 36
        && id.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    hyphenated
        .then(|| id.parse().ok())
        .flatten()
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "sync id {:?} is not a sync run id (a UUID such as 0190f3a2-7c1e-7b8a-9d2e-3f4a5b6c7d8e)",
                cut(id)
            ))
        })
}

/// The page size: `limit`, default [`DEFAULT_LIMIT`], 1 to `max`.
pub fn page_limit(limit: Option<u32>, max: u32) -> Result<u32, ApiError> {
    match limit {
        None => Ok(DEFAULT_LIMIT.min(max)),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::BadRequest(format!(
            "limit {n} is out of range: from 1 to {max}"
        ))),
    }
}

/// Encodes a cursor as an opaque continue token.
pub fn encode_continue<T: Serialize>(cursor: &T) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(cursor).unwrap_or_default())
}

/// Decodes a continue token made by [`encode_continue`].
pub fn decode_continue<T: DeserializeOwned>(token: Option<&str>) -> Result<Option<T>, ApiError> {
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::BadRequest(
            "the continue token is not one this API issued: start again without it".into(),
        )
    };
    if token.len() > MAX_CONTINUE_BYTES {
        return Err(bad());
    }
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    serde_json::from_slice(&bytes).map(Some).map_err(|_| bad())
}

/// The search text: trimmed, not empty, at most [`MAX_QUERY_CHARS`].
pub fn check_query(q: Option<&str>) -> Result<&str, ApiError> {
    let q = q.map(str::trim).unwrap_or_default();
    if q.is_empty() {
        return Err(ApiError::BadRequest(
            "the search text is missing: pass it as ?q=".into(),
        ));
    }
    if q.chars().count() > MAX_QUERY_CHARS || q.contains('\0') {
        return Err(ApiError::BadRequest(format!(
            "the search text must be at most {MAX_QUERY_CHARS} characters, without NUL"
        )));
    }
    Ok(q)
}

/// The path prefix of a file listing: at most [`MAX_PREFIX_BYTES`], no NUL.
pub fn check_prefix(prefix: Option<&str>) -> Result<&str, ApiError> {
    let prefix = prefix.unwrap_or_default();
    if prefix.len() > MAX_PREFIX_BYTES || prefix.contains('\0') {
        return Err(ApiError::BadRequest(format!(
            "prefix must be at most {MAX_PREFIX_BYTES} bytes, without NUL"
        )));
    }
    Ok(prefix)
}

/// A value cut short for an error message (the caller's input is echoed,
/// bounded).
fn cut(value: &str) -> String {
    value.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_api_servers_syntax() {
        assert!(check_namespace("team-a").is_ok());
        assert!(check_name("app.v2").is_ok());
        for bad in [
            "",
            "Team",
            "a_b",
            "-a",
            "a-",
            &"a".repeat(64),
            "a/b",
            "..",
            "a\0",
        ] {
            assert!(check_namespace(bad).is_err(), "{bad:?}");
        }
        for bad in ["", "App", "a..b", ".a", &"a".repeat(254), "a b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_hyphenated_uuids_are_sync_ids() {
        assert!(parse_sync_id("0190f3a2-7c1e-7b8a-9d2e-3f4a5b6c7d8e").is_ok());
        for bad in [
            "",
            "0190f3a27c1e7b8a9d2e3f4a5b6c7d8e",
            "{0190f3a2-7c1e-7b8a-9d2e-3f4a5b6c7d8e}",
            "0190f3a2-7c1e-7b8a-9d2e-3f4a5b6c7d8g",
            "'; DROP TABLE project_syncs; --",
        ] {
            assert!(parse_sync_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn limits_are_bounded_and_tokens_are_checked() {
        assert_eq!(page_limit(None, MAX_LIMIT).unwrap(), DEFAULT_LIMIT);
        assert_eq!(page_limit(Some(7), MAX_LIMIT).unwrap(), 7);
        assert!(page_limit(Some(0), MAX_LIMIT).is_err());
        assert!(page_limit(Some(MAX_LIMIT + 1), MAX_LIMIT).is_err());
        let token = encode_continue(&("a/b.rs".to_string(),));
        let back: Option<(String,)> = decode_continue(Some(&token)).unwrap();
        assert_eq!(back.unwrap().0, "a/b.rs");
        assert!(decode_continue::<(String,)>(Some("%%%")).is_err());
        assert!(decode_continue::<(String,)>(Some(&"A".repeat(10_000))).is_err());
        assert!(decode_continue::<(String,)>(None).unwrap().is_none());
    }

    #[test]
    fn search_text_and_prefixes_are_bounded() {
        assert_eq!(check_query(Some("  fn main ")).unwrap(), "fn main");
        assert!(check_query(None).is_err());
        assert!(check_query(Some("   ")).is_err());
        assert!(check_query(Some(&"x".repeat(MAX_QUERY_CHARS + 1))).is_err());
        assert!(check_prefix(Some(&"x".repeat(MAX_PREFIX_BYTES + 1))).is_err());
        assert_eq!(check_prefix(None).unwrap(), "");
    }
}
