//! The operator's life: SIGKILL in the middle of an import, SIGTERM during a
//! run, two replicas with one leader, the live SSE stream and /metrics, and
//! the triggers (suspend, pinned commit, interval) and restore.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use projectsync::api::ProjectSync;
use serde_json::json;
use support::{
    TestDb,
    access::{grant_get, service_account_token},
    fresh_database, fresh_namespace,
    github::{Fault, GithubStandIn},
    operator::{Operator, OperatorConfig},
    psync::{WAIT, create, request_sync, synced_at, wait_until},
    repo::TestRepo,
};

fn github_spec(github: &GithubStandIn, repo: &str) -> serde_json::Value {
    json!({ "source": { "github": { "owner": "acme", "repo": repo, "apiUrl": github.api_url() } }, "branch": "main" })
}

/// Polls the database (bounded) until `sql` returns true.
async fn wait_for_db(db: &TestDb, sql: &str, what: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let done: bool = sqlx::query_scalar(sql)
            .fetch_one(&db.pool)
            .await
            .unwrap_or(false);
        if done {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "database never showed: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn runs(db: &TestDb) -> Vec<(String, Option<String>)> {
    sqlx::query_as("SELECT status, error_message FROM project_syncs ORDER BY started_at")
        .fetch_all(&db.pool)
        .await
        .expect("list runs")
}

fn many_files(repo: &mut TestRepo, n: usize) -> String {
    for i in 0..n {
        repo.write(
            &format!("src/m{:03}/f{i}.rs", i % 17),
            format!("pub fn f{i}() -> usize {{\n    {i}\n}}\n"),
        );
    }
    repo.commit("many files")
}

async fn assert_converged(db: &TestDb, repo: &TestRepo, commit: &str) {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT path, blob_sha FROM active_repository_files ORDER BY path")
            .fetch_all(&db.pool)
            .await
            .expect("active files");
    let mut expected: Vec<(String, String)> = repo
        .ls_tree(commit)
        .into_iter()
        .map(|e| (String::from_utf8(e.path).expect("utf-8"), e.sha))
        .collect();
    expected.sort();
    assert_eq!(
        rows, expected,
        "the active view is exactly git ls-tree of the head"
    );
    let duplicates: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT path FROM active_memory_entries GROUP BY path, start_line HAVING count(*) > 1) d",
    )
    .fetch_one(&db.pool)
    .await
    .expect("duplicates");
    assert_eq!(duplicates, 0, "no duplicate memory entries");
    let live: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM project_syncs WHERE status IN ('PENDING', 'IN_PROGRESS')",
    )
    .fetch_one(&db.pool)
    .await
    .expect("live runs");
    assert_eq!(live, 0, "no run is left IN_PROGRESS");
}

#[tokio::test]
async fn sigkill_during_import_fails_the_run_on_restart_and_the_next_run_converges() {
    let ns = fresh_namespace("op-kill").await;
    let db = fresh_database("op_kill").await;
    let mut repo = TestRepo::new("big");
    let head = many_files(&mut repo, 400);
    let github = GithubStandIn::start("acme", "big", repo.git_dir()).await;
    github.set_fault(Fault::Delay(Duration::from_millis(40)), None);
    let mut operator = Operator::start(OperatorConfig::new(&ns.name, &db.url)).await;
    let api: Api<ProjectSync> = Api::namespaced(ns.client.clone(), &ns.name);
    create(&api, "big", github_spec(&github, "big")).await;

    // Kill it once the import has written its first batch.
    wait_for_db(
        &db,
        "SELECT EXISTS (SELECT 1 FROM project_syncs WHERE status = 'IN_PROGRESS' AND files_recorded > 0)",
        "an import in progress",
    )
    .await;
    operator.kill();
    assert_eq!(
        runs(&db).await,
        vec![("IN_PROGRESS".to_string(), None)],
        "the killed run is left behind"
    );

    github.clear_fault();
    let restarted = Operator::start(OperatorConfig::new(&ns.name, &db.url)).await;
    wait_until(
        &api,
        "big",
        || restarted.log_tail(),
        "synced",
        synced_at(head.clone()),
    )
    .await;
    let runs = runs(&db).await;
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].0, "FAILED");
    assert!(
        runs[0]
            .1
            .as_deref()
            .is_some_and(|m| m.starts_with("abandoned")),
        "{runs:?}"
    );
    assert_eq!(runs[1].0, "COMPLETED");
    assert_converged(&db, &repo, &head).await;
}

