//! The sync chain against the real Postgres: completed runs link through the
//! unique `previous_sync_id`, failed runs never block the chain, a restore
//! appends to it, and two runs racing on one base cannot both complete.

use projectsync::run::Stage;
use projectsync::store::{Completion, ProjectId, Store, StoreError, SyncRecord, SyncStatus};
use sqlx::{Connection, PgPool};
use support::store::*;

#[tokio::test]
async fn the_chain_links_completed_runs_skips_a_failed_one_and_a_restore_appends_to_it() {
    let t = migrated_store("chain").await;
    let (store, pool) = (&t.store, &t.db.pool);
    let key = "team-a/widgets";
    let project = store.ensure_project(&github_project(key)).await.unwrap();
    let chain = Chain {
        store,
        pool,
        key,
        project,
    };
    assert!(store.latest_completed(project).await.unwrap().is_none());
    assert_picture(pool, key, &[]).await;

    let s1 = the_first_sync_starts_the_chain(&chain).await;
    let s2 = the_second_sync_links_to_the_first(&chain, &s1).await;
    let failed = a_failed_run_neither_shows_nor_links(&chain, &s2).await;
    let s3 = the_next_run_chains_on_the_base_the_failed_one_used(&chain, &s2).await;
    let restored = a_restore_appends_a_run_with_the_old_picture(&chain, &s1, &s3).await;
    every_earlier_picture_stays_readable(&chain, &s1, &s2, &s3).await;
    the_stored_links_are_one_linear_chain_without_the_failed_run(
        &chain,
        [&s1, &s2, &failed, &s3, &restored],
    )
    .await;
    history_is_newest_first_with_counts(&chain, [&s1, &s2, &failed, &s3, &restored]).await;
}

/// The project whose chain the steps extend.
struct Chain<'a> {
    store: &'a Store,
    pool: &'a PgPool,
    key: &'a str,
    project: ProjectId,
}

/// 1: the first sync.
async fn the_first_sync_starts_the_chain(
    &Chain {
        store,
        pool,
        key,
        project,
    }: &Chain<'_>,
) -> SyncRecord {
    let s1 = sync_once(
        store,
        project,
        None,
        "c1",
        &[("a.rs", "a1"), ("b.rs", "b1")],
        &[],
    )
    .await;
    assert_eq!(
        (s1.status, s1.previous, s1.chain_seq),
        (SyncStatus::Completed, None, Some(1))
    );
    assert_eq!((s1.files.added, s1.files.total), (2, 2));
    assert_picture(pool, key, &[("a.rs", "a1"), ("b.rs", "b1")]).await;
    s1
}

/// 2: modify a, add c, delete b.
async fn the_second_sync_links_to_the_first(
    &Chain {
        store,
        pool,
        key,
        project,
    }: &Chain<'_>,
    s1: &SyncRecord,
) -> SyncRecord {
    let s2 = sync_once(
        store,
        project,
        Some(s1.id),
        "c2",
        &[("a.rs", "a2"), ("c.rs", "c1")],
        &["b.rs"],
    )
    .await;
    assert_eq!(
        (s2.previous, s2.base, s2.chain_seq),
        (Some(s1.id), Some(s1.id), Some(2))
    );
    assert_eq!(
        (
            s2.files.added,
            s2.files.modified,
            s2.files.deleted,
            s2.files.unchanged,
            s2.files.total
        ),
        (1, 1, 1, 0, 2)
    );
    assert_picture(pool, key, &[("a.rs", "a2"), ("c.rs", "c1")]).await;
    s2
}

