//! The plain git source over ssh against a real `sshd` on loopback: the
//! private key and `known_hosts` reach ssh as the controller builds them
//! from a Secret, the host key is checked strictly, and neither the key nor
//! the hosts file ever shows in an error.

use std::collections::BTreeMap;
use std::time::Duration;

use projectsync::source::git::{GitConfig, GitRemote};
use projectsync::source::{
    Credentials, Retry, RetryPolicy, Source, SourceError, build_credentials_from_secret,
};
use support::repo::{TestRepo, assert_source_matches_git};
use support::ssh_server::{SshKeyPair, SshServer};

fn source_for(url: &str, credentials: Credentials, cache: &tempfile::TempDir) -> GitRemote {
    let mut config = GitConfig::new(url, cache.path().join("cache"));
    // The test servers listen on loopback.
    config.egress = projectsync::egress::EgressPolicy::allow_loopback();
    config.credentials = credentials;
    config.timeout = Duration::from_secs(60);
    config.retry = RetryPolicy {
        attempts: 2,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(40),
    };
    GitRemote::new(config).expect("git source")
}

/// A Secret's `data` as the controller reads it (bytes per key).
fn secret_data(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect()
}

/// The error, with its reason and retry class; asserts that no part of the
/// key material appears in its message or its `Debug` form.
fn failure(err: SourceError, key: &SshKeyPair, known_hosts: &str) -> (&'static str, Retry) {
    let shown = format!("{err} {err:?}");
    let key_body: String = key
        .private_key
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    for secret in [
        key_body.as_str(),
        key.public_key.as_str(),
        known_hosts.trim(),
    ] {
        // A secret's short last chunk ("ss", say) can occur in any message
        // by chance; 12 bytes of key material cannot.
        for chunk in secret
            .as_bytes()
            .chunks(24)
            .filter(|c| c.len() >= 12)
            .map(String::from_utf8_lossy)
        {
            assert!(!shown.contains(chunk.as_ref()), "{chunk:?} in {shown}");
        }
    }
    (err.reason(), err.retry())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_source_over_ssh_with_secret_credentials_matches_git_at_every_commit() {
    let repo = TestRepo::with_history("demo");
    let server = SshServer::start();
    let data = secret_data(&[
        ("identity", &server.client_key().private_key),
        ("known_hosts", &server.known_hosts()),
    ]);
    let credentials = build_credentials_from_secret(&data, None).expect("ssh credentials");
    assert_eq!(credentials, server.credentials());
    let cache = tempfile::tempdir().unwrap();
    let source = source_for(&server.url(&repo.path), credentials, &cache);
    // Including the commit a force push abandoned: with GIT_PROTOCOL passed
    // through (protocol v2) the server serves it by id.
    assert_source_matches_git(&source, &repo, &repo.commits).await;
    assert!(
        server.log().contains("Accepted publickey"),
        "sshd saw a key login:\n{}",
        server.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shallow_tree_over_ssh_needs_one_fetch_and_leaves_one_commit_cached() {
    let repo = TestRepo::with_history("demo");
    let server = SshServer::start();
    let cache = tempfile::tempdir().unwrap();
    let source = source_for(&server.url(&repo.path), server.credentials(), &cache);
    let head = repo.rev_parse("main");
    source.fetch_tree(&head, None).await.unwrap();
    source.fetch_tree(&head, None).await.unwrap();
    assert_eq!(source.stats().endpoint("fetch"), 1);
    let cached = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(cache.path().join("cache/repo.git"))
        .args(["rev-list", "--count", "--all", &head])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&cached.stdout).trim(), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_an_ssh_server_without_protocol_v2_every_reachable_commit_still_matches_git() {
    let repo = TestRepo::with_history("demo");
    let server = SshServer::start_without_protocol_v2();
    let cache = tempfile::tempdir().unwrap();
    let source = source_for(&server.url(&repo.path), server.credentials(), &cache);
    // The branch tips first (advertised, so fetched shallow by id), then
    // older commits protocol v0 refuses by id.
    let mut commits: Vec<String> = repo.branches().into_iter().map(|(_, sha)| sha).collect();
    commits.extend(repo.reachable_commits());
    assert_source_matches_git(&source, &repo, &commits).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_hosts_with_another_host_key_or_none_for_the_server_fail_host_key_verification() {
    let repo = TestRepo::with_history("demo");
    let server = SshServer::start();
    let key = server.client_key().clone();
    let other_host = SshKeyPair::generate();
    for (case, known_hosts) in [
        (
            "another key",
            server.known_hosts_with(&other_host.public_key),
        ),
        (
            "another host",
            format!("github.com {}\n", other_host.public_key),
        ),
    ] {
        let cache = tempfile::tempdir().unwrap();
        let credentials = Credentials::SshKey {
            private_key: key.private_key.clone(),
            known_hosts: known_hosts.clone(),
        };
        let source = source_for(&server.url(&repo.path), credentials, &cache);
        let err = source.fetch_branches().await.unwrap_err();
        assert_eq!(
            failure(err, &key, &known_hosts),
            ("HostKeyVerificationFailed", Retry::Stalled),
            "{case}"
        );
    }
    assert!(
        !server.log().contains("Accepted publickey"),
        "no login without a verified host:\n{}",
        server.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_the_server_does_not_authorize_fails_authentication() {
    let repo = TestRepo::with_history("demo");
    let server = SshServer::start();
    let stranger = SshKeyPair::generate();
    let known_hosts = server.known_hosts();
    let cache = tempfile::tempdir().unwrap();
    let credentials = Credentials::SshKey {
        private_key: stranger.private_key.clone(),
        known_hosts: known_hosts.clone(),
    };
    let source = source_for(&server.url(&repo.path), credentials, &cache);
    let err = source.fetch_branches().await.unwrap_err();
    assert_eq!(
        failure(err, &stranger, &known_hosts),
        ("AuthenticationFailed", Retry::Stalled)
    );
    let err = source.fetch_tree(&repo.head(), None).await.unwrap_err();
    assert_eq!(err.reason(), "AuthenticationFailed", "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_repository_over_ssh_is_not_found() {
    let repo = TestRepo::with_history("demo");
    let server = SshServer::start();
    let cache = tempfile::tempdir().unwrap();
    let url = server.url(&repo.root().join("absent"));
    let source = source_for(&url, server.credentials(), &cache);
    let err = source.fetch_branches().await.unwrap_err();
    assert_eq!(
        failure(err, server.client_key(), &server.known_hosts()),
        ("RepositoryNotFound", Retry::Stalled)
    );
}
