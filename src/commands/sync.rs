//! `projectsync sync --once`: runs the diff-aware pipeline for one repository
//! into a database, without a cluster: the same prepare → scan → import →
//! finalize the operator runs, so a later `sync --once` (or `history`,
//! `search`, `restore`) sees the same chain. Progress goes to stderr (bars on
//! a terminal, one line per stage otherwise); the summary to stdout. I/O
//! against the source, the store and the embedding endpoint.

use std::{io::Write, sync::Arc};

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;

use crate::{
    chunk::ChunkerConfig,
    cli::{OutputFormat, SyncArgs},
    controller::validate::{SpecError, parse_max_file_size},
    embed::{Embedder, NoEmbeddings},
    pipeline::{
        EmbeddingReusePolicy, FetchBudget, Outcome, Pipeline, ProcessingInputs, Reprocess,
        RunSummary, Step, SyncEvent, SyncRequest, filter::PathFilter,
    },
    store::{EndpointFingerprint, ProjectIdentity, ReuseScope, Store},
};

use super::{
    CommandError,
    embedder::build_from_flags,
    output::{emit, human_duration, render_fields},
    parse_project_key,
    repository::{CacheDir, build_source},
    terminal::Progress,
};

/// What `sync --once` prints.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncReport {
    pub project: String,
    pub repository: String,
    pub branch: String,
    /// `completed` or `unchanged` (the commit was already synced).
    pub outcome: &'static str,
    pub commit: String,
    /// The run, when there was one.
    pub summary: Option<RunSummary>,
}

pub async fn run(args: &SyncArgs) -> Result<(), CommandError> {
    if !args.once {
        return Err(CommandError::Usage(
            "sync needs --once: continuous syncing is the operator's job (`projectsync run`)"
                .into(),
        ));
    }
    let key = parse_project_key(&args.project)?.to_string();
    let max_file_size = parse_max_file_size(&IntOrString::String(args.max_file_size.clone()))
        .ok_or_else(|| SpecError::MaxFileSize {
            value: args.max_file_size.clone(),
        })?;
    let filter = PathFilter::build(&args.include, &args.exclude).map_err(SpecError::from)?;
    let embedder: Arc<dyn Embedder> = match (&args.embedding_endpoint, &args.embedding_model) {
        (Some(endpoint), Some(model)) => build_from_flags(
            endpoint,
            model,
            args.embedding_api_key_env.as_deref(),
            args.embedding_batch_size,
        )?,
        _ => Arc::new(NoEmbeddings),
    };
    let cache = CacheDir::new(args.repository.cache_dir.as_ref())?;
    let (source, project_source) = build_source(&args.repository, &cache)?;
    let repository = source.describe();

    // Its own owner: no operator's recovery fails this run, and this
    // process recovers none of theirs.
    let store = Store::connect_with(args.database.url()?, args.database.limits())
        .await?
        .with_owner(&format!("sync-once/{}", uuid::Uuid::new_v4()));
    // Idempotent, under the same advisory lock the operator takes.
    store.migrate().await?;
    let project = store
        .ensure_project(&ProjectIdentity {
            key: key.clone(),
            source: project_source,
            branch: args.branch.clone(),
        })
        .await?;

    let request = SyncRequest {
        project,
        branch: args.branch.clone(),
        pinned_commit: args.commit.clone(),
        head_cache: None,
        trigger: "cli sync --once".into(),
        force: args.force,
        inputs: ProcessingInputs {
            filter,
            max_file_size,
            previous_max_file_size: None,
            reprocess: if args.force {
                Reprocess::Everything
            } else {
                Reprocess::Nothing
            },
        },
    };
    let pipeline = Pipeline {
        source,
        store: store.clone(),
        chunker: ChunkerConfig::default(),
        embedder,
        // Only the project's own embeddings, from the same endpoint.
        reuse: EmbeddingReusePolicy {
            endpoint: args
                .embedding_endpoint
                .as_deref()
                .map(EndpointFingerprint::of_url),
            scope: ReuseScope::Project,
        },
        budget: FetchBudget::default(),
    };
    let outcome = follow(pipeline, request, args.output.format).await?;
    let report = match outcome {
        Outcome::Unchanged { commit, .. } => SyncReport {
            project: key,
            repository,
            branch: args.branch.clone(),
            outcome: "unchanged",
            commit,
            summary: None,
        },
        Outcome::Completed {
            summary, record, ..
        } => {
            crate::pipeline::finalize::apply_retention(
                &store,
                project,
                record.id,
                args.history_limit,
            )
            .await;
            SyncReport {
                project: key,
                repository,
                branch: args.branch.clone(),
                outcome: "completed",
                commit: summary.commit.clone(),
                summary: Some(summary),
            }
        }
    };
    emit(args.output.format, &report, build_summary)
}

