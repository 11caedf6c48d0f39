//! Tenants sharing one operator, end to end against the real binary, API
//! server, Postgres and the GitHub and embeddings stand-ins: a tenant's own
//! embedding endpoint cannot plant vectors another tenant reuses (nor can a
//! stored vector of another dimension), a tenant with many resources does
//! not hold every run slot, a run past its deadline fails naming the limit,
//! and recovery of abandoned runs leaves other installs' runs alone. Bounded
//! in count and time; no timing assertions.

use std::time::Duration;

use kube::Api;
use projectsync::{
    api::ProjectSync,
    store::{NewSync, ProjectIdentity, ProjectSource, Store, SyncStatus},
};
use serde_json::json;
use sqlx::PgPool;
use support::{
    embed_server::{DIMENSION, EmbedServer, Mode, fake_embedding},
    fresh_database, fresh_namespace,
    github::GithubStandIn,
    operator::{Operator, OperatorConfig},
    psync::{condition, create, synced_at, wait_until},
    repo::TestRepo,
};

/// A small repository of three Rust files on the GitHub stand-in.
async fn small_repo() -> (TestRepo, GithubStandIn, String) {
    let mut repo = TestRepo::new("svc");
    for i in 0..3 {
        repo.write(
            &format!("src/m{i}.rs"),
            format!("pub fn f{i}() -> u32 {{ {i} }}\n"),
        );
    }
    let commit = repo.commit("initial");
    let github = GithubStandIn::start("acme", "svc", repo.git_dir()).await;
    (repo, github, commit)
}

fn spec(github: &GithubStandIn, extra: serde_json::Value) -> serde_json::Value {
    let mut spec = json!({
        "source": { "github": { "owner": "acme", "repo": "svc", "apiUrl": github.api_url() } },
        "branch": "main",
        "interval": "1h",
    });
    for (key, value) in extra.as_object().expect("an object") {
        spec[key] = value.clone();
    }
    spec
}

fn embedding(endpoint: &str, scope: &str) -> serde_json::Value {
    json!({ "provider": "OpenAI", "endpoint": endpoint, "model": "m", "reuseScope": scope })
}

/// `(content, embedding)` of a project's active entries.
async fn active_vectors(pool: &PgPool, project: &str) -> Vec<(String, Vec<f32>)> {
    sqlx::query_as(
        "SELECT content, embedding FROM active_memory_entries WHERE project = $1 ORDER BY path",
    )
    .bind(project)
    .fetch_all(pool)
    .await
    .expect("read active memory entries")
}

#[tokio::test]
async fn a_tenants_own_endpoint_under_a_shared_model_name_plants_nothing_others_reuse() {
    let attacker_ns = fresh_namespace("tenancy-attacker").await;
    let victim_ns = fresh_namespace("tenancy-victim").await;
    let db = fresh_database("tenancy_poison").await;
    let (_repo, github, commit) = small_repo().await;
    let attacker = EmbedServer::start().await;
    attacker.set_mode(Mode::Constant(7.0));
    let honest = EmbedServer::start().await;
    // Even with cluster-wide reuse allowed and asked for, vectors are only
    // reused from the endpoint that computed them.
    let mut config = OperatorConfig::new(&attacker_ns.name, &db.url);
    config.extra_args = vec![
        "--namespace".into(),
        victim_ns.name.clone(),
        "--allow-cluster-embedding-reuse".into(),
    ];
    let operator = Operator::start(config).await;
    let attacker_api: Api<ProjectSync> =
        Api::namespaced(attacker_ns.client.clone(), &attacker_ns.name);
    let victim_api: Api<ProjectSync> = Api::namespaced(victim_ns.client.clone(), &victim_ns.name);

    create(
        &attacker_api,
        "poison",
        spec(
            &github,
            json!({ "embedding": embedding(&attacker.endpoint(), "Cluster") }),
        ),
    )
    .await;
    wait_until(
        &attacker_api,
        "poison",
        || operator.log_tail(),
        "synced",
        synced_at(commit.clone()),
    )
    .await;
    let planted = active_vectors(&db.pool, &format!("{}/poison", attacker_ns.name)).await;
    assert_eq!(planted.len(), 3);
    assert!(planted.iter().all(|(_, v)| v == &vec![7.0; DIMENSION]));

    create(
        &victim_api,
        "honest",
        spec(
            &github,
            json!({ "embedding": embedding(&honest.endpoint(), "Cluster") }),
        ),
    )
    .await;
    wait_until(
        &victim_api,
        "honest",
        || operator.log_tail(),
        "synced",
        synced_at(commit.clone()),
    )
    .await;
    assert!(
        honest.request_count() > 0,
        "the victim's endpoint was asked"
    );
    let entries = active_vectors(&db.pool, &format!("{}/honest", victim_ns.name)).await;
    assert_eq!(entries.len(), 3);
    for (content, vector) in &entries {
        assert_eq!(
            vector,
            &fake_embedding(content),
            "{content:?} carries the honest vector"
        );
    }

    // The honest endpoint now answers vectors of another dimension: the
    // stored ones (same endpoint, same model, same content) are not reused.
    honest.set_mode(Mode::OtherDimension);
    create(
        &victim_api,
        "resized",
        spec(
            &github,
            json!({ "embedding": embedding(&honest.endpoint(), "Namespace") }),
        ),
    )
    .await;
    wait_until(
        &victim_api,
        "resized",
        || operator.log_tail(),
        "synced",
        synced_at(commit.clone()),
    )
    .await;
    let resized = active_vectors(&db.pool, &format!("{}/resized", victim_ns.name)).await;
    assert_eq!(resized.len(), 3);
    assert!(
        resized.iter().all(|(_, v)| v.len() == DIMENSION + 1),
        "no stored vector of the old dimension was mixed in: {resized:?}"
    );
}

