//! Hostile repositories against the real operator, served by `git daemon`:
//! a 50 MB file, a very large number of empty files, 4,096-character paths,
//! names that are not UTF-8 and a tree entry of every mode (including
//! 100664 and 100600 written into the tree object, which git reads as 100644). For each the operator stays up
//! (`/healthz` answers, the process lives), the ProjectSync reaches Ready, and
//! what was not processed is reported: `status.lastSync.files.skipped`, the
//! active views and the operator log. Trees `git add` refuses are written with
//! `git mktree`; the large ones with one `git fast-import`.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use kube::{Api, runtime::wait::await_condition};
use projectsync::api::ProjectSync;
use serde_json::json;
use support::{
    TestDb, TestNamespace, fresh_database, fresh_namespace,
    git_server::GitDaemon,
    operator::{Operator, OperatorConfig, http_get},
    psync::{condition, create},
    repo::TestRepo,
};

/// The empty blob's id: every one of the many files points at it.
const EMPTY_BLOB: &str = "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391";
/// Files in the many-files repository unless `HOSTILE_EMPTY_FILES` says otherwise.
const DEFAULT_EMPTY_FILES: usize = 100_000;
/// Files per directory in the many-files repository.
const FILES_PER_DIRECTORY: usize = 1_000;

/// One hostile repository served to its own operator, namespace and database.
struct Hostile {
    _ns: TestNamespace,
    db: TestDb,
    operator: Operator,
    api: Api<ProjectSync>,
    project: String,
    _daemon: GitDaemon,
}

impl Hostile {
    /// Serves `repo`, starts an operator and creates a ProjectSync named `name` for it.
    async fn start(label: &str, repo: &TestRepo, name: &str) -> Self {
        let ns = fresh_namespace(label).await;
        let db = fresh_database(label).await;
        let daemon = GitDaemon::start(repo.root());
        let operator = Operator::start(OperatorConfig::new(&ns.name, &db.url)).await;
        let api: Api<ProjectSync> = Api::namespaced(ns.client.clone(), &ns.name);
        let repo_name = repo
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("repository name");
        create(
            &api,
            name,
            json!({ "source": { "git": { "url": daemon.url(repo_name) } }, "branch": "main" }),
        )
        .await;
        let project = format!("{}/{name}", ns.name);
        Hostile {
            _ns: ns,
            db,
            operator,
            api,
            project,
            _daemon: daemon,
        }
    }

    /// Waits (bounded by `within`) until the resource is Ready at `commit` or
    /// Stalled, and returns it.
    async fn wait_settled(&self, name: &str, commit: &str, within: Duration) -> ProjectSync {
        let commit = commit.to_string();
        let settled = await_condition(self.api.clone(), name, move |obj: Option<&ProjectSync>| {
            obj.is_some_and(|obj| {
                let ready = condition(obj, "Ready").is_some_and(|(s, _, _)| s == "True")
                    && obj
                        .status
                        .as_ref()
                        .and_then(|s| s.last_synced_commit.as_deref())
                        == Some(commit.as_str());
                let stalled = condition(obj, "Stalled").is_some_and(|(s, _, _)| s == "True");
                ready || stalled
            })
        });
        match tokio::time::timeout(within, settled).await {
            Ok(Ok(Some(obj))) => obj,
            other => {
                let status = self
                    .api
                    .get(name)
                    .await
                    .ok()
                    .and_then(|o| serde_json::to_string_pretty(&o.status).ok());
                panic!(
                    "{name}: neither Ready nor Stalled within {within:?} ({other:?})\nstatus: {}\nlog:\n{}",
                    status.unwrap_or_default(),
                    self.operator.log_tail()
                )
            }
        }
    }

    /// The operator process lives and `/healthz` answers 200.
    async fn assert_operator_up(&mut self) {
        assert!(
            self.operator.is_running(),
            "the operator exited:\n{}",
            self.operator.log_tail()
        );
        let (code, body) = http_get(self.operator.probe_addr, "/healthz")
            .await
            .expect("/healthz answers");
        assert_eq!(code, 200, "/healthz: {body}");
    }

    /// `path -> (size, mode, kind)` of the active view.
    async fn active_files(&self) -> BTreeMap<String, (i64, i64, String)> {
        let rows: Vec<(String, i64, i64, String)> = sqlx::query_as(
            "SELECT path, size, mode::bigint, kind::text FROM active_repository_files WHERE project = $1",
        )
        .bind(&self.project)
        .fetch_all(&self.db.pool)
        .await
        .expect("query the active view");
        rows.into_iter()
            .map(|(path, size, mode, kind)| (path, (size, mode, kind)))
            .collect()
    }

