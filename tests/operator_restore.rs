//! The declarative restore (`spec.restore`) against the real operator, API
//! server, Postgres and git daemon: the named sync's picture becomes current
//! and is held through requested syncs and a new commit on the branch
//! (phase `Restored`, Ready with reason `RestoreHeld`, the `Restore` column
//! of `kubectl get`), a bad id stalls with `RestoreTargetInvalid`, and
//! removing the field follows the branch again. Loopback only, bounded.

use std::collections::BTreeMap;

use kube::{
    Api,
    api::{Patch, PatchParams},
};
use projectsync::api::{Phase, ProjectSync};
use serde_json::json;
use support::{
    convergence::{active_files, tree_of},
    fresh_database, fresh_namespace,
    git_server::GitDaemon,
    kubectl,
    operator::{Operator, OperatorConfig},
    psync::{condition, create, request_sync, synced_at, wait_until},
    repo::TestRepo,
};

fn held_at(sync: String) -> impl Fn(&ProjectSync) -> bool {
    move |obj| {
        obj.status.as_ref().is_some_and(|s| {
            s.phase == Some(Phase::Restored)
                && s.observed_generation == obj.metadata.generation
                && s.conditions.iter().any(|c| {
                    c.type_ == "Ready"
                        && c.status == "True"
                        && c.reason == "RestoreHeld"
                        && c.message.contains(&sync)
                })
        })
    }
}

async fn set_restore(api: &Api<ProjectSync>, name: &str, sync: Option<&str>) {
    let patch = json!({ "spec": { "restore": sync.map(|id| json!({ "syncId": id })) } });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch spec.restore");
}

#[tokio::test]
async fn a_declarative_restore_survives_polls_and_a_new_commit_until_it_is_lifted() {
    let ns = fresh_namespace("restore").await;
    let db = fresh_database("restore").await;
    let mut repo = TestRepo::new("app");
    repo.write("README.md", "# app\n")
        .write("src/lib.rs", "pub fn one() {}\n");
    let first = repo.commit("one");
    let daemon = GitDaemon::start(repo.root());
    let operator = Operator::start(OperatorConfig::new(&ns.name, &db.url)).await;
    let api: Api<ProjectSync> = Api::namespaced(ns.client.clone(), &ns.name);
    create(
        &api,
        "app",
        json!({ "source": { "git": { "url": daemon.url("app") } }, "branch": "main", "interval": "30s" }),
    )
    .await;
    let log = || operator.log_tail();
    let obj = wait_until(&api, "app", log, "synced", synced_at(first.clone())).await;
    let first_sync = obj.status.and_then(|s| s.last_sync).expect("lastSync").id;

    repo.write("src/lib.rs", "pub fn one() {}\npub fn two() {}\n")
        .write("src/new.rs", "pub fn new() {}\n");
    let second = repo.commit("two");
    request_sync(&api, "app", "second").await;
    wait_until(
        &api,
        "app",
        log,
        "synced at the second commit",
        synced_at(second.clone()),
    )
    .await;
    let key = format!("{}/app", ns.name);
    assert_eq!(active_files(&db.pool, &key).await, tree_of(&repo, &second));

    // Hold the first sync, as a GitOps repository would declare it.
    set_restore(&api, "app", Some(&first_sync)).await;
    let obj = wait_until(&api, "app", log, "held", held_at(first_sync.clone())).await;
    let restore_run = obj
        .status
        .as_ref()
        .and_then(|s| s.last_sync.clone())
        .expect("lastSync");
    assert_eq!(restore_run.commit, first);
    assert_eq!(
        restore_run.trigger.as_deref(),
        Some(format!("restore of {first_sync}").as_str())
    );
    let held_picture: BTreeMap<String, String> = tree_of(&repo, &first);
    assert_eq!(active_files(&db.pool, &key).await, held_picture);
    let table = kubectl(&["get", "psync", "app", "-n", &ns.name], "").stdout;
    assert!(table.contains("Restored"), "the phase column: {table}");
    let wide = kubectl(&["get", "psync", "app", "-n", &ns.name, "-o", "wide"], "").stdout;
    assert!(wide.contains("RESTORE"), "{wide}");
    assert!(wide.contains(&first_sync), "{wide}");

    // A new commit and requested syncs do not undo it.
    repo.write("src/third.rs", "pub fn third() {}\n");
    let third = repo.commit("three");
    for value in ["poll-1", "poll-2"] {
        request_sync(&api, "app", value).await;
        let obj = wait_until(
            &api,
            "app",
            log,
            "the request handled",
            move |o: &ProjectSync| {
                o.status
                    .as_ref()
                    .and_then(|s| s.last_handled_requested_at.as_deref())
                    == Some(value)
            },
        )
        .await;
        let status = obj.status.expect("status");
        assert_eq!(status.phase, Some(Phase::Restored), "{value}");
        assert_eq!(status.last_sync.map(|s| s.id), Some(restore_run.id.clone()));
        assert_eq!(active_files(&db.pool, &key).await, held_picture, "{value}");
    }
    let runs: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM project_syncs s JOIN projects p ON p.id = s.project_id WHERE p.key = $1",
    )
    .bind(&key)
    .fetch_one(&db.pool)
    .await
    .expect("count runs");
    assert_eq!(runs, 3, "first, second and the restore run: nothing since");

    // Lifted: the branch is followed again, from the restored picture.
    set_restore(&api, "app", None).await;
    wait_until(
        &api,
        "app",
        log,
        "synced at the third commit",
        synced_at(third.clone()),
    )
    .await;
    assert_eq!(active_files(&db.pool, &key).await, tree_of(&repo, &third));
    let obj = api.get("app").await.expect("get");
    assert_eq!(obj.status.and_then(|s| s.phase), Some(Phase::Synced));
}

