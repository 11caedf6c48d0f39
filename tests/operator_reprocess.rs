//! Config-aware reprocessing end to end: the real binary against the real API
//! server, Postgres and the GitHub stand-in. Changing one observed input
//! (include, exclude, maxFileSize, the embedding model) reprocesses exactly
//! the files whose outcome can change, on an unchanged commit; the
//! `projectsync.dev/reindex` annotation reprocesses everything, once per
//! value, and says so in history. Counts come from `status.lastSync.files`
//! and from the blob requests the stand-in logged.

use kube::{
    Api,
    api::{Patch, PatchParams},
};
use projectsync::api::{FileCounts, ProjectSync, REINDEX_ANNOTATION, SyncSummary};
use serde_json::json;
use support::{
    TestNamespace,
    embed_server::EmbedServer,
    fresh_database, fresh_namespace,
    github::{GithubStandIn, LoggedRequest},
    operator::{Operator, OperatorConfig},
    psync::{create, request_sync, synced_at, wait_until},
    repo::TestRepo,
};

fn blob_requests(log: &[LoggedRequest]) -> usize {
    log.iter()
        .filter(|r| r.path.contains("/git/blobs/"))
        .count()
}

/// `(added, modified, deleted, unchanged, total)`.
fn counts(files: &FileCounts) -> (i64, i64, i64, i64, i64) {
    (
        files.added,
        files.modified,
        files.deleted,
        files.unchanged,
        files.total,
    )
}

fn last_sync(obj: &ProjectSync) -> Option<&SyncSummary> {
    obj.status.as_ref()?.last_sync.as_ref()
}

/// One repository on the stand-in and an operator for one test.
struct Bench {
    _ns: TestNamespace,
    db: support::TestDb,
    _repo: TestRepo,
    github: GithubStandIn,
    operator: Operator,
    api: Api<ProjectSync>,
    commit: String,
}

impl Bench {
    /// Active memory entries counted by embedding model (`-` for none).
    async fn active_entries_by_model(&self) -> Vec<(String, i64)> {
        sqlx::query_as(
            "SELECT COALESCE(embedding_model, '-'), count(*) FROM active_memory_entries \
             GROUP BY 1 ORDER BY 1",
        )
        .fetch_all(&self.db.pool)
        .await
        .expect("count active memory entries")
    }

    /// Five small text files under `src/`, two under `docs/`, one of 2000
    /// bytes and one of 5000 under `data/`.
    async fn start(label: &str) -> Self {
        let ns = fresh_namespace(label).await;
        let db = fresh_database(&label.replace('-', "_")).await;
        let mut repo = TestRepo::new("svc");
        for i in 0..5 {
            repo.write(
                &format!("src/m{i}.rs"),
                format!("pub fn f{i}() -> u32 {{ {i} }}\n"),
            );
        }
        repo.write("docs/a.md", "# a\n").write("docs/b.md", "# b\n");
        repo.write("data/mid.txt", "m".repeat(2000))
            .write("data/big.txt", "b".repeat(5000));
        let commit = repo.commit("initial");
        let github = GithubStandIn::start("acme", "svc", repo.git_dir()).await;
        let operator = Operator::start(OperatorConfig::new(&ns.name, &db.url)).await;
        let api = Api::namespaced(ns.client.clone(), &ns.name);
        Bench {
            _ns: ns,
            db,
            _repo: repo,
            github,
            operator,
            api,
            commit,
        }
    }

    fn spec(&self, extra: serde_json::Value) -> serde_json::Value {
        let mut spec = json!({
            "source": { "github": { "owner": "acme", "repo": "svc", "apiUrl": self.github.api_url() } },
            "branch": "main",
            "interval": "1h",
        });
        for (key, value) in extra.as_object().expect("an object") {
            spec[key] = value.clone();
        }
        spec
    }

    async fn create(&self, extra: serde_json::Value) -> ProjectSync {
        create(&self.api, "svc", self.spec(extra)).await;
        wait_until(
            &self.api,
            "svc",
            || self.operator.log_tail(),
            "synced",
            synced_at(self.commit.clone()),
        )
        .await
    }