/// A run on s2 fails half-way: its rows never show, it does not link.
async fn a_failed_run_neither_shows_nor_links(
    &Chain {
        store,
        pool,
        key,
        project,
    }: &Chain<'_>,
    s2: &SyncRecord,
) -> SyncRecord {
    let (failed, _) = record_run(
        store,
        project,
        Some(s2.id),
        "c3-broken",
        &[("a.rs", "a3"), ("d.rs", "d1")],
    )
    .await;
    let failed = store
        .fail_sync(failed, Some(Stage::Import), "source went away")
        .await
        .unwrap();
    assert_eq!(
        (failed.status, failed.previous, failed.chain_seq),
        (SyncStatus::Failed, None, None)
    );
    assert_eq!(failed.failure.as_ref().unwrap().stage, Some(Stage::Import));
    assert_picture(pool, key, &[("a.rs", "a2"), ("c.rs", "c1")]).await;
    failed
}

/// 3: chains on s2 although a failed run used the same base.
async fn the_next_run_chains_on_the_base_the_failed_one_used(
    &Chain {
        store,
        pool,
        key,
        project,
    }: &Chain<'_>,
    s2: &SyncRecord,
) -> SyncRecord {
    let s3 = sync_once(store, project, Some(s2.id), "c3", &[("c.rs", "c2")], &[]).await;
    assert_eq!((s3.previous, s3.chain_seq), (Some(s2.id), Some(3)));
    assert_eq!(
        (s3.files.modified, s3.files.unchanged, s3.files.total),
        (1, 1, 2)
    );
    assert_picture(pool, key, &[("a.rs", "a2"), ("c.rs", "c2")]).await;
    s3
}

/// Restore s1: a new run on s3 whose picture is s1's.
async fn a_restore_appends_a_run_with_the_old_picture(
    &Chain {
        store,
        pool,
        key,
        project,
    }: &Chain<'_>,
    s1: &SyncRecord,
    s3: &SyncRecord,
) -> SyncRecord {
    let restored = store.restore(s1.id).await.unwrap();
    assert_eq!(restored.status, SyncStatus::Completed);
    assert_eq!(
        (restored.previous, restored.chain_seq),
        (Some(s3.id), Some(4))
    );
    assert_eq!(restored.restored_from, Some(s1.id));
    assert_eq!(restored.trigger, format!("restore of {}", s1.id));
    assert_eq!(restored.commit.as_deref(), Some("c1"));
    assert_eq!(
        (
            restored.files.added,
            restored.files.modified,
            restored.files.deleted,
            restored.files.total
        ),
        (1, 1, 1, 2)
    );
    assert_picture(pool, key, &[("a.rs", "a1"), ("b.rs", "b1")]).await;
    assert_eq!(
        store.latest_completed(project).await.unwrap().unwrap().id,
        restored.id
    );
    restored
}

/// Nothing was destroyed: every earlier picture is still readable.
async fn every_earlier_picture_stays_readable(
    chain: &Chain<'_>,
    s1: &SyncRecord,
    s2: &SyncRecord,
    s3: &SyncRecord,
) {
    let s2_files: Vec<String> = chain
        .store
        .files_at(s2.id)
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.path)
        .collect();
    assert_eq!(s2_files, ["a.rs", "c.rs"]);
    let diff = chain.store.diff(s1.id, s3.id).await.unwrap();
    assert_eq!(
        (diff.added, diff.modified, diff.deleted),
        (
            vec!["c.rs".to_string()],
            vec!["a.rs".to_string()],
            vec!["b.rs".to_string()]
        )
    );
}

/// The links as stored: one linear chain, the failed run outside it.
async fn the_stored_links_are_one_linear_chain_without_the_failed_run(
    chain: &Chain<'_>,
    [s1, s2, failed, s3, restored]: [&SyncRecord; 5],
) {
    let links = sqlx::query!(
        r#"SELECT id, previous_sync_id, status FROM project_syncs
            WHERE project_id = $1 ORDER BY started_at, id"#,
        chain.project.get()
    )
    .fetch_all(chain.pool)
    .await
    .unwrap();
    let links: Vec<_> = links
        .into_iter()
        .map(|r| (r.id, r.previous_sync_id, r.status))
        .collect();
    assert_eq!(
        links,
        vec![
            (s1.id.as_uuid(), None, "COMPLETED".to_string()),
            (
                s2.id.as_uuid(),
                Some(s1.id.as_uuid()),
                "COMPLETED".to_string()
            ),
            (failed.id.as_uuid(), None, "FAILED".to_string()),
            (
                s3.id.as_uuid(),
                Some(s2.id.as_uuid()),
                "COMPLETED".to_string()
            ),
            (
                restored.id.as_uuid(),
                Some(s3.id.as_uuid()),
                "COMPLETED".to_string()
            ),
        ]
    );
}

