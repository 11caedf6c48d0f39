//! A small time-bounded, size-bounded map for decisions that may be reused
//! briefly (token reviews, access reviews, webhook secrets). Pure, no I/O.

use std::{
    collections::{HashMap, VecDeque},
    hash::Hash,
    time::{Duration, Instant},
};

/// Entries expire `ttl` after insertion; when `capacity` is reached the
/// oldest entry goes first, so a flood of distinct keys costs at most
/// `capacity` entries.
#[derive(Debug)]
pub struct TtlCache<K, V> {
    ttl: Duration,
    capacity: usize,
    entries: HashMap<K, Entry<V>>,
    /// Insertion order by sequence number; an item whose number no longer
    /// matches its entry is stale (the key was inserted again or removed).
    order: VecDeque<(u64, K)>,
    next: u64,
}

#[derive(Debug)]
struct Entry<V> {
    at: Instant,
    seq: u64,
    value: V,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        TtlCache {
            ttl,
            capacity: capacity.max(1),
            entries: HashMap::new(),
            order: VecDeque::new(),
            next: 0,
        }
    }

    /// The value for `key` if it was inserted less than `ttl` before `now`.
    pub fn get(&self, key: &K, now: Instant) -> Option<V> {
        self.entries
            .get(key)
            .filter(|entry| now.saturating_duration_since(entry.at) < self.ttl)
            .map(|entry| entry.value.clone())
    }

    /// Stores `value` for `key` at `now`, evicting expired entries and, when
    /// full, the oldest ones.
    pub fn insert(&mut self, key: K, value: V, now: Instant) {
        if self.order.len() > 2 * self.capacity {
            let entries = &self.entries;
            self.order
                .retain(|(seq, key)| entries.get(key).is_some_and(|e| e.seq == *seq));
        }
        while let Some((seq, oldest)) = self.order.front() {
            let live = self.entries.get(oldest).filter(|e| e.seq == *seq);
            let keep = live.is_some_and(|e| {
                now.saturating_duration_since(e.at) < self.ttl && self.entries.len() < self.capacity
            });
            if keep {
                break;
            }
            let is_live = live.is_some();
            if let Some((_, old)) = self.order.pop_front()
                && is_live
            {
                self.entries.remove(&old);
            }
        }
        let seq = self.next;
        self.next += 1;
        self.entries.insert(
            key.clone(),
            Entry {
                at: now,
                seq,
                value,
            },
        );
        self.order.push_back((seq, key));
    }

    /// Forgets `key`.
    pub fn remove(&mut self, key: &K) {
        self.entries.remove(key);
    }

    /// Entries held (expired ones included until they are evicted).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_expires_after_its_ttl() {
        let start = Instant::now();
        let mut cache = TtlCache::new(Duration::from_secs(10), 8);
        cache.insert("a", 1, start);
        assert_eq!(cache.get(&"a", start + Duration::from_secs(9)), Some(1));
        assert_eq!(cache.get(&"a", start + Duration::from_secs(10)), None);
    }

    #[test]
    fn a_flood_of_keys_never_holds_more_than_the_capacity() {
        let now = Instant::now();
        let mut cache = TtlCache::new(Duration::from_secs(10), 3);
        for i in 0..1000 {
            cache.insert(i, i, now);
        }
        assert!(cache.len() <= 3, "{}", cache.len());
        assert_eq!(cache.get(&999, now), Some(999));
    }

    #[test]
    fn a_reinserted_key_keeps_its_newest_value() {
        let now = Instant::now();
        let mut cache = TtlCache::new(Duration::from_secs(10), 2);
        cache.insert("a", 1, now);
        cache.insert("a", 2, now);
        cache.insert("b", 3, now);
        assert_eq!(cache.get(&"a", now), Some(2));
    }
}
