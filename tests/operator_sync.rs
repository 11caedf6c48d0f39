//! The operator end to end: the real binary against the real API server,
//! Postgres, `git daemon` and the GitHub stand-in. A ProjectSync becomes
//! Ready with the right counts, the active views equal `git ls-tree -r`, and
//! a change costs exactly the changed files.

use std::collections::BTreeMap;

use kube::{Api, runtime::wait::await_condition};
use projectsync::api::ProjectSync;
use serde_json::json;
use support::{
    TestDb, fresh_database, fresh_namespace,
    git_server::GitDaemon,
    github::{GithubStandIn, LoggedRequest},
    operator::{Operator, OperatorConfig},
    psync::{WAIT, create, request_sync, synced_at, wait_until},
    repo::TestRepo,
};

/// `(path, blob sha, size)` of the active view for a project.
async fn active_files(db: &TestDb, project: &str) -> BTreeMap<String, (String, i64)> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT path, blob_sha, size FROM active_repository_files WHERE project = $1",
    )
    .bind(project)
    .fetch_all(&db.pool)
    .await
    .expect("query the active view");
    rows.into_iter()
        .map(|(path, sha, size)| (path, (sha, size)))
        .collect()
}

/// What `git ls-tree -r -l` says, in the same shape.
fn git_tree(repo: &TestRepo, commit: &str) -> BTreeMap<String, (String, i64)> {
    repo.ls_tree(commit)
        .into_iter()
        .map(|e| {
            let path = String::from_utf8(e.path).expect("utf-8 test paths");
            (path, (e.sha, e.size.map(|s| s as i64).unwrap_or(0)))
        })
        .collect()
}

async fn memory_of(db: &TestDb, project: &str, path: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT content FROM active_memory_entries WHERE project = $1 AND path = $2 ORDER BY start_line",
    )
    .bind(project)
    .bind(path)
    .fetch_all(&db.pool)
    .await
    .expect("query active memory")
}

#[tokio::test]
async fn a_git_remote_syncs_to_ready_and_follows_adds_edits_deletes_renames_and_force_pushes() {
    let ns = fresh_namespace("op-git").await;
    let db = fresh_database("op_git").await;
    let mut repo = TestRepo::new("app");
    repo.write("README.md", "# app\n")
        .write("src/main.rs", "fn main() {\n    println!(\"hi\");\n}\n")
        .write("src/util.rs", "pub fn util() {}\n")
        .write_executable("bin/run.sh", "#!/bin/sh\nexec app\n")
        .symlink("docs/readme", "../README.md")
        .write("assets/logo.bin", [0u8, 1, 2, 3, 0, 255]);
    let first = repo.commit("initial");
    let daemon = GitDaemon::start(repo.root());
    let operator = Operator::start(OperatorConfig::new(&ns.name, &db.url)).await;
    let api: Api<ProjectSync> = Api::namespaced(ns.client.clone(), &ns.name);
    let project = format!("{}/app", ns.name);

    create(
        &api,
        "app",
        json!({ "source": { "git": { "url": daemon.url("app") } }, "branch": "main" }),
    )
    .await;
    let obj = wait_until(
        &api,
        "app",
        || operator.log_tail(),
        "synced",
        synced_at(first.clone()),
    )
    .await;
    let status = obj.status.expect("status");
    let last = status.last_sync.expect("lastSync");
    assert_eq!((last.files.added, last.files.total), (6, 6));
    assert_eq!(status.phase, Some(projectsync::api::Phase::Synced));
    assert_eq!(
        status.repository.as_deref(),
        Some(daemon.url("app").as_str())
    );
    assert_eq!(active_files(&db, &project).await, git_tree(&repo, &first));
    assert!(
        !memory_of(&db, &project, "src/main.rs").await.is_empty(),
        "text is chunked"
    );
    assert!(
        memory_of(&db, &project, "assets/logo.bin").await.is_empty(),
        "binary is not chunked"
    );
    assert!(
        memory_of(&db, &project, "docs/readme").await.is_empty(),
        "symlinks are not followed"
    );

    // Edit one file, delete one, rename one.
    let util_memory = memory_of(&db, &project, "src/util.rs").await;
    repo.write("src/main.rs", "fn main() {\n    println!(\"hello\");\n}\n")
        .remove("assets/logo.bin")
        .rename("src/util.rs", "src/helpers.rs");
    let second = repo.commit("edit, delete, rename");
    request_sync(&api, "app", "second").await;
    let obj = wait_until(
        &api,
        "app",
        || operator.log_tail(),
        "synced",
        synced_at(second.clone()),
    )
    .await;
    let last = obj.status.expect("status").last_sync.expect("lastSync");
    assert_eq!(
        (
            last.files.added,
            last.files.modified,
            last.files.deleted,
            last.files.unchanged,
            last.files.total
        ),
        (1, 1, 2, 3, 5),
        "the rename is a new path plus a deleted one: {:?}",
        last.files
    );
    assert_eq!(active_files(&db, &project).await, git_tree(&repo, &second));
    assert_eq!(
        memory_of(&db, &project, "src/helpers.rs").await,
        util_memory,
        "a renamed file keeps its memory"
    );
    let superseded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM repository_files WHERE path = 'assets/logo.bin' AND superseded_sync_id IS NOT NULL",
    )
    .fetch_one(&db.pool)
    .await
    .expect("query history");
    assert_eq!(superseded, 1, "a deleted file is superseded, not removed");

    // Force-push main back to the first commit: the tree diff handles it.
    repo.force_branch("main", &first);
    request_sync(&api, "app", "third").await;
    let obj = wait_until(
        &api,
        "app",
        || operator.log_tail(),
        "synced",
        synced_at(first.clone()),
    )
    .await;
    assert_eq!(active_files(&db, &project).await, git_tree(&repo, &first));
    let history = obj.status.expect("status").history;
    assert_eq!(history.len(), 3, "three runs in history, newest first");
    assert_eq!(history[0].commit, first);
    assert_eq!(history[1].commit, second);
}

