//! Faults of the GitHub API, against the real operator: the stand-in answers
//! a seeded schedule of 500 / 502 / 503, answers held past the request
//! timeout, bodies cut short, a primary and a secondary rate limit, and the
//! branch force-pushed in the middle of the first run. The operator must stay
//! up, wait out the rate limits, and end Ready at the rewritten head with the
//! store equal to its tree. Prints a report (fault, injected, survived, rows
//! lost) and writes it to `target/fault-report.md`. Replay a schedule with
//! `FAULT_SEED=<seed>`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kube::Api;
use projectsync::api::ProjectSync;
use serde_json::json;
use support::{
    convergence::{
        FileChange, SeededRng, active_files, assert_store_is_tree, commit_files, generate_repo,
        generated_content, generated_path, is_ready_at, rows_lost, runs_by_status, tree_of,
    },
    fresh_database, fresh_namespace,
    github::{
        GithubStandIn,
        faults::{Endpoint, FaultPlan, Injected, Scheduled},
    },
    operator::{Operator, OperatorConfig},
    psync::{create, request_sync},
    repo::TestRepo,
    repo_root,
};

const FILES: usize = 400;
/// The resource's `spec.timeout`; a held answer waits longer.
const REQUEST_TIMEOUT_SECS: u64 = 2;

/// The seeded schedule: every kind at least once, blob faults at distinct
/// random request numbers within the first pass over the files.
fn build_schedule(rng: &mut SeededRng, rewritten: &str) -> Vec<Scheduled> {
    let mut blob_numbers: Vec<usize> = (1..=FILES).collect();
    for i in (1..blob_numbers.len()).rev() {
        blob_numbers.swap(i, rng.below(i as u64 + 1) as usize);
    }
    // The force-push lands while the first run reads blobs.
    let early = blob_numbers
        .iter()
        .position(|n| *n <= FILES / 2)
        .expect("an early request");
    let force_push_at = blob_numbers.remove(early);
    let mut blobs = blob_numbers.into_iter();
    let mut at = |fault: Injected| Scheduled {
        endpoint: Endpoint::Blob,
        nth: blobs.next().expect("enough blob requests"),
        fault,
    };
    let mut schedule = vec![
        at(Injected::Status(500)),
        at(Injected::Status(500)),
        at(Injected::Status(502)),
        at(Injected::Status(503)),
        at(Injected::Timeout),
        at(Injected::TruncatedBody),
        at(Injected::TruncatedBody),
        at(Injected::PrimaryRateLimit),
        at(Injected::SecondaryRateLimit),
        Scheduled {
            endpoint: Endpoint::Blob,
            nth: force_push_at,
            fault: Injected::ForcePush {
                branch: "main".into(),
                to: rewritten.into(),
            },
        },
    ];
    schedule.extend([
        Scheduled {
            endpoint: Endpoint::Ref,
            nth: 1,
            fault: Injected::Status(503),
        },
        Scheduled {
            endpoint: Endpoint::Tree,
            nth: 1,
            fault: Injected::TruncatedBody,
        },
        Scheduled {
            endpoint: Endpoint::Tree,
            nth: 2 + rng.below(2) as usize,
            fault: Injected::Status(500),
        },
        Scheduled {
            endpoint: Endpoint::Ref,
            nth: 2 + rng.below(2) as usize,
            fault: Injected::Timeout,
        },
    ]);
    schedule
}

#[tokio::test]
async fn the_operator_survives_every_github_fault_and_converges_on_the_rewritten_head() {
    let mut rng = SeededRng::from_env("FAULT_SEED");
    let repo = TestRepo::new("faulty");
    let History { head, rewritten } = a_branch_and_its_rewrite_from_one_base(&repo);

    let github = GithubStandIn::start("acme", "faulty", repo.git_dir()).await;
    let schedule = build_schedule(&mut rng, &rewritten);
    github.set_fault_plan(FaultPlan {
        faults: schedule.clone(),
        hold: Duration::from_secs(REQUEST_TIMEOUT_SECS + 2),
        rate_limit_wait: Duration::from_secs(4),
    });

    let ns = fresh_namespace("fault-gh").await;
    let db = fresh_database("fault_gh").await;
    let mut operator = Operator::start(OperatorConfig::new(&ns.name, &db.url)).await;
    let api: Api<ProjectSync> = Api::namespaced(ns.client.clone(), &ns.name);
    create(
        &api,
        "faulty",
        json!({
            "source": { "github": { "owner": "acme", "repo": "faulty", "apiUrl": github.api_url() } },
            "branch": "main",
            "timeout": format!("{REQUEST_TIMEOUT_SECS}s"),
        }),
    )
    .await;
    let project = format!("{}/faulty", ns.name);

    the_force_push_is_followed_to_ready_at_the_rewritten_head(
        &api, &db.pool, &project, &repo, &head, &rewritten, &operator,
    )
    .await;
    operator.assert_alive().await;

    let active = active_files(&db.pool, &project).await;
    let oracle = tree_of(&repo, &rewritten);
    let lost = rows_lost(&oracle, &active);
    assert_store_is_tree(
        &db.pool,
        &project,
        &repo,
        &rewritten,
        "at the rewritten head",
    )
    .await;
    let runs = runs_by_status(&db.pool, &project).await;
    assert!(
        !runs.contains_key("IN_PROGRESS"),
        "a run was left IN_PROGRESS: {runs:?}"
    );

    let Tally { table, failures } =
        what_became_of_each_fault(&github, &api, &oracle, &rewritten).await;
    let injected: usize = table.values().map(|r| r.0).sum();
    let survived: usize = table.values().map(|r| r.1).sum();
    let mut report = String::from("| fault | injected | survived |\n|---|---:|---:|\n");
    for (kind, (n, ok)) in &table {
        report.push_str(&format!("| {kind} | {n} | {ok} |\n"));
    }
    report.push_str(&format!(
        "| **total** | **{injected}** | **{survived}** |\n\nrows lost: {lost} (of {} files at the head); runs: {runs:?}; GitHub requests: {}\n",
        oracle.len(),
        github.journal().len()
    ));
    println!("{report}");
    write_the_fault_report(&report, rng.seed());

    let kinds: Vec<&str> = schedule.iter().map(|s| s.fault.kind()).collect();
    for kind in &kinds {
        assert!(
            table.contains_key(kind),
            "{kind} was scheduled but never injected: {table:?}"
        );
    }
    assert!(failures.is_empty(), "faults not survived: {failures:#?}");
    assert_eq!(injected, survived);
    assert_eq!(lost, 0, "rows lost");
}

