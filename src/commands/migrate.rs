//! `projectsync migrate`: applies the database migrations under the same
//! advisory lock the operator takes at start-up, then reports which versions
//! the database has. I/O against the store.

use serde::Serialize;

use crate::{cli::MigrateArgs, store::Store};

use super::{
    CommandError,
    output::{emit, render_fields},
};

/// What `migrate` prints.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MigrateReport {
    /// Versions applied before this run.
    pub already_applied: Vec<i64>,
    /// Versions this run applied.
    pub newly_applied: Vec<i64>,
}

pub async fn run(args: &MigrateArgs) -> Result<(), CommandError> {
    let store = Store::connect_with(args.database.url()?, args.database.limits()).await?;
    // A fresh database has no bookkeeping table yet: nothing applied.
    let before = store.applied_migrations().await.unwrap_or_default();
    store.migrate().await?;
    let after = store.applied_migrations().await?;
    let report = MigrateReport {
        newly_applied: after
            .iter()
            .copied()
            .filter(|v| !before.contains(v))
            .collect(),
        already_applied: before,
    };
    emit(args.output.format, &report, |r| {
        let list = |versions: &[i64]| {
            if versions.is_empty() {
                "none".to_string()
            } else {
                versions
                    .iter()
                    .map(|v| format!("{v:04}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        render_fields(&[
            ("applied now", list(&r.newly_applied)),
            ("already applied", list(&r.already_applied)),
        ])
    })
}
