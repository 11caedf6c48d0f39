//! The pure checks of a delivery, no I/O: the `X-Hub-Signature-256` HMAC,
//! GitLab's `X-Gitlab-Token`, the branch a payload names, and the bounded
//! window of delivery ids seen (each bound to the digest of its body).

use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::http::cache::TtlCache;

/// Whether `header` (`sha256=<hex>`) is the HMAC-SHA256 of `body` under
/// `secret`. The comparison is constant-time (`Mac::verify_slice`).
pub fn signature_matches(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex_digest) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_digest) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// Whether `token` (GitLab's `X-Gitlab-Token`) is `secret`. Both sides are
/// hashed first, so the comparison takes the same time whatever the
/// lengths, and the digests are compared without an early exit.
pub fn token_matches(secret: &[u8], token: &[u8]) -> bool {
    let expected = Sha256::digest(secret);
    let given = Sha256::digest(token);
    let difference = expected
        .iter()
        .zip(given.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    difference == 0 && !secret.is_empty()
}

/// The SHA-256 of a delivery's body: what binds a delivery id to the
/// payload it came with (the signature covers only the body).
pub fn build_body_digest(body: &[u8]) -> [u8; 32] {
    Sha256::digest(body).into()
}

/// `sha256=<hex>` of `body` under `secret`, as a sender computes it.
pub fn build_signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The branch a push payload names: GitHub's (and Gitea's) `ref`
/// (`refs/heads/<branch>`), or the generic `branch`. `None` when the payload
/// names no branch (a tag push, or a payload of another shape).
pub fn build_pushed_branch(payload: &serde_json::Value) -> Option<String> {
    if let Some(reference) = payload.get("ref").and_then(|r| r.as_str()) {
        return reference.strip_prefix("refs/heads/").map(str::to_string);
    }
    payload
        .get("branch")
        .and_then(|b| b.as_str())
        .filter(|b| !b.is_empty())
        .map(str::to_string)
}

/// What the window says about a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// A delivery id not seen within the window: recorded now.
    Fresh,
    /// The same delivery id with the same body: a redelivery or a replay.
    Replayed,
    /// A known delivery id with another body: a signed body under a
    /// captured id, refused.
    Conflict,
}

/// Delivery ids seen recently, each with the digest of its body, bounded
/// both in time and in count, so a captured delivery cannot be played again
/// while it is remembered, an id cannot be reused for another body, and a
/// flood of fresh ids cannot grow memory without bound.
#[derive(Debug)]
pub struct ReplayWindow {
    seen: TtlCache<String, [u8; 32]>,
}

impl ReplayWindow {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        ReplayWindow {
            seen: TtlCache::new(ttl, capacity),
        }
    }

    /// Records `id` with its body's `digest` at `now`, unless it was seen
    /// within the window.
    pub fn record(&mut self, id: &str, digest: [u8; 32], now: Instant) -> Seen {
        let id = id.to_string();
        match self.seen.get(&id, now) {
            Some(known) if known == digest => Seen::Replayed,
            Some(_) => Seen::Conflict,
            None => {
                self.seen.insert(id, digest, now);
                Seen::Fresh
            }
        }
    }

    /// Forgets `id`, so a delivery that could not be acted on may be
    /// redelivered under the same id.
    pub fn forget(&mut self, id: &str) {
        self.seen.remove(&id.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_signature_verifies_only_with_the_same_secret_and_body() {
        let header = build_signature(b"s3cret", b"{\"ref\":\"refs/heads/main\"}");
        assert!(signature_matches(
            b"s3cret",
            b"{\"ref\":\"refs/heads/main\"}",
            &header
        ));
        assert!(!signature_matches(
            b"other",
            b"{\"ref\":\"refs/heads/main\"}",
            &header
        ));
        assert!(!signature_matches(
            b"s3cret",
            b"{\"ref\":\"refs/heads/dev\"}",
            &header
        ));
        assert!(!signature_matches(b"s3cret", b"x", "sha1=00"));
        assert!(!signature_matches(b"s3cret", b"x", "sha256=not-hex"));
        assert!(!signature_matches(b"s3cret", b"x", ""));
    }

    #[test]
    fn the_branch_comes_from_ref_or_branch_and_tags_name_none() {
        assert_eq!(
            build_pushed_branch(&json!({"ref": "refs/heads/main"})).as_deref(),
            Some("main")
        );
        assert_eq!(
            build_pushed_branch(&json!({"ref": "refs/heads/feat/x"})).as_deref(),
            Some("feat/x")
        );
        assert_eq!(
            build_pushed_branch(&json!({"branch": "dev"})).as_deref(),
            Some("dev")
        );
        assert_eq!(build_pushed_branch(&json!({"ref": "refs/tags/v1"})), None);
        assert_eq!(build_pushed_branch(&json!({"zen": "hi"})), None);
    }

    const BODY: [u8; 32] = [1; 32];
    const OTHER: [u8; 32] = [2; 32];

    #[test]
    fn a_delivery_id_is_refused_within_the_window_and_forgotten_after() {
        let start = Instant::now();
        let mut window = ReplayWindow::new(Duration::from_secs(60), 2);
        assert_eq!(window.record("a", BODY, start), Seen::Fresh);
        assert_eq!(
            window.record("a", BODY, start + Duration::from_secs(1)),
            Seen::Replayed
        );
        assert_eq!(
            window.record("a", BODY, start + Duration::from_secs(61)),
            Seen::Fresh,
            "expired ids are forgotten"
        );
        window.forget("a");
        assert_eq!(
            window.record("a", BODY, start + Duration::from_secs(62)),
            Seen::Fresh,
            "a forgotten id is fresh"
        );
    }

    #[test]
    fn a_known_delivery_id_with_another_body_is_a_conflict() {
        let now = Instant::now();
        let mut window = ReplayWindow::new(Duration::from_secs(60), 8);
        assert_eq!(window.record("a", BODY, now), Seen::Fresh);
        assert_eq!(window.record("a", OTHER, now), Seen::Conflict);
        assert_eq!(
            window.record("a", BODY, now),
            Seen::Replayed,
            "the conflict did not replace the first body"
        );
    }

    #[test]
    fn the_window_never_holds_more_than_its_capacity() {
        let now = Instant::now();
        let mut window = ReplayWindow::new(Duration::from_secs(60), 2);
        assert_eq!(window.record("a", BODY, now), Seen::Fresh);
        assert_eq!(window.record("b", BODY, now), Seen::Fresh);
        assert_eq!(window.record("c", BODY, now), Seen::Fresh);
        assert!(window.seen.len() <= 2);
        assert_eq!(window.record("c", BODY, now), Seen::Replayed);
    }

    #[test]
    fn a_gitlab_token_matches_only_the_secret() {
        assert!(token_matches(b"s3cret", b"s3cret"));
        assert!(!token_matches(b"s3cret", b"s3cre"));
        assert!(!token_matches(b"s3cret", b"s3cret "));
        assert!(!token_matches(b"s3cret", b""));
        assert!(!token_matches(b"", b""));
    }
}
