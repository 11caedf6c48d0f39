//! `projectsync history NAMESPACE/NAME`: the runs of a project from Postgres,
//! newest first, with status, commit, trigger, file counts, durations and
//! the error of failed runs. Also the row format `restore` prints. Reads the
//! store, or with `--server` the operator's API.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{
    cli::HistoryArgs,
    http::api::model::{Page, RunView},
    store::{Store, SyncRecord},
};

use super::{
    CommandError, find_project,
    output::{Table, emit, human_duration, short_commit, truncate_to_width},
    remote::{Remote, resource_path},
};

/// One run, as printed.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRow {
    pub id: String,
    pub status: String,
    /// The stage a live run is in, or the stage a failed run failed in.
    pub stage: Option<String>,
    pub branch: String,
    pub commit: Option<String>,
    pub trigger: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<u64>,
    pub files: FileCountsRow,
    pub memory_entries_written: u32,
    pub bytes_fetched: u64,
    pub api_calls: u32,
    pub stage_durations_ms: StageDurationsRow,
    pub restored_from: Option<String>,
    /// Retention removed rows its picture needs: no longer restorable.
    pub content_pruned: bool,
    pub error: Option<String>,
}

/// A run's files by change as printed: without `renamed`, which the store
/// does not keep.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileCountsRow {
    pub added: u64,
    pub modified: u64,
    pub deleted: u64,
    pub unchanged: u64,
    pub skipped: u64,
    pub total: u64,
}

/// A run's stage durations as printed: milliseconds keyed by stage name,
/// `null` for a stage not measured.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StageDurationsRow {
    pub prepare: Option<u64>,
    pub scan: Option<u64>,
    pub import: Option<u64>,
    pub finalize: Option<u64>,
}

impl From<&SyncRecord> for RunRow {
    fn from(record: &SyncRecord) -> Self {
        RunRow {
            id: record.id.to_string(),
            status: record.status.to_string(),
            stage: record
                .failure
                .as_ref()
                .and_then(|f| f.stage)
                .or(record.stage)
                .map(|s| s.to_string()),
            branch: record.branch.clone(),
            commit: record.commit.clone(),
            trigger: record.trigger.clone(),
            started_at: record.started_at,
            finished_at: record.finished_at,
            duration_ms: record
                .finished_at
                .and_then(|end| u64::try_from((end - record.started_at).num_milliseconds()).ok()),
            files: FileCountsRow {
                added: record.files.added,
                modified: record.files.modified,
                deleted: record.files.deleted,
                unchanged: record.files.unchanged,
                skipped: record.files.skipped,
                total: record.files.total,
            },
            memory_entries_written: record.memory_entries_written,
            bytes_fetched: record.bytes_fetched,
            api_calls: record.api_calls,
            stage_durations_ms: StageDurationsRow {
                prepare: record.durations.prepare_ms,
                scan: record.durations.scan_ms,
                import: record.durations.import_ms,
                finalize: record.durations.finalize_ms,
            },
            restored_from: record.restored_from.map(|id| id.to_string()),
            content_pruned: record.content_pruned,
            error: record.failure.as_ref().map(|f| f.message.clone()),
        }
    }
}

/// What `history` prints.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryReport {
    pub project: String,
    pub runs: Vec<RunRow>,
}

/// The runs of the project, newest first.
pub async fn fetch_history(
    store: &Store,
    key: &str,
    limit: u32,
) -> Result<HistoryReport, CommandError> {
    let project = find_project(store, key).await?;
    let records = store.history(project.id, limit).await?;
    Ok(HistoryReport {
        project: project.identity.key,
        runs: records.iter().map(RunRow::from).collect(),
    })
}

