//! Many ProjectSync resources on one replica: a few small generated
//! repositories, each behind its own GitHub stand-in or `git daemon`,
//! shared by `count` resources; one operator of its own. Measures the time
//! until all are Ready, then one requested poll of every resource, with the
//! operator's CPU, its resident memory (peak and current) and its child
//! processes (idle, and the most seen during the poll). Talks to the API
//! server, Postgres, the stand-ins and the daemons; reads `/proc`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::ListParams;
use projectsync::api::ProjectSync;
use serde_json::json;
use support::{
    git_server::GitDaemon,
    github::GithubStandIn,
    operator::{Operator, OperatorConfig, http_get},
    psync::{create, request_sync},
};

use crate::lab::{Lab, spec};
use crate::measure::{Proc, StoreCounts};
use crate::report::{Measurement, Route};
use crate::repos::{BareRepo, Shape, change_files, generate};

/// Distinct repositories the resources share, and files in each.
const REPOS: usize = 5;
const FILES: usize = 20;
/// API calls in flight while creating or annotating the resources.
const IN_FLIGHT: usize = 16;
const DEADLINE: Duration = Duration::from_secs(30 * 60);
/// The operator's idle timeout of git helpers in the fleet (shorter than
/// the default so that the idle measurement comes sooner).
const HELPER_IDLE: Duration = Duration::from_secs(10);

/// How the fleet runs beyond its size and route.
#[derive(Clone, Copy, Debug, Default)]
pub struct FleetOptions {
    /// Every stand-in answer waits this long first (GitHub route only):
    /// a realistic per-request latency.
    pub latency: Option<Duration>,
    /// After the poll, change one file of every repository and request a
    /// sync of all: the throughput of changes.
    pub change: bool,
    /// Replicas sharing the fleet through `--shards` [`SHARDS`] (one
    /// replica, the default, runs without shards).
    pub replicas: usize,
}

/// Shards of a fleet of several replicas.
pub const SHARDS: usize = 6;

/// Which source the fleet's resources read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FleetRoute {
    GitHub,
    Git,
}

impl FleetRoute {
    pub fn label(self) -> &'static str {
        match self {
            FleetRoute::GitHub => "GitHub stand-in",
            FleetRoute::Git => "git daemon (git://)",
        }
    }
}

/// What one replica holding the whole fleet looked like.
pub struct Capacity {
    pub route: FleetRoute,
    pub count: usize,
    /// From the first create until every resource was Ready.
    pub ready_after: Duration,
    /// From the first request until every resource had handled it.
    pub poll_after: Duration,
    /// VmHWM once all were Ready (since the operator started).
    pub ready_peak_rss: Option<u64>,
    /// VmRSS and child processes once idle after the first syncs.
    pub idle_rss: Option<u64>,
    pub idle_children: usize,
    /// VmHWM during the poll of all, and the most child processes seen.
    pub poll_peak_rss: Option<u64>,
    pub poll_peak_children: usize,
    /// VmRSS and child processes once idle after the poll.
    pub idle_rss_after_poll: Option<u64>,
    pub idle_children_after_poll: usize,
    /// Rows the first syncs wrote, and how much the database grew.
    pub rows: i64,
    pub db_bytes: i64,
    /// Rows the poll of all wrote (none: nothing changed).
    pub poll_rows: i64,
    /// With [`FleetOptions::change`]: from the request until every
    /// resource synced the changed commit.
    pub change_after: Option<Duration>,
    pub latency: Option<Duration>,
    pub replicas: usize,
    /// VmRSS of every replica once idle after the first syncs (the first is
    /// [`Capacity::idle_rss`]).
    pub replica_rss: Vec<Option<u64>>,
}

async fn database_bytes(lab: &Lab) -> i64 {
    sqlx::query_scalar("SELECT pg_database_size(current_database())")
        .fetch_one(&lab.db.pool)
        .await
        .expect("database size")
}

pub struct FleetResult {
    pub count: usize,
    pub measurements: Vec<Measurement>,
    /// Peak RSS over the whole fleet run (since the operator started).
    pub peak_rss: Option<u64>,
    pub capacity: Capacity,
}

