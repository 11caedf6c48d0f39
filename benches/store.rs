//! `cargo bench --bench store`: bulk recording throughput of the store
//! against a real Postgres (`DATABASE_URL`, else `target/testenv/env.sh`).
//!
//! 1. A first sync records 100,000 file rows and 300,000 memory entries
//!    through the batched path (`record_files` / `record_memory`, UNNEST).
//! 2. A second sync changes 1% of the files (1,000 files, 3,000 entries).
//! 3. The naive path, one INSERT per row in one transaction, on a sample.
//!
//! Prints a markdown table: rows/s of each path and the ratios. Not a timed
//! test: it measures (the only check is that the second sync changed 1%).
//! Uses a database of its own and drops it at the end (`BENCH_KEEP_DB=1`
//! keeps it). `BENCH_WITHOUT_FOREIGN_KEYS=1` drops the bulk tables' foreign
//! keys first, to measure what their per-row checks cost. Figures and how to
//! read them: docs/store-bench.md.

use std::time::{Duration, Instant};

use projectsync::store::{
    Completion, ContentHash, FileKind, NewFile, NewMemoryEntry, NewSync, ProjectIdentity,
    ProjectSource, Store, SyncId,
};
use sqlx::{Connection, PgConnection};

const FILES: usize = 100_000;
const CHUNKS_PER_FILE: usize = 3;
const CHANGED_FILES: usize = FILES / 100;
/// Rows handed to the store per call, as the import stage would.
const CALL_ROWS: usize = 10_000;
/// Naive sample: files (and their chunks) inserted one row at a time (half
/// as many for the autocommitted variant).
const NAIVE_FILES: usize = 2_000;

fn database_url() -> String {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        return url;
    }
    let env = concat!(env!("CARGO_MANIFEST_DIR"), "/target/testenv/env.sh");
    std::fs::read_to_string(env)
        .ok()
        .and_then(|text| {
            text.lines()
                .filter_map(|l| l.trim().strip_prefix("export DATABASE_URL="))
                .map(|v| v.trim_matches('\'').to_string())
                .next()
        })
        .unwrap_or_else(|| {
            panic!("DATABASE_URL is not set and {env} is missing: run `hack/testenv up`")
        })
}

fn url_for(admin: &str, name: &str) -> String {
    let (base, query) = admin
        .split_once('?')
        .map_or((admin, None), |(b, q)| (b, Some(q)));
    let root = base.rfind('/').map_or(base, |i| &base[..i]);
    match query {
        Some(q) => format!("{root}/{name}?{q}"),
        None => format!("{root}/{name}"),
    }
}

fn blob(seed: &str) -> String {
    ContentHash::of(seed).as_str()[..40].to_string()
}

fn new_file(i: usize, version: u32) -> NewFile {
    NewFile {
        path: format!("src/module_{:03}/file_{i:06}.rs", i / 1000),
        blob_sha: blob(&format!("{i}/{version}")),
        size: 1_500 + (i % 700) as u64,
        mode: 0o100644,
        kind: FileKind::File,
    }
}

/// About 500 bytes of code-like text, distinct per file, chunk and version.
fn chunk_content(i: usize, c: usize, version: u32) -> String {
    let mut text = format!("// file {i} chunk {c} version {version}\n");
    let mut line = 0;
    while text.len() < 480 {
        text.push_str(&format!(
            "pub fn handler_{i}_{c}_{line}(input: &Request) -> Result<Response, Error> {{ Ok(input.into()) }}\n"
        ));
        line += 1;
    }
    text
}

struct Timed {
    rows: usize,
    elapsed: Duration,
}

impl Timed {
    fn rate(&self) -> f64 {
        self.rows as f64 / self.elapsed.as_secs_f64()
    }
}

/// The rows of one sync, generated before the clock starts: file rows and,
/// per file, its chunks' contents and hashes.
struct SyncData {
    files: Vec<NewFile>,
    chunks: Vec<Vec<(String, ContentHash)>>,
}

fn build_sync_data(indexes: &[usize], version: u32) -> SyncData {
    SyncData {
        files: indexes.iter().map(|i| new_file(*i, version)).collect(),
        chunks: indexes
            .iter()
            .map(|i| {
                (0..CHUNKS_PER_FILE)
                    .map(|c| {
                        let content = chunk_content(*i, c, version);
                        let hash = ContentHash::of(&content);
                        (content, hash)
                    })
                    .collect()
            })
            .collect(),
    }
}

/// Where the time of one batched sync went.
#[derive(Default)]
struct Breakdown {
    files: Duration,
    memory: Duration,
    complete: Duration,
}

