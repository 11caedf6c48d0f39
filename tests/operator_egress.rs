//! How the operator reaches sources: through a per-resource HTTP proxy
//! (`spec.proxySecretRef`), within a per-resource time limit
//! (`spec.timeout`), and into a git cache bounded by `--git-cache-max-size`.
//! The real binary against the real API server, a local CONNECT proxy, the
//! GitHub stand-in behind a TLS front (a tunnel needs an https target) and
//! real git servers, all on loopback.

use std::time::Duration;

use kube::Api;
use projectsync::api::ProjectSync;
use serde_json::json;
use support::{
    fresh_database, fresh_namespace,
    git_server::{GitDaemon, GitHttp},
    github::GithubStandIn,
    operator::{Operator, OperatorConfig},
    proxy::ConnectProxy,
    psync::{WAIT, condition, create, request_sync, synced_at, wait_until},
    repo::TestRepo,
    tls::{TestCa, TlsFront},
};

/// Applies the proxy Secret `egress` for `proxy` as user `bot`.
async fn point_at(
    ns: &support::TestNamespace,
    proxy: &ConnectProxy,
    password: &str,
    no_proxy: Option<&str>,
) {
    let mut data = json!({ "address": proxy.address(), "username": "bot", "password": password });
    if let Some(hosts) = no_proxy {
        data["noProxy"] = json!(hosts);
    }
    ns.apply_secret("egress", data).await;
}

/// Ready=False with `reason`, and the message containing `text`.
fn failed_with(reason: &'static str, text: String) -> impl Fn(&ProjectSync) -> bool {
    move |obj| {
        condition(obj, "Ready")
            .is_some_and(|(s, r, m)| s == "False" && r == reason && m.contains(&text))
    }
}

fn standin_addr(github: &GithubStandIn) -> std::net::SocketAddr {
    github
        .api_url()
        .trim_start_matches("http://")
        .parse()
        .expect("stand-in address")
}

#[tokio::test]
async fn github_requests_tunnel_through_the_proxy_which_rejects_bad_credentials_and_no_proxy_bypasses_it()
 {
    let ns = fresh_namespace("egress-gh").await;
    let db = fresh_database("egress_gh").await;
    let mut repo = TestRepo::new("app");
    repo.write("README.md", "# app\n")
        .write("src/lib.rs", "pub fn a() {}\n");
    let first = repo.commit("first");
    let github = GithubStandIn::start("acme", "app", repo.git_dir()).await;
    let ca = TestCa::generate();
    let front = TlsFront::start(&ca, standin_addr(&github)).await;
    let proxy = ConnectProxy::start(Some(("bot", "s3cret"))).await;
    let mut config = OperatorConfig::new(&ns.name, &db.url);
    config
        .env
        .push(("SSL_CERT_FILE".into(), ca.ca_file().display().to_string()));
    let operator = Operator::start(config).await;
    let api: Api<ProjectSync> = Api::namespaced(ns.client.clone(), &ns.name);

    point_at(&ns, &proxy, "s3cret", None).await;
    create(
        &api,
        "app",
        json!({
            "source": { "github": { "owner": "acme", "repo": "app", "apiUrl": front.url() } },
            "branch": "main",
            "proxySecretRef": { "name": "egress" },
        }),
    )
    .await;
    wait_until(
        &api,
        "app",
        || operator.log_tail(),
        "synced through the proxy",
        synced_at(first.clone()),
    )
    .await;
    assert!(
        proxy.tunnels() >= 1,
        "the GitHub source opened no CONNECT tunnel"
    );
    assert_eq!(
        proxy.forwarded(),
        0,
        "https requests are tunnelled, never forwarded in the clear"
    );
    assert!(
        github.request_count() >= 3,
        "the stand-in saw the requests (branch head, tree, blobs) through the tunnel"
    );

    // Wrong proxy password: the changed Secret (read on the requested
    // sync; Secrets are not watched) rebuilds the source, and the proxy's
    // 407 is named.
    point_at(&ns, &proxy, "wrong", None).await;
    request_sync(&api, "app", "wrong-password").await;
    let obj = wait_until(
        &api,
        "app",
        || operator.log_tail(),
        "failed on the proxy's 407",
        failed_with("ProxyAuthenticationFailed", proxy.address()),
    )
    .await;
    assert!(
        condition(&obj, "Stalled").is_some_and(|(s, ..)| s == "True"),
        "a bad proxy password waits for a fix"
    );
    assert!(proxy.refused() >= 1);

    // The API host in noProxy: requests go direct, the proxy sees nothing
    // (its password is still wrong), and the next commit syncs.
    point_at(&ns, &proxy, "wrong", Some("localhost, 127.0.0.0/8")).await;
    let seen = proxy.total();
    repo.write("src/lib.rs", "pub fn a() {}\npub fn b() {}\n");
    let second = repo.commit("second");
    request_sync(&api, "app", "bypass").await;
    wait_until(
        &api,
        "app",
        || operator.log_tail(),
        "synced around the proxy",
        synced_at(second),
    )
    .await;
    assert_eq!(
        proxy.total(),
        seen,
        "a host in noProxy never reaches the proxy"
    );
}