/// The runs of the resource through the operator's API, page by page.
pub async fn fetch_remote_history(
    remote: &Remote,
    key: &str,
    limit: u32,
) -> Result<HistoryReport, CommandError> {
    let path = format!("{}/history", resource_path(key)?);
    let mut runs = Vec::new();
    let mut token: Option<String> = None;
    // Bounded: each page brings up to 500 runs, and `limit` caps the total.
    while runs.len() < limit as usize {
        let want = (limit as usize - runs.len()).min(500);
        let mut query = vec![("limit", want.to_string())];
        if let Some(token) = &token {
            query.push(("continue", token.clone()));
        }
        let page: Page<RunView> = remote.get(&path, &query).await?;
        runs.extend(page.items.iter().map(RunRow::from));
        match page.continue_token {
            Some(next) if !page.items.is_empty() => token = Some(next),
            _ => break,
        }
    }
    runs.truncate(limit as usize);
    Ok(HistoryReport {
        project: key.to_string(),
        runs,
    })
}

pub async fn run(args: &HistoryArgs) -> Result<(), CommandError> {
    let report = match Remote::connect(&args.server).await? {
        Some(remote) => fetch_remote_history(&remote, &args.project, args.limit).await?,
        None => {
            let store = Store::connect_with(args.database.url()?, args.database.limits()).await?;
            fetch_history(&store, &args.project, args.limit).await?
        }
    };
    emit(args.output.format, &report, |r| build_runs_table(&r.runs))
}

/// A run as the API answers it, printed as the database mode prints it.
impl From<&RunView> for RunRow {
    fn from(run: &RunView) -> Self {
        RunRow {
            id: run.id.clone(),
            status: run.status.clone(),
            stage: run.stage.clone(),
            branch: run.branch.clone(),
            commit: run.commit.clone(),
            trigger: run.trigger.clone(),
            started_at: run.started_at,
            finished_at: run.finished_at,
            duration_ms: run.duration_ms,
            files: FileCountsRow {
                added: run.counts.added,
                modified: run.counts.modified,
                deleted: run.counts.deleted,
                unchanged: run.counts.unchanged,
                skipped: run.counts.skipped,
                total: run.counts.total,
            },
            memory_entries_written: run.memory_entries_written,
            bytes_fetched: run.bytes_fetched,
            api_calls: run.api_calls,
            stage_durations_ms: StageDurationsRow {
                prepare: run.durations.prepare_ms,
                scan: run.durations.scan_ms,
                import: run.durations.import_ms,
                finalize: run.durations.finalize_ms,
            },
            restored_from: run.restored_from.clone(),
            content_pruned: run.content_pruned,
            error: run.error.clone(),
        }
    }
}

/// `SYNC STARTED STATUS COMMIT TRIGGER +ADD ~MOD -DEL =SAME TOTAL DURATION ERROR`.
pub fn build_runs_table(runs: &[RunRow]) -> String {
    let mut table = Table::new(&[
        "SYNC",
        "STARTED",
        "STATUS",
        "COMMIT",
        "TRIGGER",
        "ADDED",
        "MODIFIED",
        "DELETED",
        "UNCHANGED",
        "TOTAL",
        "DURATION",
        "ERROR",
    ]);
    for run in runs {
        let status = match (&run.status[..], &run.stage) {
            ("FAILED", Some(stage)) => format!("FAILED({stage})"),
            ("IN_PROGRESS", Some(stage)) => format!("IN_PROGRESS({stage})"),
            (status, _) if run.content_pruned => format!("{status}(pruned)"),
            (status, _) => status.to_string(),
        };
        table.row(vec![
            run.id.clone(),
            run.started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            status,
            short_commit(run.commit.as_deref()),
            truncate_to_width(&run.trigger, 48),
            run.files.added.to_string(),
            run.files.modified.to_string(),
            run.files.deleted.to_string(),
            run.files.unchanged.to_string(),
            run.files.total.to_string(),
            run.duration_ms
                .map(human_duration)
                .unwrap_or_else(|| "-".into()),
            run.error
                .as_deref()
                .map(|e| truncate_to_width(strip_run_prefix(e, run), 80))
                .unwrap_or_default(),
        ]);
    }
    table.render()
}

/// The error without its "scan stage of sync <id>: " prefix, which the row
/// already shows.
fn strip_run_prefix<'a>(error: &'a str, run: &RunRow) -> &'a str {
    let prefix = format!(
        "{} stage of sync {}: ",
        run.stage.as_deref().unwrap_or_default(),
        run.id
    );
    error.strip_prefix(&prefix).unwrap_or(error)
}
