//! Fault: the operator is SIGKILLed at 20 seeded random points of large
//! syncs (a git repository of thousands of files served by `git daemon`):
//! mostly while a run records files (at a random fraction of its files,
//! including none, during prepare or scan, and all, during finalize), some between runs with new commits
//! pushed while it is down, so the head moves under it. After every restart
//! the store converges: the active view is exactly `git ls-tree -r` of the
//! head (paths and blob ids, no duplicates), no run is left IN_PROGRESS, and
//! the ProjectSync is Ready at the head. While a run is interrupted the last
//! completed sync stays whole. Replay with `FAULT_SEED=<seed>`.

use std::time::{Duration, Instant};

use kube::Api;
use projectsync::api::ProjectSync;
use serde_json::json;
use sqlx::PgPool;
use support::{
    convergence::{
        FileChange, SeededRng, assert_store_is_tree, commit_files, generate_repo,
        generated_content, generated_path, last_completed_commit, poll_ready_at, runs_by_status,
    },
    fresh_database, fresh_namespace,
    git_server::GitDaemon,
    operator::{Operator, OperatorConfig},
    psync::{create, request_sync},
    repo::TestRepo,
};

const FILES: usize = 6_000;
const KILLS: usize = 20;
/// Kills between runs (the rest land inside one).
const BETWEEN: usize = 6;
/// The whole loop, kills and convergence included.
const DEADLINE: Duration = Duration::from_secs(900);
/// One convergence after a restart.
const CONVERGE: Duration = Duration::from_secs(180);

/// Where a kill lands, observed in the store when the process dies.
#[derive(Debug)]
struct KillPoint {
    mode: &'static str,
    stage: Option<String>,
    recorded: i64,
    of: usize,
}

/// The open run of the project: (stage, files recorded).
async fn open_run(pool: &PgPool, project: &str) -> Option<(Option<String>, i64)> {
    sqlx::query_as::<_, (Option<String>, i32)>(
        "SELECT s.stage, s.files_recorded FROM project_syncs s JOIN projects p ON p.id = s.project_id \
         WHERE p.key = $1 AND s.status = 'IN_PROGRESS' ORDER BY s.started_at DESC LIMIT 1",
    )
    .bind(project)
    .fetch_optional(pool)
    .await
    .ok()
    .flatten()
    .map(|(stage, n)| (stage, i64::from(n)))
}

/// A commit changing `count` random files (a new version), deleting and
/// adding a few, on top of `parent`; returns it and how many files a run
/// records for it.
fn push_changes(
    repo: &TestRepo,
    rng: &mut SeededRng,
    parent: &str,
    count: usize,
    version: u32,
    next_new: &mut usize,
) -> (String, usize) {
    let mut changes: Vec<FileChange> = Vec::new();
    let mut touched = std::collections::BTreeSet::new();
    while touched.len() < count {
        touched.insert(rng.below(FILES as u64) as usize);
    }
    let deleted: Vec<usize> = touched.iter().copied().take(count / 50).collect();
    for i in &touched {
        let content = (!deleted.contains(i)).then(|| generated_content(*i, version));
        changes.push((generated_path(*i), content));
    }
    let added = 1 + count / 50;
    for _ in 0..added {
        changes.push((
            generated_path(*next_new),
            Some(generated_content(*next_new, version)),
        ));
        *next_new += 1;
    }
    let commit = commit_files(
        repo,
        "refs/heads/main",
        Some(parent),
        &changes,
        &format!("v{version}"),
    );
    (commit, count - deleted.len() + added)
}

