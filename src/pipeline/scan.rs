//! Stage scan: what changed since the base sync → added, modified, deleted,
//! unchanged, renamed; plus what is recorded but not processed (too large,
//! binary-by-kind, symlinks, submodules). Two routes, chosen explicitly by
//! [`scan`] and recorded on the run: the source's change set between the
//! base commit and the new one, with the base rows of only the changed paths
//! ([`build_change_plan`]); or the whole tree of the new commit against the
//! whole base picture ([`build_plan`]), for first syncs, reprocessing and
//! sources that cannot say. Both plans are pure and apply the same per-entry
//! rules; [`scan`] does the store and source I/O.

use std::collections::{HashMap, HashSet};

use crate::{
    api::conditions::reason,
    run::{FileCounts, ScanChoice, Stage},
    source::{ChangeKind, ChangeSet, Changes, EntryKind, RejectedEntry, Source, Tree, TreeEntry},
    store::{ActiveFile, FileId, FileKind, ProjectId, Store},
};

use super::{
    ProcessingInputs, Reprocess,
    error::{FailureKind, PipelineError},
    prepare::Prepared,
};

/// What happens to one added or modified path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Fetch the blob, classify, chunk and embed it.
    Process,
    /// Record the file row only; the reason is counted as skipped.
    RecordOnly(SkipReason),
    /// Same content as an existing version: copy that version's row and
    /// memory entries inside the store, fetch nothing.
    Reuse(FileId),
    /// Same content as an existing version whose embeddings are of another
    /// model: record a new row with that version's chunks, embedded again.
    /// Fetches and chunks nothing.
    Reembed(FileId),
}

/// Why a recorded path gets no memory entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    TooLarge,
    Symlink,
    Submodule,
}

/// One path to record in this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFile {
    pub entry: TreeEntry,
    pub action: Action,
}

impl PlannedFile {
    /// The store's kind for the row (LFS pointers are found at import).
    pub fn file_kind(&self) -> FileKind {
        match self.entry.kind {
            EntryKind::Symlink => FileKind::Symlink,
            EntryKind::Submodule => FileKind::Submodule,
            EntryKind::File | EntryKind::Executable => FileKind::File,
        }
    }
}

/// The scan's result: everything import and finalize need.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub files: Vec<PlannedFile>,
    pub deleted_paths: Vec<String>,
    pub counts: FileCounts,
    /// Tree entries the source refused (unsafe paths, unknown modes), for display.
    pub rejected: Vec<String>,
    /// The route the scan took.
    pub scan: Option<ScanChoice>,
}

/// Diffs `tree` against the base picture `previous`. Paths the filter drops
/// are not part of the mirror (a newly excluded path is deleted). With
/// [`Reprocess::Everything`] every kept path is processed again; with
/// [`Reprocess::Embeddings`] every unchanged text file is re-embedded from
/// its stored chunks; otherwise unchanged paths cost nothing. A path whose
/// blob already has a version is reused (or re-embedded), not refetched.
pub fn build_plan(previous: &[ActiveFile], tree: &Tree, inputs: &ProcessingInputs) -> Plan {
    let previous_by_path: HashMap<&str, &ActiveFile> =
        previous.iter().map(|f| (f.path.as_str(), f)).collect();
    let mut planner = Planner::new(inputs, previous, &tree.rejected);
    let mut kept_paths = HashSet::new();
    for entry in &tree.entries {
        if !inputs.filter.keeps(&entry.path) {
            continue;
        }
        kept_paths.insert(entry.path.as_str());
        planner.plan_entry(entry, previous_by_path.get(entry.path.as_str()).copied());
    }
    let mut plan = planner.plan;
    plan.deleted_paths = previous
        .iter()
        .filter(|f| !kept_paths.contains(f.path.as_str()))
        .map(|f| f.path.clone())
        .collect();
    plan.counts.deleted = plan.deleted_paths.len() as u64;
    plan.counts.total = kept_paths.len() as u64;
    plan
}

