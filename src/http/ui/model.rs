//! What the web page shows, as plain values built from a ProjectSync and
//! the store's records: the rows of the overview, one run of the history,
//! one file. Pure functions, no I/O, so what a page says is tested without
//! a server. Every string here is still untrusted: the templates escape it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use crate::{
    api::{ProjectSync, conditions},
    controller::dereference::describe_repository,
    store::{ActiveFile, MemoryHit, SyncRecord},
};

/// Longest failure message or commit trigger shown in full; the rest is cut
/// (a hostile server can fill a message with megabytes).
const MAX_TEXT_CHARS: usize = 2_000;
/// Longest search hit excerpt shown.
const MAX_EXCERPT_CHARS: usize = 600;

/// A failing condition: why and what the controller said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason: String,
    pub message: String,
    pub stalled: bool,
}

/// A run in progress, as the status last recorded it (the page then follows
/// the live stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveProgress {
    pub stage: String,
    pub done: i64,
    pub total: i64,
}

/// One ProjectSync on the overview (and at the top of its own page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRow {
    pub namespace: String,
    pub name: String,
    pub repository: String,
    pub branch: String,
    pub phase: String,
    /// The full SHA of the last completed sync.
    pub commit: Option<String>,
    /// When the last run (completed or failed) ended, RFC 3339.
    pub last_sync: Option<String>,
    pub last_result: Option<String>,
    pub failure: Option<Failure>,
    pub progress: Option<LiveProgress>,
    pub suspended: bool,
    pub interval: String,
    /// The commit `spec.commit` pins, if any.
    pub pinned: Option<String>,
    /// The run `spec.restore` holds the mirror at, if any.
    pub restore: Option<String>,
}

/// Builds the overview row of `obj` from its spec and status.
pub fn build_resource_row(obj: &ProjectSync) -> ResourceRow {
    let status = obj.status.clone().unwrap_or_default();
    let condition = |kind: &str| status.conditions.iter().find(|c| c.type_ == kind);
    let stalled = condition(conditions::STALLED).is_some_and(|c| c.status == "True");
    let failure = condition(conditions::READY)
        .filter(|c| c.status == "False")
        .map(|c| Failure {
            reason: c.reason.clone(),
            message: cut(&c.message, MAX_TEXT_CHARS),
            stalled,
        });
    let phase = status
        .phase
        .map(|p| format!("{p:?}"))
        .unwrap_or_else(|| "Pending".to_string());
    ResourceRow {
        namespace: obj.namespace().unwrap_or_default(),
        name: obj.name_any(),
        repository: status
            .repository
            .clone()
            .unwrap_or_else(|| describe_repository(&obj.spec.source)),
        branch: obj.spec.branch.clone(),
        phase,
        commit: status.last_synced_commit.clone(),
        last_sync: status
            .last_sync
            .as_ref()
            .map(|s| time_text(s.finished_at.as_ref().unwrap_or(&s.started_at))),
        last_result: status.last_sync.as_ref().map(|s| s.result.clone()),
        failure,
        progress: status.progress.as_ref().map(|p| LiveProgress {
            stage: p.stage.clone(),
            done: p.files_done.max(0),
            total: p.files_total.max(0),
        }),
        suspended: obj.spec.suspend,
        interval: obj.spec.interval.clone(),
        pinned: obj.spec.commit.clone(),
        restore: obj.spec.restore.as_ref().map(|r| r.sync_id.clone()),
    }
}

/// One run of the history table and the run page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRow {
    pub id: String,
    pub commit: Option<String>,
    pub status: String,
    pub stage: Option<String>,
    pub trigger: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub added: u64,
    pub modified: u64,
    pub deleted: u64,
    pub unchanged: u64,
    pub total: u64,
    pub duration_ms: Option<u64>,
    pub error: Option<String>,
    pub restored_from: Option<String>,
    /// Completed and its content not pruned: it can be browsed and restored.
    pub readable: bool,
}

/// Builds the history row of a stored run.
pub fn build_run_row(run: &SyncRecord) -> RunRow {
    let durations = [
        run.durations.prepare_ms,
        run.durations.scan_ms,
        run.durations.import_ms,
        run.durations.finalize_ms,
    ];
    let duration_ms = durations
        .iter()
        .any(Option::is_some)
        .then(|| durations.iter().flatten().sum());
    RunRow {
        id: run.id.to_string(),
        commit: run.commit.clone(),
        status: run.status.as_str().to_string(),
        stage: run.stage.map(|s| s.to_string()),
        trigger: cut(&run.trigger, MAX_TEXT_CHARS),
        started_at: run
            .started_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        finished_at: run
            .finished_at
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        added: run.files.added,
        modified: run.files.modified,
        deleted: run.files.deleted,
        unchanged: run.files.unchanged,
        total: run.files.total,
        duration_ms,
        error: run.failure.as_ref().map(|f| {
            let stage = f.stage.map(|s| format!("{s}: ")).unwrap_or_default();
            cut(&format!("{stage}{}", f.message), MAX_TEXT_CHARS)
        }),
        restored_from: run.restored_from.map(|id| id.to_string()),
        readable: run.status == crate::store::SyncStatus::Completed && !run.content_pruned,
    }
}

