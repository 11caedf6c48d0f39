//! A stand-in for GitHub's REST API, serving one real on-disk git repository
//! with GitHub's response shapes (checked against recorded responses in
//! `tests/fixtures/github/` by `tests/source_github_fixtures.rs`).
//!
//! Endpoints: `GET /repos/{o}/{r}`, `/branches` (paginated with `Link`),
//! `/branches/{b}`, `/git/ref/heads/{b}`, `/git/trees/{sha}[?recursive=1]`
//! (truncated above a configurable entry count), `/git/blobs/{sha}` (base64
//! JSON or the raw media type), `/compare/{base}...{head}` (at most 300
//! files; unrelated histories a 404 "No common ancestor", as GitHub) and
//! `/rate_limit`. Every answer carries rate-limit headers and a
//! content ETag; `If-None-Match` gives a 304 that costs no rate limit.
//! Faults (rate limits, bad credentials, SAML, 404, 409, 5xx, corrupt
//! blobs) are switched on per test, and every request is logged. A GitHub
//! App mode ([`app`]) verifies app JWTs and mints installation tokens.

pub mod app;
mod endpoints;
pub mod faults;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Response, StatusCode, Uri};
use serde_json::json;
use sha2::{Digest, Sha256};

use self::endpoints::{CatFile, Reply};

/// GitHub's cap on files listed by the compare API.
pub const COMPARE_FILE_LIMIT: usize = 300;

/// A fault the stand-in answers with instead of the real response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// 403 with `X-RateLimit-Remaining: 0` and the reset time.
    PrimaryRateLimit,
    /// `status` (403 or 429) with `Retry-After` when given.
    SecondaryRateLimit {
        status: u16,
        retry_after: Option<u64>,
    },
    /// 401 Bad credentials.
    BadCredentials,
    /// 403 with `X-GitHub-SSO: required; url=...`.
    SamlRequired,
    /// 404 Not Found for everything.
    NotFound,
    /// 409 Git Repository is empty.
    EmptyRepository,
    /// A 5xx status.
    ServerError(u16),
    /// Blob content that is not valid base64.
    CorruptBlobBase64,
    /// Valid base64 of bytes that do not hash to the blob id.
    WrongBlobContent,
    /// Answer normally, but only after this long (timeouts).
    Delay(std::time::Duration),
}

/// One logged request.
#[derive(Clone, Debug)]
pub struct LoggedRequest {
    pub path: String,
    pub query: String,
    pub status: u16,
    pub if_none_match: Option<String>,
    pub authorization: Option<String>,
}

struct Config {
    tree_entry_limit: usize,
    /// Archives end after this many bytes, as a download that broke off.
    archive_cut: Option<usize>,
    token: Option<String>,
    fault: Option<(Fault, Option<usize>)>,
    app: Option<app::AppMode>,
}

struct Inner {
    owner: String,
    name: String,
    git_dir: PathBuf,
    reset_at: u64,
    remaining: Mutex<u64>,
    config: Mutex<Config>,
    log: Mutex<Vec<LoggedRequest>>,
    cat_file: Mutex<CatFile>,
    faults: Mutex<faults::FaultState>,
}

impl Inner {
    /// The fault for this request, counting down a limited fault.
    fn take_fault(&self) -> Option<Fault> {
        let mut config = self.config.lock().unwrap();
        match &mut config.fault {
            Some((fault, None)) => Some(fault.clone()),
            Some((fault, Some(n))) if *n > 0 => {
                *n -= 1;
                Some(fault.clone())
            }
            _ => None,
        }
    }
}

/// The running stand-in. The connector only gets [`GithubStandIn::api_url`].
pub struct GithubStandIn {
    inner: Arc<Inner>,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

const RATE_LIMIT: u64 = 5000;

impl GithubStandIn {
    /// Serves the repository whose `.git` directory is `git_dir` as
    /// `owner/name`.
    pub async fn start(owner: &str, name: &str, git_dir: PathBuf) -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let inner = Arc::new(Inner {
            owner: owner.to_string(),
            name: name.to_string(),
            cat_file: Mutex::new(CatFile::spawn(&git_dir)),
            git_dir,
            reset_at: now + 3600,
            remaining: Mutex::new(RATE_LIMIT),
            config: Mutex::new(Config {
                tree_entry_limit: 100_000,
                archive_cut: None,
                token: None,
                fault: None,
                app: None,
            }),
            log: Mutex::new(Vec::new()),
            faults: Mutex::default(),
        });
        let app = axum::Router::new()
            .fallback(faults::handle_with_faults)
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("address");
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        GithubStandIn { inner, addr, task }
    }

    /// The URL to give the connector as `apiUrl`.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Recursive trees with more entries than this answer `truncated: true`
    /// (GitHub: 100,000 entries or 7 MB).
    pub fn set_tree_entry_limit(&self, limit: usize) {
        self.inner.config.lock().unwrap().tree_entry_limit = limit;
    }

    /// Ends every archive download after `bytes`, as a connection that
    /// broke off.
    pub fn cut_archives_after(&self, bytes: usize) {
        self.inner.config.lock().unwrap().archive_cut = Some(bytes);
    }

