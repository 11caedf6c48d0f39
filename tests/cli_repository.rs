//! The CLI against repositories and the cluster: `branches` of a `git
//! daemon` remote, of the GitHub stand-in with a token, and of a ProjectSync
//! read from the real API server with its Secret; `sync --once` from the
//! GitHub stand-in; `backfill-embeddings` and `search --vector` using a
//! ProjectSync's embedding spec and Secret. Through the real binary.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, api::PostParams};
use projectsync::api::ProjectSync;
use serde_json::json;
use support::cli::{assert_aligned, projectsync};
use support::{
    embed_server::EmbedServer, fresh_database, fresh_namespace, git_server::GitDaemon,
    github::GithubStandIn, repo::TestRepo,
};

fn repo_with_branches(name: &str) -> TestRepo {
    let mut repo = TestRepo::new(name);
    repo.write("README.md", "# branches\n")
        .write("src/main.rs", "fn main() {}\n");
    repo.commit("initial");
    repo.branch("feature/login");
    repo.checkout("feature/login")
        .write("login.rs", "fn login() {}\n");
    repo.commit("login");
    repo.checkout("main");
    repo.branch("release-1.0");
    repo
}

fn branches_of(json: &serde_json::Value) -> Vec<(String, String)> {
    json["branches"]
        .as_array()
        .expect("branches")
        .iter()
        .map(|b| {
            (
                b["name"].as_str().unwrap().to_string(),
                b["commit"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn create_secret(namespace: &support::TestNamespace, name: &str, data: &[(&str, &str)]) {
    let string_data: BTreeMap<String, String> = data
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": { "name": name }, "stringData": string_data,
    }))
    .unwrap();
    Api::<Secret>::namespaced(namespace.client.clone(), &namespace.name)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create Secret");
}

async fn create_project_sync(
    namespace: &support::TestNamespace,
    name: &str,
    spec: serde_json::Value,
) {
    let object: ProjectSync = serde_json::from_value(json!({
        "apiVersion": "projectsync.dev/v1alpha1", "kind": "ProjectSync", "metadata": { "name": name }, "spec": spec,
    }))
    .expect("valid ProjectSync");
    Api::<ProjectSync>::namespaced(namespace.client.clone(), &namespace.name)
        .create(&PostParams::default(), &object)
        .await
        .expect("create ProjectSync");
}

#[tokio::test]
async fn branches_of_a_git_remote_are_what_git_says() {
    let repo = repo_with_branches("branches");
    let daemon = GitDaemon::start(repo.root());
    let url = daemon.url("branches");
    let json = projectsync(
        "postgres://unused",
        &["branches", "--git", &url, "-o", "json"],
        &[],
    )
    .await
    .json();
    assert_eq!(branches_of(&json), repo.branches());
    assert!(
        json["repository"].as_str().unwrap().contains(&url),
        "{json}"
    );

    let table = projectsync("postgres://unused", &["branches", "--git", &url], &[]).await;
    let text = table.ok();
    assert!(text.starts_with("BRANCH "), "{text}");
    assert!(
        !text.contains("SYNCED"),
        "no ProjectSync, no tracked column: {text}"
    );
    assert_eq!(text.lines().count(), 4, "{text}");
    assert_aligned(text);
}

#[tokio::test]
async fn branches_of_a_github_repository_use_the_token_from_the_named_variable() {
    let repo = repo_with_branches("private");
    let github = GithubStandIn::start("acme", "private", repo.git_dir()).await;
    github.require_token("ghp_test");
    let api = github.api_url();
    let args = [
        "branches",
        "--github",
        "acme/private",
        "--api-url",
        &api,
        "--token-env",
        "TEST_GH_TOKEN",
        "-o",
        "json",
    ];
    let json = projectsync("postgres://unused", &args, &[("TEST_GH_TOKEN", "ghp_test")])
        .await
        .json();
    assert_eq!(branches_of(&json), repo.branches());

    let anonymous = projectsync(
        "postgres://unused",
        &["branches", "--github", "acme/private", "--api-url", &api],
        &[],
    )
    .await;
    let line = anonymous.error(1);
    assert!(
        line.contains("--token-env"),
        "the error says how to pass a token: {line}"
    );

    let unset = projectsync("postgres://unused", &args, &[]).await;
    assert!(unset.error(2).contains("TEST_GH_TOKEN"));

    let neither = projectsync("postgres://unused", &["branches"], &[]).await;
    assert_eq!(
        neither.code, 2,
        "clap refuses a call without a repository: {}",
        neither.stderr
    );
}

#[tokio::test]
async fn branches_of_a_project_sync_read_its_spec_and_secret_and_mark_the_synced_branch() {
    let namespace = fresh_namespace("cli branches").await;
    let repo = repo_with_branches("tracked");
    let github = GithubStandIn::start("acme", "tracked", repo.git_dir()).await;
    github.require_token("ghp_cluster");
    create_secret(&namespace, "github", &[("token", "ghp_cluster")]).await;
    create_project_sync(
        &namespace,
        "tracked",
        json!({
            "source": { "github": { "owner": "acme", "repo": "tracked", "apiUrl": github.api_url(),
                                    "secretRef": { "name": "github", "key": "token" } } },
            "branch": "release-1.0",
        }),
    )
    .await;
    let key = format!("{}/tracked", namespace.name);

    let json = projectsync("postgres://unused", &["branches", &key, "-o", "json"], &[])
        .await
        .json();
    assert_eq!(branches_of(&json), repo.branches());
    let tracked: Vec<&str> = json["branches"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["tracked"] == true)
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(tracked, ["release-1.0"]);
    assert_eq!(json["repository"], "acme/tracked");

    let table = projectsync("postgres://unused", &["branches", &key], &[]).await;
    let text = table.ok();
    let marked: Vec<&str> = text.lines().filter(|l| l.ends_with('*')).collect();
    assert_eq!(marked.len(), 1, "{text}");
    assert!(marked[0].starts_with("release-1.0 "), "{text}");
    assert_aligned(text);

    let missing = projectsync(
        "postgres://unused",
        &["branches", &format!("{}/nope", namespace.name)],
        &[],
    )
    .await;
    let line = missing.error(3);
    assert!(
        line.contains("no ProjectSync nope") && line.contains("kubectl get psync"),
        "{line}"
    );
}

#[tokio::test]
async fn sync_once_reads_a_github_repository_through_the_rest_api() {
    let db = fresh_database("cli sync github").await;
    let repo = repo_with_branches("api");
    let github = GithubStandIn::start("acme", "api", repo.git_dir()).await;
    let api = github.api_url();
    let json = projectsync(
        &db.url,
        &[
            "sync",
            "--once",
            "--github",
            "acme/api",
            "--api-url",
            &api,
            "--branch",
            "feature/login",
            "--project",
            "team/api",
            "-o",
            "json",
        ],
        &[],
    )
    .await
    .json();
    assert_eq!(json["commit"], repo.rev_parse("feature/login").as_str());
    assert_eq!(json["summary"]["files"]["added"], 3, "{json}");
    assert!(
        json["repository"].as_str().unwrap().contains("acme/api"),
        "{json}"
    );
}

#[tokio::test]
async fn backfill_and_vector_search_without_flags_use_the_project_syncs_embedding_spec_and_secret()
{
    let db = fresh_database("cli backfill cluster").await;
    let namespace = fresh_namespace("cli backfill").await;
    let mut repo = TestRepo::new("embedme");
    repo.write("a.rs", "fn alpha() {}\n")
        .write("b.rs", "fn beta() {}\n");
    repo.commit("initial");
    let daemon = GitDaemon::start(repo.root());
    let url = daemon.url("embedme");
    let embed = EmbedServer::start().await;
    embed.require_api_key("sk-cluster");
    create_secret(&namespace, "openai", &[("apiKey", "sk-cluster")]).await;
    create_project_sync(
        &namespace,
        "embedme",
        json!({
            "source": { "git": { "url": url } },
            "branch": "main",
            "embedding": { "provider": "OpenAI", "endpoint": embed.endpoint(), "model": "fake-8",
                           "secretRef": { "name": "openai", "key": "apiKey" } },
        }),
    )
    .await;
    let key = format!("{}/embedme", namespace.name);
    projectsync(
        &db.url,
        &["sync", "--once", "--git", &url, "--project", &key],
        &[],
    )
    .await
    .ok();

    let report = projectsync(&db.url, &["backfill-embeddings", &key, "-o", "json"], &[])
        .await
        .json();
    assert_eq!(report["model"], "fake-8");
    assert_eq!(report["embedded"], 2, "{report}");
    assert!(
        embed
            .requests()
            .iter()
            .all(|r| r.authorization.as_deref() == Some("Bearer sk-cluster"))
    );

    let text = projectsync(&db.url, &["backfill-embeddings", &key], &[]).await;
    assert!(text.ok().contains("missing:"), "{}", text.stdout);

    let found = projectsync(
        &db.url,
        &["search", &key, "fn beta() {}\n", "--vector", "-o", "json"],
        &[],
    )
    .await
    .json();
    assert_eq!(found["hits"][0]["path"], "b.rs", "{found}");
}
