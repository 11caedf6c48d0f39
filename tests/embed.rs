//! The OpenAI-compatible embeddings client against a local stand-in server
//! (tests/support/embed_server.rs): batching, ordering, the bearer key,
//! retries with backoff and `Retry-After`, timeouts, and a specific error
//! with a reason and a retry class for every failure. Loopback only; needs
//! neither Postgres nor Kubernetes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use projectsync::api::{EmbeddingProvider as ProviderKind, EmbeddingSpec};
use projectsync::controller::embedding::build_embedder_config;
use projectsync::embed::{
    EmbedError, Embedder, OpenAiConfig, OpenAiEmbedder, Retry, RetryPolicy, build_embedder,
};
use support::embed_server::{DIMENSION, EmbedServer, Mode, fake_embedding};

fn inputs(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("fn chunk_{i}() {{}}")).collect()
}

/// Retries with short delays, so a test that exhausts them stays fast.
fn quick_retries(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        attempts,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(40),
    }
}

fn config(server: &EmbedServer) -> OpenAiConfig {
    OpenAiConfig {
        batch_size: 4,
        request_timeout: Duration::from_secs(5),
        retry: quick_retries(3),
        max_retry_after: Duration::from_secs(5),
        // The test server listens on loopback.
        egress: projectsync::egress::EgressPolicy::allow_loopback(),
        ..OpenAiConfig::new(server.endpoint(), "test-embed-small")
    }
}

fn client(config: OpenAiConfig) -> OpenAiEmbedder {
    OpenAiEmbedder::new(config).expect("valid config")
}

fn expected_vectors(inputs: &[String]) -> Vec<Vec<f32>> {
    inputs.iter().map(|t| fake_embedding(t)).collect()
}

#[tokio::test]
async fn every_input_is_embedded_in_order_across_batches() {
    let server = EmbedServer::start().await;
    let provider = client(config(&server));
    let texts = inputs(10);

    let vectors = provider.embed(&texts).await.unwrap();

    assert_eq!(vectors, expected_vectors(&texts));
    assert!(vectors.iter().all(|v| v.len() == DIMENSION));
    let requests = server.requests();
    let batches: Vec<usize> = requests.iter().map(|r| r.inputs.len()).collect();
    assert_eq!(batches, vec![4, 4, 2]);
    assert!(requests.iter().all(|r| r.model == "test-embed-small"));
    let sent: Vec<String> = requests.into_iter().flat_map(|r| r.inputs).collect();
    assert_eq!(sent, texts);
    assert_eq!(provider.dimension(), Some(DIMENSION));
}

#[tokio::test]
async fn no_inputs_make_no_request() {
    let server = EmbedServer::start().await;
    let vectors = client(config(&server)).embed(&[]).await.unwrap();
    assert!(vectors.is_empty());
    assert_eq!(server.request_count(), 0);
}

#[tokio::test]
async fn the_api_key_is_sent_as_a_bearer_token_and_omitted_without_one() {
    let server = EmbedServer::start().await;
    client(config(&server)).embed(&inputs(1)).await.unwrap();
    let keyed = OpenAiConfig {
        api_key: Some("sk-local".into()),
        ..config(&server)
    };
    client(keyed).embed(&inputs(1)).await.unwrap();

    let auth: Vec<Option<String>> = server
        .requests()
        .into_iter()
        .map(|r| r.authorization)
        .collect();
    assert_eq!(auth, vec![None, Some("Bearer sk-local".to_string())]);
}

