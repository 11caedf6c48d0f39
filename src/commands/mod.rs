//! The user commands of the `projectsync` binary (everything but `run`):
//! each reads the store, a repository or the cluster, and prints a result for
//! a terminal (aligned columns) or for a script (`-o json`). Results go to
//! stdout; progress and logs stay on stderr. Errors are one line that says
//! what failed and what to do, with an exit code per kind of failure.

pub mod backfill;
pub mod branches;
pub mod cluster;
pub mod crd_reference;
pub mod embedder;
pub mod history;
pub mod migrate;
pub mod output;
pub mod remote;
pub mod repository;
pub mod restore;
pub mod search;
pub mod sync;
pub mod terminal;

use std::error::Error as _;

use crate::{
    api::conditions::reason,
    controller::{error::Error as ControllerError, validate::SpecError},
    embed::EmbedError,
    pipeline::PipelineError,
    source::SourceError,
    store::StoreError,
};

/// Exit code of a command that failed at run time (store, network, source).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code of a command given wrong arguments (as clap's own).
pub const EXIT_USAGE: u8 = 2;
/// Exit code when what was asked for does not exist (project, sync, resource).
pub const EXIT_NOT_FOUND: u8 = 3;

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
    #[error("{0}")]
    Usage(String),
    #[error("environment variable {var} (named by {flag}) is not set or empty")]
    MissingEnv { var: String, flag: &'static str },
    #[error("no ProjectSync {name} in namespace {namespace}")]
    ProjectSyncNotFound { namespace: String, name: String },
    #[error("ProjectSync {0} has no spec.embedding: pass --endpoint and --model")]
    NoEmbeddingSpec(String),
    #[error(
        "project {project} has no embeddings of model {model:?} on its active entries: \
         run `projectsync backfill-embeddings {project} --endpoint URL --model {model}` first"
    )]
    NoEmbeddings { project: String, model: String },
    #[error(
        "the embeddings of model {model:?} in project {project} have {stored} dimensions but the query's has {query}: \
         embed the query with the same model and endpoint as the stored entries"
    )]
    DimensionMismatch {
        project: String,
        model: String,
        stored: usize,
        query: usize,
    },
    #[error("embedding provider returned {got} vectors for {expected} inputs")]
    EmbeddingCount { expected: usize, got: usize },
    #[error("kubernetes API: cannot {action}")]
    Kube {
        action: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("cannot reach the operator's API at {url}")]
    Remote {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the operator's API answered {status}: {message}")]
    Api { status: u16, message: String },
    #[error(
        "no database: pass --database-url or set DATABASE_URL (or use --server for the operator's API)"
    )]
    NoDatabase,
    #[error("cannot read the kubeconfig")]
    Kubeconfig(#[source] kube::Error),
    #[error("cannot {action}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Resolve(#[from] ControllerError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CommandError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CommandError::BadProjectKey(_)
            | CommandError::BadSyncId(_)
            | CommandError::Usage(_)
            | CommandError::MissingEnv { .. }
            | CommandError::Spec(_)
            | CommandError::NoDatabase
            | CommandError::Api { status: 400, .. }
            | CommandError::NoEmbeddingSpec(_) => EXIT_USAGE,
            CommandError::UnknownProject(_)
            | CommandError::ProjectSyncNotFound { .. }
            | CommandError::WrongProject { .. }
            | CommandError::Api { status: 404, .. }
            | CommandError::Store(
                StoreError::SyncNotFound { .. } | StoreError::ProjectNotFound { .. },
            ) => EXIT_NOT_FOUND,
            _ => EXIT_FAILURE,
        }
    }

    /// What to do about it, when the message itself does not say.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            CommandError::UnknownProject(_) => "check the key: it is the ProjectSync's namespace/name, or --project of `projectsync sync`".into(),
            CommandError::Store(StoreError::Connect(_)) => "check --database-url or DATABASE_URL".into(),
            CommandError::Store(StoreError::Database { .. }) => {
                "is the database migrated? run `projectsync migrate` (the operator does it at start-up)".into()
            }
            CommandError::Store(StoreError::SyncNotCompleted { .. }) => {
                "pick a COMPLETED run from `projectsync history`".into()
            }
            CommandError::Store(StoreError::SyncPruned { .. }) => {
                "retention removed it: raise spec.historyLimit to keep more runs restorable".into()
            }
            CommandError::Kubeconfig(_) => "set KUBECONFIG or run inside a cluster".into(),
            CommandError::Api { status: 401, .. } => {
                "the operator needs a bearer token: pass --token (e.g. `kubectl create token ...`) or use a kubeconfig user with a token".into()
            }
            CommandError::Api { status: 403, .. } => {
                "your identity lacks RBAC for this: reads need get (and list) on projectsyncs, actions need patch".into()
            }
            CommandError::Remote { .. } => {
                "check --server (e.g. `kubectl -n projectsync port-forward svc/projectsync 8080` and --server http://localhost:8080)".into()
            }
            CommandError::Kube { source: kube::Error::Api(status), .. } if status.code == 403 => {
                "your identity lacks RBAC for this: it needs get on projectsyncs and secrets in that namespace".into()
            }
            CommandError::Kube { .. } => "check KUBECONFIG and that the API server is reachable".into(),
            CommandError::ProjectSyncNotFound { .. } => "list them with `kubectl get psync -A`".into(),
            CommandError::Source(e) => source_hint(e.reason())?,
            CommandError::Pipeline(e) => source_hint(e.reason())?,
            CommandError::Embed(EmbedError::AuthFailed { .. }) => {
                "check the key in the variable named by --api-key-env".into()
            }
            _ => return None,
        })
    }

    /// The whole error on one line: the message, its causes (each once) and
    /// the hint.
    pub fn render(&self) -> String {
        let mut line = self.to_string();
        let mut cause = self.source();
        while let Some(error) = cause {
            let text = error.to_string();
            if !line.contains(&text) {
                line.push_str(": ");
                line.push_str(&text);
            }
            cause = error.source();
        }
        let mut line = line.replace('\n', " ");
        if let Some(hint) = self.hint() {
            line.push_str("; ");
            line.push_str(&hint);
        }
        line
    }
}

