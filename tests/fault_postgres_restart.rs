//! Fault: Postgres goes away in the middle of an import and comes back.
//! The testenv Postgres is shared by every test, so this test starts its own
//! (initdb into a temporary directory, its own port, run as the `postgres`
//! user), runs the real operator against it, stops it with `-m immediate`
//! (a crash: crash recovery on restart) while rows are being written, starts
//! it again, and asserts the store converges to `git ls-tree` of the head
//! with the operator still up and no run left IN_PROGRESS (a run whose
//! failure could not be recorded is failed by the project's next reconcile),
//! also after the operator restarts.

use std::{
    collections::BTreeMap,
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use kube::Api;
use projectsync::api::ProjectSync;
use serde_json::json;
use sqlx::{PgPool, postgres::PgPoolOptions};
use support::{
    fresh_namespace,
    git_server::GitDaemon,
    operator::{Operator, OperatorConfig},
    psync::{condition, create},
    repo::TestRepo,
};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// Distinct text files: enough that the import takes a few seconds here.
const FILES: usize = 20_000;

/// A private Postgres 15 cluster, stopped (immediately) when dropped.
struct PrivatePostgres {
    _dir: tempfile::TempDir,
    data: PathBuf,
    port: u16,
}

/// Runs a Postgres binary as the `postgres` user when we are root.
fn pg_command(program: &str) -> Command {
    let path = format!("{PG_BIN}/{program}");
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout == b"0\n");
    if root {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--", &path]);
        cmd
    } else {
        Command::new(path)
    }
}

fn run(mut cmd: Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PrivatePostgres {
    fn init() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("data directory");
        let mut chown = Command::new("chown");
        chown.arg("postgres:postgres").arg(&data);
        run(chown, "chown");
        let mut initdb = pg_command("initdb");
        initdb
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data);
        run(initdb, "initdb");
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        PrivatePostgres {
            _dir: dir,
            data,
            port,
        }
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn start(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off",
            self.port
        );
        let mut cmd = pg_command("pg_ctl");
        cmd.args(["-w", "-t", "30", "-o", &options, "-l"])
            .arg(self.data.join("server.log"))
            .arg("-D")
            .arg(&self.data)
            .arg("start");
        run(cmd, "pg_ctl start");
    }

    /// `-m immediate`: every backend is killed, nothing is shut down cleanly.
    fn crash(&self) {
        let mut cmd = pg_command("pg_ctl");
        cmd.args(["-w", "-t", "30", "-m", "immediate", "-D"])
            .arg(&self.data)
            .arg("stop");
        run(cmd, "pg_ctl stop");
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let mut cmd = pg_command("pg_ctl");
        cmd.args(["-w", "-t", "30", "-m", "immediate", "-D"])
            .arg(&self.data)
            .arg("stop");
        let _ = cmd.output();
    }
}

async fn connect(url: &str) -> PgPool {
    PgPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .expect("connect to the private Postgres")
}