    /// Require `Authorization: Bearer <token>` (or `token <token>`): none
    /// gives 404 (a private repository looks absent), a wrong one 401.
    pub fn require_token(&self, token: &str) {
        self.inner.config.lock().unwrap().token = Some(token.to_string());
    }

    /// Answer every request (or the next `times`) with `fault`.
    pub fn set_fault(&self, fault: Fault, times: Option<usize>) {
        self.inner.config.lock().unwrap().fault = Some((fault, times));
    }

    pub fn clear_fault(&self) {
        self.inner.config.lock().unwrap().fault = None;
    }

    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.inner.log.lock().unwrap().clone()
    }

    pub fn request_count(&self) -> usize {
        self.inner.log.lock().unwrap().len()
    }

    pub fn clear_log(&self) {
        self.inner.log.lock().unwrap().clear();
    }

    /// The rate limit left, as the headers report it.
    pub fn rate_limit_remaining(&self) -> u64 {
        *self.inner.remaining.lock().unwrap()
    }
}

impl Drop for GithubStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response<Body> {
    if let Some(rest) = uri.path().strip_prefix("/_codeload/") {
        return codeload(&inner, &uri, rest);
    }
    let inner2 = inner.clone();
    let headers2 = headers.clone();
    let uri2 = uri.clone();
    let fault = inner.take_fault();
    if let Some(Fault::Delay(delay)) = &fault {
        tokio::time::sleep(*delay).await;
    }
    let (reply, charged) =
        tokio::task::spawn_blocking(move || route(&inner2, &method, &uri2, &headers2, fault))
            .await
            .expect("route");
    let if_none_match = headers
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let etag = format!("W/\"{}\"", hex::encode(Sha256::digest(&reply.body)));
    let not_modified =
        reply.status == StatusCode::OK && if_none_match.as_deref() == Some(etag.as_str());
    let status = if not_modified {
        StatusCode::NOT_MODIFIED
    } else {
        reply.status
    };
    let remaining = {
        let mut remaining = inner.remaining.lock().unwrap();
        if charged && !not_modified {
            *remaining = remaining.saturating_sub(1);
        }
        *remaining
    };
    inner.log.lock().unwrap().push(LoggedRequest {
        path: uri.path().to_string(),
        query: uri.query().unwrap_or("").to_string(),
        status: status.as_u16(),
        if_none_match,
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    });
    let rate_limit = app::rate_limit(&inner, RATE_LIMIT);
    let mut builder = Response::builder()
        .status(status)
        .header("server", "github.com")
        .header("x-github-api-version-selected", "2022-11-28")
        .header("x-github-media-type", "github.v3; format=json")
        .header("x-ratelimit-limit", rate_limit.to_string())
        .header("x-ratelimit-used", (rate_limit - remaining).to_string())
        .header("x-ratelimit-resource", "core")
        .header(
            "x-github-request-id",
            format!("0000:{:X}", inner.log.lock().unwrap().len()),
        )
        .header(
            "vary",
            "Accept, Authorization, Cookie, X-GitHub-OTP,Accept-Encoding, Accept, X-Requested-With",
        );
    if !reply
        .extra
        .iter()
        .any(|(k, _)| *k == "x-ratelimit-remaining")
    {
        builder = builder
            .header("x-ratelimit-remaining", remaining.to_string())
            .header("x-ratelimit-reset", inner.reset_at.to_string());
    }
    for (name, value) in &reply.extra {
        builder = builder.header(*name, value);
    }
    if reply.status == StatusCode::OK {
        builder = builder
            .header("etag", &etag)
            .header("cache-control", "private, max-age=60, s-maxage=60");
    }
    if let Some(link) = &reply.link {
        builder = builder.header("link", link);
    }
    if not_modified {
        return builder.body(Body::empty()).expect("response");
    }
    builder
        .header("content-type", reply.content_type)
        .body(Body::from(reply.body))
        .expect("response")
}

