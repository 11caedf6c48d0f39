use super::*;

fn url(endpoint: &str) -> String {
    build_embeddings_url(endpoint).unwrap().to_string()
}

#[test]
fn embeddings_is_appended_to_the_endpoint_once() {
    assert_eq!(
        url("https://api.openai.com/v1"),
        "https://api.openai.com/v1/embeddings"
    );
    assert_eq!(
        url("https://api.openai.com/v1/"),
        "https://api.openai.com/v1/embeddings"
    );
    assert_eq!(
        url("http://ollama:11434/v1/embeddings"),
        "http://ollama:11434/v1/embeddings"
    );
    assert_eq!(url(" http://tei.local "), "http://tei.local/embeddings");
}

#[test]
fn a_query_string_is_kept_after_the_path() {
    assert_eq!(
        url("https://gw.example.com/openai/v1?api-version=2024-02-01#frag"),
        "https://gw.example.com/openai/v1/embeddings?api-version=2024-02-01"
    );
}

#[test]
fn endpoints_that_cannot_serve_embeddings_are_refused() {
    for (endpoint, detail) in [
        ("api.openai.com/v1", "not a URL"),
        ("unix:///run/embed.sock", "the scheme must be http or https"),
        ("file:///etc/passwd", "the scheme must be http or https"),
    ] {
        match build_embeddings_url(endpoint) {
            Err(EmbedError::InvalidEndpoint { detail: d, .. }) => {
                assert_eq!(d, detail, "{endpoint}")
            }
            other => panic!("{endpoint}: {other:?}"),
        }
    }
}

#[test]
fn credentials_in_the_endpoint_never_reach_the_message() {
    let err = build_embeddings_url("https://user:s3cret@example.com/v1").unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("credentials in the URL are not allowed"),
        "{message}"
    );
    assert!(
        !message.contains("s3cret") && !message.contains("user"),
        "{message}"
    );
}

#[test]
fn the_api_key_is_trimmed_and_never_shown_in_debug_output() {
    let spec = EmbeddingSpec {
        provider: crate::api::EmbeddingProvider::OpenAI,
        endpoint: Some("http://127.0.0.1:9/v1".into()),
        model: Some(" nomic-embed-text ".into()),
        secret_ref: None,
        batch_size: 8,
        reuse_scope: Default::default(),
    };
    let config = OpenAiConfig::from_spec(&spec, Some("  sk-abc\n".into())).unwrap();
    assert_eq!(config.api_key.as_deref(), Some("sk-abc"));
    assert_eq!(config.model, "nomic-embed-text");
    assert_eq!(config.batch_size, 8);
    assert!(!format!("{config:?}").contains("sk-abc"));
    let provider = OpenAiProvider::new(config).unwrap();
    assert!(!format!("{provider:?}").contains("sk-abc"));
    assert_eq!(provider.model(), "nomic-embed-text");
}

#[test]
fn batch_sizes_outside_the_crd_range_are_refused() {
    for batch_size in [0, 2049] {
        let config = OpenAiConfig {
            batch_size,
            ..OpenAiConfig::new("http://127.0.0.1:9/v1", "m")
        };
        let err = OpenAiProvider::new(config).unwrap_err();
        assert_eq!(err.reason(), "EmbeddingConfigInvalid", "{err}");
    }
}

#[tokio::test]
async fn no_inputs_make_no_request() {
    // Nothing listens on port 9 (discard) here; a request would fail.
    let provider = OpenAiProvider::new(OpenAiConfig::new("http://127.0.0.1:9/v1", "m")).unwrap();
    assert_eq!(provider.embed(&[]).await.unwrap(), Vec::<Vec<f32>>::new());
}
