//! The operator's JSON API against the real binary, the real API server's
//! TokenReview and SubjectAccessReview (ServiceAccount tokens from
//! TokenRequest, Roles and RoleBindings), Postgres and a git daemon: the
//! authorization matrix (no token 401, no RBAC 403, a reader 200 on reads and
//! 403 on actions, an editor allowed actions, each recorded as an Event that
//! names the user; a token for namespace a learns nothing of namespace b),
//! paging, the path-prefix filter, search, a run's stream by id, hostile
//! parameters (400 with a message, never a 500), and the OpenAPI document.
//! Loopback only, bounded in count and time.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Event;
use kube::{Api, api::ListParams};
use projectsync::api::{ProjectSync, REQUESTED_AT_ANNOTATION};
use serde_json::{Value, json};
use support::{
    access::{grant_get, grant_verbs, service_account_token},
    embed_server::EmbedServer,
    fresh_database, fresh_namespace,
    git_server::GitDaemon,
    operator::{Operator, OperatorConfig},
    psync::{create, request_sync, synced_at, wait_until},
    repo::TestRepo,
};

/// A caller of the API: a base URL and maybe a token.
struct Caller {
    base: String,
    token: Option<String>,
}

impl Caller {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = reqwest::Client::new().request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = tokio::time::timeout(Duration::from_secs(20), request.send())
            .await
            .expect("an answer within 20s")
            .expect("the operator answers");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Option<Value>) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, body).await
    }
}

/// The first SSE event name of `path`, and its data.
async fn first_event(caller: &Caller, path: &str) -> (u16, Option<(String, String)>) {
    let mut request = reqwest::Client::new().get(format!("{}{path}", caller.base));
    if let Some(token) = &caller.token {
        request = request.bearer_auth(token);
    }
    let mut response = request.send().await.expect("the operator answers");
    let status = response.status().as_u16();
    if status != 200 {
        return (status, None);
    }
    let mut text = String::new();
    let event = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = response.chunk().await.expect("chunk") {
            text.push_str(&String::from_utf8_lossy(&chunk));
            let name = text.lines().find_map(|l| l.strip_prefix("event: "));
            let data = text.lines().find_map(|l| l.strip_prefix("data: "));
            if let (Some(name), Some(data)) = (name, data) {
                return Some((name.to_string(), data.to_string()));
            }
        }
        None
    })
    .await
    .expect("a first event within 10s");
    (status, event)
}

fn resource(ns: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{ns}/projectsyncs/{name}")
}