/// Drives the pipeline, showing its progress on stderr.
async fn follow(
    pipeline: Pipeline,
    request: SyncRequest,
    format: OutputFormat,
) -> Result<Outcome, CommandError> {
    let progress = Progress::bar("prepare", 0);
    // Without a terminal, one line per stage on stderr (not for -o json,
    // whose consumers want stderr for errors only).
    let lines = !progress.is_visible() && format == OutputFormat::Table;
    let mut steps = std::pin::pin!(pipeline.run(request));
    while let Some(step) = steps.next().await {
        match step {
            Step::Done(result) => {
                progress.finish();
                return Ok(result?);
            }
            Step::Event(event) => match event {
                SyncEvent::Started {
                    sync_id,
                    commit,
                    base_commit,
                    ..
                } if lines => {
                    let base = base_commit
                        .map(|b| format!(" on top of {}", &b[..b.len().min(12)]))
                        .unwrap_or_default();
                    eprint_line(&format!(
                        "sync {sync_id}: commit {}{base}",
                        &commit[..commit.len().min(12)]
                    ));
                }
                SyncEvent::StageStarted { stage } => {
                    progress.set_prefix(stage.as_str());
                    progress.set_length(0);
                }
                SyncEvent::Progress {
                    files_done,
                    files_total,
                    ..
                } => {
                    progress.set_length(files_total);
                    progress.set_position(files_done);
                }
                SyncEvent::StageFinished { stage, duration_ms } if lines => {
                    eprint_line(&format!(
                        "{:>9} done in {}",
                        stage.as_str(),
                        human_duration(duration_ms)
                    ));
                }
                _ => {}
            },
        }
    }
    // The stream always ends with Done; an early end means it was dropped.
    Err(CommandError::Usage(
        "the sync ended without an outcome".into(),
    ))
}

fn eprint_line(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

fn build_summary(report: &SyncReport) -> String {
    let Some(summary) = &report.summary else {
        return format!(
            "{} is already synced at {} ({} {}): nothing to do (--force runs anyway)\n",
            report.project, report.commit, report.repository, report.branch
        );
    };
    let files = &summary.files;
    let timings = &summary.timings;
    let mut fields: Vec<(&str, String)> = Vec::new();
    let mut add = |field: &'static str, value: String| fields.push((field, value));
    add("project", report.project.clone());
    add(
        "repository",
        format!("{} ({})", report.repository, report.branch),
    );
    add("sync", summary.sync_id.clone());
    add(
        "commit",
        match &summary.base_commit {
            Some(base) => format!("{} (base {})", summary.commit, &base[..base.len().min(12)]),
            None => format!("{} (first sync)", summary.commit),
        },
    );
    add(
        "files",
        format!(
            "{} added, {} modified, {} deleted, {} unchanged, {} renamed, {} skipped; {} in total",
            files.added,
            files.modified,
            files.deleted,
            files.unchanged,
            files.renamed,
            files.skipped,
            files.total
        ),
    );
    add("memory entries", summary.memory_entries.to_string());
    add(
        "embeddings",
        format!(
            "{} computed, {} reused",
            summary.embeddings_computed, summary.embeddings_reused
        ),
    );
    add(
        "fetched",
        format!(
            "{} bytes, {} source request(s)",
            summary.bytes_fetched, summary.source_requests
        ),
    );
    add(
        "durations",
        format!(
            "prepare {}, scan {}, import {}, finalize {}",
            human_duration(timings.prepare_ms.unwrap_or(0)),
            human_duration(timings.scan_ms.unwrap_or(0)),
            human_duration(timings.import_ms.unwrap_or(0)),
            human_duration(timings.finalize_ms.unwrap_or(0))
        ),
    );
    render_fields(&fields)
}