/// The same plan as [`build_plan`] from a complete change set, for a run
/// that reprocesses nothing: `base_rows` are the base picture's rows at the
/// changed paths, `reusable` the base rows holding the new blobs, and
/// `base_total` the number of files in the base picture. Unchanged and total
/// are derived from it; nothing else of the base is read.
pub fn build_change_plan(
    base_rows: &[ActiveFile],
    reusable: &[ActiveFile],
    changes: &ChangeSet,
    base_total: u64,
    inputs: &ProcessingInputs,
) -> Plan {
    let base_by_path: HashMap<&str, &ActiveFile> =
        base_rows.iter().map(|f| (f.path.as_str(), f)).collect();
    let mut planner = Planner::new(inputs, reusable, &changes.rejected);
    let mut deleted = Vec::new();
    for change in &changes.changes {
        let old = base_by_path.get(change.path.as_str()).copied();
        match &change.kind {
            ChangeKind::Upsert(entry) if inputs.filter.keeps(&entry.path) => {
                planner.plan_entry(entry, old);
            }
            // Removed, or outside the mirror: gone if the base had it.
            _ => deleted.extend(old.map(|f| f.path.clone())),
        }
    }
    let mut plan = planner.plan;
    plan.counts.deleted = deleted.len() as u64;
    plan.deleted_paths = deleted;
    let counts = &mut plan.counts;
    counts.unchanged = base_total.saturating_sub(counts.modified + counts.deleted);
    counts.total = (base_total + counts.added).saturating_sub(counts.deleted);
    plan
}

/// What both scans share: the rules for one kept entry of the new commit
/// against its base version, and the plan they fill.
struct Planner<'a> {
    inputs: &'a ProcessingInputs,
    /// The first version (in path order) holding each blob, by kind.
    reusable: HashMap<(&'a str, FileKind), FileId>,
    plan: Plan,
}

impl<'a> Planner<'a> {
    fn new(
        inputs: &'a ProcessingInputs,
        candidates: &'a [ActiveFile],
        rejected: &[RejectedEntry],
    ) -> Self {
        let mut reusable = HashMap::new();
        for file in candidates {
            reusable
                .entry((file.blob_sha.as_str(), file.kind))
                .or_insert(file.id);
        }
        let mut plan = Plan {
            rejected: rejected.iter().map(|r| r.path.clone()).collect(),
            ..Plan::default()
        };
        plan.counts.skipped = rejected.len() as u64;
        Planner {
            inputs,
            reusable,
            plan,
        }
    }

    /// Plans `entry` (kept by the filter) against `old`, its path's base
    /// version: counted unchanged, or planned as added or modified with
    /// the action its kind, size and blob call for.
    fn plan_entry(&mut self, entry: &TreeEntry, old: Option<&ActiveFile>) {
        let (inputs, plan) = (self.inputs, &mut self.plan);
        let unchanged = old.is_some_and(|f| f.blob_sha == entry.blob_sha && f.mode == entry.mode);
        // A version processed under other settings cannot be reused as it is.
        let settings_changed =
            inputs.reprocess == Reprocess::Everything || crosses_size_limit(entry, inputs);
        let reembed = inputs.reprocess == Reprocess::Embeddings;
        if unchanged
            && !settings_changed
            && !(reembed && old.is_some_and(|f| has_chunks(f, inputs)))
        {
            plan.counts.unchanged += 1;
            return;
        }
        match old {
            Some(_) => plan.counts.modified += 1,
            None => plan.counts.added += 1,
        }
        let mut planned = PlannedFile {
            entry: entry.clone(),
            action: Action::Process,
        };
        planned.action = match entry.kind {
            EntryKind::Submodule => Action::RecordOnly(SkipReason::Submodule),
            EntryKind::Symlink => Action::RecordOnly(SkipReason::Symlink),
            _ if entry.size.unwrap_or(0) > inputs.max_file_size => {
                Action::RecordOnly(SkipReason::TooLarge)
            }
            _ => match self
                .reusable
                .get(&(entry.blob_sha.as_str(), planned.file_kind()))
            {
                Some(&id) if !settings_changed => {
                    plan.counts.renamed += u64::from(old.is_none());
                    if reembed {
                        Action::Reembed(id)
                    } else {
                        Action::Reuse(id)
                    }
                }
                _ => Action::Process,
            },
        };
        if matches!(planned.action, Action::RecordOnly(_)) {
            plan.counts.skipped += 1;
        }
        plan.files.push(planned);
    }
}

