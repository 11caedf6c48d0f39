//! Bad input at run time, against the real binary: each case gives Ready=False
//! (and Stalled where the user must act) with a specific reason and a Warning
//! event, leaves the last completed sync current, and recovers when fixed.

use std::time::Duration;

use k8s_openapi::api::core::v1::Event;
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams},
};
use projectsync::api::ProjectSync;
use serde_json::json;
use support::{
    embed_server::EmbedServer,
    fresh_database, fresh_namespace,
    github::{Fault, GithubStandIn},
    operator::{Operator, OperatorConfig},
    psync::{WAIT, condition, create, request_sync, wait_until},
    repo::TestRepo,
};

/// Ready=False with `reason`, and Stalled=True with it when `stalled`.
fn failed_with(reason: &'static str, stalled: bool) -> impl Fn(&ProjectSync) -> bool {
    move |obj| {
        let ready = condition(obj, "Ready");
        let stall = condition(obj, "Stalled");
        ready
            .as_ref()
            .is_some_and(|(s, r, _)| s == "False" && r == reason)
            && (!stalled
                || stall
                    .as_ref()
                    .is_some_and(|(s, r, _)| s == "True" && r == reason))
    }
}

fn ready_at(commit: String) -> impl Fn(&ProjectSync) -> bool {
    move |obj| {
        condition(obj, "Ready").is_some_and(|(s, _, _)| s == "True")
            && condition(obj, "Stalled").is_none()
            && obj
                .status
                .as_ref()
                .and_then(|s| s.last_synced_commit.as_deref())
                == Some(commit.as_str())
    }
}