/// Runs IN_PROGRESS now of projects of `namespace`.
async fn running_in(pool: &PgPool, namespace: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM project_syncs s JOIN projects p ON p.id = s.project_id \
          WHERE s.status = 'IN_PROGRESS' AND p.key LIKE $1 || '/%'",
    )
    .bind(namespace)
    .fetch_one(pool)
    .await
    .expect("count running runs")
}

async fn completed_in(pool: &PgPool, namespace: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(DISTINCT p.id) FROM project_syncs s JOIN projects p ON p.id = s.project_id \
          WHERE s.status = 'COMPLETED' AND p.key LIKE $1 || '/%'",
    )
    .bind(namespace)
    .fetch_one(pool)
    .await
    .expect("count completed projects")
}

#[tokio::test]
async fn a_tenant_with_many_resources_does_not_hold_every_run_slot() {
    let busy_ns = fresh_namespace("tenancy-busy").await;
    let quiet_ns = fresh_namespace("tenancy-quiet").await;
    let db = fresh_database("tenancy_fair").await;
    let (_repo, github, commit) = small_repo().await;
    // The busy tenant's runs are slow: every embeddings request takes 2s.
    let slow = EmbedServer::start().await;
    slow.set_mode(Mode::Slow(Duration::from_secs(2)));
    let mut config = OperatorConfig::new(&busy_ns.name, &db.url);
    config.extra_args = vec![
        "--namespace".into(),
        quiet_ns.name.clone(),
        "--concurrency".into(),
        "4".into(),
        "--namespace-concurrency".into(),
        "2".into(),
    ];
    let operator = Operator::start(config).await;
    let busy: Api<ProjectSync> = Api::namespaced(busy_ns.client.clone(), &busy_ns.name);
    let quiet: Api<ProjectSync> = Api::namespaced(quiet_ns.client.clone(), &quiet_ns.name);

    const BUSY: usize = 12;
    for i in 0..BUSY {
        create(
            &busy,
            &format!("r{i}"),
            spec(
                &github,
                json!({ "embedding": embedding(&slow.endpoint(), "Project") }),
            ),
        )
        .await;
    }
    // Wait until the busy tenant holds its share, then add the quiet one.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while running_in(&db.pool, &busy_ns.name).await < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            operator.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    create(&quiet, "q", spec(&github, json!({}))).await;

    let mut most_running = 0;
    let mut busy_done_when_quiet_ready = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        most_running = most_running.max(running_in(&db.pool, &busy_ns.name).await);
        let quiet_obj = quiet.get("q").await.expect("read q");
        if busy_done_when_quiet_ready.is_none() && synced_at(commit.clone())(&quiet_obj) {
            busy_done_when_quiet_ready = Some(completed_in(&db.pool, &busy_ns.name).await);
        }
        let busy_done = completed_in(&db.pool, &busy_ns.name).await;
        if busy_done == BUSY as i64 && busy_done_when_quiet_ready.is_some() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not converged: {busy_done} of {BUSY} busy done\n{}",
            operator.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        most_running <= 2,
        "the busy namespace ran {most_running} at once"
    );
    let done = busy_done_when_quiet_ready.expect("quiet synced");
    eprintln!("busy runs at once at most: {most_running}; busy done when quiet was ready: {done}");
    // Completed-or-running when the quiet one was ready: its last ones had
    // not started yet.
    assert!(
        done + 2 < BUSY as i64,
        "the quiet resource waited for the busy tenant: {done} of {BUSY} were done"
    );
}

