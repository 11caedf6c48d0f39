//! GitHub App authentication end to end: the real binary reads an App from a
//! Secret, syncs through the GitHub stand-in in App mode (which verifies
//! every JWT with the app's public key), keeps one installation token across
//! runs and polls, replaces a revoked one, shows the installation's budget in
//! metrics, and stalls with a specific reason on a wrong key.

use kube::Api;
use projectsync::api::ProjectSync;
use serde_json::json;
use support::{
    fresh_database, fresh_namespace,
    github::{
        GithubStandIn,
        app::{INSTALLATION_RATE_LIMIT, TestAppKey},
    },
    operator::{Operator, OperatorConfig},
    psync::{condition, create, request_sync, synced_at, wait_until},
    repo::TestRepo,
};

const APP_ID: u64 = 4242;
const INSTALLATION_ID: u64 = 77;

fn app_secret(key: &TestAppKey) -> serde_json::Value {
    json!({
        "githubAppID": APP_ID.to_string(),
        "githubAppInstallationID": INSTALLATION_ID.to_string(),
        "githubAppPrivateKey": key.private_key_pem,
    })
}

#[tokio::test]
async fn an_app_secret_syncs_on_one_token_refreshes_a_revoked_one_and_shows_the_installation_budget()
 {
    let ns = fresh_namespace("op-ghapp").await;
    let db = fresh_database("op_ghapp").await;
    let mut repo = TestRepo::new("service");
    repo.write("a.rs", "pub fn a() {}\n")
        .write("b.rs", "pub fn b() {}\n");
    let first = repo.commit("two files");
    let github = GithubStandIn::start("acme", "service", repo.git_dir()).await;
    let key = TestAppKey::generate();
    github.enable_app(APP_ID, INSTALLATION_ID, &key.public_key_der);
    ns.apply_secret("gh-app", app_secret(&key)).await;
    // The same app and installation with a key that is not the app's.
    ns.apply_secret("gh-wrong-key", app_secret(&TestAppKey::generate()))
        .await;
    let operator = Operator::start(OperatorConfig::new(&ns.name, &db.url)).await;
    let api: Api<ProjectSync> = Api::namespaced(ns.client.clone(), &ns.name);
    let spec = |secret: &str| {
        json!({
            "source": { "github": {
                "owner": "acme", "repo": "service", "apiUrl": github.api_url(),
                "secretRef": { "name": secret },
            } },
            "branch": "main",
        })
    };
    create(&api, "app", spec("gh-app")).await;
    create(&api, "wrong", spec("gh-wrong-key")).await;

    wait_until(
        &api,
        "app",
        || operator.log_tail(),
        "synced",
        synced_at(first),
    )
    .await;
    a_key_that_is_not_the_apps_stalls_the_resource(&api, &operator).await;
    a_change_and_an_unchanged_poll_use_the_first_token(&api, &mut repo, &github, &operator).await;
    metrics_show_the_installation_budget_and_the_mints(&operator, &github, &ns.name).await;
    a_revoked_token_is_replaced_once(&api, &mut repo, &github, &operator).await;
}

/// The same app and installation with a wrong key: Stalled, with a reason
/// of its own and a message naming the app and installation, not the key.
async fn a_key_that_is_not_the_apps_stalls_the_resource(
    api: &Api<ProjectSync>,
    operator: &Operator,
) {
    let obj = wait_until(
        api,
        "wrong",
        || operator.log_tail(),
        "stalled on the JWT",
        |obj| {
            condition(obj, "Ready")
                .is_some_and(|(s, r, _)| s == "False" && r == "GithubAppJwtRejected")
                && condition(obj, "Stalled").is_some_and(|(s, _, _)| s == "True")
        },
    )
    .await;
    let (_, _, message) = condition(&obj, "Ready").expect("Ready");
    assert!(
        message.contains("app 4242") && message.contains("installation 77"),
        "{message}"
    );
    assert!(!message.contains("PRIVATE KEY"), "{message}");
}

/// A change and an unchanged poll: still the first token.
async fn a_change_and_an_unchanged_poll_use_the_first_token(
    api: &Api<ProjectSync>,
    repo: &mut TestRepo,
    github: &GithubStandIn,
    operator: &Operator,
) {
    repo.write("b.rs", "pub fn b() -> u8 { 2 }\n");
    let second = repo.commit("edit b");
    request_sync(api, "app", "second").await;
    wait_until(
        api,
        "app",
        || operator.log_tail(),
        "synced",
        synced_at(second.clone()),
    )
    .await;
    request_sync(api, "app", "unchanged").await;
    wait_until(
        api,
        "app",
        || operator.log_tail(),
        "checked",
        |obj| {
            obj.status
                .as_ref()
                .is_some_and(|s| s.last_handled_requested_at.as_deref() == Some("unchanged"))
        },
    )
    .await;
    assert_eq!(
        github.app_tokens_minted(),
        1,
        "one token for two runs and a poll"
    );
    assert!(
        github.app_mints_refused() >= 1,
        "the wrong key was refused by the stand-in"
    );
    let refused_rest = github
        .requests()
        .iter()
        .filter(|r| r.status == 401 && r.path.starts_with("/repos/"))
        .count();
    assert_eq!(refused_rest, 0, "no REST request went out with a bad token");
}

/// The installation's budget, per resource; the mint counter.
async fn metrics_show_the_installation_budget_and_the_mints(
    operator: &Operator,
    github: &GithubStandIn,
    namespace: &str,
) {
    let metrics = operator.metrics().await;
    let labels = format!("{{name=\"app\",namespace=\"{}\"}}", namespace);
    let limit_line =
        format!("projectsync_github_rate_limit_limit{labels} {INSTALLATION_RATE_LIMIT}");
    let remaining_line = format!(
        "projectsync_github_rate_limit_remaining{labels} {}",
        github.rate_limit_remaining()
    );
    assert!(github.rate_limit_remaining() < INSTALLATION_RATE_LIMIT);
    for line in [
        limit_line.as_str(),
        remaining_line.as_str(),
        "projectsync_github_app_tokens_minted_total{result=\"success\"} 1",
    ] {
        assert!(metrics.contains(line), "metrics lack {line}:\n{metrics}");
    }
    assert!(
        metrics.contains("projectsync_github_app_tokens_minted_total{result=\"failure\"}"),
        "{metrics}"
    );
}

/// GitHub revokes the token: the next run gets a 401, mints once, and syncs.
async fn a_revoked_token_is_replaced_once(
    api: &Api<ProjectSync>,
    repo: &mut TestRepo,
    github: &GithubStandIn,
    operator: &Operator,
) {
    github.revoke_app_tokens();
    github.clear_log();
    repo.write("c.rs", "pub fn c() {}\n");
    let third = repo.commit("add c");
    request_sync(api, "app", "third").await;
    wait_until(
        api,
        "app",
        || operator.log_tail(),
        "synced",
        synced_at(third),
    )
    .await;
    assert_eq!(github.app_tokens_minted(), 2, "one refresh");
    let refused: Vec<String> = github
        .requests()
        .into_iter()
        .filter(|r| r.status == 401 && r.path.starts_with("/repos/"))
        .map(|r| r.path)
        .collect();
    assert_eq!(
        refused.len(),
        1,
        "only the first request with the revoked token was refused: {refused:?}"
    );
}
