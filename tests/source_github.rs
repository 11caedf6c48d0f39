//! The GitHub source against the stand-in serving real git repositories:
//! parity with git at every commit, pagination, truncated trees (with and
//! without a previous tree), conditional head polls, compare, and every
//! error mode.

use std::time::Duration;

use projectsync::api::conditions::reason;
use projectsync::source::github::{GitHubConfig, GitHubRepo};
use projectsync::source::{
    ChangeKind, ChangeSet, Changes, Credentials, EntryKind, HeadCache, HeadLookup, Retry,
    RetryPolicy, Source, TreeEntry,
};
use support::github::{Fault, GithubStandIn};
use support::repo::{TestRepo, assert_source_matches_git};

fn config(standin: &GithubStandIn, repo: &str) -> GitHubConfig {
    let mut config = GitHubConfig::new("acme", repo);
    // The test servers listen on loopback.
    config.egress = projectsync::egress::EgressPolicy::allow_loopback();
    config.api_url = standin.api_url();
    config.retry = RetryPolicy {
        attempts: 3,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
    };
    config.request_timeout = Duration::from_secs(20);
    config
}

fn source(standin: &GithubStandIn) -> GitHubRepo {
    GitHubRepo::new(config(standin, "demo")).expect("source")
}

async fn serve(repo: &TestRepo) -> GithubStandIn {
    GithubStandIn::start("acme", "demo", repo.git_dir()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_source_matches_git_at_every_commit_of_a_repository_with_history() {
    let repo = TestRepo::with_history("demo");
    let standin = serve(&repo).await;
    // Every commit, including the one a force push abandoned: GitHub still
    // serves it by id.
    assert_source_matches_git(&source(&standin), &repo, &repo.commits).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_trees_are_walked_and_still_match_git_at_every_commit() {
    let repo = TestRepo::with_history("demo");
    let standin = serve(&repo).await;
    standin.set_tree_entry_limit(2);
    let source = source(&standin);
    assert_source_matches_git(&source, &repo, &repo.commits).await;
    let tree = source.fetch_tree(&repo.commits[0], None).await.unwrap();
    assert!(tree.walked, "a truncated answer must be walked");
}

fn wide_repo() -> TestRepo {
    let mut repo = TestRepo::new("demo");
    for dir in ["a", "b", "c"] {
        for sub in ["x", "y"] {
            for i in 0..4 {
                repo.write(&format!("{dir}/{sub}/f{i}.txt"), format!("{dir}{sub}{i}\n"));
            }
        }
    }
    repo.write("top.txt", "top\n");
    repo.commit("wide");
    repo
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_walk_with_the_previous_tree_descends_only_into_changed_subtrees() {
    let mut repo = wide_repo();
    let first = repo.head();
    repo.write("c/x/f1.txt", "changed\n");
    let second = repo.commit("one change");
    let standin = serve(&repo).await;
    standin.set_tree_entry_limit(5);
    let source = source(&standin);

    let previous = source.fetch_tree(&first, None).await.unwrap();
    assert!(previous.walked);
    let before = source.stats();
    let full = source.fetch_tree(&second, None).await.unwrap();
    let without_previous = source.stats().since(&before).total();
    let before = source.stats();
    let incremental = source.fetch_tree(&second, Some(&previous)).await.unwrap();
    let with_previous = source.stats().since(&before).total();

    assert_eq!(incremental, full, "same tree either way");
    // root, c and c/x: one flat listing each; a, b and c/y are copied.
    assert_eq!(with_previous, 3, "requests with the previous tree");
    assert!(
        with_previous < without_previous,
        "{with_previous} < {without_previous}"
    );
    let listed: Vec<String> = standin
        .requests()
        .iter()
        .rev()
        .take(3)
        .map(|r| r.path.clone())
        .collect();
    assert!(
        listed.iter().all(|p| p.contains("/git/trees/")),
        "{listed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_tree_with_the_previous_tree_costs_one_request() {
    let mut repo = wide_repo();
    let first = repo.head();
    let second = repo.commit("empty commit, same tree");
    let standin = serve(&repo).await;
    standin.set_tree_entry_limit(5);
    let source = source(&standin);
    let previous = source.fetch_tree(&first, None).await.unwrap();
    let before = source.stats();
    let tree = source.fetch_tree(&second, Some(&previous)).await.unwrap();
    assert_eq!(source.stats().since(&before).total(), 1);
    assert_eq!(tree.entries, previous.entries);
    assert_eq!(tree.commit_sha, second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn branches_are_read_across_pages_by_following_link_headers() {
    let mut repo = TestRepo::new("demo");
    repo.write("a", "a");
    let head = repo.commit("one");
    let refs: String = (0..250)
        .map(|i| format!("create refs/heads/topic-{i:03} {head}\n"))
        .collect();
    repo.git_bytes(&["update-ref", "--stdin"], Some(refs.as_bytes()));
    let standin = serve(&repo).await;
    let branches = source(&standin).fetch_branches().await.unwrap();
    assert_eq!(branches.len(), 251);
    let pages: Vec<String> = standin.requests().iter().map(|r| r.query.clone()).collect();
    assert_eq!(
        pages,
        ["per_page=100", "per_page=100&page=2", "per_page=100&page=3"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_branches_than_the_page_bound_is_an_error_not_a_silent_prefix() {
    let mut repo = TestRepo::new("demo");
    repo.write("a", "a");
    let head = repo.commit("one");
    let refs: String = (0..150)
        .map(|i| format!("create refs/heads/topic-{i:03} {head}\n"))
        .collect();
    repo.git_bytes(&["update-ref", "--stdin"], Some(refs.as_bytes()));
    let standin = serve(&repo).await;
    let mut config = config(&standin, "demo");
    config.max_branch_pages = 1;
    let err = GitHubRepo::new(config)
        .unwrap()
        .fetch_branches()
        .await
        .unwrap_err();
    assert_eq!(
        (err.reason(), err.retry()),
        ("TooManyBranches", Retry::Stalled)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_an_unchanged_branch_is_one_304_that_costs_no_rate_limit() {
    let mut repo = TestRepo::new("demo");
    repo.write("a", "a");
    let head = repo.commit("one");
    let standin = serve(&repo).await;
    let source = source(&standin);
    let HeadLookup::Changed { sha, etag } = source.fetch_branch_head("main", None).await.unwrap()
    else {
        panic!("first lookup reports the head");
    };
    assert_eq!(sha, head);
    let cache = HeadCache { sha, etag };
    let remaining = standin.rate_limit_remaining();
    standin.clear_log();
    assert_eq!(
        source
            .fetch_branch_head("main", Some(&cache))
            .await
            .unwrap(),
        HeadLookup::Unchanged
    );
    let log = standin.requests();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].status, 304);
    assert_eq!(log[0].if_none_match.as_deref(), cache.etag.as_deref());
    assert_eq!(standin.rate_limit_remaining(), remaining, "a 304 is free");
    assert_eq!(source.stats().status(304), 1);
    assert_eq!(
        source.stats().rate_limit.map(|r| r.remaining),
        Some(remaining)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_branch_returns_the_new_commit_and_a_new_etag() {
    let mut repo = TestRepo::new("demo");
    repo.write("a", "a");
    repo.commit("one");
    let standin = serve(&repo).await;
    let source = source(&standin);
    let HeadLookup::Changed { sha, etag } = source.fetch_branch_head("main", None).await.unwrap()
    else {
        panic!()
    };
    repo.write("a", "b");
    let moved = repo.commit("two");
    let cache = HeadCache {
        sha,
        etag: etag.clone(),
    };
    let HeadLookup::Changed {
        sha: new,
        etag: new_etag,
    } = source
        .fetch_branch_head("main", Some(&cache))
        .await
        .unwrap()
    else {
        panic!("branch moved")
    };
    assert_eq!(new, moved);
    assert_ne!(new_etag, etag);
}

/// The entries a full tree read gives for `paths`, from a fresh source.
async fn full_tree_entries(
    standin: &GithubStandIn,
    commit: &str,
    paths: &[&str],
) -> Vec<TreeEntry> {
    let tree = source(standin).fetch_tree(commit, None).await.unwrap();
    paths
        .iter()
        .map(|p| {
            tree.entries
                .iter()
                .find(|e| e.path == *p)
                .unwrap_or_else(|| panic!("{p} in the tree"))
                .clone()
        })
        .collect()
}

fn upserts(set: &ChangeSet) -> Vec<TreeEntry> {
    set.changes
        .iter()
        .filter_map(|c| match &c.kind {
            ChangeKind::Upsert(entry) => Some(entry.clone()),
            ChangeKind::Removed => None,
        })
        .collect()
}

fn complete(changes: Changes) -> ChangeSet {
    match changes {
        Changes::Complete(set) => set,
        Changes::Unavailable { reason } => panic!("unavailable: {reason}"),
    }
}

/// (compare requests, non-recursive tree requests, recursive tree requests).
fn compare_and_tree_requests(standin: &GithubStandIn) -> (usize, usize, usize) {
    let log = standin.requests();
    let trees = |recursive: bool| {
        log.iter()
            .filter(|r| {
                r.path.contains("/git/trees/") && r.query.contains("recursive") == recursive
            })
            .count()
    };
    let compares = log.iter().filter(|r| r.path.contains("/compare/")).count();
    (compares, trees(false), trees(true))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_file_change_costs_one_compare_and_the_directories_on_its_paths() {
    let mut repo = wide_repo();
    let base = repo.head();
    repo.write("c/x/f1.txt", "changed\n")
        .write_executable("a/y/run.sh", "#!/bin/sh\n");
    let head = repo.commit("two files");
    let standin = serve(&repo).await;
    let source = source(&standin);

    standin.clear_log();
    let set = complete(source.fetch_changes(&base, &head).await.unwrap());
    // The root, a, a/y, c, c/x: never a recursive listing, never b.
    assert_eq!(compare_and_tree_requests(&standin), (1, 5, 0));
    assert_eq!(standin.request_count(), 6);
    assert!(set.rejected.is_empty(), "{:?}", set.rejected);
    let expected = full_tree_entries(&standin, &head, &["a/y/run.sh", "c/x/f1.txt"]).await;
    assert_eq!(upserts(&set), expected);
    assert_eq!(expected[0].kind, EntryKind::Executable);
    assert_eq!(expected[1].size, Some(8));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_lists_added_modified_removed_and_renamed_paths_with_their_tree_entries() {
    let mut repo = TestRepo::new("demo");
    repo.write("keep.txt", "keep\n")
        .write("edit.txt", "v1\n")
        .write("gone.txt", "bye\n")
        .write("old/name.txt", "same content\n");
    let base = repo.commit("base");
    repo.write("edit.txt", "v2\n")
        .write("new.txt", "hello\n")
        .symlink("link", "new.txt")
        .remove("gone.txt")
        .rename("old/name.txt", "new/name.txt")
        .add_submodule_entry("vendor/lib", &base);
    let head = repo.commit("head");
    let standin = serve(&repo).await;
    let set = complete(source(&standin).fetch_changes(&base, &head).await.unwrap());
    let summary: Vec<(&str, bool)> = set
        .changes
        .iter()
        .map(|c| (c.path.as_str(), matches!(c.kind, ChangeKind::Upsert(_))))
        .collect();
    assert_eq!(
        summary,
        [
            ("edit.txt", true),
            ("gone.txt", false),
            ("link", true),
            ("new.txt", true),
            ("new/name.txt", true),
            ("old/name.txt", false),
            ("vendor/lib", true),
        ]
    );
    let expected = full_tree_entries(
        &standin,
        &head,
        &["edit.txt", "link", "new.txt", "new/name.txt", "vendor/lib"],
    )
    .await;
    assert_eq!(upserts(&set), expected);
    let kinds: Vec<EntryKind> = expected.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EntryKind::File,
            EntryKind::Symlink,
            EntryKind::File,
            EntryKind::File,
            EntryKind::Submodule
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identical_comparison_is_an_empty_change_set_without_tree_requests() {
    let mut repo = TestRepo::new("demo");
    repo.write("a", "1");
    let head = repo.commit("one");
    let standin = serve(&repo).await;
    let set = complete(source(&standin).fetch_changes(&head, &head).await.unwrap());
    assert_eq!(set, ChangeSet::default());
    assert_eq!(compare_and_tree_requests(&standin), (1, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_changed_paths_are_rejected_as_a_tree_read_rejects_them() {
    let mut repo = TestRepo::new("demo");
    repo.write("ok.txt", "ok\n");
    let base = repo.commit("base");
    // A tree with a `.git` directory cannot be committed from a worktree:
    // write it raw, beside a safe change.
    let blob = repo.hash_blob(b"[core]\n");
    let ok = repo.hash_blob(b"ok v2\n");
    let inner = format!("100644 blob {blob}\tconfig\0");
    let dot_git = String::from_utf8(repo.git_bytes(&["mktree", "-z"], Some(inner.as_bytes())))
        .unwrap()
        .trim()
        .to_string();
    let lines = format!("040000 tree {dot_git}\t.git\0100644 blob {ok}\tok.txt\0");
    let head = repo.commit_raw_tree("main", lines.as_bytes(), "hostile");
    let standin = serve(&repo).await;
    let set = complete(source(&standin).fetch_changes(&base, &head).await.unwrap());
    let tree = source(&standin).fetch_tree(&head, None).await.unwrap();
    assert_eq!(set.rejected, tree.rejected);
    assert_eq!(set.rejected.len(), 1, "{:?}", set.rejected);
    assert_eq!(upserts(&set), tree.entries);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_with_300_or_more_files_is_unavailable_so_the_caller_diffs_trees() {
    let mut repo = TestRepo::new("demo");
    repo.write("seed", "x");
    let base = repo.commit("base");
    for i in 0..301 {
        repo.write(&format!("many/{i}.txt"), format!("{i}\n"));
    }
    let head = repo.commit("301 files");
    let standin = serve(&repo).await;
    assert_eq!(
        source(&standin).fetch_changes(&base, &head).await.unwrap(),
        Changes::Unavailable {
            reason: reason::CHANGES_INCOMPLETE
        }
    );
    assert_eq!(compare_and_tree_requests(&standin), (1, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_after_a_force_push_is_unavailable_because_it_lists_changes_since_the_merge_base() {
    let mut repo = TestRepo::new("demo");
    repo.write("a", "1");
    let root = repo.commit("root");
    repo.write("a", "2");
    let abandoned = repo.commit("abandoned");
    repo.force_branch("main", &root);
    repo.write("b", "3");
    let rewritten = repo.commit("rewritten");
    // Unrelated history: a root commit of its own.
    let tree = repo.rev_parse("HEAD^{tree}");
    let unrelated = repo.git(&["commit-tree", &tree, "-m", "unrelated"]);
    repo.git(&["update-ref", "refs/heads/other", &unrelated]);
    let standin = serve(&repo).await;
    let source = source(&standin);
    let reason =
        async |base: &str, head: &str| match source.fetch_changes(base, head).await.unwrap() {
            Changes::Unavailable { reason } => reason,
            Changes::Complete(set) => panic!("complete: {set:?}"),
        };
    assert_eq!(
        reason(&abandoned, &rewritten).await,
        reason::UNRELATED_HISTORY
    );
    assert_eq!(
        reason(&rewritten, &unrelated).await,
        reason::UNRELATED_HISTORY
    );
    assert_eq!(
        reason("0123456789abcdef0123456789abcdef01234567", &rewritten).await,
        reason::UNRELATED_HISTORY
    );
    assert_eq!(compare_and_tree_requests(&standin), (3, 0, 0));
}

async fn error_of(standin: &GithubStandIn, fault: Fault) -> projectsync::source::SourceError {
    standin.set_fault(fault, None);
    let err = source(standin)
        .fetch_branch_head("main", None)
        .await
        .unwrap_err();
    standin.clear_fault();
    err
}

fn one_commit_repo() -> TestRepo {
    let mut repo = TestRepo::new("demo");
    repo.write("a", "a");
    repo.commit("one");
    repo
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_rate_limit_stops_at_once_and_waits_until_the_reset_time() {
    let repo = one_commit_repo();
    let standin = serve(&repo).await;
    let err = error_of(&standin, Fault::PrimaryRateLimit).await;
    assert_eq!(err.reason(), "RateLimited");
    let Retry::WaitUntil(until) = err.retry() else {
        panic!("{err}")
    };
    assert!(
        until > chrono::Utc::now() + chrono::Duration::minutes(50),
        "the reset header is an hour away"
    );
    assert_eq!(standin.request_count(), 1, "no retry loop on a rate limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secondary_rate_limit_waits_for_retry_after_on_403_and_429() {
    let repo = one_commit_repo();
    let standin = serve(&repo).await;
    let err = error_of(
        &standin,
        Fault::SecondaryRateLimit {
            status: 403,
            retry_after: Some(120),
        },
    )
    .await;
    assert_eq!(err.reason(), "SecondaryRateLimited");
    let Retry::WaitUntil(until) = err.retry() else {
        panic!("{err}")
    };
    let wait = until - chrono::Utc::now();
    assert!(
        wait > chrono::Duration::seconds(100) && wait <= chrono::Duration::seconds(120),
        "{wait}"
    );
    let err = error_of(
        &standin,
        Fault::SecondaryRateLimit {
            status: 429,
            retry_after: None,
        },
    )
    .await;
    assert_eq!(err.reason(), "SecondaryRateLimited");
    assert!(matches!(err.retry(), Retry::WaitUntil(_)));
    assert_eq!(standin.request_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_is_sent_while_a_rate_limit_is_in_force() {
    let repo = one_commit_repo();
    let standin = serve(&repo).await;
    let source = source(&standin);
    standin.set_fault(
        Fault::SecondaryRateLimit {
            status: 403,
            retry_after: Some(2),
        },
        Some(1),
    );
    let err = source.fetch_branch_head("main", None).await.unwrap_err();
    let Retry::WaitUntil(until) = err.retry() else {
        panic!("{err}")
    };
    // Asked again (e.g. by blob fetches already queued): refused without a request.
    let again = source.fetch_branch_head("main", None).await.unwrap_err();
    assert_eq!(again.reason(), "SecondaryRateLimited");
    assert_eq!(standin.request_count(), 1, "nothing sent while limited");
    // After the reset the same source asks again.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while source.fetch_branch_head("main", None).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "not answered after the reset"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(chrono::Utc::now() >= until, "asked before the reset");
    assert_eq!(standin.request_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_saml_and_missing_repositories_stall_with_their_own_reasons() {
    let repo = one_commit_repo();
    let standin = serve(&repo).await;
    for (fault, reason) in [
        (Fault::BadCredentials, "BadCredentials"),
        (Fault::SamlRequired, "SamlSsoRequired"),
        (Fault::NotFound, "RepositoryNotFound"),
        (Fault::EmptyRepository, "EmptyRepository"),
    ] {
        let err = error_of(&standin, fault.clone()).await;
        assert_eq!(
            (err.reason(), err.retry()),
            (reason, Retry::Stalled),
            "{fault:?}: {err}"
        );
    }
    let saml = error_of(&standin, Fault::SamlRequired).await.to_string();
    assert!(saml.contains("sso?authorization_request="), "{saml}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_sent_and_a_wrong_or_missing_one_is_reported() {
    let repo = one_commit_repo();
    let standin = serve(&repo).await;
    standin.require_token("ghp_right");
    let with = |token: Option<&str>| {
        let mut config = config(&standin, "demo");
        config.credentials = token
            .map(|t| Credentials::Token(t.into()))
            .unwrap_or_default();
        GitHubRepo::new(config).unwrap()
    };
    assert!(
        with(Some("ghp_right"))
            .fetch_branch_head("main", None)
            .await
            .is_ok()
    );
    assert_eq!(
        standin.requests()[0].authorization.as_deref(),
        Some("Bearer ghp_right")
    );
    let err = with(Some("ghp_wrong"))
        .fetch_branch_head("main", None)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "BadCredentials");
    // Anonymous: a private repository looks like it does not exist.
    let err = with(None)
        .fetch_branch_head("main", None)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "RepositoryNotFound");
    assert!(!err.to_string().contains("ghp_"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_branch_and_a_missing_repository_are_told_apart() {
    let repo = one_commit_repo();
    let standin = serve(&repo).await;
    let err = source(&standin)
        .fetch_branch_head("nope", None)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "BranchNotFound");
    let other = GitHubRepo::new(config(&standin, "other")).unwrap();
    let err = other.fetch_branch_head("main", None).await.unwrap_err();
    assert_eq!(err.reason(), "RepositoryNotFound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_repository_is_reported_as_such() {
    let repo = TestRepo::new("demo");
    let standin = serve(&repo).await;
    let source = source(&standin);
    assert_eq!(source.fetch_branches().await.unwrap(), vec![]);
    let err = source.fetch_branch_head("main", None).await.unwrap_err();
    assert_eq!(
        (err.reason(), err.retry()),
        ("EmptyRepository", Retry::Stalled)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_with_backoff_and_then_succeed() {
    let repo = one_commit_repo();
    let standin = serve(&repo).await;
    standin.set_fault(Fault::ServerError(502), Some(2));
    let head = source(&standin)
        .fetch_branch_head("main", None)
        .await
        .unwrap();
    assert_eq!(head.changed_sha(), Some(repo.head().as_str()));
    let statuses: Vec<u16> = standin.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [502, 502, 200]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_server_errors_give_up_after_the_bounded_attempts_as_transient() {
    let repo = one_commit_repo();
    let standin = serve(&repo).await;
    let err = error_of(&standin, Fault::ServerError(503)).await;
    assert_eq!(
        (err.reason(), err.retry()),
        ("ProviderUnavailable", Retry::Transient)
    );
    assert_eq!(standin.request_count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_is_a_transient_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = GitHubConfig::new("acme", "demo");
    // The test servers listen on loopback.
    config.egress = projectsync::egress::EgressPolicy::allow_loopback();
    config.api_url = format!("http://127.0.0.1:{port}");
    config.retry = RetryPolicy {
        attempts: 2,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(10),
    };
    let source = GitHubRepo::new(config).unwrap();
    let err = source.fetch_branches().await.unwrap_err();
    assert_eq!(
        (err.reason(), err.retry()),
        ("ProviderUnreachable", Retry::Transient),
        "{err}"
    );
    assert_eq!(source.stats().status(0), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_blob_content_is_detected_by_base64_and_by_object_id() {
    let repo = one_commit_repo();
    let sha = repo.rev_parse("HEAD:a");
    let standin = serve(&repo).await;
    let source = source(&standin);
    for fault in [Fault::CorruptBlobBase64, Fault::WrongBlobContent] {
        standin.set_fault(fault.clone(), None);
        let err = source.fetch_blob(&sha, 1024).await.unwrap_err();
        assert_eq!(err.reason(), "BlobCorrupt", "{fault:?}: {err}");
    }
    standin.clear_fault();
    assert_eq!(source.fetch_blob(&sha, 1024).await.unwrap().as_ref(), b"a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_over_the_size_limit_is_refused_with_its_size() {
    let mut repo = TestRepo::new("demo");
    repo.write("big.bin", vec![b'x'; 10_000])
        .write("huge.bin", vec![b'y'; 200_000]);
    repo.commit("big");
    let standin = serve(&repo).await;
    let source = source(&standin);
    let err = source
        .fetch_blob(&repo.rev_parse("HEAD:big.bin"), 1000)
        .await
        .unwrap_err();
    assert_eq!(
        (err.reason(), err.retry()),
        ("BlobTooLarge", Retry::Stalled)
    );
    assert!(err.to_string().contains("10000 bytes"), "{err}");
    // Far over the limit: refused while reading, before decoding.
    let err = source
        .fetch_blob(&repo.rev_parse("HEAD:huge.bin"), 1000)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "BlobTooLarge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_ids_and_names_that_could_change_the_url_are_refused_without_a_request() {
    let repo = one_commit_repo();
    let standin = serve(&repo).await;
    let source = source(&standin);
    for bad in ["../../../rate_limit", "main", "HEAD"] {
        assert_eq!(
            source.fetch_blob(bad, 10).await.unwrap_err().reason(),
            "InvalidObjectId"
        );
        assert_eq!(
            source.fetch_tree(bad, None).await.unwrap_err().reason(),
            "InvalidObjectId"
        );
    }
    assert_eq!(standin.request_count(), 0);
    let mut config = config(&standin, "demo/../../x");
    config.owner = "acme".into();
    assert_eq!(
        GitHubRepo::new(config).unwrap_err().reason(),
        "InvalidSourceConfig"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_counted_by_endpoint_and_status() {
    let repo = one_commit_repo();
    let standin = serve(&repo).await;
    let source = source(&standin);
    source.fetch_branches().await.unwrap();
    source.fetch_tree(&repo.head(), None).await.unwrap();
    source
        .fetch_blob(&repo.rev_parse("HEAD:a"), 10)
        .await
        .unwrap();
    let stats = source.stats();
    assert_eq!(stats.requests.get(&("branches", 200)), Some(&1));
    assert_eq!(stats.requests.get(&("tree", 200)), Some(&1));
    assert_eq!(stats.requests.get(&("blob", 200)), Some(&1));
    assert_eq!(stats.total() as usize, standin.request_count());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_answer_times_out_is_retried_and_gives_up_as_transient() {
    let repo = one_commit_repo();
    let standin = serve(&repo).await;
    let mut config = config(&standin, "demo");
    config.request_timeout = Duration::from_millis(300);
    let source = GitHubRepo::new(config).unwrap();
    standin.set_fault(Fault::Delay(Duration::from_secs(3)), Some(1));
    let head = source.fetch_branch_head("main", None).await.unwrap();
    assert_eq!(
        head.changed_sha(),
        Some(repo.head().as_str()),
        "the retry after one timeout succeeds"
    );
    standin.set_fault(Fault::Delay(Duration::from_secs(3)), None);
    let err = source.fetch_branch_head("main", None).await.unwrap_err();
    assert_eq!(
        (err.reason(), err.retry()),
        ("ProviderTimeout", Retry::Transient),
        "{err}"
    );
    assert_eq!(source.stats().status(0), 4, "one timeout, then three");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_output_of_a_source_never_shows_credentials() {
    let repo = one_commit_repo();
    let standin = serve(&repo).await;
    for credentials in [
        Credentials::Token("ghp_secret".into()),
        Credentials::Basic {
            username: "bot".into(),
            password: "hunter2".into(),
        },
    ] {
        let mut config = config(&standin, "demo");
        config.credentials = credentials;
        let shown = format!("{:?}", GitHubRepo::new(config).unwrap());
        assert!(
            !shown.contains("ghp_secret") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
