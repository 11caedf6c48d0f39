//! The GitHub source authenticated as a GitHub App, against the stand-in in
//! App mode (it verifies each JWT with the app's public key and mints
//! installation tokens): one mint serves many requests and sources, a token
//! near expiry is replaced before use, a revoked token costs one refresh and
//! the request still succeeds, and every refused mint has its own reason.

use std::time::Duration;

use projectsync::source::github::{GitHubConfig, GitHubRepo};
use projectsync::source::{Credentials, GitHubAppCredentials, RetryPolicy, Source};
use support::github::app::{INSTALLATION_RATE_LIMIT, TestAppKey};
use support::github::{Fault, GithubStandIn};
use support::repo::TestRepo;

const APP_ID: u64 = 4242;
const INSTALLATION_ID: u64 = 77;

fn demo_repo() -> TestRepo {
    let mut repo = TestRepo::new("demo");
    repo.write("a.txt", "a\n")
        .write("src/b.rs", "pub fn b() {}\n");
    repo.commit("two files");
    repo
}

/// The stand-in serving `repo` as app [`APP_ID`] with `key`'s public half.
async fn serve_app(repo: &TestRepo, key: &TestAppKey) -> GithubStandIn {
    let standin = GithubStandIn::start("acme", "demo", repo.git_dir()).await;
    standin.enable_app(APP_ID, INSTALLATION_ID, &key.public_key_der);
    standin
}

fn app_config(
    standin: &GithubStandIn,
    app_id: u64,
    installation_id: u64,
    key: &TestAppKey,
) -> GitHubConfig {
    let mut config = GitHubConfig::new("acme", "demo");
    // The test servers listen on loopback.
    config.egress = projectsync::egress::EgressPolicy::allow_loopback();
    config.api_url = standin.api_url();
    config.retry = RetryPolicy {
        attempts: 2,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
    };
    config.credentials = Credentials::GitHubApp(GitHubAppCredentials {
        app_id,
        installation_id,
        private_key_pem: key.private_key_pem.clone(),
    });
    config
}

fn app_source(standin: &GithubStandIn, key: &TestAppKey) -> GitHubRepo {
    GitHubRepo::new(app_config(standin, APP_ID, INSTALLATION_ID, key)).expect("source")
}

