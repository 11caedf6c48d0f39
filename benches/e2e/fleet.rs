//! Many ProjectSync resources in one cluster: a few small generated
//! repositories, each behind its own GitHub stand-in, shared by `count`
//! resources; one operator of its own. Measures the time until all are
//! Ready, then one requested poll of every resource, with the operator's
//! CPU and peak RSS. Talks to the API server, Postgres and the stand-ins.

use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::ListParams;
use projectsync::api::ProjectSync;
use support::{
    github::GithubStandIn,
    psync::{create, request_sync},
};

use crate::lab::{Lab, spec};
use crate::measure::StoreCounts;
use crate::report::{Measurement, Route};
use crate::repos::{BareRepo, Shape, generate};

/// Distinct repositories the resources share, and files in each.
const REPOS: usize = 5;
const FILES: usize = 20;
/// API calls in flight while creating or annotating the resources.
const IN_FLIGHT: usize = 16;
const DEADLINE: Duration = Duration::from_secs(20 * 60);

pub struct FleetResult {
    pub count: usize,
    pub measurements: Vec<Measurement>,
    /// Peak RSS over the whole fleet run (since the operator started).
    pub peak_rss: Option<u64>,
}

/// Polls (bounded by [`DEADLINE`], once a second) until every resource
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
        tokio::time::sleep(Duration::from_secs(1)).await;
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

pub async fn run(count: usize) -> FleetResult {
    let repos: Vec<(BareRepo, GithubStandIn)> =
        futures::future::join_all((0..REPOS).map(|i| async move {
            let name = format!("fleet{i}");
            let (repo, _) = generate(
                &name,
                Shape {
                    files: FILES,
                    seed: 7_000 + i as u64,
                },
            );
            let standin = GithubStandIn::start("bench", &name, repo.git_dir()).await;
            (repo, standin)
        }))
        .await;
    let lab = Lab::start("e2e-fleet").await;
    let names: Vec<String> = (0..count).map(|i| format!("r{i:03}")).collect();
    let requests = || repos.iter().map(|(_, s)| s.requests()).collect::<Vec<_>>();
    let mut measurements = Vec::new();
    let scenario_first = format!("{count} resources: create, all Ready");
    let scenario_poll = format!("{count} resources: requested poll, nothing changed");

    for (scenario, is_poll) in [(scenario_first, false), (scenario_poll, true)] {
        let before_requests: Vec<usize> = requests().iter().map(Vec::len).collect();
        let counts = StoreCounts::read(&lab.db.pool).await;
        let cpu = lab.proc.cpu();
        let start = Instant::now();
        futures::stream::iter(names.iter().enumerate())
            .for_each_concurrent(IN_FLIGHT, |(i, name)| {
                let (repo, standin) = &repos[i % REPOS];
                let lab = &lab;
                async move {
                    if is_poll {
                        request_sync(&lab.api, name, "fleet-poll").await;
                    } else {
                        create(&lab.api, name, spec(standin, &repo.name)).await;
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
        let after = StoreCounts::read(&lab.db.pool).await;
        let statuses: Vec<u16> = requests()
            .iter()
            .zip(&before_requests)
            .flat_map(|(log, before)| log[*before..].iter().map(|r| r.status).collect::<Vec<_>>())
            .collect();
        measurements.push(Measurement {
            repo: format!("{REPOS} × {FILES}-file repositories"),
            scenario,
            k: None,
            route: Route::GitHub,
            wall,
            cpu: Some(lab.proc.cpu().saturating_sub(cpu)),
            peak_rss: lab.proc.peak_rss(),
            requests: Some(statuses.len()),
            not_modified: statuses.iter().filter(|s| **s == 304).count(),
            rows: Some(after.written_since(counts)),
            rows_read: Some(after.read_since(counts)),
            fetched: None,
            stages: None,
        });
    }
    FleetResult {
        count,
        peak_rss: lab.proc.peak_rss(),
        measurements,
    }
}