#[tokio::test]
async fn on_github_a_change_costs_the_changed_blobs_and_an_unchanged_poll_one_conditional_request()
{
    let ns = fresh_namespace("op-github").await;
    let db = fresh_database("op_github").await;
    let mut repo = TestRepo::new("service");
    for i in 0..20 {
        repo.write(
            &format!("src/mod{i}.rs"),
            format!("pub fn f{i}() -> u32 {{ {i} }}\n"),
        );
    }
    let first = repo.commit("twenty files");
    let github = GithubStandIn::start("acme", "service", repo.git_dir()).await;
    let operator = Operator::start(OperatorConfig::new(&ns.name, &db.url)).await;
    let api: Api<ProjectSync> = Api::namespaced(ns.client.clone(), &ns.name);

    create(
        &api,
        "service",
        json!({
            "source": { "github": { "owner": "acme", "repo": "service", "apiUrl": github.api_url() } },
            "branch": "main",
        }),
    )
    .await;
    wait_until(
        &api,
        "service",
        || operator.log_tail(),
        "synced",
        synced_at(first),
    )
    .await;
    assert_eq!(
        blob_requests(&github.requests()),
        20,
        "the first sync fetches every blob once"
    );

    one_modified_file_costs_one_blob(&api, &github, &operator, &mut repo).await;
    let third = a_rename_fetches_no_blob(&api, &github, &operator, &mut repo).await;
    an_unchanged_poll_is_one_conditional_request_and_no_run(&api, &github, &operator, &third).await;
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM project_syncs")
        .fetch_one(&db.pool)
        .await
        .expect("count runs");
    assert_eq!(runs, 3);
}

/// Blob requests in a stand-in's log.
fn blob_requests(log: &[LoggedRequest]) -> usize {
    log.iter()
        .filter(|r| r.path.contains("/git/blobs/"))
        .count()
}

/// One modified file: one blob.
async fn one_modified_file_costs_one_blob(
    api: &Api<ProjectSync>,
    github: &GithubStandIn,
    operator: &Operator,
    repo: &mut TestRepo,
) {
    github.clear_log();
    repo.write("src/mod7.rs", "pub fn f7() -> u32 { 700 }\n");
    let second = repo.commit("one change");
    request_sync(api, "service", "one-change").await;
    let obj = wait_until(
        api,
        "service",
        || operator.log_tail(),
        "synced",
        synced_at(second),
    )
    .await;
    let log = github.requests();
    assert_eq!(
        blob_requests(&log),
        1,
        "exactly the changed file is fetched: {log:#?}"
    );
    // The change-set route: the ref, one compare, one listing per directory
    // on the path to the change (the root and src/), the blob, and the
    // branch list a completed run refreshes; no listing of the whole tree.
    assert!(
        log.len() <= 1 + 3 + 2,
        "about k + 3 requests for k changed files plus the changed directories, got {}: {log:#?}",
        log.len()
    );
    assert!(
        !log.iter().any(|r| r.query.contains("recursive")),
        "no recursive tree listing on the change-set route: {log:#?}"
    );
    let last = obj.status.expect("status").last_sync.expect("lastSync");
    assert_eq!((last.files.modified, last.files.unchanged), (1, 19));
    assert_eq!(
        last.scan.as_ref().map(|s| s.route.as_str()),
        Some("ChangeSet"),
        "GitHub's compare answered the change set: {:?}",
        last.scan
    );
}

