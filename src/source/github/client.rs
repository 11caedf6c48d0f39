//! The HTTP layer of the GitHub source (I/O): one `GET` through octocrab
//! with bounded concurrency, a per-request timeout, retries with backoff and
//! jitter on 5xx and transport errors only, request accounting and rate-limit
//! observation. Rate limits are never retried here: they surface as errors
//! carrying the reset time, and until then no request is sent at all
//! (requests already queued for a permit fail with the same error), since
//! GitHub may ban integrations that keep asking while limited. With a GitHub
//! App, each request carries an installation token, and a 401 replaces the
//! token and retries once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use octocrab::Octocrab;
use tokio::sync::Semaphore;

use super::GitHubError;
use super::app_token::InstallationTokens;
use super::error::{Missing, build_error_from_response};
use super::proxy::find_proxy_error;
use crate::retry::RetryPolicy;
use crate::source::stats::{RateLimit, StatsRecorder};

/// A GitHub answer read in full.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// One request to make.
pub(crate) struct Request<'a> {
    pub endpoint: &'static str,
    /// Path and query, starting with `/` (relative to the API URL).
    pub path: &'a str,
    pub accept: &'static str,
    pub if_none_match: Option<&'a str>,
    /// Refuse bodies larger than this many bytes.
    pub body_limit: usize,
}

pub(crate) struct Client {
    pub octocrab: Octocrab,
    pub repo: String,
    pub retry: RetryPolicy,
    pub timeout: Duration,
    pub permits: Arc<Semaphore>,
    pub stats: StatsRecorder,
    /// The rate limit GitHub last answered with: (secondary, until).
    pub limit: Mutex<Option<(bool, DateTime<Utc>)>>,
    /// Installation tokens when the source authenticates as a GitHub App.
    pub app: Option<Arc<InstallationTokens>>,
}