#[tokio::test]
async fn a_restore_of_a_sync_that_is_not_this_resources_stalls_with_a_reason() {
    let ns = fresh_namespace("restore-bad").await;
    let db = fresh_database("restore_bad").await;
    let mut repo = TestRepo::new("app");
    repo.write("README.md", "# app\n");
    let head = repo.commit("one");
    let daemon = GitDaemon::start(repo.root());
    let operator = Operator::start(OperatorConfig::new(&ns.name, &db.url)).await;
    let api: Api<ProjectSync> = Api::namespaced(ns.client.clone(), &ns.name);
    create(
        &api,
        "app",
        json!({ "source": { "git": { "url": daemon.url("app") } }, "branch": "main", "interval": "1h" }),
    )
    .await;
    let log = || operator.log_tail();
    wait_until(&api, "app", log, "synced", synced_at(head.clone())).await;
    set_restore(&api, "app", Some("0190f3a2-7c1e-7b8a-9d2e-3f4a5b6c7d8e")).await;
    let obj = wait_until(&api, "app", log, "stalled", |o: &ProjectSync| {
        condition(o, "Stalled")
            .is_some_and(|(status, reason, _)| status == "True" && reason == "RestoreTargetInvalid")
    })
    .await;
    let (_, _, message) = condition(&obj, "Stalled").expect("Stalled");
    assert!(message.contains("names no sync run"), "{message}");
    // The API server refuses an id that is not a UUID, naming the field.
    let patch = json!({ "spec": { "restore": { "syncId": "'; DROP TABLE project_syncs; --" } } });
    let refused = api
        .patch("app", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect_err("refused");
    assert!(refused.to_string().contains("restore.syncId"), "{refused}");
    // Lifting the bad hold recovers.
    set_restore(&api, "app", None).await;
    wait_until(&api, "app", log, "ready again", |o: &ProjectSync| {
        condition(o, "Stalled").is_none()
            && condition(o, "Ready").is_some_and(|(status, _, _)| status == "True")
    })
    .await;
}
