//! The embedding provider a command uses: the endpoint and model given on
//! the command line, or else the ProjectSync's `spec.embedding` with the API
//! key from its Secret (read through the kubeconfig). Builds a client; the
//! cluster path reads the API server.

use std::sync::Arc;

use crate::{
    api::{EmbeddingProvider as ProviderKind, EmbeddingSpec},
    cli::EmbeddingArgs,
    embed::{EmbeddingProvider, build_provider},
};

use super::{CommandError, cluster, read_env, repository::CacheDir};

/// The provider for `project` (`namespace/name`).
pub async fn build_embedder(
    args: &EmbeddingArgs,
    project: &str,
) -> Result<Arc<dyn EmbeddingProvider>, CommandError> {
    match (&args.endpoint, &args.model) {
        (Some(endpoint), Some(model)) => build_from_flags(
            endpoint,
            model,
            args.api_key_env.as_deref(),
            args.batch_size,
        ),
        _ => {
            let client = cluster::connect().await?;
            let obj = cluster::fetch_project_sync(&client, project).await?;
            match &obj.spec.embedding {
                Some(spec) if spec.provider != ProviderKind::None => {}
                _ => return Err(CommandError::NoEmbeddingSpec(project.to_string())),
            }
            let cache = CacheDir::new(None)?;
            Ok(cluster::resolve_project_sync(&client, &obj, cache.path())
                .await?
                .embedder)
        }
    }
}

/// An OpenAI-compatible provider for `endpoint` and `model`, with the key
/// from the variable `api_key_env` names.
pub fn build_from_flags(
    endpoint: &str,
    model: &str,
    api_key_env: Option<&str>,
    batch_size: u32,
) -> Result<Arc<dyn EmbeddingProvider>, CommandError> {
    let api_key = api_key_env
        .map(|var| read_env(var, "--api-key-env"))
        .transpose()?;
    let spec = EmbeddingSpec {
        provider: ProviderKind::OpenAI,
        endpoint: Some(endpoint.to_string()),
        model: Some(model.to_string()),
        secret_ref: None,
        batch_size: i32::try_from(batch_size).unwrap_or(i32::MAX),
        reuse_scope: Default::default(),
    };
    Ok(build_provider(Some(&spec), api_key)?)
}
