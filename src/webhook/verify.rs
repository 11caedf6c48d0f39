//! The pure checks of a delivery, no I/O: the `X-Hub-Signature-256` HMAC,
//! the branch a payload names, and the bounded window of delivery ids seen.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use hmac::{Hmac, Mac};
use sha2::Sha256;

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

/// Delivery ids seen recently, bounded both in time and in count, so a
/// captured delivery cannot be played again while it is remembered and a
/// flood of fresh ids cannot grow memory without bound.
#[derive(Debug)]
pub struct ReplayWindow {
    ttl: Duration,
    capacity: usize,
    seen: HashMap<String, Instant>,
    order: VecDeque<(Instant, String)>,
}

impl ReplayWindow {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        ReplayWindow {
            ttl,
            capacity: capacity.max(1),
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Records `id` at `now`; returns false when it was already seen within
    /// the window (a replay).
    pub fn record(&mut self, id: &str, now: Instant) -> bool {
        while let Some((at, _)) = self.order.front() {
            if now.duration_since(*at) < self.ttl && self.order.len() < self.capacity {
                break;
            }
            if let Some((at, old)) = self.order.pop_front()
                && self.seen.get(&old) == Some(&at)
            {
                self.seen.remove(&old);
            }
        }
        if self.seen.contains_key(id) {
            return false;
        }
        self.seen.insert(id.to_string(), now);
        self.order.push_back((now, id.to_string()));
        true
    }

    /// Forgets `id`, so a delivery that could not be acted on may be
    /// redelivered under the same id.
    pub fn forget(&mut self, id: &str) {
        self.seen.remove(id);
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

    #[test]
    fn a_delivery_id_is_refused_within_the_window_and_forgotten_after() {
        let start = Instant::now();
        let mut window = ReplayWindow::new(Duration::from_secs(60), 2);
        assert!(window.record("a", start));
        assert!(!window.record("a", start + Duration::from_secs(1)));
        assert!(
            window.record("a", start + Duration::from_secs(61)),
            "expired ids are forgotten"
        );
        window.forget("a");
        assert!(
            window.record("a", start + Duration::from_secs(62)),
            "a forgotten id is fresh"
        );
    }

    #[test]
    fn the_window_never_holds_more_than_its_capacity() {
        let now = Instant::now();
        let mut window = ReplayWindow::new(Duration::from_secs(60), 2);
        assert!(window.record("a", now));
        assert!(window.record("b", now));
        assert!(window.record("c", now));
        assert!(window.seen.len() <= 2);
        assert!(!window.record("c", now));
    }
}
