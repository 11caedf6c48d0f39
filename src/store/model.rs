//! The store's domain types: what callers hand in (projects, runs, files,
//! chunks, completions) and what they get back (run records, active files,
//! diffs, search hits). Pure: no I/O, no Kubernetes types.

use std::fmt;

use chrono::{DateTime, Utc};

use crate::run::{FileCounts, GitTransfer, ScanChoice, Stage, StageDurations};

use super::ids::{ContentHash, EndpointFingerprint, FileId, MemoryEntryId, ProjectId, SyncId};

/// Where a project's code comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProjectSource {
    GitHub { owner: String, repo: String },
    Git { url: String },
}

impl ProjectSource {
    pub fn provider(&self) -> &'static str {
        match self {
            ProjectSource::GitHub { .. } => "github",
            ProjectSource::Git { .. } => "git",
        }
    }
}

/// The identity of what is synced. `key` is unique; for a custom resource it
/// is `"namespace/name"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectIdentity {
    pub key: String,
    pub source: ProjectSource,
    pub branch: String,
}

/// A stored project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub id: ProjectId,
    pub identity: ProjectIdentity,
    pub created_at: DateTime<Utc>,
}

/// What a project's source remembered after its last poll, kept so that
/// a restarted operator polls as cheaply as a running one: the branch head
/// and the provider's validator for it, and whether the last tree read was
/// a walk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceMemory {
    pub head_sha: Option<String>,
    pub head_etag: Option<String>,
    pub tree_walked: bool,
}

/// Lifecycle of a run. PENDING and IN_PROGRESS are live; COMPLETED and
/// FAILED are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SyncStatus {
    Pending,
    InProgress,
    Completed,
    Failed,
}

impl SyncStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncStatus::Pending => "PENDING",
            SyncStatus::InProgress => "IN_PROGRESS",
            SyncStatus::Completed => "COMPLETED",
            SyncStatus::Failed => "FAILED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "PENDING" => SyncStatus::Pending,
            "IN_PROGRESS" => SyncStatus::InProgress,
            "COMPLETED" => SyncStatus::Completed,
            "FAILED" => SyncStatus::Failed,
            _ => return None,
        })
    }
}

impl fmt::Display for SyncStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of tree entry a file row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    File,
    Symlink,
    Submodule,
    Lfs,
}

impl FileKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::File => "file",
            FileKind::Symlink => "symlink",
            FileKind::Submodule => "submodule",
            FileKind::Lfs => "lfs",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "file" => FileKind::File,
            "symlink" => FileKind::Symlink,
            "submodule" => FileKind::Submodule,
            "lfs" => FileKind::Lfs,
            _ => return None,
        })
    }
}

/// A run to begin. `base` is the completed run the caller diffed against
/// (`None` for a project's first sync); it must still be the project's latest
/// completed run when the run begins and when it completes.
#[derive(Debug, Clone)]
pub struct NewSync {
    pub branch: String,
    /// The commit, when already resolved; else set later with `set_commit`.
    pub commit: Option<String>,
    pub base: Option<SyncId>,
    /// Why the run started, e.g. "interval", "spec changed", "restore of <id>".
    pub trigger: String,
}

/// A file version recorded by a run (an added or modified path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFile {
    pub path: String,
    pub blob_sha: String,
    pub size: u64,
    /// The git mode, e.g. `0o100644`.
    pub mode: u32,
    pub kind: FileKind,
}

/// An embedding, the model that produced it and the endpoint that answered
/// (`None`: unknown, and then never reused).
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    pub model: String,
    pub endpoint: Option<EndpointFingerprint>,
    pub vector: Vec<f32>,
}

/// Which projects' stored embeddings a project may reuse
/// (`spec.embedding.reuseScope`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReuseScope {
    /// Only its own (the default): no other tenant's vectors.
    #[default]
    Project,
    /// Those of projects of the same namespace (the part of the key before `/`).
    Namespace,
    /// Those of every project (only when the operator allows it).
    Cluster,
}

/// What a stored embedding must match to be reused for a chunk with the
/// same content hash: the model, the endpoint that computed it, a project in
/// `scope` of `project`, and a run that COMPLETED. (The dimension is checked
/// by the caller against what the endpoint answers now.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingReuse {
    pub project: ProjectId,
    pub scope: ReuseScope,
    pub model: String,
    pub endpoint: EndpointFingerprint,
}