/// Whether the base version of a path may have memory entries (and so
/// embeddings): a regular file within the size limit. Binary files pass too;
/// they just have no chunks to copy.
fn has_chunks(file: &ActiveFile, inputs: &ProcessingInputs) -> bool {
    file.kind == FileKind::File && file.size <= inputs.max_file_size
}

/// Whether `maxFileSize` changed since the base so that this unchanged file
/// is now on the other side of the limit and must be processed again.
fn crosses_size_limit(entry: &TreeEntry, inputs: &ProcessingInputs) -> bool {
    let Some(previous_max) = inputs.previous_max_file_size else {
        return false;
    };
    let size = entry.size.unwrap_or(0);
    (size > previous_max) != (size > inputs.max_file_size)
}

/// The base picture as a tree, so a source that walks subtrees can skip the
/// ones whose hash did not change.
pub fn build_previous_tree(previous: &[ActiveFile]) -> Tree {
    Tree {
        entries: previous
            .iter()
            .filter_map(|f| {
                Some(TreeEntry {
                    path: f.path.clone(),
                    blob_sha: f.blob_sha.clone(),
                    size: (f.kind != FileKind::Submodule).then_some(f.size),
                    mode: f.mode,
                    kind: EntryKind::from_mode(f.mode)?,
                })
            })
            .collect(),
        ..Tree::default()
    }
}

/// Why a run with a base compares whole trees whatever the source can say:
/// its outcome for unchanged files cannot be reused as it is.
fn build_forced_reason(inputs: &ProcessingInputs, forced: bool) -> Option<&'static str> {
    let size_changed = inputs
        .previous_max_file_size
        .is_some_and(|previous| previous != inputs.max_file_size);
    (forced || inputs.reprocess != Reprocess::Nothing || size_changed)
        .then_some(reason::INPUTS_CHANGED)
}

/// Plans the run, choosing the route explicitly: the source's change set
/// when there is a base sync with a commit, nothing is reprocessed
/// (`forced` is false, the inputs are the base's) and the source answers
/// completely; otherwise the whole tree of the run's commit against the
/// base picture, with the reason. The route is recorded on the plan and
/// in the stage's span.
pub async fn scan(
    source: &dyn Source,
    store: &Store,
    project: ProjectId,
    run: &Prepared,
    inputs: &ProcessingInputs,
    forced: bool,
) -> Result<Plan, PipelineError> {
    let fail = |e: FailureKind| PipelineError::new(Stage::Scan, Some(run.sync), e);
    let base = run
        .base
        .as_ref()
        .and_then(|b| Some((b, b.commit.as_deref()?)));
    let fallback = match base {
        None => Some(reason::FIRST_SYNC),
        Some(_) => build_forced_reason(inputs, forced),
    };
    let changes = match (base, fallback) {
        (Some((_, base_commit)), None) => source
            .fetch_changes(base_commit, &run.commit)
            .await
            .map_err(|e| fail(e.into()))?,
        (_, reason) => Changes::Unavailable {
            reason: reason.unwrap_or(reason::FIRST_SYNC),
        },
    };
    let plan = match (changes, base) {
        (Changes::Complete(set), Some((base, _))) => {
            let paths: Vec<String> = set.changes.iter().map(|c| c.path.clone()).collect();
            let base_rows = store
                .active_files_at(project, &paths)
                .await
                .map_err(|e| fail(e.into()))?;
            let blobs: Vec<String> = set
                .changes
                .iter()
                .filter_map(|c| match &c.kind {
                    ChangeKind::Upsert(entry) => Some(entry.blob_sha.clone()),
                    ChangeKind::Removed => None,
                })
                .collect();
            let reusable = store
                .active_files_with_blobs(project, &blobs)
                .await
                .map_err(|e| fail(e.into()))?;
            let mut plan = build_change_plan(&base_rows, &reusable, &set, base.files.total, inputs);
            plan.scan = Some(ScanChoice::change_set());
            plan
        }
        (changes, _) => {
            let reason = match changes {
                Changes::Unavailable { reason } => reason,
                Changes::Complete(_) => reason::FIRST_SYNC,
            };
            let mut plan = scan_full_tree(source, store, project, run, inputs).await?;
            plan.scan = Some(ScanChoice::full_diff(reason));
            plan
        }
    };
    let span = tracing::Span::current();
    if let Some(choice) = &plan.scan {
        span.record("route", choice.route.as_str());
        span.record("reason", choice.reason.as_deref().unwrap_or(""));
    }
    if let Some(first) = plan.rejected.first() {
        tracing::warn!(sync = %run.sync, count = plan.rejected.len(), %first, "tree entries refused (unsafe paths or unknown modes)");
    }
    Ok(plan)
}

