//! The ProjectSync CRD against the real kube-apiserver from `hack/testenv`:
//! it is accepted and Established, the server applies defaults, bad manifests
//! are refused with a message that names the fix, and `kubectl get` /
//! `kubectl wait` understand the resource. The examples are checked in
//! tests/examples.rs.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use projectsync::api::ProjectSync;
use serde_json::{Value, json};
use support::{fresh_namespace, kubectl};

/// A valid manifest to mutate in the bad-manifest table.
fn valid_manifest(name: &str) -> Value {
    json!({
        "apiVersion": "projectsync.dev/v1alpha1",
        "kind": "ProjectSync",
        "metadata": { "name": name },
        "spec": {
            "source": { "github": { "owner": "kube-rs", "repo": "kube" } },
            "branch": "main",
        },
    })
}

/// Sets `value` at a JSON pointer, creating objects on the way.
fn set(manifest: &mut Value, pointer: &str, value: Value) {
    let mut target = manifest;
    let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    for part in &parts[..parts.len() - 1] {
        target = target
            .as_object_mut()
            .expect("object on the path")
            .entry(part.to_string())
            .or_insert_with(|| json!({}));
    }
    target
        .as_object_mut()
        .expect("object at the parent")
        .insert(parts[parts.len() - 1].to_string(), value);
}

fn remove(manifest: &mut Value, pointer: &str) {
    let (parent, last) = pointer.rsplit_once('/').expect("pointer with a parent");
    manifest
        .pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .expect("parent object")
        .remove(last);
}

fn apply_dry_run(namespace: &str, manifest: &str) -> support::KubectlOutput {
    kubectl(
        &["apply", "--dry-run=server", "-n", namespace, "-f", "-"],
        manifest,
    )
}

#[tokio::test]
async fn crd_is_established_with_the_contract_names() {
    let ns = fresh_namespace("crd-established").await;
    let crd = Api::<CustomResourceDefinition>::all(ns.client.clone())
        .get("projectsyncs.projectsync.dev")
        .await
        .expect("CRD exists");
    let status = crd.status.expect("CRD status");
    let established = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Established")
        .expect("Established condition");
    assert_eq!(established.status, "True");
    let names = status.accepted_names.expect("accepted names");
    assert_eq!(names.kind, "ProjectSync");
    assert_eq!(names.plural, "projectsyncs");
    assert_eq!(names.short_names, Some(vec!["psync".to_string()]));
    assert_eq!(crd.spec.scope, "Namespaced");
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    assert!(
        version
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some()
    );
}

#[tokio::test]
async fn server_applies_defaults_to_a_minimal_manifest() {
    let ns = fresh_namespace("crd-defaults").await;
    // Raw JSON with only what a user writes: the Rust defaults must not hide the server's.
    let mut manifest = valid_manifest("minimal");
    set(
        &mut manifest,
        "/spec/source/github/secretRef",
        json!({ "name": "s" }),
    );
    set(
        &mut manifest,
        "/spec/embedding",
        json!({ "provider": "OpenAI", "endpoint": "http://127.0.0.1:1/v1", "model": "m" }),
    );
    let created = kubectl(
        &["create", "-n", &ns.name, "-o", "json", "-f", "-"],
        &manifest.to_string(),
    );
    assert!(created.success, "{}", created.stderr);
    let stored: Value = serde_json::from_str(&created.stdout).expect("json");
    let spec = &stored["spec"];
    assert_eq!(spec["interval"], "5m");
    assert_eq!(spec["historyLimit"], 10);
    assert_eq!(spec["maxFileSize"], "1Mi");
    assert_eq!(spec["deletionPolicy"], "Retain");
    assert_eq!(spec["suspend"], false);
    assert_eq!(spec["source"]["github"]["secretRef"]["key"], "token");
    assert_eq!(spec["embedding"]["batchSize"], 64);

    // And the typed client reads back what the server stored.
    let api = Api::<ProjectSync>::namespaced(ns.client.clone(), &ns.name);
    let object = api.get("minimal").await.expect("typed get");
    assert_eq!(object.spec.interval, "5m");
    assert_eq!(object.spec.history_limit, 10);
}