/// A chunk of a file version recorded by the same run.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMemoryEntry {
    /// A file version recorded by this run (`record_files`).
    pub file: FileId,
    pub chunk_index: u32,
    /// 1-based, inclusive.
    pub start_line: u32,
    pub end_line: u32,
    pub language: Option<String>,
    pub content: String,
    pub content_hash: ContentHash,
    pub embedding: Option<Embedding>,
}

/// A path whose content is an existing file version (same blob): a rename,
/// or a copy. The new row reuses the version's chunks and embeddings, copied
/// inside Postgres. For a rename, list the old path in
/// [`Completion::deleted_paths`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rename {
    pub from: FileId,
    pub to_path: String,
}

/// What the pipeline measured. File counts are not part of it: the store
/// computes added / modified / deleted / unchanged itself when completing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunMetrics {
    pub files_skipped: u32,
    pub bytes_fetched: u64,
    pub api_calls: u32,
    pub durations: StageDurations,
    /// What a git source's fetches added to its cache (`None` for others).
    pub git_transfer: Option<GitTransfer>,
}

/// What completing a run needs besides the rows already recorded.
#[derive(Debug, Clone, Default)]
pub struct Completion {
    /// Paths present in the base and gone at this run's commit (none for a
    /// first sync). A path may not be both recorded and deleted.
    pub deleted_paths: Vec<String>,
    pub metrics: RunMetrics,
    /// The route the scan took (`None` for runs without a scan: restores).
    pub scan: Option<ScanChoice>,
}

/// Why a run failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncFailure {
    pub stage: Option<Stage>,
    pub message: String,
}

/// One run, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncRecord {
    pub id: SyncId,
    pub project: ProjectId,
    pub branch: String,
    pub commit: Option<String>,
    pub status: SyncStatus,
    /// The stage a live run is in.
    pub stage: Option<Stage>,
    pub trigger: String,
    pub base: Option<SyncId>,
    /// Set only on completed runs (except a project's first).
    pub previous: Option<SyncId>,
    /// 1, 2, 3... along the chain of completed runs.
    pub chain_seq: Option<u32>,
    pub restored_from: Option<SyncId>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub failure: Option<SyncFailure>,
    pub files: FileCounts,
    /// Rows written so far (live) or in total (final).
    pub files_recorded: u32,
    pub memory_entries_written: u32,
    pub bytes_fetched: u64,
    pub api_calls: u32,
    pub durations: StageDurations,
    /// The route the scan took, once the run completed.
    pub scan: Option<ScanChoice>,
    /// What the run's git fetches added to the cache (git sources only).
    pub git_transfer: Option<GitTransfer>,
    /// Retention deleted rows this run's picture needs: it can no longer be
    /// restored or diffed.
    pub content_pruned: bool,
    /// The install (or process) that started the run; `None` for runs
    /// recorded before owners were.
    pub owner: Option<String>,
}

/// A file of a picture (the latest completed run's, or an earlier one's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveFile {
    pub id: FileId,
    pub path: String,
    pub blob_sha: String,
    pub size: u64,
    pub mode: u32,
    pub kind: FileKind,
}

/// Paths that differ between two completed runs, each list sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncDiff {
    pub from: Option<SyncId>,
    pub to: Option<SyncId>,
    pub added: Vec<String>,
    pub modified: Vec<String>,
    pub deleted: Vec<String>,
}

/// What retention removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Runs whose picture is no longer complete (newly marked).
    pub syncs_pruned: u64,
    pub files_deleted: u64,
    pub memory_entries_deleted: u64,
}

/// What `delete_project` removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeleteReport {
    pub syncs_deleted: u64,
    pub files_deleted: u64,
    pub memory_entries_deleted: u64,
}

/// A chunk found by a search over active memory.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryHit {
    pub id: MemoryEntryId,
    pub file: FileId,
    pub path: String,
    pub chunk_index: u32,
    pub start_line: u32,
    pub end_line: u32,
    pub language: Option<String>,
    pub content: String,
    /// Cosine similarity, for vector search.
    pub score: Option<f64>,
}

/// An active chunk that has no embedding for a model yet (for backfill).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingEmbedding {
    pub id: MemoryEntryId,
    pub content_hash: ContentHash,
    pub content: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_kind_names_round_trip_with_the_schema_checks() {
        for status in [
            SyncStatus::Pending,
            SyncStatus::InProgress,
            SyncStatus::Completed,
            SyncStatus::Failed,
        ] {
            assert_eq!(SyncStatus::parse(status.as_str()), Some(status));
        }
        for kind in [
            FileKind::File,
            FileKind::Symlink,
            FileKind::Submodule,
            FileKind::Lfs,
        ] {
            assert_eq!(FileKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(SyncStatus::parse("completed"), None);
    }
}