/// A rename fetches nothing; returns the commit.
async fn a_rename_fetches_no_blob(
    api: &Api<ProjectSync>,
    github: &GithubStandIn,
    operator: &Operator,
    repo: &mut TestRepo,
) -> String {
    github.clear_log();
    repo.rename("src/mod3.rs", "src/moved/mod3.rs");
    let third = repo.commit("rename");
    request_sync(api, "service", "rename").await;
    wait_until(
        api,
        "service",
        || operator.log_tail(),
        "synced",
        synced_at(third.clone()),
    )
    .await;
    assert_eq!(
        blob_requests(&github.requests()),
        0,
        "a renamed file is not re-fetched"
    );
    third
}

/// Nothing changed: one conditional request, answered 304, and no new run
/// (the last sync is still at `third`).
async fn an_unchanged_poll_is_one_conditional_request_and_no_run(
    api: &Api<ProjectSync>,
    github: &GithubStandIn,
    operator: &Operator,
    third: &str,
) {
    github.clear_log();
    request_sync(api, "service", "no-change").await;
    let obj = wait_until(
        api,
        "service",
        || operator.log_tail(),
        "checked",
        |obj| {
            obj.status
                .as_ref()
                .is_some_and(|s| s.last_handled_requested_at.as_deref() == Some("no-change"))
        },
    )
    .await;
    let log = github.requests();
    assert_eq!(log.len(), 1, "an unchanged poll is one request: {log:#?}");
    assert_eq!(log[0].status, 304);
    let status = obj.status.expect("status");
    assert_eq!(
        status.last_sync.expect("lastSync").commit,
        third,
        "no new run"
    );
}

#[tokio::test]
async fn a_large_first_sync_reads_one_archive_and_fetches_what_it_does_not_match_one_by_one() {
    let ns = fresh_namespace("op-archive").await;
    let db = fresh_database("op_archive").await;
    let mut repo = TestRepo::new("monorepo");
    let first = a_monorepo_with_files_an_archive_leaves_out_or_rewrites(&mut repo);
    let github = GithubStandIn::start("acme", "monorepo", repo.git_dir()).await;
    let operator = Operator::start(OperatorConfig::new(&ns.name, &db.url)).await;
    let api: Api<ProjectSync> = Api::namespaced(ns.client.clone(), &ns.name);
    let project = format!("{}/monorepo", ns.name);

    create(
        &api,
        "monorepo",
        json!({
            "source": { "github": { "owner": "acme", "repo": "monorepo", "apiUrl": github.api_url() } },
            "branch": "main",
        }),
    )
    .await;
    wait_until(
        &api,
        "monorepo",
        || operator.log_tail(),
        "synced",
        synced_at(first.clone()),
    )
    .await;
    the_first_sync_read_one_archive_and_fetched_only_what_it_lacks(
        &github, &db, &project, &repo, &first,
    )
    .await;
    an_archive_that_breaks_off_is_finished_blob_by_blob(
        &api, &ns.name, &operator, &db, &repo, &first,
    )
    .await;
    a_small_change_afterwards_is_read_file_by_file(
        &api, &github, &operator, &db, &project, &mut repo,
    )
    .await;
}

/// 1,200 files, and what an archive leaves out (export-ignore) or rewrites
/// (export-subst); returns the commit.
fn a_monorepo_with_files_an_archive_leaves_out_or_rewrites(repo: &mut TestRepo) -> String {
    for i in 0..1_200 {
        repo.write(
            &format!("pkg{}/src/file{i}.rs", i % 12),
            format!("pub fn f{i}() -> u32 {{ {i} }}\n"),
        );
    }
    // What an archive leaves out or rewrites: it must not reach the store.
    repo.write(
        ".gitattributes",
        "internal/** export-ignore\nVERSION export-subst\n",
    );
    repo.write("internal/secret.rs", "pub const HIDDEN: bool = true;\n");
    repo.write("internal/more.rs", "pub const MORE: bool = true;\n");
    repo.write("VERSION", "commit $Format:%H$\n");
    repo.commit("a large first commit")
}

