//! Reading a ProjectSync and its Secrets through the user's kubeconfig, and
//! building the source and embedder it describes exactly as the operator
//! does (the controller's dereference step). I/O against the API server.

use std::path::Path;

use kube::{Api, Client};

use crate::{
    api::ProjectSync,
    controller::{
        SourceSettings,
        dereference::{Resolved, resolve},
    },
};

use super::{CommandError, parse_project_key};

/// A client from `KUBECONFIG` (or the in-cluster service account).
pub async fn connect() -> Result<Client, CommandError> {
    Client::try_default()
        .await
        .map_err(CommandError::Kubeconfig)
}

/// The ProjectSync `namespace/name`.
pub async fn fetch_project_sync(client: &Client, key: &str) -> Result<ProjectSync, CommandError> {
    let key = parse_project_key(key)?;
    let (namespace, name) = key.split_once('/').unwrap_or_default();
    let api: Api<ProjectSync> = Api::namespaced(client.clone(), namespace);
    api.get_opt(name)
        .await
        .map_err(|source| CommandError::Kube {
            action: "read the ProjectSync",
            source,
        })?
        .ok_or_else(|| CommandError::ProjectSyncNotFound {
            namespace: namespace.into(),
            name: name.into(),
        })
}

/// The source and embedder of `obj`, with the credentials of its Secrets.
/// Git sources keep their cache under `cache_dir`. `file://` URLs are
/// allowed: on the user's machine they read the user's own files.
pub async fn resolve_project_sync(
    client: &Client,
    obj: &ProjectSync,
    cache_dir: &Path,
) -> Result<Resolved, CommandError> {
    let settings = SourceSettings {
        cache_dir: cache_dir.to_path_buf(),
        allow_file_urls: true,
        git_cache: None,
        git_helpers: crate::source::git::GitHelpers::default(),
        max_tree_entries: crate::source::tree::DEFAULT_TREE_ENTRIES_CEILING,
        fetch_budget: crate::pipeline::FetchBudget::default(),
        // The user's own command, from the user's own network position.
        egress: crate::egress::EgressPolicy::unrestricted(),
    };
    Ok(resolve(client, obj, &settings).await?)
}
