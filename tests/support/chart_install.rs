//! The chart's operator identity installed for real: renders
//! `charts/projectsync` with the pinned Helm, applies its ServiceAccount and
//! the operator's RBAC to the testenv API server, and writes a kubeconfig
//! holding a TokenRequest token of that ServiceAccount (what a pod gets
//! mounted), so the real operator binary can run with exactly the chart's
//! permissions. Does I/O against the API server.

use std::path::{Path, PathBuf};

use serde_json::json;
use serde_yaml::Value;

use super::{
    TestNamespace, fresh_namespace,
    helm::{documents, template, to_yaml},
    kubectl, testenv, unique_suffix,
};

/// The chart's operator identity, installed for real in its own namespace.
pub struct Install {
    pub namespace: TestNamespace,
    pub service_account: String,
    pub lease_name: String,
    /// The ClusterRole and the leader-election Role, as rendered.
    pub roles: Vec<Value>,
    pub kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

/// `kubectl args...`, which must succeed; its stdout.
pub fn kubectl_ok(args: &[&str], stdin: &str) -> String {
    let out = kubectl(args, stdin);
    assert!(out.success, "kubectl {args:?} failed:\n{}", out.stderr);
    out.stdout
}

/// Renders the chart with `sets` and applies its ServiceAccount and the
/// operator's RBAC (not the aggregated user roles).
pub async fn install(sets: &[&str]) -> Install {
    let namespace = fresh_namespace("rbac").await;
    let release = format!("ps-{}", unique_suffix());
    let docs = documents(&template(&release, &namespace.name, sets));
    let component = |doc: &Value| {
        doc["metadata"]["labels"]["app.kubernetes.io/component"]
            .as_str()
            .map(str::to_string)
    };
    let wanted: Vec<&Value> = docs
        .iter()
        .filter(|d| {
            matches!(d["kind"].as_str(), Some("ServiceAccount"))
                || (matches!(
                    d["kind"].as_str(),
                    Some("ClusterRole" | "ClusterRoleBinding" | "Role" | "RoleBinding")
                ) && component(d)
                    .is_some_and(|c| c == "operator" || c == "leader-election" || c == "http-auth"))
        })
        .collect();
    kubectl_ok(&["apply", "-f", "-"], &to_yaml(&wanted));
    let roles: Vec<Value> = wanted
        .iter()
        // The reviews of HTTP callers are applied but are no rule a sync
        // needs: `roles` holds what the operator's reconciles use.
        .filter(|d| matches!(d["kind"].as_str(), Some("ClusterRole" | "Role")))
        .filter(|d| component(d).as_deref() != Some("http-auth"))
        .map(|d| (*d).clone())
        .collect();
    let service_account = format!("{release}-projectsync");
    let deployment = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("Deployment"))
        .expect("Deployment");
    let lease_name = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_sequence()
        .and_then(|env| {
            env.iter()
                .find(|e| e["name"].as_str() == Some("PROJECTSYNC_LEASE_NAME"))
        })
        .and_then(|e| e["value"].as_str())
        .expect("PROJECTSYNC_LEASE_NAME")
        .to_string();
    let dir = tempfile::tempdir().expect("temporary directory");
    let kubeconfig = write_token_kubeconfig(dir.path(), &namespace.name, &service_account);
    Install {
        namespace,
        service_account,
        lease_name,
        roles,
        kubeconfig,
        _dir: dir,
    }
}

/// Writes a kubeconfig that authenticates with a TokenRequest token of the
/// ServiceAccount (what a pod gets mounted), against the testenv API server.
pub fn write_token_kubeconfig(dir: &Path, namespace: &str, service_account: &str) -> PathBuf {
    let token = kubectl_ok(
        &[
            "create",
            "token",
            service_account,
            "-n",
            namespace,
            "--duration",
            "1h",
        ],
        "",
    );
    let admin: Value = serde_yaml::from_str(
        &std::fs::read_to_string(&testenv().kubeconfig).expect("admin kubeconfig"),
    )
    .expect("YAML");
    let cluster = &admin["clusters"][0]["cluster"];
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "testenv", "cluster": {
            "server": cluster["server"].as_str().expect("server"),
            "certificate-authority-data": cluster["certificate-authority-data"].as_str().expect("CA"),
        }}],
        "users": [{ "name": service_account, "user": { "token": token.trim() } }],
        "contexts": [{ "name": "operator", "context": { "cluster": "testenv", "user": service_account, "namespace": namespace } }],
        "current-context": "operator",
    });
    let path = dir.join("kubeconfig");
    std::fs::write(&path, serde_yaml::to_string(&config).expect("YAML")).expect("write kubeconfig");
    path
}
