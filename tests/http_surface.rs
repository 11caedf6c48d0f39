//! The operator's HTTP surface against the real binary and the real API
//! server: progress streams only for callers whose token passes a
//! TokenReview and a SubjectAccessReview (ServiceAccount tokens from
//! TokenRequest), only for resources that exist, memory flat under a flood
//! of made-up names, and slowloris connections closed after the header
//! timeout while normal requests and the probe listener keep answering.
//! Loopback only, bounded in count and time.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use futures::StreamExt;
use kube::Api;
use projectsync::api::ProjectSync;
use serde_json::json;
use support::{
    access::{grant_get, service_account_token},
    fresh_database, fresh_namespace,
    git_server::GitDaemon,
    operator::{Operator, OperatorConfig, http_get},
    psync::{create, synced_at, wait_until},
    repo::TestRepo,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn stream_url(operator: &Operator, namespace: &str, name: &str) -> String {
    format!(
        "http://{}/api/v1/events/project-sync/{namespace}/{name}",
        operator.addr
    )
}

/// Opens the stream with `token` (none when `None`); the status and, for a
/// 200, the first event's name.
async fn open_stream(url: &str, token: Option<&str>) -> (u16, Option<String>) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("the operator answers");
    let status = response.status().as_u16();
    if status != 200 {
        return (status, None);
    }
    let mut response = response;
    let mut text = String::new();
    let first = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = response.chunk().await.expect("chunk") {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if let Some(line) = text.lines().find_map(|l| l.strip_prefix("event: ")) {
                return Some(line.to_string());
            }
        }
        None
    })
    .await
    .expect("a first event within 10s");
    (status, first)
}