/// Requests to the REST endpoints (not mints), with their Authorization.
fn rest_requests(standin: &GithubStandIn) -> Vec<(u16, Option<String>)> {
    standin
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/repos/"))
        .map(|r| (r.status, r.authorization))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_minted_token_serves_every_request_of_every_source_of_the_installation() {
    let repo = demo_repo();
    let key = TestAppKey::generate();
    let standin = serve_app(&repo, &key).await;
    let source = app_source(&standin, &key);

    let branches = source.fetch_branches().await.expect("branches");
    assert_eq!(branches.len(), 1);
    let tree = source
        .fetch_tree(&branches[0].commit_sha, None)
        .await
        .expect("tree");
    for entry in tree
        .entries
        .iter()
        .filter(|e| e.kind == projectsync::source::EntryKind::File)
    {
        source
            .fetch_blob(&entry.blob_sha, 1 << 20)
            .await
            .expect("blob");
    }
    // A second source of the same installation (another resource, or this
    // one rebuilt after an edit) reuses the token.
    let other = app_source(&standin, &key);
    other.fetch_branch_head("main", None).await.expect("head");

    assert_eq!(
        standin.app_tokens_minted(),
        1,
        "one mint for every request: {:#?}",
        standin.requests()
    );
    let rest = rest_requests(&standin);
    assert_eq!(rest.len(), 5, "branches, tree, two blobs, head: {rest:#?}");
    let first = rest[0].1.clone().expect("an Authorization header");
    assert!(first.starts_with("Bearer ghs_"), "{first}");
    assert!(
        rest.iter()
            .all(|(status, auth)| *status == 200 && auth.as_ref() == Some(&first)),
        "{rest:#?}"
    );
    assert_eq!(
        source
            .stats()
            .endpoint(projectsync::source::github::MINT_ENDPOINT),
        1
    );
    assert_eq!(
        other
            .stats()
            .endpoint(projectsync::source::github::MINT_ENDPOINT),
        0
    );

    // The rate limit seen is the installation's, not a user's.
    let limit = other.stats().rate_limit.expect("rate limit observed");
    assert_eq!(limit.limit, Some(INSTALLATION_RATE_LIMIT));
    assert_eq!(limit.remaining, standin.rate_limit_remaining());
    assert!(limit.remaining < INSTALLATION_RATE_LIMIT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_within_the_refresh_margin_is_replaced_before_it_is_used() {
    let repo = demo_repo();
    let key = TestAppKey::generate();
    let standin = serve_app(&repo, &key).await;
    // Tokens that live two minutes are inside the default five-minute
    // margin the moment they are minted: each request needs a new one.
    standin.set_app_token_lifetime(Duration::from_secs(120));
    let source = app_source(&standin, &key);
    for _ in 0..3 {
        source.fetch_branch_head("main", None).await.expect("head");
    }
    assert_eq!(standin.app_tokens_minted(), 3);
    let rest = rest_requests(&standin);
    assert!(
        rest.iter().all(|(status, _)| *status == 200),
        "no request went out with a stale token: {rest:#?}"
    );
    let distinct: std::collections::BTreeSet<_> =
        rest.iter().map(|(_, auth)| auth.clone()).collect();
    assert_eq!(
        distinct.len(),
        3,
        "each request used the token minted for it"
    );

    // With a margin under the lifetime, the same token is kept.
    let standin = serve_app(&repo, &key).await;
    standin.set_app_token_lifetime(Duration::from_secs(120));
    let mut config = app_config(&standin, APP_ID, INSTALLATION_ID, &key);
    config.app_token_refresh_margin = Duration::from_secs(30);
    let source = GitHubRepo::new(config).expect("source");
    for _ in 0..3 {
        source.fetch_branch_head("main", None).await.expect("head");
    }
    assert_eq!(standin.app_tokens_minted(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_costs_one_refresh_and_the_request_still_succeeds() {
    let repo = demo_repo();
    let key = TestAppKey::generate();
    let standin = serve_app(&repo, &key).await;
    let source = app_source(&standin, &key);
    source.fetch_branch_head("main", None).await.expect("head");
    assert_eq!(standin.app_tokens_minted(), 1);

    standin.revoke_app_tokens();
    standin.clear_log();
    let branches = source
        .fetch_branches()
        .await
        .expect("branches after the refresh");
    assert_eq!(branches.len(), 1);
    assert_eq!(standin.app_tokens_minted(), 2, "one refresh");
    let statuses: Vec<u16> = rest_requests(&standin)
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(
        statuses,
        vec![401, 200],
        "refused once, then answered with the new token"
    );

    // The new token is cached like the first.
    source.fetch_branch_head("main", None).await.expect("head");
    assert_eq!(standin.app_tokens_minted(), 2);

    // A 401 that a fresh token does not cure is reported, after exactly one
    // refresh: no loop of mints.
    standin.set_fault(Fault::BadCredentials, None);
    standin.clear_log();
    let err = source.fetch_branches().await.expect_err("still refused");
    assert_eq!(err.reason(), "BadCredentials");
    assert_eq!(standin.app_tokens_minted(), 3);
    let statuses: Vec<u16> = rest_requests(&standin)
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(statuses, vec![401, 401]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_mints_say_why_and_name_the_app_but_never_the_key() {
    let repo = demo_repo();
    let key = TestAppKey::generate();
    let standin = serve_app(&repo, &key).await;

    // A key of another app: the stand-in cannot verify the JWT.
    let wrong_key = TestAppKey::generate();
    let source = app_source(&standin, &wrong_key);
    let err = source
        .fetch_branch_head("main", None)
        .await
        .expect_err("refused");
    assert_eq!(err.reason(), "GithubAppJwtRejected");
    let message = err.to_string();
    assert!(
        message.contains("app 4242") && message.contains("installation 77"),
        "{message}"
    );
    assert!(
        !message.contains("PRIVATE KEY") && !message.contains(&wrong_key.private_key_pem[40..80]),
        "{message}"
    );

    // The right key under another app id: the JWT's issuer does not match.
    let err = GitHubRepo::new(app_config(&standin, 999, INSTALLATION_ID, &key))
        .expect("source")
        .fetch_branch_head("main", None)
        .await
        .expect_err("refused");
    assert_eq!(err.reason(), "GithubAppJwtRejected");

    // An installation the app does not have.
    let err = GitHubRepo::new(app_config(&standin, APP_ID, 78, &key))
        .expect("source")
        .fetch_branch_head("main", None)
        .await
        .expect_err("refused");
    assert_eq!(err.reason(), "GithubAppInstallationNotFound");
    assert!(err.to_string().contains("no installation 78"), "{err}");

    // A suspended installation.
    standin.suspend_app_installation();
    let err = app_source(&standin, &key)
        .fetch_branch_head("main", None)
        .await
        .expect_err("refused");
    assert_eq!(err.reason(), "GithubAppInstallationSuspended");
    assert!(err.to_string().contains("suspended"), "{err}");

    assert_eq!(
        (standin.app_mints_refused(), standin.app_tokens_minted()),
        (4, 0)
    );
    assert!(
        rest_requests(&standin).is_empty(),
        "no REST request without a token"
    );
}
