//! The bounded git cache (filesystem I/O): one directory per resource under
//! the operator's cache root, their total size kept under a limit by
//! evicting the least recently used ones.
//!
//! A cache in use by a run holds a [`CacheLease`] and is never evicted: the
//! registry of leases lives in memory and eviction decides under the same
//! lock. An evicted directory is first renamed out of the way (atomic) and
//! then deleted, so a run that takes a lease afterwards finds either the
//! whole cache or none and refetches. Only directories shaped like a cache
//! (`<name>/repo.git`) are measured or removed, so a cache root shared with
//! other files loses nothing else.
//!
//! Sizes are remembered between checks: a cache is walked again only after
//! a run held it (a lease taken or given back forgets its size), so the
//! check after each run costs one walk of that run's cache, not of all of
//! them (with thousands of resources that walk was per reconcile).

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::SystemTime,
};

/// Prefix of directories being deleted.
const EVICTING: &str = ".evicting-";

/// The operator-wide registry of git caches.
#[derive(Debug)]
pub struct GitCache {
    root: PathBuf,
    max_bytes: u64,
    usage: Mutex<HashMap<String, Usage>>,
    /// Bytes of each cache as last measured, while no run changed it.
    sizes: Mutex<HashMap<String, u64>>,
}

#[derive(Debug, Clone, Copy)]
struct Usage {
    last_used: SystemTime,
    leases: u32,
}

/// What eviction sees of one cache directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    pub name: String,
    pub bytes: u64,
    pub last_used: SystemTime,
    pub in_use: bool,
}

/// The result of one [`GitCache::enforce_limit`].
#[derive(Debug, Default)]
pub struct Eviction {
    /// Names of the caches removed, least recently used first.
    pub evicted: Vec<String>,
    /// Total size of the caches that remain.
    pub bytes: u64,
}

/// Keeps one cache from eviction while held (a run uses it).
#[derive(Debug)]
pub struct CacheLease {
    cache: Arc<GitCache>,
    name: String,
}

impl Drop for CacheLease {
    fn drop(&mut self) {
        self.cache.with_usage(|usage| {
            if let Some(u) = usage.get_mut(&self.name) {
                u.leases = u.leases.saturating_sub(1);
                u.last_used = SystemTime::now();
            }
        });
        // Measured while the run held it, it may have grown since.
        self.cache.forget_size(&self.name);
    }
}

impl GitCache {
    pub fn new(root: impl Into<PathBuf>, max_bytes: u64) -> Arc<Self> {
        Arc::new(GitCache {
            root: root.into(),
            max_bytes,
            usage: Mutex::default(),
            sizes: Mutex::default(),
        })
    }

