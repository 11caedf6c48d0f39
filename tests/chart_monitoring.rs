//! The chart's monitoring: the PrometheusRule passes the pinned promtool's
//! `check rules` and the rule unit tests in
//! `tests/fixtures/prometheus/projectsync-rules.test.yaml`, follows its
//! values, the Grafana dashboard ConfigMap is valid JSON the API server
//! accepts, and every metric the rules and the dashboard use is one the
//! operator exports (and documents).

use std::collections::BTreeSet;

use projectsync::metrics::Metrics;
use serde_yaml::Value;
use support::{
    fresh_namespace,
    helm::{chart_dir, documents, helm, of_kind, template, to_yaml},
    kubectl,
    promtool::promtool,
    repo_root, unique_suffix,
};

/// The rule groups of the PrometheusRule rendered with `sets`.
fn rendered_rules(sets: &[&str]) -> Value {
    let mut all = vec!["prometheusRule.enabled=true"];
    all.extend_from_slice(sets);
    let docs = documents(&template("ps", "monitoring", &all));
    let rules = of_kind(&docs, "PrometheusRule");
    assert_eq!(rules.len(), 1, "one PrometheusRule");
    rules[0]["spec"].clone()
}

/// Writes `spec` as a Prometheus rule file next to a copy of the rule unit
/// tests, in a temporary directory.
fn rule_dir(spec: &Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::write(
        dir.path().join("projectsync-rules.yaml"),
        serde_yaml::to_string(spec).expect("rules as YAML"),
    )
    .expect("write rules");
    std::fs::copy(
        repo_root().join("tests/fixtures/prometheus/projectsync-rules.test.yaml"),
        dir.path().join("projectsync-rules.test.yaml"),
    )
    .expect("copy rule tests");
    dir
}

fn alerts(spec: &Value) -> Vec<&Value> {
    spec["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules").iter())
        .collect()
}

#[test]
fn the_alert_rules_pass_promtool_check_and_their_unit_tests() {
    let spec = rendered_rules(&[]);
    let names: Vec<&str> = alerts(&spec)
        .iter()
        .filter_map(|r| r["alert"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "ProjectSyncStalled",
            "ProjectSyncNotSynced",
            "ProjectSyncRunsFailing",
            "ProjectSyncFailureRatioHigh",
            "ProjectSyncGitHubRateLimitExhausted",
        ]
    );
    let dir = rule_dir(&spec);
    let out = promtool(dir.path(), &["check", "rules", "projectsync-rules.yaml"]);
    assert!(
        out.success,
        "promtool check rules failed:\n{}{}",
        out.stdout, out.stderr
    );
    assert!(
        out.stdout.contains("SUCCESS: 5 rules found"),
        "{}",
        out.stdout
    );
    let out = promtool(
        dir.path(),
        &["test", "rules", "projectsync-rules.test.yaml"],
    );
    assert!(
        out.success,
        "promtool test rules failed:\n{}{}",
        out.stdout, out.stderr
    );
}

#[test]
fn helm_lint_passes_with_the_monitoring_on() {
    let chart = chart_dir();
    let out = helm(&[
        "lint",
        "--strict",
        chart.to_str().expect("utf-8 path"),
        "--set",
        "serviceMonitor.enabled=true,prometheusRule.enabled=true,grafanaDashboard.enabled=true",
        "--set",
        "prometheusRule.runbookBaseUrl=https://runbooks.example,grafanaDashboard.namespace=grafana",
    ]);
    assert!(
        out.success,
        "helm lint failed:\n{}{}",
        out.stdout, out.stderr
    );
}