    /// Merges `spec` into the resource and waits for the run it causes.
    async fn change_spec(&self, spec: serde_json::Value, before: &ProjectSync) -> ProjectSync {
        self.github.clear_log();
        let patch = json!({ "spec": spec });
        self.api
            .patch("svc", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("patch spec");
        self.wait_for_new_run(before).await
    }

    async fn wait_for_new_run(&self, before: &ProjectSync) -> ProjectSync {
        let previous = last_sync(before).map(|s| s.id.clone());
        wait_until(
            &self.api,
            "svc",
            || self.operator.log_tail(),
            "synced again",
            move |obj| {
                let status = obj.status.as_ref();
                last_sync(obj).map(|s| s.id.clone()) != previous
                    && status.and_then(|s| s.observed_generation) == obj.metadata.generation
                    && status.is_some_and(|s| {
                        s.conditions
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.status == "True")
                    })
            },
        )
        .await
    }
}

#[tokio::test]
async fn widening_include_adds_only_the_new_paths_and_a_new_exclude_deletes_without_fetching() {
    let bench = Bench::start("reprocess-globs").await;
    let obj = bench.create(json!({ "include": ["src/**"] })).await;
    assert_eq!(
        counts(&last_sync(&obj).expect("lastSync").files),
        (5, 0, 0, 0, 5)
    );

    let obj = bench
        .change_spec(json!({ "include": ["src/**", "docs/**"] }), &obj)
        .await;
    let files = &last_sync(&obj).expect("lastSync").files;
    assert_eq!(
        counts(files),
        (2, 0, 0, 5, 7),
        "only the newly included paths are added"
    );
    assert_eq!(
        blob_requests(&bench.github.requests()),
        2,
        "only the two new paths are fetched"
    );

    let obj = bench
        .change_spec(json!({ "exclude": ["src/m0.rs", "docs/b.md"] }), &obj)
        .await;
    let files = &last_sync(&obj).expect("lastSync").files;
    assert_eq!(
        counts(files),
        (0, 0, 2, 5, 5),
        "the excluded paths are deleted, the rest unchanged"
    );
    assert_eq!(
        blob_requests(&bench.github.requests()),
        0,
        "an exclusion fetches nothing"
    );
}

#[tokio::test]
async fn changing_max_file_size_modifies_only_the_files_crossing_the_limit() {
    let bench = Bench::start("reprocess-size").await;
    let obj = bench.create(json!({ "maxFileSize": 1000 })).await;
    let files = &last_sync(&obj).expect("lastSync").files;
    assert_eq!(
        (files.added, files.skipped, files.total),
        (9, 2, 9),
        "mid and big are recorded, not processed"
    );
    assert_eq!(
        blob_requests(&bench.github.requests()),
        7,
        "files over the limit are not fetched"
    );

    // Raised past mid (2000 bytes) but not big (5000): mid now needs chunks.
    let obj = bench
        .change_spec(json!({ "maxFileSize": 3000 }), &obj)
        .await;
    assert_eq!(
        counts(&last_sync(&obj).expect("lastSync").files),
        (0, 1, 0, 8, 9)
    );
    assert_eq!(
        blob_requests(&bench.github.requests()),
        1,
        "only the file now under the limit is fetched"
    );

    // Lowered again: mid goes back to being recorded only, with no fetch.
    let obj = bench
        .change_spec(json!({ "maxFileSize": 1000 }), &obj)
        .await;
    assert_eq!(
        counts(&last_sync(&obj).expect("lastSync").files),
        (0, 1, 0, 8, 9)
    );
    assert_eq!(
        blob_requests(&bench.github.requests()),
        0,
        "a file crossing above the limit is not fetched"
    );

    // A change that moves no file across the limit reprocesses nothing.
    let obj = bench
        .change_spec(json!({ "maxFileSize": 1500 }), &obj)
        .await;
    assert_eq!(
        counts(&last_sync(&obj).expect("lastSync").files),
        (0, 0, 0, 9, 9)
    );
    assert_eq!(blob_requests(&bench.github.requests()), 0);
}

