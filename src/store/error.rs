//! The store's error type, its static categories (metric and condition
//! labels), and the mapping of Postgres constraint violations onto domain
//! errors by constraint name. Pure: no I/O.

use crate::api::conditions::reason;

use super::ids::{FileId, MemoryEntryId, ProjectId, SyncId};
use super::model::SyncStatus;

/// Anything a store operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot connect to postgres")]
    Connect(#[source] sqlx::Error),

    #[error("cannot apply database migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),

    #[error("database error while trying to {op}")]
    Database {
        op: &'static str,
        #[source]
        source: sqlx::Error,
    },

    #[error("project {project} not found")]
    ProjectNotFound { project: ProjectId },

    #[error("sync {sync} not found")]
    SyncNotFound { sync: SyncId },

    #[error("sync {sync} of project {project} is {status}, not running: cannot {op}")]
    SyncNotRunning {
        project: String,
        sync: SyncId,
        status: SyncStatus,
        op: &'static str,
    },

    #[error(
        "concurrent sync on project {project}: {} was based on {} but {}; \
         start again from the latest completed sync",
        describe_run(.sync),
        describe_base(.base),
        describe_latest(.latest)
    )]
    ConcurrentSync {
        project: String,
        /// The run that lost (`None` when refused at begin).
        sync: Option<SyncId>,
        base: Option<SyncId>,
        /// The latest completed run, when known.
        latest: Option<SyncId>,
    },

    #[error("sync {sync} recorded path {path:?} twice")]
    DuplicatePath { sync: SyncId, path: String },

    #[error("sync {sync} cannot use file version {file}: {reason}")]
    FileNotUsable {
        sync: SyncId,
        file: FileId,
        reason: &'static str,
    },

    #[error("invalid embedding for memory entry {entry}: {reason}")]
    InvalidEmbedding {
        entry: MemoryEntryId,
        reason: String,
    },

    #[error("invalid input for sync {sync}: {reason}")]
    InvalidInput { sync: SyncId, reason: String },

    #[error("sync {sync} is {status}: only a completed sync can be {op}")]
    SyncNotCompleted {
        sync: SyncId,
        status: SyncStatus,
        op: &'static str,
    },

    #[error("sync {sync} can no longer be {op}: retention pruned rows its content needs")]
    SyncPruned { sync: SyncId, op: &'static str },

    #[error("syncs {from} and {to} belong to different projects")]
    ProjectMismatch { from: SyncId, to: SyncId },

    #[error("unexpected value {value:?} in column {column}")]
    Corrupt { column: &'static str, value: String },
}

fn describe_run(sync: &Option<SyncId>) -> String {
    match sync {
        Some(sync) => format!("run {sync}"),
        None => "the new run".to_string(),
    }
}

fn describe_base(base: &Option<SyncId>) -> String {
    match base {
        Some(base) => format!("sync {base}"),
        None => "no completed sync (a first sync)".to_string(),
    }
}

fn describe_latest(latest: &Option<SyncId>) -> String {
    match latest {
        Some(latest) => format!("the latest completed sync is {latest}"),
        None => "another run completed on that base first".to_string(),
    }
}

impl StoreError {
    /// Short static category (condition reason, event reason, metric
    /// label): a lost race has its own, as the next attempt resolves it;
    /// everything else the operator meets in the store is one reason, with
    /// the message saying what failed.
    pub fn reason(&self) -> &'static str {
        match self {
            StoreError::ConcurrentSync { .. } => reason::CONCURRENT_SYNC,
            _ => reason::STORE_FAILED,
        }
    }

    /// Whether retrying the same call later may succeed without any change:
    /// lost connections, pool exhaustion, serialization failures, deadlocks,
    /// a restarting server.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Connect(_) => true,
            StoreError::Database { source, .. } => is_transient_sqlx(source),
            StoreError::Migrate(sqlx::migrate::MigrateError::Execute(source)) => {
                is_transient_sqlx(source)
            }
            _ => false,
        }
    }
}

fn is_transient_sqlx(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| is_transient_sqlstate(&code)),
        _ => false,
    }
}

/// Connection exceptions (08), serialization failure and deadlock (40001,
/// 40P01), insufficient resources (53), operator intervention such as a
/// server shutdown (57P01-57P03).
fn is_transient_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(code, "40001" | "40P01" | "57P01" | "57P02" | "57P03")
}

