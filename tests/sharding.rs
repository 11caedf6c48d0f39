//! Automatic shards end to end: real `projectsync run --shards 6` replicas
//! against the real API server, Postgres and `git daemon`. Three replicas
//! share 60 resources: every shard is owned by exactly one replica at every
//! sample (the Leases and each replica's `/readyz` agree), no two runs of a
//! project overlap (from `project_syncs`), a SIGKILLed replica's resources
//! sync again within the lease duration plus one interval, a fourth replica
//! joins and the shards rebalance with no run interrupted, and the install
//! scales to one replica and back. Also: a replica streams the progress of a
//! run another replica does (Postgres LISTEN/NOTIFY), and
//! `--watch-label-selector` splits resources between installs. All loops
//! are bounded in count and time.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api, ResourceExt,
    api::{ListParams, PostParams},
};
use projectsync::{api::ProjectSync, controller::shards::shard_of_uid};
use serde_json::json;
use sqlx::PgPool;
use support::{
    convergence::is_ready_at,
    fresh_database, fresh_namespace,
    git_server::GitDaemon,
    operator::{Operator, OperatorConfig, http_get},
    psync::{create, request_sync},
    repo::TestRepo,
};

const SHARDS: u32 = 6;
const RESOURCES: usize = 60;
/// The lease duration the replicas run with (`--lease-duration 10`).
const LEASE: Duration = Duration::from_secs(10);
/// `spec.interval` of every resource (the CRD's minimum).
const INTERVAL: Duration = Duration::from_secs(30);
/// Time for 60 small runs on a shared 2-core machine, on top of the bound.
const ALLOWANCE: Duration = Duration::from_secs(30);

fn replica<'a>(ns: &'a str, db: &'a str, identity: &'a str) -> OperatorConfig<'a> {
    let mut config = OperatorConfig::new(ns, db);
    config.identity = identity;
    // Longer than the support's 6s: the API server shares two cores with
    // every other test here.
    config.lease_duration_secs = LEASE.as_secs();
    config.extra_args = [
        "--shards",
        "6",
        "--http-auth=false",
        "--concurrency",
        "4",
        "--namespace-concurrency",
        "4",
    ]
    .map(String::from)
    .to_vec();
    config
}

/// What a replica's `/readyz` says it owns; `None` when it does not answer.
async fn owned(probe: SocketAddr) -> Option<BTreeSet<u32>> {
    let (code, body) = http_get(probe, "/readyz").await.ok()?;
    if code != 200 {
        return None;
    }
    let body: serde_json::Value = serde_json::from_str(&body).ok()?;
    Some(
        body["reconciles"]["owned"]
            .as_array()?
            .iter()
            .filter_map(|v| v.as_u64().and_then(|v| u32::try_from(v).ok()))
            .collect(),
    )
}

/// Shard -> (holder, acquireTime) of the shard Leases that are held.
async fn lease_holders(leases: &Api<Lease>) -> BTreeMap<u32, (String, String)> {
    let Ok(list) = leases.list(&ListParams::default()).await else {
        return BTreeMap::new();
    };
    list.items
        .iter()
        .filter_map(|lease| {
            let shard: u32 = lease
                .name_any()
                .strip_prefix("projectsync-leader-shard-")?
                .parse()
                .ok()?;
            let spec = lease.spec.as_ref()?;
            let holder = spec.holder_identity.clone().filter(|h| !h.is_empty())?;
            let acquired = spec
                .acquire_time
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default();
            Some((shard, (holder, acquired)))
        })
        .collect()
}

/// Live replicas the sampler reads: identity -> probe address.
type Live = Arc<Mutex<BTreeMap<String, SocketAddr>>>;

