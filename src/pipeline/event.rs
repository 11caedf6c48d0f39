//! The events a sync run yields as it goes, one per step of the pipeline's
//! stream: they feed the resource status, the metrics and the live SSE
//! stream. Pure types, serialized as the SSE payload.

use serde::{Deserialize, Serialize};

use crate::run::{FileCounts, GitTransfer, ScanChoice, Stage, StageDurations};

/// What a completed run did.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    pub sync_id: String,
    pub commit: String,
    pub base_commit: Option<String>,
    pub trigger: String,
    pub files: FileCounts,
    pub memory_entries: u64,
    pub embeddings_computed: u64,
    pub embeddings_reused: u64,
    pub bytes_fetched: u64,
    pub source_requests: u64,
    /// Every stage is measured by the time a run completes.
    pub timings: StageDurations,
    /// The route the scan took.
    pub scan: Option<ScanChoice>,
    /// What the run's git fetches added to the cache (git sources only).
    pub git_transfer: Option<GitTransfer>,
}

/// One step of a run.
// A handful per run, moved once: boxing the summary buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
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

    #[test]
    fn a_completed_run_carries_every_count_and_every_stage_in_milliseconds() {
        let mut timings = StageDurations::default();
        for stage in [Stage::Prepare, Stage::Scan, Stage::Import, Stage::Finalize] {
            timings.set(stage, 7);
        }
        let done = SyncEvent::Completed(RunSummary {
            files: FileCounts {
                renamed: 1,
                ..Default::default()
            },
            timings,
            ..Default::default()
        });
        let json = serde_json::to_value(&done).unwrap();
        assert_eq!(
            json["files"],
            serde_json::json!({"added": 0, "modified": 0, "deleted": 0, "unchanged": 0, "renamed": 1, "skipped": 0, "total": 0})
        );
        assert_eq!(
            json["timings"],
            serde_json::json!({"prepareMs": 7, "scanMs": 7, "importMs": 7, "finalizeMs": 7})
        );
    }
}
