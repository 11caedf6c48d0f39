//! Crash and memory attacks against the real operator, loopback only: a
//! GitHub stand-in answering 429/403 with absurd `Retry-After` and reset
//! headers, one answering with an endless body, a tree bomb (16 entries per
//! level, 6 levels, one blob: 16^6 paths from a few KB of trees), 600 paths
//! sharing one 1 MB text blob, and an embeddings endpoint with an endless
//! body. Each asserts the operator stays up (`/healthz` 200, the process
//! lives), the attacked resource ends where it should with a message that
//! names the limit, and, where memory is the attack, that the operator's
//! peak resident memory (`VmHWM`) stays within the chart's 512 MiB limit.
//! The peaks are printed (`cargo test --test hostile_memory -- --nocapture`).

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use axum::{Router, body::Body, http::Response};
use bytes::Bytes;
use kube::Api;
use projectsync::api::ProjectSync;
use serde_json::json;
use support::{
    TestNamespace, fresh_database, fresh_namespace,
    git_server::GitDaemon,
    operator::{Operator, OperatorConfig},
    psync::{condition, create, synced_at, wait_until_within},
    repo::TestRepo,
};

/// The chart's memory limit.
const MEMORY_LIMIT: u64 = 512 * 1024 * 1024;
/// How long any one attack may take to settle.
const SETTLE: Duration = Duration::from_secs(300);

/// The operator's peak resident memory so far, in bytes.
fn peak_rss(operator: &Operator) -> u64 {
    let pid = operator.pid().expect("the operator runs");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .expect("VmHWM in /proc status")
}

fn assert_within_memory(operator: &Operator, what: &str) -> u64 {
    let peak = peak_rss(operator);
    println!("{what}: operator peak RSS {} MiB", peak / (1024 * 1024));
    assert!(
        peak < MEMORY_LIMIT,
        "{what}: peak RSS {peak} bytes is over the 512 MiB limit"
    );
    peak
}

/// A resource whose Stalled condition is True, with `(reason, message)`.
fn stalled(obj: &ProjectSync) -> Option<(String, String)> {
    condition(obj, "Stalled")
        .filter(|(s, _, _)| s == "True")
        .map(|(_, r, m)| (r, m))
}

/// Any condition's reason and message, for waits that are not stalls.
fn reasons(obj: &ProjectSync) -> Vec<(String, String)> {
    obj.status
        .iter()
        .flat_map(|s| s.conditions.iter())
        .map(|c| (c.reason.clone(), c.message.clone()))
        .collect()
}

/// Serves `router` on a loopback port for the rest of the test.
async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

/// A body that never ends: the same JSON-ish chunk forever.
fn endless_body() -> Body {
    let chunk = Bytes::from(format!("{{\"data\":[{}", "0.125,".repeat(8 * 1024)));
    let mut first = true;
    let stream = futures::stream::repeat_with(move || {
        let out = if first {
            first = false;
            Bytes::from_static(b"{\"object\":\"list\",\"data\":[")
        } else {
            chunk.clone()
        };
        Ok::<_, Infallible>(out)
    });
    Body::from_stream(stream)
}

struct Tenant {
    ns: TestNamespace,
    api: Api<ProjectSync>,
    operator: Operator,
    _db: support::TestDb,
}

async fn start_tenant(label: &str) -> Tenant {
    let ns = fresh_namespace(label).await;
    let db = fresh_database(label).await;
    let operator = Operator::start(OperatorConfig::new(&ns.name, &db.url)).await;
    let api: Api<ProjectSync> = Api::namespaced(ns.client.clone(), &ns.name);
    Tenant {
        ns,
        api,
        operator,
        _db: db,
    }
}

/// A small ordinary repository, the other tenant's.
fn ordinary_repo(name: &str) -> (TestRepo, String) {
    let mut repo = TestRepo::new(name);
    repo.write("src/lib.rs", "pub fn a() {}\n")
        .write("README.md", "# ordinary\n");
    let commit = repo.commit("first");
    (repo, commit)
}