    async fn active_file_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM active_repository_files WHERE project = $1")
            .bind(&self.project)
            .fetch_one(&self.db.pool)
            .await
            .expect("count the active view")
    }

    async fn memory_count(&self, path: &str) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM active_memory_entries WHERE project = $1 AND path = $2",
        )
        .bind(&self.project)
        .bind(path)
        .fetch_one(&self.db.pool)
        .await
        .expect("count active memory")
    }
}

/// `(added, skipped, total)` of the last completed sync.
fn counts(obj: &ProjectSync) -> (i64, i64, i64) {
    let files = &obj
        .status
        .as_ref()
        .and_then(|s| s.last_sync.as_ref())
        .expect("status.lastSync")
        .files;
    (files.added, files.skipped, files.total)
}

fn assert_ready(obj: &ProjectSync, log: &str) {
    let ready = condition(obj, "Ready");
    assert!(
        ready.as_ref().is_some_and(|(s, _, _)| s == "True"),
        "not Ready: {ready:?}\nstatus: {:?}\nlog:\n{log}",
        obj.status
    );
}

/// Writes one commit on `main` with `git fast-import`: `(mode, blob id, raw
/// path)` for every entry; directories are implied by the paths.
fn fast_import(
    repo: &TestRepo,
    entries: impl Iterator<Item = (&'static str, String, Vec<u8>)>,
) -> String {
    let mut stream = b"commit refs/heads/main\ncommitter Test <test@example.com> 1700000000 +0000\ndata 7\nhostile\n".to_vec();
    for (mode, sha, path) in entries {
        assert!(
            !path.contains(&b'\n') && path.first() != Some(&b'"'),
            "path needs quoting"
        );
        stream.extend_from_slice(format!("M {mode} {sha} ").as_bytes());
        stream.extend_from_slice(&path);
        stream.push(b'\n');
    }
    stream.push(b'\n');
    repo.git_bytes(&["fast-import", "--quiet"], Some(&stream));
    repo.rev_parse("refs/heads/main")
}

/// The operator log without ANSI colour sequences, for matching `key=value`.
fn without_colours(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip to the end of the sequence (`m`), bounded by the text.
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A `git mktree -z` line.
fn mktree_line(mode: &str, kind: &str, sha: &str, name: &[u8]) -> Vec<u8> {
    let mut line = format!("{mode} {kind} {sha}\t").into_bytes();
    line.extend_from_slice(name);
    line.push(0);
    line
}

fn mktree(repo: &TestRepo, lines: &[u8]) -> String {
    String::from_utf8(repo.git_bytes(&["mktree", "-z"], Some(lines)))
        .expect("utf-8")
        .trim()
        .to_string()
}

/// Writes a tree object exactly as given, without git's mode normalisation.
fn literal_tree(repo: &TestRepo, entries: &[(&str, &str, &str)]) -> String {
    let mut body = Vec::new();
    for (mode, sha, name) in entries {
        body.extend_from_slice(format!("{mode} {name}\0").as_bytes());
        body.extend_from_slice(&hex::decode(sha).expect("hex object id"));
    }
    let out = repo.git_bytes(
        &["hash-object", "-t", "tree", "-w", "--literally", "--stdin"],
        Some(&body),
    );
    String::from_utf8(out).expect("utf-8").trim().to_string()
}

/// Directory names that do not compress: a seeded sequence of letters.
fn seeded_name(seed: &mut u64, len: usize) -> String {
    (0..len)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            (b'a' + (*seed % 26) as u8) as char
        })
        .collect()
}

#[tokio::test]
async fn a_50_mb_file_is_recorded_with_its_size_but_not_fetched_or_chunked() {
    const SIZE: usize = 50 * 1024 * 1024;
    let mut repo = TestRepo::new("big");
    let line = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n";
    let content: Vec<u8> = line.iter().copied().cycle().take(SIZE).collect();
    repo.write("big.txt", &content)
        .write("small.txt", "hello\n");
    let head = repo.commit("a 50 MB file");
    let mut env = Hostile::start("hostile-big", &repo, "big").await;

    let obj = env
        .wait_settled("big", &head, Duration::from_secs(120))
        .await;
    assert_ready(&obj, &env.operator.log_tail());
    env.assert_operator_up().await;
    assert_eq!(counts(&obj), (2, 1, 2), "the large file is the one skipped");
    let files = env.active_files().await;
    assert_eq!(files["big.txt"].0, SIZE as i64, "recorded with its size");
    assert_eq!(env.memory_count("big.txt").await, 0, "not chunked");
    assert!(
        env.memory_count("small.txt").await > 0,
        "the small file is chunked"
    );
    let fetched: i64 = sqlx::query_scalar("SELECT bytes_fetched FROM project_syncs")
        .fetch_one(&env.db.pool)
        .await
        .expect("the run's bytes fetched");
    assert!(
        fetched < 1024,
        "the 50 MB blob is not read: {fetched} bytes fetched"
    );
    let log = without_colours(&env.operator.log_text());
    assert!(
        log.contains("sync run completed") && log.contains("skipped=1"),
        "the completed run logs what it skipped"
    );
}