/// Samples ownership until stopped: Leases, then every replica's view,
/// then the Leases again. Where a shard's Lease did not change hands
/// between the two reads, only its holder may claim it.
async fn sample(leases: Api<Lease>, live: Live, stop: Arc<Mutex<bool>>) -> (usize, Vec<String>) {
    let mut samples = 0;
    let mut violations = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(900);
    while !*stop.lock().unwrap() && Instant::now() < deadline {
        let before = lease_holders(&leases).await;
        let replicas: Vec<(String, SocketAddr)> = live
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let mut claims: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for (identity, probe) in replicas {
            for shard in owned(probe).await.unwrap_or_default() {
                claims.entry(shard).or_default().push(identity.clone());
            }
        }
        let after = lease_holders(&leases).await;
        for (shard, claimants) in &claims {
            let stable = before.get(shard).filter(|b| after.get(shard) == Some(*b));
            if let Some((holder, _)) = stable
                && claimants.iter().any(|c| c != holder)
            {
                violations.push(format!(
                    "shard {shard}: Lease held by {holder} throughout, claimed by {claimants:?}"
                ));
            }
            if claimants.len() > 1 && stable.is_some() {
                violations.push(format!("shard {shard}: claimed by {claimants:?}"));
            }
        }
        samples += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (samples, violations)
}

/// Waits until the live replicas own every shard exactly once, each within
/// its fair share; returns the assignment.
async fn wait_balanced(live: &Live, within: Duration) -> BTreeMap<String, BTreeSet<u32>> {
    let deadline = Instant::now() + within;
    loop {
        let replicas: Vec<(String, SocketAddr)> = live
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let mut assignment = BTreeMap::new();
        for (identity, probe) in &replicas {
            assignment.insert(identity.clone(), owned(*probe).await.unwrap_or_default());
        }
        let all: Vec<u32> = assignment.values().flatten().copied().collect();
        let unique: BTreeSet<u32> = all.iter().copied().collect();
        let ceiling = SHARDS.div_ceil(replicas.len().max(1) as u32) as usize;
        if all.len() == SHARDS as usize
            && unique.len() == SHARDS as usize
            && assignment
                .values()
                .all(|s| s.len() <= ceiling && s.len() + 1 >= ceiling)
        {
            return assignment;
        }
        assert!(
            Instant::now() < deadline,
            "shards not balanced over {} replicas within {within:?}: {assignment:?}",
            replicas.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until every resource is Ready at `commit`; returns how long it took.
async fn wait_all_at(
    api: &Api<ProjectSync>,
    commit: &str,
    within: Duration,
    log: impl Fn() -> String,
) -> Duration {
    let started = Instant::now();
    loop {
        let list = api.list(&ListParams::default()).await;
        let behind: Vec<String> = match &list {
            Ok(list) => list
                .items
                .iter()
                .filter(|o| !is_ready_at(o, commit))
                .map(ResourceExt::name_any)
                .collect(),
            Err(e) => vec![format!("list failed: {e}")],
        };
        if behind.is_empty() && list.as_ref().is_ok_and(|l| l.items.len() == RESOURCES) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{} resources not Ready at {commit} within {within:?}: {:?}\n{}",
            behind.len(),
            &behind[..behind.len().min(5)],
            log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs of one project that overlap in time, and runs FAILED.
async fn overlaps_and_failures(pool: &PgPool) -> (Vec<String>, i64) {
    let rows: Vec<(
        String,
        chrono::DateTime<chrono::Utc>,
        Option<chrono::DateTime<chrono::Utc>>,
    )> = sqlx::query_as(
        "SELECT p.key, s.started_at, s.finished_at FROM project_syncs s \
             JOIN projects p ON p.id = s.project_id ORDER BY p.key, s.started_at",
    )
    .fetch_all(pool)
    .await
    .expect("read runs");
    let mut overlaps = Vec::new();
    for pair in rows.windows(2) {
        let ((key_a, start_a, end_a), (key_b, start_b, _)) = (&pair[0], &pair[1]);
        if key_a == key_b && end_a.is_none_or(|end| end > *start_b) {
            overlaps.push(format!(
                "{key_a}: run from {start_a} to {end_a:?} overlaps one from {start_b}"
            ));
        }
    }
    let failed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM project_syncs WHERE status = 'FAILED'")
            .fetch_one(pool)
            .await
            .expect("count failed runs");
    (overlaps, failed)
}

fn push(repo: &mut TestRepo, version: u32) -> String {
    repo.write(
        "src/version.rs",
        format!("pub const VERSION: u32 = {version};\n"),
    );
    repo.commit(&format!("version {version}"))
}

#[tokio::test]
async fn replicas_share_shards_take_over_the_dead_rebalance_and_scale_down_and_up() {
    let ns = fresh_namespace("shards").await;
    let db = fresh_database("shards").await;
    let mut repo = TestRepo::new("app");
    repo.write("README.md", "# app\n")
        .write("src/lib.rs", "pub fn a() {}\n");
    let mut head = push(&mut repo, 1);
    let daemon = GitDaemon::start(repo.root());
    let api: Api<ProjectSync> = Api::namespaced(ns.client.clone(), &ns.name);
    let leases: Api<Lease> = Api::namespaced(ns.client.clone(), &ns.name);

    let live: Live = Arc::default();
    let mut replicas: BTreeMap<String, Operator> = BTreeMap::new();
    for identity in ["replica-a", "replica-b", "replica-c"] {
        let operator = Operator::start(replica(&ns.name, &db.url, identity)).await;
        live.lock()
            .unwrap()
            .insert(identity.into(), operator.probe_addr);
        replicas.insert(identity.into(), operator);
    }
    let logs = |replicas: &BTreeMap<String, Operator>| {
        replicas
            .iter()
            .map(|(id, op)| format!("--- {id}\n{}", op.log_tail()))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let stop = Arc::new(Mutex::new(false));
    let sampler = tokio::spawn(sample(leases.clone(), live.clone(), stop.clone()));

    for i in 0..RESOURCES {
        create(
            &api,
            &format!("app-{i:02}"),
            json!({ "source": { "git": { "url": daemon.url("app") } }, "branch": "main", "interval": "30s" }),
        )
        .await;
    }
    let took = wait_all_at(&api, &head, Duration::from_secs(240), || logs(&replicas)).await;
    println!("60 resources Ready over 3 replicas in {took:?}");
    let assignment = wait_balanced(&live, Duration::from_secs(30)).await;
    println!("three replicas: {assignment:?}");
    assert!(assignment.values().all(|s| s.len() == 2), "{assignment:?}");

    // SIGKILL one replica; its resources sync a new commit within the lease
    // duration plus one interval.
    let victim = "replica-c".to_string();
    let orphans: Vec<String> = api
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .iter()
        .filter(|o| {
            assignment[&victim].contains(&shard_of_uid(
                o.uid().as_deref().unwrap_or_default(),
                SHARDS,
            ))
        })
        .map(|o| format!("{}/{}", ns.name, o.name_any()))
        .collect();
    assert!(!orphans.is_empty(), "the victim owns resources");
    live.lock().unwrap().remove(&victim);
    replicas.get_mut(&victim).expect("victim").kill();
    let killed = chrono::Utc::now();
    head = push(&mut repo, 2);
    // The survivors take the victim's shards within the lease duration and
    // a renewal period or two (a tick is a quarter of the lease).
    let lost: BTreeSet<u32> = assignment[&victim].clone();
    let takeover_bound = LEASE + LEASE / 2 + Duration::from_secs(2);
    let takeover = loop {
        let holders = lease_holders(&leases).await;
        if lost
            .iter()
            .all(|s| holders.get(s).is_some_and(|(h, _)| *h != victim))
        {
            break (chrono::Utc::now() - killed).to_std().unwrap_or_default();
        }
        assert!(
            (chrono::Utc::now() - killed).to_std().unwrap_or_default() < takeover_bound,
            "the shards {lost:?} of {victim} were not taken over within {takeover_bound:?}: {holders:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = wait_all_at(&api, &head, LEASE + INTERVAL + ALLOWANCE, || {
        logs(&replicas)
    })
    .await;
    // When the victim's resources started their runs of the new commit:
    // the takeover, not the time the runs themselves take on this machine.
    let latest: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
        "SELECT max(first) FROM (SELECT min(s.started_at) AS first FROM project_syncs s          JOIN projects p ON p.id = s.project_id WHERE p.key = ANY($1) AND s.commit_sha = $2          GROUP BY p.key) runs",
    )
    .bind(&orphans)
    .bind(&head)
    .fetch_one(&db.pool)
    .await
    .expect("read runs");
    let resynced = (latest.expect("the orphans ran") - killed)
        .to_std()
        .unwrap_or_default();
    println!(
        "after SIGKILL of {victim}: its shards taken over in {takeover:?}; its {} resources all \
         started a run of the new head within {resynced:?} (lease {LEASE:?} + interval {INTERVAL:?}); \
         all 60 Ready at it in {took:?}",
        orphans.len()
    );
    // The runs themselves queue for slots behind the other 50 resources'
    // runs of the same commit on this shared machine: the allowance.
    assert!(
        resynced <= LEASE + INTERVAL + ALLOWANCE,
        "the orphans resynced after {resynced:?}"
    );
    let assignment = wait_balanced(&live, LEASE * 3).await;
    assert!(assignment.values().all(|s| s.len() == 3), "{assignment:?}");
    let (overlaps, failed_after_kill) = overlaps_and_failures(&db.pool).await;
    assert!(overlaps.is_empty(), "{overlaps:#?}");

    // A replacement and a fourth replica join while every resource runs.
    for identity in ["replica-c2", "replica-d"] {
        head = push(&mut repo, if identity == "replica-d" { 4 } else { 3 });
        for i in 0..RESOURCES {
            request_sync(&api, &format!("app-{i:02}"), &format!("{identity}-{i}")).await;
        }
        let operator = Operator::start(replica(&ns.name, &db.url, identity)).await;
        live.lock()
            .unwrap()
            .insert(identity.into(), operator.probe_addr);
        replicas.insert(identity.into(), operator);
        wait_all_at(&api, &head, INTERVAL + ALLOWANCE * 2, || logs(&replicas)).await;
    }
    let assignment = wait_balanced(&live, LEASE * 4).await;
    println!("four replicas: {assignment:?}");
    let (overlaps, failed) = overlaps_and_failures(&db.pool).await;
    assert!(overlaps.is_empty(), "{overlaps:#?}");
    assert_eq!(
        failed, failed_after_kill,
        "a run was interrupted by the rebalance"
    );

    // Scale to one (graceful stops hand their shards back at once) and back.
    for identity in ["replica-b", "replica-c2", "replica-d"] {
        live.lock().unwrap().remove(identity);
        let mut operator = replicas.remove(identity).expect("replica");
        assert!(
            operator.terminate(Duration::from_secs(30)).await,
            "{identity} did not stop"
        );
    }
    let assignment = wait_balanced(&live, LEASE * 2).await;
    assert_eq!(
        assignment["replica-a"].len(),
        SHARDS as usize,
        "{assignment:?}"
    );
    head = push(&mut repo, 5);
    for i in 0..RESOURCES {
        request_sync(&api, &format!("app-{i:02}"), &format!("one-{i}")).await;
    }
    wait_all_at(&api, &head, INTERVAL + ALLOWANCE * 2, || logs(&replicas)).await;
    for identity in ["replica-e", "replica-f"] {
        let operator = Operator::start(replica(&ns.name, &db.url, identity)).await;
        live.lock()
            .unwrap()
            .insert(identity.into(), operator.probe_addr);
        replicas.insert(identity.into(), operator);
    }
    let assignment = wait_balanced(&live, LEASE * 4).await;
    println!("back to three: {assignment:?}");
    head = push(&mut repo, 6);
    for i in 0..RESOURCES {
        request_sync(&api, &format!("app-{i:02}"), &format!("three-{i}")).await;
    }
    wait_all_at(&api, &head, INTERVAL + ALLOWANCE * 2, || logs(&replicas)).await;

    *stop.lock().unwrap() = true;
    let (samples, violations) = sampler.await.expect("sampler");
    println!("{samples} ownership samples");
    assert!(samples > 20, "too few samples: {samples}");
    assert!(violations.is_empty(), "{violations:#?}");
    let (overlaps, failed) = overlaps_and_failures(&db.pool).await;
    assert!(overlaps.is_empty(), "{overlaps:#?}");
    assert_eq!(
        failed, failed_after_kill,
        "a run was interrupted by scaling"
    );
    let open: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM project_syncs WHERE status IN ('PENDING', 'IN_PROGRESS')",
    )
    .fetch_one(&db.pool)
    .await
    .expect("count open runs");
    assert_eq!(open, 0, "runs left open");
    let metrics = replicas["replica-a"].metrics().await;
    for name in [
        "projectsync_shards_owned",
        "projectsync_shard_handovers_total",
        "projectsync_shard_queue_depth",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
}

#[tokio::test]
async fn a_replica_streams_the_progress_of_a_run_another_replica_does() {
    let ns = fresh_namespace("shards-sse").await;
    let db = fresh_database("shards_sse").await;
    let mut repo = TestRepo::new("app");
    repo.write("README.md", "# app\n");
    let first = repo.commit("first");
    let daemon = GitDaemon::start(repo.root());
    let api: Api<ProjectSync> = Api::namespaced(ns.client.clone(), &ns.name);
    let a = Operator::start(replica(&ns.name, &db.url, "replica-a")).await;
    let b = Operator::start(replica(&ns.name, &db.url, "replica-b")).await;
    create(
        &api,
        "app",
        json!({ "source": { "git": { "url": daemon.url("app") } }, "branch": "main" }),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(90);
    let obj = loop {
        let obj = api.get("app").await.expect("get");
        if is_ready_at(&obj, &first) {
            break obj;
        }
        assert!(
            Instant::now() < deadline,
            "not Ready:\n{}\n{}",
            a.log_tail(),
            b.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let shard = shard_of_uid(obj.uid().as_deref().expect("uid"), SHARDS);
    let deadline = Instant::now() + Duration::from_secs(30);
    let viewer = loop {
        let (on_a, on_b) = (owned(a.probe_addr).await, owned(b.probe_addr).await);
        match (
            on_a.is_some_and(|s| s.contains(&shard)),
            on_b.is_some_and(|s| s.contains(&shard)),
        ) {
            (true, false) => break &b,
            (false, true) => break &a,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "shard {shard} not owned by exactly one replica"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Readiness says the viewer relays the others' progress.
    let (_, body) = http_get(viewer.probe_addr, "/readyz")
        .await
        .expect("readyz");
    let body: serde_json::Value = serde_json::from_str(&body).expect("readyz JSON");
    assert_eq!(body["serves"]["progress"], "allReplicas", "{body}");
    assert_eq!(body["reconciles"]["shards"], SHARDS);

    let url = format!(
        "http://{}/api/v1/events/project-sync/{}/app",
        viewer.addr, ns.name
    );
    let response = reqwest::Client::new()
        .get(&url)
        .send()
        .await
        .expect("connect");
    assert_eq!(response.status(), 200);
    let reader = tokio::spawn(async move {
        let mut response = response;
        let mut text = String::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.contains("event: completed") && text.ends_with("\n\n") {
                break;
            }
        }
        text
    });
    repo.write("src/lib.rs", "pub fn b() {}\n");
    let second = repo.commit("second");
    request_sync(&api, "app", "relay").await;
    let text = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no completed event on the non-owner:\n{}\n{}",
                a.log_tail(),
                b.log_tail()
            )
        })
        .expect("reader");
    assert!(text.contains("event: started"), "{text}");
    assert!(text.contains(&second), "the run of the new commit: {text}");
}

#[tokio::test]
async fn a_label_selector_splits_resources_between_installs_and_a_bad_one_stops_the_operator() {
    let ns = fresh_namespace("shards-label").await;
    let db = fresh_database("shards_label").await;
    let mut repo = TestRepo::new("app");
    repo.write("README.md", "# app\n");
    let first = repo.commit("first");
    let daemon = GitDaemon::start(repo.root());
    let api: Api<ProjectSync> = Api::namespaced(ns.client.clone(), &ns.name);

    let mut bad = OperatorConfig::new(&ns.name, &db.url);
    bad.extra_args = vec!["--watch-label-selector".into(), "key in (a".into()];
    let mut bad = Operator::spawn(bad);
    let deadline = Instant::now() + Duration::from_secs(30);
    while bad.is_running() {
        assert!(
            Instant::now() < deadline,
            "a bad selector did not stop the operator"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        bad.log_text().contains("--watch-label-selector"),
        "{}",
        bad.log_tail()
    );

    let mut config = OperatorConfig::new(&ns.name, &db.url);
    config.extra_args = vec![
        "--watch-label-selector".into(),
        "sharding.projectsync.dev/key in (a,b)".into(),
    ];
    let operator = Operator::start(config).await;
    for (name, key) in [("ours", "a"), ("theirs", "c")] {
        let object: ProjectSync = serde_json::from_value(json!({
            "apiVersion": "projectsync.dev/v1alpha1",
            "kind": "ProjectSync",
            "metadata": { "name": name, "labels": { "sharding.projectsync.dev/key": key } },
            "spec": { "source": { "git": { "url": daemon.url("app") } }, "branch": "main" },
        }))
        .expect("ProjectSync");
        api.create(&PostParams::default(), &object)
            .await
            .expect("create");
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    while !is_ready_at(&api.get("ours").await.expect("get"), &first) {
        assert!(
            Instant::now() < deadline,
            "not Ready:\n{}",
            operator.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Both were created before the first reconcile: had the watch seen
    // "theirs", it would have a status (or a finalizer) by now.
    let theirs = api.get("theirs").await.expect("get");
    assert!(theirs.status.is_none(), "{:?}", theirs.status);
    assert!(theirs.finalizers().is_empty());
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM projects WHERE key = $1")
        .bind(format!("{}/theirs", ns.name))
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(runs, 0);
}
