//! Hostile and odd repository content through both sources: unsafe paths,
//! submodules, symlinks, binary, non-UTF-8 and Git LFS pointer blobs, and
//! blobs over the size limit. (NUL and absolute paths cannot occur in a git
//! tree object at all; `source::content` unit tests cover them.)

use std::time::Duration;

use projectsync::source::content::{
    BlobClass, PathIssue, SymlinkTarget, classify_blob, classify_symlink_target,
};
use projectsync::source::git::{GitConfig, GitRemote};
use projectsync::source::github::{GitHubConfig, GitHubRepo};
use projectsync::source::tree::RejectReason;
use projectsync::source::{EntryKind, Source, Tree};
use support::git_server::GitDaemon;
use support::github::GithubStandIn;
use support::repo::TestRepo;

/// Both sources over the same repository.
struct Both {
    github: GitHubRepo,
    git: GitRemote,
    standin: GithubStandIn,
    _daemon: GitDaemon,
    _cache: tempfile::TempDir,
}

impl Both {
    async fn new(repo: &TestRepo) -> Self {
        let standin = GithubStandIn::start("acme", "demo", repo.git_dir()).await;
        let mut config = GitHubConfig::new("acme", "demo");
        // The test servers listen on loopback.
        config.egress = projectsync::egress::EgressPolicy::allow_loopback();
        config.api_url = standin.api_url();
        let github = GitHubRepo::new(config).unwrap();
        let daemon = GitDaemon::start(repo.root());
        let cache = tempfile::tempdir().unwrap();
        let mut config = GitConfig::new(daemon.url("demo"), cache.path().join("c"));
        // The test servers listen on loopback.
        config.egress = projectsync::egress::EgressPolicy::allow_loopback();
        config.timeout = Duration::from_secs(60);
        let git = GitRemote::new(config).unwrap();
        Both {
            github,
            git,
            standin,
            _daemon: daemon,
            _cache: cache,
        }
    }

    fn sources(&self) -> [&dyn Source; 2] {
        [&self.github, &self.git]
    }
}

