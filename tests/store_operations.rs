//! Store operations against the real Postgres: renames that reuse chunks,
//! retention, deleting a project, sweeping abandoned runs, embedding reuse and
//! backfill, search over active memory, diffs, and refused inputs.

use projectsync::run::Stage;
use projectsync::store::{
    Completion, ContentHash, Embedding, EmbeddingReuse, EndpointFingerprint, NewMemoryEntry,
    ProjectId, ProjectSource, Rename, ReuseScope, Store, StoreError, SyncStatus,
};
use support::store::*;

fn embedded(
    file: projectsync::store::FileId,
    index: u32,
    content: &str,
    model: &str,
    vector: Vec<f32>,
) -> NewMemoryEntry {
    NewMemoryEntry {
        embedding: Some(Embedding {
            model: model.to_string(),
            endpoint: Some(endpoint()),
            vector,
        }),
        ..chunk(file, index, content)
    }
}

/// The endpoint the embeddings of these tests come from.
fn endpoint() -> EndpointFingerprint {
    EndpointFingerprint::of_url("http://embed.example/v1")
}

/// Reuse of `project`'s own embeddings of `model` from [`endpoint`].
fn own(project: ProjectId, model: &str) -> EmbeddingReuse {
    EmbeddingReuse {
        project,
        scope: ReuseScope::Project,
        model: model.to_string(),
        endpoint: endpoint(),
    }
}

