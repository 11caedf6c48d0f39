//! What the operator reports back: phase, kstatus-style conditions, the last
//! completed sync and a bounded history. Pure types, written only by the
//! controller's status writer. A run's counts and durations are the
//! [`crate::run`] types in the CRD's serialized shape.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::run;

/// Observed state of a ProjectSync.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProjectSyncStatus {
    /// The `metadata.generation` the status was last computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// A one-word summary for humans: Pending, Syncing, Synced, Failed,
    /// Suspended or Restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// Ready, Reconciling and Stalled, following the Kubernetes API conventions
    /// (kstatus), so `kubectl wait --for=condition=Ready`, Flux and Argo CD
    /// understand them. Abnormal conditions exist only while true.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The repository being synced: `owner/repo` on GitHub, or the git URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,

    /// The commit of the last completed sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_synced_commit: Option<String>,

    /// When the branch was last checked, whether or not it had changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checked_time: Option<Time>,

    /// The last value of the `projectsync.dev/requested-at` annotation that was
    /// handled, so a requested sync runs once per value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_requested_at: Option<String>,

    /// The last value of the `projectsync.dev/reindex` annotation that was
    /// handled, so a full re-import runs once per value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reindex_at: Option<String>,

    /// The last completed sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync: Option<SyncSummary>,

    /// Recent runs, newest first, at most `spec.historyLimit`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<SyncSummary>,

    /// Progress of the run in progress, absent between runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,

    /// Branches of the repository (at most 100), as last discovered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub branches: Vec<String>,

    /// The inputs that produced the last completed sync (as Flux's `observed*`
    /// fields): when they change, the next run reprocesses what they affect
    /// even if the commit did not move.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_inputs: Option<ObservedInputs>,
}

/// The processing inputs of a completed sync.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ObservedInputs {
    /// `spec.include` at the time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// `spec.exclude` at the time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// `spec.maxFileSize` in bytes.
    pub max_file_size: i64,
    /// The chunker's version and settings.
    pub chunker: String,
    /// The embedding model, when embeddings were computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_model: Option<String>,
}

/// A one-word summary of where a ProjectSync stands.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Accepted, no run yet.
    Pending,
    /// A run is in progress; `progress.stage` says which stage.
    Syncing,
    /// The last run completed; the mirror matches `lastSyncedCommit`.
    Synced,
    /// The last run failed; the previous completed sync stays current.
    Failed,
    /// `spec.suspend` is true.
    Suspended,
    /// `spec.restore` holds the mirror at an earlier sync; no polls or runs
    /// until it is removed.
    Restored,
}

/// One sync run, as shown in `lastSync` and `history`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SyncSummary {
    /// The run's id in Postgres (`project_syncs.id`).
    pub id: String,
    /// The commit synced.
    pub commit: String,
    /// The first 7 characters of `commit`, for `kubectl get`.
    pub short_commit: String,
    /// COMPLETED or FAILED.
    pub result: String,
    /// What started the run: interval, spec change, request annotation, restore, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// When the run started.
    pub started_at: Time,
    /// When the run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Files by change against the previous completed sync.
    pub files: FileCounts,
    /// Time spent in each pipeline stage, in milliseconds.
    #[serde(default)]
    pub durations: StageDurations,
    /// How the scan found what changed: from the source's change set, or by
    /// comparing the whole tree with the previous sync (and why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan: Option<ScanSummary>,
    /// What the run's git fetches brought into the operator's cache (git
    /// sources only): a fetch after a sync sends only new objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetched: Option<FetchedObjects>,
    /// Why the run failed, with the stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The route a run's scan took.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ScanSummary {
    /// `ChangeSet` (only the changed paths were read) or `FullDiff` (the
    /// whole tree was compared with the previous sync).
    pub route: String,
    /// Why a `FullDiff` ran: FirstSync, InputsChanged, BaseNotInCache,
    /// UnrelatedHistory or ChangesIncomplete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Objects and bytes a git fetch added to the cache.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FetchedObjects {
    /// Git objects received (commits, trees, blobs).
    pub objects: i64,
    /// Bytes they take in the cache (the packs and loose objects added).
    pub bytes: i64,
}

impl From<&run::ScanChoice> for ScanSummary {
    fn from(choice: &run::ScanChoice) -> Self {
        ScanSummary {
            route: choice.route.as_str().to_string(),
            reason: choice.reason.clone(),
        }
    }
}

impl From<&run::GitTransfer> for FetchedObjects {
    fn from(transfer: &run::GitTransfer) -> Self {
        let n = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        FetchedObjects {
            objects: n(transfer.objects),
            bytes: n(transfer.bytes),
        }
    }
}

/// Files of one run by change type.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FileCounts {
    /// New paths.
    pub added: i64,
    /// Paths whose content changed.
    pub modified: i64,
    /// Paths that are gone.
    pub deleted: i64,
    /// Paths carried over without being fetched.
    pub unchanged: i64,
    /// Paths recorded but not processed (too large, binary, excluded content).
    #[serde(default)]
    pub skipped: i64,
    /// Files current after the run.
    pub total: i64,
}

/// Milliseconds per pipeline stage.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StageDurations {
    /// Resolving the commit and the base sync.
    pub prepare_ms: i64,
    /// Diffing the tree against the base.
    pub scan_ms: i64,
    /// Fetching, chunking and writing changed files.
    pub import_ms: i64,
    /// Completing the run in one transaction.
    pub finalize_ms: i64,
}

/// The CRD's counts are signed and have no `renamed` (renames show as added).
impl From<&run::FileCounts> for FileCounts {
    fn from(counts: &run::FileCounts) -> Self {
        let n = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        FileCounts {
            added: n(counts.added),
            modified: n(counts.modified),
            deleted: n(counts.deleted),
            unchanged: n(counts.unchanged),
            skipped: n(counts.skipped),
            total: n(counts.total),
        }
    }
}

/// The CRD's durations are required: a stage not measured shows as 0.
impl From<&run::StageDurations> for StageDurations {
    fn from(durations: &run::StageDurations) -> Self {
        let ms = |ms: Option<u64>| ms.map_or(0, |ms| i64::try_from(ms).unwrap_or(i64::MAX));
        StageDurations {
            prepare_ms: ms(durations.prepare_ms),
            scan_ms: ms(durations.scan_ms),
            import_ms: ms(durations.import_ms),
            finalize_ms: ms(durations.finalize_ms),
        }
    }
}

/// Where a run in progress stands.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// The run's id.
    pub sync_id: String,
    /// prepare, scan, import or finalize.
    pub stage: String,
    /// Files processed so far in this stage.
    pub files_done: i64,
    /// Files this stage will process.
    pub files_total: i64,
    /// When the run started.
    pub started_at: Time,
}