#[tokio::test]
async fn sigterm_during_a_run_never_leaves_it_in_progress() {
    let ns = fresh_namespace("op-term").await;
    let db = fresh_database("op_term").await;
    let mut repo = TestRepo::new("slow");
    let head = many_files(&mut repo, 300);
    let github = GithubStandIn::start("acme", "slow", repo.git_dir()).await;
    github.set_fault(Fault::Delay(Duration::from_millis(30)), None);
    let mut operator = Operator::start(OperatorConfig::new(&ns.name, &db.url)).await;
    let api: Api<ProjectSync> = Api::namespaced(ns.client.clone(), &ns.name);
    create(&api, "slow", github_spec(&github, "slow")).await;
    wait_for_db(
        &db,
        "SELECT EXISTS (SELECT 1 FROM project_syncs WHERE status = 'IN_PROGRESS')",
        "a run",
    )
    .await;

    assert!(
        operator.terminate(Duration::from_secs(30)).await,
        "the operator exits after SIGTERM within the grace period"
    );
    let live: Vec<(String, Option<String>)> = runs(&db).await;
    assert!(
        live.iter().all(|(s, _)| s == "COMPLETED" || s == "FAILED"),
        "{live:?}"
    );

    github.clear_fault();
    let restarted = Operator::start(OperatorConfig::new(&ns.name, &db.url)).await;
    wait_until(
        &api,
        "slow",
        || restarted.log_tail(),
        "synced",
        synced_at(head.clone()),
    )
    .await;
    assert_converged(&db, &repo, &head).await;
}

