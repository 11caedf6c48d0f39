//! The plain git source against real git servers on loopback: `git daemon`
//! (git://) and `git http-backend` (smart HTTP, with and without basic
//! authentication), plus file:// behind its flag.

use std::time::Duration;

use projectsync::api::conditions::reason;
use projectsync::source::git::{GitConfig, GitRemote};
use projectsync::source::{
    ChangeKind, Changes, Credentials, HeadCache, HeadLookup, Retry, RetryPolicy, Source,
};
use support::git_server::{GitDaemon, GitHttp};
use support::repo::{TestRepo, assert_source_matches_git};

fn source_for(url: &str, cache: &tempfile::TempDir) -> GitRemote {
    let mut config = GitConfig::new(url, cache.path().join("cache"));
    // The test servers listen on loopback.
    config.egress = projectsync::egress::EgressPolicy::allow_loopback();
    config.timeout = Duration::from_secs(60);
    config.retry = RetryPolicy {
        attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(40),
    };
    GitRemote::new(config).expect("git source")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_source_over_git_daemon_matches_git_at_every_commit_of_a_repository_with_history() {
    let repo = TestRepo::with_history("demo");
    let daemon = GitDaemon::start(repo.root());
    let cache = tempfile::tempdir().unwrap();
    // Including the commit a force push abandoned: protocol v2 serves it by id.
    assert_source_matches_git(
        &source_for(&daemon.url("demo"), &cache),
        &repo,
        &repo.commits,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_source_over_smart_http_matches_git_at_every_commit_of_a_repository_with_history() {
    let repo = TestRepo::with_history("demo");
    let http = GitHttp::start(repo.root(), None).await;
    let cache = tempfile::tempdir().unwrap();
    assert_source_matches_git(&source_for(&http.url("demo"), &cache), &repo, &repo.commits).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_is_fetched_shallow_and_only_once() {
    let repo = TestRepo::with_history("demo");
    let daemon = GitDaemon::start(repo.root());
    let cache = tempfile::tempdir().unwrap();
    let source = source_for(&daemon.url("demo"), &cache);
    let head = repo.rev_parse("main");
    source.fetch_tree(&head, None).await.unwrap();
    source.fetch_tree(&head, None).await.unwrap();
    assert_eq!(
        source.stats().endpoint("fetch"),
        1,
        "the second read comes from the cache"
    );
    let git_dir = cache.path().join("cache/repo.git");
    let cached = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(&git_dir)
        .args(["rev-list", "--count", "--all", &head])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&cached.stdout).trim(),
        "1",
        "only the requested commit, no history"
    );
    assert!(git_dir.join("shallow").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_branch_is_reported_unchanged_from_ls_remote_alone() {
    let repo = TestRepo::with_history("demo");
    let daemon = GitDaemon::start(repo.root());
    let cache = tempfile::tempdir().unwrap();
    let source = source_for(&daemon.url("demo"), &cache);
    let cached = HeadCache {
        sha: repo.rev_parse("main"),
        etag: None,
    };
    assert_eq!(
        source
            .fetch_branch_head("main", Some(&cached))
            .await
            .unwrap(),
        HeadLookup::Unchanged
    );
    assert_eq!(
        (source.stats().total(), source.stats().endpoint("ls-remote")),
        (1, 1)
    );
    // The lookup's listing held every head: a run shows branch names
    // without a second ls-remote, and the listing is handed over once.
    let seen: Vec<(String, String)> = source
        .take_branches_seen()
        .expect("the lookup listed the heads")
        .into_iter()
        .map(|b| (b.name, b.commit_sha))
        .collect();
    let mut expected = repo.branches();
    expected.sort();
    assert_eq!(seen, expected);
    assert!(source.take_branches_seen().is_none());
    assert_eq!(source.stats().total(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_between_cached_commits_come_from_a_local_diff() {
    let mut repo = TestRepo::new("demo");
    repo.write("keep", "k")
        .write("edit", "1")
        .write("gone", "g");
    let base = repo.commit("base");
    repo.write("edit", "2").write("new", "n").remove("gone");
    let head = repo.commit("head");
    let daemon = GitDaemon::start(repo.root());
    let cache = tempfile::tempdir().unwrap();
    let source = source_for(&daemon.url("demo"), &cache);
    assert_eq!(
        source.fetch_changes(&base, &head).await.unwrap(),
        Changes::Unavailable {
            reason: reason::BASE_NOT_IN_CACHE
        },
        "base not cached yet"
    );
    source.fetch_tree(&base, None).await.unwrap();
    let Changes::Complete(set) = source.fetch_changes(&base, &head).await.unwrap() else {
        panic!("both commits are cached")
    };
    let summary: Vec<(&str, Option<u64>)> = set
        .changes
        .iter()
        .map(|c| match &c.kind {
            ChangeKind::Upsert(entry) => (c.path.as_str(), entry.size),
            ChangeKind::Removed => (c.path.as_str(), None),
        })
        .collect();
    assert_eq!(
        summary,
        [("edit", Some(1)), ("gone", None), ("new", Some(1))]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_credentials_reach_the_server_through_askpass_and_never_appear_in_errors() {
    let repo = TestRepo::with_history("demo");
    let http = GitHttp::start(repo.root(), Some(("bot", "s3cret-pw"))).await;
    let cache = tempfile::tempdir().unwrap();
    let with = |credentials: Credentials, dir: &str| {
        let mut config = GitConfig::new(http.url("demo"), cache.path().join(dir));
        // The test servers listen on loopback.
        config.egress = projectsync::egress::EgressPolicy::allow_loopback();
        config.credentials = credentials;
        GitRemote::new(config).unwrap()
    };
    let good = with(
        Credentials::Basic {
            username: "bot".into(),
            password: "s3cret-pw".into(),
        },
        "good",
    );
    assert_source_matches_git(&good, &repo, &[repo.rev_parse("main")]).await;
    let wrong = with(
        Credentials::Basic {
            username: "bot".into(),
            password: "wrong-pw".into(),
        },
        "wrong",
    );
    let err = wrong.fetch_branches().await.unwrap_err();
    assert_eq!(
        (err.reason(), err.retry()),
        ("AuthenticationFailed", Retry::Stalled),
        "{err}"
    );
    assert!(!err.to_string().contains("wrong-pw"), "{err}");
    let anonymous = with(Credentials::Anonymous, "anonymous");
    assert_eq!(
        anonymous.fetch_branches().await.unwrap_err().reason(),
        "AuthenticationFailed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_sent_as_the_password_of_x_access_token() {
    let repo = TestRepo::with_history("demo");
    let http = GitHttp::start(repo.root(), Some(("x-access-token", "ghp_token"))).await;
    let cache = tempfile::tempdir().unwrap();
    let mut config = GitConfig::new(http.url("demo"), cache.path().join("c"));
    // The test servers listen on loopback.
    config.egress = projectsync::egress::EgressPolicy::allow_loopback();
    config.credentials = Credentials::Token("ghp_token".into());
    let branches = GitRemote::new(config)
        .unwrap()
        .fetch_branches()
        .await
        .unwrap();
    assert_eq!(branches.len(), repo.branches().len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_urls_are_refused_unless_the_operator_allows_them() {
    let repo = TestRepo::with_history("demo");
    let cache = tempfile::tempdir().unwrap();
    let url = format!("file://{}", repo.path.display());
    let err = GitRemote::new(GitConfig::new(&url, cache.path().join("a"))).unwrap_err();
    assert_eq!(err.reason(), "FileUrlNotAllowed");
    let err = GitRemote::new(GitConfig::new(
        repo.path.display().to_string(),
        cache.path().join("b"),
    ))
    .unwrap_err();
    assert_eq!(
        err.reason(),
        "FileUrlNotAllowed",
        "a bare path is a local URL too"
    );
    let mut config = GitConfig::new(&url, cache.path().join("c"));
    // The test servers listen on loopback.
    config.egress = projectsync::egress::EgressPolicy::allow_loopback();
    config.allow_file_urls = true;
    let source = GitRemote::new(config).unwrap();
    assert_source_matches_git(
        &source,
        &repo,
        &[repo.rev_parse("main"), repo.rev_parse("feature/x")],
    )
    .await;
}

/// A server that advertises a flood of branches: 200,000 heads (about 12
/// MiB of listing, over the operator's 8 MiB) written straight into
/// `packed-refs`. The lookup reads no more than the limit, stops git, and
/// stalls with TooManyBranches; the branch listing fails the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_branches_is_cut_at_the_listing_limit_and_stalls() {
    let repo = TestRepo::with_history("demo");
    let head = repo.rev_parse("main");
    let mut packed = String::from("# pack-refs with: peeled fully-peeled sorted \n");
    let mut names: Vec<String> = (0..200_000)
        .map(|i| format!("refs/heads/flood/b{i:06}"))
        .collect();
    names.push("refs/heads/main".into());
    names.sort();
    for name in &names {
        packed.push_str(&format!("{head} {name}\n"));
    }
    std::fs::write(repo.git_dir().join("packed-refs"), packed).unwrap();
    let _ = std::fs::remove_file(repo.git_dir().join("refs/heads/main"));
    let daemon = GitDaemon::start(repo.root());
    let cache = tempfile::tempdir().unwrap();
    let source = source_for(&daemon.url("demo"), &cache);
    let error = source.fetch_branch_head("main", None).await.unwrap_err();
    assert_eq!(
        (error.reason(), error.retry()),
        ("TooManyBranches", Retry::Stalled),
        "{error}"
    );
    assert!(error.to_string().contains("8388608 bytes"), "{error}");
    assert!(source.take_branches_seen().is_none());
    let error = source.fetch_branches().await.unwrap_err();
    assert_eq!(error.reason(), "TooManyBranches");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_branches_repositories_and_commits_and_empty_repositories_have_their_own_reasons() {
    let repo = TestRepo::with_history("demo");
    let empty = TestRepo::new("empty");
    let daemon = GitDaemon::start(repo.root());
    let empty_daemon = GitDaemon::start(empty.root());
    let cache = tempfile::tempdir().unwrap();
    let source = source_for(&daemon.url("demo"), &cache);
    let reason = |e: projectsync::source::SourceError| (e.reason(), e.retry());
    assert_eq!(
        reason(source.fetch_branch_head("nope", None).await.unwrap_err()),
        ("BranchNotFound", Retry::Stalled)
    );
    assert_eq!(
        reason(
            source
                .fetch_branch_head("--upload-pack=x", None)
                .await
                .unwrap_err()
        ),
        ("InvalidBranchName", Retry::Stalled)
    );
    let missing = "0123456789abcdef0123456789abcdef01234567";
    assert_eq!(
        reason(source.fetch_tree(missing, None).await.unwrap_err()),
        ("CommitNotFound", Retry::Stalled)
    );
    let cache2 = tempfile::tempdir().unwrap();
    let absent = source_for(&daemon.url("absent"), &cache2);
    assert_eq!(
        reason(absent.fetch_branches().await.unwrap_err()),
        ("RepositoryNotFound", Retry::Stalled)
    );
    let cache3 = tempfile::tempdir().unwrap();
    let empty_source = source_for(&empty_daemon.url("empty"), &cache3);
    assert_eq!(empty_source.fetch_branches().await.unwrap(), vec![]);
    assert_eq!(
        reason(
            empty_source
                .fetch_branch_head("main", None)
                .await
                .unwrap_err()
        ),
        ("EmptyRepository", Retry::Stalled)
    );
}

/// A connector that records the address git gave it, then carries the
/// connection with the operator's own `git-connect`.
fn recording_connector(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let log = dir.join("connections");
    let script = dir.join("connector");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nprintf '%s %s\\n' \"$2\" \"$3\" >> '{}'\nexec '{}' \"$@\"\n",
            log.display(),
            support::projectsync_binary().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_daemon_connections_are_carried_by_the_operators_connector() {
    let repo = TestRepo::with_history("demo");
    let daemon = GitDaemon::start(repo.root());
    let cache = tempfile::tempdir().unwrap();
    let tools = tempfile::tempdir().unwrap();
    let (connector, log) = recording_connector(tools.path());
    let mut config = GitConfig::new(daemon.url("demo"), cache.path().join("cache"));
    config.egress = projectsync::egress::EgressPolicy::allow_loopback();
    config.timeout = Duration::from_secs(60);
    config.connector = Some(connector);
    let source = GitRemote::new(config).expect("git source");
    assert_source_matches_git(&source, &repo, &repo.commits).await;
    // Every request was one connection of the connector, to the address
    // the egress policy checked.
    let port = daemon
        .url("demo")
        .rsplit_once(':')
        .unwrap()
        .1
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let connections: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        connections.len() as u64,
        source.stats().total(),
        "{connections:?}"
    );
    assert!(
        connections
            .iter()
            .all(|c| *c == format!("127.0.0.1 {port}")),
        "{connections:?}"
    );
    // A refused connection is reported by the connector and read as a
    // transient failure, as git's own would be.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (connector, _) = recording_connector(tools.path());
    let mut config = GitConfig::new(
        format!("git://127.0.0.1:{closed}/demo"),
        cache.path().join("closed"),
    );
    config.egress = projectsync::egress::EgressPolicy::allow_loopback();
    config.retry = RetryPolicy {
        attempts: 1,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(10),
    };
    config.connector = Some(connector);
    let err = GitRemote::new(config)
        .unwrap()
        .fetch_branches()
        .await
        .unwrap_err();
    assert_eq!(
        (err.reason(), err.retry()),
        ("RemoteUnreachable", Retry::Transient),
        "{err}"
    );
    assert!(err.to_string().contains("Connection refused"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_remote_is_a_transient_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cache = tempfile::tempdir().unwrap();
    let source = source_for(&format!("git://127.0.0.1:{port}/demo"), &cache);
    let err = source.fetch_branches().await.unwrap_err();
    assert_eq!(
        (err.reason(), err.retry()),
        ("RemoteUnreachable", Retry::Transient),
        "{err}"
    );
    assert_eq!(source.stats().status(0), 3, "bounded retries");
    let source = source_for(&format!("http://127.0.0.1:{port}/demo"), &cache);
    assert_eq!(
        source.fetch_branches().await.unwrap_err().retry(),
        Retry::Transient
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_over_the_limit_non_blobs_and_uncached_objects_are_refused() {
    let mut repo = TestRepo::new("demo");
    repo.write("big.bin", vec![b'x'; 5000]);
    let head = repo.commit("big");
    let daemon = GitDaemon::start(repo.root());
    let cache = tempfile::tempdir().unwrap();
    let source = source_for(&daemon.url("demo"), &cache);
    let tree = source.fetch_tree(&head, None).await.unwrap();
    let big = &tree.entries[0];
    let err = source.fetch_blob(&big.blob_sha, 4999).await.unwrap_err();
    assert_eq!(
        (err.reason(), err.retry()),
        ("BlobTooLarge", Retry::Stalled)
    );
    assert_eq!(
        source.fetch_blob(&big.blob_sha, 5000).await.unwrap().len(),
        5000,
        "the process survives a refusal"
    );
    assert_eq!(
        source.fetch_blob(&head, 10_000).await.unwrap_err().reason(),
        "NotABlob"
    );
    let err = source
        .fetch_blob("0123456789abcdef0123456789abcdef01234567", 10)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "ObjectNotFound");
    assert_eq!(
        source.fetch_blob("HEAD", 10).await.unwrap_err().reason(),
        "InvalidObjectId"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_output_and_description_of_a_git_source_never_show_credentials() {
    let cache = tempfile::tempdir().unwrap();
    let mut config = GitConfig::new("https://bot:urlpass@example.invalid/r.git", cache.path());
    // The test servers listen on loopback.
    config.egress = projectsync::egress::EgressPolicy::allow_loopback();
    config.credentials = Credentials::Token("ghp_secret".into());
    let source = GitRemote::new(config).unwrap();
    let shown = format!("{source:?} {}", source.describe());
    assert!(
        !shown.contains("ghp_secret") && !shown.contains("urlpass"),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_written_into_an_https_url_are_moved_out_of_the_command_line() {
    let repo = TestRepo::with_history("demo");
    let http = GitHttp::start(repo.root(), Some(("bot", "urlpass"))).await;
    let cache = tempfile::tempdir().unwrap();
    let url = http.url("demo").replace("http://", "http://bot:urlpass@");
    let mut config = GitConfig::new(url, cache.path());
    config.egress = projectsync::egress::EgressPolicy::allow_loopback();
    let source = GitRemote::new(config).unwrap();
    assert_eq!(
        source.fetch_branches().await.unwrap().len(),
        repo.branches().len()
    );
}
