//! Counts HTTP requests the GitHub source makes against the stand-in for a
//! 10,000-file repository: the first sync, a poll of an unchanged branch,
//! and changes of k files, diff-aware versus the naive way (full tree and
//! every blob), all in one run. Prints a markdown table.
//!
//! `cargo bench --bench source_requests`

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use projectsync::source::github::{GitHubConfig, GitHubRepo};
use projectsync::source::{HeadCache, HeadLookup, Source, Tree};
use support::{github::GithubStandIn, repo::TestRepo};

const FILES: usize = 10_000;
const CONCURRENCY: usize = 8;

/// What one sync cost.
struct Cost {
    requests: usize,
    elapsed: Duration,
}

fn path_of(i: usize) -> String {
    format!("pkg{:02}/mod{}/file{:04}.rs", i % 100, (i / 100) % 10, i)
}

fn build_repo() -> TestRepo {
    let mut repo = TestRepo::new("big");
    for i in 0..FILES {
        repo.write(
            &path_of(i),
            format!("// file {i}\npub fn f{i}() -> usize {{ {i} }}\n"),
        );
    }
    repo.commit("10,000 files");
    repo
}

fn source(standin: &GithubStandIn) -> GitHubRepo {
    let mut config = GitHubConfig::new("acme", "big");
    // The test servers listen on loopback.
    config.egress = projectsync::egress::EgressPolicy::allow_loopback();
    config.api_url = standin.api_url();
    config.max_concurrent_requests = CONCURRENCY;
    GitHubRepo::new(config).expect("source")
}

async fn fetch_blobs(source: &GitHubRepo, shas: Vec<String>) {
    futures::stream::iter(shas)
        .map(|sha| async move { source.fetch_blob(&sha, u64::MAX).await.map(|_| ()) })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<()>()
        .await
        .expect("blobs");
}

/// Diff-aware: head, tree (with the previous tree), then only the blobs
/// whose id changed.
async fn diff_aware_sync(
    standin: &GithubStandIn,
    source: &GitHubRepo,
    previous: Option<&Tree>,
    head: &mut Option<HeadCache>,
) -> (Tree, Cost) {
    let start = (standin.request_count(), Instant::now());
    let lookup = source
        .fetch_branch_head("main", head.as_ref())
        .await
        .expect("head");
    let HeadLookup::Changed { sha, etag } = lookup else {
        panic!("branch moved")
    };
    *head = Some(HeadCache {
        sha: sha.clone(),
        etag,
    });
    let tree = source.fetch_tree(&sha, previous).await.expect("tree");
    let known: HashMap<&str, &str> = previous
        .map(|p| {
            p.entries
                .iter()
                .map(|e| (e.path.as_str(), e.blob_sha.as_str()))
                .collect()
        })
        .unwrap_or_default();
    let changed: Vec<String> = tree
        .entries
        .iter()
        .filter(|e| e.kind.has_blob() && known.get(e.path.as_str()) != Some(&e.blob_sha.as_str()))
        .map(|e| e.blob_sha.clone())
        .collect();
    fetch_blobs(source, changed).await;
    (
        tree,
        Cost {
            requests: standin.request_count() - start.0,
            elapsed: start.1.elapsed(),
        },
    )
}

/// Naive: the full recursive tree and every blob, every time.
async fn naive_sync(standin: &GithubStandIn, source: &GitHubRepo, commit: &str) -> Cost {
    let start = (standin.request_count(), Instant::now());
    let tree = source.fetch_tree(commit, None).await.expect("tree");
    fetch_blobs(
        source,
        tree.entries.iter().map(|e| e.blob_sha.clone()).collect(),
    )
    .await;
    Cost {
        requests: standin.request_count() - start.0,
        elapsed: start.1.elapsed(),
    }
}

fn change_files(repo: &mut TestRepo, k: usize, round: usize) -> String {
    // Spread over the tree: every (FILES / k)-th file.
    let step = FILES / k;
    for j in 0..k {
        let i = j * step;
        repo.write(&path_of(i), format!("// file {i}, round {round}\n"));
    }
    repo.commit(&format!("change {k} files"))
}

struct Row {
    scenario: String,
    target: String,
    diff_aware: Cost,
    walked: Option<usize>,
    naive: Option<Cost>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let build = Instant::now();
    let mut repo = build_repo();
    eprintln!("built a {FILES}-file repository in {:?}", build.elapsed());
    let standin = GithubStandIn::start("acme", "big", repo.git_dir()).await;
    // A second stand-in over the same repository that truncates recursive
    // trees above 1,000 entries, to exercise the subtree walk.
    let truncating = GithubStandIn::start("acme", "big", repo.git_dir()).await;
    truncating.set_tree_entry_limit(1_000);
    let (source_a, source_b) = (source(&standin), source(&truncating));

    let mut rows = Vec::new();
    let mut head_a = None;
    let mut head_b = None;
    let (mut tree_a, first) = diff_aware_sync(&standin, &source_a, None, &mut head_a).await;
    let (mut tree_b, first_walked) =
        diff_aware_sync(&truncating, &source_b, None, &mut head_b).await;
    let naive = naive_sync(&standin, &source_a, &repo.head()).await;
    rows.push(Row {
        scenario: format!("first sync, {FILES} files"),
        target: format!("{}", FILES + 2),
        diff_aware: first,
        walked: Some(first_walked.requests),
        naive: Some(naive),
    });

    let before = standin.request_count();
    let start = Instant::now();
    let poll = source_a
        .fetch_branch_head("main", head_a.as_ref())
        .await
        .expect("poll");
    assert_eq!(poll, HeadLookup::Unchanged);
    let answered: Vec<u16> = standin.requests()[before..]
        .iter()
        .map(|r| r.status)
        .collect();
    rows.push(Row {
        scenario: format!("poll, unchanged branch (answered {answered:?})"),
        target: "1".into(),
        diff_aware: Cost {
            requests: standin.request_count() - before,
            elapsed: start.elapsed(),
        },
        walked: None,
        naive: None,
    });

    for (round, k) in [1usize, 10, 100, 1_000].into_iter().enumerate() {
        let commit = change_files(&mut repo, k, round);
        let (next_a, cost) = diff_aware_sync(&standin, &source_a, Some(&tree_a), &mut head_a).await;
        let (next_b, walked) =
            diff_aware_sync(&truncating, &source_b, Some(&tree_b), &mut head_b).await;
        assert_eq!(
            next_a.entries, next_b.entries,
            "walked and recursive trees agree"
        );
        let naive = naive_sync(&standin, &source_a, &commit).await;
        rows.push(Row {
            scenario: format!("change of {k} file{}", if k == 1 { "" } else { "s" }),
            target: format!("≈ {}", k + 3),
            diff_aware: cost,
            walked: Some(walked.requests),
            naive: Some(naive),
        });
        (tree_a, tree_b) = (next_a, next_b);
    }

    println!(
        "| scenario | target | diff-aware requests | diff-aware, tree truncated at 1,000 entries | naive requests (full tree + every blob) | diff-aware time | naive time |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for row in rows {
        let naive = row.naive.as_ref();
        println!(
            "| {} | {} | {} | {} | {} | {:.2?} | {} |",
            row.scenario,
            row.target,
            row.diff_aware.requests,
            row.walked
                .map(|w| w.to_string())
                .unwrap_or_else(|| "–".into()),
            naive
                .map(|n| n.requests.to_string())
                .unwrap_or_else(|| "–".into()),
            row.diff_aware.elapsed,
            naive
                .map(|n| format!("{:.2?}", n.elapsed))
                .unwrap_or_else(|| "–".into()),
        );
    }
}
