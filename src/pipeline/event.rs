//! The events a sync run yields as it goes (the seed's AsyncGenerator items):
//! they feed the resource status, the metrics and the live SSE stream. Pure
//! types, serialized as the SSE payload.

use serde::Serialize;

/// The four stages of a run.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Resolve the commit and the base sync; open the run.
    Prepare,
    /// Diff the tree against the base.
    Scan,
    /// Fetch, chunk, embed and write what changed.
    Import,
    /// Supersede and complete in one transaction; prune history.
    Finalize,
}

impl Stage {
    /// The stage's name, as used in status, metrics and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Prepare => "prepare",
            Stage::Scan => "scan",
            Stage::Import => "import",
            Stage::Finalize => "finalize",
        }
    }
}

/// Files of a run by change against the base sync.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ChangeCounts {
    pub added: u64,
    pub modified: u64,
    pub deleted: u64,
    pub unchanged: u64,
    /// Paths moved with the same content: recorded without refetching.
    pub renamed: u64,
    /// Recorded but not chunked: too large, binary, LFS pointers, symlinks,
    /// submodules, unsafe paths.
    pub skipped: u64,
    /// Files current after the run.
    pub total: u64,
}

/// Milliseconds per stage.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StageTimings {
    pub prepare_ms: u64,
    pub scan_ms: u64,
    pub import_ms: u64,
    pub finalize_ms: u64,
}

impl StageTimings {
    /// Records the duration of `stage`.
    pub fn set(&mut self, stage: Stage, ms: u64) {
        match stage {
            Stage::Prepare => self.prepare_ms = ms,
            Stage::Scan => self.scan_ms = ms,
            Stage::Import => self.import_ms = ms,
            Stage::Finalize => self.finalize_ms = ms,
        }
    }
}

/// What a completed run did.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    pub sync_id: String,
    pub commit: String,
    pub base_commit: Option<String>,
    pub trigger: String,
    pub files: ChangeCounts,
    pub memory_entries: u64,
    pub embeddings_computed: u64,
    pub embeddings_reused: u64,
    pub bytes_fetched: u64,
    pub source_requests: u64,
    pub timings: StageTimings,
}

/// One step of a run.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(
    tag = "event",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum SyncEvent {
    /// The branch still points at the last synced commit: no run.
    Unchanged { commit: String },
    /// A run was opened.
    Started {
        sync_id: String,
        commit: String,
        base_commit: Option<String>,
        trigger: String,
    },
    /// A stage began.
    StageStarted { stage: Stage },
    /// Files done within a stage.
    Progress {
        stage: Stage,
        files_done: u64,
        files_total: u64,
    },
    /// A stage ended.
    StageFinished { stage: Stage, duration_ms: u64 },
    /// The run completed; this is the last event of a run.
    Completed(RunSummary),
    /// The run failed; this is the last event of a run.
    Failed {
        sync_id: Option<String>,
        stage: Stage,
        reason: String,
        message: String,
    },
}

impl SyncEvent {
    /// Whether this event ends a run (or a check that needed no run).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            SyncEvent::Completed(_) | SyncEvent::Failed { .. } | SyncEvent::Unchanged { .. }
        )
    }

    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            SyncEvent::Unchanged { .. } => "unchanged",
            SyncEvent::Started { .. } => "started",
            SyncEvent::StageStarted { .. } => "stageStarted",
            SyncEvent::Progress { .. } => "progress",
            SyncEvent::StageFinished { .. } => "stageFinished",
            SyncEvent::Completed(_) => "completed",
            SyncEvent::Failed { .. } => "failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_with_a_tag_and_camel_case_fields() {
        let event = SyncEvent::Progress {
            stage: Stage::Import,
            files_done: 3,
            files_total: 10,
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"event": "progress", "stage": "import", "filesDone": 3, "filesTotal": 10})
        );
        let done = SyncEvent::Completed(RunSummary {
            sync_id: "s".into(),
            ..Default::default()
        });
        assert_eq!(serde_json::to_value(&done).unwrap()["event"], "completed");
        assert_eq!(serde_json::to_value(&done).unwrap()["syncId"], "s");
        assert!(done.is_terminal());
    }
}
