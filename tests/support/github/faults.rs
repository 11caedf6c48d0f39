//! Scheduled fault injection for the GitHub stand-in: the Nth request to an
//! endpoint gets a 5xx, is held past the client's timeout, has its body cut
//! short, hits a primary or a secondary rate limit, or finds the branch
//! force-pushed just before it is answered. Every request is journaled with
//! its time and status, so a test can tell which faults the client survived
//! (the same URL answered successfully later) and whether it waited for a
//! rate limit's reset. Pure bookkeeping plus one `git update-ref` per
//! force-push.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Response, StatusCode, Uri};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::json;

use super::Inner;
use super::endpoints::git;

/// Which endpoint a scheduled fault applies to (requests are counted per
/// endpoint, from 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Endpoint {
    /// `/git/ref/heads/{b}`.
    Ref,
    /// `/git/trees/{sha}`.
    Tree,
    /// `/git/blobs/{sha}`.
    Blob,
    /// `/compare/{base}...{head}`.
    Compare,
    /// Anything else (repository, branches, rate limit).
    Other,
}

impl Endpoint {
    fn of(path: &str) -> Self {
        if path.contains("/git/ref/") {
            Endpoint::Ref
        } else if path.contains("/git/trees/") {
            Endpoint::Tree
        } else if path.contains("/git/blobs/") {
            Endpoint::Blob
        } else if path.contains("/compare/") {
            Endpoint::Compare
        } else {
            Endpoint::Other
        }
    }
}

/// What happens to the chosen request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Injected {
    /// This 5xx status with GitHub's error body.
    Status(u16),
    /// The answer is held for [`FaultPlan::hold`], longer than the client
    /// waits, then sent.
    Timeout,
    /// A `Content-Length` of the whole answer, half of it sent, then the
    /// connection closes.
    TruncatedBody,
    /// 403, `x-ratelimit-remaining: 0`, and a reset [`FaultPlan::rate_limit_wait`]
    /// ahead; every request until then gets the same answer, as on GitHub.
    PrimaryRateLimit,
    /// 403 with `retry-after` of [`FaultPlan::rate_limit_wait`] and the
    /// secondary-limit message; every request until then gets it too.
    SecondaryRateLimit,
    /// The branch is moved to this commit (not a descendant) before the
    /// request is answered.
    ForcePush { branch: String, to: String },
}

impl Injected {
    /// A short name for reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Injected::Status(500) => "500",
            Injected::Status(502) => "502",
            Injected::Status(503) => "503",
            Injected::Status(_) => "5xx",
            Injected::Timeout => "timeout",
            Injected::TruncatedBody => "truncated body",
            Injected::PrimaryRateLimit => "primary rate limit",
            Injected::SecondaryRateLimit => "secondary rate limit",
            Injected::ForcePush { .. } => "force-push",
        }
    }
}

/// One fault: the `nth` request (1-based) to `endpoint` gets `fault`.
#[derive(Clone, Debug)]
pub struct Scheduled {
    pub endpoint: Endpoint,
    pub nth: usize,
    pub fault: Injected,
}

/// A schedule of faults and their timings.
#[derive(Clone, Debug)]
pub struct FaultPlan {
    pub faults: Vec<Scheduled>,
    /// How long a `Timeout` answer is held.
    pub hold: Duration,
    /// How far ahead a rate limit resets.
    pub rate_limit_wait: Duration,
}

/// One request as the fault layer saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub at: Instant,
    pub endpoint: Endpoint,
    pub path: String,
    pub status: u16,
    /// The fault injected into this request.
    pub fault: Option<Injected>,
    /// For a rate limit: when the client may ask again.
    pub not_before: Option<Instant>,
    /// Answered with the rate limit of an earlier fault, still in force.
    pub limited: bool,
}

#[derive(Default)]
pub(super) struct FaultState {
    plan: Option<FaultPlan>,
    counts: BTreeMap<Endpoint, usize>,
    journal: Vec<Seen>,
    /// A rate limit in force: which one, and until when.
    limit: Option<(Injected, Instant)>,
}

