//! The OpenAI-compatible embeddings client (I/O: HTTP): `POST
//! {endpoint}/embeddings` as OpenAI, Ollama, vLLM and TEI serve it.
//!
//! Inputs are sent in batches of `batch_size`, one batch at a time. Each
//! batch gets bounded retries with backoff on 5xx, 429 (honouring
//! `Retry-After`), timeouts and connection errors; every other failure
//! ends the call at once with a specific [`EmbedError`].
//!
//! Connections obey the operator's egress policy: names resolve through
//! [`EgressResolver`], IP literals are checked before each request and on
//! every redirect, so a redirect from an allowed host to an internal one
//! is refused. Error bodies are not copied into messages (the endpoint is
//! whatever the tenant names): only the status and the body's size are.

use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use reqwest::{StatusCode, Url};

use super::wire::{self, EmbeddingsRequest, ResponseProblem};
use super::{EmbedError, Embedder};
use crate::egress::{EgressPolicy, EgressResolver, find_denied};
use crate::retry::{RetryPolicy, parse_retry_after};

/// Settings of an [`OpenAiEmbedder`]. `Debug` never shows the key.
#[derive(Clone)]
pub struct OpenAiConfig {
    /// Base URL such as `https://api.openai.com/v1`; `/embeddings` is
    /// appended unless the path already ends with it.
    pub endpoint: String,
    pub model: String,
    /// Sent as `Authorization: Bearer <key>` when set.
    pub api_key: Option<String>,
    /// Inputs per request.
    pub batch_size: usize,
    /// Limit on one request, from connecting to the last byte of the answer.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Retries of a batch on 5xx, 429, timeouts and connection errors.
    pub retry: RetryPolicy,
    /// The longest `Retry-After` the client waits out by itself; a longer
    /// one ends the call with a rate-limit error naming the time, so the
    /// controller requeues instead of holding a worker.
    pub max_retry_after: Duration,
    /// Which addresses the endpoint and its redirects may resolve to
    /// (default: no internal ones).
    pub egress: EgressPolicy,
}

impl OpenAiConfig {
    pub const DEFAULT_BATCH_SIZE: usize = 64;
    /// The largest batch the CRD allows (and OpenAI accepts).
    pub const MAX_BATCH_SIZE: usize = 2048;

    /// Defaults: batches of 64, 60 s per request (CPU-bound servers such as
    /// Ollama are slow on big batches), 10 s to connect, 4 attempts.
    pub fn new(endpoint: impl Into<String>, model: impl Into<String>) -> Self {
        OpenAiConfig {
            endpoint: endpoint.into(),
            model: model.into(),
            api_key: None,
            batch_size: Self::DEFAULT_BATCH_SIZE,
            request_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            max_retry_after: Duration::from_secs(30),
            egress: EgressPolicy::default(),
        }
    }
}

impl fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("endpoint", &self.endpoint)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("batch_size", &self.batch_size)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("retry", &self.retry)
            .field("max_retry_after", &self.max_retry_after)
            .field("egress", &self.egress)
            .finish()
    }
}

fn non_blank(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty())
}

/// A client for one endpoint and model. Cheap to share: hold it as
/// `Arc<dyn Embedder>`.
pub struct OpenAiEmbedder {
    client: reqwest::Client,
    url: Url,
    /// `url` without query, for messages and logs.
    display_url: String,
    model: String,
    authorization: Option<HeaderValue>,
    batch_size: usize,
    request_timeout: Duration,
    retry: RetryPolicy,
    max_retry_after: Duration,
    /// The dimension of the first vectors this client received; every later
    /// vector must match, so one model never yields mixed dimensions.
    dimension: OnceLock<usize>,
    egress: EgressPolicy,
}

impl fmt::Debug for OpenAiEmbedder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiEmbedder")
            .field("url", &self.display_url)
            .field("model", &self.model)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .field("batch_size", &self.batch_size)
            .finish_non_exhaustive()
    }
}

