//! Atomicity against the real Postgres: the connection of a run is killed
//! (`pg_terminate_backend`) while it records and while it completes, and the
//! `active_*` views show exactly the picture they showed before. The run is
//! then failed and the next run converges.

use std::str::FromStr;
use std::time::Duration;

use projectsync::store::{Completion, FileId, NewFile, ProjectId, Store, SyncId, SyncStatus};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};
use support::store::*;

/// A store on its own one-connection pool, tagged with `name` so the test
/// can find its backend and kill it.
async fn victim_store(url: &str, name: &str) -> Store {
    let options = PgConnectOptions::from_str(url)
        .unwrap()
        .application_name(name);
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    Store::new(pool)
}

/// Waits until the victim's backend is blocked on a lock, then kills it.
/// Returns the statement it was blocked in.
async fn kill_when_blocked(pool: &PgPool, name: &str) -> String {
    for _ in 0..500 {
        let blocked = sqlx::query_scalar!(
            r#"SELECT query AS "query!" FROM pg_stat_activity
                WHERE application_name = $1 AND wait_event_type = 'Lock'"#,
            name
        )
        .fetch_optional(pool)
        .await
        .unwrap();
        if let Some(statement) = blocked {
            let killed = sqlx::query_scalar!(
                r#"SELECT bool_and(pg_terminate_backend(pid)) AS "killed!"
                     FROM pg_stat_activity WHERE application_name = $1"#,
                name
            )
            .fetch_one(pool)
            .await
            .unwrap();
            assert!(killed, "the victim's backend was terminated");
            return statement;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the victim never blocked on the lock the test holds");
}

/// Locks one file row FOR UPDATE in an open transaction on `conn`.
async fn lock_file_row(conn: &mut PgConnection, file: FileId) {
    sqlx::raw_sql("BEGIN").execute(&mut *conn).await.unwrap();
    sqlx::query!(
        "SELECT id FROM repository_files WHERE id = $1 FOR UPDATE",
        file.get()
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
}

async fn rows_of(pool: &PgPool, sync: SyncId) -> (i64, i64) {
    let row = sqlx::query!(
        r#"SELECT (SELECT count(*) FROM repository_files WHERE introduced_sync_id = $1) AS "files!",
                  (SELECT count(*) FROM memory_entries WHERE introduced_sync_id = $1) AS "memory!",
                  (SELECT count(*) FROM repository_files WHERE superseded_sync_id = $1) AS "superseded!""#,
        sync.as_uuid()
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(row.superseded, 0, "a killed run superseded nothing");
    (row.files, row.memory)
}

/// A project whose first sync holds `n` files `f0000.rs`... with content
/// `v1-<i>`.
async fn project_with_files(
    store: &Store,
    key: &str,
    n: usize,
) -> (ProjectId, SyncId, Vec<(String, String)>) {
    let project = store.ensure_project(&github_project(key)).await.unwrap();
    let files: Vec<(String, String)> = (0..n)
        .map(|i| (format!("f{i:04}.rs"), format!("v1-{i}")))
        .collect();
    let borrowed: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    let s1 = sync_once(store, project, None, "c1", &borrowed, &[]).await;
    (project, s1.id, files)
}

async fn snapshot(pool: &PgPool, key: &str) -> (Vec<(String, String)>, Vec<(String, String)>) {
    (
        active_files(pool, key).await,
        active_memory(pool, key).await,
    )
}

#[tokio::test]
async fn killing_the_connection_while_recording_memory_leaves_the_active_views_unchanged() {
    let t = migrated_store("kill-record").await;
    let (store, pool) = (&t.store, &t.db.pool);
    let key = "team-a/kill-record";
    let (project, s1, _) = project_with_files(store, key, 50).await;
    let before = snapshot(pool, key).await;
    assert_eq!(before.0.len(), 50);

    // The run rewrites 5,000 files: the file rows commit, then its memory
    // entries are written in several statements of one transaction.
    let victim_name = format!("victim-{}", t.db.name);
    // The same install as `store`, in a process that dies.
    let victim = victim_store(&t.db.url, &victim_name)
        .await
        .with_owner(store.owner());
    let run = victim
        .begin_sync(project, new_sync(Some(s1), "c2"))
        .await
        .unwrap();
    let new_files: Vec<NewFile> = (0..5_000)
        .map(|i| file(&format!("f{i:04}.rs"), &format!("v2-{i}")))
        .collect();
    let ids = victim.record_files(run, &new_files).await.unwrap();
    let entries: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| chunk(*id, 0, &format!("v2-{i}")))
        .collect();

    // Hold the last file row: the statement that writes its chunk waits on
    // the foreign-key check, with the earlier statements already executed.
    let mut holder = PgConnection::connect(&t.db.url).await.unwrap();
    lock_file_row(&mut holder, *ids.last().unwrap()).await;
    let recording = tokio::spawn(async move { victim.record_memory(run, &entries).await });
    let statement = kill_when_blocked(pool, &victim_name).await;
    assert!(
        statement.contains("INSERT INTO memory_entries"),
        "killed in: {statement}"
    );
    let error = recording
        .await
        .unwrap()
        .expect_err("recording died with its connection");
    assert!(
        error.is_transient(),
        "a killed connection is transient: {error:?}"
    );
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .unwrap();

    assert_eq!(snapshot(pool, key).await, before, "active views unchanged");
    assert_eq!(
        rows_of(pool, run).await,
        (5_000, 0),
        "the killed transaction left no memory rows"
    );
    assert_eq!(
        store.get_sync(run).await.unwrap().status,
        SyncStatus::InProgress
    );

    // The operator restarts: the run is abandoned, and the next one converges.
    let abandoned = store
        .fail_abandoned(
            Some(project),
            chrono::Utc::now(),
            "operator restarted before the run finished",
        )
        .await
        .unwrap();
    assert_eq!(
        abandoned.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![run]
    );
    assert_eq!(snapshot(pool, key).await, before);
    let next = sync_once(store, project, Some(s1), "c2", &[("f0000.rs", "v2-0")], &[]).await;
    assert_eq!(
        (next.previous, next.files.modified, next.files.unchanged),
        (Some(s1), 1, 49)
    );
}

#[tokio::test]
async fn killing_the_connection_while_completing_leaves_the_active_views_unchanged() {
    let t = migrated_store("kill-complete").await;
    let (store, pool) = (&t.store, &t.db.pool);
    let key = "team-a/kill-complete";
    let (project, s1, _) = project_with_files(store, key, 50).await;
    let before = snapshot(pool, key).await;
    let old_last = store
        .active_files(project)
        .await
        .unwrap()
        .last()
        .unwrap()
        .id;

    let victim_name = format!("victim-{}", t.db.name);
    // The same install as `store`, in a process that dies.
    let victim = victim_store(&t.db.url, &victim_name)
        .await
        .with_owner(store.owner());
    let changed: Vec<(String, String)> = (0..49)
        .map(|i| (format!("f{i:04}.rs"), format!("v2-{i}")))
        .collect();
    let borrowed: Vec<(&str, &str)> = changed
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    let (run, _) = record_run(&victim, project, Some(s1), "c2", &borrowed).await;

    // Hold the old row of the deleted path: the completion has already marked
    // the run COMPLETED and claimed the chain position when it blocks.
    let mut holder = PgConnection::connect(&t.db.url).await.unwrap();
    lock_file_row(&mut holder, old_last).await;
    let completing = tokio::spawn(async move {
        victim
            .complete_sync(
                run,
                Completion {
                    deleted_paths: vec!["f0049.rs".into()],
                    ..Completion::default()
                },
            )
            .await
    });
    let statement = kill_when_blocked(pool, &victim_name).await;
    assert!(
        statement.contains("UPDATE repository_files SET superseded_sync_id"),
        "killed in: {statement}"
    );
    let error = completing
        .await
        .unwrap()
        .expect_err("completion died with its connection");
    assert!(error.is_transient(), "{error:?}");
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .unwrap();

    assert_eq!(snapshot(pool, key).await, before, "active views unchanged");
    let killed = store.get_sync(run).await.unwrap();
    assert_eq!(
        (killed.status, killed.previous, killed.chain_seq),
        (SyncStatus::InProgress, None, None)
    );
    assert_eq!(
        store.latest_completed(project).await.unwrap().unwrap().id,
        s1
    );

    // Completing again from a healthy connection succeeds: nothing half-done
    // stands in the way.
    let done = store
        .complete_sync(
            run,
            Completion {
                deleted_paths: vec!["f0049.rs".into()],
                ..Completion::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (
            done.previous,
            done.files.modified,
            done.files.deleted,
            done.files.total
        ),
        (Some(s1), 49, 1, 49)
    );
    let after = active_files(pool, key).await;
    assert_eq!(after.len(), 49);
    assert!(
        after
            .iter()
            .all(|(_, blob)| !before.0.iter().any(|(_, old)| old == blob))
    );
}
