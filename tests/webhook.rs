//! The webhook receiver end to end: the real binary against the real API
//! server and a `git daemon`. A signed push to the branch syncs at once
//! (the interval is an hour); every refusal answers its status and is
//! counted in `/metrics`; an unknown resource and a bad signature answer
//! alike, and a bad signature costs no API call. Signatures are computed here with the `hmac`
//! crate, not with the operator's own code.

use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, api::PostParams};
use projectsync::api::{ProjectSync, REQUESTED_AT_ANNOTATION};
use serde_json::json;
use sha2::Sha256;
use support::{
    TestDb, TestNamespace, fresh_database, fresh_namespace,
    git_server::GitDaemon,
    operator::{Operator, OperatorConfig},
    psync::{create, synced_at, wait_until},
    repo::TestRepo,
};

const SECRET: &str = "it's a secret to everybody";

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// POSTs `body` to `path` with `headers`; returns the status.
async fn post(operator: &Operator, path: &str, headers: &[(&str, String)], body: Vec<u8>) -> u16 {
    post_full(operator, path, headers, body).await.0
}

/// POSTs `body` to `path` with `headers`; returns the status and the body.
async fn post_full(
    operator: &Operator,
    path: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> (u16, String) {
    let mut request = reqwest::Client::new()
        .post(format!("http://{}{path}", operator.addr))
        .header("content-type", "application/json")
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.expect("the operator answers");
    let status = response.status().as_u16();
    (status, response.text().await.expect("answer body"))
}

/// A GitHub delivery: event, delivery id and a signature under `secret`.
fn github_headers(
    event: &str,
    delivery: &str,
    secret: &str,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    vec![
        ("x-github-event", event.to_string()),
        ("x-github-delivery", delivery.to_string()),
        ("x-hub-signature-256", sign(secret, body)),
    ]
}

fn push(branch: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({ "ref": format!("refs/heads/{branch}"), "before": "0", "after": "1", "commits": [] }))
        .expect("json")
}

/// `projectsync_webhook_requests_total{result="..."}`, 0 when absent.
fn webhook_count(metrics: &str, result: &str) -> u64 {
    let prefix = format!("projectsync_webhook_requests_total{{result=\"{result}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

async fn create_secret(ns: &TestNamespace, name: &str, key: &str, value: &str) {
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": name },
        "stringData": { key: value },
    }))
    .expect("secret");
    Api::<Secret>::namespaced(ns.client.clone(), &ns.name)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
}

/// A namespace, a database, a one-commit repository behind `git daemon`, the
/// operator, and ProjectSync `app` hooked with Secret `hook` (the HMAC
/// under `key`), synced. The database and daemon live as long as the tuple.
async fn start_hooked_app(
    label: &str,
    key: &str,
) -> (
    TestNamespace,
    TestDb,
    TestRepo,
    GitDaemon,
    Operator,
    Api<ProjectSync>,
) {
    let ns = fresh_namespace(label).await;
    let db = fresh_database(&label.replace('-', "_")).await;
    let mut repo = TestRepo::new("app");
    repo.write("README.md", "# app\n");
    let first = repo.commit("initial");
    let daemon = GitDaemon::start(repo.root());
    let operator = Operator::start(OperatorConfig::new(&ns.name, &db.url)).await;
    let api: Api<ProjectSync> = Api::namespaced(ns.client.clone(), &ns.name);
    create_secret(&ns, "hook", key, SECRET).await;
    create(
        &api,
        "app",
        json!({
            "source": { "git": { "url": daemon.url("app") } },
            "branch": "main",
            "interval": "1h",
            "webhook": { "secretRef": { "name": "hook", "key": key } },
        }),
    )
    .await;
    wait_until(
        &api,
        "app",
        || operator.log_tail(),
        "synced",
        synced_at(first),
    )
    .await;
    (ns, db, repo, daemon, operator, api)
}

