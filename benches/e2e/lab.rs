//! The lab: one real operator (the release build of `projectsync run`)
//! watching one namespace of the testenv API server, writing to one fresh
//! database, and the ways of triggering a run a user has (create, request a
//! sync, request a reindex), each measured from the trigger until the
//! status says it is done. Also the clone baseline. Talks to the API server,
//! Postgres, the GitHub stand-in and git.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kube::Api;
use kube::api::{Patch, PatchParams};
use projectsync::api::{
    ProjectSync, ProjectSyncStatus, REINDEX_ANNOTATION, REQUESTED_AT_ANNOTATION, StageDurations,
};
use serde_json::json;
use support::{
    TestDb, fresh_database, fresh_namespace,
    git_server::GitDaemon,
    github::GithubStandIn,
    operator::{Operator, OperatorConfig},
    psync::{create, synced_at, wait_until_within},
};

use crate::measure::{Proc, StoreCounts, waited_children_cpu};
use crate::report::{Measurement, Route};

/// The longest any one measured run may take (a first sync of 100,000
/// files on a busy 2-core machine stays well inside it).
pub const RUN_DEADLINE: Duration = Duration::from_secs(30 * 60);

pub struct Lab {
    pub api: Api<ProjectSync>,
    /// The namespace the resources live in (and the operator watches).
    pub namespace: String,
    pub db: TestDb,
    pub operator: Operator,
    pub proc: Proc,
}

/// What one measured operator run cost.
pub struct Cost {
    pub wall: Duration,
    pub cpu: Duration,
    pub peak_rss: Option<u64>,
    /// Statuses of the source requests, in order (a git remote's are all
    /// 200: it has no conditional requests, `ls-remote` is its check).
    pub requests: Vec<u16>,
    pub rows: i64,
    pub rows_read: i64,
    /// What the run fetched, as its status reports it.
    pub fetched: Option<(i64, i64)>,
    /// The stage durations of the run the trigger started, as the status
    /// reports them (none for a poll that found nothing new).
    pub stages: Option<StageDurations>,
}

impl Cost {
    pub fn measurement(
        &self,
        repo: &str,
        scenario: &str,
        k: Option<usize>,
        route: Route,
    ) -> Measurement {
        Measurement {
            repo: repo.to_string(),
            scenario: scenario.to_string(),
            k,
            route,
            wall: self.wall,
            cpu: Some(self.cpu),
            peak_rss: self.peak_rss,
            requests: Some(self.requests.len()),
            not_modified: self.requests.iter().filter(|s| **s == 304).count(),
            rows: Some(self.rows),
            rows_read: Some(self.rows_read),
            fetched: self.fetched,
            stages: self.stages,
        }
    }
}

/// Where a resource of the lab reads its repository.
#[derive(Clone, Copy)]
pub enum Via<'a> {
    /// The GitHub REST API, from the stand-in.
    GitHub(&'a GithubStandIn),
    /// A plain git remote, from `git daemon`.
    Git(&'a GitDaemon),
}

impl Via<'_> {
    pub fn route(self) -> Route {
        match self {
            Via::GitHub(_) => Route::GitHub,
            Via::Git(_) => Route::Git,
        }
    }

    fn request_count(self) -> usize {
        match self {
            Via::GitHub(standin) => standin.request_count(),
            Via::Git(daemon) => daemon.request_count(),
        }
    }

    /// Statuses of the requests after the first `since`.
    fn requests_since(self, since: usize) -> Vec<u16> {
        match self {
            Via::GitHub(standin) => standin.requests()[since..]
                .iter()
                .map(|r| r.status)
                .collect(),
            Via::Git(daemon) => vec![200; daemon.request_count().saturating_sub(since)],
        }
    }
}

/// A resource of the lab: its name, the repository and where it reads it.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    pub name: &'a str,
    pub repo: &'a str,
    pub via: Via<'a>,
}

impl Target<'_> {
    pub fn route(&self) -> Route {
        self.via.route()
    }
}