/// A bad manifest and a part of the message the user must see.
struct Bad {
    case: &'static str,
    mutate: fn(&mut Value),
    message: &'static str,
}

fn bad_manifests() -> Vec<Bad> {
    macro_rules! bad {
        ($case:expr, |$m:ident| $body:expr, $message:expr) => {
            Bad {
                case: $case,
                mutate: |$m: &mut Value| {
                    $body;
                },
                message: $message,
            }
        };
    }
    vec![
        // Source: exactly one of github / git.
        bad!(
            "both sources",
            |m| set(
                m,
                "/spec/source/git",
                json!({"url": "https://example.com/r.git"})
            ),
            "exactly one of source.github or source.git must be set"
        ),
        bad!(
            "no source",
            |m| set(m, "/spec/source", json!({})),
            "exactly one of source.github or source.git must be set"
        ),
        bad!(
            "missing source",
            |m| remove(m, "/spec/source"),
            "spec.source: Required value"
        ),
        bad!(
            "missing branch",
            |m| remove(m, "/spec/branch"),
            "spec.branch: Required value"
        ),
        bad!(
            "missing owner",
            |m| remove(m, "/spec/source/github/owner"),
            "spec.source.github.owner: Required value"
        ),
        bad!(
            "missing git url",
            |m| set(m, "/spec/source", json!({"git": {}})),
            "spec.source.git.url: Required value"
        ),
        // GitHub names.
        bad!(
            "owner with a space",
            |m| set(m, "/spec/source/github/owner", json!("kube rs")),
            "owner must be a GitHub user or organization name"
        ),
        bad!(
            "owner starting with a hyphen",
            |m| set(m, "/spec/source/github/owner", json!("-kube")),
            "owner must be a GitHub user or organization name"
        ),
        bad!(
            "owner too long",
            |m| set(m, "/spec/source/github/owner", json!("a".repeat(40))),
            "spec.source.github.owner: Too long"
        ),
        bad!(
            "repo with a slash",
            |m| set(m, "/spec/source/github/repo", json!("kube/rs")),
            "repo must be a GitHub repository name"
        ),
        bad!(
            "repo with .git",
            |m| set(m, "/spec/source/github/repo", json!("kube.git")),
            "without a .git suffix"
        ),
        bad!(
            "repo dot-dot",
            |m| set(m, "/spec/source/github/repo", json!("..")),
            "repo must be a GitHub repository name"
        ),
        bad!(
            "apiUrl not a URL",
            |m| set(m, "/spec/source/github/apiUrl", json!("github.example.com")),
            "apiUrl must be an http(s) URL"
        ),
        bad!(
            "git url not a URL",
            |m| set(m, "/spec/source", json!({"git": {"url": "not a url"}})),
            "url must be a git remote URL"
        ),
        // Branch names (git check-ref-format).
        bad!(
            "branch with dot-dot",
            |m| set(m, "/spec/branch", json!("feature..x")),
            "branch must be a valid git branch name"
        ),
        bad!(
            "branch with a space",
            |m| set(m, "/spec/branch", json!("my branch")),
            "branch must be a valid git branch name"
        ),
        bad!(
            "branch ending in .lock",
            |m| set(m, "/spec/branch", json!("main.lock")),
            "branch must be a valid git branch name"
        ),
        bad!(
            "branch starting with a hyphen",
            |m| set(m, "/spec/branch", json!("-main")),
            "branch must be a valid git branch name"
        ),
        bad!(
            "branch with a tilde",
            |m| set(m, "/spec/branch", json!("main~1")),
            "branch must be a valid git branch name"
        ),
        bad!(
            "branch with @{",
            |m| set(m, "/spec/branch", json!("main@{1}")),
            "branch must be a valid git branch name"
        ),
        bad!(
            "empty branch",
            |m| set(m, "/spec/branch", json!("")),
            "spec.branch: Invalid value"
        ),
        // Commit, interval, sizes, limits.
        bad!(
            "short commit",
            |m| set(m, "/spec/commit", json!("abc1234")),
            "commit must be a full lowercase hex commit SHA"
        ),
        bad!(
            "uppercase commit",
            |m| set(
                m,
                "/spec/commit",
                json!("ABCDEF0123456789ABCDEF0123456789ABCDEF01")
            ),
            "commit must be a full lowercase hex commit SHA"
        ),
        bad!(
            "interval not a duration",
            |m| set(m, "/spec/interval", json!("soon")),
            "interval must be a duration of at least 30s"
        ),
        bad!(
            "interval too short",
            |m| set(m, "/spec/interval", json!("5s")),
            "interval must be a duration of at least 30s"
        ),
        bad!(
            "maxFileSize zero",
            |m| set(m, "/spec/maxFileSize", json!(0)),
            "maxFileSize must be a positive number of bytes"
        ),
        bad!(
            "maxFileSize negative",
            |m| set(m, "/spec/maxFileSize", json!(-5)),
            "maxFileSize must be a positive number of bytes"
        ),
        bad!(
            "maxFileSize not a quantity",
            |m| set(m, "/spec/maxFileSize", json!("big")),
            "maxFileSize must be a positive number of bytes"
        ),
        bad!(
            "maxFileSize over 16Mi in bytes",
            |m| set(m, "/spec/maxFileSize", json!(16 * 1024 * 1024 + 1)),
            "at most 16Mi"
        ),
        bad!(
            "maxFileSize over 16Mi as a quantity",
            |m| set(m, "/spec/maxFileSize", json!("1Gi")),
            "at most 16Mi"
        ),
        bad!(
            "maxTreeEntries zero",
            |m| set(m, "/spec/maxTreeEntries", json!(0)),
            "spec.maxTreeEntries in body should be greater than or equal to 1"
        ),
        bad!(
            "historyLimit zero",
            |m| set(m, "/spec/historyLimit", json!(0)),
            "spec.historyLimit: Invalid value: 0: spec.historyLimit in body should be greater than or equal to 1"
        ),
        bad!(
            "historyLimit too large",
            |m| set(m, "/spec/historyLimit", json!(1000)),
            "spec.historyLimit in body should be less than or equal to 100"
        ),
        bad!(
            "embedding without endpoint",
            |m| set(
                m,
                "/spec/embedding",
                json!({"provider": "OpenAI", "model": "m"})
            ),
            "embedding.endpoint and embedding.model are required"
        ),
        bad!(
            "unknown embedding provider",
            |m| set(m, "/spec/embedding", json!({"provider": "Magic"})),
            "spec.embedding.provider: Unsupported value: \"Magic\""
        ),
        bad!(
            "unknown deletion policy",
            |m| set(m, "/spec/deletionPolicy", json!("Sometimes")),
            "spec.deletionPolicy: Unsupported value: \"Sometimes\""
        ),
        // Unknown fields and the wrong API version.
        bad!(
            "unknown spec field",
            |m| set(m, "/spec/brnach", json!("main")),
            "unknown field \"spec.brnach\""
        ),
        bad!(
            "unknown nested field",
            |m| set(m, "/spec/source/github/token", json!("x")),
            "unknown field \"spec.source.github.token\""
        ),
        bad!(
            "wrong apiVersion",
            |m| set(m, "/apiVersion", json!("projectsync.dev/v1")),
            "no matches for kind \"ProjectSync\" in version \"projectsync.dev/v1\""
        ),
        // A wrong type for every field.
        bad!(
            "source is a string",
            |m| set(m, "/spec/source", json!("github")),
            "spec.source: Invalid value: \"string\": spec.source in body must be of type object"
        ),
        bad!(
            "github is a string",
            |m| set(m, "/spec/source/github", json!("kube-rs/kube")),
            "spec.source.github in body must be of type object"
        ),
        bad!(
            "owner is a number",
            |m| set(m, "/spec/source/github/owner", json!(42)),
            "spec.source.github.owner in body must be of type string"
        ),
        bad!(
            "repo is a number",
            |m| set(m, "/spec/source/github/repo", json!(42)),
            "spec.source.github.repo in body must be of type string"
        ),
        bad!(
            "apiUrl is a bool",
            |m| set(m, "/spec/source/github/apiUrl", json!(true)),
            "spec.source.github.apiUrl in body must be of type string"
        ),
        bad!(
            "secretRef is a string",
            |m| set(m, "/spec/source/github/secretRef", json!("token")),
            "spec.source.github.secretRef in body must be of type object"
        ),
        bad!(
            "secretRef.name is a number",
            |m| set(m, "/spec/source/github/secretRef", json!({"name": 1})),
            "spec.source.github.secretRef.name in body must be of type string"
        ),
        bad!(
            "secretRef.key is a list",
            |m| set(
                m,
                "/spec/source/github/secretRef",
                json!({"name": "s", "key": ["a"]})
            ),
            "spec.source.github.secretRef.key in body must be of type string"
        ),
        bad!(
            "git is a string",
            |m| set(m, "/spec/source", json!({"git": "https://x"})),
            "spec.source.git in body must be of type object"
        ),
        bad!(
            "git url is a number",
            |m| set(m, "/spec/source", json!({"git": {"url": 5}})),
            "spec.source.git.url in body must be of type string"
        ),
        bad!(
            "git secretRef is a string",
            |m| set(
                m,
                "/spec/source",
                json!({"git": {"url": "https://x/y.git", "secretRef": "s"}})
            ),
            "spec.source.git.secretRef in body must be of type object"
        ),
        bad!(
            "branch is a number",
            |m| set(m, "/spec/branch", json!(7)),
            "spec.branch in body must be of type string"
        ),
        bad!(
            "commit is a number",
            |m| set(m, "/spec/commit", json!(123)),
            "spec.commit in body must be of type string"
        ),
        bad!(
            "interval is a number",
            |m| set(m, "/spec/interval", json!(300)),
            "spec.interval in body must be of type string"
        ),
        bad!(
            "suspend is a string",
            |m| set(m, "/spec/suspend", json!("yes")),
            "spec.suspend in body must be of type boolean"
        ),
        bad!(
            "include is a string",
            |m| set(m, "/spec/include", json!("**/*.rs")),
            "spec.include in body must be of type array"
        ),
        bad!(
            "include item is a number",
            |m| set(m, "/spec/include", json!([1])),
            "spec.include[0] in body must be of type string"
        ),
        bad!(
            "exclude is a string",
            |m| set(m, "/spec/exclude", json!("target/**")),
            "spec.exclude in body must be of type array"
        ),
        bad!(
            "maxFileSize is a bool",
            |m| set(m, "/spec/maxFileSize", json!(true)),
            "spec.maxFileSize in body must be of type integer,string"
        ),
        bad!(
            "embedding is a string",
            |m| set(m, "/spec/embedding", json!("openai")),
            "spec.embedding in body must be of type object"
        ),
        bad!(
            "embedding model is a number",
            |m| set(
                m,
                "/spec/embedding",
                json!({"provider": "None", "model": 3})
            ),
            "spec.embedding.model in body must be of type string"
        ),
        bad!(
            "embedding batchSize is a string",
            |m| set(
                m,
                "/spec/embedding",
                json!({"provider": "None", "batchSize": "many"})
            ),
            "spec.embedding.batchSize in body must be of type integer"
        ),
        bad!(
            "historyLimit is a string",
            |m| set(m, "/spec/historyLimit", json!("ten")),
            "spec.historyLimit in body must be of type integer"
        ),
        bad!(
            "deletionPolicy is a number",
            |m| set(m, "/spec/deletionPolicy", json!(1)),
            "spec.deletionPolicy in body must be of type string"
        ),
        bad!(
            "spec is a list",
            |m| set(m, "/spec", json!([])),
            "spec in body must be of type object"
        ),
    ]
}