impl FaultState {
    /// Counts the request and returns the fault scheduled for it.
    fn next(&mut self, endpoint: Endpoint) -> Option<(Injected, Duration, Duration)> {
        let count = self.counts.entry(endpoint).or_default();
        *count += 1;
        let n = *count;
        let plan = self.plan.as_ref()?;
        plan.faults
            .iter()
            .find(|s| s.endpoint == endpoint && s.nth == n)
            .map(|s| (s.fault.clone(), plan.hold, plan.rate_limit_wait))
    }
}

/// A fault injected and whether the client got past it.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub seen: Seen,
    /// The same URL was answered with 2xx or 304 later.
    pub answered_later: bool,
    /// For rate limits: no request arrived while the limit was in force,
    /// except in the first second (requests already in flight).
    pub waited: Option<bool>,
    /// Requests that arrived while the limit was in force: (after, path).
    pub while_limited: Vec<(Duration, String)>,
}

impl super::GithubStandIn {
    /// Installs a fault schedule; request counting starts again from 1.
    pub fn set_fault_plan(&self, plan: FaultPlan) {
        let mut state = self.inner.faults.lock().unwrap();
        state.plan = Some(plan);
        state.counts.clear();
    }

    /// Every request the fault layer saw, in arrival order.
    pub fn journal(&self) -> Vec<Seen> {
        self.inner.faults.lock().unwrap().journal.clone()
    }

    /// The faults injected so far, each with what followed it.
    pub fn fault_outcomes(&self) -> Vec<Outcome> {
        let journal = self.journal();
        journal
            .iter()
            .enumerate()
            .filter(|(_, s)| s.fault.is_some())
            .map(|(i, seen)| {
                let later = &journal[i + 1..];
                let answered_later = later.iter().any(|s| {
                    s.path == seen.path && s.fault.is_none() && (s.status < 300 || s.status == 304)
                });
                let while_limited: Vec<(Duration, String)> = later
                    .iter()
                    .filter(|s| s.limited && seen.not_before.is_some_and(|until| s.at < until))
                    .map(|s| (s.at - seen.at, s.path.clone()))
                    .collect();
                let waited = seen.not_before.map(|_| {
                    while_limited
                        .iter()
                        .all(|(after, _)| *after <= Duration::from_secs(1))
                });
                Outcome {
                    seen: seen.clone(),
                    answered_later,
                    waited,
                    while_limited,
                }
            })
            .collect()
    }
}

