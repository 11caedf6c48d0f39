//! What one scenario cost: CPU time and peak RSS of a process from `/proc`,
//! rows written from the store, and the Postgres COPY baseline. Reads
//! `/proc` and queries Postgres.

use std::path::PathBuf;
use std::time::Duration;

use futures::TryStreamExt;
use sqlx::{Connection, PgConnection, PgPool};

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ; 100 on Linux
/// everywhere in practice, asked of `getconf` to be sure).
fn ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// utime, stime, cutime, cstime of `/proc/<pid>/stat`, in ticks.
fn stat_times(pid: &str) -> [u64; 4] {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) in parentheses.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<u64> = after
        .split_whitespace()
        .skip(11)
        .take(4)
        .filter_map(|f| f.parse().ok())
        .collect();
    let mut times = [0; 4];
    times[..fields.len()].copy_from_slice(&fields);
    times
}

fn ticks(n: u64) -> Duration {
    Duration::from_secs_f64(n as f64 / ticks_per_second())
}

/// A running process we started (the operator, or a `sync --once`).
#[derive(Clone, Copy)]
pub struct Proc(pub u32);

impl Proc {
    /// User + system CPU of the process and of the children it waited for.
    pub fn cpu(self) -> Duration {
        ticks(stat_times(&self.0.to_string()).iter().sum())
    }

    /// Starts a new peak: writing 5 to `clear_refs` resets VmHWM to the
    /// current RSS (Linux ≥ 4.0), so each scenario reports its own peak.
    pub fn reset_peak(self) {
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.0), "5");
    }

    /// VmHWM: the peak resident set since start or the last reset.
    pub fn peak_rss(self) -> Option<u64> {
        status_kib(self.0, "VmHWM:").map(|kib| kib * 1024)
    }

    /// VmRSS: the resident set now.
    pub fn rss(self) -> Option<u64> {
        status_kib(self.0, "VmRSS:").map(|kib| kib * 1024)
    }

    /// Processes descending from this one that are alive (not zombies):
    /// its git helpers, git commands and their own helpers.
    pub fn descendants(self) -> usize {
        let mut parents = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let mut fields = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest)
                .unwrap_or("")
                .split_whitespace();
            let state = fields.next().unwrap_or("Z");
            let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
            if let Some(ppid) = ppid
                && state != "Z"
                && state != "X"
            {
                parents.push((pid, ppid));
            }
        }
        let mut tree = vec![self.0];
        let mut count = 0;
        while let Some(parent) = tree.pop() {
            for (pid, _) in parents.iter().filter(|(_, ppid)| *ppid == parent) {
                count += 1;
                tree.push(*pid);
            }
        }
        count
    }
}

fn status_kib(pid: u32, key: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU of the children this benchmark waited for (git clone, `sync --once`).
pub fn waited_children_cpu() -> Duration {
    let [_, _, cutime, cstime] = stat_times("self");
    ticks(cutime + cstime)
}

/// Postgres' own counters for the bench database: rows the executor read
/// (sequential and index fetches, every table) and rows written to the
/// tables that grow with files (inserted, updated: a superseded row is an
/// update, deleted). The difference of two is what a scenario cost the
/// store, whatever query did it.
///
/// Backends report their counters when idle at most once a second (and
/// may hold them for ten), so [`StoreCounts::read`] first ends the idle
/// connections of the database, which flushes their counters on exit: the
/// operator's pool opens fresh ones on its next run. Reading the counters
/// never touches a user table, so the bench's own queries do not count.
#[derive(Clone, Copy, Debug, Default)]
pub struct StoreCounts {
    pub read: i64,
    pub written: i64,
}

impl StoreCounts {
    pub async fn read(pool: &PgPool) -> Self {
        let mut conn = pool.acquire().await.expect("a connection for the counters");
        flush_idle_backends(&mut conn).await;
        let (read, written): (i64, i64) = sqlx::query_as(
            "SELECT coalesce(sum(seq_tup_read + coalesce(idx_tup_fetch, 0)), 0)::bigint,
                    coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del)
                        FILTER (WHERE relname LIKE 'repository_files%' OR relname LIKE 'memory_entries%'), 0)::bigint
               FROM pg_stat_user_tables",
        )
        .fetch_one(&mut *conn)
        .await
        .expect("read the store's counters");
        StoreCounts { read, written }
    }

    /// Rows written since `before`.
    pub fn written_since(self, before: StoreCounts) -> i64 {
        self.written - before.written
    }

    /// Rows read since `before`.
    pub fn read_since(self, before: StoreCounts) -> i64 {
        self.read - before.read
    }
}

/// Ends every idle connection to the database but `conn`,
/// and waits (at most two seconds) until they are gone, their counters
/// flushed.
async fn flush_idle_backends(conn: &mut PgConnection) {
    let ended: Vec<i32> = sqlx::query_scalar(
        // OFFSET 0 keeps the filter apart from the call: Postgres may
        // otherwise evaluate the call first, on this very connection.
        "SELECT pid FROM (
                SELECT pid FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'idle'
                OFFSET 0) idle
          WHERE pg_terminate_backend(pid)",
    )
    .fetch_all(&mut *conn)
    .await
    .expect("end idle connections");
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < deadline {
        let left: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)")
                .bind(&ended)
                .fetch_one(&mut *conn)
                .await
                .expect("look for ended connections");
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Time for Postgres to `COPY ... FROM STDIN` exactly the rows a run
/// inserted (its file rows and memory entries) into scratch tables of the
/// same shape (columns, defaults, checks and indexes; no foreign keys).
/// The rows are read out before the clock starts.
pub async fn copy_baseline(url: &str, run_id: &str) -> (Duration, i64) {
    let run: uuid::Uuid = run_id.parse().expect("run id is a uuid");
    let mut conn = PgConnection::connect(url)
        .await
        .expect("connect for the COPY baseline");
    let mut exported = Vec::new();
    for table in ["repository_files", "memory_entries"] {
        let rows: Vec<bytes::Bytes> = conn
            .copy_out_raw(&format!(
                "COPY (SELECT * FROM {table} WHERE introduced_sync_id = '{run}') TO STDOUT"
            ))
            .await
            .expect("COPY TO STDOUT")
            .try_collect()
            .await
            .expect("read COPY data");
        sqlx::raw_sql(&format!(
            "DROP TABLE IF EXISTS bench_copy_{table};
             CREATE TABLE bench_copy_{table} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES)"
        ))
        .execute(&mut conn)
        .await
        .expect("create a scratch table");
        exported.push((table, rows));
    }
    let start = std::time::Instant::now();
    let mut copied = 0;
    for (table, rows) in exported {
        let mut copy = conn
            .copy_in_raw(&format!("COPY bench_copy_{table} FROM STDIN"))
            .await
            .expect("COPY FROM STDIN");
        for chunk in rows {
            copy.send(chunk).await.expect("send COPY data");
        }
        copied += copy.finish().await.expect("finish COPY") as i64;
    }
    let elapsed = start.elapsed();
    sqlx::raw_sql("DROP TABLE bench_copy_repository_files; DROP TABLE bench_copy_memory_entries")
        .execute(&mut conn)
        .await
        .expect("drop the scratch tables");
    (elapsed, copied)
}

/// Where results go: `BENCH_RESULTS_DIR`, else `bench-results/` in the checkout.
pub fn results_dir() -> PathBuf {
    std::env::var_os("BENCH_RESULTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench-results"))
}