impl Lab {
    pub async fn start(label: &str) -> Self {
        Self::start_with(label, &[]).await
    }

    /// [`Self::start`] with extra flags for the operator.
    pub async fn start_with(label: &str, extra_args: &[&str]) -> Self {
        let ns = fresh_namespace(label).await;
        let db = fresh_database(label).await;
        let mut config = OperatorConfig::new(&ns.name, &db.url);
        config.extra_args = extra_args.iter().map(|a| a.to_string()).collect();
        let operator = Operator::start(config).await;
        let proc = Proc(operator.pid().expect("the operator runs"));
        let api = Api::namespaced(ns.client.clone(), &ns.name);
        Lab {
            api,
            namespace: ns.name.clone(),
            db,
            operator,
            proc,
        }
    }

    /// Runs `trigger` and measures the operator, the stand-in and the store
    /// around it.
    pub async fn measured<F: Future<Output = ProjectSync>>(
        &self,
        target: Target<'_>,
        trigger: F,
    ) -> (Cost, ProjectSync) {
        let last_run = |obj: &ProjectSync| {
            obj.status
                .as_ref()
                .and_then(|s| s.last_sync.as_ref())
                .map(|s| (s.id.clone(), s.durations, s.fetched))
        };
        let before = self.api.get_opt(target.name).await.ok().flatten();
        let run_before = before.as_ref().and_then(last_run).map(|(id, ..)| id);
        let counts = StoreCounts::read(&self.db.pool).await;
        let requests = target.via.request_count();
        let cpu = self.proc.cpu();
        self.proc.reset_peak();
        let start = Instant::now();
        let obj = trigger.await;
        let wall = start.elapsed();
        let cpu = self.proc.cpu().saturating_sub(cpu);
        let peak_rss = self.proc.peak_rss();
        let after = StoreCounts::read(&self.db.pool).await;
        let run = last_run(&obj).filter(|(id, ..)| Some(id) != run_before.as_ref());
        let cost = Cost {
            wall,
            cpu,
            peak_rss,
            requests: target.via.requests_since(requests),
            rows: after.written_since(counts),
            rows_read: after.read_since(counts),
            fetched: run
                .as_ref()
                .and_then(|(_, _, fetched)| fetched.map(|f| (f.objects, f.bytes))),
            stages: run.map(|(_, durations, _)| durations),
        };
        (cost, obj)
    }

    async fn wait(
        &self,
        name: &str,
        what: &str,
        condition: impl Fn(&ProjectSync) -> bool,
    ) -> ProjectSync {
        wait_until_within(
            &self.api,
            name,
            RUN_DEADLINE,
            || self.operator.log_tail(),
            what,
            condition,
        )
        .await
    }

    /// Creates the resource and waits until it is Ready at `head`.
    pub async fn first_sync(&self, target: Target<'_>, head: &str) -> (Cost, ProjectSync) {
        self.measured(target, async {
            let spec = match target.via {
                Via::GitHub(standin) => spec(standin, target.repo),
                Via::Git(daemon) => git_spec(&daemon.url(target.repo)),
            };
            create(&self.api, target.name, spec).await;
            self.wait(target.name, "synced", synced_at(head.to_string()))
                .await
        })
        .await
    }

    /// Asks for a sync and waits until it was handled (a poll when nothing
    /// changed, a run when the branch moved to `head`).
    pub async fn request(
        &self,
        target: Target<'_>,
        value: &str,
        head: &str,
    ) -> (Cost, ProjectSync) {
        self.annotate(target, REQUESTED_AT_ANNOTATION, value, head, |s| {
            s.last_handled_requested_at.as_deref()
        })
        .await
    }

    /// The naive path: a reindex re-imports every file of the head again.
    pub async fn reindex(
        &self,
        target: Target<'_>,
        value: &str,
        head: &str,
    ) -> (Cost, ProjectSync) {
        self.annotate(target, REINDEX_ANNOTATION, value, head, |s| {
            s.last_handled_reindex_at.as_deref()
        })
        .await
    }