/// `name{labels} value` from the metrics text, 0 when absent.
fn metric(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Resident memory of a process in KiB, from `/proc`.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("proc status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::test]
async fn a_stream_needs_a_token_allowed_to_get_that_projectsync_in_its_namespace() {
    let a = fresh_namespace("http-auth-a").await;
    let b = fresh_namespace("http-auth-b").await;
    let db = fresh_database("http_auth").await;
    let mut repo = TestRepo::new("app");
    repo.write("README.md", "# app\n");
    let head = repo.commit("initial");
    let daemon = GitDaemon::start(repo.root());
    let operator = Operator::start(OperatorConfig {
        extra_args: vec!["--namespace".into(), b.name.clone()],
        ..OperatorConfig::new(&a.name, &db.url)
    })
    .await;
    let spec = json!({ "source": { "git": { "url": daemon.url("app") } }, "branch": "main", "interval": "1h" });
    for ns in [&a, &b] {
        let api: Api<ProjectSync> = Api::namespaced(ns.client.clone(), &ns.name);
        create(&api, "app", spec.clone()).await;
        wait_until(
            &api,
            "app",
            || operator.log_tail(),
            "synced",
            synced_at(head.clone()),
        )
        .await;
    }
    let url_a = stream_url(&operator, &a.name, "app");
    let url_b = stream_url(&operator, &b.name, "app");

    assert_eq!(open_stream(&url_a, None).await.0, 401, "no token");
    assert_eq!(
        open_stream(&url_a, Some("not-a-token")).await.0,
        401,
        "an invalid token"
    );
    let token = service_account_token(&a, "viewer").await;
    assert_eq!(
        open_stream(&url_a, Some(&token)).await.0,
        403,
        "a valid token without RBAC"
    );
    // The 403 above is cached for a few seconds: wait it out after the grant.
    grant_get(&a, &a.name, "viewer", &["app"]).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let (status, first) = loop {
        let answer = open_stream(&url_a, Some(&token)).await;
        if answer.0 != 403 || Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(status, 200, "{}", operator.log_tail());
    assert_eq!(
        first.as_deref(),
        Some("snapshot"),
        "the last event of the run"
    );
    assert_eq!(
        open_stream(&url_b, Some(&token)).await.0,
        403,
        "a token allowed in namespace a is refused in namespace b"
    );
    assert_eq!(
        open_stream(&stream_url(&operator, &a.name, "absent"), Some(&token))
            .await
            .0,
        403,
        "the Role names one resource: another name is refused, existing or not"
    );

    // A reconnect within the cache's lifetime costs no review.
    let before = operator.metrics().await;
    for _ in 0..5 {
        assert_eq!(open_stream(&url_a, Some(&token)).await.0, 200);
    }
    let after = operator.metrics().await;
    for review in ["token", "access"] {
        let series = format!("projectsync_http_auth_reviews_total{{review=\"{review}\"}}");
        assert_eq!(
            metric(&before, &series),
            metric(&after, &series),
            "{review} reviews on reconnect"
        );
    }
}

#[tokio::test]
async fn a_flood_of_streams_for_made_up_resources_gets_404s_and_memory_stays_flat() {
    let ns = fresh_namespace("http-flood").await;
    let db = fresh_database("http_flood").await;
    let mut operator = Operator::start(OperatorConfig::new(&ns.name, &db.url)).await;
    let token = service_account_token(&ns, "flooder").await;
    grant_get(&ns, &ns.name, "flooder", &[]).await;
    let pid = operator.pid().expect("running");
    // Warm up the allocator and the caches with a first round.
    let client = reqwest::Client::new();
    let flood = |from: usize, to: usize| {
        let client = client.clone();
        let token = token.clone();
        let base = stream_url(&operator, &ns.name, "");
        futures::stream::iter(from..to)
            .map(move |i| {
                let client = client.clone();
                let token = token.clone();
                let url = format!("{base}made-up-{i}");
                async move {
                    client
                        .get(url)
                        .bearer_auth(token)
                        .send()
                        .await
                        .expect("the operator answers")
                        .status()
                        .as_u16()
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<u16>>()
    };
    let warm = flood(0, 200).await;
    assert!(warm.iter().all(|s| *s == 404), "{warm:?}");
    let before = rss_kib(pid);
    let started = Instant::now();
    let statuses = flood(200, 2200).await;
    let elapsed = started.elapsed();
    let after = rss_kib(pid);
    let not_found = statuses.iter().filter(|s| **s == 404).count();
    assert_eq!(not_found, 2000, "every made-up resource is a 404");
    eprintln!(
        "2,000 streams for made-up resources in {elapsed:?}: RSS {before} KiB -> {after} KiB"
    );
    assert!(
        after < before + 16 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    operator.assert_alive().await;
}

/// Opens `count` connections to `addr` and sends each a request line and
/// one header, never the blank line that ends the head.
async fn slowloris(addr: SocketAddr, count: usize) -> Vec<tokio::net::TcpStream> {
    let mut streams = Vec::with_capacity(count);
    for _ in 0..count {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"GET /api/v1/events/project-sync/a/b HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("partial head");
        streams.push(stream);
    }
    streams
}

#[tokio::test]
async fn slowloris_connections_are_closed_after_the_header_timeout_while_others_are_served() {
    let ns = fresh_namespace("http-slow").await;
    let db = fresh_database("http_slow").await;
    let mut operator = Operator::start(OperatorConfig {
        extra_args: vec!["--http-header-read-timeout".into(), "2".into()],
        ..OperatorConfig::new(&ns.name, &db.url)
    })
    .await;
    let opened = Instant::now();
    let mut slow = slowloris(operator.addr, 200).await;
    let probe_slow = slowloris(operator.probe_addr, 20).await;

    // Meanwhile: a normal request on the API port, and the probes.
    let answered = Instant::now();
    let (status, _) = http_get(
        operator.addr,
        &format!("/api/v1/events/project-sync/{}/x", ns.name),
    )
    .await
    .expect("a normal request is answered");
    assert_eq!(status, 401);
    assert!(
        answered.elapsed() < Duration::from_secs(2),
        "{:?}",
        answered.elapsed()
    );
    operator.assert_alive().await;

    // Every slow connection is closed by the server (EOF or reset) soon
    // after the 2s header timeout.
    let mut closed = 0;
    for stream in &mut slow {
        let mut buf = [0u8; 512];
        let read = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {} // a 408 answer, then the close
                }
            }
        })
        .await;
        if read.is_ok() {
            closed += 1;
        }
    }
    let elapsed = opened.elapsed();
    assert_eq!(closed, 200, "slow connections left open");
    assert!(
        elapsed < Duration::from_secs(12),
        "closing took {elapsed:?}"
    );
    eprintln!("200 slowloris connections closed {elapsed:?} after they opened");
    drop(probe_slow);
    operator.assert_alive().await;
}
