//! The change-set scan against the full tree diff, with a real git source
//! over `git daemon` and a real Postgres store: both routes leave the same
//! rows after every commit of a history full of awkward changes; a fetch
//! after a first sync brings only new objects; and the fallbacks (unrelated
//! history, a lost cache) compare trees and stay correct, while a restart
//! (a new source on the same cache directory) keeps the change-set route.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use projectsync::api::conditions::reason;
use projectsync::chunk::ChunkerConfig;
use projectsync::embed::{Embedder, NoEmbeddings};
use projectsync::pipeline::filter::PathFilter;
use projectsync::pipeline::{
    EmbeddingReusePolicy, FetchBudget, Outcome, Pipeline, ProcessingInputs, Reprocess, Step,
    SyncRequest,
};
use projectsync::run::{ScanChoice, ScanRoute};
use projectsync::source::git::{GitConfig, GitRemote};
use projectsync::source::{
    Branch, Changes, HeadCache, HeadLookup, Source, SourceResult, SourceStats, Tree,
};
use projectsync::store::{ProjectId, ProjectIdentity, ProjectSource, Store, SyncRecord};
use sqlx::PgPool;
use support::git_server::GitDaemon;
use support::repo::TestRepo;

/// A git source that never offers a change set: the full-diff reference.
#[derive(Debug)]
struct FullDiffOnly(GitRemote);

impl Source for FullDiffOnly {
    fn describe(&self) -> String {
        self.0.describe()
    }
    fn fetch_branches(&self) -> BoxFuture<'_, SourceResult<Vec<Branch>>> {
        self.0.fetch_branches()
    }
    fn fetch_branch_head<'a>(
        &'a self,
        branch: &'a str,
        cached: Option<&'a HeadCache>,
    ) -> BoxFuture<'a, SourceResult<HeadLookup>> {
        self.0.fetch_branch_head(branch, cached)
    }
    fn fetch_tree<'a>(
        &'a self,
        commit: &'a str,
        previous: Option<&'a Tree>,
    ) -> BoxFuture<'a, SourceResult<Tree>> {
        self.0.fetch_tree(commit, previous)
    }
    fn fetch_blob<'a>(&'a self, sha: &'a str, max: u64) -> BoxFuture<'a, SourceResult<Bytes>> {
        self.0.fetch_blob(sha, max)
    }
    fn fetch_changes<'a>(
        &'a self,
        _base: &'a str,
        _head: &'a str,
    ) -> BoxFuture<'a, SourceResult<Changes>> {
        Box::pin(async {
            Ok(Changes::Unavailable {
                reason: reason::CHANGES_INCOMPLETE,
            })
        })
    }
    fn stats(&self) -> SourceStats {
        self.0.stats()
    }
}

fn git_source(url: &str, cache: &std::path::Path) -> GitRemote {
    let mut config = GitConfig::new(url, cache);
    config.timeout = Duration::from_secs(60);
    // The git daemon of the test listens on loopback.
    config.egress = projectsync::egress::EgressPolicy::allow_loopback();
    GitRemote::new(config).expect("git source")
}

/// One project synced through one source.
struct Lane {
    store: Store,
    project: ProjectId,
    key: String,
    filter: PathFilter,
}

impl Lane {
    async fn new(pool: &PgPool, key: &str, url: &str, filter: PathFilter) -> Lane {
        let store = Store::new(pool.clone());
        let project = store
            .ensure_project(&ProjectIdentity {
                key: key.to_string(),
                source: ProjectSource::Git {
                    url: url.to_string(),
                },
                branch: "main".into(),
            })
            .await
            .expect("project");
        Lane {
            store,
            project,
            key: key.to_string(),
            filter,
        }
    }

    /// Syncs `commit` through `source`; the completed run.
    async fn sync(&self, source: Arc<dyn Source>, commit: &str) -> SyncRecord {
        let pipeline = Pipeline {
            source,
            store: self.store.clone(),
            chunker: ChunkerConfig::default(),
            embedder: Arc::new(NoEmbeddings) as Arc<dyn Embedder>,
            reuse: EmbeddingReusePolicy::default(),
            budget: FetchBudget::default(),
        };
        let request = SyncRequest {
            project: self.project,
            branch: "main".into(),
            pinned_commit: Some(commit.to_string()),
            head_cache: None,
            trigger: "test".into(),
            force: false,
            inputs: ProcessingInputs {
                filter: self.filter.clone(),
                max_file_size: 1 << 20,
                previous_max_file_size: Some(1 << 20),
                reprocess: Reprocess::Nothing,
            },
        };
        let mut steps = Box::pin(pipeline.run(request));
        while let Some(step) = steps.next().await {
            if let Step::Done(result) = step {
                match result.expect("run completes") {
                    Outcome::Completed { record, .. } => return record,
                    other => panic!("expected a run, got {other:?}"),
                }
            }
        }
        panic!("the run ended without an outcome")
    }

