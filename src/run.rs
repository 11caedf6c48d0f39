//! What a sync run is made of, in the one vocabulary the pipeline that runs
//! it, the store that records it and the status that shows it share: its
//! four stages, the route its scan took, its files by change, and the time
//! each stage took. Pure
//! types, no I/O. They live apart from all three so that none of those
//! layers has to depend on another for them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The four stages of a run, in order.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
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
    /// The stage's name, as used in status, metrics, events and the
    /// `project_syncs.stage` / `failed_stage` columns.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Prepare => "prepare",
            Stage::Scan => "scan",
            Stage::Import => "import",
            Stage::Finalize => "finalize",
        }
    }

    /// The stage named `s` (the inverse of [`Stage::as_str`]).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "prepare" => Stage::Prepare,
            "scan" => Stage::Scan,
            "import" => Stage::Import,
            "finalize" => Stage::Finalize,
            _ => return None,
        })
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a run's scan found what changed.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub enum ScanRoute {
    /// The source's change set between the base commit and the new one:
    /// cost follows the changed paths.
    ChangeSet,
    /// The whole tree of the new commit against the base picture.
    FullDiff,
}

impl ScanRoute {
    /// The route's name, as stored in `project_syncs.scan_route` and shown
    /// in status and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ScanRoute::ChangeSet => "ChangeSet",
            ScanRoute::FullDiff => "FullDiff",
        }
    }

    /// The route named `s` (the inverse of [`ScanRoute::as_str`]).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ChangeSet" => Some(ScanRoute::ChangeSet),
            "FullDiff" => Some(ScanRoute::FullDiff),
            _ => None,
        }
    }
}

/// The route a run's scan took and, for a full diff, why (one of the
/// scan reasons of [`crate::api::conditions::reason`]).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ScanChoice {
    pub route: ScanRoute,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl ScanChoice {
    /// The change-set route.
    pub fn change_set() -> Self {
        ScanChoice {
            route: ScanRoute::ChangeSet,
            reason: None,
        }
    }

    /// The full-diff route, for `reason`.
    pub fn full_diff(reason: &str) -> Self {
        ScanChoice {
            route: ScanRoute::FullDiff,
            reason: Some(reason.to_string()),
        }
    }
}

/// What a git source's fetches added to its cache during a run.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GitTransfer {
    pub objects: u64,
    pub bytes: u64,
}

/// Files of a run by change against its base sync.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FileCounts {
    pub added: u64,
    pub modified: u64,
    pub deleted: u64,
    pub unchanged: u64,
    /// Of `added`, paths whose content an earlier version already had (a
    /// move): recorded without refetching. Counted by the scan and not
    /// stored, so it is 0 in runs read back from the store.
    pub renamed: u64,
    /// Recorded but not chunked: too large, binary, LFS pointers, symlinks,
    /// submodules, unsafe paths.
    pub skipped: u64,
    /// Files current after the run.
    pub total: u64,
}

/// Milliseconds per stage; `None` for a stage that was not measured (the
/// stages of a run that failed before completing, and finalize in the store,
/// which completes the run before finalize ends).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StageDurations {
    pub prepare_ms: Option<u64>,
    pub scan_ms: Option<u64>,
    pub import_ms: Option<u64>,
    pub finalize_ms: Option<u64>,
}

impl StageDurations {
    /// Records the duration of `stage`.
    pub fn set(&mut self, stage: Stage, ms: u64) {
        *self.slot(stage) = Some(ms);
    }

    /// The duration of `stage`, when measured.
    pub fn get(self, stage: Stage) -> Option<u64> {
        match stage {
            Stage::Prepare => self.prepare_ms,
            Stage::Scan => self.scan_ms,
            Stage::Import => self.import_ms,
            Stage::Finalize => self.finalize_ms,
        }
    }

    /// The measured stages together.
    pub fn total_ms(self) -> u64 {
        [
            self.prepare_ms,
            self.scan_ms,
            self.import_ms,
            self.finalize_ms,
        ]
        .into_iter()
        .flatten()
        .sum()
    }

    fn slot(&mut self, stage: Stage) -> &mut Option<u64> {
        match stage {
            Stage::Prepare => &mut self.prepare_ms,
            Stage::Scan => &mut self.scan_ms,
            Stage::Import => &mut self.import_ms,
            Stage::Finalize => &mut self.finalize_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_route_names_round_trip_with_the_schema_check() {
        for route in [ScanRoute::ChangeSet, ScanRoute::FullDiff] {
            assert_eq!(ScanRoute::parse(route.as_str()), Some(route));
        }
        assert_eq!(ScanRoute::parse("changeset"), None);
    }

    #[test]
    fn stage_names_round_trip_with_the_schema_checks() {
        for stage in [Stage::Prepare, Stage::Scan, Stage::Import, Stage::Finalize] {
            assert_eq!(Stage::parse(stage.as_str()), Some(stage));
        }
        assert_eq!(Stage::parse("Scan"), None);
    }

    #[test]
    fn measured_durations_serialize_as_milliseconds_per_stage() {
        let mut durations = StageDurations::default();
        for (stage, ms) in [
            (Stage::Prepare, 1),
            (Stage::Scan, 2),
            (Stage::Import, 3),
            (Stage::Finalize, 4),
        ] {
            durations.set(stage, ms);
        }
        assert_eq!(
            serde_json::to_value(durations).unwrap(),
            serde_json::json!({"prepareMs": 1, "scanMs": 2, "importMs": 3, "finalizeMs": 4})
        );
        assert_eq!(
            (durations.get(Stage::Scan), durations.total_ms()),
            (Some(2), 10)
        );
    }
}
