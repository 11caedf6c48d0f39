//! Migrations against the real Postgres: from an empty database, re-run on a
//! migrated one, several migrators at once (sqlx's advisory lock), a
//! failed migration that must not leave the lock held, and the upgrade of a
//! filled database to the partitioned tables (0010).

use std::time::Duration;

use std::borrow::Cow;

use projectsync::store::{Completion, MIGRATOR, Store, StoreError, SyncStatus};
use sqlx::Connection;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use support::fresh_database;
use support::store::*;

fn embedded_versions() -> Vec<i64> {
    MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| m.version)
        .collect()
}

async fn separate_store(url: &str) -> Store {
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .unwrap();
    Store::new(pool)
}

#[tokio::test]
async fn migrations_apply_to_an_empty_database_and_create_the_contract_schema() {
    let db = fresh_database("migrate-empty").await;
    let store = Store::new(db.pool.clone());
    store.migrate().await.unwrap();
    assert_eq!(
        store.applied_migrations().await.unwrap(),
        embedded_versions()
    );

    // Partitions are storage of their parent table, not relations of the
    // schema's contract.
    let relations: Vec<(String, String)> = sqlx::query_as(
        r#"SELECT t.table_name::text, t.table_type::text FROM information_schema.tables t
             JOIN pg_class c ON c.relname = t.table_name AND c.relnamespace = 'public'::regnamespace
            WHERE t.table_schema = 'public' AND t.table_name NOT LIKE '\_sqlx%' AND NOT c.relispartition
            ORDER BY 1"#,
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let expect = |name: &str, kind: &str| (name.to_string(), kind.to_string());
    assert_eq!(
        relations,
        vec![
            expect("active_memory_entries", "VIEW"),
            expect("active_repository_files", "VIEW"),
            expect("memory_entries", "BASE TABLE"),
            expect("project_syncs", "BASE TABLE"),
            expect("projects", "BASE TABLE"),
            expect("repository_files", "BASE TABLE"),
        ]
    );
    // The columns other tools rely on.
    for (view, columns) in [
        (
            "active_repository_files",
            &["project", "path", "blob_sha", "size"][..],
        ),
        ("active_memory_entries", &["project", "path", "content"][..]),
    ] {
        let present = sqlx::query_scalar!(
            r#"SELECT column_name AS "name!" FROM information_schema.columns WHERE table_name = $1"#,
            view
        )
        .fetch_all(&db.pool)
        .await
        .unwrap();
        for column in columns {
            assert!(present.iter().any(|c| c == column), "{view} lacks {column}");
        }
    }
}

#[tokio::test]
async fn migrations_rerun_on_a_migrated_database_change_nothing() {
    let t = migrated_store("migrate-rerun").await;
    let project = t
        .store
        .ensure_project(&github_project("team-a/keep"))
        .await
        .unwrap();
    let s1 = sync_once(&t.store, project, None, "c1", &[("a.rs", "a")], &[]).await;

    t.store.migrate().await.unwrap();
    separate_store(&t.db.url).await.migrate().await.unwrap();

    assert_eq!(
        t.store.applied_migrations().await.unwrap(),
        embedded_versions()
    );
    assert_eq!(
        t.store.latest_completed(project).await.unwrap().unwrap().id,
        s1.id
    );
    assert_picture(&t.db.pool, "team-a/keep", &[("a.rs", "a")]).await;
}

#[tokio::test]
async fn concurrent_migrators_apply_each_migration_exactly_once() {
    let db = fresh_database("migrate-concurrent").await;
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(separate_store(&db.url).await);
    }
    let results = futures::future::join_all(stores.iter().map(|s| s.migrate())).await;
    for result in results {
        result.expect(
            "every migrator succeeds: the others wait for the lock, then find nothing to do",
        );
    }
    let applied = sqlx::query!(
        r#"SELECT version AS "version!", count(*) OVER () AS "rows!" FROM _sqlx_migrations ORDER BY version"#
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        applied.iter().map(|r| r.version).collect::<Vec<_>>(),
        embedded_versions()
    );
    assert_eq!(applied[0].rows as usize, embedded_versions().len());
}