#[test]
fn the_alert_rules_follow_their_values() {
    let spec = rendered_rules(&[
        "prometheusRule.notSyncedIntervals=5",
        "prometheusRule.stalledFor=1h",
        "prometheusRule.severity=critical",
        "prometheusRule.additionalAlertLabels.team=platform",
        "prometheusRule.runbookBaseUrl=https://runbooks.example/projectsync",
    ]);
    let rules = alerts(&spec);
    let by_name = |name: &str| {
        *rules
            .iter()
            .find(|r| r["alert"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    let not_synced = by_name("ProjectSyncNotSynced");
    assert!(
        not_synced["expr"].as_str().is_some_and(|e| e
            .contains("> 5 * max by (namespace, name) (projectsync_resource_interval_seconds)")),
        "{:?}",
        not_synced["expr"]
    );
    assert_eq!(by_name("ProjectSyncStalled")["for"].as_str(), Some("1h"));
    for rule in &rules {
        assert_eq!(rule["labels"]["severity"].as_str(), Some("critical"));
        assert_eq!(rule["labels"]["team"].as_str(), Some("platform"));
        assert!(
            rule["annotations"]["runbook_url"]
                .as_str()
                .is_some_and(|u| u.starts_with("https://runbooks.example/projectsync#")),
            "{rule:?}"
        );
    }
    let dir = rule_dir(&spec);
    let out = promtool(dir.path(), &["check", "rules", "projectsync-rules.yaml"]);
    assert!(out.success, "{}{}", out.stdout, out.stderr);
}

#[tokio::test]
async fn the_dashboard_configmap_holds_the_dashboard_and_the_api_server_accepts_it() {
    let ns = fresh_namespace("chart-dashboard").await;
    let release = format!("ps-{}", unique_suffix());
    let docs = documents(&template(
        &release,
        &ns.name,
        &[
            "grafanaDashboard.enabled=true",
            "grafanaDashboard.annotations.grafana_folder=Platform",
        ],
    ));
    let maps = of_kind(&docs, "ConfigMap");
    assert_eq!(maps.len(), 1);
    let map = maps[0];
    assert_eq!(
        map["metadata"]["labels"]["grafana_dashboard"].as_str(),
        Some("1")
    );
    assert_eq!(
        map["metadata"]["annotations"]["grafana_folder"].as_str(),
        Some("Platform")
    );
    let json = map["data"]["projectsync.json"].as_str().expect("dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(json).expect("dashboard is JSON");
    assert_eq!(dashboard["uid"], "projectsync");
    let committed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            repo_root().join("charts/projectsync/dashboards/projectsync.json"),
        )
        .expect("committed dashboard"),
    )
    .expect("committed dashboard is JSON");
    assert_eq!(dashboard, committed);
    let out = kubectl(&["apply", "--dry-run=server", "-f", "-"], &to_yaml(&[map]));
    assert!(out.success, "the API server refused:\n{}", out.stderr);

    // The ServiceMonitor keeps the resources' own `namespace` label.
    let docs = documents(&template(
        &release,
        &ns.name,
        &["serviceMonitor.enabled=true"],
    ));
    let monitor = of_kind(&docs, "ServiceMonitor");
    assert_eq!(
        monitor[0]["spec"]["endpoints"][0]["honorLabels"],
        Value::Bool(true)
    );
    // And nothing of it by default.
    let docs = documents(&template(&release, &ns.name, &[]));
    for kind in ["PrometheusRule", "ConfigMap", "ServiceMonitor"] {
        assert!(
            of_kind(&docs, kind).is_empty(),
            "{kind} rendered by default"
        );
    }
}

/// The `projectsync_*` names in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("projectsync_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn every_metric_the_rules_and_the_dashboard_use_is_exported_and_documented() {
    let exported: BTreeSet<String> = Metrics::new().family_names().into_iter().collect();
    let rules = serde_yaml::to_string(&rendered_rules(&[])).expect("rules as YAML");
    let exprs: String = {
        let dashboard: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(
                repo_root().join("charts/projectsync/dashboards/projectsync.json"),
            )
            .expect("dashboard"),
        )
        .expect("dashboard is JSON");
        let mut exprs = Vec::new();
        for panel in dashboard["panels"].as_array().expect("panels") {
            for target in panel["targets"].as_array().into_iter().flatten() {
                exprs.push(target["expr"].as_str().expect("expr").to_string());
            }
        }
        assert!(exprs.len() >= 15, "{exprs:?}");
        exprs.join("\n")
    };
    let mut used = metric_names(&rules);
    used.extend(metric_names(&exprs));
    for name in &used {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .filter(|base| exported.contains(*base))
            .unwrap_or(name);
        assert!(
            exported.contains(family),
            "{name} is used by the chart's rules or dashboard but not exported"
        );
    }
    let docs = std::fs::read_to_string(repo_root().join("docs/observability.md"))
        .expect("docs/observability.md");
    let documented = metric_names(&docs);
    for name in &exported {
        assert!(
            documented.contains(name),
            "{name} is exported but not listed in docs/observability.md"
        );
    }
}