/// One file of a run's picture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRow {
    pub path: String,
    pub size: u64,
    pub kind: String,
    pub blob: String,
}

/// A page of a run's files whose path starts with `prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePage {
    pub prefix: String,
    pub page: usize,
    pub per_page: usize,
    /// Files matching the prefix, over all pages.
    pub matching: usize,
    pub files: Vec<FileRow>,
}

impl FilePage {
    /// Whether a page follows this one.
    pub fn has_next(&self) -> bool {
        (self.page + 1) * self.per_page < self.matching
    }
}

/// Page `page` (from 0) of the files under `prefix`, `per_page` at most.
pub fn build_file_page(
    files: &[ActiveFile],
    prefix: &str,
    page: usize,
    per_page: usize,
) -> FilePage {
    let per_page = per_page.max(1);
    let matching: Vec<&ActiveFile> = files
        .iter()
        .filter(|f| f.path.starts_with(prefix))
        .collect();
    let files = matching
        .iter()
        .skip(page.saturating_mul(per_page))
        .take(per_page)
        .map(|f| FileRow {
            path: f.path.clone(),
            size: f.size,
            kind: f.kind.as_str().to_string(),
            blob: f.blob_sha.chars().take(12).collect(),
        })
        .collect();
    FilePage {
        prefix: prefix.to_string(),
        page,
        per_page,
        matching: matching.len(),
        files,
    }
}

/// A search hit: where and an excerpt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HitRow {
    pub path: String,
    pub lines: String,
    pub excerpt: String,
}

/// Builds the result rows of a text search.
pub fn build_hit_row(hit: &MemoryHit) -> HitRow {
    HitRow {
        path: hit.path.clone(),
        lines: format!("{}-{}", hit.start_line, hit.end_line),
        excerpt: cut(&hit.content, MAX_EXCERPT_CHARS),
    }
}

/// `text`, cut to `max` characters with an ellipsis.
pub fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

fn time_text(time: &Time) -> String {
    // Whole seconds, as kubectl shows times.
    format!("{:.0}", time.0)
}

/// The last 8 characters of a run id: ids are UUIDv7, whose first
/// characters are a timestamp shared by runs close in time.
pub fn short_run(id: &str) -> &str {
    id.get(id.len().saturating_sub(8)..).unwrap_or(id)
}

/// The first 7 characters of a SHA, as `git log --oneline` shows it.
pub fn short(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FileKind;

    fn file(path: &str) -> ActiveFile {
        ActiveFile {
            id: crate::store::FileId(1),
            path: path.into(),
            blob_sha: "a".repeat(40),
            size: 3,
            mode: 0o100644,
            kind: FileKind::File,
        }
    }

    #[test]
    fn a_failed_ready_condition_becomes_the_rows_failure_with_its_reason() {
        let obj: ProjectSync = serde_json::from_value(serde_json::json!({
            "apiVersion": "projectsync.dev/v1alpha1", "kind": "ProjectSync",
            "metadata": {"name": "app", "namespace": "team"},
            "spec": {"source": {"git": {"url": "git://127.0.0.1/app"}}, "branch": "main"},
            "status": {"phase": "Failed", "conditions": [
                {"type": "Ready", "status": "False", "reason": "BranchNotFound",
                 "message": "no branch main", "lastTransitionTime": "2026-01-01T00:00:00Z"},
                {"type": "Stalled", "status": "True", "reason": "BranchNotFound",
                 "message": "no branch main", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        }))
        .unwrap();
        let row = build_resource_row(&obj);
        assert_eq!(row.phase, "Failed");
        assert_eq!(row.namespace, "team");
        let failure = row.failure.expect("a failure");
        assert_eq!(failure.reason, "BranchNotFound");
        assert!(failure.stalled);
    }

    #[test]
    fn a_file_page_filters_by_prefix_and_counts_every_match() {
        let files: Vec<ActiveFile> = (0..25)
            .map(|i| file(&format!("src/{i:02}.rs")))
            .chain([file("README.md")])
            .collect();
        let page = build_file_page(&files, "src/", 1, 10);
        assert_eq!(page.matching, 25);
        assert_eq!(page.files.len(), 10);
        assert_eq!(page.files[0].path, "src/10.rs");
        assert!(page.has_next());
        let last = build_file_page(&files, "src/", 2, 10);
        assert_eq!(last.files.len(), 5);
        assert!(!last.has_next());
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        assert_eq!(cut("héllo", 2), "hé…");
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(short("abcdef0123"), "abcdef0");
        assert_eq!(short("abc"), "abc");
        assert_eq!(
            short_run("0190f3a2-7c1e-7b8a-9d2e-3f4a5b6c7d8e"),
            "5b6c7d8e"
        );
    }
}