#[tokio::test]
async fn a_signed_push_to_the_branch_syncs_at_once_and_its_replay_is_refused() {
    let (ns, _db, mut repo, _daemon, operator, api) = start_hooked_app("hook-push", "hmac").await;

    let body = push("main");
    let path = format!("/hooks/github/{}/app", ns.name);
    a_signed_push_syncs_at_once(&operator, &api, &mut repo, &path, &body).await;
    the_same_delivery_again_is_refused(&operator, &path, &body).await;
    the_generic_form_syncs_too(&operator, &api, &mut repo, &ns.name).await;

    let metrics = operator.metrics().await;
    assert_eq!(webhook_count(&metrics, "accepted"), 2, "{metrics}");
    assert_eq!(webhook_count(&metrics, "replayed"), 1, "{metrics}");
}

/// A signed push of `body` (delivery-1) to `path` syncs the new commit
/// within a minute; the interval is an hour, so only the webhook can have
/// started the run.
async fn a_signed_push_syncs_at_once(
    operator: &Operator,
    api: &Api<ProjectSync>,
    repo: &mut TestRepo,
    path: &str,
    body: &[u8],
) {
    repo.write("README.md", "# app, pushed\n");
    let second = repo.commit("pushed");
    let posted = Instant::now();
    assert_eq!(
        post(
            operator,
            path,
            &github_headers("push", "delivery-1", SECRET, body),
            body.to_vec()
        )
        .await,
        202
    );
    let obj = wait_until(
        api,
        "app",
        || operator.log_tail(),
        "synced after the push",
        synced_at(second),
    )
    .await;
    let elapsed = posted.elapsed();
    assert!(
        elapsed < Duration::from_secs(60),
        "the push was synced {elapsed:?} after the POST, not at once"
    );
    eprintln!("webhook POST to Ready: {elapsed:?}");
    let status = obj.status.expect("status");
    assert_eq!(
        status.last_sync.expect("lastSync").trigger.as_deref(),
        Some("requested at webhook:delivery-1")
    );
    assert_eq!(
        status.last_handled_requested_at.as_deref(),
        Some("webhook:delivery-1")
    );
}

/// The same delivery again: refused, and no new request.
async fn the_same_delivery_again_is_refused(operator: &Operator, path: &str, body: &[u8]) {
    assert_eq!(
        post(
            operator,
            path,
            &github_headers("push", "delivery-1", SECRET, body),
            body.to_vec()
        )
        .await,
        409
    );
}

/// The generic form for other hosts: `{"branch": ...}`.
async fn the_generic_form_syncs_too(
    operator: &Operator,
    api: &Api<ProjectSync>,
    repo: &mut TestRepo,
    namespace: &str,
) {
    repo.write("README.md", "# app, pushed elsewhere\n");
    let third = repo.commit("generic");
    let generic = serde_json::to_vec(&json!({ "branch": "main" })).expect("json");
    let headers = vec![
        ("x-delivery-id", "generic-1".to_string()),
        ("x-hub-signature-256", sign(SECRET, &generic)),
    ];
    assert_eq!(
        post(
            operator,
            &format!("/hooks/generic/{namespace}/app"),
            &headers,
            generic
        )
        .await,
        202
    );
    let obj = wait_until(
        api,
        "app",
        || operator.log_tail(),
        "synced after the generic push",
        synced_at(third),
    )
    .await;
    assert_eq!(
        obj.status
            .expect("status")
            .last_sync
            .expect("lastSync")
            .trigger
            .as_deref(),
        Some("requested at webhook:generic-1")
    );
}