#[tokio::test]
async fn absurd_rate_limit_headers_leave_the_operator_up_and_the_resource_waiting_an_hour_at_most()
{
    let mut tenant = start_tenant("absurd-headers").await;
    // Every request: a 429 with an absurd Retry-After, or a 403 with the
    // quota spent and a reset far in the future, alternating by path.
    let router = Router::new().fallback(|uri: axum::http::Uri| async move {
        let path = uri.path().to_string();
        let builder = Response::builder().header("content-type", "application/json");
        let response = if path.contains("/secondary/") {
            builder
                .status(429)
                .header("retry-after", "9223372036854775807")
        } else {
            builder
                .status(403)
                .header("x-ratelimit-remaining", "0")
                .header("x-ratelimit-limit", "60")
                .header("x-ratelimit-reset", "8210266876799")
        };
        response
            .body(Body::from(r#"{"message":"slow down"}"#))
            .expect("response")
    });
    let addr = serve(router).await;
    for (name, repo) in [("secondary", "secondary"), ("primary", "primary")] {
        create(
            &tenant.api,
            name,
            json!({
                "source": { "github": {
                    "owner": "acme", "repo": repo,
                    "apiUrl": format!("http://{addr}/{repo}")
                } },
                "branch": "main"
            }),
        )
        .await;
    }
    // apiUrl carries the path segment the stand-in keys on.
    let log = || String::new();
    for (name, reason) in [
        ("secondary", "SecondaryRateLimited"),
        ("primary", "RateLimited"),
    ] {
        let obj = wait_until_within(&tenant.api, name, SETTLE, log, reason, |o| {
            reasons(o).iter().any(|(r, _)| r == reason)
        })
        .await;
        let (_, message) = reasons(&obj)
            .into_iter()
            .find(|(r, _)| r == reason)
            .expect("the reason");
        let until = wait_instant(&message).unwrap_or_else(|| panic!("no time in {message:?}"));
        let wait = until - chrono::Utc::now();
        println!("{name}: {message}");
        assert!(
            wait <= chrono::TimeDelta::minutes(61),
            "{name}: waits {wait} ({message})"
        );
    }
    tenant.operator.assert_alive().await;
    drop(tenant.ns);
}

/// The instant in "... until 2026-12-03 11:00:00 UTC" or "retry after ...".
fn wait_instant(message: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let at = message
        .rsplit_once("until ")
        .or_else(|| message.rsplit_once("retry after "))?
        .1;
    let at = at.split(" UTC").next()?;
    let naive = chrono::NaiveDateTime::parse_from_str(at.trim(), "%Y-%m-%d %H:%M:%S%.f").ok()?;
    Some(naive.and_utc())
}

#[tokio::test]
async fn an_endless_github_body_is_a_bounded_failure() {
    let mut tenant = start_tenant("endless-github").await;
    let router = Router::new().fallback(|| async {
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(endless_body())
            .expect("response")
    });
    let addr = serve(router).await;
    create(
        &tenant.api,
        "endless",
        json!({
            "source": { "github": { "owner": "acme", "repo": "r", "apiUrl": format!("http://{addr}") } },
            "branch": "main"
        }),
    )
    .await;
    let log = || String::new();
    let obj = wait_until_within(&tenant.api, "endless", SETTLE, log, "stalled", |o| {
        stalled(o).is_some()
    })
    .await;
    let (reason, message) = stalled(&obj).expect("stalled");
    println!("endless github body: {reason}: {message}");
    assert_eq!(reason, "ProviderResponseTooLarge", "{message}");
    assert!(message.contains("larger than"), "{message}");
    tenant.operator.assert_alive().await;
    assert_within_memory(&tenant.operator, "endless github body");
}

/// Writes a tree of `fanout` entries per level, `levels` deep, every leaf
/// the same blob, and commits it on `main`: `fanout^levels` paths.
fn tree_bomb(repo: &mut TestRepo, fanout: usize, levels: usize) -> String {
    let blob = repo.hash_blob(b"boom\n");
    let mut child = (String::from("100644 blob"), blob);
    for _ in 0..levels {
        let mut lines = Vec::new();
        for i in 0..fanout {
            lines.extend_from_slice(format!("{} {}\tn{i:02}", child.0, child.1).as_bytes());
            lines.push(0);
        }
        let tree = String::from_utf8(repo.git_bytes(&["mktree", "-z"], Some(&lines)))
            .expect("utf-8")
            .trim()
            .to_string();
        child = (String::from("040000 tree"), tree);
    }
    let parent = repo.head();
    let commit = repo.git(&["commit-tree", &child.1, "-p", &parent, "-m", "bomb"]);
    repo.git(&["update-ref", "refs/heads/main", &commit]);
    commit
}

#[tokio::test]
async fn a_tree_bomb_stalls_on_the_tree_limit_within_memory_while_another_resource_syncs() {
    let mut tenant = start_tenant("tree-bomb").await;
    let mut bomb = TestRepo::new("bomb");
    bomb.write("README.md", "# bomb\n");
    bomb.commit("first");
    tree_bomb(&mut bomb, 16, 6);
    let bomb_daemon = GitDaemon::start(bomb.root());
    let (mut other, first) = ordinary_repo("other");
    let other_daemon = GitDaemon::start(other.root());

    create(
        &tenant.api,
        "bomb",
        json!({ "source": { "git": { "url": bomb_daemon.url("bomb") } }, "branch": "main" }),
    )
    .await;
    create(
        &tenant.api,
        "other",
        json!({ "source": { "git": { "url": other_daemon.url("other") } }, "branch": "main", "interval": "30s" }),
    )
    .await;
    let log = || String::new();
    let obj = wait_until_within(&tenant.api, "bomb", SETTLE, log, "stalled", |o| {
        stalled(o).is_some()
    })
    .await;
    let (reason, message) = stalled(&obj).expect("stalled");
    println!("tree bomb: {reason}: {message}");
    assert_eq!(reason, "TreeTooLarge", "{message}");
    assert!(
        message.contains("200000") && message.contains("spec.maxTreeEntries"),
        "the message names the limit and its value: {message}"
    );
    // The other tenant synced meanwhile, and goes on syncing.
    wait_until_within(
        &tenant.api,
        "other",
        SETTLE,
        log,
        "first commit",
        synced_at(first),
    )
    .await;
    other.write("src/lib.rs", "pub fn a() {}\npub fn b() {}\n");
    let second = other.commit("second");
    support::psync::request_sync(&tenant.api, "other", "after-bomb").await;
    wait_until_within(
        &tenant.api,
        "other",
        SETTLE,
        log,
        "second commit",
        synced_at(second),
    )
    .await;
    tenant.operator.assert_alive().await;
    assert_within_memory(&tenant.operator, "tree bomb (16^6 paths)");
}

#[tokio::test]
async fn six_hundred_paths_sharing_one_large_blob_sync_within_memory() {
    let mut tenant = start_tenant("shared-blob").await;
    let mut repo = TestRepo::new("shared");
    repo.write("README.md", "# shared\n");
    repo.commit("first");
    // 1,000,000 bytes of text (under the 1Mi maxFileSize default).
    let line = "let value = compute(alpha, beta, gamma); // shared line\n";
    let mut text = line.repeat(1_000_000 / line.len());
    text.push_str(&"x".repeat(1_000_000 - text.len() - 1));
    text.push('\n');
    assert_eq!(text.len(), 1_000_000);
    let blob = repo.hash_blob(text.as_bytes());
    let mut lines = Vec::new();
    for i in 0..600 {
        lines.extend_from_slice(format!("100644 blob {blob}\tcopy{i:03}.rs").as_bytes());
        lines.push(0);
    }
    let commit = repo.commit_raw_tree("main", &lines, "600 copies");
    let daemon = GitDaemon::start(repo.root());
    create(
        &tenant.api,
        "shared",
        json!({ "source": { "git": { "url": daemon.url("shared") } }, "branch": "main" }),
    )
    .await;
    let log = || String::new();
    let obj = wait_until_within(
        &tenant.api,
        "shared",
        Duration::from_secs(900),
        log,
        "synced",
        |o| synced_at(commit.clone())(o) || stalled(o).is_some(),
    )
    .await;
    assert!(stalled(&obj).is_none(), "stalled: {:?}", stalled(&obj));
    tenant.operator.assert_alive().await;
    assert_within_memory(&tenant.operator, "600 paths sharing a 1 MB blob");
}

#[tokio::test]
async fn an_endless_embeddings_body_is_a_bounded_failure() {
    let mut tenant = start_tenant("endless-embed").await;
    let router = Router::new().fallback(|| async {
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(endless_body())
            .expect("response")
    });
    let addr = serve(router).await;
    let (repo, _) = ordinary_repo("embedded");
    let daemon = GitDaemon::start(repo.root());
    create(
        &tenant.api,
        "embedded",
        json!({
            "source": { "git": { "url": daemon.url("embedded") } },
            "branch": "main",
            "embedding": { "provider": "OpenAI", "endpoint": format!("http://{addr}/v1"), "model": "m" }
        }),
    )
    .await;
    let log = || String::new();
    let obj = wait_until_within(&tenant.api, "embedded", SETTLE, log, "stalled", |o| {
        stalled(o).is_some()
    })
    .await;
    let (reason, message) = stalled(&obj).expect("stalled");
    println!("endless embeddings body: {reason}: {message}");
    assert_eq!(reason, "EmbeddingResponseTooLarge", "{message}");
    assert!(message.contains("batchSize"), "{message}");
    tenant.operator.assert_alive().await;
    assert_within_memory(&tenant.operator, "endless embeddings body");
    drop(repo);
}
