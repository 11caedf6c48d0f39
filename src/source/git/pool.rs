//! The operator's pool of git helper processes (I/O: spawns and ends
//! processes). A `git cat-file --batch-command` serves one git directory,
//! so helpers are kept per cache directory, but their number is capped for
//! the whole operator: a replica with thousands of resources runs a few
//! dozen helpers, not one per resource (in a pod their memory counts
//! against the container and the PID limit applies).
//!
//! - A helper is opened on demand, by the first read of a directory that
//!   has no idle one, and goes back to the pool after each read.
//! - An idle helper is closed after the idle timeout.
//! - At the cap, the least recently used idle helper (of any directory) is
//!   closed to make room; when every helper is busy, a read waits, bounded,
//!   and the wait ends with the run that asked (its future is dropped).
//! - A helper that was not given back (its read failed, or was cut off by
//!   an aborted run with half an answer in its pipe) is never reused: it is
//!   killed and its place freed.
//!
//! Generic over the helper so that the policy is tested with fakes.

use std::{
    collections::VecDeque,
    future::Future,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use prometheus::IntGauge;
use tokio::sync::Notify;

use super::batch::CatFile;

/// Default of `--git-helpers`.
pub const DEFAULT_MAX_HELPERS: usize = 32;
/// Default of `--git-helper-idle-timeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A process the pool keeps.
pub(crate) trait Helper: Send + 'static {
    /// Ends the process and waits (briefly) until it has exited.
    fn close(self) -> impl Future<Output = ()> + Send;
}

/// How many helpers, for how long, and where to report them.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    /// Helpers alive at most, idle and busy together (at least 1).
    pub max_helpers: usize,
    /// An idle helper is closed after this long.
    pub idle_timeout: Duration,
    /// Set to the number of helpers alive.
    pub helpers_gauge: Option<IntGauge>,
    /// Set to the number of one-off git commands running (fetch,
    /// ls-remote, ls-tree, ...), which the sources report here too.
    pub commands_gauge: Option<IntGauge>,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_helpers: DEFAULT_MAX_HELPERS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            helpers_gauge: None,
            commands_gauge: None,
        }
    }
}

/// No helper came free within the wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PoolBusy {
    pub max_helpers: usize,
}

/// A pool of helpers keyed by git directory.
pub(crate) struct Pool<H> {
    settings: PoolSettings,
    state: Mutex<State<H>>,
    /// Woken when a helper is given back or a place is freed.
    freed: Notify,
    reaper_started: AtomicBool,
}

struct State<H> {
    /// Helpers alive (idle, busy and closing).
    live: usize,
    /// Least recently given back first.
    idle: VecDeque<Idle<H>>,
}

struct Idle<H> {
    key: PathBuf,
    helper: H,
    since: Instant,
}

/// One place under the cap; freed when dropped, unless an idle helper
/// keeps it (`kept`).
struct Place<H> {
    pool: Arc<Pool<H>>,
    kept: bool,
}

impl<H> Place<H> {
    fn new(pool: &Arc<Pool<H>>) -> Self {
        Place {
            pool: pool.clone(),
            kept: false,
        }
    }
}

impl<H> Drop for Place<H> {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        self.pool
            .with_state(|state| state.live = state.live.saturating_sub(1));
        self.pool.publish();
        self.pool.freed.notify_one();
    }
}

/// A helper taken out of the pool for one read. [`Leased::give_back`]
/// returns it; dropped instead (the read failed or was cut off), the
/// helper is killed and never reused.
pub(crate) struct Leased<H> {
    helper: Option<H>,
    key: PathBuf,
    place: Option<Place<H>>,
}

impl<H> Leased<H> {
    #[cfg(test)]
    pub fn helper(&mut self) -> &mut H {
        self.helper
            .as_mut()
            .expect("a lease holds its helper until given back")
    }

    /// Takes the helper out, for a task that owns it while it answers (and
    /// drops it, killing it, when cut off); the lease keeps the helper's
    /// place in the pool meanwhile.
    pub fn take(&mut self) -> H {
        self.helper
            .take()
            .expect("a lease holds its helper until given back")
    }

