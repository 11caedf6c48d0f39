//! What can go wrong computing embeddings, with the short static reason used
//! for condition reasons, event reasons and metric labels, and what the
//! caller should do next. Pure, no I/O.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::api::conditions::reason;

pub use crate::retry::Retry;

/// An embedding failure. Messages name the endpoint (never the key) and,
/// where there is one, the server's own message.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("embedding.endpoint is required when embedding.provider is OpenAI")]
    MissingEndpoint,
    #[error("embedding.model is required when embedding.provider is OpenAI")]
    MissingModel,
    #[error("embedding.endpoint {endpoint:?} is not usable: {detail}")]
    InvalidEndpoint {
        endpoint: String,
        detail: &'static str,
    },
    #[error("embedding.batchSize must be between 1 and {max}, got {got}")]
    InvalidBatchSize { got: i64, max: usize },
    #[error("embedding.secretRef {secret}/{key} is set but no API key was resolved from it")]
    MissingApiKey { secret: String, key: String },
    #[error("the embedding API key is empty")]
    EmptyApiKey,
    #[error("the embedding API key contains characters not allowed in an HTTP header")]
    InvalidApiKey,
    #[error("embedding provider is None: no embeddings are computed")]
    Disabled,
    #[error("could not build the HTTP client for embeddings")]
    Client(#[source] reqwest::Error),

    #[error("embedding endpoint {url} refused the API key (HTTP {status}): {message}")]
    AuthFailed {
        url: String,
        status: u16,
        message: String,
    },
    #[error(
        "embedding endpoint {url} answered HTTP 404 for model {model:?}: wrong endpoint or model: {message}"
    )]
    NotFound {
        url: String,
        model: String,
        message: String,
    },
    #[error("embedding endpoint {url} reports the quota is exhausted (HTTP 429): {message}")]
    QuotaExceeded { url: String, message: String },
    #[error("embedding endpoint {url} rejected the request (HTTP {status}): {message}")]
    Rejected {
        url: String,
        status: u16,
        message: String,
    },
    #[error(
        "embedding endpoint {url} is rate limiting (HTTP 429), gave up after {attempts} attempt(s)"
    )]
    RateLimited {
        url: String,
        attempts: u32,
        /// When the server said to come back, if it did.
        retry_at: Option<DateTime<Utc>>,
    },
    #[error(
        "embedding endpoint {url} failed with HTTP {status} after {attempts} attempt(s): {message}"
    )]
    ServerError {
        url: String,
        status: u16,
        attempts: u32,
        message: String,
        /// When the server said to come back (a 503 with `Retry-After`).
        retry_at: Option<DateTime<Utc>>,
    },
    #[error("embedding request to {url} timed out after {timeout:?}, {attempts} attempt(s)")]
    Timeout {
        url: String,
        timeout: Duration,
        attempts: u32,
    },
    #[error("embedding endpoint {url}: {source}")]
    EgressDenied {
        url: String,
        #[source]
        source: Box<crate::egress::EgressDenied>,
    },
    #[error("embedding endpoint {url} is unreachable after {attempts} attempt(s)")]
    Unreachable {
        url: String,
        attempts: u32,
        #[source]
        source: reqwest::Error,
    },
    #[error("embedding endpoint {url} sent a malformed response: {detail}")]
    MalformedResponse { url: String, detail: String },
    #[error(
        "embedding endpoint {url} sent an answer larger than {limit} bytes for {inputs} inputs; lower embedding.batchSize"
    )]
    ResponseTooLarge {
        url: String,
        limit: usize,
        inputs: usize,
    },
    #[error("embedding endpoint {url} returned {got} embeddings for {expected} inputs")]
    CountMismatch {
        url: String,
        expected: usize,
        got: usize,
    },
    #[error(
        "embedding endpoint {url} returned a vector of {got} dimensions for input {index}, expected {expected}"
    )]
    DimensionMismatch {
        url: String,
        expected: usize,
        got: usize,
        index: usize,
    },
}