/// Polls `probe` every 50 ms until it is true or `within` passes.
async fn poll_until(within: Duration, what: &str, mut probe: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !probe().await {
        assert!(Instant::now() < deadline, "{what} not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn data_dir_exists(path: &Path) -> bool {
    path.join("PG_VERSION").exists()
}

#[tokio::test]
async fn a_postgres_crash_during_import_converges_to_the_head_and_a_restart_leaves_no_run_in_progress()
 {
    let pg = PrivatePostgres::init();
    assert!(data_dir_exists(&pg.data));
    pg.start();

    let repo = TestRepo::new("crashy");
    let head = a_branch_of_many_small_files(&repo);
    let daemon = GitDaemon::start(repo.root());

    let ns = fresh_namespace("fault-pg").await;
    let mut operator = Operator::start(OperatorConfig::new(&ns.name, &pg.url())).await;
    let api: Api<ProjectSync> = Api::namespaced(ns.client.clone(), &ns.name);
    create(
        &api,
        "crashy",
        json!({ "source": { "git": { "url": daemon.url("crashy") } }, "branch": "main" }),
    )
    .await;

    postgres_crashes_while_the_first_run_writes_rows(&pg, &operator).await;
    pg.start();
    ready_at_the_head_after_the_crash(&api, &head, &operator).await;
    operator.assert_alive().await;

    let pool = connect(&pg.url()).await;
    no_run_is_left_in_progress(&pool).await;
    operator.kill();
    let _operator = a_restarted_operator_finds_no_run_in_progress(&ns.name, &pg, &pool).await;
    the_active_view_is_the_tree_of_the_head(&pool, &format!("{}/crashy", ns.name), &repo, &head)
        .await;
}

/// `FILES` distinct files on `main` in one `git fast-import`; returns the
/// head.
fn a_branch_of_many_small_files(repo: &TestRepo) -> String {
    let mut stream =
        b"commit refs/heads/main\ncommitter Test <test@example.com> 1700000000 +0000\ndata 5\nmany\n"
            .to_vec();
    for i in 0..FILES {
        let content = format!("// file {i}\npub fn f{i}() -> usize {{ {i} }}\n");
        stream.extend_from_slice(
            format!(
                "M 100644 inline src/m{:03}/f{i}.rs\ndata {}\n{content}\n",
                i / 500,
                content.len()
            )
            .as_bytes(),
        );
    }
    repo.git_bytes(&["fast-import", "--quiet"], Some(&stream));
    repo.rev_parse("refs/heads/main")
}

/// Crash Postgres once file rows of the first run are being written; it
/// stays down until the operator has noticed (a failed database call in
/// its log).
async fn postgres_crashes_while_the_first_run_writes_rows(
    pg: &PrivatePostgres,
    operator: &Operator,
) {
    let pool = connect(&pg.url()).await;
    poll_until(
        Duration::from_secs(120),
        "import writing rows",
        async || {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM repository_files")
                .fetch_one(&pool)
                .await
                .is_ok_and(|n| n > 0)
        },
    )
    .await;
    pool.close().await;
    pg.crash();
    let noticed = operator.log_text().len();
    poll_until(
        Duration::from_secs(60),
        "the operator noticing",
        async || {
            let log = operator.log_text();
            log.len() > noticed && log[noticed..].to_lowercase().contains("error")
        },
    )
    .await;
}

/// Converges: Ready at the head.
/// Polled rather than watched: a watch can end with an error while the
/// operator is retrying, which is not what this test is about.
async fn ready_at_the_head_after_the_crash(
    api: &Api<ProjectSync>,
    head: &str,
    operator: &Operator,
) {
    let ready_at_head = |obj: &ProjectSync| {
        condition(obj, "Ready").is_some_and(|(s, _, _)| s == "True")
            && obj
                .status
                .as_ref()
                .and_then(|s| s.last_synced_commit.as_deref())
                == Some(head)
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let obj = api.get("crashy").await.ok();
        if obj.as_ref().is_some_and(ready_at_head) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not Ready at {head} within 300s after the crash: {:?}\n{}",
            obj.and_then(|o| o.status),
            operator.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A run whose failure could not be recorded while Postgres was down is
/// failed by the next reconcile of the project, before the run that
/// converged began.
async fn no_run_is_left_in_progress(pool: &PgPool) {
    let statuses: Vec<(String, i64)> =
        sqlx::query_as("SELECT status::text, count(*) FROM project_syncs GROUP BY 1 ORDER BY 1")
            .fetch_all(pool)
            .await
            .expect("runs by status");
    println!("runs by status after the crash: {statuses:?}");
    assert!(
        statuses.iter().all(|(s, _)| s != "IN_PROGRESS"),
        "a run was left IN_PROGRESS: {statuses:?}"
    );
}

/// Starts the operator again and waits until no run is IN_PROGRESS;
/// returns it still running.
async fn a_restarted_operator_finds_no_run_in_progress(
    namespace: &str,
    pg: &PrivatePostgres,
    pool: &PgPool,
) -> Operator {
    let mut operator = Operator::start(OperatorConfig::new(namespace, &pg.url())).await;
    poll_until(
        Duration::from_secs(30),
        "no run IN_PROGRESS after a restart",
        async || {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM project_syncs WHERE status = 'IN_PROGRESS'",
            )
            .fetch_one(pool)
            .await
            .is_ok_and(|n| n == 0)
        },
    )
    .await;
    assert!(
        operator.is_running(),
        "the restarted operator exited:\n{}",
        operator.log_tail()
    );
    operator
}

async fn the_active_view_is_the_tree_of_the_head(
    pool: &PgPool,
    project: &str,
    repo: &TestRepo,
    head: &str,
) {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT path, blob_sha FROM active_repository_files WHERE project = $1 ORDER BY path",
    )
    .bind(project)
    .fetch_all(pool)
    .await
    .expect("active view");
    let active: BTreeMap<String, String> = rows.into_iter().collect();
    let oracle: BTreeMap<String, String> = repo
        .ls_tree(head)
        .into_iter()
        .map(|e| (String::from_utf8(e.path).expect("utf-8"), e.sha))
        .collect();
    assert_eq!(active.len(), FILES, "no missing or duplicate rows");
    assert!(active == oracle, "the active view differs from git ls-tree");
}