/// Leaves out the HTTP client: octocrab's `Debug` prints basic-auth
/// passwords.
impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("repo", &self.repo)
            .field("retry", &self.retry)
            .field("timeout", &self.timeout)
            .field("app", &self.app)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// `GET`s `req`, retrying transient failures. Returns every HTTP answer
    /// that is not a retried 5xx, so callers map statuses in context. As a
    /// GitHub App, a 401 means the installation token was revoked or expired
    /// early: it is replaced and the request sent once more.
    pub async fn get(&self, req: Request<'_>) -> Result<Answer, GitHubError> {
        let Some(app) = &self.app else {
            return self.send(Method::GET, &req, None).await;
        };
        let mut refreshed = false;
        loop {
            let token = app.token(self).await?;
            let answer = self.send(Method::GET, &req, token.header()).await?;
            if answer.status != StatusCode::UNAUTHORIZED || refreshed {
                return Ok(answer);
            }
            tracing::info!(repo = %self.repo, endpoint = req.endpoint, "installation token refused; minting a new one");
            app.invalidate(&token).await;
            refreshed = true;
        }
    }

    /// Sends `req` with `method` and an optional `Authorization` header
    /// (added to octocrab's own, which is none for apps), retrying transient
    /// failures. A debug span per request (never its headers).
    #[tracing::instrument(level = "debug", name = "github", skip_all, fields(endpoint = req.endpoint))]
    pub async fn send(
        &self,
        method: Method,
        req: &Request<'_>,
        authorization: Option<HeaderValue>,
    ) -> Result<Answer, GitHubError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = self.send_once(&method, req, authorization.as_ref()).await;
            let retryable = match &outcome {
                Ok(answer) => answer.status.is_server_error(),
                Err(Failure::Timeout) => true,
                // A proxy that refuses the credentials or the target will
                // refuse them again.
                Err(Failure::Transport(e)) => {
                    crate::egress::find_denied(e).is_none()
                        && find_proxy_error(e).is_none_or(|p| {
                            matches!(p, super::proxy::ProxyConnectError::Unreachable { .. })
                        })
                }
                Err(Failure::BodyTooLarge | Failure::Limited(_)) => false,
            };
            if !retryable || attempt >= self.retry.attempts {
                return self.finish(req, outcome, attempt);
            }
            let delay = self.retry.delay(attempt);
            tracing::debug!(repo = %self.repo, endpoint = req.endpoint, attempt, ?delay, "retrying github request");
            tokio::time::sleep(delay).await;
        }
    }

    fn finish(
        &self,
        req: &Request<'_>,
        outcome: Result<Answer, Failure>,
        attempts: u32,
    ) -> Result<Answer, GitHubError> {
        let repo = self.repo.clone();
        let endpoint = req.endpoint;
        match outcome {
            Ok(answer) if answer.status.is_server_error() => Err(GitHubError::ServerError {
                repo,
                endpoint,
                status: answer.status.as_u16(),
                attempts,
            }),
            Ok(answer) => Ok(answer),
            Err(Failure::Timeout) => Err(GitHubError::Timeout {
                repo,
                endpoint,
                attempts,
                seconds: self.timeout.as_secs(),
            }),
            Err(Failure::Transport(source)) if crate::egress::find_denied(&source).is_some() => {
                Err(GitHubError::EgressDenied {
                    repo,
                    endpoint,
                    source: Box::new(
                        crate::egress::find_denied(&source)
                            .cloned()
                            .expect("checked above"),
                    ),
                })
            }
            Err(Failure::Transport(source)) if find_proxy_error(&source).is_some() => {
                Err(GitHubError::Proxy {
                    repo,
                    endpoint,
                    source: Box::new(find_proxy_error(&source).cloned().expect("checked above")),
                })
            }
            Err(Failure::Transport(source)) => Err(GitHubError::Transport {
                repo,
                endpoint,
                attempts,
                source: Box::new(source),
            }),
            Err(Failure::BodyTooLarge) => Err(GitHubError::ResponseTooLarge {
                repo,
                endpoint,
                limit: req.body_limit,
            }),
            Err(Failure::Limited(error)) => Err(error),
        }
    }

    /// `GET`s an absolute `url` whose body is read as it arrives (an archive
    /// download): not retried, with the request timeout applying to the
    /// answer's head and then to every wait for more of the body, so a
    /// large download may take as long as it keeps moving. A request permit
    /// is held until the body is dropped. Any status but 200 is read in full
    /// and returned as an [`Answer`] for the caller to map.
    pub async fn get_streaming(
        &self,
        endpoint: &'static str,
        url: &str,
        accept: &'static str,
    ) -> Result<Result<BodyStream, Answer>, GitHubError> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        if let Some(error) = self.limit_in_force() {
            return Err(error);
        }
        let timeout = || GitHubError::Timeout {
            repo: self.repo.clone(),
            endpoint,
            attempts: 1,
            seconds: self.timeout.as_secs(),
        };
        let transport = |source: octocrab::Error| match crate::egress::find_denied(&source) {
            Some(denied) => GitHubError::EgressDenied {
                repo: self.repo.clone(),
                endpoint,
                source: Box::new(denied.clone()),
            },
            None => GitHubError::Transport {
                repo: self.repo.clone(),
                endpoint,
                attempts: 1,
                source: Box::new(source),
            },
        };
        let request = self
            .build_request(&Method::GET, url, accept, None, None)
            .map_err(transport)?;
        let response =
            match tokio::time::timeout(self.timeout, self.octocrab.execute(request)).await {
                Ok(response) => response.map_err(|e| {
                    self.stats.record(endpoint, 0);
                    transport(e)
                })?,
                Err(_) => {
                    self.stats.record(endpoint, 0);
                    return Err(timeout());
                }
            };
        let (parts, mut body) = response.into_parts();
        self.stats.record(endpoint, parts.status.as_u16());
        self.observe_rate_limit(&parts.headers);
        if parts.status != StatusCode::OK {
            let body = Limited::new(body, 64 * 1024)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let answer = Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            };
            self.observe_limit(endpoint, &answer);
            return Ok(Err(answer));
        }
        let idle = self.timeout;
        let stream = async_stream::stream! {
            let _permit = permit;
            loop {
                match tokio::time::timeout(idle, body.frame()).await {
                    Err(_) => {
                        yield Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no data for {}s", idle.as_secs())));
                        break;
                    }
                    Ok(None) => break,
                    Ok(Some(Err(e))) => {
                        yield Err(std::io::Error::other(e));
                        break;
                    }
                    Ok(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            yield Ok(data);
                        }
                    }
                }
            }
        };
        Ok(Ok(Box::pin(stream)))
    }

    /// A request with the headers every call sends (`Accept`, the API
    /// version) and the optional validator and authorization; octocrab adds
    /// the base URI and the token.
    fn build_request(
        &self,
        method: &Method,
        uri: &str,
        accept: &'static str,
        if_none_match: Option<&str>,
        authorization: Option<&HeaderValue>,
    ) -> Result<http::Request<octocrab::OctoBody>, octocrab::Error> {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static(accept));
        headers.insert(
            "x-github-api-version",
            HeaderValue::from_static("2022-11-28"),
        );
        if let Some(tag) = if_none_match.and_then(|t| HeaderValue::from_str(t).ok()) {
            headers.insert(header::IF_NONE_MATCH, tag);
        }
        if let Some(value) = authorization {
            headers.insert(header::AUTHORIZATION, value.clone());
        }
        let mut builder = http::Request::builder().method(method.clone()).uri(uri);
        if let Some(all) = builder.headers_mut() {
            all.extend(headers);
        }
        self.octocrab.build_request(builder, None::<&()>)
    }

    /// The rate limit still in force, if any.
    fn limit_in_force(&self) -> Option<GitHubError> {
        let mut limit = self.limit.lock().unwrap_or_else(|e| e.into_inner());
        let (secondary, until) = (*limit)?;
        if until <= Utc::now() {
            *limit = None;
            return None;
        }
        let repo = self.repo.clone();
        Some(if secondary {
            GitHubError::SecondaryRateLimited { repo, until }
        } else {
            GitHubError::RateLimited { repo, until }
        })
    }

    /// Remembers a primary or secondary rate-limit answer until it resets.
    fn observe_limit(&self, endpoint: &'static str, answer: &Answer) {
        if !matches!(answer.status.as_u16(), 403 | 429) {
            return;
        }
        let error = build_error_from_response(
            &self.repo,
            endpoint,
            answer.status,
            &answer.headers,
            &answer.body,
            Missing::Repository,
            Utc::now(),
        );
        let limit = match error {
            GitHubError::RateLimited { until, .. } => (false, until),
            GitHubError::SecondaryRateLimited { until, .. } => (true, until),
            _ => return,
        };
        tracing::warn!(repo = %self.repo, endpoint, %error, "rate limited: no requests until the limit resets");
        *self.limit.lock().unwrap_or_else(|e| e.into_inner()) = Some(limit);
    }

    async fn send_once(
        &self,
        method: &Method,
        req: &Request<'_>,
        authorization: Option<&HeaderValue>,
    ) -> Result<Answer, Failure> {
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("the semaphore is never closed");
        if let Some(error) = self.limit_in_force() {
            return Err(Failure::Limited(error));
        }
        let call = async {
            let request = self
                .build_request(
                    method,
                    req.path,
                    req.accept,
                    req.if_none_match,
                    authorization,
                )
                .map_err(Failure::Transport)?;
            let response = self
                .octocrab
                .execute(request)
                .await
                .map_err(Failure::Transport)?;
            let (parts, body) = response.into_parts();
            self.stats.record(req.endpoint, parts.status.as_u16());
            // A mint (POST, authenticated by the app's JWT) reports the app's
            // own budget, not the installation's that REST reads spend.
            if method == Method::GET {
                self.observe_rate_limit(&parts.headers);
            }
            if !parts.status.is_success() {
                // Only its message is read (to classify the answer): the
                // first bytes of an error body are kept, the rest dropped.
                let body = read_prefix(body, ERROR_BODY_LIMIT)
                    .await
                    .map_err(Failure::Transport)?;
                return Ok(Answer {
                    status: parts.status,
                    headers: parts.headers,
                    body,
                });
            }
            let declared = parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
            if declared.is_some_and(|n| n > req.body_limit) {
                return Err(Failure::BodyTooLarge);
            }
            let body = Limited::new(body, req.body_limit)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        Failure::BodyTooLarge
                    } else {
                        match e.downcast::<octocrab::Error>() {
                            Ok(e) => Failure::Transport(*e),
                            Err(_) => Failure::BodyTooLarge,
                        }
                    }
                })?;
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body: body.to_bytes(),
            })
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Err(Failure::Transport(e))) => {
                self.stats.record(req.endpoint, 0);
                Err(Failure::Transport(e))
            }
            Ok(Ok(answer)) => {
                self.observe_limit(req.endpoint, &answer);
                Ok(answer)
            }
            Ok(result) => result,
            Err(_) => {
                self.stats.record(req.endpoint, 0);
                Err(Failure::Timeout)
            }
        }
    }

    fn observe_rate_limit(&self, headers: &HeaderMap) {
        let number = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<u64>().ok();
        if let Some(remaining) = number("x-ratelimit-remaining") {
            let reset = number("x-ratelimit-reset")
                .and_then(|s| i64::try_from(s).ok())
                .and_then(|s| DateTime::<Utc>::from_timestamp(s, 0));
            self.stats.observe_rate_limit(RateLimit {
                limit: number("x-ratelimit-limit"),
                remaining,
                reset,
            });
        }
    }
}