    /// Sets the annotation `key` to `value` as `kubectl annotate` does and
    /// waits until the status says that value was handled at `head`.
    async fn annotate(
        &self,
        target: Target<'_>,
        key: &str,
        value: &str,
        head: &str,
        handled: impl Fn(&ProjectSyncStatus) -> Option<&str>,
    ) -> (Cost, ProjectSync) {
        self.measured(target, async {
            let patch = json!({ "metadata": { "annotations": { key: value } } });
            self.api
                .patch(target.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .unwrap_or_else(|e| panic!("annotate {} with {key}: {e}", target.name));
            let synced = synced_at(head.to_string());
            self.wait(target.name, "handled", |obj| {
                synced(obj) && obj.status.as_ref().and_then(&handled) == Some(value)
            })
            .await
        })
        .await
    }
}

/// A ProjectSync on the stand-in; a long interval so that only the
/// benchmark's triggers start runs, and a history long enough that
/// retention deletes nothing while it measures.
pub fn spec(standin: &GithubStandIn, repo: &str) -> serde_json::Value {
    json!({
        "source": { "github": { "owner": "bench", "repo": repo, "apiUrl": standin.api_url() } },
        "branch": "main",
        "interval": "1h",
        "historyLimit": 100,
    })
}

/// The same for a plain git remote.
pub fn git_spec(url: &str) -> serde_json::Value {
    json!({
        "source": { "git": { "url": url } },
        "branch": "main",
        "interval": "1h",
        "historyLimit": 100,
    })
}

/// Baseline (b): `git clone --depth 1` of the branch, then a full import of
/// the clone with `projectsync sync --once --force` into the lab's database
/// (its own project, every file fetched, chunked and written again). CPU is
/// of both processes and their children; the peak RSS is the importer's,
/// sampled while it runs.
pub async fn clone_and_import(
    db: &TestDb,
    url: &str,
    project: &str,
) -> (Duration, Duration, Option<u64>, i64) {
    let work = tempfile::tempdir().expect("work directory");
    let clone = work.path().join("clone");
    let counts = StoreCounts::read(&db.pool).await;
    let cpu = waited_children_cpu();
    let start = Instant::now();
    run_bounded(
        Command::new("git")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .args([
                "clone",
                "--quiet",
                "--depth",
                "1",
                "--branch",
                "main",
                "--no-tags",
                url,
            ])
            .arg(&clone),
        "git clone --depth 1",
        None,
    )
    .await;
    let mut peak = None;
    run_bounded(
        Command::new(env!("CARGO_BIN_EXE_projectsync"))
            .args([
                "sync", "--once", "--force", "--branch", "main", "-o", "json",
            ])
            .args(["--project", project, "--database-url", &db.url, "--git"])
            .arg(&clone),
        "projectsync sync --once --force",
        Some(&mut peak),
    )
    .await;
    let wall = start.elapsed();
    let cpu = waited_children_cpu().saturating_sub(cpu);
    let rows = StoreCounts::read(&db.pool).await.written_since(counts);
    (wall, cpu, peak, rows)
}

/// Runs a command to completion within [`RUN_DEADLINE`], sampling its peak
/// RSS when asked; panics with its stderr when it fails.
async fn run_bounded(cmd: &mut Command, what: &str, mut peak: Option<&mut Option<u64>>) {
    let stderr = tempfile::NamedTempFile::new().expect("stderr file");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr.reopen().expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let deadline = Instant::now() + RUN_DEADLINE;
    let status = loop {
        if let Some(peak) = peak.as_deref_mut()
            && let Some(now) = Proc(child.id()).peak_rss()
        {
            *peak = Some(peak.unwrap_or(0).max(now));
        }
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not finish within {RUN_DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let log = std::fs::read_to_string(stderr.path()).unwrap_or_default();
    assert!(status.success(), "{what} failed ({status}):\n{log}");
}