/// History: newest first, with counts.
async fn history_is_newest_first_with_counts(
    chain: &Chain<'_>,
    [s1, s2, failed, s3, restored]: [&SyncRecord; 5],
) {
    let history = chain.store.history(chain.project, 10).await.unwrap();
    let ids: Vec<_> = history.iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![restored.id, s3.id, failed.id, s2.id, s1.id]);
    assert_eq!(history[3].files.deleted, 1);
    assert_eq!(
        chain.store.history(chain.project, 2).await.unwrap().len(),
        2
    );
}

#[tokio::test]
async fn two_runs_racing_on_the_same_base_complete_exactly_once() {
    let t = migrated_store("race").await;
    let (store, pool) = (&t.store, &t.db.pool);
    let key = "team-a/race";
    let project = store.ensure_project(&github_project(key)).await.unwrap();
    let mut base = sync_once(
        store,
        project,
        None,
        "c0",
        &[("a.rs", "a0"), ("b.rs", "b0")],
        &[],
    )
    .await;

    for round in 0..5 {
        let left_content = format!("left{round}");
        let right_content = format!("right{round}");
        let (left, _) = record_run(
            store,
            project,
            Some(base.id),
            "cl",
            &[("a.rs", &left_content)],
        )
        .await;
        let (right, _) = record_run(
            store,
            project,
            Some(base.id),
            "cr",
            &[("a.rs", &right_content)],
        )
        .await;
        let (l, r) = tokio::join!(
            store.complete_sync(left, Completion::default()),
            store.complete_sync(right, Completion::default()),
        );
        let (winner, loser, loser_error, content) = match (l, r) {
            (Ok(w), Err(e)) => (w, right, e, left_content),
            (Err(e), Ok(w)) => (w, left, e, right_content),
            (l, r) => panic!("round {round}: exactly one run must complete, got {l:?} and {r:?}"),
        };
        match &loser_error {
            StoreError::ConcurrentSync {
                project: p,
                sync,
                base: b,
                ..
            } => {
                assert_eq!(p, key);
                assert_eq!(*sync, Some(loser));
                assert_eq!(*b, Some(base.id));
            }
            other => panic!("round {round}: expected ConcurrentSync, got {other:?}"),
        }
        assert_eq!(loser_error.reason(), "ConcurrentSync");
        assert!(
            loser_error
                .to_string()
                .contains("concurrent sync on project team-a/race")
        );
        assert_eq!(winner.previous, Some(base.id));
        assert_picture(pool, key, &[("a.rs", content.as_str()), ("b.rs", "b0")]).await;

        // The loser is still live and is failed by its owner; it leaves no trace.
        let loser = store
            .fail_sync(loser, None, &loser_error.to_string())
            .await
            .unwrap();
        assert_eq!((loser.previous, loser.status), (None, SyncStatus::Failed));
        base = winner;
    }
}

