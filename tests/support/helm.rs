//! Runs the pinned Helm (`hack/helm`, built once from its Go module and
//! cached) on the chart in `charts/projectsync`, and parses what it renders.
//! Spawns a process; no cluster access (`helm template` renders offline).

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use serde::Deserialize;
use serde_yaml::Value;

use super::repo_root;

/// `charts/projectsync` of this checkout.
pub fn chart_dir() -> PathBuf {
    repo_root().join("charts/projectsync")
}

/// What one `helm` invocation returned.
#[derive(Debug)]
pub struct HelmOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `hack/helm args...` (which builds helm on first use).
pub fn helm(args: &[&str]) -> HelmOutput {
    let script = repo_root().join("hack/helm");
    let output = Command::new(&script)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    HelmOutput {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `helm template <release> charts/projectsync -n <namespace> --include-crds
/// --set ...`: the rendered YAML. Panics with helm's message on failure.
pub fn template(release: &str, namespace: &str, sets: &[&str]) -> String {
    let chart = chart_dir();
    let mut args = vec![
        "template",
        release,
        chart.to_str().expect("utf-8 path"),
        "--namespace",
        namespace,
        "--include-crds",
    ];
    for set in sets {
        args.extend(["--set", set]);
    }
    let out = helm(&args);
    assert!(
        out.success,
        "helm template {sets:?} failed:\n{}",
        out.stderr
    );
    out.stdout
}

/// The documents of a multi-document YAML stream (empty ones dropped).
pub fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).expect("valid YAML from helm"))
        .filter(|doc| !doc.is_null())
        .collect()
}

/// `kind/name` (with `namespace/` when namespaced) of a document.
pub fn describe(doc: &Value) -> String {
    let kind = doc["kind"].as_str().unwrap_or("?");
    let name = doc["metadata"]["name"].as_str().unwrap_or("?");
    match doc["metadata"]["namespace"].as_str() {
        Some(namespace) => format!("{kind}/{namespace}/{name}"),
        None => format!("{kind}/{name}"),
    }
}

/// The documents of one kind.
pub fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter()
        .filter(|doc| doc["kind"].as_str() == Some(kind))
        .collect()
}

/// The documents as one YAML stream again.
pub fn to_yaml(docs: &[&Value]) -> String {
    docs.iter()
        .map(|doc| serde_yaml::to_string(doc).expect("serialize YAML"))
        .collect::<Vec<_>>()
        .join("---\n")
}