/// The download host: the archive streamed from `git archive`, the process
/// killed if the client goes away. Not an API request: no rate limit.
fn codeload(inner: &Inner, uri: &Uri, rest: &str) -> Response<Body> {
    let child = endpoints::codeload(inner, rest);
    let status = if child.is_some() {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    inner.log.lock().unwrap().push(LoggedRequest {
        path: uri.path().to_string(),
        query: uri.query().unwrap_or("").to_string(),
        status: status.as_u16(),
        if_none_match: None,
        authorization: None,
    });
    let Some(mut child) = child else {
        return Response::builder()
            .status(status)
            .body(Body::from("Not Found"))
            .expect("response");
    };
    let stdout = child.stdout.take().expect("piped stdout");
    let mut left = inner
        .config
        .lock()
        .unwrap()
        .archive_cut
        .unwrap_or(usize::MAX);
    let body = async_stream::stream! {
        // Owned by the body: dropped (and killed) with it.
        let _child = child;
        let mut chunks = tokio_util::io::ReaderStream::new(stdout);
        while let Some(chunk) = futures::StreamExt::next(&mut chunks).await {
            match chunk {
                Ok(mut bytes) if bytes.len() >= left => {
                    yield Ok(bytes.split_to(left));
                    break;
                }
                Ok(bytes) => {
                    left -= bytes.len();
                    yield Ok(bytes);
                }
                Err(error) => yield Err(error),
            }
        }
    };
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/x-gzip")
        .body(Body::from_stream(body))
        .expect("response")
}

/// Routes one request; the flag says whether it counts against the limit.
fn route(
    inner: &Inner,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    fault: Option<Fault>,
) -> (Reply, bool) {
    if let Some(reply) = app::route_mint(inner, method, uri.path(), headers) {
        return (reply, false);
    }
    if let Some(refusal) = app::check_installation_token(inner, headers) {
        return (refusal, true);
    }
    let token = inner.config.lock().unwrap().token.clone();
    if let Some(expected) = token {
        match headers.get("authorization").and_then(|v| v.to_str().ok()) {
            None => return (Reply::not_found(), true),
            Some(given) => {
                let value = given.split_once(' ').map(|(_, t)| t).unwrap_or("");
                if value != expected {
                    return (Reply::error(401, "Bad credentials", ""), true);
                }
            }
        }
    }
    if let Some(reply) = fault.as_ref().and_then(|f| fault_reply(inner, f)) {
        return (reply, true);
    }
    let query: HashMap<String, String> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let accept = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let path = percent_decode(uri.path());
    if path == "/rate_limit" {
        return (rate_limit_reply(inner), false);
    }
    let prefix = format!("/repos/{}/{}", inner.owner, inner.name);
    let Some(rest) = path.strip_prefix(&prefix) else {
        return (Reply::not_found(), true);
    };
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1");
    let base = format!("http://{host}{prefix}");
    let reply = if rest.is_empty() {
        endpoints::repository(inner, &base)
    } else if rest == "/branches" {
        endpoints::branches(inner, &base, &query)
    } else if let Some(b) = rest.strip_prefix("/branches/") {
        endpoints::branch(inner, &base, b)
    } else if let Some(r) = rest.strip_prefix("/git/ref/") {
        endpoints::git_ref(inner, &base, r)
    } else if let Some(sha) = rest.strip_prefix("/git/trees/") {
        endpoints::tree(
            inner,
            &base,
            sha,
            query
                .get("recursive")
                .is_some_and(|v| v != "0" && v != "false"),
        )
    } else if let Some(sha) = rest.strip_prefix("/git/blobs/") {
        endpoints::blob(inner, &base, sha, accept.contains("raw"), fault.as_ref())
    } else if let Some(spec) = rest.strip_prefix("/tarball/") {
        endpoints::tarball(inner, &format!("http://{host}"), spec)
    } else if let Some(spec) = rest.strip_prefix("/compare/") {
        endpoints::compare(inner, &base, spec, &query)
    } else {
        Reply::not_found()
    };
    (reply, true)
}

fn fault_reply(inner: &Inner, fault: &Fault) -> Option<Reply> {
    let reply = match fault {
        Fault::PrimaryRateLimit => {
            let mut r = Reply::error(
                403,
                "API rate limit exceeded for user ID 1.",
                "/overview/rate-limits-for-the-rest-api",
            );
            r.extra.push(("x-ratelimit-remaining", "0".into()));
            r.extra
                .push(("x-ratelimit-reset", inner.reset_at.to_string()));
            r
        }
        Fault::SecondaryRateLimit {
            status,
            retry_after,
        } => {
            let mut r = Reply::error(
                *status,
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
                "/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits",
            );
            if let Some(seconds) = retry_after {
                r.extra.push(("retry-after", seconds.to_string()));
            }
            r
        }
        Fault::BadCredentials => Reply::error(401, "Bad credentials", ""),
        Fault::SamlRequired => {
            let mut r = Reply::error(
                403,
                "Resource protected by organization SAML enforcement. You must grant your Personal Access token access to this organization.",
                "",
            );
            r.extra.push((
                "x-github-sso",
                format!(
                    "required; url=https://github.com/orgs/{}/sso?authorization_request=AZ",
                    inner.owner
                ),
            ));
            r
        }
        Fault::NotFound => Reply::not_found(),
        Fault::EmptyRepository => {
            Reply::error(409, "Git Repository is empty.", "/git/trees#get-a-tree")
        }
        Fault::ServerError(status) => {
            let mut r = Reply::json(json!({"message": "Server Error"}));
            r.status = StatusCode::from_u16(*status).expect("status");
            r
        }
        Fault::CorruptBlobBase64 | Fault::WrongBlobContent | Fault::Delay(_) => return None,
    };
    Some(reply)
}

fn rate_limit_reply(inner: &Inner) -> Reply {
    let remaining = *inner.remaining.lock().unwrap();
    let limit = app::rate_limit(inner, RATE_LIMIT);
    let core = json!({"limit": limit, "used": limit - remaining, "remaining": remaining, "reset": inner.reset_at});
    Reply::json(json!({"resources": {"core": core}, "rate": core}))
}

fn percent_decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| std::str::from_utf8(&bytes[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        if let Some(b) = escaped {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