    /// The active rows, file by file, with their chunks.
    async fn picture(&self) -> Vec<String> {
        let pool = self.store.pool();
        let files: Vec<(String, String, i64, i32, String)> = sqlx::query_as(
            "SELECT path, blob_sha, size, mode, kind FROM active_repository_files
              WHERE project = $1 ORDER BY path COLLATE \"C\"",
        )
        .bind(&self.key)
        .fetch_all(pool)
        .await
        .unwrap();
        let chunks: Vec<(String, i32, i32, i32, Option<String>, String)> = sqlx::query_as(
            "SELECT path, chunk_index, start_line, end_line, language, content
               FROM active_memory_entries WHERE project = $1
              ORDER BY path COLLATE \"C\", chunk_index",
        )
        .bind(&self.key)
        .fetch_all(pool)
        .await
        .unwrap();
        files
            .into_iter()
            .map(|f| format!("file {f:?}"))
            .chain(chunks.into_iter().map(|c| format!("chunk {c:?}")))
            .collect()
    }
}

fn route(record: &SyncRecord) -> ScanChoice {
    record
        .scan
        .clone()
        .expect("a completed run records its scan")
}

fn body(n: usize) -> String {
    (0..n).map(|i| format!("fn f{i}() {{}}\n")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_set_run_leaves_exactly_the_rows_of_a_full_diff_run_after_every_commit() {
    let mut repo = TestRepo::new("demo");
    let mut sub = TestRepo::new("sub");
    sub.write("s", "1");
    let sub1 = sub.commit("s1");
    sub.write("s", "2");
    let sub2 = sub.commit("s2");

    // 1: the starting picture.
    repo.write("src/a.rs", body(3))
        .write("src/b.rs", body(5))
        .write("docs/guide.md", "# Guide\n")
        .write("README.md", "hello\n")
        .symlink("link", "README.md")
        .write("x", "a file\n")
        .write("tools/run.sh", "#!/bin/sh\necho hi\n")
        .write("secret/key.txt", "excluded\n");
    for i in 0..5 {
        repo.write(&format!("gen/g{i}.rs"), body(i + 1));
    }
    repo.add_submodule_entry("vendor/lib", &sub1);
    let mut commits = vec![repo.commit("start")];

    // 2: a rename, 644 -> 755, symlink -> file, file -> directory, an edit.
    repo.rename("src/a.rs", "src/renamed.rs")
        .write_executable("tools/run.sh", "#!/bin/sh\necho hi\n")
        .remove("link")
        .write("link", "now a file\n")
        .remove("x")
        .write("x/inner.txt", "inside\n")
        .write("src/b.rs", body(6));
    commits.push(repo.commit("renames and type changes"));

    // 3: 755 -> 644, file -> symlink, directory -> file, a whole directory
    // deleted, a case-only rename, the submodule moved.
    repo.write("tools/run.sh", "#!/bin/sh\necho hi\n");
    std::fs::set_permissions(
        repo.root().join("demo/tools/run.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .ok();
    repo.remove("link")
        .symlink("link", "docs/guide.md")
        .remove("x")
        .write("x", "a file again\n")
        .remove("gen")
        .rename("README.md", "readme.md");
    repo.git(&[
        "update-index",
        "--cacheinfo",
        &format!("160000,{sub2},vendor/lib"),
    ]);
    commits.push(repo.commit("back again"));

    // 4: a copy (reused by blob), an excluded path, an edit.
    repo.write("src/copy.rs", body(6))
        .write("secret/other.txt", "excluded too\n")
        .write("docs/guide.md", "# Guide\n\nMore.\n");
    commits.push(repo.commit("copies and excluded paths"));

    let daemon = GitDaemon::start(repo.root());
    let url = daemon.url("demo");
    let db = support::fresh_database("change_set_equivalence").await;
    projectsync::store::MIGRATOR.run(&db.pool).await.unwrap();
    let caches = tempfile::tempdir().unwrap();
    let filter = PathFilter::build(&[], &["secret/**".into()]).unwrap();
    let changes = Lane::new(&db.pool, "ns/change-set", &url, filter.clone()).await;
    let full = Lane::new(&db.pool, "ns/full-diff", &url, filter).await;
    let change_source: Arc<dyn Source> = Arc::new(git_source(&url, &caches.path().join("cs")));
    let full_source: Arc<dyn Source> =
        Arc::new(FullDiffOnly(git_source(&url, &caches.path().join("full"))));

    for (i, commit) in commits.iter().enumerate() {
        let a = changes.sync(change_source.clone(), commit).await;
        let b = full.sync(full_source.clone(), commit).await;
        let expected = if i == 0 {
            ScanChoice::full_diff(reason::FIRST_SYNC)
        } else {
            ScanChoice::change_set()
        };
        assert_eq!(route(&a), expected, "commit {i}");
        assert_eq!(route(&b).route, ScanRoute::FullDiff);
        assert_eq!(
            changes.picture().await,
            full.picture().await,
            "rows after commit {i}"
        );
        assert_eq!(
            (
                a.files.added,
                a.files.modified,
                a.files.deleted,
                a.files.unchanged,
                a.files.total
            ),
            (
                b.files.added,
                b.files.modified,
                b.files.deleted,
                b.files.unchanged,
                b.files.total
            ),
            "counts after commit {i}"
        );
    }
    let picture = changes.picture().await;
    assert!(
        picture.iter().any(|r| r.contains("\"readme.md\"")),
        "{picture:#?}"
    );
    assert!(
        !picture.iter().any(|r| r.contains("secret/")),
        "{picture:#?}"
    );
    assert!(!picture.iter().any(|r| r.contains("gen/")), "{picture:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_after_a_first_sync_brings_only_the_new_objects() {
    let mut repo = TestRepo::new("demo");
    for i in 0..2000 {
        repo.write(&format!("d{}/f{i}.txt", i % 40), format!("file {i}\n"));
    }
    let first = repo.commit("2000 files");
    repo.write("d7/f7.txt", "changed\n");
    let second = repo.commit("one change");

    let daemon = GitDaemon::start(repo.root());
    let url = daemon.url("demo");
    let db = support::fresh_database("change_set_fetch").await;
    projectsync::store::MIGRATOR.run(&db.pool).await.unwrap();
    let cache = tempfile::tempdir().unwrap();
    let lane = Lane::new(&db.pool, "ns/fetch", &url, PathFilter::all()).await;
    let source: Arc<dyn Source> = Arc::new(git_source(&url, cache.path()));

    let a = lane.sync(source.clone(), &first).await;
    let objects = a.git_transfer.expect("git runs count their fetch").objects;
    assert!(
        objects > 2000,
        "the first fetch brings every file: {objects}"
    );
    let b = lane.sync(source.clone(), &second).await;
    let transfer = b.git_transfer.unwrap();
    // A commit, its root tree, one subtree and one blob.
    assert!(
        (1..=6).contains(&transfer.objects),
        "only new objects: {transfer:?}"
    );
    assert_eq!(route(&b), ScanChoice::change_set());
    assert_eq!((b.files.modified, b.files.unchanged), (1, 1999));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrelated_history_a_lost_cache_and_a_restart_each_take_the_right_route() {
    let mut repo = TestRepo::new("demo");
    for i in 0..20 {
        repo.write(&format!("f{i}.txt"), format!("v1 {i}\n"));
    }
    let c1 = repo.commit("one");
    repo.write("f3.txt", "v2\n");
    let c2 = repo.commit("two");

    let daemon = GitDaemon::start(repo.root());
    let url = daemon.url("demo");
    let db = support::fresh_database("change_set_fallbacks").await;
    projectsync::store::MIGRATOR.run(&db.pool).await.unwrap();
    let caches = tempfile::tempdir().unwrap();
    let cache = caches.path().join("cache");
    let lane = Lane::new(&db.pool, "ns/fallbacks", &url, PathFilter::all()).await;
    let reference = Lane::new(&db.pool, "ns/reference", &url, PathFilter::all()).await;
    let reference_source: Arc<dyn Source> =
        Arc::new(FullDiffOnly(git_source(&url, &caches.path().join("ref"))));

    lane.sync(Arc::new(git_source(&url, &cache)), &c1).await;
    // A restart: a new source (and its git processes) on the same cache.
    let after_restart = lane.sync(Arc::new(git_source(&url, &cache)), &c2).await;
    assert_eq!(route(&after_restart), ScanChoice::change_set());

    // A force-push to a history that shares nothing with the synced one.
    repo.git(&["checkout", "--quiet", "--orphan", "rewritten"]);
    repo.git(&["rm", "--quiet", "-r", "--cached", "."]);
    for i in 0..20 {
        std::fs::remove_file(repo.root().join(format!("demo/f{i}.txt"))).ok();
        repo.write(&format!("g{i}.txt"), format!("other {i}\n"));
    }
    let unrelated = repo.commit("unrelated");
    repo.force_branch("main", &unrelated);
    let source: Arc<dyn Source> = Arc::new(git_source(&url, &cache));
    let forced = lane.sync(source.clone(), &unrelated).await;
    assert_eq!(
        route(&forced),
        ScanChoice::full_diff(reason::UNRELATED_HISTORY)
    );
    reference.sync(reference_source.clone(), &unrelated).await;
    assert_eq!(lane.picture().await, reference.picture().await);

    // The cache removed between runs (evicted, or lost with the pod).
    drop(source);
    std::fs::remove_dir_all(&cache).unwrap();
    repo.write("g1.txt", "edited\n");
    let next = repo.commit("after the cache is gone");
    let lost = lane.sync(Arc::new(git_source(&url, &cache)), &next).await;
    assert_eq!(
        route(&lost),
        ScanChoice::full_diff(reason::BASE_NOT_IN_CACHE)
    );
    reference.sync(reference_source.clone(), &next).await;
    assert_eq!(lane.picture().await, reference.picture().await);
    assert_eq!((lost.files.modified, lost.files.total), (1, 20));
}