#[tokio::test]
async fn a_wrong_api_key_stalls_with_auth_failed_and_is_not_retried() {
    let server = EmbedServer::start().await;
    server.require_api_key("sk-right");
    let provider = client(OpenAiConfig {
        api_key: Some("sk-wrong".into()),
        ..config(&server)
    });

    let err = provider.embed(&inputs(3)).await.unwrap_err();

    assert!(
        matches!(err, EmbedError::AuthFailed { status: 401, .. }),
        "{err:?}"
    );
    assert_eq!(err.reason(), "EmbeddingAuthFailed");
    assert_eq!(err.retry(), Retry::Stalled);
    // The endpoint's own words are not repeated (it is whatever the tenant
    // names): only the status and the body's size.
    assert!(
        !err.to_string().contains("Incorrect API key provided")
            && err.to_string().contains("-byte body not shown"),
        "{err}"
    );
    assert!(!err.to_string().contains("sk-wrong"), "{err}");
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn a_forbidden_answer_is_an_auth_failure_too() {
    let server = EmbedServer::start().await;
    server.set_mode(Mode::Status(403));
    let err = client(config(&server)).embed(&inputs(1)).await.unwrap_err();
    assert!(
        matches!(err, EmbedError::AuthFailed { status: 403, .. }),
        "{err:?}"
    );
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn a_wrong_endpoint_path_is_reported_as_not_found() {
    let server = EmbedServer::start().await;
    let provider = client(OpenAiConfig {
        endpoint: server.endpoint().replace("/v1", "/v2"),
        ..config(&server)
    });

    let err = provider.embed(&inputs(1)).await.unwrap_err();

    assert!(matches!(err, EmbedError::NotFound { .. }), "{err:?}");
    assert_eq!(err.reason(), "EmbeddingNotFound");
    assert_eq!(err.retry(), Retry::Stalled);
    assert!(err.to_string().contains("\"test-embed-small\""), "{err}");
}

#[tokio::test]
async fn a_bad_request_is_rejected_without_retrying() {
    let server = EmbedServer::start().await;
    server.set_mode(Mode::Status(400));
    let err = client(config(&server)).embed(&inputs(2)).await.unwrap_err();
    assert!(
        matches!(err, EmbedError::Rejected { status: 400, .. }),
        "{err:?}"
    );
    assert_eq!(err.reason(), "EmbeddingRequestRejected");
    assert_eq!(err.retry(), Retry::Stalled);
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn server_errors_are_retried_until_the_endpoint_recovers() {
    let server = EmbedServer::start().await;
    server.script([Mode::Status(500), Mode::Status(502)], Mode::Ok);
    let texts = inputs(3);

    let vectors = client(config(&server)).embed(&texts).await.unwrap();

    assert_eq!(vectors, expected_vectors(&texts));
    assert_eq!(server.request_count(), 3);
}

#[tokio::test]
async fn server_errors_beyond_the_retry_budget_fail_as_transient() {
    let server = EmbedServer::start().await;
    server.set_mode(Mode::Status(503));

    let err = client(config(&server)).embed(&inputs(6)).await.unwrap_err();

    assert!(
        matches!(
            err,
            EmbedError::ServerError {
                status: 503,
                attempts: 3,
                retry_at: None,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.reason(), "EmbeddingServerError");
    assert_eq!(err.retry(), Retry::Transient);
    // The first batch used up its attempts; the second was never sent.
    assert_eq!(server.request_count(), 3);
}

#[tokio::test]
async fn a_rate_limit_waits_for_retry_after_then_succeeds() {
    let server = EmbedServer::start().await;
    server.script(
        [Mode::RateLimited {
            retry_after: "1".into(),
        }],
        Mode::Ok,
    );
    let texts = inputs(2);
    let started = Instant::now();

    let vectors = client(config(&server)).embed(&texts).await.unwrap();

    // The backoff alone would have waited at most 40 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(vectors, expected_vectors(&texts));
    assert_eq!(server.request_count(), 2);
}

#[tokio::test]
async fn a_retry_after_beyond_the_client_limit_is_handed_to_the_controller() {
    let server = EmbedServer::start().await;
    server.set_mode(Mode::RateLimited {
        retry_after: "3600".into(),
    });
    let started = Instant::now();

    let err = client(config(&server)).embed(&inputs(1)).await.unwrap_err();

    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(err.reason(), "EmbeddingRateLimited");
    let Retry::WaitUntil(at) = err.retry() else {
        panic!("expected WaitUntil, got {:?} for {err}", err.retry());
    };
    let wait = (at - Utc::now()).num_seconds();
    assert!((3590..=3600).contains(&wait), "{wait}");
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn rate_limits_without_retry_after_back_off_and_stay_transient() {
    let server = EmbedServer::start().await;
    server.set_mode(Mode::Status(429));

    let err = client(config(&server)).embed(&inputs(1)).await.unwrap_err();

    assert!(
        matches!(
            err,
            EmbedError::RateLimited {
                attempts: 3,
                retry_at: None,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.retry(), Retry::Transient);
    assert_eq!(server.request_count(), 3);
}

#[tokio::test]
async fn an_exhausted_quota_stalls_without_retrying() {
    let server = EmbedServer::start().await;
    server.set_mode(Mode::QuotaExhausted);
    let err = client(config(&server)).embed(&inputs(1)).await.unwrap_err();
    assert_eq!(err.reason(), "EmbeddingQuotaExceeded");
    assert_eq!(err.retry(), Retry::Stalled);
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn a_response_with_the_wrong_count_is_refused_without_retrying() {
    let server = EmbedServer::start().await;
    server.set_mode(Mode::WrongCount);

    let err = client(config(&server)).embed(&inputs(3)).await.unwrap_err();

    assert!(
        matches!(
            err,
            EmbedError::CountMismatch {
                expected: 3,
                got: 2,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.reason(), "EmbeddingResponseInvalid");
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn vectors_of_mixed_dimensions_in_a_batch_are_refused() {
    let server = EmbedServer::start().await;
    server.set_mode(Mode::MixedDimensions);

    let err = client(config(&server)).embed(&inputs(3)).await.unwrap_err();

    assert!(
        matches!(
            err,
            EmbedError::DimensionMismatch {
                expected: DIMENSION,
                index: 2,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_change_of_dimension_between_batches_is_refused() {
    let server = EmbedServer::start().await;
    server.script([Mode::Ok], Mode::OtherDimension);

    let err = client(config(&server)).embed(&inputs(6)).await.unwrap_err();

    assert!(
        matches!(
            err,
            EmbedError::DimensionMismatch {
                expected: DIMENSION,
                index: 4,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_body_that_is_not_json_is_reported_with_its_start() {
    let server = EmbedServer::start().await;
    server.set_mode(Mode::Garbage);
    let err = client(config(&server)).embed(&inputs(1)).await.unwrap_err();
    assert!(
        matches!(err, EmbedError::MalformedResponse { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("<html>"), "{err}");
    assert_eq!(err.reason(), "EmbeddingResponseInvalid");
}

#[tokio::test]
async fn a_slow_answer_times_out_and_is_retried() {
    let server = EmbedServer::start().await;
    server.script([Mode::Slow(Duration::from_secs(2))], Mode::Ok);
    let provider = client(OpenAiConfig {
        request_timeout: Duration::from_millis(300),
        ..config(&server)
    });
    let texts = inputs(2);

    let vectors = provider.embed(&texts).await.unwrap();

    assert_eq!(vectors, expected_vectors(&texts));
    assert_eq!(server.request_count(), 2);
}

#[tokio::test]
async fn an_endpoint_that_stays_slow_fails_with_a_timeout_after_bounded_attempts() {
    let server = EmbedServer::start().await;
    server.set_mode(Mode::Slow(Duration::from_secs(5)));
    let provider = client(OpenAiConfig {
        request_timeout: Duration::from_millis(200),
        retry: quick_retries(2),
        ..config(&server)
    });
    let started = Instant::now();

    let err = provider.embed(&inputs(1)).await.unwrap_err();

    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(err, EmbedError::Timeout { attempts: 2, .. }),
        "{err:?}"
    );
    assert_eq!(err.reason(), "EmbeddingTimeout");
    assert_eq!(err.retry(), Retry::Transient);
    assert_eq!(server.request_count(), 2);
}

#[tokio::test]
async fn an_unreachable_endpoint_fails_after_bounded_attempts() {
    // A port that was free a moment ago: nothing listens there now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let provider = client(OpenAiConfig {
        retry: quick_retries(3),
        egress: projectsync::egress::EgressPolicy::allow_loopback(),
        ..OpenAiConfig::new(format!("http://127.0.0.1:{port}/v1"), "m")
    });

    let err = provider.embed(&inputs(1)).await.unwrap_err();

    assert!(
        matches!(err, EmbedError::Unreachable { attempts: 3, .. }),
        "{err:?}"
    );
    assert_eq!(err.reason(), "EmbeddingEndpointUnreachable");
    assert_eq!(err.retry(), Retry::Transient);
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

#[tokio::test]
async fn a_provider_built_from_the_spec_is_shared_by_concurrent_tasks() {
    let server = EmbedServer::start().await;
    server.require_api_key("sk-spec");
    let spec = EmbeddingSpec {
        provider: ProviderKind::OpenAI,
        endpoint: Some(server.endpoint()),
        model: Some("test-embed-small".into()),
        secret_ref: None,
        batch_size: 5,
        reuse_scope: Default::default(),
    };
    let mut config = build_embedder_config(Some(&spec), Some("sk-spec\n".into())).unwrap();
    // The operator sets its egress policy; the test server is on loopback.
    if let projectsync::embed::EmbedderConfig::OpenAi(openai) = &mut config {
        openai.egress = projectsync::egress::EgressPolicy::allow_loopback();
    }
    let provider: Arc<dyn Embedder> = build_embedder(config).unwrap();
    assert!(provider.enabled());
    assert_eq!(provider.model(), "test-embed-small");

    let tasks: Vec<_> = (0..4)
        .map(|task| {
            let provider = provider.clone();
            tokio::spawn(async move {
                let texts: Vec<String> = inputs(10).iter().map(|t| format!("{task}:{t}")).collect();
                let vectors = provider.embed(&texts).await.unwrap();
                assert_eq!(vectors, expected_vectors(&texts));
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(server.request_count(), 8);
}

/// Answers every connection with a 307 to `location`, once per request.
async fn redirect_server(location: String) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let location = location.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = stream.read(&mut buf).await;
                let answer = format!(
                    "HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_redirect_from_an_allowed_host_to_loopback_is_refused_and_never_followed() {
    // The target: a real embeddings server on 127.0.0.1, which must see nothing.
    let target = EmbedServer::start().await;
    let redirector = redirect_server(target.endpoint() + "/embeddings").await;
    // `localhost` is allowed by name; the redirect goes to an IP literal.
    let provider = client(OpenAiConfig {
        retry: quick_retries(2),
        egress: projectsync::egress::EgressPolicy {
            allow_hosts: vec!["localhost".into()],
            ..Default::default()
        },
        ..OpenAiConfig::new(format!("http://localhost:{}/v1", redirector.port()), "m")
    });

    let err = provider.embed(&inputs(1)).await.unwrap_err();

    assert!(matches!(err, EmbedError::EgressDenied { .. }), "{err:?}");
    assert_eq!(err.reason(), "EgressDenied");
    assert_eq!(err.retry(), Retry::Stalled);
    assert!(err.to_string().contains("127.0.0.1"), "{err}");
    assert_eq!(target.request_count(), 0);
}

#[tokio::test]
async fn an_endpoint_on_loopback_is_refused_by_the_default_policy_by_ip_and_by_name() {
    let server = EmbedServer::start().await;
    for endpoint in [
        server.endpoint(),
        server.endpoint().replace("127.0.0.1", "localhost"),
    ] {
        let provider = client(OpenAiConfig {
            retry: quick_retries(2),
            ..OpenAiConfig::new(endpoint.clone(), "m")
        });
        let err = provider.embed(&inputs(1)).await.unwrap_err();
        assert_eq!(err.reason(), "EgressDenied", "{endpoint}: {err}");
    }
    assert_eq!(server.request_count(), 0);
}
