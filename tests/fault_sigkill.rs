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
    let head = generate_repo(&repo, "refs/heads/main", FILES);
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
    let between_kills = which_kills_land_between_runs(&mut rng);
    let mut scene = Scene {
        repo: &repo,
        api: &api,
        pool: &db.pool,
        project: &project,
        rng,
        head,
        // Deleted files are never touched again; new ones get fresh numbers.
        next_new: FILES,
        // The first run records every file.
        expected: FILES,
        synced_once: false,
    };
    let mut points = Vec::new();

    for kill in 1..=KILLS {
        assert!(
            started.elapsed() < DEADLINE,
            "the kill loop took over {DEADLINE:?}: {points:#?}"
        );
        let between = between_kills.contains(&kill);
        let point = if between {
            scene.kill_while_idle_and_push(&mut operator, kill)
        } else {
            scene.kill_inside_a_run(&mut operator, kill).await
        };
        println!(
            "kill {kill}: {} (stage {}, {} of {} files recorded)",
            point.mode,
            point.stage.as_deref().unwrap_or("-"),
            point.recorded,
            point.of
        );
        scene
            .the_last_completed_sync_is_whole_while_down(kill)
            .await;
        points.push(point);

        operator = Operator::start(OperatorConfig::new(&ns.name, &db.url)).await;
        scene
            .a_restart_converges_to_the_head(&operator, between, kill)
            .await;
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

/// Which kills land between runs: `BETWEEN` of kills 2..=KILLS, seeded.
fn which_kills_land_between_runs(rng: &mut SeededRng) -> Vec<usize> {
    let mut order: Vec<usize> = (2..=KILLS).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    order[..BETWEEN].to_vec()
}

/// The repository, resource and store the kills hit, and where the branch
/// and the runs stand.
struct Scene<'a> {
    repo: &'a TestRepo,
    api: &'a Api<ProjectSync>,
    pool: &'a PgPool,
    project: &'a str,
    rng: SeededRng,
    head: String,
    next_new: usize,
    /// Files the next run records.
    expected: usize,
    synced_once: bool,
}

impl Scene<'_> {
    /// A commit of `count` changes on the head, which moves to it; returns
    /// how many files a run records for it.
    fn push(&mut self, count: usize, version: u32) -> usize {
        let (next, records) = push_changes(
            self.repo,
            &mut self.rng,
            &self.head,
            count,
            version,
            &mut self.next_new,
        );
        self.head = next;
        records
    }

    /// Idle at the head: kill, push while down (restarted by the caller).
    fn kill_while_idle_and_push(&mut self, operator: &mut Operator, kill: usize) -> KillPoint {
        operator.kill();
        self.push(5, kill as u32);
        KillPoint {
            mode: "between runs",
            stage: None,
            recorded: 0,
            of: 0,
        }
    }

    /// After the first sync, pushes a change of 500 to 2,000 files and asks
    /// for a run; kills the operator once the run has recorded a seeded
    /// fraction of its files.
    async fn kill_inside_a_run(&mut self, operator: &mut Operator, kill: usize) -> KillPoint {
        if self.synced_once {
            let count = 500 + self.rng.below(1_500) as usize;
            self.expected = self.push(count, kill as u32);
            request_sync(self.api, "killed", &format!("kill-{kill}")).await;
        }
        let expected = self.expected;
        // A fraction of the run's files; below 0.1: as soon as it opens
        // (prepare, scan); above 0.9: once all are recorded (finalize).
        let fraction = self.rng.unit();
        let threshold = match fraction {
            f if f < 0.1 => 0,
            f if f > 0.9 => expected as i64,
            f => (f * expected as f64) as i64,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        let observed = loop {
            if let Some((stage, recorded)) = open_run(self.pool, self.project).await
                && recorded >= threshold
            {
                break Some((stage, recorded));
            }
            // Missed: the run completed before the threshold was seen.
            if last_completed_commit(self.pool, self.project)
                .await
                .as_deref()
                == Some(self.head.as_str())
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
        if self.rng.unit() < 0.3 {
            self.push(3, 100 + kill as u32);
        }
        KillPoint {
            mode: "mid-run",
            stage,
            recorded,
            of: expected,
        }
    }

    /// While nothing runs, the last completed sync is whole.
    async fn the_last_completed_sync_is_whole_while_down(&self, kill: usize) {
        if let Some(last) = last_completed_commit(self.pool, self.project).await {
            assert_store_is_tree(
                self.pool,
                self.project,
                self.repo,
                &last,
                &format!("kill {kill}, while down"),
            )
            .await;
        }
    }

    /// The restarted `operator` (asked for a run if the kill was between
    /// runs) ends Ready at the head with the store equal to its tree and
    /// no run IN_PROGRESS.
    async fn a_restart_converges_to_the_head(
        &mut self,
        operator: &Operator,
        between: bool,
        kill: usize,
    ) {
        if between {
            request_sync(self.api, "killed", &format!("after-kill-{kill}")).await;
        }
        poll_ready_at(self.api, "killed", &self.head, CONVERGE, || {
            operator.log_tail()
        })
        .await;
        self.synced_once = true;
        assert_store_is_tree(
            self.pool,
            self.project,
            self.repo,
            &self.head,
            &format!("after restart {kill}"),
        )
        .await;
        let runs = runs_by_status(self.pool, self.project).await;
        assert!(
            !runs.contains_key("IN_PROGRESS"),
            "after restart {kill}: a run is IN_PROGRESS: {runs:?}"
        );
    }
}