/// The stand-in's request path with the fault layer in front of it.
pub(super) async fn handle_with_faults(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response<Body> {
    let path = uri.path().to_string();
    let endpoint = Endpoint::of(&path);
    let at = Instant::now();
    let (scheduled, limit) = {
        let mut state = inner.faults.lock().unwrap();
        let limit = state.limit.clone().filter(|(_, until)| at < *until);
        let scheduled = if limit.is_some() {
            None
        } else {
            state.next(endpoint)
        };
        (scheduled, limit)
    };
    if let Some((fault, until)) = limit {
        let response = rate_limit_reply(&fault, until.saturating_duration_since(at));
        inner.faults.lock().unwrap().journal.push(Seen {
            at,
            endpoint,
            path,
            status: response.status().as_u16(),
            fault: None,
            not_before: None,
            limited: true,
        });
        return response;
    }
    // Journaled now, not when answered: a held answer is dropped when the
    // client gives up, and a force-pushed request may be cancelled by its
    // client (a run that failed meanwhile aborts the fetches it started)
    // while the branch moves all the same.
    let early = scheduled.as_ref().and_then(|(f, _, _)| {
        matches!(f, Injected::Timeout | Injected::ForcePush { .. }).then(|| f.clone())
    });
    if let Some(fault) = early.clone() {
        inner.faults.lock().unwrap().journal.push(Seen {
            at,
            endpoint,
            path: path.clone(),
            status: 0,
            fault: Some(fault),
            not_before: None,
            limited: false,
        });
    }
    let mut not_before = None;
    let response = match &scheduled {
        None => super::handle(State(inner.clone()), method, uri, headers).await,
        Some((fault, hold, wait)) => match fault {
            Injected::Status(status) => error_reply(*status, "Server Error", &[]),
            Injected::Timeout => {
                tokio::time::sleep(*hold).await;
                return super::handle(State(inner.clone()), method, uri, headers).await;
            }
            Injected::TruncatedBody => {
                let full = super::handle(State(inner.clone()), method, uri, headers).await;
                truncate(full).await
            }
            Injected::PrimaryRateLimit | Injected::SecondaryRateLimit => {
                let until = at + *wait;
                not_before = Some(until);
                inner.faults.lock().unwrap().limit = Some((fault.clone(), until));
                rate_limit_reply(fault, *wait)
            }
            Injected::ForcePush { branch, to } => {
                let inner2 = inner.clone();
                let (branch, to) = (branch.clone(), to.clone());
                tokio::task::spawn_blocking(move || {
                    git(
                        &inner2,
                        &["update-ref", &format!("refs/heads/{branch}"), &to],
                    )
                    .expect("force-push: git update-ref");
                })
                .await
                .expect("force-push");
                super::handle(State(inner.clone()), method, uri, headers).await
            }
        },
    };
    inner.faults.lock().unwrap().journal.push(Seen {
        at,
        endpoint,
        path,
        status: response.status().as_u16(),
        // A fault journaled early is not journaled twice.
        fault: scheduled.map(|(f, _, _)| f).filter(|_| early.is_none()),
        not_before,
        limited: false,
    });
    response
}

/// The Unix second at or just after `wait` from now (never before it).
fn reset_after(wait: Duration) -> u64 {
    (SystemTime::now() + wait)
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 1
}

/// A primary limit (reset `wait` ahead) or a secondary one (`retry-after`).
fn rate_limit_reply(fault: &Injected, wait: Duration) -> Response<Body> {
    // Whole seconds, rounded up: the client never comes back early.
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    if *fault == Injected::PrimaryRateLimit {
        error_reply(
            403,
            "API rate limit exceeded for user ID 1.",
            &[
                ("x-ratelimit-limit", "5000".into()),
                ("x-ratelimit-remaining", "0".into()),
                ("x-ratelimit-used", "5000".into()),
                ("x-ratelimit-reset", reset_after(wait).to_string()),
                ("x-ratelimit-resource", "core".into()),
            ],
        )
    } else {
        error_reply(
            403,
            "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
            &[("retry-after", seconds.to_string())],
        )
    }
}

/// GitHub's error shape (see `tests/fixtures/github/error-*.json`).
fn error_reply(status: u16, message: &str, headers: &[(&'static str, String)]) -> Response<Body> {
    let body = json!({
        "message": message,
        "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
        "status": status.to_string(),
    });
    let mut builder = Response::builder()
        .status(StatusCode::from_u16(status).expect("status"))
        .header("server", "github.com")
        .header("content-type", "application/json; charset=utf-8");
    for (name, value) in headers {
        builder = builder.header(*name, value);
    }
    builder
        .body(Body::from(serde_json::to_vec(&body).expect("json")))
        .expect("response")
}

/// Sends the headers of `full` with its real `Content-Length`, half of the
/// body, then fails the body so the server closes the connection.
async fn truncate(full: Response<Body>) -> Response<Body> {
    let (mut parts, body) = full.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    parts.headers.insert(
        "content-length",
        bytes.len().to_string().parse().expect("header"),
    );
    let half = Bytes::copy_from_slice(&bytes[..bytes.len() / 2]);
    let stream = futures::stream::iter([
        Ok::<_, std::io::Error>(half),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "truncated on purpose",
        )),
    ]);
    Response::from_parts(parts, Body::from_stream(stream))
}
