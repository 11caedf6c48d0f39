//! The CLI through the operator's API (`--server`): `history`, `search`,
//! `branches` and `restore` with a kubeconfig that holds a ServiceAccount
//! token and no database URL at all, against the real operator, API server,
//! Postgres and git daemon; tables and `-o json` as in the database mode,
//! errors in one line with what to do. Loopback only, bounded.

use std::{path::Path, process::Stdio, time::Duration};

use kube::Api;
use projectsync::api::{Phase, ProjectSync};
use serde_json::{Value, json};
use support::{
    access::{grant_verbs, service_account_token},
    chart_install::write_token_kubeconfig,
    cli::Run,
    fresh_database, fresh_namespace,
    git_server::GitDaemon,
    operator::{Operator, OperatorConfig},
    projectsync_binary,
    psync::{create, request_sync, synced_at, wait_until},
    repo::TestRepo,
    testenv,
};

/// `projectsync args...` with `kubeconfig` and no `DATABASE_URL`.
async fn projectsync(kubeconfig: &Path, args: &[&str]) -> Run {
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(projectsync_binary())
            .args(args)
            .env_remove("DATABASE_URL")
            .env_remove("PROJECTSYNC_SERVER")
            .env_remove("PROJECTSYNC_TOKEN")
            .env_remove("RUST_LOG")
            .env("KUBECONFIG", kubeconfig)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output(),
    )
    .await
    .expect("projectsync finished within 120s")
    .expect("run projectsync");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[tokio::test]
async fn history_search_branches_and_restore_go_through_the_api_with_the_kubeconfig_token() {
    let ns = fresh_namespace("cli-api").await;
    let db = fresh_database("cli_api").await;
    let mut repo = TestRepo::new("app");
    repo.write("README.md", "# app\nfind the needle here\n");
    let first = repo.commit("one");
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
    let obj = wait_until(&api, "app", log, "synced", synced_at(first.clone())).await;
    let first_sync = obj.status.and_then(|s| s.last_sync).expect("lastSync").id;
    repo.write("src/lib.rs", "pub fn two() {}\n");
    let second = repo.commit("two");
    request_sync(&api, "app", "second").await;
    wait_until(&api, "app", log, "synced again", synced_at(second.clone())).await;

    service_account_token(&ns, "dev").await;
    grant_verbs(&ns, &ns.name, "dev", "dev", &["get", "list", "patch"]).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = write_token_kubeconfig(dir.path(), &ns.name, "dev");
    let server = format!("http://{}", operator.addr);
    let key = format!("{}/app", ns.name);

    let history = projectsync(
        &kubeconfig,
        &["history", &key, "--server", &server, "-o", "json"],
    )
    .await
    .json();
    let runs = history["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2, "{history}");
    assert_eq!(runs[0]["commit"], json!(second));
    assert_eq!(runs[1]["id"], json!(first_sync));
    let table = projectsync(
        &kubeconfig,
        &["history", &key, "--server", &server, "--limit", "1"],
    )
    .await;
    let table = table.ok();
    assert!(table.starts_with("SYNC"), "{table}");
    assert_eq!(table.lines().count(), 2, "a header and one run: {table}");
    support::cli::assert_aligned(table);

    let search = projectsync(
        &kubeconfig,
        &["search", &key, "NEEDLE", "--server", &server, "-o", "json"],
    )
    .await
    .json();
    assert_eq!(search["hits"][0]["path"], json!("README.md"), "{search}");
    let branches = projectsync(
        &kubeconfig,
        &["branches", &key, "--server", &server, "-o", "json"],
    )
    .await
    .json();
    let tracked: Vec<&Value> = branches["branches"]
        .as_array()
        .expect("branches")
        .iter()
        .filter(|b| b["tracked"] == json!(true))
        .collect();
    assert_eq!(tracked.len(), 1, "{branches}");
    assert_eq!(tracked[0]["name"], json!("main"));

    // A declarative restore: the command waits until the operator holds it.
    let restored = projectsync(
        &kubeconfig,
        &[
            "restore",
            &key,
            &first_sync,
            "--server",
            &server,
            "-o",
            "json",
        ],
    )
    .await
    .json();
    assert_eq!(restored["restoredFrom"], json!(first_sync), "{restored}");
    assert_eq!(restored["commit"], json!(first));
    let obj = api.get("app").await.expect("get");
    assert_eq!(
        obj.spec.restore.as_ref().map(|r| r.sync_id.as_str()),
        Some(first_sync.as_str())
    );
    assert_eq!(obj.status.and_then(|s| s.phase), Some(Phase::Restored));
    let lifted = projectsync(
        &kubeconfig,
        &["restore", &key, "--lift", "--server", &server],
    )
    .await;
    lifted.ok();
    assert!(api.get("app").await.expect("get").spec.restore.is_none());

    // Errors: a kubeconfig without a token (the admin's client certificate),
    // no database and no server, a key that is not a resource name.
    let admin = Path::new(&testenv().kubeconfig);
    let line = projectsync(admin, &["history", &key, "--server", &server])
        .await
        .error(1)
        .to_string();
    assert!(line.contains("401") && line.contains("--token"), "{line}");
    let line = projectsync(&kubeconfig, &["history", &key])
        .await
        .error(2)
        .to_string();
    assert!(line.contains("--database-url"), "{line}");
    let line = projectsync(
        &kubeconfig,
        &["history", "ns/Bad?name", "--server", &server],
    )
    .await
    .error(2)
    .to_string();
    assert!(line.contains("not a project"), "{line}");
    let line = projectsync(
        &kubeconfig,
        &[
            "history",
            &format!("{}/ghost", ns.name),
            "--server",
            &server,
        ],
    )
    .await
    .error(3)
    .to_string();
    assert!(line.contains("not found"), "{line}");
}