/// One archive, blob requests for exactly the files it left out or
/// rewrote, and a store equal to the tree.
async fn the_first_sync_read_one_archive_and_fetched_only_what_it_lacks(
    github: &GithubStandIn,
    db: &TestDb,
    project: &str,
    repo: &TestRepo,
    first: &str,
) {
    let log = github.requests();
    let count = |part: &str| log.iter().filter(|r| r.path.contains(part)).count();
    assert_eq!(
        (count("/tarball/"), count("/_codeload/")),
        (1, 1),
        "one archive: {:#?}",
        &log[..log.len().min(20)]
    );
    let mut blobs: Vec<String> = log
        .iter()
        .filter(|r| r.path.contains("/git/blobs/"))
        .map(|r| r.path.clone())
        .collect();
    blobs.sort();
    let expected: Vec<String> = repo
        .ls_tree(first)
        .into_iter()
        .filter(|e| {
            matches!(
                e.path.as_slice(),
                b"internal/secret.rs" | b"internal/more.rs" | b"VERSION"
            )
        })
        .map(|e| format!("/repos/acme/monorepo/git/blobs/{}", e.sha))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(
        blobs, expected,
        "only the files the archive left out or rewrote are fetched one by one"
    );
    assert!(
        log.len() < 20,
        "a first sync of 1,204 files costs a handful of requests, not one per file: {}",
        log.len()
    );
    assert_eq!(
        active_files(db, project).await,
        git_tree(repo, first),
        "the store is the tree, not the archive"
    );
    assert_eq!(
        memory_of(db, project, "VERSION").await,
        ["commit $Format:%H$\n"],
        "the blob, not its export-subst form"
    );
    assert_eq!(
        memory_of(db, project, "internal/secret.rs").await,
        ["pub const HIDDEN: bool = true;\n"]
    );
}

/// An archive that breaks off: what it delivered is kept, the rest is
/// fetched one by one, and the store is still exactly the tree.
async fn an_archive_that_breaks_off_is_finished_blob_by_blob(
    api: &Api<ProjectSync>,
    namespace: &str,
    operator: &Operator,
    db: &TestDb,
    repo: &TestRepo,
    first: &str,
) {
    let cut = GithubStandIn::start("acme", "monorepo", repo.git_dir()).await;
    cut.cut_archives_after(64 * 1024);
    create(
        api,
        "cut",
        json!({
            "source": { "github": { "owner": "acme", "repo": "monorepo", "apiUrl": cut.api_url() } },
            "branch": "main",
        }),
    )
    .await;
    wait_until(
        api,
        "cut",
        || operator.log_tail(),
        "synced",
        synced_at(first.to_string()),
    )
    .await;
    let log = cut.requests();
    let blobs = log
        .iter()
        .filter(|r| r.path.contains("/git/blobs/"))
        .count();
    assert_eq!(
        log.iter()
            .filter(|r| r.path.contains("/_codeload/"))
            .count(),
        1
    );
    assert!(
        blobs > 3 && blobs < 1_204,
        "the archive delivered some files and the rest were fetched: {blobs} blob requests"
    );
    assert_eq!(
        active_files(db, &format!("{namespace}/cut")).await,
        git_tree(repo, first)
    );
}

/// A small change afterwards is read file by file.
async fn a_small_change_afterwards_is_read_file_by_file(
    api: &Api<ProjectSync>,
    github: &GithubStandIn,
    operator: &Operator,
    db: &TestDb,
    project: &str,
    repo: &mut TestRepo,
) {
    github.clear_log();
    repo.write("pkg3/src/file3.rs", "pub fn f3() -> u32 { 33 }\n");
    let second = repo.commit("one change");
    request_sync(api, "monorepo", "one-change").await;
    wait_until(
        api,
        "monorepo",
        || operator.log_tail(),
        "synced",
        synced_at(second.clone()),
    )
    .await;
    let log = github.requests();
    assert_eq!(
        log.iter().filter(|r| r.path.contains("/tarball/")).count(),
        0,
        "no archive for one file: {log:#?}"
    );
    assert_eq!(
        log.iter()
            .filter(|r| r.path.contains("/git/blobs/"))
            .count(),
        1
    );
    assert_eq!(active_files(db, project).await, git_tree(repo, &second));
}