impl EmbedError {
    /// Short CamelCase category for condition reasons, event reasons and
    /// metric labels. A fixed set of static strings.
    pub fn reason(&self) -> &'static str {
        use EmbedError::*;
        match self {
            MissingEndpoint
            | MissingModel
            | InvalidEndpoint { .. }
            | InvalidBatchSize { .. }
            | MissingApiKey { .. }
            | EmptyApiKey
            | InvalidApiKey => reason::EMBEDDING_CONFIG_INVALID,
            Disabled => reason::EMBEDDING_DISABLED,
            Client(_) => reason::EMBEDDING_CLIENT_FAILED,
            AuthFailed { .. } => reason::EMBEDDING_AUTH_FAILED,
            NotFound { .. } => reason::EMBEDDING_NOT_FOUND,
            QuotaExceeded { .. } => reason::EMBEDDING_QUOTA_EXCEEDED,
            Rejected { .. } => reason::EMBEDDING_REQUEST_REJECTED,
            RateLimited { .. } => reason::EMBEDDING_RATE_LIMITED,
            ServerError { .. } => reason::EMBEDDING_SERVER_ERROR,
            Timeout { .. } => reason::EMBEDDING_TIMEOUT,
            Unreachable { .. } => reason::EMBEDDING_ENDPOINT_UNREACHABLE,
            EgressDenied { .. } => reason::EGRESS_DENIED,
            MalformedResponse { .. } | CountMismatch { .. } | DimensionMismatch { .. } => {
                reason::EMBEDDING_RESPONSE_INVALID
            }
            ResponseTooLarge { .. } => reason::EMBEDDING_RESPONSE_TOO_LARGE,
        }
    }

    /// What the caller should do next. Errors the client already retried
    /// (5xx, 429, timeouts, connection errors) are still transient: the
    /// controller backs off and tries the run again.
    pub fn retry(&self) -> Retry {
        use EmbedError::*;
        match self {
            MissingEndpoint
            | MissingModel
            | InvalidEndpoint { .. }
            | InvalidBatchSize { .. }
            | MissingApiKey { .. }
            | EmptyApiKey
            | InvalidApiKey
            | Disabled
            | Client(_)
            | AuthFailed { .. }
            | NotFound { .. }
            | QuotaExceeded { .. }
            | EgressDenied { .. }
            | Rejected { .. }
            | ResponseTooLarge { .. } => Retry::Stalled,
            RateLimited {
                retry_at: Some(at), ..
            }
            | ServerError {
                retry_at: Some(at), ..
            } => Retry::WaitUntil(*at),
            RateLimited { retry_at: None, .. }
            | ServerError { retry_at: None, .. }
            | Timeout { .. }
            | Unreachable { .. }
            | MalformedResponse { .. }
            | CountMismatch { .. }
            | DimensionMismatch { .. } => Retry::Transient,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url() -> String {
        "http://embed.test/v1/embeddings".to_string()
    }

    #[test]
    fn user_fixable_errors_stall() {
        let errors = [
            EmbedError::MissingModel,
            EmbedError::AuthFailed {
                url: url(),
                status: 401,
                message: "bad key".into(),
            },
            EmbedError::NotFound {
                url: url(),
                model: "m".into(),
                message: String::new(),
            },
            EmbedError::QuotaExceeded {
                url: url(),
                message: String::new(),
            },
            EmbedError::Rejected {
                url: url(),
                status: 400,
                message: "input too long".into(),
            },
        ];
        for e in errors {
            assert_eq!(e.retry(), Retry::Stalled, "{e}");
        }
    }

    #[test]
    fn rate_limits_wait_until_the_time_the_server_named() {
        let at = DateTime::from_timestamp(2_000_000_000, 0).unwrap();
        let e = EmbedError::RateLimited {
            url: url(),
            attempts: 1,
            retry_at: Some(at),
        };
        assert_eq!(e.retry(), Retry::WaitUntil(at));
        assert_eq!(e.reason(), "EmbeddingRateLimited");
        let without = EmbedError::RateLimited {
            url: url(),
            attempts: 4,
            retry_at: None,
        };
        assert_eq!(without.retry(), Retry::Transient);
    }

    #[test]
    fn server_side_and_response_errors_are_transient() {
        let errors = [
            EmbedError::ServerError {
                url: url(),
                status: 503,
                attempts: 4,
                message: String::new(),
                retry_at: None,
            },
            EmbedError::Timeout {
                url: url(),
                timeout: Duration::from_secs(1),
                attempts: 4,
            },
            EmbedError::CountMismatch {
                url: url(),
                expected: 2,
                got: 1,
            },
        ];
        for e in errors {
            assert_eq!(e.retry(), Retry::Transient, "{e}");
        }
    }

    #[test]
    fn messages_are_lowercase_and_name_the_endpoint() {
        let e = EmbedError::AuthFailed {
            url: url(),
            status: 401,
            message: "Incorrect API key provided".into(),
        };
        assert_eq!(
            e.to_string(),
            "embedding endpoint http://embed.test/v1/embeddings refused the API key (HTTP 401): \
             Incorrect API key provided"
        );
        assert_eq!(e.reason(), "EmbeddingAuthFailed");
    }
}
