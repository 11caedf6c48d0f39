//! Which scan route a run takes, end to end: the real operator against the
//! real API server, Postgres, `git daemon` and the GitHub stand-in. After a
//! first sync a change takes the change-set route and fetches only new
//! objects, also after an operator restart on the same cache; a cache lost
//! with the pod, a force-push to unrelated history and a GitHub compare
//! beyond 300 files fall back to the full tree diff with their reason in
//! `status.lastSync.scan`, and every route leaves exactly the tree's rows.

use std::collections::BTreeMap;

use kube::Api;
use projectsync::api::{ProjectSync, SyncSummary, conditions::reason};
use serde_json::json;
use support::{
    TestDb, fresh_database, fresh_namespace,
    git_server::GitDaemon,
    github::GithubStandIn,
    operator::{Operator, OperatorConfig},
    psync::{create, request_sync, synced_at, wait_until},
    repo::TestRepo,
};

/// `(path, blob sha)` of the active view for a project.
async fn active_files(db: &TestDb, project: &str) -> BTreeMap<String, String> {
    sqlx::query_as("SELECT path, blob_sha FROM active_repository_files WHERE project = $1")
        .bind(project)
        .fetch_all(&db.pool)
        .await
        .expect("query the active view")
        .into_iter()
        .collect()
}

/// What `git ls-tree -r` says, in the same shape.
fn git_tree(repo: &TestRepo, commit: &str) -> BTreeMap<String, String> {
    repo.ls_tree(commit)
        .into_iter()
        .map(|e| (String::from_utf8(e.path).expect("utf-8 test paths"), e.sha))
        .collect()
}

/// The route and reason the last run's scan took.
fn route(last: &SyncSummary) -> (String, Option<String>) {
    let scan = last.scan.as_ref().expect("status.lastSync.scan");
    (scan.route.clone(), scan.reason.clone())
}

fn full_diff(reason: &str) -> (String, Option<String>) {
    ("FullDiff".into(), Some(reason.into()))
}

fn change_set() -> (String, Option<String>) {
    ("ChangeSet".into(), None)
}

/// Asks for a sync and waits until the resource is synced at `head`.
async fn sync_to(
    api: &Api<ProjectSync>,
    operator: &Operator,
    name: &str,
    value: &str,
    head: &str,
) -> SyncSummary {
    request_sync(api, name, value).await;
    last_sync(api, operator, name, head).await
}

async fn last_sync(
    api: &Api<ProjectSync>,
    operator: &Operator,
    name: &str,
    head: &str,
) -> SyncSummary {
    wait_until(
        api,
        name,
        || operator.log_tail(),
        "synced",
        synced_at(head.to_string()),
    )
    .await
    .status
    .and_then(|s| s.last_sync)
    .expect("status.lastSync")
}