fn entry<'a>(tree: &'a Tree, path: &str) -> &'a projectsync::source::TreeEntry {
    tree.entries
        .iter()
        .find(|e| e.path == path)
        .unwrap_or_else(|| panic!("no entry {path} in {:?}", tree.entries))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tree_entries_with_dot_dot_or_dot_git_are_rejected_with_a_reason_not_dropped() {
    let mut repo = TestRepo::new("demo");
    repo.write("README", "hi\n");
    repo.commit("base");
    let blob = repo.hash_blob(b"payload\n");
    let inner = String::from_utf8(repo.git_bytes(
        &["mktree"],
        Some(format!("100644 blob {blob}\tpayload\n").as_bytes()),
    ))
    .unwrap();
    let t = inner.trim();
    // `git mktree -z` input: "mode type id\tname\0" per entry.
    let lines = format!(
        "040000 tree {t}\t..\0040000 tree {t}\t.git\0100644 blob {blob}\t..\\evil\0100644 blob {blob}\tnormal\0"
    );
    let hostile = repo.commit_raw_tree("main", lines.as_bytes(), "hostile");
    let both = Both::new(&repo).await;
    for source in both.sources() {
        let tree = source.fetch_tree(&hostile, None).await.unwrap();
        let paths: Vec<&str> = tree.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["normal"], "{}", source.describe());
        let rejected: Vec<(&str, RejectReason)> = tree
            .rejected
            .iter()
            .map(|r| (r.path.as_str(), r.issue))
            .collect();
        assert_eq!(
            rejected,
            [
                (
                    "../payload",
                    RejectReason::UnsafePath(PathIssue::ParentComponent)
                ),
                (
                    "..\\evil",
                    RejectReason::UnsafePath(PathIssue::ParentComponent)
                ),
                (
                    ".git/payload",
                    RejectReason::UnsafePath(PathIssue::GitDirectory)
                ),
            ],
            "{}",
            source.describe()
        );
    }
    // Walking a truncated tree: the unsafe directories are rejected as
    // directories and never descended into.
    both.standin.set_tree_entry_limit(1);
    let tree = both.github.fetch_tree(&hostile, None).await.unwrap();
    let rejected: Vec<&str> = tree.rejected.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(rejected, ["..", "..\\evil", ".git"]);
    assert!(
        !both
            .standin
            .requests()
            .iter()
            .any(|r| r.path.ends_with(inner.trim())),
        "unsafe directories are not listed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submodules_are_recorded_with_their_pinned_commit_and_never_fetched() {
    let mut repo = TestRepo::new("demo");
    repo.write("README", "hi\n");
    let pinned = repo.commit("base");
    repo.add_submodule_entry("vendor/lib", &pinned);
    let head = repo.commit("add a submodule");
    let both = Both::new(&repo).await;
    for source in both.sources() {
        let tree = source.fetch_tree(&head, None).await.unwrap();
        let sub = entry(&tree, "vendor/lib");
        assert_eq!(
            (sub.kind, sub.mode, sub.size, sub.blob_sha.as_str()),
            (EntryKind::Submodule, 0o160000, None, pinned.as_str())
        );
        assert!(!sub.kind.has_blob());
    }
    assert_eq!(both.github.stats().endpoint("blob"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_are_recorded_as_links_whose_content_is_the_target_and_never_followed() {
    let mut repo = TestRepo::new("demo");
    repo.write("README", "hi\n")
        .symlink("docs/readme", "../README")
        .symlink("escape", "../../etc/passwd");
    let head = repo.commit("links");
    let both = Both::new(&repo).await;
    for source in both.sources() {
        let tree = source.fetch_tree(&head, None).await.unwrap();
        let inside = entry(&tree, "docs/readme");
        assert_eq!((inside.kind, inside.mode), (EntryKind::Symlink, 0o120000));
        let target = source.fetch_blob(&inside.blob_sha, 4096).await.unwrap();
        assert_eq!(target.as_ref(), b"../README");
        assert_eq!(
            classify_symlink_target(&inside.path, &target),
            SymlinkTarget::Inside("README".into())
        );
        let escape = entry(&tree, "escape");
        let target = source.fetch_blob(&escape.blob_sha, 4096).await.unwrap();
        assert_eq!(
            classify_symlink_target(&escape.path, &target),
            SymlinkTarget::Outside
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_latin1_and_git_lfs_pointer_blobs_are_told_apart() {
    let lfs = "version https://git-lfs.github.com/spec/v1\n\
        oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n";
    let mut repo = TestRepo::new("demo");
    repo.write("logo.png", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".as_slice())
        .write("latin1.txt", b"caf\xe9\n".as_slice())
        .write("model.bin", lfs)
        .write("text.md", "# ok\n");
    let head = repo.commit("odd blobs");
    let both = Both::new(&repo).await;
    for source in both.sources() {
        let tree = source.fetch_tree(&head, None).await.unwrap();
        let class = |path: &str| {
            let sha = entry(&tree, path).blob_sha.clone();
            async move { classify_blob(&source.fetch_blob(&sha, 1 << 20).await.unwrap()) }
        };
        assert_eq!(class("logo.png").await, BlobClass::Binary);
        assert_eq!(class("latin1.txt").await, BlobClass::NotUtf8);
        assert!(matches!(class("model.bin").await, BlobClass::LfsPointer(p) if p.size == 12345));
        assert_eq!(class("text.md").await, BlobClass::Text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_over_the_size_limit_are_visible_in_the_tree_and_refused_by_fetch() {
    let mut repo = TestRepo::new("demo");
    repo.write("big.txt", "x".repeat(300_000))
        .write("small.txt", "s");
    let head = repo.commit("sizes");
    let both = Both::new(&repo).await;
    for source in both.sources() {
        let tree = source.fetch_tree(&head, None).await.unwrap();
        let big = entry(&tree, "big.txt");
        assert_eq!(
            big.size,
            Some(300_000),
            "the tree tells the caller to skip it without fetching"
        );
        let err = source.fetch_blob(&big.blob_sha, 100_000).await.unwrap_err();
        assert_eq!(err.reason(), "BlobTooLarge", "{}", source.describe());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_that_is_not_utf8_is_rejected_by_the_git_source() {
    let mut repo = TestRepo::new("demo");
    repo.write("ok.txt", "ok");
    let base = repo.commit("base");
    let blob = repo.hash_blob(b"x");
    let ok = repo.rev_parse("HEAD:ok.txt");
    let mut lines = format!("100644 blob {ok}\tok.txt\0").into_bytes();
    lines.extend(format!("100644 blob {blob}\tbad").as_bytes());
    lines.extend(b"\xff.txt\0");
    let tree = String::from_utf8(repo.git_bytes(&["mktree", "-z"], Some(&lines))).unwrap();
    let commit = repo.git(&["commit-tree", tree.trim(), "-p", &base, "-m", "latin1 name"]);
    repo.git(&["update-ref", "refs/heads/main", &commit]);
    let both = Both::new(&repo).await;
    let tree = both.git.fetch_tree(&commit, None).await.unwrap();
    assert_eq!(tree.entries.len(), 1);
    assert_eq!(tree.rejected.len(), 1);
    assert_eq!(
        tree.rejected[0].issue,
        RejectReason::UnsafePath(PathIssue::NotUtf8)
    );
    assert_eq!(tree.rejected[0].path, "bad\u{fffd}.txt");
    // GitHub's JSON cannot carry the raw bytes: the name arrives already
    // replaced, so it is kept under that name with the right blob id.
    let tree = both.github.fetch_tree(&commit, None).await.unwrap();
    assert_eq!(entry(&tree, "bad\u{fffd}.txt").blob_sha, blob);
}
