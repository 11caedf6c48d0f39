//! Migrations against the real Postgres: from an empty database, re-run on a
//! migrated one, several migrators at once (sqlx's advisory lock), and a
//! failed migration that must not leave the lock held.

use std::time::Duration;

use projectsync::store::{MIGRATOR, Store, StoreError};
use sqlx::Connection;
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

    let relations = sqlx::query!(
        r#"SELECT table_name AS "name!", table_type AS "kind!" FROM information_schema.tables
            WHERE table_schema = 'public' AND table_name NOT LIKE '\_sqlx%' ORDER BY 1"#
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let relations: Vec<(String, String)> =
        relations.into_iter().map(|r| (r.name, r.kind)).collect();
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
