//! The egress policy against the real operator: with the default
//! (restricted) policy a ProjectSync cannot make the operator talk to a
//! loopback service, by IP or by a name that resolves to one; a git URL
//! with credentials is refused by the API server; a proxy address with
//! credentials never shows in status or events. Everything on loopback,
//! and every wait bounded.

use k8s_openapi::api::core::v1::Event;
use kube::{Api, api::ListParams};
use projectsync::api::ProjectSync;
use serde_json::json;
use support::{
    fresh_database, fresh_namespace,
    git_server::GitHttp,
    github::GithubStandIn,
    operator::{Operator, OperatorConfig},
    psync::{WAIT, condition, create, wait_until},
    repo::TestRepo,
};

/// Ready=False and Stalled=True with `reason`, the message containing `text`.
fn stalled_with(reason: &'static str, text: String) -> impl Fn(&ProjectSync) -> bool {
    move |obj| {
        let stalled = condition(obj, "Stalled")
            .is_some_and(|(s, r, m)| s == "True" && r == reason && m.contains(&text));
        stalled && condition(obj, "Ready").is_some_and(|(s, _, _)| s == "False")
    }
}

/// The operator with the default egress policy (no loopback allowance).
async fn restricted_operator(namespace: &str, database: &str) -> Operator {
    let mut config = OperatorConfig::new(namespace, database);
    config.egress_args.clear();
    Operator::start(config).await
}

#[tokio::test]
async fn sources_pointing_at_loopback_stall_with_egress_denied_and_receive_nothing() {
    let ns = fresh_namespace("ssrf").await;
    let db = fresh_database("ssrf").await;
    let mut repo = TestRepo::new("app");
    repo.write("README.md", "# app\n");
    repo.commit("first");
    let github = GithubStandIn::start("acme", "app", repo.git_dir()).await;
    let git = GitHttp::start(repo.root(), None).await;
    let operator = restricted_operator(&ns.name, &db.url).await;
    let api: Api<ProjectSync> = Api::namespaced(ns.client.clone(), &ns.name);

    // By IP literal: the GitHub stand-in at 127.0.0.1.
    create(
        &api,
        "by-ip",
        json!({
            "source": { "github": { "owner": "acme", "repo": "app", "apiUrl": github.api_url() } },
            "branch": "main", "interval": "1h",
        }),
    )
    .await;
    // By a name that resolves to loopback: the check is after DNS.
    let by_name = git.url("app").replace("127.0.0.1", "localhost");
    create(
        &api,
        "by-name",
        json!({ "source": { "git": { "url": by_name } }, "branch": "main", "interval": "1h" }),
    )
    .await;
    let github_host = github.api_url().trim_start_matches("http://").to_string();
    let github_host = github_host
        .split(':')
        .next()
        .unwrap_or_default()
        .to_string();

    let by_ip = wait_until(
        &api,
        "by-ip",
        || operator.log_tail(),
        "stalled: egress to the GitHub stand-in denied",
        stalled_with("EgressDenied", "--egress-allow-cidr 127.0.0.1/32".into()),
    )
    .await;
    let (_, _, message) = condition(&by_ip, "Stalled").expect("Stalled");
    assert!(message.contains(&github_host), "{message}");
    let by_name = wait_until(
        &api,
        "by-name",
        || operator.log_tail(),
        "stalled: egress to localhost denied",
        stalled_with("EgressDenied", "egress to localhost".into()),
    )
    .await;
    let (_, _, message) = condition(&by_name, "Stalled").expect("Stalled");
    assert!(
        message.contains("--egress-allow-host localhost"),
        "{message}"
    );
    assert_eq!(
        github.request_count(),
        0,
        "the loopback GitHub stand-in was reached"
    );
    assert!(
        !operator.log_text().contains("panicked"),
        "{}",
        operator.log_text()
    );
}

#[tokio::test]
async fn a_git_url_with_credentials_is_refused_by_the_api_server_with_where_they_go() {
    let ns = fresh_namespace("ssrf-userinfo").await;
    let api: Api<ProjectSync> = Api::namespaced(ns.client.clone(), &ns.name);
    let object: ProjectSync = serde_json::from_value(json!({
        "apiVersion": "projectsync.dev/v1alpha1",
        "kind": "ProjectSync",
        "metadata": { "name": "creds" },
        "spec": {
            "source": { "git": { "url": "https://bot:s3cret@git.example/r.git" } },
            "branch": "main",
        },
    }))
    .expect("valid ProjectSync");
    let err = api
        .create(&Default::default(), &object)
        .await
        .expect_err("the API server accepted credentials in the URL");
    let text = err.to_string();
    assert!(text.contains("spec.source.git.secretRef"), "{text}");
}

#[tokio::test]
async fn a_proxy_address_with_credentials_never_shows_in_status_or_events() {
    let ns = fresh_namespace("ssrf-proxy").await;
    let db = fresh_database("ssrf_proxy").await;
    let operator = restricted_operator(&ns.name, &db.url).await;
    let api: Api<ProjectSync> = Api::namespaced(ns.client.clone(), &ns.name);
    ns.apply_secret(
        "egress",
        json!({ "address": "http://bot:hunter2@proxy.example:3128" }),
    )
    .await;
    create(
        &api,
        "proxied",
        json!({
            "source": { "github": { "owner": "acme", "repo": "app" } },
            "proxySecretRef": { "name": "egress" },
            "branch": "main", "interval": "1h",
        }),
    )
    .await;
    let obj = wait_until(
        &api,
        "proxied",
        || operator.log_tail(),
        "stalled: the proxy address is refused",
        stalled_with("ProxySecretInvalid", "username and password keys".into()),
    )
    .await;
    let status = serde_json::to_string(&obj.status).expect("status json");
    assert!(!status.contains("hunter2"), "{status}");
    let events: Api<Event> = Api::namespaced(ns.client.clone(), &ns.name);
    let deadline = tokio::time::Instant::now() + WAIT;
    let listed = loop {
        let list = events.list(&ListParams::default()).await.expect("events");
        if !list.items.is_empty() || tokio::time::Instant::now() > deadline {
            break list;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let text = serde_json::to_string(&listed.items).expect("events json");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(!operator.log_text().contains("hunter2"));
}
