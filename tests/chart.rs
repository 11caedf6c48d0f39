//! The Helm chart in `charts/projectsync`, with the pinned Helm from
//! `hack/helm` and the real API server from `hack/testenv`: it lints, renders
//! with default values and with watched namespaces, every rendered manifest
//! is accepted by a server-side dry run, the Deployment is locked down, and
//! its CRD is byte-for-byte the one in `crds/`.

use serde_yaml::Value;
use support::{
    fresh_namespace,
    helm::{chart_dir, describe, documents, helm, of_kind, template, to_yaml},
    kubectl, unique_suffix,
};

/// `kubectl apply --dry-run=server` of `docs`; panics with the refusal.
fn assert_accepted(docs: &[&Value]) {
    let out = kubectl(&["apply", "--dry-run=server", "-f", "-"], &to_yaml(docs));
    assert!(
        out.success,
        "the API server refused the rendered chart:\n{}",
        out.stderr
    );
    for doc in docs {
        let name = doc["metadata"]["name"].as_str().expect("name");
        assert!(
            out.stdout.contains(&format!("/{name} ")),
            "{} was not applied:\n{}",
            describe(doc),
            out.stdout
        );
    }
}

fn env_of<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_sequence()?
        .iter()
        .find(|e| e["name"].as_str() == Some(name))
}

fn kinds(docs: &[Value]) -> Vec<String> {
    let mut kinds: Vec<String> = docs.iter().map(describe).collect();
    kinds.sort();
    kinds
}

#[test]
fn helm_lint_passes_with_default_and_with_every_option() {
    let chart = chart_dir();
    let chart = chart.to_str().expect("utf-8 path");
    let out = helm(&["lint", "--strict", chart]);
    assert!(
        out.success,
        "helm lint failed:\n{}{}",
        out.stdout, out.stderr
    );
    let out = helm(&[
        "lint",
        "--strict",
        chart,
        "--set",
        "watchNamespaces={team-a,team-b},replicaCount=2,podDisruptionBudget.enabled=true",
        "--set",
        "serviceMonitor.enabled=true,networkPolicy.enabled=true,logFormat=text,logLevel=debug,image.digest=sha256:0123",
    ]);
    assert!(
        out.success,
        "helm lint with every option failed:\n{}{}",
        out.stdout, out.stderr
    );
}

#[test]
fn the_chart_crd_is_the_repository_crd() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let name = "projectsync.dev_projectsyncs.yaml";
    let committed = std::fs::read(root.join("crds").join(name)).expect("crds/ CRD");
    let chart_path = chart_dir().join("crds").join(name);
    let meta = std::fs::symlink_metadata(&chart_path).expect("chart CRD");
    assert!(
        !meta.file_type().is_symlink(),
        "{} must be a copy: helm package drops symlinks",
        chart_path.display()
    );
    let in_chart = std::fs::read(&chart_path).expect("read chart CRD");
    assert!(
        committed == in_chart,
        "{} differs from crds/{name}: run hack/generate",
        chart_path.display()
    );
}

