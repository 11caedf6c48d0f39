//! The CLI against the real Postgres and a real `git daemon`: `sync --once`
//! into a fresh database, then `history`, `search`, `restore` and
//! `backfill-embeddings` on what it wrote, through the real binary.

use std::collections::BTreeSet;

use support::cli::{assert_aligned, projectsync};
use support::{
    TestDb,
    embed_server::{EmbedServer, Mode},
    fresh_database,
    git_server::GitDaemon,
    repo::TestRepo,
};

/// A repository served by `git daemon`, with two commits.
struct Served {
    repo: TestRepo,
    _daemon: GitDaemon,
    url: String,
}

fn serve(mut repo: TestRepo, name: &str) -> Served {
    if repo.commits.is_empty() {
        repo.commit("initial");
    }
    let daemon = GitDaemon::start(repo.root());
    let url = daemon.url(name);
    Served {
        repo,
        _daemon: daemon,
        url,
    }
}

fn small_repo(name: &str) -> TestRepo {
    let mut repo = TestRepo::new(name);
    repo.write("README.md", "# demo\nthe needle_old lives here\n")
        .write("src/lib.rs", "pub fn answer() -> u32 {\n    42\n}\n")
        .write("src/copy_a.rs", "// same content\nfn same() {}\n")
        .write("src/copy_b.rs", "// same content\nfn same() {}\n")
        .write("docs/guide.md", "guide\n");
    repo.commit("initial");
    repo
}

async fn sync_once(db: &TestDb, url: &str, project: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "sync",
        "--once",
        "--git",
        url,
        "--branch",
        "main",
        "--project",
        project,
        "-o",
        "json",
    ];
    args.extend_from_slice(extra);
    projectsync(&db.url, &args, &[]).await.json()
}

async fn active_paths(db: &TestDb, project: &str) -> BTreeSet<String> {
    sqlx::query_scalar::<_, String>("SELECT path FROM active_repository_files WHERE project = $1")
        .bind(project)
        .fetch_all(&db.pool)
        .await
        .expect("read active files")
        .into_iter()
        .collect()
}

#[tokio::test]
async fn sync_once_mirrors_a_git_repository_and_a_second_run_costs_only_the_change() {
    let db = fresh_database("cli sync once").await;
    let mut served = serve(small_repo("once"), "once");

    let first = sync_once(&db, &served.url, "local/once", &[]).await;
    assert_eq!(first["outcome"], "completed");
    assert_eq!(first["summary"]["files"]["added"], 5, "{first}");
    assert_eq!(first["summary"]["baseCommit"], serde_json::Value::Null);
    let expected: BTreeSet<String> = served
        .repo
        .ls_tree("HEAD")
        .into_iter()
        .map(|e| String::from_utf8(e.path).unwrap())
        .collect();
    assert_eq!(active_paths(&db, "local/once").await, expected);

    served
        .repo
        .write("src/lib.rs", "pub fn answer() -> u32 {\n    43\n}\n");
    let second_commit = served.repo.commit("change one file");
    let second = sync_once(&db, &served.url, "local/once", &[]).await;
    assert_eq!(second["commit"], second_commit.as_str());
    let files = &second["summary"]["files"];
    assert_eq!(
        (
            files["added"].as_u64(),
            files["modified"].as_u64(),
            files["unchanged"].as_u64()
        ),
        (Some(0), Some(1), Some(4))
    );

    let third = sync_once(&db, &served.url, "local/once", &[]).await;
    assert_eq!(third["outcome"], "unchanged", "{third}");
    assert_eq!(third["summary"], serde_json::Value::Null);
}