/// How much of an error answer's body is kept: GitHub's error documents
/// are a few hundred bytes; an endless one is cut here, not read.
pub(crate) const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// The first `limit` bytes of `body` (all of it when shorter); reading
/// stops there and the rest of the body is dropped unread.
async fn read_prefix(
    mut body: http_body_util::combinators::BoxBody<Bytes, octocrab::Error>,
    limit: usize,
) -> Result<Bytes, octocrab::Error> {
    let mut kept = bytes::BytesMut::new();
    while kept.len() < limit {
        let Some(frame) = body.frame().await else {
            break;
        };
        if let Ok(data) = frame?.into_data() {
            let room = limit - kept.len();
            kept.extend_from_slice(&data[..data.len().min(room)]);
        }
    }
    Ok(kept.freeze())
}

/// A body read as it arrives.
pub(crate) type BodyStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = std::io::Result<Bytes>> + Send>>;

enum Failure {
    Timeout,
    Transport(octocrab::Error),
    BodyTooLarge,
    /// Not sent: a rate limit is in force.
    Limited(GitHubError),
}

/// The `rel="next"` target of a `Link` header.
pub(crate) fn next_link(link: &str) -> Option<&str> {
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| matches!(p.trim(), "rel=\"next\"" | "rel=next"));
        is_next.then(|| url.trim().trim_start_matches('<').trim_end_matches('>'))
    })
}

/// Percent-encodes a branch name for a URL path, keeping `/` (GitHub
/// accepts slashes in ref paths) and unreserved characters.
pub(crate) fn encode_ref(name: &str) -> String {
    crate::source::proxy::percent_encode(name, b"/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_link_is_found_among_others() {
        let link = r#"<https://api.github.com/repositories/3430433/git/refs?per_page=100&page=2>; rel="next", <https://api.github.com/repositories/3430433/git/refs?per_page=100&page=7>; rel="last""#;
        assert_eq!(
            next_link(link),
            Some("https://api.github.com/repositories/3430433/git/refs?per_page=100&page=2")
        );
        assert_eq!(
            next_link(r#"<https://x/?page=1>; rel="first", <https://x/?page=6>; rel="prev""#),
            None
        );
    }

    #[test]
    fn branch_names_keep_slashes_and_escape_the_rest() {
        assert_eq!(
            encode_ref("feature/#123-fragment-url"),
            "feature/%23123-fragment-url"
        );
        assert_eq!(encode_ref("a b?c"), "a%20b%3Fc");
    }
}