#[tokio::test]
async fn changing_the_embedding_model_only_reembeds_stored_chunks() {
    let bench = Bench::start("reprocess-model").await;
    let embed = EmbedServer::start().await;
    let embedding =
        |model: &str| json!({ "provider": "OpenAI", "endpoint": embed.endpoint(), "model": model });
    let obj = bench
        .create(json!({ "embedding": embedding("fake-8"), "maxFileSize": 1000 }))
        .await;
    assert_eq!(last_sync(&obj).expect("lastSync").files.added, 9);
    let first = last_sync(&obj).expect("lastSync").clone();
    let first_entries = match bench.active_entries_by_model().await.as_slice() {
        [(model, n)] if model == "fake-8" => *n,
        other => panic!("every entry embedded with fake-8 after the first sync, found {other:?}"),
    };
    let before = embed.request_count();

    let obj = bench
        .change_spec(json!({ "embedding": embedding("fake-8-v2") }), &obj)
        .await;
    let last = last_sync(&obj).expect("lastSync");
    assert_eq!(
        counts(&last.files),
        (0, 7, 0, 2, 9),
        "the seven text files under the limit get new rows; the two over it keep theirs"
    );
    assert_eq!(last.commit, first.commit);
    assert_eq!(
        blob_requests(&bench.github.requests()),
        0,
        "the chunks come from the store: no blob is fetched again"
    );
    assert_eq!(
        bench.active_entries_by_model().await,
        vec![("fake-8-v2".to_string(), first_entries)],
        "the same chunks, all with embeddings of the new model"
    );
    let requests = embed.requests();
    assert!(requests.len() > before, "new embeddings were computed");
    assert!(
        requests[before..].iter().all(|r| r.model == "fake-8-v2"),
        "with the new model"
    );
    let embedded: usize = requests[before..].iter().map(|r| r.inputs.len()).sum();
    let first_embedded: usize = requests[..before].iter().map(|r| r.inputs.len()).sum();
    assert_eq!(
        embedded, first_embedded,
        "each distinct chunk is embedded once with the new model, as with the old"
    );

    // Back to the first model: every chunk already has an embedding of it,
    // so nothing is fetched and nothing is computed.
    let count = embed.request_count();
    let obj = bench
        .change_spec(json!({ "embedding": embedding("fake-8") }), &obj)
        .await;
    assert_eq!(
        counts(&last_sync(&obj).expect("lastSync").files),
        (0, 7, 0, 2, 9)
    );
    assert_eq!(blob_requests(&bench.github.requests()), 0);
    // Reused by content hash; one chunk is embedded again as the run's
    // probe of the endpoint's dimension (a stored vector is reused only
    // when the endpoint still answers with its dimension).
    let probes = embed.requests()[count..].to_vec();
    assert_eq!(
        probes.iter().map(|r| r.inputs.len()).sum::<usize>(),
        1,
        "embeddings are reused by content hash, but for one probe: {probes:?}"
    );

    // No model at all: the chunks stay, without embeddings.
    let obj = bench.change_spec(json!({ "embedding": null }), &obj).await;
    assert_eq!(
        counts(&last_sync(&obj).expect("lastSync").files),
        (0, 7, 0, 2, 9)
    );
    assert_eq!(blob_requests(&bench.github.requests()), 0);
    assert_eq!(
        bench.active_entries_by_model().await,
        vec![("-".to_string(), first_entries)]
    );
}

#[tokio::test]
async fn the_reindex_annotation_reprocesses_everything_once_and_says_so_in_history() {
    let bench = Bench::start("reprocess-reindex").await;
    let obj = bench.create(json!({})).await;
    assert_eq!(last_sync(&obj).expect("lastSync").files.added, 9);

    bench.github.clear_log();
    let patch = json!({ "metadata": { "annotations": { REINDEX_ANNOTATION: "r1" } } });
    bench
        .api
        .patch("svc", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("annotate");
    let obj = bench.wait_for_new_run(&obj).await;
    let status = obj.status.clone().expect("status");
    let last = status.last_sync.clone().expect("lastSync");
    assert_eq!(
        counts(&last.files),
        (0, 9, 0, 0, 9),
        "every file is reprocessed on the same commit"
    );
    assert_eq!(last.commit, bench.commit);
    assert_eq!(
        blob_requests(&bench.github.requests()),
        9,
        "every blob is fetched again"
    );
    assert_eq!(last.trigger.as_deref(), Some("reindex requested at r1"));
    assert_eq!(
        status.history.first().and_then(|s| s.trigger.as_deref()),
        Some("reindex requested at r1")
    );
    assert_eq!(status.last_handled_reindex_at.as_deref(), Some("r1"));

    // The same value is not handled twice: a plain request afterwards is a check, no run.
    request_sync(&bench.api, "svc", "after-reindex").await;
    let checked = wait_until(
        &bench.api,
        "svc",
        || bench.operator.log_tail(),
        "checked",
        |obj| {
            obj.status
                .as_ref()
                .is_some_and(|s| s.last_handled_requested_at.as_deref() == Some("after-reindex"))
        },
    )
    .await;
    assert_eq!(
        last_sync(&checked).map(|s| s.id.clone()),
        Some(last.id),
        "no new run"
    );
}
