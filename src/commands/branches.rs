//! `projectsync branches`: the branches of a repository and their head
//! commits, either named with flags or read from a ProjectSync's spec (with
//! the credentials of its Secret). I/O against the provider and, for a
//! ProjectSync, the API server; with `--server`, the branches the operator
//! last discovered, through its API (no Secret read by the user).

use serde::Serialize;

use crate::{
    cli::BranchesArgs,
    controller::dereference::describe_repository,
    http::api::model::{BranchView, Page, ProjectSyncView},
};

use super::{
    CommandError, cluster,
    output::{Table, emit},
    remote::{Remote, resource_path},
    repository::{CacheDir, build_source},
};

/// What `branches` prints.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BranchesReport {
    /// The repository, as the source describes itself (`github:owner/repo`).
    pub repository: String,
    pub branches: Vec<BranchRow>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BranchRow {
    pub name: String,
    pub commit: String,
    /// The branch the ProjectSync syncs (`spec.branch`).
    pub tracked: bool,
}

/// Lists the branches.
pub async fn run(args: &BranchesArgs) -> Result<(), CommandError> {
    if let (Some(key), Some(remote)) = (&args.project, Remote::connect(&args.server).await?) {
        let path = resource_path(key)?;
        let view: ProjectSyncView = remote.get(&path, &[]).await?;
        let page: Page<BranchView> = remote.get(&format!("{path}/branches"), &[]).await?;
        let report = BranchesReport {
            repository: describe_repository(&view.spec.source),
            branches: page
                .items
                .into_iter()
                .map(|b| BranchRow {
                    name: b.name,
                    // The operator keeps names only; heads are the source's.
                    commit: "-".into(),
                    tracked: b.tracked,
                })
                .collect(),
        };
        return emit(args.output.format, &report, build_table);
    }
    let cache = CacheDir::new(args.repository.cache_dir.as_ref())?;
    let (source, tracked, repository) = match &args.project {
        Some(key) => {
            let client = cluster::connect().await?;
            let obj = cluster::fetch_project_sync(&client, key).await?;
            let resolved = cluster::resolve_project_sync(&client, &obj, cache.path()).await?;
            let repository = describe_repository(&obj.spec.source);
            (resolved.source, Some(obj.spec.branch.clone()), repository)
        }
        None => {
            let (source, _) = build_source(&args.repository, &cache)?;
            let repository = source.describe();
            (source, None, repository)
        }
    };
    let branches = source.fetch_branches().await?;
    let report = BranchesReport {
        repository,
        branches: branches
            .into_iter()
            .map(|b| BranchRow {
                tracked: tracked.as_deref() == Some(b.name.as_str()),
                name: b.name,
                commit: b.commit_sha,
            })
            .collect(),
    };
    emit(args.output.format, &report, build_table)
}

/// `BRANCH COMMIT`, plus `SYNCED` (a `*` on `spec.branch`) for a ProjectSync.
fn build_table(report: &BranchesReport) -> String {
    let with_tracked = report.branches.iter().any(|b| b.tracked);
    let mut table = Table::new(if with_tracked {
        &["BRANCH", "COMMIT", "SYNCED"]
    } else {
        &["BRANCH", "COMMIT"]
    });
    for branch in &report.branches {
        table.row(vec![
            branch.name.clone(),
            branch.commit.clone(),
            if branch.tracked {
                "*".into()
            } else {
                String::new()
            },
        ]);
    }
    table.render()
}