/// Reads the base picture of `project` (none for a first sync), fetches the
/// tree of the run's commit (walking only changed subtrees when the source
/// must) and diffs the two.
async fn scan_full_tree(
    source: &dyn Source,
    store: &Store,
    project: ProjectId,
    run: &Prepared,
    inputs: &ProcessingInputs,
) -> Result<Plan, PipelineError> {
    let fail = |e: FailureKind| PipelineError::new(Stage::Scan, Some(run.sync), e);
    let previous = match run.base {
        Some(_) => store
            .active_files(project)
            .await
            .map_err(|e| fail(e.into()))?,
        None => Vec::new(),
    };
    let previous_tree = (!previous.is_empty()).then(|| build_previous_tree(&previous));
    let tree = source
        .fetch_tree(&run.commit, previous_tree.as_ref())
        .await
        .map_err(|e| fail(e.into()))?;
    Ok(build_plan(&previous, &tree, inputs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::filter::PathFilter;

    fn entry(path: &str, sha: &str, size: u64) -> TreeEntry {
        TreeEntry {
            path: path.into(),
            blob_sha: sha.into(),
            size: Some(size),
            mode: 0o100644,
            kind: EntryKind::File,
        }
    }

    fn active(id: i64, path: &str, sha: &str, size: u64) -> ActiveFile {
        ActiveFile {
            id: FileId(id),
            path: path.into(),
            blob_sha: sha.into(),
            size,
            mode: 0o100644,
            kind: FileKind::File,
        }
    }

    fn tree(entries: Vec<TreeEntry>) -> Tree {
        Tree {
            entries,
            ..Tree::default()
        }
    }

    fn inputs() -> ProcessingInputs {
        ProcessingInputs {
            filter: PathFilter::all(),
            max_file_size: 1 << 20,
            previous_max_file_size: Some(1 << 20),
            reprocess: Reprocess::Nothing,
        }
    }

    #[test]
    fn a_first_sync_adds_every_path() {
        let plan = build_plan(
            &[],
            &tree(vec![entry("a", "1", 1), entry("b", "2", 1)]),
            &inputs(),
        );
        assert_eq!((plan.counts.added, plan.counts.total), (2, 2));
        assert!(plan.files.iter().all(|f| f.action == Action::Process));
    }

    #[test]
    fn only_changed_paths_are_planned() {
        let previous = [
            active(1, "same", "s", 1),
            active(2, "edit", "old", 1),
            active(3, "gone", "g", 1),
        ];
        let plan = build_plan(
            &previous,
            &tree(vec![
                entry("same", "s", 1),
                entry("edit", "new", 1),
                entry("new", "n", 1),
            ]),
            &inputs(),
        );
        assert_eq!(
            plan.counts,
            FileCounts {
                added: 1,
                modified: 1,
                deleted: 1,
                unchanged: 1,
                renamed: 0,
                skipped: 0,
                total: 3
            }
        );
        let paths: Vec<_> = plan.files.iter().map(|f| f.entry.path.as_str()).collect();
        assert_eq!(paths, ["edit", "new"]);
        assert_eq!(plan.deleted_paths, ["gone"]);
    }

    #[test]
    fn a_moved_file_is_reused_not_refetched() {
        let previous = [active(7, "old/name.rs", "blob", 10)];
        let plan = build_plan(
            &previous,
            &tree(vec![entry("new/name.rs", "blob", 10)]),
            &inputs(),
        );
        assert_eq!(plan.files[0].action, Action::Reuse(FileId(7)));
        assert_eq!(plan.deleted_paths, ["old/name.rs"]);
        assert_eq!(plan.counts.renamed, 1);
    }

    #[test]
    fn large_files_symlinks_and_submodules_are_recorded_not_processed() {
        let mut link = entry("link", "l", 5);
        link.kind = EntryKind::Symlink;
        link.mode = 0o120000;
        let mut module = entry("vendor/lib", "c", 0);
        module.kind = EntryKind::Submodule;
        module.mode = 0o160000;
        module.size = None;
        let plan = build_plan(
            &[],
            &tree(vec![entry("big.bin", "b", 2 << 20), link, module]),
            &inputs(),
        );
        let actions: Vec<_> = plan.files.iter().map(|f| f.action.clone()).collect();
        assert_eq!(
            actions,
            [
                Action::RecordOnly(SkipReason::TooLarge),
                Action::RecordOnly(SkipReason::Symlink),
                Action::RecordOnly(SkipReason::Submodule)
            ]
        );
        assert_eq!(plan.counts.skipped, 3);
    }

    #[test]
    fn a_newly_excluded_path_is_deleted_and_a_newly_included_one_added() {
        let previous = [
            active(1, "src/a.rs", "a", 1),
            active(2, "docs/x.md", "x", 1),
        ];
        let mut with_filter = inputs();
        with_filter.filter =
            PathFilter::build(&["src/**".into(), "README.md".into()], &[]).unwrap();
        let plan = build_plan(
            &previous,
            &tree(vec![
                entry("src/a.rs", "a", 1),
                entry("docs/x.md", "x", 1),
                entry("README.md", "r", 1),
            ]),
            &with_filter,
        );
        assert_eq!(plan.deleted_paths, ["docs/x.md"]);
        assert_eq!(
            (plan.counts.added, plan.counts.unchanged, plan.counts.total),
            (1, 1, 2)
        );
    }

    #[test]
    fn raising_max_file_size_reprocesses_only_files_that_cross_it() {
        let previous = [active(1, "small", "s", 10), active(2, "medium", "m", 500)];
        let mut raised = inputs();
        raised.previous_max_file_size = Some(100);
        raised.max_file_size = 1000;
        let plan = build_plan(
            &previous,
            &tree(vec![entry("small", "s", 10), entry("medium", "m", 500)]),
            &raised,
        );
        let paths: Vec<_> = plan.files.iter().map(|f| f.entry.path.as_str()).collect();
        assert_eq!(paths, ["medium"]);
        assert_eq!(
            plan.files[0].action,
            Action::Process,
            "same blob, but it was never chunked"
        );
    }

    #[test]
    fn a_chunker_change_reprocesses_everything() {
        let previous = [active(1, "a", "a", 1)];
        let mut all = inputs();
        all.reprocess = Reprocess::Everything;
        let plan = build_plan(&previous, &tree(vec![entry("a", "a", 1)]), &all);
        assert_eq!(plan.files[0].action, Action::Process);
        assert_eq!(plan.counts.modified, 1);
    }

    #[test]
    fn a_model_change_reembeds_text_files_from_their_chunks_and_keeps_the_rest() {
        let mut big = active(3, "big", "b", 2 << 20);
        big.kind = FileKind::File;
        let mut lfs = active(4, "model.bin", "l", 10);
        lfs.kind = FileKind::Lfs;
        let previous = [active(1, "a", "a", 1), active(2, "b", "b2", 1), big, lfs];
        let mut model = inputs();
        model.reprocess = Reprocess::Embeddings;
        let plan = build_plan(
            &previous,
            &tree(vec![
                entry("a", "a", 1),
                entry("b", "b3", 1),
                entry("big", "b", 2 << 20),
                entry("model.bin", "l", 10),
                entry("copy", "a", 1),
            ]),
            &model,
        );
        let actions: Vec<_> = plan
            .files
            .iter()
            .map(|f| (f.entry.path.as_str(), f.action.clone()))
            .collect();
        assert_eq!(
            actions,
            [
                ("a", Action::Reembed(FileId(1))),
                ("b", Action::Process),
                ("copy", Action::Reembed(FileId(1)))
            ],
            "an edited file is processed; unchanged and copied text is re-embedded"
        );
        assert_eq!(
            (
                plan.counts.modified,
                plan.counts.added,
                plan.counts.unchanged
            ),
            (2, 1, 2)
        );
    }
}