    /// Puts back a helper [`Leased::take`] took out.
    pub fn put(&mut self, helper: H) {
        self.helper = Some(helper);
    }

    /// Returns the helper to the pool for the next read of its directory.
    pub fn give_back(mut self) {
        let (Some(helper), Some(mut place)) = (self.helper.take(), self.place.take()) else {
            return;
        };
        place.pool.with_state(|state| {
            state.idle.push_back(Idle {
                key: std::mem::take(&mut self.key),
                helper,
                since: Instant::now(),
            })
        });
        // The idle helper keeps the place.
        place.kept = true;
        place.pool.freed.notify_one();
    }
}

impl<H> Pool<H> {
    pub fn settings(&self) -> &PoolSettings {
        &self.settings
    }

    /// Helpers alive now (idle, busy and closing).
    pub fn running(&self) -> usize {
        self.with_state(|state| state.live)
    }

    /// Idle helpers now.
    pub fn idle(&self) -> usize {
        self.with_state(|state| state.idle.len())
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut State<H>) -> T) -> T {
        f(&mut self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    fn publish(&self) {
        if let Some(gauge) = &self.settings.helpers_gauge {
            gauge.set(i64::try_from(self.running()).unwrap_or(i64::MAX));
        }
    }
}

impl<H: Helper> Pool<H> {
    pub fn new(settings: PoolSettings) -> Arc<Self> {
        let settings = PoolSettings {
            max_helpers: settings.max_helpers.max(1),
            ..settings
        };
        Arc::new(Pool {
            settings,
            state: Mutex::new(State {
                live: 0,
                idle: VecDeque::new(),
            }),
            freed: Notify::new(),
            reaper_started: AtomicBool::new(false),
        })
    }

    /// A helper for `key`: its idle one, or a new one from `spawn` when
    /// there is room (closing the least recently used idle helper of
    /// another directory at the cap), or the first one given back within
    /// `wait`. Dropping the future gives up the wait.
    pub async fn checkout<E>(
        self: &Arc<Self>,
        key: &Path,
        wait: Duration,
        spawn: impl FnOnce() -> Result<H, E>,
    ) -> Result<Result<Leased<H>, E>, PoolBusy> {
        self.start_reaper();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let (taken, evicted) = self.with_state(|state| {
                if let Some(at) = state.idle.iter().rposition(|i| i.key == key) {
                    let idle = state.idle.remove(at).expect("position is in range");
                    return (Some(Some(idle.helper)), None);
                }
                if state.live < self.settings.max_helpers {
                    state.live += 1;
                    return (Some(None), None);
                }
                // Full: the least recently used idle helper makes room.
                match state.idle.pop_front() {
                    Some(lru) => (Some(None), Some(lru.helper)),
                    None => (None, None),
                }
            });
            if let Some(taken) = taken {
                let place = Place::new(self);
                self.publish();
                if let Some(evicted) = evicted {
                    evicted.close().await;
                }
                let helper = match taken {
                    Some(helper) => helper,
                    None => match spawn() {
                        Ok(helper) => helper,
                        Err(error) => return Ok(Err(error)),
                    },
                };
                return Ok(Ok(Leased {
                    helper: Some(helper),
                    key: key.to_path_buf(),
                    place: Some(place),
                }));
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return Err(PoolBusy {
                    max_helpers: self.settings.max_helpers,
                });
            }
        }
    }

    /// Kills the idle helpers of `key` (its cache was evicted, removed or
    /// emptied: they hold its deleted files open).
    pub fn discard(self: &Arc<Self>, key: &Path) {
        let gone: Vec<Idle<H>> = self.with_state(|state| {
            let (gone, kept): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut state.idle)
                .into_iter()
                .partition(|i| i.key == key);
            state.idle = kept;
            gone.into_iter().collect()
        });
        for idle in gone {
            drop(idle);
            drop(Place::new(self));
        }
    }

    /// Closes the helpers idle for longer than the idle timeout.
    pub async fn close_expired(self: &Arc<Self>) {
        let now = Instant::now();
        let timeout = self.settings.idle_timeout;
        let closing: Vec<H> = self.with_state(|state| {
            let mut expired = Vec::new();
            while state
                .idle
                .front()
                .is_some_and(|i| now.duration_since(i.since) >= timeout)
            {
                expired.extend(state.idle.pop_front().map(|i| i.helper));
            }
            expired
        });
        self.close_all(closing).await;
    }

    /// Closes helpers taken out of the idle list, freeing their places
    /// once they have exited.
    async fn close_all(self: &Arc<Self>, helpers: Vec<H>) {
        for helper in helpers {
            let place = Place::new(self);
            helper.close().await;
            drop(place);
        }
    }

    /// Starts the task that closes expired helpers (once, from the first
    /// read, so that the pool can be built outside a runtime). It holds
    /// the pool weakly and ends with it.
    fn start_reaper(self: &Arc<Self>) {
        if self.reaper_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let tick = (self.settings.idle_timeout / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(5));
        let pool: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(tick).await;
                let Some(pool) = pool.upgrade() else {
                    return;
                };
                pool.close_expired().await;
            }
        });
    }
}