/// Waits for a Warning event with `reason` about `name` (the API server shows
/// events.k8s.io events in the core Event API too).
async fn wait_for_event(ns: &support::TestNamespace, name: &str, reason: &str) -> Event {
    let events: Api<Event> = Api::namespaced(ns.client.clone(), &ns.name);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let list = events
            .list(&ListParams::default())
            .await
            .expect("list events");
        if let Some(event) = list.items.into_iter().find(|e| {
            e.involved_object.name.as_deref() == Some(name)
                && e.type_.as_deref() == Some("Warning")
                && e.reason.as_deref() == Some(reason)
        }) {
            return event;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no Warning event mentioning {reason} for {name}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn secret(ns: &support::TestNamespace, name: &str, data: serde_json::Value) {
    ns.apply_secret(name, data).await;
}

#[tokio::test]
async fn a_missing_secret_then_a_wrong_key_then_a_bad_token_stall_and_recover_when_fixed() {
    let ns = fresh_namespace("op-secret").await;
    let db = fresh_database("op_secret").await;
    let mut repo = TestRepo::new("private");
    repo.write("a.txt", "a\n");
    let head = repo.commit("a");
    let github = GithubStandIn::start("acme", "private", repo.git_dir()).await;
    github.require_token("s3cret");
    let operator = Operator::start(OperatorConfig::new(&ns.name, &db.url)).await;
    let api: Api<ProjectSync> = Api::namespaced(ns.client.clone(), &ns.name);
    create(
        &api,
        "private",
        json!({
            "source": { "github": {
                "owner": "acme", "repo": "private", "apiUrl": github.api_url(),
                "secretRef": { "name": "gh", "key": "token" },
            } },
            "branch": "main",
        }),
    )
    .await;

    let obj = wait_until(
        &api,
        "private",
        || operator.log_tail(),
        "stalled on the missing Secret",
        failed_with("SecretNotFound", true),
    )
    .await;
    let (_, _, message) = condition(&obj, "Stalled").expect("Stalled");
    assert!(
        message.contains(&format!("Secret {}/gh", ns.name)) && message.contains("not found"),
        "{message}"
    );
    let event = wait_for_event(&ns, "private", "SecretNotFound").await;
    assert!(event.message.unwrap_or_default().contains("not found"));

    // The Secret appears, with the wrong key. Secrets are not watched (that
    // would need list and watch on all of them): the user asks for a sync.
    secret(&ns, "gh", json!({ "password": "s3cret" })).await;
    request_sync(&api, "private", "secret-created").await;
    let obj = wait_until(
        &api,
        "private",
        || operator.log_tail(),
        "stalled on the key",
        failed_with("SecretKeyMissing", true),
    )
    .await;
    assert!(
        condition(&obj, "Stalled")
            .expect("Stalled")
            .2
            .contains("\"token\"")
    );

    // The right key with a bad token: GitHub says 401.
    secret(&ns, "gh", json!({ "token": "wrong" })).await;
    request_sync(&api, "private", "secret-key-fixed").await;
    wait_until(
        &api,
        "private",
        || operator.log_tail(),
        "stalled on bad credentials",
        failed_with("BadCredentials", true),
    )
    .await;
    wait_for_event(&ns, "private", "BadCredentials").await;

    // Fixed: the next reconcile syncs and clears Stalled.
    secret(&ns, "gh", json!({ "token": "s3cret" })).await;
    request_sync(&api, "private", "token-fixed").await;
    wait_until(
        &api,
        "private",
        || operator.log_tail(),
        "recovered",
        ready_at(head),
    )
    .await;
}

#[tokio::test]
async fn a_deleted_branch_and_a_vanished_repository_stall_and_keep_the_last_sync() {
    let ns = fresh_namespace("op-gone").await;
    let db = fresh_database("op_gone").await;
    let mut repo = TestRepo::new("gone");
    repo.write("a.txt", "a\n");
    let head = repo.commit("a");
    repo.branch("release");
    let github = GithubStandIn::start("acme", "gone", repo.git_dir()).await;
    let operator = Operator::start(OperatorConfig::new(&ns.name, &db.url)).await;
    let api: Api<ProjectSync> = Api::namespaced(ns.client.clone(), &ns.name);
    create(
        &api,
        "gone",
        json!({ "source": { "github": { "owner": "acme", "repo": "gone", "apiUrl": github.api_url() } }, "branch": "release" }),
    )
    .await;
    wait_until(
        &api,
        "gone",
        || operator.log_tail(),
        "synced",
        ready_at(head.clone()),
    )
    .await;

    repo.delete_branch("release");
    request_sync(&api, "gone", "branch-deleted").await;
    let obj = wait_until(
        &api,
        "gone",
        || operator.log_tail(),
        "stalled",
        failed_with("BranchNotFound", true),
    )
    .await;
    let status = obj.status.expect("status");
    assert_eq!(
        status.last_synced_commit.as_deref(),
        Some(head.as_str()),
        "the last completed sync stays current"
    );
    let active: i64 = sqlx::query_scalar("SELECT count(*) FROM active_repository_files")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(active, 1);

    repo.branch("release");
    github.set_fault(Fault::NotFound, None);
    request_sync(&api, "gone", "repo-gone").await;
    wait_until(
        &api,
        "gone",
        || operator.log_tail(),
        "stalled",
        failed_with("RepositoryNotFound", true),
    )
    .await;
    wait_for_event(&ns, "gone", "RepositoryNotFound").await;

    github.clear_fault();
    request_sync(&api, "gone", "back").await;
    wait_until(
        &api,
        "gone",
        || operator.log_tail(),
        "recovered",
        ready_at(head),
    )
    .await;
}

#[tokio::test]
async fn an_unreachable_embedding_endpoint_fails_the_run_with_retry_and_recovers() {
    let ns = fresh_namespace("op-embed").await;
    let db = fresh_database("op_embed").await;
    let mut repo = TestRepo::new("embedded");
    repo.write("src/lib.rs", "pub fn answer() -> u32 {\n    42\n}\n");
    let head = repo.commit("code");
    let github = GithubStandIn::start("acme", "embedded", repo.git_dir()).await;
    let operator = Operator::start(OperatorConfig::new(&ns.name, &db.url)).await;
    let api: Api<ProjectSync> = Api::namespaced(ns.client.clone(), &ns.name);
    // A port nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    create(
        &api,
        "embedded",
        json!({
            "source": { "github": { "owner": "acme", "repo": "embedded", "apiUrl": github.api_url() } },
            "branch": "main",
            "embedding": { "provider": "OpenAI", "endpoint": format!("http://{dead}/v1"), "model": "test-embed" },
        }),
    )
    .await;
    let obj = wait_until(
        &api,
        "embedded",
        || operator.log_tail(),
        "failed",
        failed_with("EmbeddingEndpointUnreachable", false),
    )
    .await;
    assert!(
        condition(&obj, "Stalled").is_none(),
        "an unreachable endpoint is retried, not stalled"
    );
    assert_eq!(
        condition(&obj, "Reconciling").expect("Reconciling").1,
        "ProgressingWithRetry"
    );
    let failed: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT status, failed_stage FROM project_syncs")
            .fetch_all(&db.pool)
            .await
            .expect("runs");
    assert!(
        failed
            .iter()
            .all(|(s, stage)| s == "FAILED" && stage.as_deref() == Some("import")),
        "{failed:?}"
    );
    let active: i64 = sqlx::query_scalar("SELECT count(*) FROM active_memory_entries")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(active, 0, "a failed run's rows never become active");

    // The endpoint comes up: point the spec at it.
    let server = EmbedServer::start().await;
    let patch = json!({ "spec": { "embedding": { "endpoint": server.endpoint() } } });
    api.patch("embedded", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch");
    wait_until(
        &api,
        "embedded",
        || operator.log_tail(),
        "recovered",
        ready_at(head),
    )
    .await;
    let embedded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM memory_entries m JOIN active_memory_entries a ON a.path = m.path WHERE m.embedding IS NOT NULL AND m.embedding_model = 'test-embed'",
    )
    .fetch_one(&db.pool)
    .await
    .expect("count");
    assert!(embedded > 0, "memory entries carry embeddings");

    // A new file whose content another file already has: its embedding is
    // reused by content hash, and only the new content is sent.
    let before = server
        .requests()
        .iter()
        .map(|r| r.inputs.len())
        .sum::<usize>();
    repo.write("src/copy.rs", "pub fn answer() -> u32 {\n    42\n}\n");
    repo.write("src/new.rs", "pub fn fresh() {}\n");
    let next = repo.commit("copy and new");
    request_sync(&api, "embedded", "copy").await;
    wait_until(
        &api,
        "embedded",
        || operator.log_tail(),
        "synced",
        ready_at(next),
    )
    .await;
    let sent: Vec<String> = server
        .requests()
        .iter()
        .flat_map(|r| r.inputs.clone())
        .skip(before)
        .collect();
    assert_eq!(
        sent,
        vec!["pub fn fresh() {}\n".to_string()],
        "only new content is embedded"
    );
}
