//! The chart's RBAC, proven against the real API server (RBAC on) rather
//! than assumed: the operator, running as the chart's ServiceAccount (a
//! TokenRequest token, no admin rights), passes a full sync of a private git
//! remote; and with any one rule (or any one verb of a rule) taken away it
//! fails with the API server's "forbidden" message naming that verb and
//! resource, in status or in its log. A signed webhook delivery works with
//! the same rules (no verb was added for it).
//!
//! One install, one git remote and one database are shared by every case;
//! each case gets a fresh namespace (so it starts from a first sync) and a
//! fresh Lease (so leader election starts from scratch too).

use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use projectsync::api::ProjectSync;
use serde_json::json;
use serde_yaml::Value;
use support::{
    TestDb, TestNamespace,
    chart_install::{Install, install, kubectl_ok},
    fresh_database, fresh_namespace,
    git_server::GitHttp,
    kubectl,
    operator::{Operator, OperatorConfig},
    repo::TestRepo,
};

/// How long a case may take to show its failure (or the baseline to sync).
const WAIT: Duration = Duration::from_secs(45);

/// The git remote every case syncs: a private repository over smart HTTP.
struct Remote {
    _repo: TestRepo,
    _server: GitHttp,
    url: String,
    commit: String,
}

const USER: &str = "projectsync";
const PASSWORD: &str = "s3cret-for-rbac";

async fn remote() -> Remote {
    let mut repo = TestRepo::new("private");
    repo.write("README.md", "# private\n")
        .write("src/lib.rs", "pub fn answer() -> u32 {\n    42\n}\n")
        .write("docs/guide.md", "Read me.\n");
    let commit = repo.commit("initial");
    let server = GitHttp::start(repo.root(), Some((USER, PASSWORD))).await;
    let url = server.url("private");
    Remote {
        _repo: repo,
        _server: server,
        url,
        commit,
    }
}

/// A fresh namespace with the credentials Secret and a ProjectSync of the
/// remote; with `failing`, also a ProjectSync of a closed loopback port, whose
/// retries (5s apart) repeat the same Warning event, which kube-runtime
/// publishes as a series: a `patch` of the event.
async fn case_namespace(label: &str, remote: &Remote, failing: bool) -> TestNamespace {
    let ns = fresh_namespace(label).await;
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": "git-credentials" },
        "stringData": { "username": USER, "password": PASSWORD },
    });
    kubectl_ok(&["apply", "-n", &ns.name, "-f", "-"], &secret.to_string());
    let object: ProjectSync = serde_json::from_value(json!({
        "apiVersion": "projectsync.dev/v1alpha1",
        "kind": "ProjectSync",
        "metadata": { "name": "private" },
        "spec": {
            "source": { "git": { "url": remote.url, "secretRef": { "name": "git-credentials" } } },
            "branch": "main",
        },
    }))
    .expect("valid ProjectSync");
    Api::<ProjectSync>::namespaced(ns.client.clone(), &ns.name)
        .create(&PostParams::default(), &object)
        .await
        .expect("create ProjectSync");
    if failing {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let object: ProjectSync = serde_json::from_value(json!({
            "apiVersion": "projectsync.dev/v1alpha1",
            "kind": "ProjectSync",
            "metadata": { "name": "unreachable" },
            "spec": {
                "source": { "git": { "url": format!("http://127.0.0.1:{port}/closed.git") } },
                "branch": "main",
            },
        }))
        .expect("valid ProjectSync");
        Api::<ProjectSync>::namespaced(ns.client.clone(), &ns.name)
            .create(&PostParams::default(), &object)
            .await
            .expect("create ProjectSync");
    }
    ns
}