#[tokio::test]
async fn a_git_remote_over_http_is_fetched_through_the_proxy() {
    let ns = fresh_namespace("egress-git").await;
    let db = fresh_database("egress_git").await;
    let mut repo = TestRepo::new("app");
    repo.write("README.md", "# app\n");
    let first = repo.commit("first");
    let server = GitHttp::start(repo.root(), None).await;
    let proxy = ConnectProxy::start(Some(("bot", "s3cret"))).await;
    let operator = Operator::start(OperatorConfig::new(&ns.name, &db.url)).await;
    let api: Api<ProjectSync> = Api::namespaced(ns.client.clone(), &ns.name);

    point_at(&ns, &proxy, "s3cret", None).await;
    create(
        &api,
        "app",
        json!({ "source": { "git": { "url": server.url("app") } }, "branch": "main", "proxySecretRef": { "name": "egress" } }),
    )
    .await;
    wait_until(
        &api,
        "app",
        || operator.log_tail(),
        "synced through the proxy",
        synced_at(first),
    )
    .await;
    assert!(
        proxy.forwarded() >= 1,
        "git sent no request through the proxy"
    );
    assert_eq!(proxy.refused(), 0, "git sent the proxy credentials");

    point_at(&ns, &proxy, "wrong", None).await;
    request_sync(&api, "app", "wrong-password").await;
    wait_until(
        &api,
        "app",
        || operator.log_tail(),
        "failed on the proxy's 407",
        failed_with("ProxyAuthenticationFailed", "407".into()),
    )
    .await;
}

/// Accepts connections and never answers (bounded: at most 64 held).
async fn start_stalling_server() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("address");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            if held.len() < 64 {
                held.push(socket);
            }
        }
    });
    (addr, task)
}

#[tokio::test]
async fn a_source_that_stalls_fails_with_a_timeout_naming_the_limit() {
    let ns = fresh_namespace("egress-timeout").await;
    let db = fresh_database("egress_timeout").await;
    let (stall, task) = start_stalling_server().await;
    let operator = Operator::start(OperatorConfig::new(&ns.name, &db.url)).await;
    let api: Api<ProjectSync> = Api::namespaced(ns.client.clone(), &ns.name);

    create(
        &api,
        "gh",
        json!({
            "source": { "github": { "owner": "acme", "repo": "app", "apiUrl": format!("http://{stall}") } },
            "branch": "main",
            "timeout": "2s",
        }),
    )
    .await;
    create(
        &api,
        "git",
        json!({ "source": { "git": { "url": format!("http://{stall}/app.git") } }, "branch": "main", "timeout": "2s" }),
    )
    .await;
    let started = std::time::Instant::now();
    wait_until(
        &api,
        "gh",
        || operator.log_tail(),
        "timed out",
        failed_with("ProviderTimeout", "of 2s each".into()),
    )
    .await;
    wait_until(
        &api,
        "git",
        || operator.log_tail(),
        "timed out",
        failed_with("GitTimeout", "ls-remote timed out after 2s".into()),
    )
    .await;
    // Four attempts of 2s plus backoff each, far below the 60s default.
    assert!(started.elapsed() < WAIT, "the 2s limit was applied");
    task.abort();
}