#[tokio::test]
async fn of_two_replicas_one_leads_and_the_other_takes_over_when_it_dies() {
    let ns = fresh_namespace("op-leader").await;
    let db = fresh_database("op_leader").await;
    let mut repo = TestRepo::new("ha");
    repo.write("a.txt", "a\n");
    let first = repo.commit("a");
    let github = GithubStandIn::start("acme", "ha", repo.git_dir()).await;
    let mut a = Operator::start(OperatorConfig {
        identity: "replica-a",
        ..OperatorConfig::new(&ns.name, &db.url)
    })
    .await;
    let mut b = Operator::start(OperatorConfig {
        identity: "replica-b",
        ..OperatorConfig::new(&ns.name, &db.url)
    })
    .await;
    let api: Api<ProjectSync> = Api::namespaced(ns.client.clone(), &ns.name);
    create(&api, "ha", github_spec(&github, "ha")).await;
    wait_until(
        &api,
        "ha",
        || format!("{}\n---\n{}", a.log_tail(), b.log_tail()),
        "synced",
        synced_at(first),
    )
    .await;

    let leases: Api<Lease> = Api::namespaced(ns.client.clone(), &ns.name);
    let holder = leases
        .get("projectsync-leader")
        .await
        .expect("lease")
        .spec
        .and_then(|s| s.holder_identity)
        .expect("holder");
    let (leader, follower) = if holder == "replica-a" {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    let reconciled = |metrics: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with("projectsync_reconciliations_total"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(
        reconciled(&leader.metrics().await) > 0.0,
        "the leader reconciles"
    );
    assert_eq!(
        reconciled(&follower.metrics().await),
        0.0,
        "the follower does not"
    );

    leader.kill();
    repo.write("a.txt", "b\n");
    let second = repo.commit("b");
    request_sync(&api, "ha", "after-failover").await;
    wait_until(
        &api,
        "ha",
        || follower.log_tail(),
        "synced by the new leader",
        synced_at(second),
    )
    .await;
    let holder_now = leases
        .get("projectsync-leader")
        .await
        .expect("lease")
        .spec
        .and_then(|s| s.holder_identity)
        .expect("holder");
    assert_ne!(holder_now, holder, "leadership moved");
    assert!(reconciled(&follower.metrics().await) > 0.0);
}

#[tokio::test]
async fn the_sse_stream_delivers_progress_and_the_summary_and_metrics_count_the_run() {
    let ns = fresh_namespace("op-sse").await;
    let db = fresh_database("op_sse").await;
    let mut repo = TestRepo::new("live");
    let head = many_files(&mut repo, 30);
    let github = GithubStandIn::start("acme", "live", repo.git_dir()).await;
    let operator = Operator::start(OperatorConfig::new(&ns.name, &db.url)).await;
    let api: Api<ProjectSync> = Api::namespaced(ns.client.clone(), &ns.name);

    // Streams exist only for resources that exist: create it suspended,
    // open the stream (as a ServiceAccount allowed to `get` it), then let
    // it run.
    let mut spec = github_spec(&github, "live");
    spec["suspend"] = json!(true);
    create(&api, "live", spec).await;
    let token = service_account_token(&ns, "viewer").await;
    grant_get(&ns, &ns.name, "viewer", &["live"]).await;
    let url = format!(
        "http://{}/api/v1/events/project-sync/{}/live",
        operator.addr, ns.name
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    let response = loop {
        let response = reqwest::Client::new()
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .expect("connect to the SSE stream");
        // 404 until the operator's reflector has seen the new resource.
        if response.status() != 404 || tokio::time::Instant::now() > deadline {
            break response;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let reader = tokio::spawn(async move {
        let mut response = response;
        let mut text = String::new();
        while let Some(chunk) = response.chunk().await.expect("stream chunk") {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.contains("event: completed") && text.ends_with("\n\n") {
                break;
            }
        }
        text
    });
    api.patch(
        "live",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "suspend": false } })),
    )
    .await
    .expect("resume");
    let text = tokio::time::timeout(WAIT, reader)
        .await
        .expect("stream ends with the summary")
        .expect("reader");
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    for expected in [
        "started",
        "stageStarted",
        "progress",
        "stageFinished",
        "completed",
    ] {
        assert!(names.contains(&expected), "missing {expected} in {names:?}");
    }
    assert_eq!(names.last(), Some(&"completed"));
    let summary: serde_json::Value = serde_json::from_str(
        text.lines()
            .rev()
            .find_map(|l| l.strip_prefix("data: "))
            .expect("summary data"),
    )
    .expect("summary is JSON");
    assert_eq!(summary["commit"], head);
    assert_eq!(summary["files"]["added"], 30);
    assert_eq!(summary["files"]["total"], 30);

    wait_until(
        &api,
        "live",
        || operator.log_tail(),
        "synced",
        synced_at(head),
    )
    .await;
    let metrics = operator.metrics().await;
    for line in [
        "projectsync_sync_runs_total{result=\"completed\"} 1",
        "projectsync_files_total{change=\"added\"} 30",
    ] {
        assert!(metrics.contains(line), "metrics lack {line}:\n{metrics}");
    }
    assert!(
        metrics.contains("projectsync_source_requests_total{endpoint=\"blob\",status=\"200\"} 30"),
        "{metrics}"
    );
    assert!(
        metrics.contains("projectsync_sync_stage_duration_seconds_count{stage=\"import\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn suspend_a_pinned_commit_the_interval_and_restore() {
    let ns = fresh_namespace("op-triggers").await;
    let db = fresh_database("op_triggers").await;
    let mut repo = TestRepo::new("knobs");
    repo.write("v.txt", "1\n");
    let first = repo.commit("one");
    repo.write("v.txt", "2\n");
    let second = repo.commit("two");
    let github = GithubStandIn::start("acme", "knobs", repo.git_dir()).await;
    let operator = Operator::start(OperatorConfig::new(&ns.name, &db.url)).await;
    let api: Api<ProjectSync> = Api::namespaced(ns.client.clone(), &ns.name);
    let log = || operator.log_tail();

    // Suspended from the start: nothing runs.
    let mut spec = github_spec(&github, "knobs");
    spec["suspend"] = json!(true);
    spec["commit"] = json!(first);
    spec["interval"] = json!("30s");
    create(&api, "knobs", spec).await;
    wait_until(&api, "knobs", log, "suspended", |o| {
        o.status.as_ref().and_then(|s| s.phase) == Some(projectsync::api::Phase::Suspended)
    })
    .await;
    assert!(
        runs(&db).await.is_empty(),
        "a suspended resource does not sync"
    );

    // Resumed with a pinned commit: the pin wins over the branch head.
    api.patch(
        "knobs",
        &PatchParams::default(),
        &Patch::Merge(&json!({ "spec": { "suspend": false } })),
    )
    .await
    .expect("resume");
    let obj = wait_until(
        &api,
        "knobs",
        log,
        "synced at the pin",
        synced_at(first.clone()),
    )
    .await;
    let first_sync = obj.status.expect("status").last_sync.expect("lastSync").id;

    // Unpinned: follows the branch. Then a new commit arrives and the
    // interval (30s) picks it up without any request.
    api.patch(
        "knobs",
        &PatchParams::default(),
        &Patch::Merge(&json!({ "spec": { "commit": null } })),
    )
    .await
    .expect("unpin");
    wait_until(&api, "knobs", log, "synced at the head", synced_at(second)).await;
    repo.write("v.txt", "3\n");
    let third = repo.commit("three");
    wait_until(
        &api,
        "knobs",
        log,
        "synced by the interval",
        synced_at(third),
    )
    .await;

    // Restore the first sync while suspended (so the branch does not move it on).
    api.patch(
        "knobs",
        &PatchParams::default(),
        &Patch::Merge(&json!({ "spec": { "suspend": true } })),
    )
    .await
    .expect("suspend");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_projectsync"))
        .args(["restore", &format!("{}/knobs", ns.name), &first_sync])
        .env("DATABASE_URL", &db.url)
        .output()
        .expect("run projectsync restore");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains(&format!("restore of {first_sync}")));
    let content: String =
        sqlx::query_scalar("SELECT content FROM active_memory_entries WHERE path = 'v.txt'")
            .fetch_one(&db.pool)
            .await
            .expect("active memory");
    assert_eq!(content, "1\n", "the first sync's memory is current again");
    let trigger: String =
        sqlx::query_scalar("SELECT trigger FROM project_syncs ORDER BY started_at DESC LIMIT 1")
            .fetch_one(&db.pool)
            .await
            .expect("latest run");
    assert_eq!(trigger, format!("restore of {first_sync}"));
}
