//! Fault: the Kubernetes API server dies (SIGKILL) in the middle of an
//! import, stays down a few seconds, and comes back on the same port with
//! the same etcd. The shared testenv API server serves every other test, so
//! this one runs its own (see `support::controlplane`). The operator must
//! stay up (`/healthz` 200 throughout; `/readyz` stays 200 too: it reports
//! that the store is migrated and the controller started, not that the API
//! server answers), finish the run, write its status once the API server is
//! back without running it again, and end Ready at the head with the right
//! counts, the store equal to `git ls-tree` of the head and no run
//! IN_PROGRESS. The API server stays down until the run has completed, so
//! the status of a completed run is always written late.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, api::PostParams};
use projectsync::api::ProjectSync;
use serde_json::json;
use support::{
    controlplane::PrivateControlPlane,
    convergence::{assert_store_is_tree, generate_repo, poll_ready_at, poll_until, runs_by_status},
    ensure_crd, fresh_database,
    git_server::GitDaemon,
    operator::{Operator, OperatorConfig, http_get},
    psync::create,
    repo::TestRepo,
};

const FILES: usize = 20_000;
/// How long the API server stays down.
const DOWN: Duration = Duration::from_secs(5);

#[tokio::test]
async fn an_apiserver_restart_mid_import_leaves_the_operator_up_and_the_store_converged() {
    let mut plane = PrivateControlPlane::start().await;
    let client = plane.client().await;
    ensure_crd(&client).await;
    let ns = "fault-apiserver";
    let namespace: Namespace =
        serde_json::from_value(json!({ "metadata": { "name": ns } })).expect("namespace");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .expect("create namespace");

    let repo = TestRepo::new("restarted");
    let head = generate_repo(&repo, "refs/heads/main", FILES);
    let daemon = GitDaemon::start(repo.root());
    let db = fresh_database("fault_apiserver").await;
    let mut config = OperatorConfig::new(ns, &db.url);
    config.kubeconfig = Some(&plane.kubeconfig);
    let mut operator = Operator::start(config).await;
    let api: Api<ProjectSync> = Api::namespaced(client.clone(), ns);
    create(
        &api,
        "restarted",
        json!({ "source": { "git": { "url": daemon.url("restarted") } }, "branch": "main" }),
    )
    .await;
    let project = format!("{ns}/restarted");

    // Kill the API server once the import records files.
    poll_until(Duration::from_secs(120), "import recording files", async || {
        sqlx::query_scalar::<_, i32>("SELECT coalesce(max(files_recorded), 0) FROM project_syncs WHERE status = 'IN_PROGRESS'")
            .fetch_one(&db.pool)
            .await
            .is_ok_and(|n| n > 0)
    })
    .await;
    plane.kill_apiserver();
    let killed = Instant::now();
    let mut readyz = Vec::new();
    // Down at least DOWN, and until the run has completed: its status is
    // then written after the outage (the run must not be done again).
    let completed = async || {
        runs_by_status(&db.pool, &project)
            .await
            .contains_key("COMPLETED")
    };
    while killed.elapsed() < DOWN || !completed().await {
        assert!(
            killed.elapsed() < Duration::from_secs(180),
            "the run did not complete within 180s:\n{}",
            operator.log_tail()
        );
        let (health, _) = http_get(operator.probe_addr, "/healthz")
            .await
            .expect("/healthz answers while the API server is down");
        assert_eq!(health, 200, "/healthz while the API server is down");
        readyz.push(
            http_get(operator.probe_addr, "/readyz")
                .await
                .map(|(code, _)| code)
                .unwrap_or(0),
        );
        assert!(
            operator.is_running(),
            "the operator exited while the API server was down:\n{}",
            operator.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("/readyz while the API server was down: {readyz:?}");
    plane.start_apiserver().await;
    println!("API server down for {:?}", killed.elapsed());

    let obj = poll_ready_at(&api, "restarted", &head, Duration::from_secs(240), || {
        operator.log_tail()
    })
    .await;
    operator.assert_alive().await;
    let last = obj
        .status
        .and_then(|s| s.last_sync)
        .expect("status.lastSync");
    assert_eq!(last.commit, head);
    assert_eq!(
        (last.files.added, last.files.total),
        (FILES as i64, FILES as i64),
        "counts of the run"
    );
    assert_store_is_tree(
        &db.pool,
        &project,
        &repo,
        &head,
        "after the API server restart",
    )
    .await;
    let runs = runs_by_status(&db.pool, &project).await;
    println!("runs by status: {runs:?}");
    assert!(
        !runs.contains_key("IN_PROGRESS"),
        "a run was left IN_PROGRESS: {runs:?}"
    );
    assert_eq!(
        runs.get("COMPLETED"),
        Some(&1),
        "the completed run was not done again: {runs:?}"
    );
}