#[tokio::test]
async fn git_runs_take_the_change_set_route_across_restarts_and_fall_back_when_the_cache_or_the_history_is_gone()
 {
    let ns = fresh_namespace("op-routes-git").await;
    let db = fresh_database("op_routes_git").await;
    let mut repo = TestRepo::new("app");
    for i in 0..300 {
        repo.write(&format!("d{}/f{i}.txt", i % 10), format!("file {i}\n"));
    }
    let first = repo.commit("300 files");
    let daemon = GitDaemon::start(repo.root());
    let cache = tempfile::tempdir().unwrap();
    let config = || OperatorConfig {
        cache_dir: Some(cache.path()),
        ..OperatorConfig::new(&ns.name, &db.url)
    };
    let mut operator = Operator::start(config()).await;
    let api: Api<ProjectSync> = Api::namespaced(ns.client.clone(), &ns.name);
    let project = format!("{}/app", ns.name);
    create(
        &api,
        "app",
        json!({
            "source": { "git": { "url": daemon.url("app") } },
            "branch": "main",
            "interval": "1h",
            "historyLimit": 2,
        }),
    )
    .await;
    let last = last_sync(&api, &operator, "app", &first).await;
    assert_eq!(route(&last), full_diff(reason::FIRST_SYNC));
    assert!(last.fetched.expect("git counts its fetch").objects > 300);

    // One change: the change set, and only the new objects on the wire.
    repo.write("d3/f3.txt", "changed\n");
    let second = repo.commit("one change");
    let requests = daemon.request_count();
    let last = sync_to(&api, &operator, "app", "second", &second).await;
    assert_eq!(route(&last), change_set());
    // One ls-remote (the head, and the branch names status shows) and one
    // fetch: no second listing for the names.
    assert_eq!(daemon.request_count() - requests, 2);
    let status = api.get("app").await.unwrap().status.unwrap();
    assert_eq!(status.branches, ["main"]);
    let fetched = last.fetched.expect("fetched");
    assert!(
        (1..=6).contains(&fetched.objects),
        "a commit, its root tree, one subtree and one blob: {fetched:?}"
    );
    assert_eq!((last.files.modified, last.files.unchanged), (1, 299));

    // An operator restart on the same cache (a persistent volume): still
    // the change set.
    operator.terminate(std::time::Duration::from_secs(20)).await;
    let operator = Operator::start(config()).await;
    repo.write("d4/f4.txt", "changed too\n");
    let third = repo.commit("after a restart");
    let last = sync_to(&api, &operator, "app", "third", &third).await;
    assert_eq!(route(&last), change_set());
    assert_eq!(active_files(&db, &project).await, git_tree(&repo, &third));
    drop(operator);

    // The cache lost with the pod: a fresh operator on an empty cache
    // diffs trees, and says why.
    let operator = Operator::start(OperatorConfig::new(&ns.name, &db.url)).await;
    repo.write("d5/f5.txt", "changed again\n");
    let fourth = repo.commit("cache lost");
    let last = sync_to(&api, &operator, "app", "fourth", &fourth).await;
    assert_eq!(route(&last), full_diff(reason::BASE_NOT_IN_CACHE));
    assert_eq!((last.files.modified, last.files.total), (1, 300));
    assert_eq!(active_files(&db, &project).await, git_tree(&repo, &fourth));

    // A force-push to a history that shares nothing with the synced one.
    repo.git(&["checkout", "--quiet", "--orphan", "rewritten"]);
    repo.git(&["rm", "--quiet", "-r", "--cached", "."]);
    for i in 0..300 {
        std::fs::remove_file(repo.root().join(format!("app/d{}/f{i}.txt", i % 10))).ok();
    }
    for i in 0..50 {
        repo.write(&format!("other/g{i}.txt"), format!("other {i}\n"));
    }
    let unrelated = repo.commit("unrelated");
    repo.force_branch("main", &unrelated);
    let last = sync_to(&api, &operator, "app", "fifth", &unrelated).await;
    assert_eq!(route(&last), full_diff(reason::UNRELATED_HISTORY));
    assert_eq!((last.files.added, last.files.deleted), (50, 300));
    assert_eq!(
        active_files(&db, &project).await,
        git_tree(&repo, &unrelated)
    );

    // Retention follows the status write (it no longer holds it up): of
    // the five runs, the last two keep their pictures.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let pruned: Vec<(i32, bool)> = sqlx::query_as(
            "SELECT s.chain_seq, s.content_pruned_at IS NOT NULL FROM project_syncs s
               JOIN projects p ON p.id = s.project_id
              WHERE p.key = $1 AND s.status = 'COMPLETED' ORDER BY s.chain_seq",
        )
        .bind(&project)
        .fetch_all(&db.pool)
        .await
        .expect("read the runs");
        let kept: Vec<bool> = pruned.iter().map(|(_, p)| !p).collect();
        if kept == [false, false, false, true, true] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "retention did not keep exactly the last two runs: {pruned:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn on_github_a_compare_beyond_300_files_falls_back_to_the_tree_diff_and_leaves_the_same_rows()
{
    let ns = fresh_namespace("op-routes-gh").await;
    let db = fresh_database("op_routes_gh").await;
    let mut repo = TestRepo::new("app");
    repo.write("README.md", "# app\n");
    let first = repo.commit("seed");
    let standin = GithubStandIn::start("acme", "app", repo.git_dir()).await;
    let operator = Operator::start(OperatorConfig::new(&ns.name, &db.url)).await;
    let api: Api<ProjectSync> = Api::namespaced(ns.client.clone(), &ns.name);
    let project = format!("{}/app", ns.name);
    create(
        &api,
        "app",
        json!({
            "source": { "github": { "owner": "acme", "repo": "app", "apiUrl": standin.api_url() } },
            "branch": "main",
            "interval": "1h",
        }),
    )
    .await;
    last_sync(&api, &operator, "app", &first).await;

    // A small change: the compare lists it.
    repo.write("README.md", "# app, edited\n");
    let second = repo.commit("small");
    let last = sync_to(&api, &operator, "app", "second", &second).await;
    assert_eq!(route(&last), change_set());

    // 301 files: GitHub's compare stops listing at 300.
    for i in 0..301 {
        repo.write(&format!("many/{i}.txt"), format!("{i}\n"));
    }
    let third = repo.commit("301 files");
    let last = sync_to(&api, &operator, "app", "third", &third).await;
    assert_eq!(route(&last), full_diff(reason::CHANGES_INCOMPLETE));
    assert_eq!((last.files.added, last.files.total), (301, 302));
    assert_eq!(active_files(&db, &project).await, git_tree(&repo, &third));
}