/// Waits (bounded) until an event about `name` has become a series (count >= 2).
async fn wait_for_event_series(operator: &Operator, ns: &TestNamespace, name: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let out = kubectl_ok(
            &["get", "events.events.k8s.io", "-n", &ns.name, "-o", "json"],
            "",
        );
        let list: serde_json::Value = serde_json::from_str(&out).expect("event list JSON");
        let series = list["items"].as_array().into_iter().flatten().any(|e| {
            e["regarding"]["name"].as_str() == Some(name)
                && e["series"]["count"].as_i64().is_some_and(|c| c >= 2)
        });
        if series {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no repeated event about {name} within {WAIT:?}:\n{}",
            operator.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Starts the operator as the ServiceAccount, watching `watched`, electing
/// its leader through the chart's Lease (deleted first: a first install).
fn start_operator(install: &Install, watched: &str, db: &TestDb) -> Operator {
    let out = kubectl(
        &[
            "delete",
            "lease",
            &install.lease_name,
            "-n",
            &install.namespace.name,
            "--ignore-not-found",
        ],
        "",
    );
    assert!(out.success, "delete the Lease: {}", out.stderr);
    let mut config = OperatorConfig::new(watched, &db.url);
    config.kubeconfig = Some(&install.kubeconfig);
    config.lease_namespace = Some(&install.namespace.name);
    config.extra_args = vec!["--lease-name".into(), install.lease_name.clone()];
    Operator::spawn(config)
}

/// Everything the operator said about the ProjectSync: its log and its status.
async fn observed(operator: &Operator, ns: &TestNamespace) -> String {
    let api = Api::<ProjectSync>::namespaced(ns.client.clone(), &ns.name);
    let status = api
        .get("private")
        .await
        .ok()
        .and_then(|o| o.status)
        .map(|s| {
            s.conditions
                .iter()
                .map(|c| format!("{}: {}\n", c.type_, c.message))
                .collect::<String>()
        })
        .unwrap_or_default();
    format!("{}\n{status}", operator.log_text())
}

/// Waits (bounded) for a full sync of the remote: Ready=True at its commit,
/// the files in the active view, events published, nothing forbidden.
async fn assert_full_sync(operator: &Operator, ns: &TestNamespace, remote: &Remote, db: &TestDb) {
    let api = Api::<ProjectSync>::namespaced(ns.client.clone(), &ns.name);
    let deadline = Instant::now() + WAIT;
    loop {
        let obj = api.get("private").await.expect("get ProjectSync");
        let ready = obj.status.as_ref().is_some_and(|s| {
            s.last_synced_commit.as_deref() == Some(remote.commit.as_str())
                && s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
        });
        if ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not Ready within {WAIT:?} with the chart's RBAC\nstatus: {:?}\nlog:\n{}",
            obj.status,
            operator.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let project = format!("{}/private", ns.name);
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT path FROM active_repository_files WHERE project = $1 ORDER BY path")
            .bind(&project)
            .fetch_all(&db.pool)
            .await
            .expect("query the active view");
    let paths: Vec<String> = rows.into_iter().map(|(p,)| p).collect();
    assert_eq!(paths, ["README.md", "docs/guide.md", "src/lib.rs"]);
    // The run published its events (the RBAC for events works) and nothing was refused.
    let events = kubectl_ok(
        &["get", "events.events.k8s.io", "-n", &ns.name, "-o", "name"],
        "",
    );
    assert!(
        !events.trim().is_empty(),
        "no events were published:\n{}",
        operator.log_tail()
    );
    let log = operator.log_text();
    assert!(
        !log.contains("forbidden"),
        "a request was forbidden with the chart's RBAC:\n{log}"
    );
}

/// One way to take a permission away.
struct Case {
    /// Index of the role in `Install::roles` and of the rule in it.
    role: usize,
    rule: usize,
    /// The verbs removed (all of the rule's when the whole rule goes).
    verbs: Vec<String>,
    whole_rule: bool,
}

impl Case {
    fn describe(&self, install: &Install) -> String {
        let role = &install.roles[self.role];
        let rule = &role["rules"][self.rule];
        format!(
            "{} {}: {} {:?} on {:?}",
            role["kind"].as_str().unwrap_or("?"),
            role["metadata"]["name"].as_str().unwrap_or("?"),
            if self.whole_rule { "rule" } else { "verb" },
            self.verbs,
            rule["resources"]
                .as_sequence()
                .map(|r| r.iter().filter_map(Value::as_str).collect::<Vec<_>>())
                .unwrap_or_default(),
        )
    }

    /// The role with this case's permission removed.
    fn reduced(&self, install: &Install) -> Value {
        let mut role = install.roles[self.role].clone();
        let rules = role["rules"].as_sequence_mut().expect("rules");
        if self.whole_rule {
            rules.remove(self.rule);
        } else {
            let verbs = rules[self.rule]["verbs"].as_sequence_mut().expect("verbs");
            verbs.retain(|v| !self.verbs.iter().any(|removed| v.as_str() == Some(removed)));
        }
        role
    }

    /// The API server's words for the denial: `cannot <verb> resource "<resource>"`.
    fn denials(&self, install: &Install) -> Vec<String> {
        let rule = &install.roles[self.role]["rules"][self.rule];
        let resources: Vec<&str> = rule["resources"]
            .as_sequence()
            .expect("resources")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        self.verbs
            .iter()
            .flat_map(|verb| {
                resources
                    .iter()
                    .map(move |resource| format!("cannot {verb} resource \"{resource}\""))
            })
            .collect()
    }
}

/// Every rule of both roles, and every single verb of multi-verb rules.
fn cases(install: &Install) -> Vec<Case> {
    let mut cases = Vec::new();
    for (role_index, role) in install.roles.iter().enumerate() {
        for (rule_index, rule) in role["rules"]
            .as_sequence()
            .expect("rules")
            .iter()
            .enumerate()
        {
            let verbs: Vec<String> = rule["verbs"]
                .as_sequence()
                .expect("verbs")
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            cases.push(Case {
                role: role_index,
                rule: rule_index,
                verbs: verbs.clone(),
                whole_rule: true,
            });
            if verbs.len() > 1 {
                for verb in verbs {
                    cases.push(Case {
                        role: role_index,
                        rule: rule_index,
                        verbs: vec![verb],
                        whole_rule: false,
                    });
                }
            }
        }
    }
    cases
}

/// Replaces a role and waits until the authorizer sees the change for the
/// ServiceAccount (`kubectl auth can-i` agrees with `allowed` on every denial).
fn set_role(install: &Install, role: &Value, probe: &Case, watched: &str, allowed: bool) {
    kubectl_ok(
        &["replace", "-f", "-"],
        &serde_yaml::to_string(role).expect("YAML"),
    );
    let rule = &install.roles[probe.role]["rules"][probe.rule];
    let group = rule["apiGroups"][0].as_str().unwrap_or_default();
    let user = format!(
        "system:serviceaccount:{}:{}",
        install.namespace.name, install.service_account
    );
    let namespace = if role["kind"].as_str() == Some("Role") {
        install.namespace.name.as_str()
    } else {
        watched
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    for verb in &probe.verbs {
        for resource in rule["resources"]
            .as_sequence()
            .expect("resources")
            .iter()
            .filter_map(Value::as_str)
        {
            let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
            let mut target = if group.is_empty() {
                resource.to_string()
            } else {
                format!("{resource}.{group}")
            };
            if let Some(name) = rule["resourceNames"][0].as_str() {
                target = format!("{target}/{name}");
            }
            let mut args = vec![
                "auth",
                "can-i",
                verb.as_str(),
                target.as_str(),
                "--as",
                user.as_str(),
                "-n",
                namespace,
            ];
            if !subresource.is_empty() {
                args.extend(["--subresource", subresource]);
            }
            loop {
                let answer = kubectl(&args, "").stdout.trim().to_string();
                if (answer == "yes") == allowed {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "kubectl {args:?} still says {answer:?} 10s after the change"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

#[tokio::test]
async fn the_chart_rbac_is_enough_for_a_full_sync_and_every_rule_is_needed() {
    let started = Instant::now();
    let install = install(&[]).await;
    let remote = remote().await;
    let db = fresh_database("rbac").await;

    assert_eq!(
        install.roles.len(),
        2,
        "a ClusterRole and a leader-election Role"
    );

    // With exactly the chart's RBAC: a full sync of a private remote.
    let ns = case_namespace("rbac-full", &remote, true).await;
    let mut operator = start_operator(&install, &ns.name, &db);
    assert_full_sync(&operator, &ns, &remote, &db).await;
    // A failure retried becomes an event series (the events `patch` verb).
    wait_for_event_series(&operator, &ns, "unreachable").await;
    let log = operator.log_text();
    assert!(
        !log.contains("forbidden"),
        "a request was forbidden with the chart's RBAC:\n{log}"
    );
    assert!(
        operator.terminate(Duration::from_secs(15)).await,
        "the operator did not stop on SIGTERM"
    );
    let baseline = started.elapsed();

    // Each permission taken away on its own: the operator must say so.
    let cases = cases(&install);
    assert!(
        cases.len() >= 8,
        "expected at least 8 rules, got {}",
        cases.len()
    );
    let mut timings = Vec::new();
    for case in &cases {
        let what = case.describe(&install);
        let case_started = Instant::now();
        // Patching an event only happens when one repeats: provoke that.
        let repeats_an_event = case.verbs.iter().any(|v| v == "patch")
            && install.roles[case.role]["rules"][case.rule]["resources"][0].as_str()
                == Some("events");
        let ns = case_namespace("rbac-case", &remote, repeats_an_event).await;
        set_role(&install, &case.reduced(&install), case, &ns.name, false);
        let mut operator = start_operator(&install, &ns.name, &db);
        let denials = case.denials(&install);
        let deadline = Instant::now() + WAIT;
        loop {
            let seen = observed(&operator, &ns).await;
            if denials.iter().any(|d| seen.contains(d)) {
                assert!(
                    seen.contains("forbidden"),
                    "{what}: the denial is not reported as forbidden:\n{seen}"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: no {denials:?} within {WAIT:?} in status or log:\n{}",
                operator.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        operator.terminate(Duration::from_secs(15)).await;
        set_role(&install, &install.roles[case.role], case, &ns.name, true);
        timings.push(format!(
            "{what}: {:.1}s",
            case_started.elapsed().as_secs_f64()
        ));
    }
    eprintln!(
        "full sync as the ServiceAccount: {:.1}s; {} permission cases:\n  {}",
        baseline.as_secs_f64(),
        cases.len(),
        timings.join("\n  ")
    );

    // Cluster-scoped leftovers of this test (namespaced ones stay with their namespace).
    for role in &install.roles {
        if role["kind"].as_str() == Some("ClusterRole") {
            let name = role["metadata"]["name"].as_str().expect("name");
            kubectl(
                &[
                    "delete",
                    "clusterrolebinding,clusterrole",
                    name,
                    "--ignore-not-found",
                ],
                "",
            );
        }
    }
}

#[tokio::test]
async fn the_chart_rbac_for_watched_namespaces_is_enough_for_a_full_sync() {
    let remote = remote().await;
    let db = fresh_database("rbac_scoped").await;
    let ns = case_namespace("rbac-scoped", &remote, false).await;
    let install = install(&[&format!("watchNamespaces={{{}}}", ns.name)]).await;
    let kinds: Vec<&str> = install
        .roles
        .iter()
        .filter_map(|r| r["kind"].as_str())
        .collect();
    assert_eq!(
        kinds,
        ["Role", "Role"],
        "no ClusterRole when namespaces are listed"
    );
    let mut operator = start_operator(&install, &ns.name, &db);
    assert_full_sync(&operator, &ns, &remote, &db).await;
    assert_webhook_requests_a_sync(&operator, &ns).await;
    assert!(
        operator.terminate(Duration::from_secs(15)).await,
        "the operator did not stop on SIGTERM"
    );
}

/// A signed push, received as the chart's ServiceAccount: the receiver finds
/// the resource and its Secret and sets the request annotation, which the
/// controller handles.
async fn assert_webhook_requests_a_sync(operator: &Operator, ns: &TestNamespace) {
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": "hook" },
        "stringData": { "token": "hook-secret" },
    }))
    .expect("secret");
    Api::<Secret>::namespaced(ns.client.clone(), &ns.name)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
    let api = Api::<ProjectSync>::namespaced(ns.client.clone(), &ns.name);
    let patch = json!({ "spec": { "webhook": { "secretRef": { "name": "hook" } } } });
    api.patch("private", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("enable the webhook");
    let body = br#"{"ref":"refs/heads/main"}"#.to_vec();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"hook-secret").expect("key");
    mac.update(&body);
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let status = reqwest::Client::new()
        .post(format!(
            "http://{}/hooks/github/{}/private",
            operator.addr, ns.name
        ))
        .header("x-github-event", "push")
        .header("x-github-delivery", "rbac-1")
        .header("x-hub-signature-256", signature)
        .body(body)
        .send()
        .await
        .expect("the operator answers")
        .status();
    assert_eq!(status.as_u16(), 202, "log:\n{}", operator.log_tail());
    let deadline = Instant::now() + WAIT;
    loop {
        let obj = api.get("private").await.expect("get ProjectSync");
        if obj
            .status
            .and_then(|s| s.last_handled_requested_at)
            .as_deref()
            == Some("webhook:rbac-1")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the webhook's request was not handled:\n{}",
            operator.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = operator.log_text();
    assert!(
        !log.contains("forbidden"),
        "a request was forbidden with the chart's RBAC:\n{log}"
    );
}