#[tokio::test]
async fn bad_manifests_are_refused_with_a_message_that_names_the_fix() {
    let ns = fresh_namespace("crd-bad").await;
    // The unmutated manifest is accepted, so each refusal is the mutation's doing.
    let good = apply_dry_run(&ns.name, &valid_manifest("good").to_string());
    assert!(
        good.success,
        "the valid manifest was refused: {}",
        good.stderr
    );
    let mut failures = Vec::new();
    for (i, bad) in bad_manifests().into_iter().enumerate() {
        let mut manifest = valid_manifest(&format!("bad-{i}"));
        (bad.mutate)(&mut manifest);
        let out = apply_dry_run(&ns.name, &manifest.to_string());
        if out.success {
            failures.push(format!(
                "{}: accepted, expected refusal with {:?}",
                bad.case, bad.message
            ));
        } else if !out.stderr.contains(bad.message) {
            failures.push(format!(
                "{}: refused, but the message lacks {:?}:\n  {}",
                bad.case,
                bad.message,
                out.stderr.trim()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} bad manifests misbehaved:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Status as the operator would write it, for the printer-column tests.
fn sample_status() -> Value {
    json!({
        "status": {
            "observedGeneration": 1,
            "phase": "Synced",
            "repository": "kube-rs/kube",
            "lastSyncedCommit": "0123456789abcdef0123456789abcdef01234567",
            "lastSync": {
                "id": "0191b2c4-0000-7000-8000-000000000001",
                "commit": "0123456789abcdef0123456789abcdef01234567",
                "shortCommit": "0123456",
                "result": "COMPLETED",
                "startedAt": "2026-11-25T01:00:00Z",
                "finishedAt": "2026-11-25T01:00:05Z",
                "files": { "added": 3, "modified": 0, "deleted": 0, "unchanged": 0, "skipped": 0, "total": 1234 },
                "durations": { "prepareMs": 1, "scanMs": 2, "importMs": 3, "finalizeMs": 4 },
            },
            "conditions": [{
                "type": "Ready",
                "status": "True",
                "reason": "Succeeded",
                "message": "synced 0123456: 3 added",
                "observedGeneration": 1,
                "lastTransitionTime": "2026-11-25T01:00:05Z",
            }],
        }
    })
}

fn create_with_status(namespace: &str, name: &str) {
    let created = kubectl(
        &["create", "-n", namespace, "-f", "-"],
        &valid_manifest(name).to_string(),
    );
    assert!(created.success, "{}", created.stderr);
    let patched = kubectl(
        &[
            "patch",
            "psync",
            name,
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            &sample_status().to_string(),
        ],
        "",
    );
    assert!(patched.success, "status patch refused: {}", patched.stderr);
}

#[tokio::test]
async fn kubectl_get_psync_prints_the_columns() {
    let ns = fresh_namespace("crd-columns").await;
    create_with_status(&ns.name, "columns");

    let out = kubectl(&["get", "psync", "-n", &ns.name], "");
    assert!(out.success, "{}", out.stderr);
    let mut lines = out.stdout.lines();
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "REPOSITORY",
            "BRANCH",
            "COMMIT",
            "PHASE",
            "FILES",
            "LAST",
            "SYNC",
            "AGE"
        ]
    );
    let row: Vec<&str> = lines.next().expect("row").split_whitespace().collect();
    assert_eq!(
        &row[..6],
        [
            "columns",
            "kube-rs/kube",
            "main",
            "0123456",
            "Synced",
            "1234"
        ]
    );

    let wide = kubectl(&["get", "psync", "-n", &ns.name, "-o", "wide"], "");
    assert!(wide.success, "{}", wide.stderr);
    let header = wide.stdout.lines().next().expect("wide header");
    for column in [
        "READY",
        "REASON",
        "STAGE",
        "INTERVAL",
        "SUSPENDED",
        "RESTORE",
        "MESSAGE",
    ] {
        assert!(header.contains(column), "-o wide lacks {column}: {header}");
    }
    let row = wide.stdout.lines().nth(1).expect("wide row");
    assert!(
        row.contains("True") && row.contains("Succeeded") && row.contains("5m"),
        "{row}"
    );
}

#[tokio::test]
async fn kubectl_wait_understands_the_ready_condition() {
    let ns = fresh_namespace("crd-wait").await;
    create_with_status(&ns.name, "waitable");
    let out = kubectl(
        &[
            "wait",
            "--for=condition=Ready",
            "psync/waitable",
            "-n",
            &ns.name,
            "--timeout=20s",
        ],
        "",
    );
    assert!(out.success, "kubectl wait failed: {}", out.stderr);
    assert!(out.stdout.contains("condition met"), "{}", out.stdout);
}
