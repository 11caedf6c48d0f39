//! `cargo bench --bench e2e`: the real operator (the release build of
//! `projectsync run`) against the testenv kube-apiserver and Postgres, with
//! repositories served by the GitHub stand-in and `git daemon`, diff-aware
//! versus (a) the naive re-import of every file and (b) `git clone --depth 1`
//! plus a full import, all in one run; and Postgres COPY of the same rows.
//!
//! Every repository is synced on both of the operator's routes, the GitHub
//! API (the stand-in) and a plain git remote (`git daemon`), one resource
//! each, reading the same commits.
//!
//! Repositories are built at bench time: generated ones (10,000 and 100,000
//! files, seeded), a real history from a crate's versions in the local
//! cargo registry cache, and a replay of a real project's last consecutive
//! commits with their real change sizes (`BENCH_E2E_REAL_REPO`, any git
//! repository, else this checkout; `BENCH_E2E_REAL_COMMITS`, default 30;
//! `BENCH_E2E_REAL_NAME` for the report). Scenarios: first sync, unchanged
//! poll, changes of k = 1, 10, 20, 100 files and 1% of the files, a
//! truncated tree, the replay, and many resources in one cluster. Writes
//! `bench-results/e2e-<mode>.md` and `.png` and prints the markdown.
//! `-- --quick` runs 10,000 files, the real crate, the replay and 50
//! resources; the full run adds 100,000 files and 500 resources. Needs
//! `hack/testenv up` and fails loudly without it.
//! Figures and how to read them: docs/e2e-bench.md.

mod fleet;
mod lab;
mod measure;
mod report;
mod repos;
mod scenarios;

use std::time::Instant;

use report::{RepoLine, duration, markdown};
use repos::{Shape, find_real_crate, generate, real_history, real_project, replay_history};

/// What the fleet's resources read, for the capacity table.
const REPOS_NOTE: &str = "the resources share 5 generated repositories of 20 files; default flags but `--git-helper-idle-timeout 10s`; idle figures once the operator has no child process left (or 40 s after the last sync).";

/// Which scenarios run.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Quick,
    Full,
}