/// Counts advisory locks in the database, granted or waited for.
async fn advisory_locks(pool: &sqlx::PgPool, granted: bool) -> i64 {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM pg_locks l JOIN pg_database d ON d.oid = l.database
            WHERE l.locktype = 'advisory' AND l.granted = $1 AND d.datname = current_database()"#,
        granted
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn wait_for_advisory_locks(pool: &sqlx::PgPool, granted: bool) {
    for _ in 0..500 {
        if advisory_locks(pool, granted).await > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no advisory lock with granted = {granted} appeared");
}

#[tokio::test]
async fn a_second_migrator_waits_on_the_advisory_lock_of_the_first() {
    let t = migrated_store("migrate-lock").await;
    // Stall the next migrator inside its critical section: it reads
    // `_sqlx_migrations` after taking the advisory lock.
    let mut holder = sqlx::PgConnection::connect(&t.db.url).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE _sqlx_migrations IN ACCESS EXCLUSIVE MODE")
        .execute(&mut holder)
        .await
        .unwrap();

    let first = separate_store(&t.db.url).await;
    let first = tokio::spawn(async move { first.migrate().await });
    wait_for_advisory_locks(&t.db.pool, true).await;

    let second = separate_store(&t.db.url).await;
    let second = tokio::spawn(async move { second.migrate().await });
    wait_for_advisory_locks(&t.db.pool, false).await;
    assert!(!first.is_finished() && !second.is_finished());

    sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .unwrap();
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();
    assert_eq!(
        advisory_locks(&t.db.pool, true).await,
        0,
        "both released the lock"
    );
    assert_eq!(
        t.store.applied_migrations().await.unwrap(),
        embedded_versions()
    );
}

#[tokio::test]
async fn a_failed_migration_reports_the_error_and_releases_the_lock() {
    let db = fresh_database("migrate-fail").await;
    // A conflicting object makes the first migration fail.
    sqlx::raw_sql("CREATE TABLE projects (id int)")
        .execute(&db.pool)
        .await
        .unwrap();
    let first = separate_store(&db.url).await;
    let error = first.migrate().await.unwrap_err();
    assert!(matches!(error, StoreError::Migrate(_)), "{error:?}");
    assert_eq!(error.reason(), "StoreFailed");

    sqlx::raw_sql("DROP TABLE projects")
        .execute(&db.pool)
        .await
        .unwrap();
    // Another process migrates: it would block forever if the failed
    // migrator's session still held the advisory lock.
    let second = separate_store(&db.url).await;
    tokio::time::timeout(Duration::from_secs(20), second.migrate())
        .await
        .expect("the advisory lock was released")
        .unwrap();
    assert_eq!(
        second.applied_migrations().await.unwrap(),
        embedded_versions()
    );
    // The failed migrator's pool also recovers.
    first.migrate().await.unwrap();
}

/// The migration that partitions the large tables by project.
const PARTITIONING: i64 = 10;

/// Every row of the tables that 0010 rebuilds, as JSON, in id order.
async fn dump(pool: &sqlx::PgPool) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    let files: Vec<serde_json::Value> =
        sqlx::query_scalar("SELECT to_jsonb(f) FROM repository_files f ORDER BY id")
            .fetch_all(pool)
            .await
            .unwrap();
    let memory: Vec<serde_json::Value> =
        sqlx::query_scalar("SELECT to_jsonb(m) FROM memory_entries m ORDER BY id")
            .fetch_all(pool)
            .await
            .unwrap();
    (files, memory)
}

/// `(path, blob_sha)` of a completed run's picture (`sync_files`).
async fn picture_at(pool: &sqlx::PgPool, sync: uuid::Uuid) -> Vec<(String, String)> {
    sqlx::query_as("SELECT path, blob_sha FROM sync_files($1) ORDER BY path")
        .bind(sync)
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_filled_database_upgrades_to_partitions_with_every_row_view_and_key_intact() {
    let db = fresh_database("migrate-partition").await;
    let before = Migrator {
        migrations: Cow::Owned(
            MIGRATOR
                .iter()
                .filter(|m| m.version < PARTITIONING)
                .cloned()
                .collect(),
        ),
        ..Migrator::DEFAULT
    };
    before.run(&db.pool).await.unwrap();
    let store = Store::new(db.pool.clone());

    // Today's schema, filled: two completed runs of one project (a
    // modification, a deletion, an addition), a failed run whose rows must
    // stay invisible, and a second project.
    let app = store
        .ensure_project(&github_project("team-a/app"))
        .await
        .unwrap();
    let lib = store
        .ensure_project(&github_project("team-b/lib"))
        .await
        .unwrap();
    let first = [("a.rs", "a1"), ("b.rs", "b1"), ("src/c, d.rs", "c1")];
    let s1 = sync_once(&store, app, None, "c1", &first, &[]).await;
    let s2 = sync_once(
        &store,
        app,
        Some(s1.id),
        "c2",
        &[("b.rs", "b2"), ("e.rs", "e1")],
        &["src/c, d.rs"],
    )
    .await;
    let (failed, _) = record_run(&store, app, Some(s2.id), "c3", &[("a.rs", "broken")]).await;
    store.fail_sync(failed, None, "test failure").await.unwrap();
    sync_once(&store, lib, None, "l1", &[("lib.rs", "l1")], &[]).await;
    let app_now = [("a.rs", "a1"), ("b.rs", "b2"), ("e.rs", "e1")];
    let rows_before = dump(&db.pool).await;
    let s1_before = picture_at(&db.pool, s1.id.as_uuid()).await;
    assert_eq!(s1_before.len(), 3);

    store.migrate().await.unwrap();
    assert_eq!(
        store.applied_migrations().await.unwrap(),
        embedded_versions()
    );

    // Every row, column for column; the views and a past run's picture as before.
    assert_eq!(dump(&db.pool).await, rows_before);
    assert_picture(&db.pool, "team-a/app", &app_now).await;
    assert_picture(&db.pool, "team-b/lib", &[("lib.rs", "l1")]).await;
    assert_eq!(picture_at(&db.pool, s1.id.as_uuid()).await, s1_before);

    // Both tables are hash-partitioned by project, and every primary and
    // unique key includes the project.
    for table in ["repository_files", "memory_entries"] {
        let strategy: String = sqlx::query_scalar(
            "SELECT p.partstrat::text FROM pg_partitioned_table p WHERE p.partrelid = $1::regclass",
        )
        .bind(table)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert_eq!(strategy, "h", "{table} is hash-partitioned");
        let keys: Vec<(String, bool)> = sqlx::query_as(
            r#"SELECT c.conname::text,
                      (SELECT attnum FROM pg_attribute WHERE attrelid = c.conrelid AND attname = 'project_id') = ANY (c.conkey)
                 FROM pg_constraint c WHERE c.conrelid = $1::regclass AND c.contype IN ('p', 'u')"#,
        )
        .bind(table)
        .fetch_all(&db.pool)
        .await
        .unwrap();
        assert_eq!(keys.len(), 2, "{table}: {keys:?}");
        assert!(keys.iter().all(|(_, has)| *has), "{table}: {keys:?}");
    }

    // Foreign keys still hold: a file of an unknown run, and a memory entry
    // of a file of another project, are refused.
    let lib_file: i64 =
        sqlx::query_scalar("SELECT id FROM repository_files WHERE project_id = $1 LIMIT 1")
            .bind(lib.get())
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let error = sqlx::query(
        "INSERT INTO repository_files (project_id, path, blob_sha, size, mode, kind, introduced_sync_id)
         VALUES ($1, 'x.rs', 'x', 1, 33188, 'file', gen_random_uuid())",
    )
    .bind(app.get())
    .execute(&db.pool)
    .await
    .unwrap_err();
    assert_eq!(
        error.as_database_error().and_then(|e| e.constraint()),
        Some("repository_files_introduced_sync_id_fkey")
    );
    let error = sqlx::query(
        "INSERT INTO memory_entries (project_id, file_id, path, chunk_index, start_line, end_line,
                                     content, content_hash, introduced_sync_id)
         VALUES ($1, $2, 'lib.rs', 9, 1, 1, 'x', repeat('0', 64), $3)",
    )
    .bind(app.get())
    .bind(lib_file)
    .bind(s2.id.as_uuid())
    .execute(&db.pool)
    .await
    .unwrap_err();
    assert_eq!(
        error.as_database_error().and_then(|e| e.constraint()),
        Some("memory_entries_file_id_fkey")
    );
    // Deleting a file version still takes its memory entries with it.
    sqlx::query("DELETE FROM repository_files WHERE id = $1")
        .bind(lib_file)
        .execute(&db.pool)
        .await
        .unwrap();
    let orphans: i64 = sqlx::query_scalar("SELECT count(*) FROM memory_entries WHERE file_id = $1")
        .bind(lib_file)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(orphans, 0);

    // The store works on the new tables: ids continue after the copied
    // ones, a path recorded twice in a run is reported by its path (the
    // violation comes from a partition's copy of the key), and the next
    // run chains on the last completed one.
    let max_before = rows_before
        .0
        .iter()
        .filter_map(|row| row["id"].as_i64())
        .max()
        .unwrap();
    let (s3, ids) = record_run(&store, app, Some(s2.id), "c4", &[("src/c, d.rs", "c2")]).await;
    assert!(
        ids[0].get() > max_before,
        "{} after {max_before}",
        ids[0].get()
    );
    let error = store
        .record_files(s3, &[file("src/c, d.rs", "c3")])
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::DuplicatePath { path, .. } if path == "src/c, d.rs"),
        "{error:?}"
    );
    let error = store
        .record_memory(s3, &[chunk(ids[0], 0, "again")])
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::InvalidInput { .. }),
        "{error:?}"
    );
    let s3 = store
        .complete_sync(
            s3,
            Completion {
                deleted_paths: vec!["e.rs".into()],
                ..Completion::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(s3.status, SyncStatus::Completed);
    assert_picture(
        &db.pool,
        "team-a/app",
        &[("a.rs", "a1"), ("b.rs", "b2"), ("src/c, d.rs", "c2")],
    )
    .await;
}