#[tokio::test]
async fn a_rename_reuses_the_old_versions_chunks_and_embeddings_without_reprocessing() {
    let t = migrated_store("rename").await;
    let (store, pool) = (&t.store, &t.db.pool);
    let key = "team-a/rename";
    let project = store.ensure_project(&github_project(key)).await.unwrap();
    let s1 = store
        .begin_sync(project, new_sync(None, "c1"))
        .await
        .unwrap();
    let ids = store
        .record_files(s1, &[file("old/name.rs", "body"), file("keep.rs", "keep")])
        .await
        .unwrap();
    store
        .record_memory(
            s1,
            &[
                embedded(ids[0], 0, "part one", "m1", vec![1.0, 0.0]),
                embedded(ids[0], 1, "part two", "m1", vec![0.0, 1.0]),
                chunk(ids[1], 0, "keep"),
            ],
        )
        .await
        .unwrap();
    let s1 = store
        .complete_sync(s1, Completion::default())
        .await
        .unwrap();
    let old = store
        .active_files(project)
        .await
        .unwrap()
        .into_iter()
        .find(|f| f.path == "old/name.rs")
        .unwrap();

    let s2 = store
        .begin_sync(project, new_sync(Some(s1.id), "c2"))
        .await
        .unwrap();
    let renamed = store
        .record_renames(
            s2,
            &[Rename {
                from: old.id,
                to_path: "new/name.rs".into(),
            }],
        )
        .await
        .unwrap();
    let s2 = store
        .complete_sync(
            s2,
            Completion {
                deleted_paths: vec!["old/name.rs".into()],
                ..Completion::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (s2.files.added, s2.files.deleted, s2.files.unchanged),
        (1, 1, 1)
    );
    assert_eq!(
        s2.memory_entries_written, 2,
        "two chunks copied, none re-chunked"
    );

    let files = store.active_files(project).await.unwrap();
    let new = files.iter().find(|f| f.path == "new/name.rs").unwrap();
    assert_eq!(
        (new.id, &new.blob_sha, new.size),
        (renamed[0], &old.blob_sha, old.size)
    );
    assert!(!files.iter().any(|f| f.path == "old/name.rs"));
    let entries = sqlx::query!(
        r#"SELECT path AS "path!", content AS "content!", embedding, embedding_model
             FROM active_memory_entries WHERE project = $1 AND path = 'new/name.rs'
            ORDER BY chunk_index"#,
        key
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let entries: Vec<_> = entries
        .into_iter()
        .map(|e| (e.content, e.embedding, e.embedding_model))
        .collect();
    assert_eq!(
        entries,
        vec![
            (
                "part one".to_string(),
                Some(vec![1.0, 0.0]),
                Some("m1".to_string())
            ),
            (
                "part two".to_string(),
                Some(vec![0.0, 1.0]),
                Some("m1".to_string())
            ),
        ]
    );
    // The old path's chunks are history, not active.
    assert!(
        !active_memory(pool, key)
            .await
            .iter()
            .any(|(p, _)| p == "old/name.rs")
    );
}

#[tokio::test]
async fn a_rename_must_copy_a_completed_version_of_the_same_project() {
    let t = migrated_store("rename-refused").await;
    let store = &t.store;
    let project = store
        .ensure_project(&github_project("team-a/r1"))
        .await
        .unwrap();
    let other = store
        .ensure_project(&github_project("team-a/r2"))
        .await
        .unwrap();
    let foreign = sync_once(store, other, None, "c1", &[("x.rs", "x")], &[]).await;
    let foreign_file = store.files_at(foreign.id).await.unwrap()[0].id;

    let (run, own_ids) = record_run(store, project, None, "c1", &[("a.rs", "a")]).await;
    for from in [foreign_file, own_ids[0]] {
        let error = store
            .record_renames(
                run,
                &[Rename {
                    from,
                    to_path: "b.rs".into(),
                }],
            )
            .await
            .unwrap_err();
        assert!(
            matches!(error, StoreError::FileNotUsable { file, .. } if file == from),
            "{error:?}"
        );
    }
}

#[tokio::test]
async fn retention_keeps_the_last_n_pictures_and_drops_older_versions_and_failed_rows() {
    let t = migrated_store("retention").await;
    let (store, pool) = (&t.store, &t.db.pool);
    let key = "team-a/retention";
    let project = store.ensure_project(&github_project(key)).await.unwrap();
    let mut runs = vec![
        sync_once(
            store,
            project,
            None,
            "c1",
            &[("a.rs", "a1"), ("b.rs", "b")],
            &[],
        )
        .await,
    ];
    for i in 2..=5 {
        let content = format!("a{i}");
        let base = runs.last().unwrap().id;
        runs.push(
            sync_once(
                store,
                project,
                Some(base),
                &format!("c{i}"),
                &[("a.rs", &content)],
                &[],
            )
            .await,
        );
    }
    let (failed, _) = record_run(
        store,
        project,
        Some(runs[4].id),
        "c6",
        &[("a.rs", "a6"), ("z.rs", "z")],
    )
    .await;
    store
        .fail_sync(failed, Some(Stage::Import), "boom")
        .await
        .unwrap();
    let before = (
        active_files(pool, key).await,
        active_memory(pool, key).await,
    );

    let report = store.prune_history(project, 2).await.unwrap();
    // Kept: the pictures of runs 4 and 5. a.rs versions 1-3 are only needed
    // by runs 1-3; the failed run's 2 files and 2 chunks go too.
    assert_eq!(report.syncs_pruned, 3);
    assert_eq!(report.files_deleted, 3 + 2);
    assert_eq!(report.memory_entries_deleted, 3 + 2);
    assert_eq!(
        (
            active_files(pool, key).await,
            active_memory(pool, key).await
        ),
        before
    );

    for pruned in &runs[..3] {
        let error = store.restore(pruned.id).await.unwrap_err();
        assert!(matches!(error, StoreError::SyncPruned { .. }), "{error:?}");
        assert!(store.get_sync(pruned.id).await.unwrap().content_pruned);
    }
    let diff = store.diff(runs[3].id, runs[4].id).await.unwrap();
    assert_eq!(diff.modified, vec!["a.rs".to_string()]);
    let restored = store.restore(runs[3].id).await.unwrap();
    assert_picture(pool, key, &[("a.rs", "a4"), ("b.rs", "b")]).await;
    assert_eq!(restored.previous, Some(runs[4].id));

    // Pruning again at the same depth removes only what the restore pushed
    // out of the window: run 4, and the a.rs version run 5 had replaced.
    let again = store.prune_history(project, 2).await.unwrap();
    assert_eq!(
        (
            again.syncs_pruned,
            again.files_deleted,
            again.memory_entries_deleted
        ),
        (1, 1, 1)
    );
    assert_picture(pool, key, &[("a.rs", "a4"), ("b.rs", "b")]).await;
    let nothing = store.prune_history(project, 2).await.unwrap();
    assert_eq!(nothing, Default::default(), "idempotent");
    assert_eq!(
        store.history(project, 100).await.unwrap().len(),
        7,
        "runs stay in the history"
    );
}

#[tokio::test]
async fn deleting_a_project_removes_all_of_its_rows_and_nothing_else() {
    let t = migrated_store("delete").await;
    let (store, pool) = (&t.store, &t.db.pool);
    let gone = store
        .ensure_project(&github_project("team-a/gone"))
        .await
        .unwrap();
    let kept = store
        .ensure_project(&github_project("team-a/kept"))
        .await
        .unwrap();
    let g1 = sync_once(
        store,
        gone,
        None,
        "c1",
        &[("a.rs", "a1"), ("b.rs", "b1")],
        &[],
    )
    .await;
    let g2 = sync_once(store, gone, Some(g1.id), "c2", &[("a.rs", "a2")], &["b.rs"]).await;
    // A run still in progress goes too.
    record_run(store, gone, Some(g2.id), "c3", &[("c.rs", "c")]).await;
    sync_once(store, kept, None, "c1", &[("a.rs", "a1")], &[]).await;

    let report = store.delete_project(gone).await.unwrap();
    assert_eq!(
        (
            report.syncs_deleted,
            report.files_deleted,
            report.memory_entries_deleted
        ),
        (3, 4, 4)
    );
    assert!(store.find_project("team-a/gone").await.unwrap().is_none());
    assert_picture(pool, "team-a/gone", &[]).await;
    assert_picture(pool, "team-a/kept", &[("a.rs", "a1")]).await;
    let leftovers = sqlx::query_scalar!(
        r#"SELECT (SELECT count(*) FROM repository_files WHERE project_id = $1)
                + (SELECT count(*) FROM memory_entries WHERE project_id = $1)
                + (SELECT count(*) FROM project_syncs WHERE project_id = $1) AS "n!""#,
        gone.get()
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(leftovers, 0);
    assert_eq!(
        store.delete_project(gone).await.unwrap(),
        Default::default(),
        "idempotent"
    );
}

#[tokio::test]
async fn recovery_fails_only_the_runs_of_its_own_install() {
    let t = migrated_store("owners").await;
    let ours = t.store.clone().with_owner("ns/projectsync");
    let theirs = Store::new(t.db.pool.clone()).with_owner("other-ns/projectsync");
    let once = Store::new(t.db.pool.clone()).with_owner("sync-once/1");
    let mut runs = Vec::new();
    for (store, key) in [(&ours, "a/ours"), (&theirs, "a/theirs"), (&once, "a/once")] {
        let project = store.ensure_project(&github_project(key)).await.unwrap();
        let run = store
            .begin_sync(project, new_sync(None, "c1"))
            .await
            .unwrap();
        assert_eq!(
            store.get_sync(run).await.unwrap().owner.as_deref(),
            Some(store.owner())
        );
        runs.push((project, run));
    }
    let cutoff = chrono::Utc::now();
    let failed = ours.fail_abandoned(None, cutoff, "restart").await.unwrap();
    assert_eq!(
        failed.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![runs[0].1]
    );
    // Per project too: another install's run of a project is not ours to fail.
    let per_project = ours
        .fail_abandoned(Some(runs[1].0), cutoff, "stale")
        .await
        .unwrap();
    assert!(per_project.is_empty());
    for (_, run) in &runs[1..] {
        assert_eq!(
            ours.get_sync(*run).await.unwrap().status,
            SyncStatus::InProgress
        );
    }
}

#[tokio::test]
async fn abandoned_runs_are_failed_with_a_clear_message_per_project_or_all() {
    let t = migrated_store("abandoned").await;
    let store = &t.store;
    let a = store
        .ensure_project(&github_project("team-a/a"))
        .await
        .unwrap();
    let b = store
        .ensure_project(&github_project("team-a/b"))
        .await
        .unwrap();
    let (run_a, _) = record_run(store, a, None, "c1", &[("a.rs", "a")]).await;
    store.mark_stage(run_a, Stage::Import).await.unwrap();
    let queued_b = store.queue_sync(b, new_sync(None, "c1")).await.unwrap();
    let done = sync_once(store, a, None, "c0", &[("x.rs", "x")], &[]).await;
    let _ = done;
    let cutoff = chrono::Utc::now();
    let (late_b, _) = record_run(store, b, None, "c2", &[("b.rs", "b")]).await;

    let only_a = store
        .fail_abandoned(
            Some(a),
            cutoff,
            "operator restarted before the run finished",
        )
        .await
        .unwrap();
    assert_eq!(only_a.len(), 1);
    let failure = only_a[0].failure.clone().unwrap();
    assert_eq!(only_a[0].id, run_a);
    assert_eq!(
        failure.message,
        "abandoned: operator restarted before the run finished"
    );
    assert_eq!(failure.stage, Some(Stage::Import));

    let rest = store
        .fail_abandoned(None, cutoff, "leader changed")
        .await
        .unwrap();
    assert_eq!(
        rest.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![queued_b]
    );
    assert_eq!(
        rest[0].failure.as_ref().unwrap().stage,
        None,
        "it never started"
    );
    assert_eq!(
        store.get_sync(late_b).await.unwrap().status,
        SyncStatus::InProgress,
        "started after the cutoff"
    );
    assert!(
        store
            .fail_abandoned(None, cutoff, "again")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn embeddings_are_reused_by_content_hash_and_backfilled() {
    let t = migrated_store("embeddings").await;
    let store = &t.store;
    let project = store
        .ensure_project(&github_project("team-a/embed"))
        .await
        .unwrap();
    let run = store
        .begin_sync(project, new_sync(None, "c1"))
        .await
        .unwrap();
    let ids = store
        .record_files(run, &[file("a.rs", "a"), file("b.rs", "b")])
        .await
        .unwrap();
    store
        .record_memory(
            run,
            &[
                embedded(ids[0], 0, "shared text", "m1", vec![0.5, 0.25]),
                chunk(ids[1], 0, "bare text"),
            ],
        )
        .await
        .unwrap();
    store
        .complete_sync(run, Completion::default())
        .await
        .unwrap();

    let shared = ContentHash::of("shared text");
    let bare = ContentHash::of("bare text");
    let found = store
        .embeddings_by_hash(&own(project, "m1"), &[shared.clone(), bare.clone()])
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[&shared], vec![0.5, 0.25]);
    assert!(
        store
            .embeddings_by_hash(&own(project, "m2"), std::slice::from_ref(&shared))
            .await
            .unwrap()
            .is_empty(),
        "per model"
    );

    let missing = store
        .entries_missing_embedding(project, "m1", 10)
        .await
        .unwrap();
    assert_eq!(missing.len(), 1);
    assert_eq!(
        (missing[0].content_hash.clone(), missing[0].content.as_str()),
        (bare.clone(), "bare text")
    );
    let updated = store
        .set_embeddings(&[(
            missing[0].id,
            Embedding {
                model: "m1".into(),
                endpoint: Some(endpoint()),
                vector: vec![1.0, 2.0, 3.0],
            },
        )])
        .await
        .unwrap();
    assert_eq!(updated, 1);
    assert_eq!(
        store
            .embeddings_by_hash(&own(project, "m1"), std::slice::from_ref(&bare))
            .await
            .unwrap()[&bare],
        vec![1.0, 2.0, 3.0]
    );
    assert!(
        store
            .entries_missing_embedding(project, "m1", 10)
            .await
            .unwrap()
            .is_empty()
    );

    let bad = store
        .set_embeddings(&[(
            missing[0].id,
            Embedding {
                model: "m1".into(),
                endpoint: Some(endpoint()),
                vector: vec![f32::NAN],
            },
        )])
        .await
        .unwrap_err();
    assert!(
        matches!(bad, StoreError::InvalidEmbedding { .. }),
        "{bad:?}"
    );
}

#[tokio::test]
async fn embeddings_are_reused_only_within_the_scope_from_the_same_endpoint_of_completed_runs() {
    let t = migrated_store("reuse-scope").await;
    let store = &t.store;
    let text = "fn shared() {}";
    let hash = ContentHash::of(text);
    // Tenant a/one completes a run with an embedding of `text`.
    let one = store
        .ensure_project(&github_project("a/one"))
        .await
        .unwrap();
    let run = store.begin_sync(one, new_sync(None, "c1")).await.unwrap();
    let ids = store.record_files(run, &[file("x.rs", "x")]).await.unwrap();
    store
        .record_memory(run, &[embedded(ids[0], 0, text, "m", vec![1.0, 0.0])])
        .await
        .unwrap();
    store
        .complete_sync(run, Completion::default())
        .await
        .unwrap();
    // Tenant a/running writes one too, in a run that never completes.
    let running = store
        .ensure_project(&github_project("a/running"))
        .await
        .unwrap();
    let live = store
        .begin_sync(running, new_sync(None, "c1"))
        .await
        .unwrap();
    let ids = store
        .record_files(live, &[file("y.rs", "y")])
        .await
        .unwrap();
    store
        .record_memory(
            live,
            &[embedded(ids[0], 0, "fn live() {}", "m", vec![9.0, 9.0])],
        )
        .await
        .unwrap();

    let same_ns = store
        .ensure_project(&github_project("a/two"))
        .await
        .unwrap();
    let other_ns = store
        .ensure_project(&github_project("b/three"))
        .await
        .unwrap();
    let lookup = |project, scope, endpoint: EndpointFingerprint, hash: &ContentHash| {
        let reuse = EmbeddingReuse {
            project,
            scope,
            model: "m".into(),
            endpoint,
        };
        let hash = hash.clone();
        async move {
            store
                .embeddings_by_hash(&reuse, std::slice::from_ref(&hash))
                .await
                .unwrap()
                .len()
        }
    };
    assert_eq!(lookup(one, ReuseScope::Project, endpoint(), &hash).await, 1);
    assert_eq!(
        lookup(same_ns, ReuseScope::Project, endpoint(), &hash).await,
        0
    );
    assert_eq!(
        lookup(same_ns, ReuseScope::Namespace, endpoint(), &hash).await,
        1
    );
    assert_eq!(
        lookup(other_ns, ReuseScope::Namespace, endpoint(), &hash).await,
        0
    );
    assert_eq!(
        lookup(other_ns, ReuseScope::Cluster, endpoint(), &hash).await,
        1
    );
    let elsewhere = EndpointFingerprint::of_url("http://attacker.example/v1");
    assert_eq!(
        lookup(one, ReuseScope::Project, elsewhere.clone(), &hash).await,
        0
    );
    assert_eq!(
        lookup(other_ns, ReuseScope::Cluster, elsewhere, &hash).await,
        0
    );
    let live_hash = ContentHash::of("fn live() {}");
    assert_eq!(
        lookup(running, ReuseScope::Project, endpoint(), &live_hash).await,
        0,
        "rows of a run that did not complete are never reused"
    );
}

#[tokio::test]
async fn search_sees_only_the_latest_completed_picture() {
    let t = migrated_store("search").await;
    let store = &t.store;
    let project = store
        .ensure_project(&github_project("team-a/search"))
        .await
        .unwrap();
    let s1 = store
        .begin_sync(project, new_sync(None, "c1"))
        .await
        .unwrap();
    let ids = store
        .record_files(s1, &[file("a.rs", "a1"), file("b.rs", "b1")])
        .await
        .unwrap();
    store
        .record_memory(
            s1,
            &[
                embedded(ids[0], 0, "fn parse_config() {}", "m", vec![1.0, 0.0]),
                embedded(ids[1], 0, "fn render_page() {}", "m", vec![0.0, 1.0]),
            ],
        )
        .await
        .unwrap();
    let s1 = store
        .complete_sync(s1, Completion::default())
        .await
        .unwrap();

    let hits = store
        .search_text(project, "PARSE_config", 10)
        .await
        .unwrap();
    assert_eq!(
        hits.iter().map(|h| h.path.as_str()).collect::<Vec<_>>(),
        ["a.rs"]
    );
    let nearest = store
        .search_vector(project, "m", &[0.1, 0.9], 10)
        .await
        .unwrap();
    assert_eq!(
        nearest.iter().map(|h| h.path.as_str()).collect::<Vec<_>>(),
        ["b.rs", "a.rs"]
    );
    assert!(nearest[0].score.unwrap() > nearest[1].score.unwrap());
    assert!(
        store
            .search_vector(project, "m", &[1.0, 0.0, 0.0], 10)
            .await
            .unwrap()
            .is_empty(),
        "other dimension"
    );

    // A running run's chunks are invisible; after it completes the old
    // chunk is gone from search.
    let s2 = store
        .begin_sync(project, new_sync(Some(s1.id), "c2"))
        .await
        .unwrap();
    let ids = store.record_files(s2, &[file("a.rs", "a2")]).await.unwrap();
    store
        .record_memory(s2, &[chunk(ids[0], 0, "fn load_settings() {}")])
        .await
        .unwrap();
    assert!(
        store
            .search_text(project, "load_settings", 10)
            .await
            .unwrap()
            .is_empty()
    );
    store
        .complete_sync(s2, Completion::default())
        .await
        .unwrap();
    assert!(
        store
            .search_text(project, "parse_config", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .search_text(project, "load_settings", 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn invalid_writes_are_refused_with_specific_errors() {
    let t = migrated_store("invalid").await;
    let store = &t.store;
    let project = store
        .ensure_project(&github_project("team-a/invalid"))
        .await
        .unwrap();
    let s1 = sync_once(store, project, None, "c1", &[("a.rs", "a1")], &[]).await;
    let old_file = store.active_files(project).await.unwrap()[0].id;
    let (run, ids) = record_run(store, project, Some(s1.id), "c2", &[("b.rs", "b")]).await;

    let twice = store
        .record_files(run, &[file("c.rs", "c"), file("c.rs", "c2")])
        .await
        .unwrap_err();
    assert!(
        matches!(&twice, StoreError::DuplicatePath { path, .. } if path == "c.rs"),
        "{twice:?}"
    );
    let again = store
        .record_files(run, &[file("b.rs", "b2")])
        .await
        .unwrap_err();
    assert!(
        matches!(&again, StoreError::DuplicatePath { path, .. } if path == "b.rs"),
        "{again:?}"
    );

    let foreign = store
        .record_memory(run, &[chunk(old_file, 0, "x")])
        .await
        .unwrap_err();
    assert!(
        matches!(foreign, StoreError::FileNotUsable { file, .. } if file == old_file),
        "{foreign:?}"
    );
    let same_chunk = store
        .record_memory(run, &[chunk(ids[0], 0, "again")])
        .await
        .unwrap_err();
    assert!(
        matches!(same_chunk, StoreError::InvalidInput { .. }),
        "{same_chunk:?}"
    );

    let both = store
        .complete_sync(
            run,
            Completion {
                deleted_paths: vec!["b.rs".into()],
                ..Completion::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(both, StoreError::InvalidInput { .. }), "{both:?}");
    // Refused completions change nothing: the run can still complete.
    let done = store
        .complete_sync(run, Completion::default())
        .await
        .unwrap();
    assert_eq!((done.files.added, done.files.unchanged), (1, 1));
}

#[tokio::test]
async fn ensure_project_is_idempotent_and_follows_source_changes() {
    let t = migrated_store("projects").await;
    let store = &t.store;
    let mut identity = github_project("team-a/p");
    let id = store.ensure_project(&identity).await.unwrap();
    assert_eq!(store.ensure_project(&identity).await.unwrap(), id);
    identity.source = ProjectSource::Git {
        url: "https://git.example/acme/widgets.git".into(),
    };
    identity.branch = "release".into();
    assert_eq!(store.ensure_project(&identity).await.unwrap(), id);
    let stored = store.find_project("team-a/p").await.unwrap().unwrap();
    assert_eq!(stored.identity, identity);
    store.delete_project(id).await.unwrap();
    let unknown = store.begin_sync(id, new_sync(None, "c")).await;
    assert!(
        matches!(unknown, Err(StoreError::ProjectNotFound { .. })),
        "{unknown:?}"
    );
}