/// Polls (bounded by [`DEADLINE`]; once a second, less often for
/// thousands of resources, whose list is megabytes) until every resource
/// satisfies `done`.
async fn wait_all(lab: &Lab, count: usize, what: &str, done: impl Fn(&ProjectSync) -> bool) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let list = lab
            .api
            .list(&ListParams::default())
            .await
            .expect("list ProjectSyncs");
        let ready = list.items.iter().filter(|o| done(o)).count();
        if ready == count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {ready} of {count} resources {what} within {DEADLINE:?}:\n{}",
            lab.operator.log_tail()
        );
        let every = (count as u64 / 2).clamp(1_000, 3_000);
        tokio::time::sleep(Duration::from_millis(every)).await;
    }
}

fn is_ready(obj: &ProjectSync) -> bool {
    obj.status.as_ref().is_some_and(|s| {
        s.last_synced_commit.is_some()
            && s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

/// Samples the operator's descendants every 100 ms until stopped.
struct ChildSampler {
    most: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl ChildSampler {
    fn start(proc: Proc) -> Self {
        let most = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, s) = (most.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::SeqCst) {
                let now = tokio::task::spawn_blocking(move || proc.descendants())
                    .await
                    .unwrap_or(0);
                m.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        ChildSampler { most, stop, task }
    }

    async fn finish(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
        self.most.load(Ordering::SeqCst)
    }
}

/// Waits (bounded) until the operator has no child processes left, or
/// the helpers' idle timeout has long passed; returns the count then.
async fn settle_children(proc: Proc) -> usize {
    let deadline = Instant::now() + HELPER_IDLE * 3 + Duration::from_secs(10);
    loop {
        let now = proc.descendants();
        if now == 0 || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The sources of the fleet: the repositories and what serves them.
enum Served {
    GitHub(Vec<(BareRepo, GithubStandIn)>),
    Git(Vec<(BareRepo, GitDaemon)>),
}

impl Served {
    async fn start(route: FleetRoute) -> Self {
        let repos = (0..REPOS).map(|i| generate(&format!("fleet{i}"), shape(i)).0);
        match route {
            FleetRoute::GitHub => Served::GitHub(
                futures::future::join_all(repos.map(|repo| async move {
                    let standin = GithubStandIn::start("bench", &repo.name, repo.git_dir()).await;
                    (repo, standin)
                }))
                .await,
            ),
            FleetRoute::Git => Served::Git(
                repos
                    .map(|repo| {
                        let daemon = GitDaemon::start(&repo.root);
                        (repo, daemon)
                    })
                    .collect(),
            ),
        }
    }

    fn spec(&self, i: usize) -> serde_json::Value {
        match self {
            Served::GitHub(repos) => {
                let (repo, standin) = &repos[i % REPOS];
                spec(standin, &repo.name)
            }
            Served::Git(repos) => {
                let (repo, daemon) = &repos[i % REPOS];
                json!({
                    "source": { "git": { "url": daemon.url(&repo.name) } },
                    "branch": "main",
                    "interval": "1h",
                    "historyLimit": 100,
                })
            }
        }
    }

    /// Commits a change of one file to every repository; returns the new heads.
    fn change_all(&mut self) -> Vec<String> {
        let repos: Vec<&mut BareRepo> = match self {
            Served::GitHub(repos) => repos.iter_mut().map(|(r, _)| r).collect(),
            Served::Git(repos) => repos.iter_mut().map(|(r, _)| r).collect(),
        };
        repos
            .into_iter()
            .enumerate()
            .map(|(i, repo)| change_files(repo, shape(i), 1, 1))
            .collect()
    }

    /// Statuses of the requests the stand-ins answered so far (none for git).
    fn statuses(&self) -> Vec<Vec<u16>> {
        match self {
            Served::GitHub(repos) => repos
                .iter()
                .map(|(_, s)| s.requests().iter().map(|r| r.status).collect())
                .collect(),
            Served::Git(_) => Vec::new(),
        }
    }
}

fn shape(i: usize) -> Shape {
    Shape {
        files: FILES,
        seed: 7_000 + i as u64,
    }
}

pub async fn run(count: usize, route: FleetRoute, options: FleetOptions) -> FleetResult {
    let mut served = Served::start(route).await;
    if let (Some(latency), Served::GitHub(repos)) = (options.latency, &served) {
        for (_, standin) in repos {
            standin.set_fault(support::github::Fault::Delay(latency), None);
        }
    }
    let idle = format!("{}s", HELPER_IDLE.as_secs());
    let replicas = options.replicas.max(1);
    let shards = SHARDS.to_string();
    let mut args = vec!["--git-helper-idle-timeout", idle.as_str()];
    if replicas > 1 {
        args.extend(["--shards", shards.as_str()]);
    }
    let lab = Lab::start_with("e2e-fleet", &args).await;
    let others = start_replicas(&lab, replicas, &args).await;
    let names: Vec<String> = (0..count).map(|i| format!("r{i:04}")).collect();
    let mut measurements = Vec::new();
    let mut capacity = Capacity {
        route,
        count,
        ready_after: Duration::ZERO,
        poll_after: Duration::ZERO,
        ready_peak_rss: None,
        idle_rss: None,
        idle_children: 0,
        poll_peak_rss: None,
        poll_peak_children: 0,
        idle_rss_after_poll: None,
        idle_children_after_poll: 0,
        rows: 0,
        db_bytes: 0,
        poll_rows: 0,
        change_after: None,
        latency: options.latency,
        replicas,
        replica_rss: Vec::new(),
    };
    let empty_db = database_bytes(&lab).await;
    let scenario_first = format!("{count} resources ({}): create, all Ready", route.label());
    let scenario_poll = format!(
        "{count} resources ({}): requested poll, nothing changed",
        route.label()
    );

    for (scenario, is_poll) in [(scenario_first, false), (scenario_poll, true)] {
        let before: Vec<usize> = served.statuses().iter().map(Vec::len).collect();
        let counts = StoreCounts::read(&lab.db.pool).await;
        let cpu = lab.proc.cpu();
        if is_poll {
            lab.proc.reset_peak();
        }
        let sampler = ChildSampler::start(lab.proc);
        let start = Instant::now();
        futures::stream::iter(names.iter().enumerate())
            .for_each_concurrent(IN_FLIGHT, |(i, name)| {
                let (lab, served) = (&lab, &served);
                async move {
                    if is_poll {
                        request_sync(&lab.api, name, "fleet-poll").await;
                    } else {
                        create(&lab.api, name, served.spec(i)).await;
                    }
                }
            })
            .await;
        if is_poll {
            wait_all(&lab, count, "handled the poll", |o| {
                o.status
                    .as_ref()
                    .is_some_and(|s| s.last_handled_requested_at.as_deref() == Some("fleet-poll"))
            })
            .await;
        } else {
            wait_all(&lab, count, "Ready", is_ready).await;
        }
        let wall = start.elapsed();
        let most_children = sampler.finish().await;
        let peak = lab.proc.peak_rss();
        let statuses: Vec<u16> = served
            .statuses()
            .iter()
            .zip(before.iter().chain(std::iter::repeat(&0)))
            .flat_map(|(log, before)| log[*before..].to_vec())
            .collect();
        let github = route == FleetRoute::GitHub;
        let after = StoreCounts::read(&lab.db.pool).await;
        let rows = after.written_since(counts);
        measurements.push(Measurement {
            repo: format!("{REPOS} × {FILES}-file repositories"),
            scenario,
            k: None,
            route: if github { Route::GitHub } else { Route::Git },
            wall,
            cpu: Some(lab.proc.cpu().saturating_sub(cpu)),
            peak_rss: peak,
            requests: github.then_some(statuses.len()),
            not_modified: statuses.iter().filter(|s| **s == 304).count(),
            rows: Some(rows),
            rows_read: Some(after.read_since(counts)),
            fetched: None,
            stages: None,
        });
        let children = settle_children(lab.proc).await;
        if is_poll {
            capacity.poll_after = wall;
            capacity.poll_peak_rss = peak;
            capacity.poll_peak_children = most_children;
            capacity.idle_rss_after_poll = lab.proc.rss();
            capacity.idle_children_after_poll = children;
            capacity.poll_rows = rows;
        } else {
            capacity.rows = rows;
            capacity.db_bytes = database_bytes(&lab).await - empty_db;
            capacity.ready_after = wall;
            capacity.ready_peak_rss = peak;
            capacity.idle_rss = lab.proc.rss();
            capacity.idle_children = children;
            capacity.replica_rss = std::iter::once(lab.proc)
                .chain(
                    others
                        .iter()
                        .map(|o| Proc(o.pid().expect("the replica runs"))),
                )
                .map(|p| p.rss())
                .collect();
        }
    }
    if options.change {
        let heads = served.change_all();
        let start = Instant::now();
        futures::stream::iter(&names)
            .for_each_concurrent(IN_FLIGHT, |name| {
                let lab = &lab;
                async move { request_sync(&lab.api, name, "fleet-change").await }
            })
            .await;
        wait_all(&lab, count, "synced the change", |o| {
            o.status.as_ref().is_some_and(|s| {
                s.last_handled_requested_at.as_deref() == Some("fleet-change")
                    && s.last_synced_commit
                        .as_ref()
                        .is_some_and(|c| heads.contains(c))
            })
        })
        .await;
        capacity.change_after = Some(start.elapsed());
    }
    FleetResult {
        count,
        peak_rss: lab.proc.peak_rss().max(capacity.ready_peak_rss),
        measurements,
        capacity,
    }
}

/// Starts replicas beside the lab's operator (same namespace, database and
/// flags), and waits until each owns its share of the shards, so the fleet
/// is created on a balanced install. None for one replica.
async fn start_replicas(lab: &Lab, replicas: usize, args: &[&str]) -> Vec<Operator> {
    let identities: Vec<String> = (1..replicas).map(|i| format!("replica-{i}")).collect();
    let mut others = Vec::new();
    for identity in &identities {
        let mut config = OperatorConfig::new(&lab.namespace, &lab.db.url);
        config.identity = identity;
        config.extra_args = args.iter().map(|a| a.to_string()).collect();
        others.push(Operator::start(config).await);
    }
    if others.is_empty() {
        return others;
    }
    let probes: Vec<std::net::SocketAddr> = std::iter::once(lab.operator.probe_addr)
        .chain(others.iter().map(|o| o.probe_addr))
        .collect();
    let fair = SHARDS.div_ceil(replicas);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut owned = Vec::new();
        for probe in &probes {
            owned.push(owned_shards(*probe).await);
        }
        if owned.iter().all(|n| *n <= fair) && owned.iter().sum::<usize>() == SHARDS {
            return others;
        }
        assert!(
            Instant::now() < deadline,
            "{replicas} replicas did not balance {SHARDS} shards within 120 s: {owned:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// How many shards the replica at `probe` says it owns (`/readyz`).
async fn owned_shards(probe: std::net::SocketAddr) -> usize {
    let Ok((200, body)) = http_get(probe, "/readyz").await else {
        return 0;
    };
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["reconciles"]["owned"].as_array().map(Vec::len))
        .unwrap_or(0)
}

/// The capacity table of `BENCH_E2E_FLEET_ONLY` runs.
pub fn capacity_markdown(rows: &[Capacity]) -> String {
    let mut out = capacity_table(rows);
    let changes: Vec<&Capacity> = rows.iter().filter(|c| c.change_after.is_some()).collect();
    if !changes.is_empty() {
        out.push_str("\n| route | resources | replicas | per-request latency | all Ready after | one-file change of every resource, all synced after | changes per second | idle RSS per replica |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n");
        for c in changes {
            let wall = c.change_after.unwrap_or_default().as_secs_f64();
            let rss: Vec<String> = c
                .replica_rss
                .iter()
                .map(|b| b.map_or("–".into(), |b| format!("{:.0} MiB", b as f64 / 1048576.0)))
                .collect();
            out.push_str(&format!(
                "| {} | {} | {} | {} | {:.0} s | {:.0} s | {:.1} | {} |\n",
                c.route.label(),
                c.count,
                c.replicas,
                c.latency
                    .map_or("none".to_string(), |l| format!("{} ms", l.as_millis())),
                c.ready_after.as_secs_f64(),
                wall,
                c.count as f64 / wall.max(0.001),
                rss.join(", "),
            ));
        }
    }
    out
}

fn capacity_table(rows: &[Capacity]) -> String {
    let mib = |b: Option<u64>| {
        b.map_or("–".to_string(), |b| {
            format!("{:.0} MiB", b as f64 / 1048576.0)
        })
    };
    let mut out = String::from(
        "| route | resources | all Ready after | peak RSS until Ready | idle RSS | idle children | poll of all | peak RSS during poll | most children during poll | idle RSS after poll | idle children after poll | rows written (first syncs / poll) | database growth |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for c in rows {
        out.push_str(&format!(
            "| {} | {} | {:.0} s | {} | {} | {} | {:.0} s | {} | {} | {} | {} | {} / {} | {:.0} MiB |\n",
            c.route.label(),
            c.count,
            c.ready_after.as_secs_f64(),
            mib(c.ready_peak_rss),
            mib(c.idle_rss),
            c.idle_children,
            c.poll_after.as_secs_f64(),
            mib(c.poll_peak_rss),
            c.poll_peak_children,
            mib(c.idle_rss_after_poll),
            c.idle_children_after_poll,
            c.rows,
            c.poll_rows,
            c.db_bytes as f64 / 1048576.0,
        ));
    }
    out
}