#[tokio::test]
async fn sync_once_honours_include_and_exclude_and_prints_a_summary_with_stage_lines() {
    let db = fresh_database("cli sync filters").await;
    let served = serve(small_repo("filters"), "filters");
    let run = projectsync(
        &db.url,
        &[
            "sync",
            "--once",
            "--git",
            &served.url,
            "--project",
            "local/filters",
            "--include",
            "src/**",
            "--include",
            "*.md",
            "--exclude",
            "src/copy_b.rs",
        ],
        &[],
    )
    .await;
    let stdout = run.ok();
    assert!(stdout.contains("project:"), "{stdout}");
    assert!(
        stdout.contains("3 added, 0 modified, 0 deleted"),
        "{stdout}"
    );
    // Not a terminal: one line per stage on stderr, no bar.
    for stage in ["prepare", "scan", "import", "finalize"] {
        assert!(
            run.stderr.contains(&format!("{stage} done in")),
            "{}",
            run.stderr
        );
    }
    let paths = active_paths(&db, "local/filters").await;
    assert_eq!(
        paths,
        ["README.md", "src/copy_a.rs", "src/lib.rs"]
            .map(String::from)
            .into()
    );
}

#[tokio::test]
async fn history_lists_runs_newest_first_with_counts_durations_and_the_error_of_a_failed_run() {
    let db = fresh_database("cli history").await;
    let mut served = serve(small_repo("history"), "history");
    sync_once(&db, &served.url, "team/history", &[]).await;
    served.repo.remove("docs/guide.md");
    served.repo.commit("delete a file");
    sync_once(&db, &served.url, "team/history", &[]).await;
    // A commit the remote does not have: the run opens, then fails.
    let missing = "0123456789abcdef0123456789abcdef01234567";
    let failed = projectsync(
        &db.url,
        &[
            "sync",
            "--once",
            "--git",
            &served.url,
            "--project",
            "team/history",
            "--commit",
            missing,
        ],
        &[],
    )
    .await;
    let line = failed.error(1);
    assert!(line.contains(missing), "{line}");

    let history = projectsync(&db.url, &["history", "team/history", "-o", "json"], &[])
        .await
        .json();
    let runs = history["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 3, "{history}");
    assert_eq!(runs[0]["status"], "FAILED");
    assert!(
        runs[0]["error"]
            .as_str()
            .unwrap_or_default()
            .contains(missing),
        "{}",
        runs[0]
    );
    assert_eq!(runs[1]["status"], "COMPLETED");
    assert_eq!(runs[1]["files"]["deleted"], 1);
    assert_eq!(runs[1]["files"]["unchanged"], 4);
    assert_eq!(runs[2]["files"]["added"], 5);
    assert_eq!(runs[2]["trigger"], "cli sync --once");
    assert!(runs[2]["durationMs"].is_u64(), "{}", runs[2]);

    let table = projectsync(&db.url, &["history", "team/history"], &[]).await;
    let text = table.ok();
    assert!(text.starts_with("SYNC "), "{text}");
    assert!(text.lines().nth(1).unwrap().contains("FAILED("), "{text}");
    assert_eq!(text.lines().count(), 4, "{text}");
    assert_aligned(text);

    let limited = projectsync(
        &db.url,
        &["history", "team/history", "--limit", "1", "-o", "json"],
        &[],
    )
    .await
    .json();
    assert_eq!(limited["runs"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn restore_makes_an_earlier_sync_current_and_prints_the_new_run_like_history() {
    let db = fresh_database("cli restore").await;
    let mut served = serve(small_repo("restore"), "restore");
    let first = sync_once(&db, &served.url, "team/restore", &[]).await;
    let first_id = first["summary"]["syncId"].as_str().unwrap().to_string();
    let before = active_paths(&db, "team/restore").await;
    served
        .repo
        .remove("docs/guide.md")
        .write("new.txt", "new\n");
    served.repo.commit("change");
    sync_once(&db, &served.url, "team/restore", &[]).await;
    assert_ne!(active_paths(&db, "team/restore").await, before);

    let run = projectsync(&db.url, &["restore", "team/restore", &first_id], &[]).await;
    let text = run.ok();
    assert!(text.starts_with("SYNC "), "{text}");
    assert!(
        text.contains("COMPLETED") && text.contains(&format!("restore of {}", &first_id[..20])),
        "{text}"
    );
    assert_eq!(active_paths(&db, "team/restore").await, before);

    let json = projectsync(
        &db.url,
        &["restore", "team/restore", &first_id, "-o", "json"],
        &[],
    )
    .await
    .json();
    assert_eq!(json["restoredFrom"], first_id.as_str());

    let wrong = projectsync(&db.url, &["restore", "team/restore", "not-a-uuid"], &[]).await;
    assert!(wrong.error(2).contains("not a sync id"));
}

#[tokio::test]
async fn search_by_text_returns_only_active_entries() {
    let db = fresh_database("cli search").await;
    let mut served = serve(small_repo("search"), "search");
    sync_once(&db, &served.url, "team/search", &[]).await;
    served
        .repo
        .write("README.md", "# demo\nthe needle_new lives here now\n");
    served.repo.commit("move the needle");
    sync_once(&db, &served.url, "team/search", &[]).await;

    let json = projectsync(
        &db.url,
        &["search", "team/search", "NEEDLE", "-o", "json"],
        &[],
    )
    .await
    .json();
    let hits = json["hits"].as_array().expect("hits");
    assert_eq!(hits.len(), 1, "a superseded entry leaked: {json}");
    assert_eq!(hits[0]["path"], "README.md");
    assert!(hits[0]["content"].as_str().unwrap().contains("needle_new"));

    let table = projectsync(&db.url, &["search", "team/search", "needle"], &[]).await;
    let text = table.ok();
    assert!(text.starts_with("PATH "), "{text}");
    assert!(text.contains("the needle_new lives here now"), "{text}");
    assert_aligned(text);

    let none = projectsync(&db.url, &["search", "team/search", "needle_old"], &[]).await;
    assert!(
        none.ok().starts_with("no active memory entries"),
        "{}",
        none.stdout
    );
}

#[tokio::test]
async fn backfill_fills_missing_embeddings_once_per_content_and_never_reuses_another_projects() {
    let db = fresh_database("cli backfill").await;
    let served = serve(small_repo("backfill"), "backfill");
    let embed = EmbedServer::start().await;
    let endpoint = embed.endpoint();
    let counts = two_projects_of_one_repository_with_repeated_content(&db, &served.url).await;

    the_first_backfill_embeds_each_distinct_content_once(&db, &embed, counts).await;
    the_second_project_computes_its_own_embeddings(&db, &embed, counts).await;
    a_repeated_backfill_has_nothing_to_do(&db, &endpoint).await;

    let content: String = sqlx::query_scalar(
        "SELECT content FROM active_memory_entries WHERE project = 'team/first' AND path = 'src/lib.rs' LIMIT 1",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    vector_search_ranks_a_chunk_first_for_its_own_content(&db, &endpoint, &content).await;
    a_model_of_another_dimension_is_refused(&db, &embed, &endpoint).await;
    vector_search_prints_a_table_by_score(&db, &endpoint, &content).await;
}

/// Active memory entries of `team/first`, and their distinct contents.
#[derive(Clone, Copy)]
struct EntryCounts {
    entries: i64,
    distinct: i64,
}

/// Syncs the repository into `team/first` and `team/second`; two of its
/// files have the same content, so there are fewer contents than entries.
async fn two_projects_of_one_repository_with_repeated_content(
    db: &TestDb,
    url: &str,
) -> EntryCounts {
    sync_once(db, url, "team/first", &[]).await;
    sync_once(db, url, "team/second", &[]).await;
    let entries: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM active_memory_entries WHERE project = 'team/first'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let distinct: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT content_hash) FROM active_memory_entries WHERE project = 'team/first'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(
        distinct < entries,
        "the repository has two files with the same content"
    );
    EntryCounts { entries, distinct }
}

/// `backfill-embeddings PROJECT` against `endpoint`, two texts a request.
fn backfill_args<'a>(project: &'a str, endpoint: &'a str) -> Vec<&'a str> {
    vec![
        "backfill-embeddings",
        project,
        "--endpoint",
        endpoint,
        "--model",
        "fake-8",
        "--batch-size",
        "2",
        "-o",
        "json",
    ]
}

async fn the_first_backfill_embeds_each_distinct_content_once(
    db: &TestDb,
    embed: &EmbedServer,
    EntryCounts { entries, distinct }: EntryCounts,
) {
    let endpoint = embed.endpoint();
    let first = projectsync(&db.url, &backfill_args("team/first", &endpoint), &[])
        .await
        .json();
    assert_eq!(first["missing"], entries);
    assert_eq!(first["embedded"], entries);
    assert_eq!(
        first["computed"], distinct,
        "identical contents are embedded once: {first}"
    );
    assert!(embed.request_count() as i64 >= distinct / 2);
}

/// Another project of the same content reuses nothing of the first: stored
/// embeddings are reused only within a project (another tenant's endpoint
/// could have planted them), so it computes each distinct content itself.
async fn the_second_project_computes_its_own_embeddings(
    db: &TestDb,
    embed: &EmbedServer,
    EntryCounts { entries, distinct }: EntryCounts,
) {
    let requests_before = embed.request_count();
    let second = projectsync(
        &db.url,
        &backfill_args("team/second", &embed.endpoint()),
        &[],
    )
    .await
    .json();
    assert_eq!(second["reused"], 0, "{second}");
    assert_eq!(second["computed"], distinct, "{second}");
    assert_eq!(second["embedded"], entries, "{second}");
    assert!(
        embed.request_count() > requests_before,
        "the second project asked its endpoint"
    );
}

async fn a_repeated_backfill_has_nothing_to_do(db: &TestDb, endpoint: &str) {
    let again = projectsync(&db.url, &backfill_args("team/first", endpoint), &[])
        .await
        .json();
    assert_eq!(
        (again["missing"].as_u64(), again["embedded"].as_u64()),
        (Some(0), Some(0))
    );
}

/// Vector search: the exact content of a chunk ranks it first.
async fn vector_search_ranks_a_chunk_first_for_its_own_content(
    db: &TestDb,
    endpoint: &str,
    content: &str,
) {
    let found = projectsync(
        &db.url,
        &[
            "search",
            "team/first",
            content,
            "--vector",
            "--endpoint",
            endpoint,
            "--model",
            "fake-8",
            "-o",
            "json",
        ],
        &[],
    )
    .await
    .json();
    assert_eq!(found["mode"], "vector");
    assert_eq!(found["hits"][0]["path"], "src/lib.rs", "{found}");
    assert!(
        found["hits"][0]["score"].as_f64().unwrap() > 0.999,
        "{found}"
    );
}

/// The same model name served by an endpoint of another dimension.
async fn a_model_of_another_dimension_is_refused(db: &TestDb, embed: &EmbedServer, endpoint: &str) {
    embed.set_mode(Mode::OtherDimension);
    let other = projectsync(
        &db.url,
        &[
            "search",
            "team/first",
            "answer",
            "--vector",
            "--endpoint",
            endpoint,
            "--model",
            "fake-8",
        ],
        &[],
    )
    .await;
    assert!(
        other
            .error(1)
            .contains("have 8 dimensions but the query's has 9"),
        "{}",
        other.stderr
    );
    embed.set_mode(Mode::Ok);
}

async fn vector_search_prints_a_table_by_score(db: &TestDb, endpoint: &str, content: &str) {
    let table = projectsync(
        &db.url,
        &[
            "search",
            "team/first",
            content,
            "--vector",
            "--endpoint",
            endpoint,
            "--model",
            "fake-8",
        ],
        &[],
    )
    .await;
    assert!(table.ok().starts_with("SCORE "), "{}", table.stdout);
}

#[tokio::test]
async fn vector_search_without_embeddings_says_to_run_the_backfill() {
    let db = fresh_database("cli vector none").await;
    let served = serve(small_repo("novec"), "novec");
    let embed = EmbedServer::start().await;
    sync_once(&db, &served.url, "team/novec", &[]).await;
    let run = projectsync(
        &db.url,
        &[
            "search",
            "team/novec",
            "answer",
            "--vector",
            "--endpoint",
            &embed.endpoint(),
            "--model",
            "fake-8",
        ],
        &[],
    )
    .await;
    let line = run.error(1);
    assert!(
        line.contains("projectsync backfill-embeddings team/novec"),
        "{line}"
    );
}

#[tokio::test]
async fn sync_once_with_an_embedding_endpoint_embeds_while_importing() {
    let db = fresh_database("cli sync embed").await;
    let served = serve(small_repo("embedded"), "embedded");
    let embed = EmbedServer::start().await;
    embed.require_api_key("sk-test");
    let endpoint = embed.endpoint();
    let args = [
        "sync",
        "--once",
        "--git",
        &served.url,
        "--project",
        "team/embedded",
        "--embedding-endpoint",
        &endpoint,
        "--embedding-model",
        "fake-8",
        "--embedding-api-key-env",
        "TEST_EMBED_KEY",
        "-o",
        "json",
    ];
    let without_key = projectsync(&db.url, &args, &[]).await;
    assert!(
        without_key.error(2).contains("TEST_EMBED_KEY"),
        "{}",
        without_key.stderr
    );
    let report = projectsync(&db.url, &args, &[("TEST_EMBED_KEY", "sk-test")])
        .await
        .json();
    assert!(
        report["summary"]["embeddingsComputed"].as_u64().unwrap() > 0,
        "{report}"
    );
    let missing: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM active_memory_entries WHERE project = 'team/embedded' AND embedding IS NULL",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(missing, 0);
}

#[tokio::test]
async fn errors_are_one_line_that_says_what_to_do_with_an_exit_code_per_kind() {
    let db = fresh_database("cli errors").await;
    let run = projectsync(&db.url, &["migrate"], &[]).await;
    run.ok();

    let unknown = projectsync(&db.url, &["history", "team/nothing"], &[]).await;
    let line = unknown.error(3);
    assert!(
        line.contains("no project \"team/nothing\"") && line.contains("; check the key"),
        "{line}"
    );

    let bad_key = projectsync(&db.url, &["history", "nothing"], &[]).await;
    assert!(bad_key.error(2).contains("namespace/name"));

    let no_once = projectsync(
        &db.url,
        &["sync", "--git", "git://127.0.0.1:1/x", "--project", "a/b"],
        &[],
    )
    .await;
    assert!(no_once.error(2).contains("--once"));

    let unreachable = projectsync(
        "postgres://nobody@127.0.0.1:1/none",
        &["history", "team/x"],
        &[],
    )
    .await;
    let line = unreachable.error(1);
    assert!(
        line.contains("cannot connect to postgres") && line.contains("DATABASE_URL"),
        "{line}"
    );

    let bad_glob = projectsync(
        &db.url,
        &[
            "sync",
            "--once",
            "--git",
            "git://127.0.0.1:1/x",
            "--project",
            "a/b",
            "--include",
            "src/[",
        ],
        &[],
    )
    .await;
    assert!(
        bad_glob.error(2).contains("spec.include[0]"),
        "{}",
        bad_glob.stderr
    );
}

#[tokio::test]
async fn migrate_reports_what_it_applied_and_is_idempotent() {
    let db = fresh_database("cli migrate").await;
    let first = projectsync(&db.url, &["migrate", "-o", "json"], &[])
        .await
        .json();
    let applied = first["newlyApplied"]
        .as_array()
        .expect("newlyApplied")
        .len();
    assert!(applied >= 5, "{first}");
    assert_eq!(first["alreadyApplied"], serde_json::json!([]));
    let second = projectsync(&db.url, &["migrate", "-o", "json"], &[])
        .await
        .json();
    assert_eq!(second["newlyApplied"], serde_json::json!([]));
    assert_eq!(second["alreadyApplied"].as_array().unwrap().len(), applied);
    let table = projectsync(&db.url, &["migrate"], &[]).await;
    assert!(
        table.ok().starts_with("applied now:      none"),
        "{}",
        table.stdout
    );
    assert_eq!(table.stderr, "", "no log lines by default");
}