#[tokio::test]
async fn a_run_past_its_deadline_fails_naming_the_limit() {
    let ns = fresh_namespace("tenancy-deadline").await;
    let db = fresh_database("tenancy_deadline").await;
    let (_repo, github, _commit) = small_repo().await;
    let stalled = EmbedServer::start().await;
    stalled.set_mode(Mode::Slow(Duration::from_secs(45)));
    let operator = Operator::start(OperatorConfig::new(&ns.name, &db.url)).await;
    let api: Api<ProjectSync> = Api::namespaced(ns.client.clone(), &ns.name);
    create(
        &api,
        "stuck",
        spec(
            &github,
            json!({ "runTimeout": "2s", "embedding": embedding(&stalled.endpoint(), "Project") }),
        ),
    )
    .await;
    let failed = wait_until(
        &api,
        "stuck",
        || operator.log_tail(),
        "failed by its deadline",
        |o| {
            condition(o, "Ready").is_some_and(|(status, reason, _)| {
                status == "False" && reason == "RunDeadlineExceeded"
            })
        },
    )
    .await;
    let (_, _, message) = condition(&failed, "Ready").unwrap();
    assert!(message.contains("2s (spec.runTimeout)"), "{message}");
    let runs: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT status, error_message FROM project_syncs ORDER BY started_at LIMIT 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(runs[0].0, "FAILED");
    assert!(
        runs[0]
            .1
            .as_deref()
            .unwrap_or_default()
            .contains("deadline of 2s"),
        "{runs:?}"
    );
}

#[tokio::test]
async fn recovery_leaves_runs_of_another_install_alone() {
    let ns = fresh_namespace("tenancy-owner").await;
    let db = fresh_database("tenancy_owner").await;
    let setup = Store::new(db.pool.clone());
    setup.migrate().await.expect("migrate");
    let begin = |owner: String, key: &'static str| {
        let store = Store::new(db.pool.clone()).with_owner(&owner);
        async move {
            let project = store
                .ensure_project(&ProjectIdentity {
                    key: key.into(),
                    source: ProjectSource::Git {
                        url: "https://git.example/repo.git".into(),
                    },
                    branch: "main".into(),
                })
                .await
                .unwrap();
            store
                .begin_sync(
                    project,
                    NewSync {
                        branch: "main".into(),
                        commit: Some("c".repeat(40)),
                        trigger: "test".into(),
                        base: None,
                    },
                )
                .await
                .unwrap()
        }
    };
    // This install's id defaults to LEASE_NAMESPACE/LEASE_NAME.
    let ours = begin(format!("{}/projectsync-leader", ns.name), "elsewhere/ours").await;
    let theirs = begin("other-namespace/projectsync".into(), "elsewhere/theirs").await;
    let once = begin("sync-once/1234".into(), "elsewhere/once").await;

    let mut operator = Operator::start(OperatorConfig::new(&ns.name, &db.url)).await;
    let status = |id| {
        let store = setup.clone();
        async move { store.get_sync(id).await.unwrap().status }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while status(ours).await != SyncStatus::Failed {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            operator.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        operator.terminate(Duration::from_secs(20)).await,
        "stops on SIGTERM"
    );
    // A second start of this install: its start-up recovery runs once it
    // leads, before any reconcile.
    let again = Operator::start(OperatorConfig::new(&ns.name, &db.url)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !again.log_text().contains("leading") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            again.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for run in [theirs, once] {
        assert_eq!(status(run).await, SyncStatus::InProgress, "{run}");
    }
}