/// One sync writing `data` through the batched path, begin to complete.
async fn batched_sync(
    store: &Store,
    project: projectsync::store::ProjectId,
    base: Option<SyncId>,
    mut data: SyncData,
    version: u32,
) -> (SyncId, Timed, Breakdown) {
    let mut breakdown = Breakdown::default();
    let started = Instant::now();
    let sync = store
        .begin_sync(
            project,
            NewSync {
                branch: "main".into(),
                commit: Some(blob(&format!("commit {version}"))),
                base,
                trigger: "bench".into(),
            },
        )
        .await
        .expect("begin");
    let mut rows = 0;
    let mut offset = 0;
    for call in data.files.chunks(CALL_ROWS) {
        let t = Instant::now();
        let ids = store.record_files(sync, call).await.expect("record files");
        breakdown.files += t.elapsed();
        let mut entries = Vec::with_capacity(ids.len() * CHUNKS_PER_FILE);
        for (k, id) in ids.iter().enumerate() {
            for (c, (content, hash)) in std::mem::take(&mut data.chunks[offset + k])
                .into_iter()
                .enumerate()
            {
                entries.push(NewMemoryEntry {
                    file: *id,
                    chunk_index: c as u32,
                    start_line: (c * 40 + 1) as u32,
                    end_line: (c * 40 + 40) as u32,
                    language: Some("rust".into()),
                    content,
                    content_hash: hash,
                    embedding: None,
                });
            }
        }
        offset += ids.len();
        let t = Instant::now();
        store
            .record_memory(sync, &entries)
            .await
            .expect("record memory");
        breakdown.memory += t.elapsed();
        rows += call.len() + entries.len();
    }
    let t = Instant::now();
    store
        .complete_sync(sync, Completion::default())
        .await
        .expect("complete");
    breakdown.complete = t.elapsed();
    (
        sync,
        Timed {
            rows,
            elapsed: started.elapsed(),
        },
        breakdown,
    )
}