#[tokio::test]
async fn deleting_a_resource_keeps_its_rows_with_retain_and_removes_them_with_delete() {
    let ns = fresh_namespace("op-delete").await;
    let db = fresh_database("op_delete").await;
    let mut repo = TestRepo::new("doomed");
    repo.write("a.txt", "a\n");
    let head = repo.commit("a");
    let daemon = GitDaemon::start(repo.root());
    let operator = Operator::start(OperatorConfig::new(&ns.name, &db.url)).await;
    let api: Api<ProjectSync> = Api::namespaced(ns.client.clone(), &ns.name);
    let spec = |policy: &str| json!({ "source": { "git": { "url": daemon.url("doomed") } }, "branch": "main", "deletionPolicy": policy });
    create(&api, "kept", spec("Retain")).await;
    create(&api, "dropped", spec("Delete")).await;
    wait_until(
        &api,
        "kept",
        || operator.log_tail(),
        "synced",
        synced_at(head.clone()),
    )
    .await;
    wait_until(
        &api,
        "dropped",
        || operator.log_tail(),
        "synced",
        synced_at(head),
    )
    .await;

    for name in ["kept", "dropped"] {
        api.delete(name, &Default::default()).await.expect("delete");
        let gone = await_condition(api.clone(), name, |obj: Option<&ProjectSync>| obj.is_none());
        tokio::time::timeout(WAIT, gone)
            .await
            .expect("the finalizer is released")
            .expect("watch");
    }
    let projects: Vec<String> = sqlx::query_scalar("SELECT key FROM projects ORDER BY key")
        .fetch_all(&db.pool)
        .await
        .expect("projects");
    assert_eq!(
        projects,
        vec![format!("{}/kept", ns.name)],
        "Delete removed its project, Retain kept it"
    );
    let kept = active_files(&db, &format!("{}/kept", ns.name)).await;
    assert_eq!(kept.len(), 1, "a retained project's rows stay queryable");
}

#[tokio::test]
async fn on_github_a_restart_costs_one_304_and_no_full_listing_of_a_walked_tree() {
    let ns = fresh_namespace("op-github-restart").await;
    let db = fresh_database("op_github_restart").await;
    let mut repo = TestRepo::new("service");
    for i in 0..20 {
        repo.write(
            &format!("src/mod{i}.rs"),
            format!("pub fn f{i}() -> u32 {{ {i} }}\n"),
        );
    }
    let first = repo.commit("twenty files");
    let github = GithubStandIn::start("acme", "service", repo.git_dir()).await;
    // Every recursive listing is truncated: the tree must be walked.
    github.set_tree_entry_limit(5);
    let mut operator = Operator::start(OperatorConfig::new(&ns.name, &db.url)).await;
    let api: Api<ProjectSync> = Api::namespaced(ns.client.clone(), &ns.name);
    create(
        &api,
        "service",
        json!({
            "source": { "github": { "owner": "acme", "repo": "service", "apiUrl": github.api_url() } },
            "branch": "main",
        }),
    )
    .await;
    wait_until(
        &api,
        "service",
        || operator.log_tail(),
        "synced",
        synced_at(first.clone()),
    )
    .await;

    // Restart: the new process polls with the kept ETag.
    operator.kill();
    github.clear_log();
    let remaining = github.rate_limit_remaining();
    let operator = Operator::start(OperatorConfig::new(&ns.name, &db.url)).await;
    request_sync(&api, "service", "after-restart").await;
    wait_until(
        &api,
        "service",
        || operator.log_tail(),
        "checked after the restart",
        |obj| {
            obj.status
                .as_ref()
                .is_some_and(|s| s.last_handled_requested_at.as_deref() == Some("after-restart"))
        },
    )
    .await;
    let log = github.requests();
    assert!(!log.is_empty());
    assert!(
        log.iter()
            .all(|r| r.status == 304 && r.path.contains("/git/ref/heads/")),
        "polls after a restart are conditional and answered 304: {log:#?}"
    );
    assert_eq!(
        github.rate_limit_remaining(),
        remaining,
        "no rate limit spent"
    );

    // The next change: the kept hint says the tree needs a walk, so no
    // recursive listing (truncated, of the whole tree) is asked for.
    github.clear_log();
    repo.write("src/mod7.rs", "pub fn f7() -> u32 { 700 }\n");
    let second = repo.commit("one change");
    request_sync(&api, "service", "one-change").await;
    wait_until(
        &api,
        "service",
        || operator.log_tail(),
        "synced",
        synced_at(second),
    )
    .await;
    let log = github.requests();
    let recursive: Vec<_> = log
        .iter()
        .filter(|r| r.path.contains("/git/trees/") && r.query.contains("recursive"))
        .collect();
    assert!(recursive.is_empty(), "no full listing: {log:#?}");
    assert_eq!(
        log.iter()
            .filter(|r| r.path.contains("/git/blobs/"))
            .count(),
        1,
        "{log:#?}"
    );
    let walked: bool = sqlx::query_scalar("SELECT tree_walked FROM projects WHERE key = $1")
        .bind(format!("{}/service", ns.name))
        .fetch_one(&db.pool)
        .await
        .expect("project");
    assert!(walked);
}