#[tokio::test]
async fn unsigned_misdirected_oversize_and_unknown_deliveries_are_refused_and_counted() {
    let ns = fresh_namespace("hook-refuse").await;
    let db = fresh_database("hook_refuse").await;
    let mut repo = TestRepo::new("app");
    repo.write("README.md", "# app\n");
    let first = repo.commit("initial");
    let daemon = GitDaemon::start(repo.root());
    let operator = Operator::start(OperatorConfig::new(&ns.name, &db.url)).await;
    let api: Api<ProjectSync> = Api::namespaced(ns.client.clone(), &ns.name);
    create_secret(&ns, "hook", "token", SECRET).await;
    let spec = |webhook: bool| {
        let mut spec = json!({ "source": { "git": { "url": daemon.url("app") } }, "branch": "main", "interval": "1h" });
        if webhook {
            spec["webhook"] = json!({ "secretRef": { "name": "hook" } });
        }
        spec
    };
    create(&api, "app", spec(true)).await;
    create(&api, "plain", spec(false)).await;
    wait_until(
        &api,
        "app",
        || operator.log_tail(),
        "synced",
        synced_at(first),
    )
    .await;
    let path = format!("/hooks/github/{}/app", ns.name);
    let body = push("main");

    github_s_ping_is_answered(&operator, &path).await;
    wrong_missing_and_misplaced_signatures_answer_as_unknown(&operator, &path, &body).await;
    a_push_to_another_branch_is_accepted_but_requests_nothing(&operator, &path).await;
    a_body_over_one_mib_is_refused_unparsed(&operator, &path).await;
    absent_unhooked_and_unserved_resources_are_all_not_found(&operator, &ns.name, &body).await;
    no_delivery_requested_a_sync_and_each_refusal_was_counted(&api, &operator).await;
}

/// GitHub's ping on hook creation.
async fn github_s_ping_is_answered(operator: &Operator, path: &str) {
    let ping = serde_json::to_vec(&json!({ "zen": "Keep it logically awesome.", "hook_id": 1 }))
        .expect("json");
    assert_eq!(
        post(
            operator,
            path,
            &github_headers("ping", "ping-1", SECRET, &ping),
            ping
        )
        .await,
        200
    );
}

/// A wrong secret, no signature at all, and a signature over another body:
/// the answer of an unknown resource (404), so a caller learns nothing
/// about what exists.
async fn wrong_missing_and_misplaced_signatures_answer_as_unknown(
    operator: &Operator,
    path: &str,
    body: &[u8],
) {
    assert_eq!(
        post(
            operator,
            path,
            &github_headers("push", "bad-1", "guess", body),
            body.to_vec()
        )
        .await,
        404
    );
    let unsigned = vec![
        ("x-github-event", "push".to_string()),
        ("x-github-delivery", "bad-2".to_string()),
    ];
    assert_eq!(post(operator, path, &unsigned, body.to_vec()).await, 404);
    let mut tampered = github_headers("push", "bad-3", SECRET, body);
    tampered[2].1 = sign(SECRET, &push("evil"));
    assert_eq!(post(operator, path, &tampered, body.to_vec()).await, 404);
}

/// A push to another branch: accepted as a delivery, but nothing is requested.
async fn a_push_to_another_branch_is_accepted_but_requests_nothing(
    operator: &Operator,
    path: &str,
) {
    let other = push("dev");
    assert_eq!(
        post(
            operator,
            path,
            &github_headers("push", "dev-1", SECRET, &other),
            other
        )
        .await,
        202
    );
}

/// Over 1 MiB: refused before it is parsed (it is not even JSON).
async fn a_body_over_one_mib_is_refused_unparsed(operator: &Operator, path: &str) {
    let big = vec![b'x'; 2 * 1024 * 1024];
    assert_eq!(
        post(
            operator,
            path,
            &github_headers("push", "big-1", SECRET, &big),
            big
        )
        .await,
        413
    );
}

/// No such resource, a resource without a webhook, a namespace not served: all alike.
async fn absent_unhooked_and_unserved_resources_are_all_not_found(
    operator: &Operator,
    namespace: &str,
    body: &[u8],
) {
    for missing in [
        format!("/hooks/github/{namespace}/absent"),
        format!("/hooks/github/{namespace}/plain"),
        "/hooks/github/kube-system/app".to_string(),
    ] {
        assert_eq!(
            post(
                operator,
                &missing,
                &github_headers("push", "nf", SECRET, body),
                body.to_vec()
            )
            .await,
            404
        );
    }
}