    fn with_sizes<T>(&self, f: impl FnOnce(&mut HashMap<String, u64>) -> T) -> T {
        f(&mut self
            .sizes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    fn forget_size(&self, name: &str) {
        self.with_sizes(|sizes| sizes.remove(name));
    }

    /// The limit on the total size of all caches, in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn with_usage<T>(&self, f: impl FnOnce(&mut HashMap<String, Usage>) -> T) -> T {
        f(&mut self
            .usage
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// Marks cache `name` in use until the lease is dropped.
    pub fn lease(self: &Arc<Self>, name: &str) -> CacheLease {
        self.with_usage(|usage| {
            let u = usage.entry(name.to_string()).or_insert(Usage {
                last_used: SystemTime::now(),
                leases: 0,
            });
            u.leases += 1;
            u.last_used = SystemTime::now();
        });
        self.forget_size(name);
        CacheLease {
            cache: self.clone(),
            name: name.to_string(),
        }
    }

    /// Measures every cache and evicts least recently used ones that no run
    /// holds until the total is under the limit. Blocking: run it on a
    /// blocking thread.
    pub fn enforce_limit(&self) -> std::io::Result<Eviction> {
        let measured = self.measure()?;
        let victims = self.with_usage(|usage| {
            let entries: Vec<CacheEntry> = measured
                .iter()
                .map(|(name, bytes, modified)| {
                    let known = usage.get(name);
                    CacheEntry {
                        name: name.clone(),
                        bytes: *bytes,
                        last_used: known.map_or(*modified, |u| u.last_used),
                        in_use: known.is_some_and(|u| u.leases > 0),
                    }
                })
                .collect();
            let victims = plan_eviction(&entries, self.max_bytes);
            // Renamed under the lock: a lease taken after this sees no cache.
            let mut moved = Vec::new();
            for name in victims {
                match self.move_aside(&name) {
                    Ok(trash) => {
                        usage.remove(&name);
                        moved.push((name, trash));
                    }
                    Err(error) => {
                        tracing::warn!(cache = %name, %error, "could not evict a git cache")
                    }
                }
            }
            moved
        });
        let mut evicted = Vec::new();
        for (name, trash) in victims {
            remove_dir(&trash);
            evicted.push(name);
        }
        let bytes = measured
            .iter()
            .filter(|(name, ..)| !evicted.contains(name))
            .map(|(_, b, _)| b)
            .sum();
        Ok(Eviction { evicted, bytes })
    }

    /// Removes cache `name` (its resource was deleted) unless a run holds it.
    pub fn remove(&self, name: &str) -> std::io::Result<bool> {
        let trash = self.with_usage(|usage| {
            if usage.get(name).is_some_and(|u| u.leases > 0) {
                return Ok(None);
            }
            usage.remove(name);
            if !is_cache(&self.root.join(name)) {
                return Ok(None);
            }
            self.move_aside(name).map(Some)
        })?;
        Ok(trash.map(|t| remove_dir(&t)).is_some())
    }

    /// Removes the caches whose names are not in `keep` (resources deleted
    /// while the operator was down) and leftovers of interrupted evictions.
    /// Returns the names removed.
    pub fn retain(&self, keep: &HashSet<String>) -> std::io::Result<Vec<String>> {
        let mut removed = Vec::new();
        for entry in read_root(&self.root)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(EVICTING) {
                remove_dir(&entry.path());
            } else if !keep.contains(&name) && is_cache(&entry.path()) && self.remove(&name)? {
                removed.push(name);
            }
        }
        Ok(removed)
    }

    /// `(name, bytes, modified)` of every cache directory.
    fn measure(&self) -> std::io::Result<Vec<(String, u64, SystemTime)>> {
        let mut caches = Vec::new();
        for entry in read_root(&self.root)? {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(EVICTING) || !is_cache(&path) {
                continue;
            }
            let modified = std::fs::metadata(path.join("repo.git"))
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let bytes = match self.with_sizes(|sizes| sizes.get(&name).copied()) {
                Some(bytes) => bytes,
                None => {
                    let bytes = dir_size(&path);
                    self.with_sizes(|sizes| sizes.insert(name.clone(), bytes));
                    bytes
                }
            };
            caches.push((name, bytes, modified));
        }
        Ok(caches)
    }

    fn move_aside(&self, name: &str) -> std::io::Result<PathBuf> {
        self.forget_size(name);
        let trash = self.root.join(format!(
            "{EVICTING}{name}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::rename(self.root.join(name), &trash)?;
        Ok(trash)
    }
}

/// Which caches to evict, least recently used first, so that the rest fit
/// in `max_bytes`. Caches in use are never chosen, even when that leaves
/// the total over the limit. Pure.
pub fn plan_eviction(entries: &[CacheEntry], max_bytes: u64) -> Vec<String> {
    let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
    let mut candidates: Vec<&CacheEntry> = entries.iter().filter(|e| !e.in_use).collect();
    candidates.sort_by(|a, b| {
        a.last_used
            .cmp(&b.last_used)
            .then_with(|| a.name.cmp(&b.name))
    });
    let mut victims = Vec::new();
    for entry in candidates {
        if total <= max_bytes {
            break;
        }
        total -= entry.bytes;
        victims.push(entry.name.clone());
    }
    victims
}

/// Apparent size of everything under `path` (symlinks not followed).
pub fn dir_size(path: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(meta) if meta.is_dir() => stack.push(entry.path()),
                Ok(meta) => total += meta.len(),
                Err(_) => {}
            }
        }
    }
    total
}

fn is_cache(path: &Path) -> bool {
    path.join("repo.git").is_dir()
}

fn read_root(root: &Path) -> std::io::Result<Vec<std::fs::DirEntry>> {
    match std::fs::read_dir(root) {
        Ok(entries) => Ok(entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

fn remove_dir(path: &Path) {
    if let Err(error) = std::fs::remove_dir_all(path) {
        tracing::warn!(path = %path.display(), %error, "could not remove an evicted git cache");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn entry(name: &str, bytes: u64, age_secs: u64, in_use: bool) -> CacheEntry {
        CacheEntry {
            name: name.into(),
            bytes,
            last_used: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 - age_secs),
            in_use,
        }
    }

    #[test]
    fn nothing_is_evicted_under_the_limit() {
        assert!(
            plan_eviction(&[entry("a", 40, 10, false), entry("b", 60, 5, false)], 100).is_empty()
        );
    }

    #[test]
    fn least_recently_used_caches_go_first_until_the_rest_fit() {
        let entries = [
            entry("new", 50, 1, false),
            entry("old", 50, 300, false),
            entry("mid", 50, 60, false),
        ];
        assert_eq!(plan_eviction(&entries, 100), vec!["old"]);
        assert_eq!(plan_eviction(&entries, 50), vec!["old", "mid"]);
        assert_eq!(plan_eviction(&entries, 0), vec!["old", "mid", "new"]);
    }

    #[test]
    fn a_cache_in_use_is_never_evicted_even_over_the_limit() {
        let entries = [
            entry("running", 500, 900, true),
            entry("idle", 10, 1, false),
        ];
        assert_eq!(plan_eviction(&entries, 100), vec!["idle"]);
    }

    fn fake_cache(root: &Path, name: &str, bytes: usize) {
        let dir = root.join(name).join("repo.git");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("pack"), vec![0u8; bytes]).unwrap();
    }

    #[test]
    fn eviction_spares_leased_caches_and_keeps_foreign_directories() {
        let root = tempfile::tempdir().unwrap();
        let cache = GitCache::new(root.path(), 1500);
        fake_cache(root.path(), "a", 1000);
        fake_cache(root.path(), "b", 1000);
        std::fs::create_dir_all(root.path().join("not-a-cache")).unwrap();
        let _lease_a = cache.lease("a");
        {
            let _lease_b = cache.lease("b");
        }
        let eviction = cache.enforce_limit().unwrap();
        assert_eq!(eviction.evicted, vec!["b"]);
        assert_eq!(eviction.bytes, 1000);
        assert!(root.path().join("a/repo.git").exists());
        assert!(!root.path().join("b").exists());
        assert!(root.path().join("not-a-cache").exists());
    }

    #[test]
    fn a_cache_is_measured_again_only_after_a_run_held_it() {
        let root = tempfile::tempdir().unwrap();
        let cache = GitCache::new(root.path(), u64::MAX);
        fake_cache(root.path(), "a", 1000);
        fake_cache(root.path(), "b", 100);
        assert_eq!(cache.enforce_limit().unwrap().bytes, 1100);
        // Grown behind the registry's back: the remembered sizes stand.
        std::fs::write(root.path().join("a/repo.git/more"), vec![0u8; 500]).unwrap();
        std::fs::write(root.path().join("b/repo.git/more"), vec![0u8; 50]).unwrap();
        assert_eq!(cache.enforce_limit().unwrap().bytes, 1100);
        // A run held `a` (and a check while it ran measured it midway).
        let lease = cache.lease("a");
        assert_eq!(cache.enforce_limit().unwrap().bytes, 1600);
        std::fs::write(root.path().join("a/repo.git/fetched"), vec![0u8; 200]).unwrap();
        drop(lease);
        assert_eq!(cache.enforce_limit().unwrap().bytes, 1800);
    }

    #[test]
    fn caches_of_resources_that_are_gone_are_removed_at_start_up() {
        let root = tempfile::tempdir().unwrap();
        let cache = GitCache::new(root.path(), u64::MAX);
        fake_cache(root.path(), "kept", 10);
        fake_cache(root.path(), "gone", 10);
        std::fs::create_dir_all(root.path().join(".evicting-x-1")).unwrap();
        let removed = cache.retain(&HashSet::from(["kept".to_string()])).unwrap();
        assert_eq!(removed, vec!["gone"]);
        assert!(root.path().join("kept").exists());
        assert!(!root.path().join(".evicting-x-1").exists());
    }
}