#[tokio::test]
async fn a_very_large_number_of_empty_files_syncs_completely() {
    let count: usize = std::env::var("HOSTILE_EMPTY_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_EMPTY_FILES);
    let repo = TestRepo::new("many");
    assert_eq!(repo.hash_blob(b""), EMPTY_BLOB);
    let built = Instant::now();
    let head = fast_import(
        &repo,
        (0..count).map(|i| {
            (
                "100644",
                EMPTY_BLOB.to_string(),
                format!("d{:04}/f{i:06}", i / FILES_PER_DIRECTORY).into_bytes(),
            )
        }),
    );
    println!("built {count} empty files in {:?}", built.elapsed());
    let mut env = Hostile::start("hostile-many", &repo, "many").await;

    let started = Instant::now();
    let obj = env
        .wait_settled("many", &head, Duration::from_secs(600))
        .await;
    println!("synced {count} empty files in {:?}", started.elapsed());
    assert_ready(&obj, &env.operator.log_tail());
    env.assert_operator_up().await;
    assert_eq!(counts(&obj), (count as i64, 0, count as i64));
    assert_eq!(env.active_file_count().await, count as i64);
}

#[tokio::test]
async fn paths_of_4096_characters_through_many_directories_are_synced_or_reported() {
    let repo = TestRepo::new("deep");
    let blob = repo.hash_blob(b"deep\n");
    let mut seed = 0x0DEE_9A7Bu64;
    // 40 directories of 99 letters and a 96-letter name: 4,096 characters
    // that do not compress (as real long paths do not).
    let mut wide: String = (0..40)
        .map(|_| format!("{}/", seeded_name(&mut seed, 99)))
        .collect();
    wide.push_str(&seeded_name(&mut seed, 96));
    // 1,000 nested directories of 3 letters and a 96-letter name.
    let mut nested: String = (0..1000)
        .map(|_| format!("{}/", seeded_name(&mut seed, 3)))
        .collect();
    nested.push_str(&seeded_name(&mut seed, 96));
    // The longest path the operator accepts, equally incompressible.
    let mut longest: String = (0..20)
        .map(|_| format!("{}/", seeded_name(&mut seed, 99)))
        .collect();
    longest.push_str(&seeded_name(&mut seed, 48));
    assert_eq!(
        (wide.len(), nested.len(), longest.len()),
        (4096, 4096, 2048)
    );
    let head = fast_import(
        &repo,
        [
            ("100644", blob.clone(), wide.clone().into_bytes()),
            ("100644", blob.clone(), nested.clone().into_bytes()),
            ("100644", blob.clone(), longest.clone().into_bytes()),
            ("100644", blob, b"short.txt".to_vec()),
        ]
        .into_iter(),
    );
    let mut env = Hostile::start("hostile-deep", &repo, "deep").await;

    let obj = env
        .wait_settled("deep", &head, Duration::from_secs(120))
        .await;
    env.assert_operator_up().await;
    assert_ready(&obj, &env.operator.log_tail());
    // Paths over 2,048 bytes cannot be indexed by Postgres when they do not
    // compress: they are refused and counted, the rest of the tree syncs.
    assert_eq!(
        counts(&obj),
        (2, 2, 2),
        "two synced, the two 4,096-character paths skipped"
    );
    let files = env.active_files().await;
    let mut expected = vec![longest, "short.txt".to_string()];
    expected.sort();
    assert_eq!(files.into_keys().collect::<Vec<_>>(), expected);
    let log = env.operator.log_text();
    assert!(
        log.contains("tree entries refused"),
        "the refusal is logged:\n{}",
        env.operator.log_tail()
    );
}

#[tokio::test]
async fn names_that_are_not_utf8_are_refused_counted_and_logged() {
    let mut repo = TestRepo::new("latin1");
    repo.write("ok.txt", "fine\n");
    repo.commit("one good file");
    let blob = repo.hash_blob(b"bytes\n");
    let ok = repo.hash_blob(b"fine\n");
    let inner = mktree(&repo, &mktree_line("100644", "blob", &blob, b"inner.txt"));
    let mut lines = Vec::new();
    for (mode, kind, sha, name) in [
        ("100644", "blob", ok.as_str(), b"ok.txt".as_slice()),
        ("100644", "blob", blob.as_str(), b"caf\xe9.txt".as_slice()),
        ("100644", "blob", blob.as_str(), b"\xff\xfe.rs".as_slice()),
        ("040000", "tree", inner.as_str(), b"dir\x80".as_slice()),
    ] {
        lines.extend(mktree_line(mode, kind, sha, name));
    }
    let head = repo.commit_raw_tree("main", &lines, "names that are not UTF-8");
    let mut env = Hostile::start("hostile-latin1", &repo, "latin1").await;

    let obj = env
        .wait_settled("latin1", &head, Duration::from_secs(90))
        .await;
    assert_ready(&obj, &env.operator.log_tail());
    env.assert_operator_up().await;
    assert_eq!(counts(&obj), (1, 3, 1), "three refused entries are skipped");
    assert_eq!(
        env.active_files().await.into_keys().collect::<Vec<_>>(),
        ["ok.txt"]
    );
    let log = env.operator.log_text();
    assert!(
        log.contains("tree entries refused"),
        "the operator log reports the refusal:\n{}",
        env.operator.log_tail()
    );
}

#[tokio::test]
async fn a_tree_entry_of_every_mode_is_recorded_with_the_mode_git_reads_and_its_kind() {
    let mut repo = TestRepo::new("modes");
    repo.write("README.md", "# modes\n");
    let first = repo.commit("initial");
    let text = repo.hash_blob(b"text\n");
    let script = repo.hash_blob(b"#!/bin/sh\necho hi\n");
    let target = repo.hash_blob(b"README.md");
    let inner = mktree(&repo, &mktree_line("100644", "blob", &text, b"inner.txt"));
    // `git mktree` rewrites 100664 and 100600 to 100644, so the tree object is
    // written byte by byte (entries in git's name order).
    let tree = literal_tree(
        &repo,
        &[
            ("100664", text.as_str(), "legacy.txt"),
            ("120000", target.as_str(), "link"),
            ("100600", text.as_str(), "private.txt"),
            ("100644", text.as_str(), "regular.txt"),
            ("100755", script.as_str(), "run.sh"),
            ("40000", inner.as_str(), "sub"),
            ("160000", first.as_str(), "vendor"),
        ],
    );
    let head = repo.git(&["commit-tree", &tree, "-p", &first, "-m", "every mode"]);
    repo.git(&["update-ref", "refs/heads/main", &head]);
    // The hostile modes are really in the object ...
    let raw = repo.git_bytes(&["cat-file", "tree", &tree], None);
    for mode in [&b"100664 legacy.txt"[..], b"100600 private.txt"] {
        assert!(
            raw.windows(mode.len()).any(|w| w == mode),
            "tree object lacks {mode:?}"
        );
    }
    // ... but git itself reads every regular-file mode as 100644 or 100755
    // (`canon_mode`), so the oracle is what `git ls-tree` says.
    let oracle: Vec<(String, i64)> = repo
        .ls_tree(&head)
        .into_iter()
        .map(|e| (String::from_utf8(e.path).expect("utf-8"), i64::from(e.mode)))
        .collect();
    let mut env = Hostile::start("hostile-modes", &repo, "modes").await;

    let obj = env
        .wait_settled("modes", &head, Duration::from_secs(90))
        .await;
    assert_ready(&obj, &env.operator.log_tail());
    env.assert_operator_up().await;
    let files = env.active_files().await;
    let by_mode: Vec<(String, i64)> = files.iter().map(|(p, (_, m, _))| (p.clone(), *m)).collect();
    assert_eq!(by_mode, oracle, "the active view has git's modes");
    let kinds: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, (_, _, k))| (p.as_str(), k.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("legacy.txt", "file"),
            ("link", "symlink"),
            ("private.txt", "file"),
            ("regular.txt", "file"),
            ("run.sh", "file"),
            ("sub/inner.txt", "file"),
            ("vendor", "submodule"),
        ],
        "every mode is recorded with its kind"
    );
    // Skipped: the symlink and the submodule (recorded, not processed).
    assert_eq!(counts(&obj), (7, 2, 7));
    assert_eq!(
        env.memory_count("link").await,
        0,
        "a symlink is not followed"
    );
    assert_eq!(
        env.memory_count("vendor").await,
        0,
        "a submodule is not fetched"
    );
    assert!(
        env.memory_count("legacy.txt").await > 0,
        "a legacy 100664 file is processed as a file"
    );
}