#[tokio::test]
async fn default_values_render_a_cluster_wide_install_the_api_server_accepts() {
    let ns = fresh_namespace("chart-default").await;
    let release = format!("ps-{}", unique_suffix());
    let docs = documents(&template(&release, &ns.name, &[]));
    let fullname = format!("{release}-projectsync");
    let expected = [
        format!("ClusterRole/{fullname}"),
        format!("ClusterRole/{fullname}-edit"),
        format!("ClusterRole/{fullname}-http-auth"),
        format!("ClusterRole/{fullname}-view"),
        format!("ClusterRoleBinding/{fullname}"),
        format!("ClusterRoleBinding/{fullname}-http-auth"),
        "CustomResourceDefinition/projectsyncs.projectsync.dev".to_string(),
        format!("Deployment/{}/{fullname}", ns.name),
        format!("Role/{}/{fullname}-leader-election", ns.name),
        format!("RoleBinding/{}/{fullname}-leader-election", ns.name),
        format!("Service/{}/{fullname}", ns.name),
        format!("ServiceAccount/{}/{fullname}", ns.name),
    ];
    assert_eq!(kinds(&docs), expected);
    assert_accepted(&docs.iter().collect::<Vec<_>>());

    // The Deployment runs locked down, with the settings from values.
    let deployment = of_kind(&docs, "Deployment")[0];
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], Value::Bool(true));
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"].as_str(),
        Some("RuntimeDefault")
    );
    let container = &pod["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], Value::Bool(true));
    assert_eq!(security["allowPrivilegeEscalation"], Value::Bool(false));
    assert_eq!(security["capabilities"]["drop"][0].as_str(), Some("ALL"));
    assert_eq!(
        container["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    assert!(container["resources"]["requests"]["memory"].is_string());
    let secret_ref =
        &env_of(container, "DATABASE_URL").expect("DATABASE_URL")["valueFrom"]["secretKeyRef"];
    assert_eq!(
        (secret_ref["name"].as_str(), secret_ref["key"].as_str()),
        (Some("projectsync-database"), Some("url"))
    );
    assert_eq!(
        env_of(container, "POD_NAME").expect("POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"]
            .as_str(),
        Some("metadata.name")
    );
    assert_eq!(
        env_of(container, "POD_NAMESPACE").expect("POD_NAMESPACE")["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        Some("metadata.namespace")
    );
    assert_eq!(
        env_of(container, "PROJECTSYNC_ALLOW_FILE_URLS").expect("file URLs")["value"].as_str(),
        Some("false")
    );
    assert_eq!(
        env_of(container, "PROJECTSYNC_LEADER_ELECTION").expect("election")["value"].as_str(),
        Some("true")
    );
    assert!(
        env_of(container, "PROJECTSYNC_NAMESPACES").is_none(),
        "all namespaces by default"
    );
    // Every writable path is an emptyDir.
    let mounts: Vec<&str> = container["volumeMounts"]
        .as_sequence()
        .expect("mounts")
        .iter()
        .filter_map(|m| m["mountPath"].as_str())
        .collect();
    assert_eq!(mounts, ["/var/cache/projectsync", "/tmp"]);
    assert_eq!(
        env_of(container, "PROJECTSYNC_CACHE_DIR").expect("cache dir")["value"].as_str(),
        Some("/var/cache/projectsync")
    );
}

#[tokio::test]
async fn watch_namespaces_render_a_role_per_namespace_and_no_cluster_wide_access() {
    let release_ns = fresh_namespace("chart-scoped").await;
    let team_a = fresh_namespace("chart-team-a").await;
    let team_b = fresh_namespace("chart-team-b").await;
    let release = format!("ps-{}", unique_suffix());
    let set = format!("watchNamespaces={{{},{}}}", team_a.name, team_b.name);
    let docs = documents(&template(
        &release,
        &release_ns.name,
        &[
            &set,
            "logFormat=text",
            "concurrency=2",
            "cache.gitHelpers=8",
            "cache.gitHelperIdleTimeout=10s",
        ],
    ));

    // Only the user-facing aggregated roles and the (cluster-scoped)
    // reviews of HTTP callers are cluster-wide; the operator itself gets a
    // Role in each watched namespace.
    let cluster_roles: Vec<String> = of_kind(&docs, "ClusterRole")
        .into_iter()
        .map(describe)
        .collect();
    assert!(
        cluster_roles
            .iter()
            .all(|r| r.ends_with("-view") || r.ends_with("-edit") || r.ends_with("-http-auth")),
        "{cluster_roles:?}"
    );
    let auth = of_kind(&docs, "ClusterRole")
        .into_iter()
        .find(|r| describe(r).ends_with("-http-auth"))
        .expect("the http-auth ClusterRole in namespaced mode too");
    let rules = serde_yaml::to_string(&auth["rules"]).expect("YAML");
    assert!(
        rules.contains("tokenreviews") && rules.contains("subjectaccessreviews"),
        "{rules}"
    );
    let bindings: Vec<String> = of_kind(&docs, "ClusterRoleBinding")
        .into_iter()
        .map(describe)
        .collect();
    assert!(
        bindings.iter().all(|b| b.ends_with("-http-auth")),
        "{bindings:?}"
    );
    for watched in [&team_a.name, &team_b.name] {
        let role = of_kind(&docs, "Role")
            .into_iter()
            .find(|r| r["metadata"]["namespace"].as_str() == Some(watched))
            .unwrap_or_else(|| panic!("no Role in {watched}"));
        // Secrets: `get` only (no list or watch of a namespace's Secrets).
        assert!(
            role["rules"].as_sequence().is_some_and(|r| r.len() == 5),
            "{role:?}"
        );
        let binding = of_kind(&docs, "RoleBinding")
            .into_iter()
            .find(|r| r["metadata"]["namespace"].as_str() == Some(watched))
            .unwrap_or_else(|| panic!("no RoleBinding in {watched}"));
        assert_eq!(
            binding["subjects"][0]["namespace"].as_str(),
            Some(release_ns.name.as_str())
        );
    }
    let container = &of_kind(&docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        env_of(container, "PROJECTSYNC_NAMESPACES").expect("namespaces")["value"].as_str(),
        Some(format!("{},{}", team_a.name, team_b.name).as_str())
    );
    assert_eq!(
        env_of(container, "PROJECTSYNC_LOG_FORMAT").expect("format")["value"].as_str(),
        Some("text")
    );
    assert_eq!(
        env_of(container, "PROJECTSYNC_CONCURRENCY").expect("concurrency")["value"].as_str(),
        Some("2")
    );
    assert_eq!(
        env_of(container, "PROJECTSYNC_GIT_HELPERS").expect("helpers")["value"].as_str(),
        Some("8")
    );
    assert_eq!(
        env_of(container, "PROJECTSYNC_GIT_HELPER_IDLE_TIMEOUT").expect("idle")["value"].as_str(),
        Some("10s")
    );
    assert_accepted(&docs.iter().collect::<Vec<_>>());
}

#[tokio::test]
async fn optional_resources_render_and_the_api_server_accepts_them() {
    let ns = fresh_namespace("chart-optional").await;
    let release = format!("ps-{}", unique_suffix());
    let sets = [
        "replicaCount=2",
        "podDisruptionBudget.enabled=true",
        "serviceMonitor.enabled=true",
        "networkPolicy.enabled=true",
        "networkPolicy.from[0].namespaceSelector.matchLabels.team=monitoring",
        "sharding.shards=6",
    ];
    let docs = documents(&template(&release, &ns.name, &sets));
    // Shards: the Lease Role also lists, replaces and deletes Leases.
    let lease_verbs: Vec<&str> = of_kind(&docs, "Role")
        .iter()
        .filter(|r| {
            r["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("-leader-election"))
        })
        .flat_map(|r| r["rules"].as_sequence().into_iter().flatten())
        .flat_map(|rule| rule["verbs"].as_sequence().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    for verb in ["list", "update", "delete"] {
        assert!(
            lease_verbs.contains(&verb),
            "{verb} missing: {lease_verbs:?}"
        );
    }
    assert_eq!(of_kind(&docs, "PodDisruptionBudget").len(), 1);
    let policy = of_kind(&docs, "NetworkPolicy");
    assert_eq!(policy.len(), 1);
    assert_eq!(
        policy[0]["spec"]["ingress"][0]["ports"][0]["port"].as_str(),
        Some("http")
    );
    assert_eq!(
        policy[0]["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]["team"]
            .as_str(),
        Some("monitoring")
    );
    assert_eq!(
        of_kind(&docs, "Deployment")[0]["spec"]["replicas"].as_u64(),
        Some(2)
    );
    let monitor = of_kind(&docs, "ServiceMonitor");
    assert_eq!(monitor.len(), 1);
    assert_eq!(
        monitor[0]["spec"]["endpoints"][0]["path"].as_str(),
        Some("/metrics")
    );
    assert_eq!(
        monitor[0]["spec"]["endpoints"][0]["port"].as_str(),
        Some("probe"),
        "metrics are scraped from the probe listener"
    );
    // The testenv has no Prometheus Operator CRDs: everything else is applied.
    let applicable: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"].as_str() != Some("ServiceMonitor"))
        .collect();
    assert_accepted(&applicable);
}

#[test]
fn values_that_cannot_work_fail_with_a_message_that_names_the_fix() {
    let chart = chart_dir();
    let chart = chart.to_str().expect("utf-8 path");
    let cases = [
        (
            "replicaCount=3,leaderElection.enabled=false",
            "replicaCount > 1 needs leaderElection.enabled",
        ),
        (
            "database.existingSecret=",
            "database.existingSecret is required",
        ),
        (
            "sharding.shards=0",
            "sharding.shards must be between 1 and 256",
        ),
        (
            "cache.gitHelpers=0",
            "cache.gitHelpers must be between 1 and 4096",
        ),
        (
            "serviceAccount.create=false",
            "serviceAccount.name is required",
        ),
    ];
    for (set, message) in cases {
        let out = helm(&["template", "ps", chart, "--set", set]);
        assert!(!out.success, "{set}: rendered although it cannot work");
        assert!(
            out.stderr.contains(message),
            "{set}: expected {message:?} in:\n{}",
            out.stderr
        );
    }
}

#[test]
fn the_packaged_chart_carries_the_crd_and_renders() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let chart = chart_dir();
    let out = helm(&[
        "package",
        chart.to_str().expect("utf-8 path"),
        "--destination",
        dir.path().to_str().expect("utf-8 path"),
    ]);
    assert!(out.success, "helm package failed:\n{}", out.stderr);
    let package = dir.path().join("projectsync-0.1.0.tgz");
    assert!(package.exists(), "{}", out.stdout);
    let out = helm(&[
        "template",
        "ps",
        package.to_str().expect("utf-8 path"),
        "--include-crds",
    ]);
    assert!(
        out.success,
        "helm template of the package failed:\n{}",
        out.stderr
    );
    let docs = documents(&out.stdout);
    let crds = of_kind(&docs, "CustomResourceDefinition");
    assert_eq!(crds.len(), 1, "the package lost its CRD");
    let committed: Value = serde_yaml::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("crds/projectsync.dev_projectsyncs.yaml"),
        )
        .expect("crds/ CRD"),
    )
    .expect("CRD YAML");
    assert_eq!(crds[0], &committed);
}

#[test]
fn every_setting_the_deployment_passes_is_one_the_binary_reads() {
    // A renamed flag or variable would otherwise be ignored silently in a cluster.
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_projectsync"))
        .args(["run", "--help"])
        .output()
        .expect("run projectsync run --help");
    let help = String::from_utf8_lossy(&help.stdout);
    let docs = documents(&template(
        "ps",
        "default",
        &[
            "watchNamespaces={a}",
            "extraEnv[0].name=HTTPS_PROXY",
            "extraEnv[0].value=x",
            "sharding.shards=6",
            "sharding.watchLabelSelector=sharding.projectsync.dev/key=a",
        ],
    ));
    let container = &of_kind(&docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["args"][0].as_str(), Some("run"));
    let names: Vec<&str> = container["env"]
        .as_sequence()
        .expect("env")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    // Read by libraries rather than by flags: the log filter, git's HOME, a proxy.
    let not_flags = ["RUST_LOG", "HOME", "HTTPS_PROXY"];
    for name in names.iter().filter(|n| !not_flags.contains(n)) {
        assert!(
            help.contains(&format!("[env: {name}")),
            "the chart sets {name}, which `projectsync run` does not read:\n{help}"
        );
    }
    assert!(names.contains(&"HTTPS_PROXY"), "extraEnv is passed through");
}