async fn no_delivery_requested_a_sync_and_each_refusal_was_counted(
    api: &Api<ProjectSync>,
    operator: &Operator,
) {
    let obj = api.get("app").await.expect("get app");
    assert!(
        !obj.metadata
            .annotations
            .unwrap_or_default()
            .contains_key(REQUESTED_AT_ANNOTATION),
        "no refused or ignored delivery requested a sync"
    );
    let metrics = operator.metrics().await;
    for (result, expected) in [
        ("ping", 1),
        ("unauthorized", 3),
        ("ignored", 1),
        ("too_large", 1),
        ("not_found", 3),
        ("accepted", 0),
    ] {
        assert_eq!(
            webhook_count(&metrics, result),
            expected,
            "{result}: {metrics}"
        );
    }
}

/// `projectsync_webhook_secret_lookups_total`: reads of webhook Secrets.
fn secret_lookups(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("projectsync_webhook_secret_lookups_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn bad_signatures_cost_no_api_call_ids_are_bound_to_bodies_and_gitlab_tokens_verify() {
    let (ns, _db, _repo, _daemon, operator, api) = start_hooked_app("hook-verify", "token").await;
    let path = format!("/hooks/github/{}/app", ns.name);
    let body = push("dev"); // another branch: verified, then ignored

    // An unknown resource and a bad signature: the same status and body.
    let unknown = post_full(
        &operator,
        &format!("/hooks/github/{}/absent", ns.name),
        &github_headers("push", "u-1", SECRET, &body),
        body.clone(),
    )
    .await;
    let bad = post_full(
        &operator,
        &path,
        &github_headers("push", "b-1", "guess", &body),
        body.clone(),
    )
    .await;
    assert_eq!(unknown, bad, "unknown resource vs bad signature");
    assert_eq!(unknown.0, 404);

    // The first delivery read the Secret once; a flood of bad signatures
    // reads nothing more (nor does an unknown resource).
    let lookups = secret_lookups(&operator.metrics().await);
    assert_eq!(lookups, 1, "one read fills the cache");
    for i in 0..50 {
        let (status, _) = post_full(
            &operator,
            &path,
            &github_headers("push", &format!("b-flood-{i}"), "guess", &body),
            body.clone(),
        )
        .await;
        assert_eq!(status, 404);
        post(
            &operator,
            &format!("/hooks/github/{}/absent-{i}", ns.name),
            &github_headers("push", "u", SECRET, &body),
            body.clone(),
        )
        .await;
    }
    assert_eq!(
        secret_lookups(&operator.metrics().await),
        lookups,
        "bad signatures and unknown resources read no Secret"
    );

    // A delivery id is bound to its body: the same id with another (validly
    // signed) body is refused.
    assert_eq!(
        post(
            &operator,
            &path,
            &github_headers("push", "d-1", SECRET, &body),
            body.clone()
        )
        .await,
        202
    );
    let other = push("feature");
    let (status, answer) = post_full(
        &operator,
        &path,
        &github_headers("push", "d-1", SECRET, &other),
        other,
    )
    .await;
    assert_eq!(status, 409, "{answer}");
    assert!(answer.contains("another body"), "{answer}");

    // GitLab: the secret itself in X-Gitlab-Token.
    let gitlab_path = format!("/hooks/gitlab/{}/app", ns.name);
    let gitlab_body =
        serde_json::to_vec(&json!({ "object_kind": "push", "ref": "refs/heads/main" }))
            .expect("json");
    let gitlab = |token: &str, uuid: &str| {
        vec![
            ("x-gitlab-event", "Push Hook".to_string()),
            ("x-gitlab-token", token.to_string()),
            ("x-gitlab-event-uuid", uuid.to_string()),
        ]
    };
    let wrong = post_full(
        &operator,
        &gitlab_path,
        &gitlab("guess", "g-0"),
        gitlab_body.clone(),
    )
    .await;
    assert_eq!(
        wrong, bad,
        "a wrong GitLab token answers as a bad signature"
    );
    assert_eq!(
        post(
            &operator,
            &gitlab_path,
            &gitlab(SECRET, "g-1"),
            gitlab_body.clone()
        )
        .await,
        202
    );
    let obj = api.get("app").await.expect("get app");
    assert_eq!(
        obj.metadata
            .annotations
            .unwrap_or_default()
            .get(REQUESTED_AT_ANNOTATION)
            .map(String::as_str),
        Some("webhook:g-1"),
        "the GitLab push requested a sync"
    );
}
