//! The JSON shapes of the API (camelCase, as Kubernetes writes them), shared
//! by the handlers that answer them and the CLI that reads them. Pure types
//! and conversions from the store's records.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    api::{ProjectSync, ProjectSyncSpec, ProjectSyncStatus},
    store::{ActiveFile, MemoryHit, SyncRecord},
};

/// A page of items; `continue` is set when more follow (pass it back as
/// `?continue=`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    #[serde(rename = "continue", default, skip_serializing_if = "Option::is_none")]
    pub continue_token: Option<String>,
}

/// A ProjectSync as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectSyncView {
    pub namespace: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    pub spec: ProjectSyncSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ProjectSyncStatus>,
    /// The newest run in the store (completed, failed or live); only on a
    /// single resource's answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_run: Option<RunView>,
}

impl ProjectSyncView {
    pub fn build(obj: &ProjectSync, latest_run: Option<RunView>) -> Self {
        ProjectSyncView {
            namespace: obj.metadata.namespace.clone().unwrap_or_default(),
            name: obj.metadata.name.clone().unwrap_or_default(),
            generation: obj.metadata.generation,
            spec: obj.spec.clone(),
            status: obj.status.clone(),
            latest_run,
        }
    }
}

/// One sync run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunView {
    pub id: String,
    /// PENDING, IN_PROGRESS, COMPLETED or FAILED.
    pub status: String,
    /// The stage a live run is in, or the stage a failed run failed in.
    #[serde(default)]
    pub stage: Option<String>,
    pub branch: String,
    #[serde(default)]
    pub commit: Option<String>,
    pub trigger: String,
    pub started_at: DateTime<Utc>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub duration_ms: Option<u64>,
    pub counts: CountsView,
    pub durations: DurationsView,
    pub memory_entries_written: u32,
    pub bytes_fetched: u64,
    pub api_calls: u32,
    /// The run whose picture a restore made current again.
    #[serde(default)]
    pub restored_from: Option<String>,
    /// Retention removed rows its picture needs: no longer restorable.
    pub content_pruned: bool,
    #[serde(default)]
    pub error: Option<String>,
}

/// Files of a run by change against the previous completed sync.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CountsView {
    pub added: u64,
    pub modified: u64,
    pub deleted: u64,
    pub unchanged: u64,
    pub skipped: u64,
    pub total: u64,
}

/// Milliseconds per stage, `null` for a stage not measured.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DurationsView {
    #[serde(default)]
    pub prepare_ms: Option<u64>,
    #[serde(default)]
    pub scan_ms: Option<u64>,
    #[serde(default)]
    pub import_ms: Option<u64>,
    #[serde(default)]
    pub finalize_ms: Option<u64>,
}

impl From<&SyncRecord> for RunView {
    fn from(record: &SyncRecord) -> Self {
        RunView {
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
            counts: CountsView {
                added: record.files.added,
                modified: record.files.modified,
                deleted: record.files.deleted,
                unchanged: record.files.unchanged,
                skipped: record.files.skipped,
                total: record.files.total,
            },
            durations: DurationsView {
                prepare_ms: record.durations.prepare_ms,
                scan_ms: record.durations.scan_ms,
                import_ms: record.durations.import_ms,
                finalize_ms: record.durations.finalize_ms,
            },
            memory_entries_written: record.memory_entries_written,
            bytes_fetched: record.bytes_fetched,
            api_calls: record.api_calls,
            restored_from: record.restored_from.map(|id| id.to_string()),
            content_pruned: record.content_pruned,
            error: record.failure.as_ref().map(|f| f.message.clone()),
        }
    }
}

/// One file of a run's picture.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FileView {
    pub path: String,
    pub size: u64,
    /// file, symlink, submodule or lfs.
    pub kind: String,
    pub blob_sha: String,
    /// The git mode in octal, e.g. `100644`.
    pub mode: String,
}

impl From<&ActiveFile> for FileView {
    fn from(file: &ActiveFile) -> Self {
        FileView {
            path: file.path.clone(),
            size: file.size,
            kind: file.kind.as_str().to_string(),
            blob_sha: file.blob_sha.clone(),
            mode: format!("{:o}", file.mode),
        }
    }
}

/// A search answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchView {
    pub query: String,
    /// `text` or `vector`.
    pub mode: String,
    /// The embedding model, for a vector search.
    #[serde(default)]
    pub model: Option<String>,
    pub items: Vec<HitView>,
}

/// One chunk found.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HitView {
    pub path: String,
    pub chunk_index: u32,
    pub start_line: u32,
    pub end_line: u32,
    #[serde(default)]
    pub language: Option<String>,
    /// Cosine similarity, for a vector search.
    #[serde(default)]
    pub score: Option<f64>,
    pub content: String,
}

impl From<MemoryHit> for HitView {
    fn from(hit: MemoryHit) -> Self {
        HitView {
            path: hit.path,
            chunk_index: hit.chunk_index,
            start_line: hit.start_line,
            end_line: hit.end_line,
            language: hit.language,
            score: hit.score,
            content: hit.content,
        }
    }
}

/// A branch of the repository, as the operator last discovered it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BranchView {
    pub name: String,
    /// The branch the resource syncs (`spec.branch`).
    pub tracked: bool,
}

/// The body of `POST .../restore`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestoreRequest {
    pub sync_id: String,
}