/// The operator's `cat-file` helpers, shared by every git source (a
/// one-off CLI command builds its own).
#[derive(Clone)]
pub struct GitHelpers {
    pub(crate) pool: Arc<Pool<CatFile>>,
}

impl GitHelpers {
    pub fn new(settings: PoolSettings) -> Self {
        GitHelpers {
            pool: Pool::new(settings),
        }
    }

    /// Helpers alive now, idle and busy.
    pub fn running(&self) -> usize {
        self.pool.running()
    }

    /// Helpers idle now.
    pub fn idle(&self) -> usize {
        self.pool.idle()
    }

    pub fn settings(&self) -> &PoolSettings {
        self.pool.settings()
    }

    /// Kills the idle helpers of the cache repository `git_dir` (the
    /// cache was evicted, removed or emptied).
    pub fn discard(&self, git_dir: &Path) {
        self.pool.discard(git_dir);
    }
}

impl Default for GitHelpers {
    fn default() -> Self {
        GitHelpers::new(PoolSettings::default())
    }
}

impl std::fmt::Debug for GitHelpers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHelpers")
            .field("max_helpers", &self.pool.settings.max_helpers)
            .field("running", &self.running())
            .finish()
    }
}

/// Counts one running git command in the commands gauge while it lives.
pub(crate) struct CommandRunning(Option<IntGauge>);

impl CommandRunning {
    pub fn start(gauge: Option<&IntGauge>) -> Self {
        if let Some(gauge) = gauge {
            gauge.inc();
        }
        CommandRunning(gauge.cloned())
    }
}

