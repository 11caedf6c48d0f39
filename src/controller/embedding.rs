//! The embedding part of the dereference step (pure): turns the resource's
//! `spec.embedding`, with the API key read from its Secret, into the
//! [`EmbedderConfig`] the embed module builds from. The embed module knows
//! nothing of the CRD; the CRD's rules for a usable spec live here.

use crate::{
    api::{EmbeddingProvider, EmbeddingSpec},
    embed::{EmbedError, EmbedderConfig, OpenAiConfig},
};

/// The embedder `spec` asks for: disabled without a spec or with provider
/// `None`, otherwise an OpenAI-compatible endpoint with `api_key`, which the
/// caller resolved from `spec.secretRef` (surrounding whitespace, such as
/// the newline of `echo key | kubectl create secret`, removed).
pub fn build_embedder_config(
    spec: Option<&EmbeddingSpec>,
    api_key: Option<String>,
) -> Result<EmbedderConfig, EmbedError> {
    let Some(spec) = spec else {
        return Ok(EmbedderConfig::Disabled);
    };
    match spec.provider {
        EmbeddingProvider::None => return Ok(EmbedderConfig::Disabled),
        EmbeddingProvider::OpenAI => {}
    }
    let endpoint = non_blank(spec.endpoint.as_deref()).ok_or(EmbedError::MissingEndpoint)?;
    let model = non_blank(spec.model.as_deref()).ok_or(EmbedError::MissingModel)?;
    let batch_size = usize::try_from(spec.batch_size)
        .ok()
        .filter(|n| (1..=OpenAiConfig::MAX_BATCH_SIZE).contains(n))
        .ok_or(EmbedError::InvalidBatchSize {
            got: spec.batch_size.into(),
            max: OpenAiConfig::MAX_BATCH_SIZE,
        })?;
    let api_key = match (api_key, &spec.secret_ref) {
        (Some(key), _) => Some(key.trim().to_string()),
        (None, Some(secret)) => {
            return Err(EmbedError::MissingApiKey {
                secret: secret.name.clone(),
                key: secret.key.clone(),
            });
        }
        (None, None) => None,
    };
    if api_key.as_deref() == Some("") {
        return Err(EmbedError::EmptyApiKey);
    }
    Ok(EmbedderConfig::OpenAi(OpenAiConfig {
        api_key,
        batch_size,
        ..OpenAiConfig::new(endpoint, model)
    }))
}

fn non_blank(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::SecretKeyRef;
    use crate::embed::{Embedder, Retry, build_embedder};

    fn build(
        spec: Option<&EmbeddingSpec>,
        api_key: Option<String>,
    ) -> Result<std::sync::Arc<dyn Embedder>, EmbedError> {
        build_embedder(build_embedder_config(spec, api_key)?)
    }

    fn openai_spec() -> EmbeddingSpec {
        EmbeddingSpec {
            provider: EmbeddingProvider::OpenAI,
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
                provider: EmbeddingProvider::None,
                ..openai_spec()
            }),
        ] {
            let provider = build(spec.as_ref(), None).unwrap();
            assert!(!provider.enabled());
            assert_eq!(provider.embed(&[]).await.unwrap(), Vec::<Vec<f32>>::new());
            let err = provider.embed(&["x".into()]).await.unwrap_err();
            assert_eq!(err.reason(), "EmbeddingDisabled");
        }
    }

    #[test]
    fn an_openai_spec_builds_a_client_for_its_endpoint_and_model() {
        let provider = build(Some(&openai_spec()), Some("sk-test\n".into())).unwrap();
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
                    reuse_scope: Default::default(),
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
            let err = build(Some(&spec), key).unwrap_err();
            assert!(err.to_string().contains(expected), "{err} !~ {expected}");
            assert_eq!(err.reason(), "EmbeddingConfigInvalid", "{err}");
            assert_eq!(err.retry(), Retry::Stalled, "{err}");
            assert!(!err.to_string().contains("pw@"), "{err}");
        }
    }

    #[test]
    fn the_api_key_is_trimmed_and_never_shown_in_debug_output() {
        let spec = EmbeddingSpec {
            provider: EmbeddingProvider::OpenAI,
            endpoint: Some("http://127.0.0.1:9/v1".into()),
            model: Some(" nomic-embed-text ".into()),
            secret_ref: None,
            batch_size: 8,
            reuse_scope: Default::default(),
        };
        let EmbedderConfig::OpenAi(config) =
            build_embedder_config(Some(&spec), Some("  sk-abc\n".into())).unwrap()
        else {
            panic!("an OpenAI spec builds an OpenAI config");
        };
        assert_eq!(config.api_key.as_deref(), Some("sk-abc"));
        assert_eq!(config.model, "nomic-embed-text");
        assert_eq!(config.batch_size, 8);
        assert!(!format!("{config:?}").contains("sk-abc"));
        let provider = crate::embed::OpenAiEmbedder::new(config).unwrap();
        assert!(!format!("{provider:?}").contains("sk-abc"));
        assert_eq!(provider.model(), "nomic-embed-text");
    }
}