impl OpenAiEmbedder {
    /// Validates the config and builds the HTTP client; makes no request.
    pub fn new(config: OpenAiConfig) -> Result<Self, EmbedError> {
        let url = build_embeddings_url(&config.endpoint)?;
        let model = non_blank(Some(&config.model))
            .ok_or(EmbedError::MissingModel)?
            .to_string();
        if !(1..=OpenAiConfig::MAX_BATCH_SIZE).contains(&config.batch_size) {
            return Err(EmbedError::InvalidBatchSize {
                got: i64::try_from(config.batch_size).unwrap_or(i64::MAX),
                max: OpenAiConfig::MAX_BATCH_SIZE,
            });
        }
        let authorization = match config.api_key.as_deref().map(str::trim) {
            None => None,
            Some("") => return Err(EmbedError::EmptyApiKey),
            Some(key) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {key}"))
                    .map_err(|_| EmbedError::InvalidApiKey)?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        let resolver = EgressResolver::new(config.egress.clone());
        let redirects = config.egress.clone();
        let client = reqwest::Client::builder()
            .user_agent(concat!("projectsync/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(std::sync::Arc::new(resolver))
            // Names in a redirect resolve through the resolver above;
            // literals (which skip it) are checked here.
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= 10 {
                    return attempt.error("more than 10 redirects");
                }
                match attempt.url().host_str().map(|h| redirects.check_literal(h)) {
                    Some(Err(denied)) => attempt.error(denied),
                    _ => attempt.follow(),
                }
            }))
            .timeout(config.request_timeout)
            .connect_timeout(config.connect_timeout)
            .build()
            .map_err(EmbedError::Client)?;
        let mut display = url.clone();
        display.set_query(None);
        Ok(OpenAiEmbedder {
            client,
            display_url: display.to_string(),
            url,
            model,
            authorization,
            batch_size: config.batch_size,
            request_timeout: config.request_timeout,
            retry: RetryPolicy {
                attempts: config.retry.attempts.max(1),
                ..config.retry
            },
            max_retry_after: config.max_retry_after,
            dimension: OnceLock::new(),
            egress: config.egress,
        })
    }

    /// The full URL requests go to.
    pub fn url(&self) -> &str {
        self.url.as_str()
    }

    /// The dimension of the vectors received so far, if any.
    pub fn dimension(&self) -> Option<usize> {
        self.dimension.get().copied()
    }