impl Drop for CommandRunning {
    fn drop(&mut self) {
        if let Some(gauge) = &self.0 {
            gauge.dec();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A fake helper that counts how many are open.
    struct Fake {
        id: usize,
        open: Arc<AtomicUsize>,
    }

    impl Helper for Fake {
        async fn close(self) {
            self.open.fetch_sub(1, Ordering::SeqCst);
        }
    }

    struct Harness {
        pool: Arc<Pool<Fake>>,
        open: Arc<AtomicUsize>,
        spawned: Arc<AtomicUsize>,
    }

    impl Harness {
        fn new(max_helpers: usize, idle_timeout: Duration) -> Self {
            Harness {
                pool: Pool::new(PoolSettings {
                    max_helpers,
                    idle_timeout,
                    ..PoolSettings::default()
                }),
                open: Arc::default(),
                spawned: Arc::default(),
            }
        }

        async fn take(&self, key: &str, wait: Duration) -> Result<Leased<Fake>, PoolBusy> {
            let (open, spawned) = (self.open.clone(), self.spawned.clone());
            self.pool
                .checkout(Path::new(key), wait, move || {
                    open.fetch_add(1, Ordering::SeqCst);
                    let id = spawned.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, ()>(Fake { id, open })
                })
                .await
                .map(|spawned| spawned.expect("the fake spawns"))
        }
    }

    const SHORT: Duration = Duration::from_millis(50);

    #[tokio::test]
    async fn a_directory_reuses_its_idle_helper() {
        let h = Harness::new(4, Duration::from_secs(60));
        let mut first = h.take("a", SHORT).await.unwrap();
        let id = first.helper().id;
        first.give_back();
        let mut again = h.take("a", SHORT).await.unwrap();
        assert_eq!(again.helper().id, id);
        assert_eq!(h.spawned.load(Ordering::SeqCst), 1);
        assert_eq!(h.pool.running(), 1);
    }

    #[tokio::test]
    async fn at_the_cap_the_least_recently_used_idle_helper_makes_room() {
        let h = Harness::new(2, Duration::from_secs(60));
        h.take("a", SHORT).await.unwrap().give_back();
        h.take("b", SHORT).await.unwrap().give_back();
        let c = h.take("c", SHORT).await.unwrap();
        assert_eq!(h.pool.running(), 2);
        assert_eq!(h.open.load(Ordering::SeqCst), 2, "a was closed for c");
        c.give_back();
        // b is still idle and reused; a needs a new helper.
        let mut b = h.take("b", SHORT).await.unwrap();
        assert_eq!(b.helper().id, 1);
    }

    #[tokio::test]
    async fn when_every_helper_is_busy_a_read_waits_for_one_and_the_wait_is_bounded() {
        let h = Harness::new(1, Duration::from_secs(60));
        let busy = h.take("a", SHORT).await.unwrap();
        assert_eq!(
            h.take("b", SHORT).await.err(),
            Some(PoolBusy { max_helpers: 1 })
        );
        let pool = h.pool.clone();
        let waiter = async { h.take("b", Duration::from_secs(10)).await };
        let giver = async move {
            tokio::time::sleep(SHORT).await;
            busy.give_back();
        };
        let (got, ()) = tokio::join!(waiter, giver);
        assert!(got.is_ok());
        assert_eq!(pool.running(), 1);
    }

    #[tokio::test]
    async fn a_helper_not_given_back_is_never_reused_and_frees_its_place() {
        let h = Harness::new(1, Duration::from_secs(60));
        let cut_off = h.take("a", SHORT).await.unwrap();
        drop(cut_off);
        assert_eq!(h.pool.running(), 0);
        let mut next = h.take("a", SHORT).await.unwrap();
        assert_eq!(next.helper().id, 1, "a fresh helper");
    }

    #[tokio::test]
    async fn a_wait_given_up_with_its_run_leaves_the_pool_usable() {
        let h = Harness::new(1, Duration::from_secs(60));
        let busy = h.take("a", SHORT).await.unwrap();
        let abandoned = tokio::time::timeout(SHORT, h.take("b", Duration::from_secs(60))).await;
        assert!(abandoned.is_err(), "the wait was cancelled");
        busy.give_back();
        assert!(h.take("b", SHORT).await.is_ok());
    }

    #[tokio::test]
    async fn idle_helpers_are_closed_after_the_idle_timeout() {
        let h = Harness::new(4, Duration::from_millis(100));
        h.take("a", SHORT).await.unwrap().give_back();
        h.take("b", SHORT).await.unwrap().give_back();
        assert_eq!(h.pool.idle(), 2);
        let deadline = Instant::now() + Duration::from_secs(5);
        while h.pool.running() > 0 {
            assert!(Instant::now() < deadline, "idle helpers still open");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(h.open.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn discarding_a_directory_closes_only_its_idle_helpers() {
        let h = Harness::new(4, Duration::from_secs(60));
        h.take("a", SHORT).await.unwrap().give_back();
        h.take("b", SHORT).await.unwrap().give_back();
        h.pool.discard(Path::new("a"));
        assert_eq!(h.pool.running(), 1);
        assert_eq!(h.pool.idle(), 1);
    }

    #[tokio::test]
    async fn a_failed_spawn_frees_its_place() {
        let h = Harness::new(1, Duration::from_secs(60));
        let failed = h
            .pool
            .checkout(Path::new("a"), SHORT, || Err::<Fake, _>("no git"))
            .await
            .unwrap();
        assert!(failed.is_err());
        assert_eq!(h.pool.running(), 0);
        assert!(h.take("a", SHORT).await.is_ok());
    }
}