/// The naive path: one INSERT per file and per chunk, for `files` files
/// starting at index `first`; each statement its own transaction
/// (`one_transaction` false, what a plain loop over the pool does) or all in
/// one.
async fn naive_inserts(
    conn: &mut PgConnection,
    project: i64,
    sync: SyncId,
    first: usize,
    files: usize,
    one_transaction: bool,
) -> Timed {
    let started = Instant::now();
    if one_transaction {
        sqlx::raw_sql("BEGIN")
            .execute(&mut *conn)
            .await
            .expect("begin");
    }
    let mut rows = 0;
    for i in first..first + files {
        let file = new_file(i, 1);
        let id = sqlx::query_scalar!(
            r#"INSERT INTO repository_files (project_id, path, blob_sha, size, mode, kind, introduced_sync_id)
               VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id"#,
            project,
            file.path,
            file.blob_sha,
            file.size as i64,
            file.mode as i32,
            file.kind.as_str(),
            sync.as_uuid()
        )
        .fetch_one(&mut *conn)
        .await
        .expect("naive file insert");
        rows += 1;
        for c in 0..CHUNKS_PER_FILE {
            let content = chunk_content(i, c, 1);
            let hash = ContentHash::of(&content);
            sqlx::query!(
                r#"INSERT INTO memory_entries (project_id, file_id, path, chunk_index, start_line, end_line,
                                               language, content, content_hash, introduced_sync_id)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"#,
                project,
                id,
                file.path,
                c as i32,
                (c * 40 + 1) as i32,
                (c * 40 + 40) as i32,
                "rust",
                content,
                hash.as_str(),
                sync.as_uuid()
            )
            .execute(&mut *conn)
            .await
            .expect("naive memory insert");
            rows += 1;
        }
    }
    if one_transaction {
        sqlx::raw_sql("COMMIT")
            .execute(&mut *conn)
            .await
            .expect("commit");
    }
    Timed {
        rows,
        elapsed: started.elapsed(),
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

#[tokio::main]
async fn main() {
    let admin_url = database_url();
    let name = format!(
        "bench_store_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let mut admin = PgConnection::connect(&admin_url)
        .await
        .expect("connect to Postgres");
    sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create database");
    let url = url_for(&admin_url, &name);
    let store = Store::connect(&url).await.expect("connect");
    store.migrate().await.expect("migrate");
    if std::env::var_os("BENCH_WITHOUT_FOREIGN_KEYS").is_some() {
        // Experiment only: what the per-row foreign-key checks cost.
        eprintln!("dropping the foreign keys of repository_files and memory_entries (experiment)");
        sqlx::raw_sql(
            "ALTER TABLE repository_files DROP CONSTRAINT repository_files_project_id_fkey, \
                 DROP CONSTRAINT repository_files_introduced_sync_id_fkey; \
             ALTER TABLE memory_entries DROP CONSTRAINT memory_entries_file_id_fkey",
        )
        .execute(store.pool())
        .await
        .expect("drop foreign keys");
    }
    let settings: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'shared_buffers', 'server_version') ORDER BY name",
    )
    .fetch_all(store.pool())
    .await
    .expect("settings");

    let project = store
        .ensure_project(&ProjectIdentity {
            key: "bench/store".into(),
            source: ProjectSource::GitHub {
                owner: "bench".into(),
                repo: "store".into(),
            },
            branch: "main".into(),
        })
        .await
        .expect("project");

    eprintln!(
        "first sync: {FILES} files, {} memory entries...",
        FILES * CHUNKS_PER_FILE
    );
    let all: Vec<usize> = (0..FILES).collect();
    let first_data = build_sync_data(&all, 1);
    let (first, first_timed, first_parts) =
        batched_sync(&store, project, None, first_data, 1).await;

    // The next sync runs when the interval fires, minutes later: by then
    // autovacuum has processed the bulk load. Do that now, off the clock, so
    // the 1% sync is not measured against a vacuum running beside it.
    eprintln!("settling (VACUUM ANALYZE, as autovacuum would)...");
    sqlx::raw_sql("VACUUM (ANALYZE) repository_files, memory_entries, project_syncs")
        .execute(store.pool())
        .await
        .expect("vacuum");

    eprintln!("second sync: {CHANGED_FILES} files changed...");
    let changed: Vec<usize> = (0..CHANGED_FILES)
        .map(|k| k * (FILES / CHANGED_FILES))
        .collect();
    let second_data = build_sync_data(&changed, 2);
    let (second, second_timed, second_parts) =
        batched_sync(&store, project, Some(first), second_data, 2).await;
    let record = store.get_sync(second).await.expect("second sync");
    assert_eq!(
        (
            record.files.modified as usize,
            record.files.unchanged as usize
        ),
        (CHANGED_FILES, FILES - CHANGED_FILES),
        "the second sync changed 1%"
    );

    eprintln!("naive path: one row per INSERT, in one transaction and autocommitted...");
    let naive_sync = store
        .begin_sync(
            project,
            NewSync {
                branch: "main".into(),
                commit: Some(blob("naive")),
                base: Some(second),
                trigger: "bench naive".into(),
            },
        )
        .await
        .expect("begin naive");
    let mut conn = PgConnection::connect(&url).await.expect("connect");
    let naive_tx = naive_inserts(
        &mut conn,
        project.get(),
        naive_sync,
        FILES,
        NAIVE_FILES,
        true,
    )
    .await;
    let naive = naive_inserts(
        &mut conn,
        project.get(),
        naive_sync,
        FILES + NAIVE_FILES,
        NAIVE_FILES / 2,
        false,
    )
    .await;
    store
        .fail_sync(naive_sync, None, "bench: naive sample, not a real run")
        .await
        .expect("fail naive");
    conn.close().await.ok();

    let ratio = first_timed.rate() / naive.rate();
    let ratio_tx = first_timed.rate() / naive_tx.rate();
    let share = second_timed.elapsed.as_secs_f64() / first_timed.elapsed.as_secs_f64() * 100.0;
    println!("\n## Store bench\n");
    println!(
        "Postgres: {}\n",
        settings
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("| path | rows | time | rows/s |");
    println!("|---|---:|---:|---:|");
    println!(
        "| batched, first sync (100,000 files + 300,000 entries, begin to complete) | {} | {} | {:.0} |",
        first_timed.rows,
        secs(first_timed.elapsed),
        first_timed.rate()
    );
    println!(
        "| batched, 1% sync (1,000 files + 3,000 entries, begin to complete) | {} | {} | {:.0} |",
        second_timed.rows,
        secs(second_timed.elapsed),
        second_timed.rate()
    );
    println!(
        "| naive: one INSERT per row, each autocommitted (sample) | {} | {} | {:.0} |",
        naive.rows,
        secs(naive.elapsed),
        naive.rate()
    );
    println!(
        "| naive: one INSERT per row, all in one transaction (sample) | {} | {} | {:.0} |",
        naive_tx.rows,
        secs(naive_tx.elapsed),
        naive_tx.rate()
    );
    println!();
    println!("| where the batched time went | first sync | 1% sync |");
    println!("|---|---:|---:|");
    for (what, a, b) in [
        ("record_files", first_parts.files, second_parts.files),
        ("record_memory", first_parts.memory, second_parts.memory),
        ("complete_sync", first_parts.complete, second_parts.complete),
    ] {
        println!(
            "| {what} | {:.3} s | {:.3} s |",
            a.as_secs_f64(),
            b.as_secs_f64()
        );
    }
    println!();
    println!("| ratio | value | target |");
    println!("|---|---:|---:|");
    println!("| batched / naive (autocommitted) rows/s | {ratio:.1}x | >= 20x |");
    println!("| batched / naive (one transaction) rows/s | {ratio_tx:.1}x | |");
    println!("| batched rows/s | {:.0} | >= 50,000 |", first_timed.rate());
    println!("| 1% sync time / first sync time | {share:.2}% | < 2% |");

    store.pool().close().await;
    if std::env::var_os("BENCH_KEEP_DB").is_some() {
        eprintln!("kept database {name}");
        return;
    }
    sqlx::raw_sql(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .expect("drop database");
}
