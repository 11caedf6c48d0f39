//! The per-resource gauges of a real operator (against the real API server,
//! Postgres and the GitHub stand-in): a synced resource shows Ready with
//! its sync times and interval, a stalled one shows Stalled, and a deleted
//! one leaves no series behind.

use std::time::Duration;

use kube::{Api, api::DeleteParams};
use projectsync::api::ProjectSync;
use serde_json::json;
use support::{
    fresh_database, fresh_namespace,
    github::GithubStandIn,
    operator::{Operator, OperatorConfig},
    psync::{WAIT, create, synced_at, wait_until},
    repo::TestRepo,
};

/// The value of the series `name{labels}` in `metrics`, if present.
fn value(metrics: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{name}{{{labels}}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|v| v.parse().ok())
}

/// Polls `/metrics` (bounded by [`WAIT`]) until `ready` holds.
async fn metrics_until(operator: &Operator, what: &str, ready: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let metrics = operator.metrics().await;
        if ready(&metrics) {
            return metrics;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics never showed {what}:\n{metrics}\n{}",
            operator.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn each_resource_has_gauges_of_its_state_and_a_deleted_one_leaves_none() {
    let ns = fresh_namespace("op-metrics").await;
    let db = fresh_database("op_metrics").await;
    let mut repo = TestRepo::new("watched");
    repo.write("src/lib.rs", "pub fn f() {}\n");
    let head = repo.commit("first");
    let github = GithubStandIn::start("acme", "watched", repo.git_dir()).await;
    let operator = Operator::start(OperatorConfig::new(&ns.name, &db.url)).await;
    let api: Api<ProjectSync> = Api::namespaced(ns.client.clone(), &ns.name);

    let spec = |repo: &str| {
        json!({
            "source": { "github": { "owner": "acme", "repo": repo, "apiUrl": github.api_url() } },
            "branch": "main",
            "interval": "2m",
        })
    };
    create(&api, "watched", spec("watched")).await;
    // A repository the server does not have: stalled until the spec changes.
    create(&api, "missing", spec("missing")).await;
    wait_until(
        &api,
        "watched",
        || operator.log_tail(),
        "synced",
        synced_at(head),
    )
    .await;

    let watched = format!("name=\"watched\",namespace=\"{}\"", ns.name);
    let missing = format!("name=\"missing\",namespace=\"{}\"", ns.name);
    let condition = |resource: &str, status: &str, type_: &str| {
        format!("{resource},status=\"{status}\",type=\"{type_}\"")
    };
    let metrics = metrics_until(&operator, "watched Ready and missing Stalled", |m| {
        value(
            m,
            "projectsync_resource_condition",
            &condition(&watched, "True", "Ready"),
        ) == Some(1.0)
            && value(
                m,
                "projectsync_resource_condition",
                &condition(&missing, "True", "Stalled"),
            ) == Some(1.0)
    })
    .await;
    // One series per condition type, with the current status only.
    let ready_series = metrics
        .lines()
        .filter(|l| l.starts_with("projectsync_resource_condition{") && l.contains(&watched))
        .count();
    assert_eq!(ready_series, 3, "{metrics}");
    assert_eq!(
        value(
            &metrics,
            "projectsync_resource_condition",
            &condition(&missing, "False", "Ready")
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&metrics, "projectsync_resource_interval_seconds", &watched),
        Some(120.0)
    );
    assert_eq!(
        value(&metrics, "projectsync_resource_suspended", &watched),
        Some(0.0)
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64();
    for gauge in [
        "projectsync_resource_last_sync_timestamp_seconds",
        "projectsync_resource_last_check_timestamp_seconds",
    ] {
        let at = value(&metrics, gauge, &watched).unwrap_or_else(|| panic!("{gauge}:\n{metrics}"));
        assert!(
            (now - WAIT.as_secs_f64()..=now + 5.0).contains(&at),
            "{gauge} = {at}, now {now}"
        );
    }
    assert!(
        value(
            &metrics,
            "projectsync_resource_last_run_duration_seconds",
            &watched
        )
        .is_some_and(|d| (0.0..WAIT.as_secs_f64()).contains(&d)),
        "{metrics}"
    );
    // The stalled resource never synced: no sync time, no guess.
    assert_eq!(
        value(
            &metrics,
            "projectsync_resource_last_sync_timestamp_seconds",
            &missing
        ),
        None
    );

    api.delete("watched", &DeleteParams::default())
        .await
        .expect("delete");
    let metrics = metrics_until(&operator, "no series of the deleted resource", |m| {
        !m.contains(&watched)
    })
    .await;
    assert!(
        metrics.contains(&missing),
        "the other resource keeps its series"
    );
}