    /// One batch, with bounded retries on transient failures.
    async fn embed_batch(&self, inputs: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let body: Bytes = serde_json::to_vec(&EmbeddingsRequest {
            model: &self.model,
            input: inputs,
        })
        .map_err(|e| EmbedError::MalformedResponse {
            url: self.display_url.clone(),
            detail: format!("could not encode the request: {e}"),
        })?
        .into();
        let mut attempt = 1;
        loop {
            let transient = match self.send_once(&body, inputs.len()).await {
                Ok(vectors) => return Ok(vectors),
                Err(Attempt::Final(error)) => return Err(error),
                Err(Attempt::Transient(transient)) => transient,
            };
            let retry_at = transient.retry_after.and_then(|wait| {
                Utc::now().checked_add_signed(chrono::Duration::from_std(wait).ok()?)
            });
            if attempt >= self.retry.attempts {
                return Err(transient.into_error(self, attempt, retry_at));
            }
            let delay = match transient.retry_after {
                Some(wait) if wait > self.max_retry_after => {
                    return Err(transient.into_error(self, attempt, retry_at));
                }
                Some(wait) => wait,
                None => self.retry.delay(attempt),
            };
            tracing::warn!(
                url = %self.display_url,
                model = %self.model,
                attempt,
                failure = %transient.kind,
                delay_ms = delay.as_millis() as u64,
                "embedding request failed, retrying"
            );
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// One HTTP exchange, classified.
    async fn send_once(&self, body: &Bytes, expected: usize) -> Result<Vec<Vec<f32>>, Attempt> {
        if let Some(host) = self.url.host_str()
            && let Err(source) = self.egress.check_literal(host)
        {
            return Err(Attempt::Final(EmbedError::EgressDenied {
                url: self.display_url.clone(),
                source: Box::new(source),
            }));
        }
        let mut request = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body.clone());
        if let Some(authorization) = &self.authorization {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        let response = request
            .send()
            .await
            .map_err(|e| Attempt::from_transport(e, &self.display_url))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, Utc::now()));
        let limit = if status.is_success() {
            response_limit(expected)
        } else {
            ERROR_BODY_LIMIT
        };
        let bytes = match read_capped(response, limit).await {
            Ok(Capped::Whole(bytes)) => bytes,
            // An error body is only read for its message: its start will do.
            Ok(Capped::Cut(bytes)) if !status.is_success() => bytes,
            Ok(Capped::Cut(_)) => {
                return Err(Attempt::Final(EmbedError::ResponseTooLarge {
                    url: self.display_url.clone(),
                    limit,
                    inputs: expected,
                }));
            }
            Err(e) => return Err(Attempt::from_transport(e, &self.display_url)),
        };

        if status.is_success() {
            return wire::parse_embeddings(&bytes, expected)
                .map_err(|problem| Attempt::Final(self.response_error(problem)));
        }
        let message = withheld_body(&bytes);
        let url = self.display_url.clone();
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Attempt::Final(EmbedError::AuthFailed {
                    url,
                    status: status.as_u16(),
                    message,
                })
            }
            StatusCode::NOT_FOUND => Attempt::Final(EmbedError::NotFound {
                url,
                model: self.model.clone(),
                message,
            }),
            StatusCode::TOO_MANY_REQUESTS
                if wire::error_code(&bytes).as_deref() == Some("insufficient_quota") =>
            {
                Attempt::Final(EmbedError::QuotaExceeded { url, message })
            }
            StatusCode::TOO_MANY_REQUESTS => Attempt::Transient(Transient {
                kind: TransientKind::RateLimited,
                retry_after,
            }),
            s if s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT => {
                Attempt::Transient(Transient {
                    kind: TransientKind::Status {
                        status: s.as_u16(),
                        message,
                    },
                    retry_after,
                })
            }
            s => Attempt::Final(EmbedError::Rejected {
                url,
                status: s.as_u16(),
                message,
            }),
        })
    }

    fn response_error(&self, problem: ResponseProblem) -> EmbedError {
        let url = self.display_url.clone();
        match problem {
            ResponseProblem::Malformed(detail) => EmbedError::MalformedResponse { url, detail },
            ResponseProblem::Count { expected, got } => {
                EmbedError::CountMismatch { url, expected, got }
            }
            ResponseProblem::Dimension {
                expected,
                got,
                index,
            } => EmbedError::DimensionMismatch {
                url,
                expected,
                got,
                index,
            },
        }
    }

    /// Checks that `vectors` (starting at input `offset` of the call) have
    /// the dimension of everything this client received before.
    fn check_dimension(&self, vectors: &[Vec<f32>], offset: usize) -> Result<(), EmbedError> {
        let Some(first) = vectors.first() else {
            return Ok(());
        };
        let expected = *self.dimension.get_or_init(|| first.len());
        // Within a batch all vectors already have the same length.
        if first.len() != expected {
            return Err(EmbedError::DimensionMismatch {
                url: self.display_url.clone(),
                expected,
                got: first.len(),
                index: offset,
            });
        }
        Ok(())
    }
}

/// The most an error body is read: its message is all that is used.
const ERROR_BODY_LIMIT: usize = 64 * 1024;
/// Room per input in a successful answer: a 4,096-dimension vector written
/// as JSON floats is about 90 KiB.
const RESPONSE_BYTES_PER_INPUT: usize = 128 * 1024;
/// Ceiling on a successful answer, whatever the batch size: beyond it the
/// call fails with a message to lower `embedding.batchSize`.
const RESPONSE_LIMIT: usize = 64 * 1024 * 1024;

/// How many bytes the answer to a batch of `inputs` may have.
fn response_limit(inputs: usize) -> usize {
    inputs
        .saturating_mul(RESPONSE_BYTES_PER_INPUT)
        .saturating_add(64 * 1024)
        .min(RESPONSE_LIMIT)
}

/// A body read up to a limit.
enum Capped {
    Whole(Bytes),
    /// The first `limit` bytes; the rest was not read.
    Cut(Bytes),
}