/// The branch's tip and the commit it is force-pushed to.
struct History {
    head: String,
    rewritten: String,
}

/// `main` gets `FILES` generated files and one more commit (the original
/// tip); `refs/keep/rewritten` shares the base and diverges from it.
fn a_branch_and_its_rewrite_from_one_base(repo: &TestRepo) -> History {
    let base = generate_repo(repo, "refs/heads/main", FILES);
    let original: Vec<FileChange> = (0..10)
        .map(|i| (generated_path(i), Some(generated_content(i, 1))))
        .collect();
    let head = commit_files(repo, "refs/heads/main", Some(&base), &original, "original");
    let mut rewrite: Vec<FileChange> = (20..40)
        .map(|i| (generated_path(i), Some(generated_content(i, 2))))
        .collect();
    rewrite.extend((40..45).map(|i| (generated_path(i), None)));
    rewrite.extend((FILES..FILES + 5).map(|i| (generated_path(i), Some(generated_content(i, 0)))));
    let rewritten = commit_files(
        repo,
        "refs/keep/rewritten",
        Some(&base),
        &rewrite,
        "rewritten",
    );
    History { head, rewritten }
}

/// Ready at the rewritten head. A run that began before the force-push
/// completes at the original tip; the next poll (asked for here rather
/// than waiting out the 30s interval) moves to the rewrite.
async fn the_force_push_is_followed_to_ready_at_the_rewritten_head(
    api: &Api<ProjectSync>,
    pool: &sqlx::PgPool,
    project: &str,
    repo: &TestRepo,
    head: &str,
    rewritten: &str,
    operator: &Operator,
) {
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut asked = false;
    loop {
        let obj = api.get("faulty").await.ok();
        if obj.as_ref().is_some_and(|o| is_ready_at(o, rewritten)) {
            break;
        }
        if !asked && obj.as_ref().is_some_and(|o| is_ready_at(o, head)) {
            assert_store_is_tree(pool, project, repo, head, "at the original tip").await;
            request_sync(api, "faulty", "after-force-push").await;
            asked = true;
        }
        assert!(
            Instant::now() < deadline,
            "not Ready at the rewritten head {rewritten} within 240s: {:?}\n{}",
            obj.and_then(|o| o.status),
            operator.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Per fault kind, (injected, survived); and what was not survived.
struct Tally {
    table: BTreeMap<&'static str, (usize, usize)>,
    failures: Vec<String>,
}

/// Per fault: the same URL answered later, rate limits waited out, and
/// the force-push followed to the rewritten head.
async fn what_became_of_each_fault(
    github: &GithubStandIn,
    api: &Api<ProjectSync>,
    oracle: &BTreeMap<String, String>,
    rewritten: &str,
) -> Tally {
    let mut table: BTreeMap<&'static str, (usize, usize)> = BTreeMap::new();
    let mut failures = Vec::new();
    for outcome in github.fault_outcomes() {
        let fault = outcome.seen.fault.clone().expect("a fault");
        let survived = match &fault {
            Injected::ForcePush { .. } => {
                is_ready_at(&api.get("faulty").await.expect("get"), rewritten)
            }
            // A blob only the overtaken head had may never be asked for
            // again: the run that wanted it failed on the force-push (with
            // fetches running ahead, possibly before retrying it).
            _ => {
                let unneeded = outcome
                    .seen
                    .path
                    .rsplit_once("/git/blobs/")
                    .is_some_and(|(_, sha)| !oracle.values().any(|s| s == sha));
                (outcome.answered_later || unneeded) && outcome.waited != Some(false)
            }
        };
        let row = table.entry(fault.kind()).or_default();
        row.0 += 1;
        if survived {
            row.1 += 1;
        } else {
            failures.push(format!(
                "{} at {} ({outcome:?})",
                fault.kind(),
                outcome.seen.path
            ));
        }
    }
    Tally { table, failures }
}

/// `target/fault-report.md`, with the command that replays the schedule.
fn write_the_fault_report(report: &str, seed: u64) {
    let path = repo_root().join("target/fault-report.md");
    std::fs::create_dir_all(path.parent().expect("target")).expect("target directory");
    std::fs::write(
        &path,
        format!(
            "# GitHub fault report\n\n`FAULT_SEED={seed} cargo test --test fault_github`\n\n{report}"
        ),
    )
    .expect("write the report");
}
