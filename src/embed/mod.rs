//! Embedders (import stage, I/O: HTTP): turn chunk contents into vectors.
//!
//! The pipeline holds one `Arc<dyn Embedder>` built by [`build_embedder`]
//! from an [`EmbedderConfig`], this module's own description of what to call:
//! the controller builds it from the resource's `spec.embedding` and the API
//! key in the referenced Secret, the CLI from its flags. Two embedders sit
//! behind the trait: [`NoEmbeddings`] (the step is skipped:
//! [`Embedder::enabled`] is false) and [`OpenAiEmbedder`], any
//! OpenAI-compatible `/embeddings` endpoint (OpenAI, Ollama, vLLM, TEI),
//! batched and with bounded retries.
//!
//! Every error has a short static [`EmbedError::reason`] for condition
//! reasons, event reasons and metric labels, and says what to do next
//! ([`EmbedError::retry`]); backoff and `Retry-After` are the crate's one
//! [`crate::retry`]. The pure parts (the JSON and its checks) are tested
//! beside the code.

mod error;
mod openai;
mod wire;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

pub use crate::retry::RetryPolicy;
pub use error::{EmbedError, Retry};
pub use openai::{OpenAiConfig, OpenAiEmbedder};

/// Computes embeddings for a model. Object-safe: the pipeline holds an
/// `Arc<dyn Embedder>` and may call it from several tasks.
#[async_trait]
pub trait Embedder: Send + Sync + fmt::Debug {
    /// The model name: with the content hash, the key under which a stored
    /// embedding is reused.
    fn model(&self) -> &str;

    /// False for [`NoEmbeddings`]: the pipeline skips embeddings.
    fn enabled(&self) -> bool {
        true
    }

    /// One vector per input, in input order, all of the same dimension.
    /// An empty `inputs` makes no request.
    async fn embed(&self, inputs: &[String]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

/// The embedder for "no embeddings". [`Embedder::embed`] fails with
/// [`EmbedError::Disabled`] for any input: calling it is a bug in the caller.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoEmbeddings;

#[async_trait]
impl Embedder for NoEmbeddings {
    fn model(&self) -> &str {
        "none"
    }

    fn enabled(&self) -> bool {
        false
    }

    async fn embed(&self, inputs: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if inputs.is_empty() {
            Ok(Vec::new())
        } else {
            Err(EmbedError::Disabled)
        }
    }
}

/// Which embedder to build. Kept apart from the CRD's `spec.embedding` so
/// that callers without a resource (the CLI) describe an endpoint directly.
#[derive(Clone, Debug, Default)]
// Built once per resource and consumed at once: boxing the OpenAI variant
// would save nothing that matters.
#[allow(clippy::large_enum_variant)]
pub enum EmbedderConfig {
    /// No embeddings: [`NoEmbeddings`].
    #[default]
    Disabled,
    /// An OpenAI-compatible endpoint: [`OpenAiEmbedder`].
    OpenAi(OpenAiConfig),
}

/// The embedder `config` describes. Validates; makes no request.
pub fn build_embedder(config: EmbedderConfig) -> Result<Arc<dyn Embedder>, EmbedError> {
    match config {
        EmbedderConfig::Disabled => Ok(Arc::new(NoEmbeddings)),
        EmbedderConfig::OpenAi(config) => Ok(Arc::new(OpenAiEmbedder::new(config)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_disabled_config_builds_an_embedder_that_is_skipped() {
        let embedder = build_embedder(EmbedderConfig::Disabled).unwrap();
        assert!(!embedder.enabled());
        assert_eq!(embedder.embed(&[]).await.unwrap(), Vec::<Vec<f32>>::new());
        let err = embedder.embed(&["x".into()]).await.unwrap_err();
        assert_eq!(err.reason(), "EmbeddingDisabled");
    }

    #[test]
    fn an_openai_config_builds_a_client_for_its_endpoint_and_model() {
        let config = OpenAiConfig {
            api_key: Some("sk-test".into()),
            ..OpenAiConfig::new("https://api.openai.com/v1", "text-embedding-3-small")
        };
        let embedder = build_embedder(EmbedderConfig::OpenAi(config)).unwrap();
        assert!(embedder.enabled());
        assert_eq!(embedder.model(), "text-embedding-3-small");
        let debug = format!("{embedder:?}");
        assert!(
            debug.contains("https://api.openai.com/v1/embeddings"),
            "{debug}"
        );
        assert!(!debug.contains("sk-test"), "{debug}");
    }
}