/// Waits (bounded) until an Event with `reason` on `name` mentions `text`.
async fn wait_for_event(client: &kube::Client, ns: &str, name: &str, reason: &str, text: &str) {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = events
            .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
            .await
            .expect("list events");
        let found = list.items.iter().any(|e| {
            e.reason.as_deref() == Some(reason)
                && e.message.as_deref().is_some_and(|m| m.contains(text))
        });
        if found {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {reason} event mentioning {text:?} on {ns}/{name}: {:?}",
            list.items
                .iter()
                .map(|e| (e.reason.clone(), e.message.clone()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_api_answers_each_caller_by_its_rbac_and_shows_nothing_of_other_namespaces() {
    let a = fresh_namespace("api-a").await;
    let b = fresh_namespace("api-b").await;
    let db = fresh_database("http_api").await;
    let mut repo = TestRepo::new("app");
    repo.write("README.md", "# app\nneedle in the readme\n")
        .write("src/lib.rs", "pub fn one() {}\n")
        .write("src/main.rs", "fn main() {}\n");
    let first = repo.commit("initial");
    let daemon = GitDaemon::start(repo.root());
    let operator = Operator::start(OperatorConfig {
        extra_args: vec!["--namespace".into(), b.name.clone()],
        ..OperatorConfig::new(&a.name, &db.url)
    })
    .await;
    let spec = json!({ "source": { "git": { "url": daemon.url("app") } }, "branch": "main", "interval": "1h" });
    for ns in [&a, &b] {
        let api: Api<ProjectSync> = Api::namespaced(ns.client.clone(), &ns.name);
        create(&api, "app", spec.clone()).await;
        wait_until(
            &api,
            "app",
            || operator.log_tail(),
            "synced",
            synced_at(first.clone()),
        )
        .await;
    }
    // A second run in a, so history has two pages of one.
    repo.write("src/lib.rs", "pub fn one() {}\npub fn two() {}\n");
    let second = repo.commit("two");
    let api_a: Api<ProjectSync> = Api::namespaced(a.client.clone(), &a.name);
    request_sync(&api_a, "app", "second").await;
    wait_until(
        &api_a,
        "app",
        || operator.log_tail(),
        "second sync",
        synced_at(second.clone()),
    )
    .await;

    // A resource with embeddings, for a vector search through the API.
    let embedder = EmbedServer::start().await;
    embedder.require_api_key("embed-key-value");
    a.apply_secret("embed-key", json!({ "token": "embed-key-value" }))
        .await;
    let mut vec_spec = spec.clone();
    vec_spec["embedding"] = json!({
        "provider": "OpenAI", "endpoint": embedder.endpoint(), "model": "test-model",
        "secretRef": { "name": "embed-key", "key": "token" },
    });
    create(&api_a, "vec", vec_spec).await;
    wait_until(
        &api_a,
        "vec",
        || operator.log_tail(),
        "synced with embeddings",
        synced_at(second.clone()),
    )
    .await;

    // Identities, granted before their first request (decisions are cached).
    let nobody = service_account_token(&a, "nobody").await;
    let one = service_account_token(&a, "one").await;
    grant_get(&a, &a.name, "one", &["app"]).await;
    let reader = service_account_token(&a, "reader").await;
    let editor = service_account_token(&a, "editor").await;
    grant_verbs(&a, &a.name, "reader", "reader", &["get", "list"]).await;
    grant_verbs(&a, &a.name, "editor", "editor", &["get", "list", "patch"]).await;
    let base = format!("http://{}", operator.addr);
    let as_ = |token: Option<&str>| Caller {
        base: base.clone(),
        token: token.map(str::to_string),
    };
    let (anonymous, nobody, reader, editor) = (
        as_(None),
        as_(Some(&nobody)),
        as_(Some(&reader)),
        as_(Some(&editor)),
    );

    let app = resource(&a.name, "app");
    let (status, history) = reader.get(&format!("{app}/history")).await;
    assert_eq!(status, 200, "{history}");
    let runs = history["items"].as_array().expect("items");
    assert_eq!(runs.len(), 2, "{history}");
    let newest = runs[0]["id"].as_str().expect("id").to_string();
    let oldest = runs[1]["id"].as_str().expect("id").to_string();
    assert_eq!(runs[0]["commit"], json!(second));
    assert_eq!(runs[0]["status"], json!("COMPLETED"));
    for field in ["trigger", "counts", "durations", "error"] {
        assert!(runs[0].get(field).is_some(), "{field} missing: {}", runs[0]);
    }

    let reads = [
        format!("/api/v1/namespaces/{}/projectsyncs", a.name),
        app.clone(),
        format!("{app}/history"),
        format!("{app}/syncs/{newest}"),
        format!("{app}/syncs/{newest}/files"),
        format!("{app}/search?q=needle"),
        format!("{app}/branches"),
    ];
    for path in &reads {
        let (status, body) = anonymous.get(path).await;
        assert_eq!(status, 401, "no token on {path}: {body}");
        assert_eq!(body["reason"], json!("Unauthorized"), "{body}");
        assert_eq!(
            as_(Some("not-a-token")).get(path).await.0,
            401,
            "bad token on {path}"
        );
        let (status, body) = nobody.get(path).await;
        assert_eq!(status, 403, "no RBAC on {path}: {body}");
        assert_eq!(body["kind"], json!("Status"), "{body}");
        for caller in [&reader, &editor] {
            let (status, body) = caller.get(path).await;
            assert_eq!(status, 200, "{path}: {body}");
        }
    }

    // Actions: the reader may not, the editor may; each is an Event naming
    // the user.
    let actions = ["sync", "suspend", "resume"];
    for action in actions {
        let path = format!("{app}/{action}");
        assert_eq!(anonymous.post(&path, None).await.0, 401, "{path}");
        assert_eq!(nobody.post(&path, None).await.0, 403, "{path}");
        assert_eq!(reader.post(&path, None).await.0, 403, "{path}");
    }
    assert_eq!(
        reader
            .post(&format!("{app}/restore"), Some(json!({"syncId": oldest})))
            .await
            .0,
        403
    );
    let editor_name = format!("system:serviceaccount:{}:editor", a.name);
    let (status, body) = editor.post(&format!("{app}/suspend"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["spec"]["suspend"], json!(true), "{body}");
    wait_for_event(&a.client, &a.name, "app", "SuspendRequested", &editor_name).await;
    let (status, body) = editor.post(&format!("{app}/resume"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["spec"]["suspend"], json!(false), "{body}");
    wait_for_event(&a.client, &a.name, "app", "ResumeRequested", &editor_name).await;
    // A restore through the API sets spec.restore and names the user; the
    // hold itself is tests/operator_restore.rs's.
    let (status, body) = editor
        .post(&format!("{app}/restore"), Some(json!({"syncId": newest})))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["spec"]["restore"]["syncId"], json!(newest), "{body}");
    wait_for_event(&a.client, &a.name, "app", "RestoreRequested", &editor_name).await;
    let (status, body) = editor
        .send(reqwest::Method::DELETE, &format!("{app}/restore"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["spec"].get("restore").is_none(), "{body}");
    wait_for_event(&a.client, &a.name, "app", "RestoreLifted", &editor_name).await;
    let (status, _) = editor.post(&format!("{app}/sync"), None).await;
    assert_eq!(status, 200);
    let obj = api_a.get("app").await.expect("get");
    assert!(
        obj.metadata
            .annotations
            .unwrap_or_default()
            .contains_key(REQUESTED_AT_ANNOTATION),
        "sync now sets the request annotation"
    );
    wait_for_event(&a.client, &a.name, "app", "SyncRequested", &editor_name).await;

    // Namespace b: the reader of a sees nothing, and an existing resource
    // answers exactly as a made-up one.
    let b_app = resource(&b.name, "app");
    let b_ghost = resource(&b.name, "ghost");
    for (real, ghost) in [
        (b_app.clone(), b_ghost.clone()),
        (format!("{b_app}/history"), format!("{b_ghost}/history")),
        (format!("{b_app}/branches"), format!("{b_ghost}/branches")),
    ] {
        let (real_status, real_body) = reader.get(&real).await;
        let (ghost_status, ghost_body) = reader.get(&ghost).await;
        assert_eq!(real_status, 403, "{real}: {real_body}");
        assert_eq!(ghost_status, 403, "{ghost}: {ghost_body}");
        assert_eq!(
            real_body["message"]
                .as_str()
                .map(|m| m.replace("/app", "/ghost")),
            ghost_body["message"].as_str().map(str::to_string),
            "a 403 says nothing the made-up name would not"
        );
    }
    let (status, _) = reader
        .get(&format!("/api/v1/namespaces/{}/projectsyncs", b.name))
        .await;
    assert_eq!(status, 403, "no list in b");
    assert_eq!(editor.post(&format!("{b_app}/suspend"), None).await.0, 403);
    // Without list, the listing shows what the caller may get, and only that.
    let (status, listing) = as_(Some(&one))
        .get(&format!("/api/v1/namespaces/{}/projectsyncs", a.name))
        .await;
    assert_eq!(status, 200, "{listing}");
    let names: Vec<&str> = listing["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert_eq!(names, ["app"], "{listing}");
    // In a, a made-up name is a 404 for someone allowed to look.
    assert_eq!(reader.get(&resource(&a.name, "ghost")).await.0, 404);

    // A run of b by id: the same 404 as an id nobody knows.
    let api_b: Api<ProjectSync> = Api::namespaced(b.client.clone(), &b.name);
    let b_run = api_b
        .get("app")
        .await
        .expect("get b")
        .status
        .and_then(|s| s.last_sync)
        .expect("b synced")
        .id;
    let unknown = "0190f3a2-7c1e-7b8a-9d2e-3f4a5b6c7d8e";
    let (status, b_body) = reader
        .get(&format!("/api/v1/events/project-sync/{b_run}"))
        .await;
    assert_eq!(status, 404, "{b_body}");
    let (status, _) = reader
        .get(&format!("/api/v1/events/project-sync/{unknown}"))
        .await;
    assert_eq!(status, 404);
    assert_eq!(
        anonymous
            .get(&format!("/api/v1/events/project-sync/{b_run}"))
            .await
            .0,
        401
    );
    // The reader's own finished run: one `completed` event with the run.
    let (status, event) =
        first_event(&reader, &format!("/api/v1/events/project-sync/{newest}")).await;
    assert_eq!(status, 200);
    let (name, data) = event.expect("an event");
    assert_eq!(name, "completed");
    let run: Value = serde_json::from_str(&data).expect("JSON data");
    assert_eq!(run["id"], json!(newest));

    // Paging, the prefix filter, search.
    let (_, page) = reader.get(&format!("{app}/history?limit=1")).await;
    assert_eq!(page["items"][0]["id"], json!(newest), "{page}");
    let token = page["continue"]
        .as_str()
        .expect("a continue token")
        .to_string();
    let (_, page) = reader
        .get(&format!("{app}/history?limit=1&continue={token}"))
        .await;
    assert_eq!(page["items"][0]["id"], json!(oldest), "{page}");
    assert!(page.get("continue").is_none(), "the last page: {page}");
    let (_, files) = reader
        .get(&format!("{app}/syncs/{newest}/files?prefix=src/"))
        .await;
    let paths: Vec<&str> = files["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|f| f["path"].as_str())
        .collect();
    assert_eq!(paths, ["src/lib.rs", "src/main.rs"], "{files}");
    assert_eq!(files["items"][0]["kind"], json!("file"));
    let (_, files) = reader
        .get(&format!("{app}/syncs/{newest}/files?limit=1"))
        .await;
    assert_eq!(files["items"].as_array().map(Vec::len), Some(1));
    let token = files["continue"].as_str().expect("continue").to_string();
    let (_, files) = reader
        .get(&format!(
            "{app}/syncs/{newest}/files?limit=2&continue={token}"
        ))
        .await;
    assert_eq!(files["items"][0]["path"], json!("src/lib.rs"), "{files}");
    let (_, hits) = reader.get(&format!("{app}/search?q=NEEDLE")).await;
    assert_eq!(hits["items"][0]["path"], json!("README.md"), "{hits}");
    // Vector search: the query embedded with the resource's own spec (its
    // endpoint, model and Secret), ranked among that model's vectors.
    let before = embedder.request_count();
    let vec_path = resource(&a.name, "vec");
    let (status, hits) = reader
        .get(&format!(
            "{vec_path}/search?q=where%20is%20main&mode=vector&limit=2"
        ))
        .await;
    assert_eq!(status, 200, "{hits}");
    assert_eq!(hits["mode"], json!("vector"));
    assert_eq!(hits["model"], json!("test-model"));
    let items = hits["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{hits}");
    assert!(items[0]["score"].as_f64().is_some(), "{hits}");
    let asked = embedder.requests();
    assert_eq!(asked.len(), before + 1, "one request for the query");
    assert_eq!(
        asked.last().map(|r| r.inputs.clone()),
        Some(vec!["where is main".to_string()])
    );
    let (status, answer) = reader.get(&format!("{app}/search?q=x&mode=vector")).await;
    assert_eq!(status, 400, "no spec.embedding: {answer}");

    // Hostile parameters: 400 with a message, checked before any review.
    let long_q = "x".repeat(300);
    let hostile = [
        format!("{app}/syncs/not-a-uuid"),
        format!("{app}/syncs/'%20OR%201=1--/files"),
        format!("{app}/history?limit=0"),
        format!("{app}/history?limit=100000"),
        format!("{app}/history?limit=abc"),
        format!("{app}/history?continue=%%%%"),
        format!("{app}/history?continue={}", "A".repeat(9000)),
        format!("{app}/syncs/{newest}/files?limit=5000"),
        format!("{app}/search"),
        format!("{app}/search?q={long_q}"),
        format!("{app}/search?q=x&mode=sql"),
        "/api/v1/namespaces/Not_A_Namespace/projectsyncs".to_string(),
        format!("/api/v1/namespaces/{}/projectsyncs/UPPER", a.name),
        "/api/v1/events/project-sync/123".to_string(),
    ];
    for path in &hostile {
        let (status, body) = anonymous.get(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{path}: {body}"
        );
    }
    for body in [
        json!({"syncId": "nope"}),
        json!({"syncId": oldest, "extra": 1}),
        json!({}),
        json!("a string"),
    ] {
        let (status, answer) = editor
            .post(&format!("{app}/restore"), Some(body.clone()))
            .await;
        assert_eq!(status, 400, "{body}: {answer}");
    }
    let (status, answer) = editor
        .post(&format!("{app}/restore"), Some(json!({"syncId": unknown})))
        .await;
    assert_eq!(status, 404, "{answer}");
    let (status, answer) = editor
        .post(&format!("{app}/restore"), Some(json!({"syncId": b_run})))
        .await;
    assert_eq!(status, 404, "a run of another resource: {answer}");
    let oversized = json!({"syncId": "x".repeat(64 * 1024)});
    let (status, _) = editor
        .post(&format!("{app}/restore"), Some(oversized))
        .await;
    assert!(
        status == 400 || status == 413,
        "an oversized body: {status}"
    );

    // The OpenAPI document needs no token and names the routes.
    let (status, doc) = anonymous.get("/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    assert!(
        doc["paths"]
            .get("/api/v1/namespaces/{namespace}/projectsyncs/{name}/history")
            .is_some()
    );
    assert!(
        !operator.log_text().contains("panicked"),
        "{}",
        operator.log_tail()
    );
}

#[tokio::test]
async fn a_runs_stream_by_id_follows_the_live_run_to_its_end() {
    let ns = fresh_namespace("api-live").await;
    let db = fresh_database("http_api_live").await;
    let repo = TestRepo::new("big");
    let head = support::convergence::generate_repo(&repo, "refs/heads/main", 3000);
    let daemon = GitDaemon::start(repo.root());
    let operator = Operator::start(OperatorConfig::new(&ns.name, &db.url)).await;
    let token = service_account_token(&ns, "watcher").await;
    grant_verbs(&ns, &ns.name, "watcher", "watcher", &["get"]).await;
    let api: Api<ProjectSync> = Api::namespaced(ns.client.clone(), &ns.name);
    create(
        &api,
        "big",
        json!({ "source": { "git": { "url": daemon.url("big") } }, "branch": "main", "interval": "1h" }),
    )
    .await;
    let running = wait_until(
        &api,
        "big",
        || operator.log_tail(),
        "running",
        |o: &ProjectSync| {
            o.status
                .as_ref()
                .is_some_and(|s| s.progress.is_some() || s.last_sync.is_some())
        },
    )
    .await;
    let status = running.status.expect("status");
    let live = status.progress.is_some();
    let sync_id = match (&status.progress, &status.last_sync) {
        (Some(progress), _) => progress.sync_id.clone(),
        (None, Some(last)) => last.id.clone(),
        (None, None) => unreachable!("the wait above"),
    };
    let mut response = reqwest::Client::new()
        .get(format!(
            "http://{}/api/v1/events/project-sync/{sync_id}",
            operator.addr
        ))
        .bearer_auth(&token)
        .send()
        .await
        .expect("the operator answers");
    assert_eq!(response.status().as_u16(), 200);
    let mut text = String::new();
    let names = tokio::time::timeout(Duration::from_secs(90), async {
        while let Some(chunk) = response.chunk().await.expect("chunk") {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        text.lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .map(str::to_string)
            .collect::<Vec<_>>()
    })
    .await
    .expect("the stream ends with the run within 90s");
    assert_eq!(
        names.last().map(String::as_str),
        Some("completed"),
        "the stream ends with the run's completion: {names:?}"
    );
    eprintln!(
        "run {sync_id} (live when opened: {live}): {} events, the last {:?}",
        names.len(),
        names.last()
    );
    if live {
        assert!(
            names.len() > 1 && names.iter().any(|n| n == "progress" || n == "snapshot"),
            "a live run streams its progress before the end: {names:?}"
        );
    }
    let data = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .next_back()
        .expect("data");
    assert!(
        data.contains(&sync_id),
        "the final event names the run: {data}"
    );
    wait_until(
        &api,
        "big",
        || operator.log_tail(),
        "synced",
        synced_at(head),
    )
    .await;
}
