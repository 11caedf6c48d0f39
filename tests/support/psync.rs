//! ProjectSync helpers for operator tests: create one from a spec, ask for a
//! sync as a user would, and wait (watching, with a deadline) for a status.

use std::time::Duration;

use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
    runtime::wait::await_condition,
};
use projectsync::api::{ProjectSync, REQUESTED_AT_ANNOTATION};
use serde_json::json;

/// How long a test waits for the operator to reach a state.
pub const WAIT: Duration = Duration::from_secs(90);

/// Creates a ProjectSync named `name` with `spec`.
pub async fn create(api: &Api<ProjectSync>, name: &str, spec: serde_json::Value) {
    let object: ProjectSync = serde_json::from_value(json!({
        "apiVersion": "projectsync.dev/v1alpha1",
        "kind": "ProjectSync",
        "metadata": { "name": name },
        "spec": spec,
    }))
    .expect("valid ProjectSync");
    api.create(&PostParams::default(), &object)
        .await
        .expect("create ProjectSync");
}

/// Asks for a sync now, as `kubectl annotate ... projectsync.dev/requested-at=VALUE` does.
pub async fn request_sync(api: &Api<ProjectSync>, name: &str, value: &str) {
    let patch = json!({ "metadata": { "annotations": { REQUESTED_AT_ANNOTATION: value } } });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("annotate");
}

/// Waits until `condition` holds; on timeout panics with the status and `log()`
/// (the operator's log tail). A watch that ends with an error (e.g. 410
/// "too old resource version" when the API server compacts) is restarted
/// within the same deadline, as a real client would.
pub async fn wait_until(
    api: &Api<ProjectSync>,
    name: &str,
    log: impl Fn() -> String,
    what: &str,
    condition: impl Fn(&ProjectSync) -> bool,
) -> ProjectSync {
    wait_until_within(api, name, WAIT, log, what, condition).await
}

/// [`wait_until`] with its own bound, for runs that take longer than [`WAIT`]
/// on purpose (benchmarks over 100,000 files).
pub async fn wait_until_within(
    api: &Api<ProjectSync>,
    name: &str,
    within: Duration,
    log: impl Fn() -> String,
    what: &str,
    condition: impl Fn(&ProjectSync) -> bool,
) -> ProjectSync {
    let deadline = tokio::time::Instant::now() + within;
    let condition = std::sync::Arc::new(condition);
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        let condition = condition.clone();
        let watched = await_condition(api.clone(), name, move |obj: Option<&ProjectSync>| {
            obj.is_some_and(|o| condition(o))
        });
        match tokio::time::timeout_at(deadline, watched).await {
            Ok(Ok(Some(obj))) => return obj,
            Ok(other) => last = Some(format!("{other:?}")),
            Err(_) => break,
        }
    }
    let current = api
        .get(name)
        .await
        .ok()
        .and_then(|o| serde_json::to_string_pretty(&o.status).ok());
    panic!(
        "{name}: not {what} within {within:?} (last watch result: {})\nstatus: {}\nlog:\n{}",
        last.unwrap_or_else(|| "none".into()),
        current.unwrap_or_default(),
        log()
    )
}

/// Ready=True at `commit`.
pub fn synced_at(commit: String) -> impl Fn(&ProjectSync) -> bool {
    move |obj| {
        obj.status.as_ref().is_some_and(|s| {
            s.last_synced_commit.as_deref() == Some(commit.as_str())
                && s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
        })
    }
}

/// `(status, reason, message)` of a condition.
pub fn condition(obj: &ProjectSync, type_: &str) -> Option<(String, String, String)> {
    obj.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}
