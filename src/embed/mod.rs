//! Embedding providers (import stage, I/O: HTTP): turn chunk contents into
//! vectors.
//!
//! The pipeline holds one `Arc<dyn EmbeddingProvider>` built by
//! [`build_provider`] from `spec.embedding` and the API key the caller read
//! from the referenced Secret. Two providers sit behind the trait:
//! [`NoEmbeddings`] (the step is skipped: [`EmbeddingProvider::enabled`] is
//! false) and [`OpenAiProvider`], any OpenAI-compatible `/embeddings`
//! endpoint (OpenAI, Ollama, vLLM, TEI), batched and with bounded retries.
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

use crate::api::{EmbeddingProvider as ProviderKind, EmbeddingSpec};

pub use crate::retry::RetryPolicy;
pub use error::{EmbedError, Retry};
pub use openai::{OpenAiConfig, OpenAiProvider};

/// Computes embeddings for a model. Object-safe: the pipeline holds an
/// `Arc<dyn EmbeddingProvider>` and may call it from several tasks.
#[async_trait]
pub trait EmbeddingProvider: Send + Sync + fmt::Debug {
    /// The model name: with the content hash, the key under which a stored
    /// embedding is reused.
    fn model(&self) -> &str;

    /// False for the `None` provider: the pipeline skips embeddings.
    fn enabled(&self) -> bool {
        true
    }

    /// One vector per input, in input order, all of the same dimension.
    /// An empty `inputs` makes no request.
    async fn embed(&self, inputs: &[String]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

/// The provider for "no embeddings". [`EmbeddingProvider::embed`] fails with
/// [`EmbedError::Disabled`] for any input: calling it is a bug in the caller.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoEmbeddings;

#[async_trait]
impl EmbeddingProvider for NoEmbeddings {
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

/// The provider `spec` asks for: [`NoEmbeddings`] without a spec or with
/// provider `None`, otherwise an [`OpenAiProvider`] with `api_key` (which the
/// caller resolved from `spec.secretRef`). Validates; makes no request.
pub fn build_provider(
    spec: Option<&EmbeddingSpec>,
    api_key: Option<String>,
) -> Result<Arc<dyn EmbeddingProvider>, EmbedError> {
    match spec {
        None => Ok(Arc::new(NoEmbeddings)),
        Some(spec) => match spec.provider {
            ProviderKind::None => Ok(Arc::new(NoEmbeddings)),
            ProviderKind::OpenAI => Ok(Arc::new(OpenAiProvider::new(OpenAiConfig::from_spec(
                spec, api_key,
            )?)?)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::SecretKeyRef;

    fn openai_spec() -> EmbeddingSpec {
        EmbeddingSpec {
            provider: ProviderKind::OpenAI,
            endpoint: Some("https://api.openai.com/v1".into()),
            model: Some("text-embedding-3-small".into()),
            secret_ref: None,
            batch_size: 64,
            reuse_scope: Default::default(),
        }
    }

    #[tokio::test]
    async fn no_spec_and_provider_none_build_the_disabled_provider() {
        for spec in [
            None,
            Some(EmbeddingSpec {
                provider: ProviderKind::None,
                ..openai_spec()
            }),
        ] {
            let provider = build_provider(spec.as_ref(), None).unwrap();
            assert!(!provider.enabled());
            assert_eq!(provider.embed(&[]).await.unwrap(), Vec::<Vec<f32>>::new());
            let err = provider.embed(&["x".into()]).await.unwrap_err();
            assert_eq!(err.reason(), "EmbeddingDisabled");
        }
    }

    #[test]
    fn an_openai_spec_builds_a_client_for_its_endpoint_and_model() {
        let provider = build_provider(Some(&openai_spec()), Some("sk-test\n".into())).unwrap();
        assert!(provider.enabled());
        assert_eq!(provider.model(), "text-embedding-3-small");
        let debug = format!("{provider:?}");
        assert!(
            debug.contains("https://api.openai.com/v1/embeddings"),
            "{debug}"
        );
        assert!(!debug.contains("sk-test"), "{debug}");
    }

    #[test]
    fn incomplete_openai_specs_are_refused_with_a_config_reason() {
        let cases: Vec<(EmbeddingSpec, Option<String>, &str)> = vec![
            (
                EmbeddingSpec {
                    endpoint: None,
                    ..openai_spec()
                },
                None,
                "embedding.endpoint is required",
            ),
            (
                EmbeddingSpec {
                    model: Some("  ".into()),
                    ..openai_spec()
                },
                None,
                "embedding.model is required",
            ),
            (
                EmbeddingSpec {
                    batch_size: 0,
                    ..openai_spec()
                },
                None,
                "batchSize must be between 1 and 2048, got 0",
            ),
            (
                EmbeddingSpec {
                    secret_ref: Some(SecretKeyRef {
                        name: "openai".into(),
                        key: "token".into(),
                    }),
                    ..openai_spec()
                },
                None,
                "secretRef openai/token is set but no API key",
            ),
            (openai_spec(), Some(" \n".into()), "API key is empty"),
            (
                openai_spec(),
                Some("sk-\u{7f}bad".into()),
                "not allowed in an HTTP header",
            ),
            (
                EmbeddingSpec {
                    endpoint: Some("ftp://example.com/v1".into()),
                    ..openai_spec()
                },
                None,
                "scheme must be http or https",
            ),
            (
                EmbeddingSpec {
                    endpoint: Some("https://user:pw@example.com/v1".into()),
                    ..openai_spec()
                },
                None,
                "credentials in the URL are not allowed",
            ),
        ];
        for (spec, key, expected) in cases {
            let err = build_provider(Some(&spec), key).unwrap_err();
            assert!(err.to_string().contains(expected), "{err} !~ {expected}");
            assert_eq!(err.reason(), "EmbeddingConfigInvalid", "{err}");
            assert_eq!(err.retry(), Retry::Stalled, "{err}");
            assert!(!err.to_string().contains("pw@"), "{err}");
        }
    }
}