#[tokio::test]
async fn sigkill_at_twenty_random_points_always_converges_to_the_head() {
    let started = Instant::now();
    let mut rng = SeededRng::from_env("FAULT_SEED");
    let repo = TestRepo::new("killed");
    let mut head = generate_repo(&repo, "refs/heads/main", FILES);
    // Deleted files are never touched again; new ones get fresh numbers.
    let mut next_new = FILES;
    let daemon = GitDaemon::start(repo.root());
    let ns = fresh_namespace("fault-kill").await;
    let db = fresh_database("fault_kill").await;
    let api: Api<ProjectSync> = Api::namespaced(ns.client.clone(), &ns.name);
    let project = format!("{}/killed", ns.name);
    let mut operator = Operator::start(OperatorConfig::new(&ns.name, &db.url)).await;
    create(
        &api,
        "killed",
        json!({ "source": { "git": { "url": daemon.url("killed") } }, "branch": "main" }),
    )
    .await;
    // The first run records every file.
    let mut expected = FILES;
    let mut synced_once = false;
    let mut points = Vec::new();
    // Which kills land between runs: BETWEEN of kills 2..=KILLS, seeded.
    let mut order: Vec<usize> = (2..=KILLS).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let between_kills: Vec<usize> = order[..BETWEEN].to_vec();

    for kill in 1..=KILLS {
        assert!(
            started.elapsed() < DEADLINE,
            "the kill loop took over {DEADLINE:?}: {points:#?}"
        );
        let between = between_kills.contains(&kill);
        let point = if between {
            // Idle at the head: kill, push while down, restart.
            operator.kill();
            let (next, _) = push_changes(&repo, &mut rng, &head, 5, kill as u32, &mut next_new);
            head = next;
            KillPoint {
                mode: "between runs",
                stage: None,
                recorded: 0,
                of: 0,
            }
        } else {
            if synced_once {
                let count = 500 + rng.below(1_500) as usize;
                let (next, records) =
                    push_changes(&repo, &mut rng, &head, count, kill as u32, &mut next_new);
                head = next;
                expected = records;
                request_sync(&api, "killed", &format!("kill-{kill}")).await;
            }
            // A fraction of the run's files; below 0.1: as soon as it opens
            // (prepare, scan); above 0.9: once all are recorded (finalize).
            let fraction = rng.unit();
            let threshold = match fraction {
                f if f < 0.1 => 0,
                f if f > 0.9 => expected as i64,
                f => (f * expected as f64) as i64,
            };
            let deadline = Instant::now() + Duration::from_secs(120);
            let observed = loop {
                if let Some((stage, recorded)) = open_run(&db.pool, &project).await
                    && recorded >= threshold
                {
                    break Some((stage, recorded));
                }
                // Missed: the run completed before the threshold was seen.
                if last_completed_commit(&db.pool, &project).await.as_deref() == Some(head.as_str())
                {
                    break None;
                }
                assert!(
                    Instant::now() < deadline,
                    "kill {kill}: no run reached {threshold} files\n{}",
                    operator.log_tail()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            operator.kill();
            let (stage, recorded) = observed.unwrap_or((Some("completed".into()), expected as i64));
            // Sometimes the head moves while the operator is down, too.
            if rng.unit() < 0.3 {
                let (next, _) =
                    push_changes(&repo, &mut rng, &head, 3, 100 + kill as u32, &mut next_new);
                head = next;
            }
            KillPoint {
                mode: "mid-run",
                stage,
                recorded,
                of: expected,
            }
        };
        println!(
            "kill {kill}: {} (stage {}, {} of {} files recorded)",
            point.mode,
            point.stage.as_deref().unwrap_or("-"),
            point.recorded,
            point.of
        );
        // While nothing runs, the last completed sync is whole.
        if let Some(last) = last_completed_commit(&db.pool, &project).await {
            assert_store_is_tree(
                &db.pool,
                &project,
                &repo,
                &last,
                &format!("kill {kill}, while down"),
            )
            .await;
        }
        points.push(point);

        operator = Operator::start(OperatorConfig::new(&ns.name, &db.url)).await;
        if between {
            request_sync(&api, "killed", &format!("after-kill-{kill}")).await;
        }
        poll_ready_at(&api, "killed", &head, CONVERGE, || operator.log_tail()).await;
        synced_once = true;
        assert_store_is_tree(
            &db.pool,
            &project,
            &repo,
            &head,
            &format!("after restart {kill}"),
        )
        .await;
        let runs = runs_by_status(&db.pool, &project).await;
        assert!(
            !runs.contains_key("IN_PROGRESS"),
            "after restart {kill}: a run is IN_PROGRESS: {runs:?}"
        );
    }

    let mid = points
        .iter()
        .filter(|p| p.mode == "mid-run" && p.stage.as_deref() != Some("completed"))
        .count();
    let runs = runs_by_status(&db.pool, &project).await;
    println!(
        "{KILLS} kills ({mid} inside a run, {} between runs, {} after a run had completed) in {:?}; runs by status: {runs:?}",
        points.iter().filter(|p| p.mode == "between runs").count(),
        points
            .iter()
            .filter(|p| p.stage.as_deref() == Some("completed"))
            .count(),
        started.elapsed()
    );
    assert_eq!(points.len(), KILLS);
    assert!(
        mid >= (KILLS - BETWEEN) / 2,
        "most kills meant for a run must land inside it: {points:#?}"
    );
    assert!(operator.is_running(), "{}", operator.log_tail());
}
