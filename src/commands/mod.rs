//! The user commands of the `projectsync` binary (everything but `run`):
//! each reads the store (and where needed the cluster) and prints a result
//! for a terminal. Output goes to stdout; logs stay on stderr.

pub mod restore;

/// Errors of user commands: what failed, with what the user can do.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{0:?} is not a project: use namespace/name of a ProjectSync")]
    BadProjectKey(String),
    #[error("no project {0:?} in the database (has it synced at least once?)")]
    UnknownProject(String),
    #[error("{0:?} is not a sync id (a UUID, as shown by `projectsync history`)")]
    BadSyncId(String),
    #[error("sync {sync} belongs to another project than {project}")]
    WrongProject { sync: String, project: String },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Checks `namespace/name`.
pub fn parse_project_key(key: &str) -> Result<&str, CommandError> {
    match key.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => Ok(key),
        _ => Err(CommandError::BadProjectKey(key.to_string())),
    }
}