#[tokio::test]
async fn the_unique_previous_sync_id_decides_a_race_that_passed_the_latest_check() {
    let t = migrated_store("race-key").await;
    let (store, pool) = (&t.store, &t.db.pool);
    let key = "team-a/race-key";
    let project = store.ensure_project(&github_project(key)).await.unwrap();
    let base = sync_once(store, project, None, "c0", &[("a.rs", "a0")], &[]).await;
    let (first, _) = record_run(store, project, Some(base.id), "c1", &[("a.rs", "first")]).await;
    let (second, _) = record_run(store, project, Some(base.id), "c2", &[("a.rs", "second")]).await;

    // `first` takes the chain position in a transaction still open, so
    // `second` sees `base` as the latest completed run and goes on.
    let mut other = sqlx::PgConnection::connect(&t.db.url).await.unwrap();
    let mut tx = other.begin().await.unwrap();
    sqlx::query!(
        "UPDATE project_syncs SET status = 'COMPLETED', previous_sync_id = $2, chain_seq = 2,
                finished_at = now(), stage = NULL WHERE id = $1",
        first.as_uuid(),
        base.id.as_uuid()
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    let racing = {
        let store = store.clone();
        tokio::spawn(async move { store.complete_sync(second, Completion::default()).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !racing.is_finished(),
        "the second completion must wait on the unique key"
    );
    tx.commit().await.unwrap();

    match racing.await.unwrap() {
        Err(StoreError::ConcurrentSync { sync, latest, .. }) => {
            assert_eq!(sync, Some(second));
            assert_eq!(latest, None, "decided by the unique key, not by the check");
        }
        other => panic!("expected ConcurrentSync, got {other:?}"),
    }
    let second = store.get_sync(second).await.unwrap();
    assert_eq!(
        (second.status, second.previous),
        (SyncStatus::InProgress, None)
    );
    assert_eq!(
        store.latest_completed(project).await.unwrap().unwrap().id,
        first
    );
    let _ = pool;
}

#[tokio::test]
async fn two_first_syncs_cannot_both_complete() {
    let t = migrated_store("first-race").await;
    let store = &t.store;
    let project = store
        .ensure_project(&github_project("team-a/first"))
        .await
        .unwrap();
    let (left, _) = record_run(store, project, None, "cl", &[("a.rs", "left")]).await;
    let (right, _) = record_run(store, project, None, "cr", &[("a.rs", "right")]).await;
    let (l, r) = tokio::join!(
        store.complete_sync(left, Completion::default()),
        store.complete_sync(right, Completion::default()),
    );
    let (winner, error) = match (l, r) {
        (Ok(w), Err(e)) | (Err(e), Ok(w)) => (w, e),
        (l, r) => panic!("exactly one first sync must complete, got {l:?} and {r:?}"),
    };
    assert!(
        matches!(error, StoreError::ConcurrentSync { base: None, .. }),
        "{error:?}"
    );
    assert_eq!((winner.previous, winner.chain_seq), (None, Some(1)));
    let completed = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM project_syncs WHERE project_id = $1 AND status = 'COMPLETED'"#,
        project.get()
    )
    .fetch_one(&t.db.pool)
    .await
    .unwrap();
    assert_eq!(completed, 1);
}

#[tokio::test]
async fn a_run_based_on_a_stale_picture_is_refused_when_it_begins() {
    let t = migrated_store("stale").await;
    let store = &t.store;
    let project = store
        .ensure_project(&github_project("team-a/stale"))
        .await
        .unwrap();
    let s1 = sync_once(store, project, None, "c1", &[("a.rs", "a1")], &[]).await;
    let s2 = sync_once(store, project, Some(s1.id), "c2", &[("a.rs", "a2")], &[]).await;

    for stale in [None, Some(s1.id)] {
        match store.begin_sync(project, new_sync(stale, "c3")).await {
            Err(StoreError::ConcurrentSync {
                sync: None,
                base,
                latest,
                ..
            }) => {
                assert_eq!((base, latest), (stale, Some(s2.id)));
            }
            other => panic!("expected ConcurrentSync, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn final_runs_refuse_further_writes_and_completion() {
    let t = migrated_store("final").await;
    let store = &t.store;
    let project = store
        .ensure_project(&github_project("team-a/final"))
        .await
        .unwrap();
    let s1 = sync_once(store, project, None, "c1", &[("a.rs", "a1")], &[]).await;
    let (run, _) = record_run(store, project, Some(s1.id), "c2", &[("a.rs", "a2")]).await;
    store
        .fail_sync(run, Some(Stage::Scan), "boom")
        .await
        .unwrap();

    let complete = store
        .complete_sync(run, Completion::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            complete,
            StoreError::SyncNotRunning {
                status: SyncStatus::Failed,
                ..
            }
        ),
        "{complete:?}"
    );
    assert_eq!(complete.reason(), "StoreFailed");
    let record = store
        .record_files(run, &[file("b.rs", "b")])
        .await
        .unwrap_err();
    assert!(
        matches!(record, StoreError::SyncNotRunning { .. }),
        "{record:?}"
    );
    let again = store.fail_sync(s1.id, None, "late").await.unwrap_err();
    assert!(
        matches!(
            again,
            StoreError::SyncNotRunning {
                status: SyncStatus::Completed,
                ..
            }
        ),
        "{again:?}"
    );
    let missing = store.get_sync(uuid::Uuid::nil().into()).await.unwrap_err();
    assert!(
        matches!(missing, StoreError::SyncNotFound { .. }),
        "{missing:?}"
    );
}

#[tokio::test]
async fn a_queued_run_starts_follows_its_stages_and_needs_a_commit_to_complete() {
    let t = migrated_store("stages").await;
    let store = &t.store;
    let project = store
        .ensure_project(&github_project("team-a/stages"))
        .await
        .unwrap();
    let mut new = new_sync(None, "unused");
    new.commit = None;
    let run = store.queue_sync(project, new).await.unwrap();
    let queued = store.get_sync(run).await.unwrap();
    assert_eq!((queued.status, queued.stage), (SyncStatus::Pending, None));

    store.start_sync(run).await.unwrap();
    store.mark_stage(run, Stage::Import).await.unwrap();
    let running = store.get_sync(run).await.unwrap();
    assert_eq!(
        (running.status, running.stage),
        (SyncStatus::InProgress, Some(Stage::Import))
    );

    let no_commit = store
        .complete_sync(run, Completion::default())
        .await
        .unwrap_err();
    assert!(
        matches!(no_commit, StoreError::InvalidInput { .. }),
        "{no_commit:?}"
    );
    store.set_commit(run, "abc123").await.unwrap();
    let done = store
        .complete_sync(run, Completion::default())
        .await
        .unwrap();
    assert_eq!(
        (done.commit.as_deref(), done.chain_seq, done.stage),
        (Some("abc123"), Some(1), None)
    );
}

#[tokio::test]
async fn only_completed_syncs_of_one_project_can_be_restored_or_diffed() {
    let t = migrated_store("restore-refused").await;
    let store = &t.store;
    let project = store
        .ensure_project(&github_project("team-a/restore"))
        .await
        .unwrap();
    let other = store
        .ensure_project(&github_project("team-a/other"))
        .await
        .unwrap();
    let s1 = sync_once(store, project, None, "c1", &[("a.rs", "a1")], &[]).await;
    let o1 = sync_once(store, other, None, "c1", &[("a.rs", "a1")], &[]).await;
    let (running, _) = record_run(store, project, Some(s1.id), "c2", &[("a.rs", "a2")]).await;

    let error = store.restore(running).await.unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::SyncNotCompleted {
                status: SyncStatus::InProgress,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(error.reason(), "StoreFailed");
    let error = store.diff(s1.id, running).await.unwrap_err();
    assert!(
        matches!(error, StoreError::SyncNotCompleted { .. }),
        "{error:?}"
    );
    let error = store.diff(s1.id, o1.id).await.unwrap_err();
    assert!(
        matches!(error, StoreError::ProjectMismatch { .. }),
        "{error:?}"
    );

    // A restore while a run is in progress moves the chain on: the running
    // run can no longer complete on its stale base.
    let restored = store.restore(s1.id).await.unwrap();
    assert_eq!(
        (restored.previous, restored.files.unchanged),
        (Some(s1.id), 1)
    );
    let error = store
        .complete_sync(running, Completion::default())
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::ConcurrentSync { latest: Some(latest), .. } if latest == restored.id),
        "{error:?}"
    );
}