fn mode() -> Mode {
    let quick = std::env::args().any(|a| a == "--quick")
        || std::env::var("BENCH_E2E_QUICK").is_ok_and(|v| v == "1");
    if quick { Mode::Quick } else { Mode::Full }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mode = mode();
    let label = if mode == Mode::Quick { "quick" } else { "full" };
    // Fails with the command that fixes it when the environment is missing.
    let env = support::testenv();
    support::kube_client().await;
    eprintln!(
        "e2e bench ({label}): API server from {}",
        env.kubeconfig.display()
    );

    // Only the fleet, for the capacity of one replica:
    // `BENCH_E2E_FLEET_ONLY=5000 cargo bench --bench e2e` runs both routes
    // (`BENCH_E2E_FLEET_ROUTES=github` or `git` for one) and writes
    // `bench-results/fleet-<count>.md`. `BENCH_E2E_FLEET_LATENCY_MS=100`
    // delays every stand-in answer; `BENCH_E2E_FLEET_CHANGE=1` adds a
    // one-file change of every resource; `BENCH_E2E_FLEET_REPLICAS=3`
    // shares it among three replicas with `--shards 6` (and writes
    // `fleet-<count>-r3.md`).
    if let Some(count) = std::env::var("BENCH_E2E_FLEET_ONLY")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        let routes =
            std::env::var("BENCH_E2E_FLEET_ROUTES").unwrap_or_else(|_| "github,git".into());
        let replicas: usize = std::env::var("BENCH_E2E_FLEET_REPLICAS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1)
            .max(1);
        let mut capacity = Vec::new();
        for route in routes.split(',').map(str::trim) {
            let route = match route {
                "github" => fleet::FleetRoute::GitHub,
                "git" => fleet::FleetRoute::Git,
                other => panic!("BENCH_E2E_FLEET_ROUTES: {other:?} is not github or git"),
            };
            let start = Instant::now();
            let options = fleet::FleetOptions {
                latency: std::env::var("BENCH_E2E_FLEET_LATENCY_MS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .map(std::time::Duration::from_millis),
                change: std::env::var("BENCH_E2E_FLEET_CHANGE").is_ok_and(|v| v == "1"),
                replicas,
            };
            let fleet = fleet::run(count, route, options).await;
            eprintln!(
                "{} resources ({}): done in {}, operator peak RSS {} MiB",
                fleet.count,
                route.label(),
                duration(start.elapsed()),
                fleet.peak_rss.map_or(0, |b| b >> 20)
            );
            capacity.push(fleet.capacity);
        }
        let (heading, suffix) = match replicas {
            1 => ("One replica".to_string(), String::new()),
            n => (
                format!("{n} replicas, {} shards", fleet::SHARDS),
                format!("-r{n}"),
            ),
        };
        let text = format!(
            "## {heading}, {count} resources\n\n`BENCH_E2E_FLEET_ONLY={count} BENCH_E2E_FLEET_REPLICAS={replicas} cargo bench --bench e2e` on {} cores; {REPOS_NOTE}\n\n{}",
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            fleet::capacity_markdown(&capacity),
        );
        let dir = measure::results_dir();
        std::fs::create_dir_all(&dir).expect("results directory");
        let md = dir.join(format!("fleet-{count}{suffix}.md"));
        std::fs::write(&md, &text).expect("write the fleet results");
        eprintln!("wrote {}", md.display());
        println!("{text}");
        return;
    }

    // One generated repository, our route only, printed and not written:
    // `BENCH_E2E_PROFILE=gen-100k cargo bench --bench e2e` (or gen-10k), for
    // finding where a run's time goes without the baselines' hour.
    let profile = std::env::var("BENCH_E2E_PROFILE").ok();
    // `BENCH_E2E_BASELINES=0`: every scenario on both of our routes and the
    // COPY, without the naive re-imports and clones (most of a full run's
    // time); the report says so in its header.
    let baselines = profile.is_none() && std::env::var("BENCH_E2E_BASELINES").as_deref() != Ok("0");

    let lab = lab::Lab::start("e2e").await;
    let mut repos = Vec::new();
    let mut rows = Vec::new();
    let mut copies = Vec::new();

    let mut shapes = vec![(
        "gen-10k",
        Shape {
            files: 10_000,
            seed: 10,
        },
    )];
    if mode == Mode::Full {
        shapes.push((
            "gen-100k",
            Shape {
                files: 100_000,
                seed: 100,
            },
        ));
    }
    // `BENCH_E2E_PROFILE=replay`: the real-history replay alone.
    let replay_only = profile.as_deref() == Some("replay");
    if replay_only {
        shapes.clear();
    } else if let Some(only) = &profile {
        shapes = [("gen-10k", 10_000), ("gen-100k", 100_000)]
            .into_iter()
            .filter(|(name, _)| name == only)
            .map(|(name, files)| {
                (
                    name,
                    Shape {
                        files,
                        seed: files as u64 / 1_000,
                    },
                )
            })
            .collect();
        assert!(
            !shapes.is_empty(),
            "BENCH_E2E_PROFILE must be gen-10k, gen-100k or replay, not {only}"
        );
    }
    for (name, shape) in shapes {
        let start = Instant::now();
        let (repo, stats) = generate(name, shape);
        let build = start.elapsed();
        eprintln!(
            "built {name} ({} files) in {}",
            stats.files,
            duration(build)
        );
        repos.push(RepoLine {
            label: name.into(),
            description: "generated, seeded: log-normal sizes (text around 3 KiB, binary around 16 KiB), 5% binary".into(),
            files: stats.files,
            bytes: stats.bytes,
            binary: stats.binary,
            build,
        });
        let outcome = scenarios::generated(&lab, repo, shape, baselines).await;
        rows.extend(outcome.measurements);
        copies.extend(outcome.copies);
    }
    if profile.is_some() && !replay_only {
        println!("{}", markdown("## Profile", &repos, &rows, &[]));
        return;
    }

    match find_real_crate().filter(|_| !replay_only) {
        Some((name, versions)) => {
            let start = Instant::now();
            let (repo, stats) = real_history(&name, &versions);
            let build = start.elapsed();
            let listed: Vec<String> = versions.iter().map(|v| v.version.clone()).collect();
            repos.push(RepoLine {
                label: format!("crate {name}"),
                description: format!(
                    "real: the crate's published sources, one commit per version ({})",
                    listed.join(" → ")
                ),
                files: stats.files,
                bytes: stats.bytes,
                binary: stats.binary,
                build,
            });
            let outcome =
                scenarios::real(&lab, repo, &format!("crate {name}"), &listed, baselines).await;
            rows.extend(outcome.measurements);
            copies.extend(outcome.copies);
        }
        None => eprintln!(
            "no crate with two versions in the cargo registry cache: the real repository is left out"
        ),
    }

    let mut replays = Vec::new();
    let count: usize = std::env::var("BENCH_E2E_REAL_COMMITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let source = real_project();
    let name =
        std::env::var("BENCH_E2E_REAL_NAME").unwrap_or_else(|_| env!("CARGO_PKG_NAME").to_string());
    match source
        .as_deref()
        .and_then(|s| replay_history(&name, s, count))
    {
        Some(repo) => {
            let start = Instant::now();
            let label = format!("history of {name}");
            let files = repo.tree_size(&repo.commits[0]);
            let steps: Vec<String> = repo.commits.iter().map(|c| c[..8].to_string()).collect();
            repos.push(RepoLine {
                label: label.clone(),
                description: format!(
                    "real: the project's last {} consecutive first-parent commits, replayed one by one with their real changes",
                    repo.commits.len() - 1
                ),
                files,
                bytes: repo.tree_bytes(&repo.commits[0]),
                binary: 0,
                build: start.elapsed(),
            });
            let outcome = scenarios::real(&lab, repo, &label, &steps, false).await;
            rows.extend(outcome.measurements);
            copies.extend(outcome.copies);
            replays.push(label);
        }
        None => eprintln!(
            "no git history with two commits at BENCH_E2E_REAL_REPO or this checkout: the replay is left out"
        ),
    }
    if replay_only {
        println!("{}", markdown("## Profile", &repos, &rows, &[]));
        return;
    }
    drop(lab);

    let fleet = fleet::run(
        if mode == Mode::Full { 500 } else { 50 },
        fleet::FleetRoute::GitHub,
        fleet::FleetOptions::default(),
    )
    .await;
    rows.extend(fleet.measurements);

    let verdicts = scenarios::verdicts(&rows, &copies, &replays, fleet.count, fleet.peak_rss);
    let header = format!(
        "## End-to-end benchmark ({label} run)\n\n`{}cargo bench --bench e2e{}` on {} cores; {}.",
        if baselines {
            ""
        } else {
            "BENCH_E2E_BASELINES=0 "
        },
        if mode == Mode::Quick {
            " -- --quick"
        } else {
            ""
        },
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        scenarios::versions().await,
    );
    let text = markdown(&header, &repos, &rows, &verdicts);
    let dir = measure::results_dir();
    std::fs::create_dir_all(&dir).expect("results directory");
    let md = dir.join(format!("e2e-{label}.md"));
    let png = dir.join(format!("e2e-{label}.png"));
    std::fs::write(&md, &text).expect("write the markdown results");
    match report::chart(&png, &rows) {
        Ok(true) => eprintln!("wrote {} and {}", md.display(), png.display()),
        Ok(false) => eprintln!(
            "wrote {} and {} (no font found: set BENCH_FONT for labels)",
            md.display(),
            png.display()
        ),
        Err(e) => panic!("cannot draw {}: {e}", png.display()),
    }
    println!("{text}");
}
