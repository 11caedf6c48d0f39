//! Helpers for the `store_*` integration tests: a migrated store on a
//! fresh database, file and chunk builders, a one-call sync, and readers of
//! the `active_*` views (the contract other tools query). Does I/O against
//! the testenv Postgres.

use projectsync::store::{
    Completion, ContentHash, FileId, FileKind, NewFile, NewMemoryEntry, NewSync, ProjectId,
    ProjectIdentity, ProjectSource, Store, SyncId, SyncRecord,
};
use sqlx::PgPool;

use super::{TestDb, fresh_database};

/// A migrated store on its own database.
pub struct TestStore {
    pub store: Store,
    pub db: TestDb,
}

pub async fn migrated_store(label: &str) -> TestStore {
    let db = fresh_database(label).await;
    let store = Store::new(db.pool.clone());
    store.migrate().await.expect("migrations apply");
    TestStore { store, db }
}

pub fn github_project(key: &str) -> ProjectIdentity {
    ProjectIdentity {
        key: key.to_string(),
        source: ProjectSource::GitHub {
            owner: "acme".into(),
            repo: "widgets".into(),
        },
        branch: "main".into(),
    }
}

/// A blob SHA that differs per `seed` (40 hex digits).
pub fn sha(seed: &str) -> String {
    let hash = ContentHash::of(seed);
    hash.as_str()[..40].to_string()
}

pub fn file(path: &str, content: &str) -> NewFile {
    NewFile {
        path: path.to_string(),
        blob_sha: sha(content),
        size: content.len() as u64,
        mode: 0o100644,
        kind: FileKind::File,
    }
}

pub fn chunk(file: FileId, index: u32, content: &str) -> NewMemoryEntry {
    NewMemoryEntry {
        file,
        chunk_index: index,
        start_line: index * 10 + 1,
        end_line: index * 10 + 10,
        language: Some("rust".into()),
        content: content.to_string(),
        content_hash: ContentHash::of(content),
        embedding: None,
    }
}

pub fn new_sync(base: Option<SyncId>, commit: &str) -> NewSync {
    NewSync {
        branch: "main".into(),
        commit: Some(commit.to_string()),
        base,
        trigger: "test".into(),
    }
}

/// Begins a run on `base`, records `files` as (path, content) with one chunk
/// each (the content), and returns the run and the file ids.
pub async fn record_run(
    store: &Store,
    project: ProjectId,
    base: Option<SyncId>,
    commit: &str,
    files: &[(&str, &str)],
) -> (SyncId, Vec<FileId>) {
    let sync = store
        .begin_sync(project, new_sync(base, commit))
        .await
        .expect("run begins");
    let new_files: Vec<NewFile> = files.iter().map(|(p, c)| file(p, c)).collect();
    let ids = store
        .record_files(sync, &new_files)
        .await
        .expect("files recorded");
    let entries: Vec<NewMemoryEntry> = ids
        .iter()
        .zip(files)
        .map(|(id, (_, content))| chunk(*id, 0, content))
        .collect();
    store
        .record_memory(sync, &entries)
        .await
        .expect("memory recorded");
    (sync, ids)
}

/// A whole run: begin, record, complete with `deleted` paths.
pub async fn sync_once(
    store: &Store,
    project: ProjectId,
    base: Option<SyncId>,
    commit: &str,
    files: &[(&str, &str)],
    deleted: &[&str],
) -> SyncRecord {
    let (sync, _) = record_run(store, project, base, commit, files).await;
    store
        .complete_sync(
            sync,
            Completion {
                deleted_paths: deleted.iter().map(|p| p.to_string()).collect(),
                ..Completion::default()
            },
        )
        .await
        .expect("run completes")
}

/// `(path, blob_sha)` of `active_repository_files` for a project, by path.
pub async fn active_files(pool: &PgPool, project: &str) -> Rows {
    sqlx::query!(
        r#"SELECT path AS "path!", blob_sha AS "blob_sha!", size AS "size!"
             FROM active_repository_files WHERE project = $1 ORDER BY path"#,
        project
    )
    .fetch_all(pool)
    .await
    .expect("active files readable")
    .into_iter()
    .map(|row| (row.path, row.blob_sha))
    .collect()
}

/// `(path, content)` of `active_memory_entries` for a project.
pub async fn active_memory(pool: &PgPool, project: &str) -> Rows {
    sqlx::query!(
        r#"SELECT path AS "path!", content AS "content!"
             FROM active_memory_entries WHERE project = $1 ORDER BY path, chunk_index"#,
        project
    )
    .fetch_all(pool)
    .await
    .expect("active memory readable")
    .into_iter()
    .map(|row| (row.path, row.content))
    .collect()
}

/// Rows of a view as `(path, blob_sha)` or `(path, content)`.
pub type Rows = Vec<(String, String)>;

/// What the views should show for `files` as (path, content).
pub fn expected(files: &[(&str, &str)]) -> (Rows, Rows) {
    let mut files: Vec<(&str, &str)> = files.to_vec();
    files.sort();
    (
        files.iter().map(|(p, c)| (p.to_string(), sha(c))).collect(),
        files
            .iter()
            .map(|(p, c)| (p.to_string(), c.to_string()))
            .collect(),
    )
}

/// Asserts both views show exactly `files` as (path, content).
pub async fn assert_picture(pool: &PgPool, project: &str, files: &[(&str, &str)]) {
    let (want_files, want_memory) = expected(files);
    assert_eq!(
        active_files(pool, project).await,
        want_files,
        "active_repository_files"
    );
    assert_eq!(
        active_memory(pool, project).await,
        want_memory,
        "active_memory_entries"
    );
}