/// The name of the constraint a statement violated, if that is what failed:
/// the key's own name when a partition's copy of it reported the violation.
pub(crate) fn violated_constraint(error: &sqlx::Error) -> Option<&str> {
    match error {
        sqlx::Error::Database(db) => db.constraint().map(key_of_partition_constraint),
        _ => None,
    }
}

/// `repository_files_sync_path_key` for `repository_files_sync_path_key_p07`:
/// the partitions of a partitioned table (0010) name their copies of its
/// keys `<key>_pNN`, and Postgres reports the copy that was violated.
fn key_of_partition_constraint(name: &str) -> &str {
    match name.rsplit_once("_p") {
        Some((key, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => key,
        _ => name,
    }
}

/// Builds the generic mapping for `map_err`: the operation that failed.
pub(crate) fn db(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Database { op, source }
}

/// The path out of a unique-violation detail such as
/// `Key (introduced_sync_id, path)=(<uuid>, src/a.rs) already exists.`
pub(crate) fn duplicate_path_from_detail(detail: &str) -> Option<String> {
    let start = detail.find(")=(")? + 3;
    let end = detail.rfind(") already exists")?;
    let values = detail.get(start..end)?;
    let (_sync, path) = values.split_once(", ")?;
    // Since the tables are partitioned by project (0010) the key ends with
    // the project id; a path may hold ", " itself, the id never does.
    let path = if detail.starts_with("Key (introduced_sync_id, path, project_id)=(") {
        path.rsplit_once(", ")?.0
    } else {
        path
    };
    Some(path.to_string())
}

pub(crate) fn error_detail(error: &sqlx::Error) -> Option<String> {
    match error {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .and_then(|pg| pg.detail().map(str::to_string)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_sync_message_names_project_runs_and_what_to_do() {
        let base = SyncId(uuid::Uuid::nil());
        let error = StoreError::ConcurrentSync {
            project: "ns/app".into(),
            sync: None,
            base: None,
            latest: Some(base),
        };
        assert_eq!(
            error.to_string(),
            "concurrent sync on project ns/app: the new run was based on no completed \
             sync (a first sync) but the latest completed sync is \
             00000000-0000-0000-0000-000000000000; start again from the latest completed sync"
        );
        assert!(matches!(error, StoreError::ConcurrentSync { .. }));
        assert_eq!(error.reason(), "ConcurrentSync");
        assert!(!error.is_transient());
    }

    #[test]
    fn duplicate_path_is_read_from_the_unique_violation_detail() {
        let detail = "Key (introduced_sync_id, path)=(0191e1b2-0000-7000-8000-000000000000, \
                      src/a, b.rs) already exists.";
        assert_eq!(
            duplicate_path_from_detail(detail).as_deref(),
            Some("src/a, b.rs")
        );
        let partitioned = "Key (introduced_sync_id, path, project_id)=(0191e1b2-0000-7000-8000-000000000000, \
                           src/a, b.rs, 42) already exists.";
        assert_eq!(
            duplicate_path_from_detail(partitioned).as_deref(),
            Some("src/a, b.rs")
        );
        assert_eq!(duplicate_path_from_detail("something else"), None);
    }

    #[test]
    fn a_partition_copy_of_a_key_maps_to_the_key() {
        assert_eq!(
            key_of_partition_constraint("repository_files_sync_path_key_p07"),
            "repository_files_sync_path_key"
        );
        assert_eq!(
            key_of_partition_constraint("memory_entries_file_chunk_key_p15"),
            "memory_entries_file_chunk_key"
        );
        for unchanged in [
            "project_syncs_chain_seq_key",
            "project_syncs_previous_sync_id_key",
            "a_p",
            "x_pkey",
        ] {
            assert_eq!(key_of_partition_constraint(unchanged), unchanged);
        }
    }

    #[test]
    fn connection_and_serialization_failures_are_transient() {
        assert!(is_transient_sqlstate("08006"));
        assert!(is_transient_sqlstate("40001"));
        assert!(is_transient_sqlstate("57P01"));
        assert!(!is_transient_sqlstate("23505"));
        assert!(StoreError::Connect(sqlx::Error::PoolTimedOut).is_transient());
        assert!(
            !StoreError::SyncPruned {
                sync: SyncId(uuid::Uuid::nil()),
                op: "restored"
            }
            .is_transient()
        );
    }
}
