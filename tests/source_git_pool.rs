//! The pool of git helper processes against a real `git daemon`: many git
//! sources share at most the cap of `git cat-file` processes, idle ones
//! exit after the idle timeout, and a helper killed under the pool is
//! replaced without failing the read. Processes are counted in `/proc`
//! (children of this test process whose cache is under the test's own
//! directory, so parallel tests do not see each other's).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use projectsync::source::Source;
use projectsync::source::git::{GitConfig, GitHelpers, GitRemote, PoolSettings};
use support::git_server::GitDaemon;
use support::repo::TestRepo;

/// Live (not zombie) children of this process running `cat-file` on a
/// cache repository under `root`.
fn helpers_under(root: &Path) -> Vec<u32> {
    let me = std::process::id();
    let root = root.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let mut fields = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .unwrap_or("")
            .split_whitespace();
        let state = fields.next().unwrap_or("Z");
        let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
        if ppid != Some(me) || state == "Z" || state == "X" {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.iter().any(|a| a == "cat-file") && args.iter().any(|a| a.starts_with(&root)) {
            found.push(pid);
        }
    }
    found
}

/// Polls (every 20 ms, for at most `within`) until `done` holds.
async fn eventually(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A repository of `files` small files, served by `git daemon`.
fn served_repo(files: usize) -> (TestRepo, GitDaemon, String) {
    let mut repo = TestRepo::new("pooled");
    for i in 0..files {
        repo.write(&format!("src/f{i}.txt"), format!("file {i}\n"));
    }
    let head = repo.commit("files");
    let daemon = GitDaemon::start(repo.root());
    (repo, daemon, head)
}

fn source(url: &str, cache: &Path, helpers: &GitHelpers) -> GitRemote {
    let mut config = GitConfig::new(url, cache);
    config.egress = projectsync::egress::EgressPolicy::allow_loopback();
    config.timeout = Duration::from_secs(60);
    config.helpers = helpers.clone();
    GitRemote::new(config).expect("git source")
}

fn helpers(max_helpers: usize, idle_timeout: Duration) -> (GitHelpers, prometheus::IntGauge) {
    let gauge = prometheus::IntGauge::new("helpers", "helpers").unwrap();
    let helpers = GitHelpers::new(PoolSettings {
        max_helpers,
        idle_timeout,
        helpers_gauge: Some(gauge.clone()),
        commands_gauge: None,
    });
    (helpers, gauge)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_sources_reading_at_once_share_at_most_the_cap_of_helper_processes() {
    let (_repo, daemon, head) = served_repo(6);
    let root = tempfile::tempdir().unwrap();
    let (pool, gauge) = helpers(3, Duration::from_secs(60));
    let sources: Vec<GitRemote> = (0..12)
        .map(|i| {
            source(
                &daemon.url("pooled"),
                &root.path().join(format!("cache{i}")),
                &pool,
            )
        })
        .collect();
    let mut trees = Vec::new();
    for source in &sources {
        trees.push(source.fetch_tree(&head, None).await.unwrap());
    }

    let most = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (most, stop, root) = (most.clone(), stop.clone(), root.path().to_path_buf());
        tokio::task::spawn_blocking(move || {
            while !stop.load(Ordering::SeqCst) {
                most.fetch_max(helpers_under(&root).len(), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let reads = sources.iter().zip(&trees).map(|(source, tree)| async move {
        let mut read = 0;
        for round in 0..3 {
            for entry in &tree.entries {
                let bytes = source.fetch_blob(&entry.blob_sha, 1024).await.unwrap();
                let i = entry
                    .path
                    .trim_start_matches("src/f")
                    .trim_end_matches(".txt");
                assert_eq!(bytes, format!("file {i}\n").as_bytes(), "round {round}");
                read += 1;
            }
        }
        read
    });
    let read: usize = futures::future::join_all(reads).await.into_iter().sum();
    stop.store(true, Ordering::SeqCst);
    sampler.await.unwrap();

    assert_eq!(read, 12 * 6 * 3);
    let most = most.load(Ordering::SeqCst);
    assert!(
        (1..=3).contains(&most),
        "{most} cat-file processes seen at once, cap 3"
    );
    let alive = helpers_under(root.path()).len();
    assert!(alive <= 3, "{alive} helpers left, cap 3");
    assert_eq!(pool.running(), alive, "the pool counts what runs");
    assert_eq!(gauge.get(), alive as i64, "the gauge shows what runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_helpers_exit_after_the_idle_timeout_and_come_back_on_demand() {
    let (_repo, daemon, head) = served_repo(2);
    let root = tempfile::tempdir().unwrap();
    let (pool, gauge) = helpers(8, Duration::from_millis(1500));
    let a = source(&daemon.url("pooled"), &root.path().join("a"), &pool);
    let b = source(&daemon.url("pooled"), &root.path().join("b"), &pool);
    let tree = a.fetch_tree(&head, None).await.unwrap();
    b.fetch_tree(&head, None).await.unwrap();
    let sha = &tree.entries[0].blob_sha;
    a.fetch_blob(sha, 1024).await.unwrap();
    b.fetch_blob(sha, 1024).await.unwrap();
    assert_eq!(pool.running(), 2, "one helper per cache repository");

    eventually(Duration::from_secs(15), "idle helpers exited", || {
        helpers_under(root.path()).is_empty() && pool.running() == 0
    })
    .await;
    assert_eq!(gauge.get(), 0);

    assert_eq!(
        a.fetch_blob(sha, 1024).await.unwrap(),
        "file 0\n".as_bytes()
    );
    assert_eq!(
        helpers_under(root.path()).len(),
        1,
        "opened again on demand"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_helper_killed_under_the_pool_is_replaced_and_the_read_succeeds() {
    let (_repo, daemon, head) = served_repo(2);
    let root = tempfile::tempdir().unwrap();
    let (pool, _gauge) = helpers(2, Duration::from_secs(60));
    let source = source(&daemon.url("pooled"), &root.path().join("cache"), &pool);
    let tree = source.fetch_tree(&head, None).await.unwrap();
    let (first, second) = (&tree.entries[0], &tree.entries[1]);
    source.fetch_blob(&first.blob_sha, 1024).await.unwrap();
    let killed = helpers_under(root.path());
    assert_eq!(killed.len(), 1, "one idle helper: {killed:?}");

    let status = std::process::Command::new("kill")
        .args(["-KILL", &killed[0].to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    eventually(Duration::from_secs(10), "the killed helper is gone", || {
        !helpers_under(root.path()).contains(&killed[0])
    })
    .await;

    assert_eq!(
        source.fetch_blob(&second.blob_sha, 1024).await.unwrap(),
        "file 1\n".as_bytes(),
        "the read after the kill succeeds"
    );
    let now = helpers_under(root.path());
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(now[0], killed[0], "a new process");
    assert_eq!(pool.running(), 1, "the dead helper's place was freed");
}
