//! What the fault tests share: large generated histories (git fast-import),
//! a seeded random number generator whose seed is printed and can be set,
//! and the convergence oracle: the store's active view against
//! `git ls-tree -r` of a commit, duplicates, and runs left IN_PROGRESS.
//! Runs git and queries Postgres.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kube::Api;
use projectsync::api::ProjectSync;
use sqlx::PgPool;

use super::psync::condition;
use super::repo::TestRepo;

/// SplitMix64: small, and the same sequence for the same seed everywhere.
pub struct SeededRng {
    state: u64,
    seed: u64,
}

impl SeededRng {
    /// Seeded from `var` when set, else from the clock; prints the seed and
    /// how to replay it.
    pub fn from_env(var: &str) -> Self {
        let seed = std::env::var(var)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("clock")
                    .as_nanos() as u64
            });
        println!("fault seed: {seed} (replay with {var}={seed})");
        SeededRng { state: seed, seed }
    }

    /// The seed this generator started from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A file change for [`commit_files`]: new content, or `None` to delete.
pub type FileChange = (String, Option<String>);

/// The content of generated file `i` at `version`: distinct per file.
pub fn generated_content(i: usize, version: u32) -> String {
    format!("// file {i} version {version}\npub fn f{i}() -> usize {{ {i} + {version} }}\n")
}

/// The path of generated file `i` (500 per directory).
pub fn generated_path(i: usize) -> String {
    format!("src/m{:03}/f{i}.rs", i / 500)
}

/// Commits `changes` with one `git fast-import` (fast for thousands of
/// files) on top of `parent` (none: a root commit), and points `reference`
/// (e.g. `refs/heads/main`) at the new commit. Returns its id.
pub fn commit_files(
    repo: &TestRepo,
    reference: &str,
    parent: Option<&str>,
    changes: &[FileChange],
    message: &str,
) -> String {
    let mut stream = format!(
        "commit {reference}\ncommitter Test <test@example.com> 1700000000 +0000\ndata {}\n{message}\n",
        message.len()
    )
    .into_bytes();
    if let Some(parent) = parent {
        stream.extend_from_slice(format!("from {parent}\n").as_bytes());
    }
    for (path, content) in changes {
        match content {
            Some(content) => stream.extend_from_slice(
                format!(
                    "M 100644 inline {path}\ndata {}\n{content}\n",
                    content.len()
                )
                .as_bytes(),
            ),
            None => stream.extend_from_slice(format!("D {path}\n").as_bytes()),
        }
    }
    repo.git_bytes(&["fast-import", "--quiet", "--force"], Some(&stream));
    repo.rev_parse(reference)
}

/// A root commit of `files` generated files at `reference`.
pub fn generate_repo(repo: &TestRepo, reference: &str, files: usize) -> String {
    let changes: Vec<FileChange> = (0..files)
        .map(|i| (generated_path(i), Some(generated_content(i, 0))))
        .collect();
    commit_files(repo, reference, None, &changes, "generated")
}

/// `path -> blob sha` of `commit`: the oracle.
pub fn tree_of(repo: &TestRepo, commit: &str) -> BTreeMap<String, String> {
    repo.ls_tree(commit)
        .into_iter()
        .map(|e| (String::from_utf8(e.path).expect("utf-8 path"), e.sha))
        .collect()
}

/// `path -> blob sha` of the project's active view.
pub async fn active_files(pool: &PgPool, project: &str) -> BTreeMap<String, String> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT path, blob_sha FROM active_repository_files WHERE project = $1")
            .bind(project)
            .fetch_all(pool)
            .await
            .expect("active view");
    let count = rows.len();
    let map: BTreeMap<String, String> = rows.into_iter().collect();
    assert_eq!(
        map.len(),
        count,
        "{project}: duplicate paths in the active view"
    );
    map
}

/// Paths of the active view that appear more than once.
pub async fn duplicate_active_paths(pool: &PgPool, project: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT path FROM active_repository_files WHERE project = $1 GROUP BY path HAVING count(*) > 1",
    )
    .bind(project)
    .fetch_all(pool)
    .await
    .expect("duplicates")
}

/// Runs of the project by status.
pub async fn runs_by_status(pool: &PgPool, project: &str) -> BTreeMap<String, i64> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT s.status, count(*) FROM project_syncs s JOIN projects p ON p.id = s.project_id \
         WHERE p.key = $1 GROUP BY 1",
    )
    .bind(project)
    .fetch_all(pool)
    .await
    .expect("runs by status");
    rows.into_iter().collect()
}

/// The commit of the project's latest completed run.
pub async fn last_completed_commit(pool: &PgPool, project: &str) -> Option<String> {
    sqlx::query_scalar(
        "SELECT s.commit_sha FROM project_syncs s JOIN projects p ON p.id = s.project_id \
         WHERE p.key = $1 AND s.status = 'COMPLETED' ORDER BY s.chain_seq DESC LIMIT 1",
    )
    .bind(project)
    .fetch_optional(pool)
    .await
    .expect("last completed run")
}

/// Files of `oracle` missing from `active` or with another blob there.
pub fn rows_lost(oracle: &BTreeMap<String, String>, active: &BTreeMap<String, String>) -> usize {
    oracle
        .iter()
        .filter(|(path, sha)| active.get(*path) != Some(*sha))
        .count()
}

/// Asserts the active view is exactly `git ls-tree -r` of `commit`, without
/// duplicates; `what` names the moment for the failure message.
pub async fn assert_store_is_tree(
    pool: &PgPool,
    project: &str,
    repo: &TestRepo,
    commit: &str,
    what: &str,
) {
    assert!(
        duplicate_active_paths(pool, project).await.is_empty(),
        "{what}: duplicate rows in the active view"
    );
    let active = active_files(pool, project).await;
    let oracle = tree_of(repo, commit);
    let lost = rows_lost(&oracle, &active);
    let extra = active.keys().filter(|p| !oracle.contains_key(*p)).count();
    assert!(
        lost == 0 && extra == 0,
        "{what}: the active view differs from git ls-tree {commit}: {lost} missing or different, {extra} extra"
    );
}

/// Ready=True at `commit`.
pub fn is_ready_at(obj: &ProjectSync, commit: &str) -> bool {
    condition(obj, "Ready").is_some_and(|(s, _, _)| s == "True")
        && obj
            .status
            .as_ref()
            .and_then(|s| s.last_synced_commit.as_deref())
            == Some(commit)
}

/// Polls (every 250 ms, errors included: the API server may be restarting)
/// until the ProjectSync is Ready at `commit`; panics after `within` with the
/// status and `log()`.
pub async fn poll_ready_at(
    api: &Api<ProjectSync>,
    name: &str,
    commit: &str,
    within: Duration,
    log: impl Fn() -> String,
) -> ProjectSync {
    let deadline = Instant::now() + within;
    loop {
        let obj = api.get(name).await;
        if let Ok(obj) = &obj
            && is_ready_at(obj, commit)
        {
            return obj.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{name}: not Ready at {commit} within {within:?}: {:?}\n{}",
            obj.map(|o| o.status),
            log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Polls `probe` every 50 ms until it is true or `within` passes.
pub async fn poll_until(within: Duration, what: &str, mut probe: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !probe().await {
        assert!(Instant::now() < deadline, "{what} not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
