//! Everything in `examples/` against the real API server from
//! `hack/testenv` (server-side dry runs only: the examples point at real
//! GitHub and must never meet a running operator): every ProjectSync
//! manifest, the `kubectl kustomize` output of the GitOps base and overlays,
//! the Argo CD health check (run by gopher-lua, the interpreter Argo CD
//! embeds) and the Flux and Argo CD objects that point at the overlays.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use serde_json::json;
use serde_yaml::Value;
use support::{
    fresh_namespace,
    helm::{describe, documents, to_yaml},
    kubectl,
};

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// YAML files below `dir`, sorted; directories holding a `kustomization.yaml`
/// are kustomize inputs (their patches are not whole objects) and are left
/// to [`kustomize`].
fn plain_yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if dir.join("kustomization.yaml").exists() {
        return found;
    }
    for entry in std::fs::read_dir(dir).expect("read examples dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            found.extend(plain_yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            found.push(path);
        }
    }
    found.sort();
    found
}

fn is_projectsync(doc: &Value) -> bool {
    doc["kind"].as_str() == Some("ProjectSync")
        && doc["apiVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("projectsync.dev/"))
}

fn read_docs(path: &Path) -> Vec<Value> {
    documents(&std::fs::read_to_string(path).expect("read example"))
}

/// `kubectl kustomize <dir>` (the kustomize built into kubectl).
fn kustomize(dir: &Path) -> Vec<Value> {
    let out = kubectl(&["kustomize", dir.to_str().expect("utf-8 path")], "");
    assert!(
        out.success,
        "kubectl kustomize {} failed:\n{}",
        dir.display(),
        out.stderr
    );
    documents(&out.stdout)
}

/// Server-side dry run of `docs` in `namespace`; panics with the refusal.
fn assert_accepted(what: &str, namespace: &str, docs: &[&Value]) {
    let out = kubectl(
        &["apply", "--dry-run=server", "-n", namespace, "-f", "-"],
        &to_yaml(docs),
    );
    assert!(out.success, "{what} was refused:\n{}", out.stderr);
}

#[tokio::test]
async fn every_projectsync_example_is_accepted_by_the_api_server() {
    let ns = fresh_namespace("examples").await;
    let mut checked = Vec::new();
    for path in plain_yaml_files(&examples_dir()) {
        let docs = read_docs(&path);
        let syncs: Vec<&Value> = docs.iter().filter(|d| is_projectsync(d)).collect();
        if syncs.is_empty() {
            continue;
        }
        assert_accepted(&path.display().to_string(), &ns.name, &syncs);
        checked.push(
            path.file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned(),
        );
    }
    // The list: public, private with a token, GitHub Enterprise,
    // plain git over https with credentials, pinned commit, include/exclude,
    // embeddings.
    for expected in [
        "github-public.yaml",
        "github-private.yaml",
        "github-enterprise.yaml",
        "git-https.yaml",
        "pinned-commit.yaml",
        "include-exclude.yaml",
        "embeddings-openai.yaml",
    ] {
        assert!(
            checked.iter().any(|c| c == expected),
            "{expected} missing from {checked:?}"
        );
    }
}

#[tokio::test]
async fn gitops_base_and_overlays_build_with_kustomize_and_are_accepted() {
    let ns = fresh_namespace("examples-gitops").await;
    let gitops = examples_dir().join("gitops");
    let mut built = Vec::new();
    for (dir, namespace) in [
        ("base", None),
        ("overlays/staging", Some("code-index-staging")),
        ("overlays/production", Some("code-index")),
    ] {
        let docs = kustomize(&gitops.join(dir));
        let syncs: Vec<&Value> = docs.iter().filter(|d| is_projectsync(d)).collect();
        assert_eq!(
            syncs.len(),
            1,
            "{dir}: {:?}",
            docs.iter().map(describe).collect::<Vec<_>>()
        );
        assert_eq!(
            syncs[0]["metadata"]["namespace"].as_str(),
            namespace,
            "{dir}"
        );
        // Applied in the test's namespace: the overlay's own does not exist here.
        let mut sync = syncs[0].clone();
        sync["metadata"]["namespace"] = Value::String(ns.name.clone());
        assert_accepted(&format!("kubectl kustomize {dir}"), &ns.name, &[&sync]);
        built.push((dir, sync));
    }
    let spec = |i: usize| built[i].1["spec"].clone();
    assert_eq!(spec(0)["branch"].as_str(), Some("main"));
    assert_eq!(
        spec(1)["branch"].as_str(),
        Some("develop"),
        "staging follows develop"
    );
    assert_eq!(spec(1)["interval"].as_str(), Some("2m"));
    let commit = spec(2)["commit"]
        .as_str()
        .expect("production pins a commit")
        .to_string();
    assert!(
        commit.len() == 40 && commit.chars().all(|c| c.is_ascii_hexdigit()),
        "{commit}"
    );
    assert!(
        spec(2)["embedding"]["model"].is_string(),
        "production embeds"
    );
    for (dir, sync) in &built {
        let labels = &sync["metadata"]["labels"];
        assert_eq!(
            labels["app.kubernetes.io/part-of"].as_str(),
            Some("platform-api"),
            "{dir}"
        );
    }
}

/// Runs the Argo CD health check from `argocd-cm-health.yaml` on `obj`.
fn argocd_health(script: &Path, obj: &serde_json::Value) -> (String, String) {
    let runner = Path::new(env!("CARGO_MANIFEST_DIR")).join("hack/argocd-lua/run");
    let mut child = Command::new(&runner)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", runner.display()));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(obj.to_string().as_bytes())
        .expect("write object");
    let out = child.wait_with_output().expect("wait for the Lua runner");
    assert!(
        out.status.success(),
        "the health check failed on {obj}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON result");
    (
        result["status"].as_str().unwrap_or_default().to_string(),
        result["message"].as_str().unwrap_or_default().to_string(),
    )
}

fn with_conditions(
    generation: i64,
    observed: i64,
    conditions: serde_json::Value,
) -> serde_json::Value {
    json!({
        "apiVersion": "projectsync.dev/v1alpha1",
        "kind": "ProjectSync",
        "metadata": { "name": "app", "generation": generation },
        "spec": { "branch": "main" },
        "status": { "observedGeneration": observed, "conditions": conditions },
    })
}

#[test]
fn argocd_health_check_maps_conditions_to_argocd_health() {
    let path = examples_dir().join("gitops/argocd/argocd-cm-health.yaml");
    let cm = &read_docs(&path)[0];
    assert_eq!(cm["metadata"]["name"].as_str(), Some("argocd-cm"));
    // Argo CD's key: <group>_<kind>.
    let script = cm["data"]["resource.customizations.health.projectsync.dev_ProjectSync"]
        .as_str()
        .expect("the health check key");
    let dir = tempfile::tempdir().expect("temporary directory");
    let script_path = dir.path().join("health.lua");
    std::fs::write(&script_path, script).expect("write script");

    let ready = |status: &str, reason: &str, message: &str| json!({ "type": "Ready", "status": status, "reason": reason, "message": message });
    let cases = [
        (
            "never reconciled",
            json!({ "metadata": { "name": "app", "generation": 1 }, "spec": {} }),
            "Progressing",
            "Waiting",
        ),
        (
            "synced",
            with_conditions(
                2,
                2,
                json!([ready("True", "Succeeded", "synced abc1234: 3 files")]),
            ),
            "Healthy",
            "synced abc1234",
        ),
        (
            "synced, but an older generation",
            with_conditions(3, 2, json!([ready("True", "Succeeded", "synced")])),
            "Progressing",
            "generation 3",
        ),
        (
            "first sync running",
            with_conditions(
                1,
                1,
                json!([
                    ready("Unknown", "Progressing", "syncing abc1234"),
                    { "type": "Reconciling", "status": "True", "reason": "Progressing", "message": "syncing abc1234" },
                ]),
            ),
            "Progressing",
            "syncing abc1234",
        ),
        (
            "failed, retrying",
            with_conditions(
                1,
                1,
                json!([
                    ready("False", "FetchFailed", "cannot reach the remote"),
                    { "type": "Reconciling", "status": "True", "reason": "ProgressingWithRetry", "message": "cannot reach the remote" },
                ]),
            ),
            "Degraded",
            "FetchFailed: cannot reach the remote",
        ),
        (
            "stalled",
            with_conditions(
                1,
                1,
                json!([
                    ready("False", "SecretNotFound", "Secret ns/gh not found"),
                    { "type": "Stalled", "status": "True", "reason": "SecretNotFound", "message": "Secret ns/gh not found" },
                ]),
            ),
            "Degraded",
            "SecretNotFound: Secret ns/gh not found",
        ),
    ];
    for (case, obj, status, message) in cases {
        let (got_status, got_message) = argocd_health(&script_path, &obj);
        assert_eq!(got_status, status, "{case}: {got_message}");
        assert!(
            got_message.contains(message),
            "{case}: {got_message:?} lacks {message:?}"
        );
    }
    let mut suspended = with_conditions(1, 1, json!([ready("True", "Succeeded", "synced")]));
    suspended["spec"]["suspend"] = json!(true);
    assert_eq!(argocd_health(&script_path, &suspended).0, "Suspended");
}

#[test]
fn flux_and_argocd_objects_point_at_the_overlays_and_the_projectsyncs_they_build() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let gitops = examples_dir().join("gitops");
    let overlay_namespace = |path: &str| -> String {
        let dir = root.join(path.trim_start_matches("./"));
        assert!(
            dir.join("kustomization.yaml").exists(),
            "{path} is not a kustomize directory"
        );
        let docs = kustomize(&dir);
        let sync = docs
            .iter()
            .find(|d| is_projectsync(d))
            .expect("a ProjectSync");
        sync["metadata"]["namespace"]
            .as_str()
            .expect("namespace")
            .to_string()
    };

    let flux = read_docs(&gitops.join("flux/flux-kustomizations.yaml"));
    let kustomizations: Vec<&Value> = flux
        .iter()
        .filter(|d| d["kind"].as_str() == Some("Kustomization"))
        .collect();
    assert_eq!(kustomizations.len(), 2);
    for k in &kustomizations {
        let spec = &k["spec"];
        let namespace = overlay_namespace(spec["path"].as_str().expect("path"));
        let waits = spec["wait"].as_bool() == Some(true);
        let checks = spec["healthChecks"]
            .as_sequence()
            .cloned()
            .unwrap_or_default();
        assert!(
            waits || !checks.is_empty(),
            "{}: neither wait nor healthChecks",
            describe(k)
        );
        for check in checks {
            assert_eq!(
                check["apiVersion"].as_str(),
                Some("projectsync.dev/v1alpha1")
            );
            assert_eq!(check["kind"].as_str(), Some("ProjectSync"));
            assert_eq!(check["namespace"].as_str(), Some(namespace.as_str()));
        }
    }

    let argocd = read_docs(&gitops.join("argocd/applications.yaml"));
    assert_eq!(argocd.len(), 2);
    for app in &argocd {
        let namespace = overlay_namespace(app["spec"]["source"]["path"].as_str().expect("path"));
        assert_eq!(
            app["spec"]["destination"]["namespace"].as_str(),
            Some(namespace.as_str())
        );
    }
}