/// Reads `response` as it arrives, stopping at `limit` bytes: an endless
/// or oversized answer costs at most `limit` bytes of memory.
async fn read_capped(mut response: reqwest::Response, limit: usize) -> reqwest::Result<Capped> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Ok(Capped::Cut(Bytes::new()));
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response.chunk().await? {
        let room = limit - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok(Capped::Cut(body.freeze()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Capped::Whole(body.freeze()))
}

#[async_trait]
impl Embedder for OpenAiEmbedder {
    fn model(&self) -> &str {
        &self.model
    }

    async fn embed(&self, inputs: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut vectors = Vec::with_capacity(inputs.len());
        for (number, batch) in inputs.chunks(self.batch_size).enumerate() {
            let offset = number * self.batch_size;
            let batch_vectors = self.embed_batch(batch).await?;
            self.check_dimension(&batch_vectors, offset)?;
            tracing::debug!(
                url = %self.display_url,
                model = %self.model,
                offset,
                inputs = batch.len(),
                "embedded a batch"
            );
            vectors.extend(batch_vectors);
        }
        Ok(vectors)
    }
}

/// `{endpoint}/embeddings`, refusing what cannot be an embeddings endpoint.
/// Credentials in the URL are refused: they would show in every message.
fn build_embeddings_url(endpoint: &str) -> Result<Url, EmbedError> {
    let invalid = |detail| EmbedError::InvalidEndpoint {
        endpoint: redact_credentials(endpoint),
        detail,
    };
    let mut url = Url::parse(endpoint.trim()).map_err(|_| invalid("not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("the URL has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "credentials in the URL are not allowed, use embedding.secretRef",
        ));
    }
    url.set_fragment(None);
    let path = url.path().trim_end_matches('/').to_string();
    if !path.ends_with("/embeddings") {
        url.set_path(&format!("{path}/embeddings"));
    }
    Ok(url)
}

/// `endpoint` without the user and password it may carry.
fn redact_credentials(endpoint: &str) -> String {
    match Url::parse(endpoint.trim()) {
        Ok(mut url) if !url.username().is_empty() || url.password().is_some() => {
            // Both only fail for URLs that cannot have credentials at all.
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.to_string()
        }
        _ => endpoint.to_string(),
    }
}

/// The outcome of one failed exchange.
enum Attempt {
    /// Retrying the same request cannot help.
    Final(EmbedError),
    Transient(Transient),
}

/// What messages say of an error answer's body: its size only. The
/// endpoint is the tenant's to name, so its text (or an internal service's)
/// is never copied into status, events or logs.
fn withheld_body(body: &[u8]) -> String {
    format!("{}-byte body not shown", body.len())
}

impl Attempt {
    fn from_transport(error: reqwest::Error, url: &str) -> Attempt {
        if let Some(denied) = find_denied(&error) {
            return Attempt::Final(EmbedError::EgressDenied {
                url: url.to_string(),
                source: Box::new(denied.clone()),
            });
        }
        let kind = if error.is_timeout() {
            TransientKind::Timeout
        } else {
            TransientKind::Transport(error)
        };
        Attempt::Transient(Transient {
            kind,
            retry_after: None,
        })
    }
}

struct Transient {
    kind: TransientKind,
    /// The server's `Retry-After`, when it sent one.
    retry_after: Option<Duration>,
}

enum TransientKind {
    RateLimited,
    Status {
        status: u16,
        message: String,
    },
    Timeout,
    /// Connecting, or the connection failing before the answer was read.
    Transport(reqwest::Error),
}

impl fmt::Display for TransientKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransientKind::RateLimited => f.write_str("HTTP 429"),
            TransientKind::Status { status, .. } => write!(f, "HTTP {status}"),
            TransientKind::Timeout => f.write_str("timeout"),
            TransientKind::Transport(e) => write!(f, "connection error: {e}"),
        }
    }
}

impl Transient {
    fn into_error(
        self,
        provider: &OpenAiEmbedder,
        attempts: u32,
        retry_at: Option<chrono::DateTime<Utc>>,
    ) -> EmbedError {
        let url = provider.display_url.clone();
        match self.kind {
            TransientKind::RateLimited => EmbedError::RateLimited {
                url,
                attempts,
                retry_at,
            },
            TransientKind::Status { status, message } => EmbedError::ServerError {
                url,
                status,
                attempts,
                message,
                retry_at,
            },
            TransientKind::Timeout => EmbedError::Timeout {
                url,
                timeout: provider.request_timeout,
                attempts,
            },
            TransientKind::Transport(source) => EmbedError::Unreachable {
                url,
                attempts,
                source,
            },
        }
    }
}

#[cfg(test)]
mod tests;
