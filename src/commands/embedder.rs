//! The embedder a command uses: the endpoint and model given on the command
//! line, or else the ProjectSync's `spec.embedding` with the API key from its
//! Secret (read through the kubeconfig). Builds a client; the cluster path
//! reads the API server.

use std::sync::Arc;

use crate::{
    api::EmbeddingProvider as ProviderKind,
    cli::EmbeddingArgs,
    embed::{
        EmbedError, Embedder, EmbedderConfig, OpenAiConfig, build_embedder as build_from_config,
    },
};

use super::{CommandError, cluster, read_env, repository::CacheDir};

/// The embedder for `project` (`namespace/name`).
pub async fn build_embedder(
    args: &EmbeddingArgs,
    project: &str,
) -> Result<Arc<dyn Embedder>, CommandError> {
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

/// An OpenAI-compatible embedder for `endpoint` and `model`, with the key
/// from the variable `api_key_env` names.
pub fn build_from_flags(
    endpoint: &str,
    model: &str,
    api_key_env: Option<&str>,
    batch_size: u32,
) -> Result<Arc<dyn Embedder>, CommandError> {
    let api_key = api_key_env
        .map(|var| read_env(var, "--api-key-env"))
        .transpose()?;
    if endpoint.trim().is_empty() {
        return Err(EmbedError::MissingEndpoint.into());
    }
    let config = OpenAiConfig {
        api_key,
        batch_size: usize::try_from(batch_size).unwrap_or(usize::MAX),
        // The user's own command, from the user's own network position.
        egress: crate::egress::EgressPolicy::unrestricted(),
        ..OpenAiConfig::new(endpoint.trim(), model.trim())
    };
    Ok(build_from_config(EmbedderConfig::OpenAi(config))?)
}