/// The hint for a source failure, by its reason: the same for GitHub and
/// git where the reason is shared.
fn source_hint(failure: &str) -> Option<String> {
    Some(
        match failure {
            reason::AUTHENTICATION_FAILED
            | reason::BAD_CREDENTIALS
            | reason::ACCESS_DENIED
            | reason::REPOSITORY_NOT_FOUND => {
                "check the repository name and the token (--token-env names the variable that holds it)"
            }
            reason::BRANCH_NOT_FOUND => "list the branches with `projectsync branches`",
            reason::COMMIT_NOT_FOUND => "check that the commit (--commit or spec.commit) exists on the remote",
            reason::RATE_LIMITED | reason::SECONDARY_RATE_LIMITED => "wait for the reset, or pass a token with --token-env for a higher limit",
            _ => return None,
        }
        .to_string(),
    )
}

/// Checks `namespace/name`.
pub fn parse_project_key(key: &str) -> Result<&str, CommandError> {
    match key.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => Ok(key),
        _ => Err(CommandError::BadProjectKey(key.to_string())),
    }
}

/// The value of the environment variable a `--*-env` flag names.
pub fn read_env(var: &str, flag: &'static str) -> Result<String, CommandError> {
    match std::env::var(var) {
        Ok(value) if !value.trim().is_empty() => Ok(value.trim().to_string()),
        _ => Err(CommandError::MissingEnv {
            var: var.to_string(),
            flag,
        }),
    }
}

/// The stored project for `key`, or the error that says how to get one.
pub async fn find_project(
    store: &crate::store::Store,
    key: &str,
) -> Result<crate::store::Project, CommandError> {
    let key = parse_project_key(key)?;
    store
        .find_project(key)
        .await?
        .ok_or_else(|| CommandError::UnknownProject(key.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_keys_are_namespace_slash_name() {
        assert!(parse_project_key("team/app").is_ok());
        for bad in ["app", "/app", "team/", "a/b/c", ""] {
            assert!(
                matches!(parse_project_key(bad), Err(CommandError::BadProjectKey(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn rendering_puts_causes_once_on_one_line_with_the_hint() {
        let error = CommandError::Io {
            action: "create the cache directory /x".into(),
            source: std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "permission denied\n(os error 13)",
            ),
        };
        assert_eq!(
            error.render(),
            "cannot create the cache directory /x: permission denied (os error 13)"
        );
        let error = CommandError::UnknownProject("team/app".into());
        let line = error.render();
        assert!(
            line.starts_with("no project \"team/app\" in the database"),
            "{line}"
        );
        assert!(line.contains("; check the key"), "{line}");
        assert_eq!(error.exit_code(), EXIT_NOT_FOUND);
        assert_eq!(CommandError::Usage("x".into()).exit_code(), EXIT_USAGE);
    }
}