/// `projectsync_git_cache_*` values from `/metrics`.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map(|v| v as u64)
        .unwrap_or(0)
}

/// Bytes that git cannot compress, so each cache holds about this much.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Waits until resources `one`, `two` and `three` synced their repository's head.
async fn wait_synced(api: &Api<ProjectSync>, repos: &[TestRepo], operator: &Operator) {
    for (repo, name) in repos.iter().zip(["one", "two", "three"]) {
        wait_until(
            api,
            name,
            || operator.log_tail(),
            "synced",
            synced_at(repo.head()),
        )
        .await;
    }
}

#[tokio::test]
async fn git_caches_stay_under_the_limit_by_evicting_idle_ones_and_an_oversized_fetch_fails() {
    let ns = fresh_namespace("egress-cache").await;
    let db = fresh_database("egress_cache").await;
    // Three repositories of ~300 KB each (a limit of 700 KiB holds two) and
    // one of 1 MB (over the limit on its own).
    let mut repos: Vec<TestRepo> = Vec::new();
    let base = tempfile::tempdir().expect("served directory");
    for (i, name) in ["one", "two", "three", "huge"].iter().enumerate() {
        let mut repo = TestRepo::new(name);
        let size = if *name == "huge" {
            1024 * 1024
        } else {
            300 * 1024
        };
        repo.write("data.bin", noise(i as u64 + 1, size))
            .write("README.md", format!("# {name}\n"));
        repo.commit("first");
        std::os::unix::fs::symlink(repo.root().join(name), base.path().join(name))
            .expect("link repository");
        repos.push(repo);
    }
    let daemon = GitDaemon::start(base.path());
    let limit: u64 = 700 * 1024;
    let operator = Operator::start(OperatorConfig {
        extra_args: vec!["--git-cache-max-size".into(), "700Ki".into()],
        ..OperatorConfig::new(&ns.name, &db.url)
    })
    .await;
    let api: Api<ProjectSync> = Api::namespaced(ns.client.clone(), &ns.name);

    for name in ["one", "two", "three", "huge"] {
        create(
            &api,
            name,
            json!({ "source": { "git": { "url": daemon.url(name) } }, "branch": "main" }),
        )
        .await;
    }
    wait_synced(&api, &repos, &operator).await;
    wait_until(
        &api,
        "huge",
        || operator.log_tail(),
        "refused as too large for the cache",
        failed_with(
            "CacheLimitExceeded",
            "over the operator's limit of 716800 bytes".into(),
        ),
    )
    .await;

    // Each run ends by enforcing the limit: once all are idle, the caches fit.
    let deadline = tokio::time::Instant::now() + WAIT;
    let metrics = loop {
        let text = operator.metrics().await;
        let bytes = metric(&text, "projectsync_git_cache_bytes");
        if bytes > 0
            && bytes <= limit
            && metric(&text, "projectsync_git_cache_evictions_total") >= 1
        {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "caches not under {limit} bytes with an eviction:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(metric(&metrics, "projectsync_git_cache_bytes") <= limit);

    // Evicted caches are fetched again: every resource syncs its next commit.
    for (i, (repo, name)) in repos.iter_mut().zip(["one", "two", "three"]).enumerate() {
        repo.write("README.md", format!("# {name}, again {i}\n"));
        repo.commit("second");
        request_sync(&api, name, "again").await;
    }
    wait_synced(&api, &repos, &operator).await;
    let text = operator.metrics().await;
    assert!(
        metric(&text, "projectsync_git_cache_evictions_total") >= 2,
        "another eviction after refetching:\n{text}"
    );
}
