//! The GitHub source (I/O): the REST API through octocrab, without cloning.
//!
//! Endpoints used, each chosen for what it costs:
//! - `GET /repos/{o}/{r}/branches` (100 per page, `Link` pagination, bounded);
//! - `GET /repos/{o}/{r}/git/ref/heads/{branch}` with `If-None-Match`: an
//!   exact ref match, and an unchanged branch is a 304 that GitHub does not
//!   count against the rate limit;
//! - `GET /repos/{o}/{r}/git/trees/{sha}?recursive=1`, walking subtrees when
//!   GitHub answers `truncated: true` (see [`walk`]);
//! - `GET /repos/{o}/{r}/git/blobs/{sha}` (base64 checked, size and object
//!   id verified);
//! - `GET /repos/{o}/{r}/compare/{base}...{head}` when complete, with the
//!   non-recursive listings of the directories holding the changed files
//!   (see [`compare`]).
//!
//! The connector only knows an API URL: GitHub, GitHub Enterprise Server
//! (`https://host/api/v3`) or the test stand-in are the same to it.

mod app_token;
mod archive;
mod client;
mod compare;
mod error;
mod jwt;
mod proxy;
mod transport;
mod walk;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures::future::BoxFuture;
use http::{StatusCode, Uri, header};
use serde::Deserialize;
use tokio::sync::Semaphore;

pub use app_token::MINT_ENDPOINT;
pub use error::GitHubError;
#[cfg(test)]
pub(crate) use jwt::generate_test_key_pem;
pub use jwt::{AppKey, AppKeyError, build_app_jwt};
pub use proxy::ProxyConnectError;

use self::client::{Answer, Client, Request, encode_ref, next_link};
use self::error::{Missing, build_error_from_response};
use super::stats::StatsRecorder;
use super::tree::build_blob_sha1;
use super::{
    Archive, Branch, Changes, Credentials, HeadCache, HeadLookup, Source, SourceHints,
    SourceResult, SourceStats, Tree, TreeLimit,
};
use crate::retry::RetryPolicy;

/// The public API of github.com.
pub const DEFAULT_API_URL: &str = "https://api.github.com";
pub(crate) const JSON: &str = "application/vnd.github+json";
/// How long one request may take unless configured otherwise.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on JSON answers other than blobs (a truncated tree is ~7 MB).
const JSON_BODY_LIMIT: usize = 64 * 1024 * 1024;
/// Bound on a ref answer (a few hundred bytes on GitHub): the request every
/// poll makes reads no more than this from any server.
const REF_BODY_LIMIT: usize = 64 * 1024;

/// How to reach one GitHub repository.
#[derive(Clone, Debug)]
pub struct GitHubConfig {
    pub owner: String,
    pub repo: String,
    /// `https://api.github.com`, or `https://host/api/v3` for Enterprise.
    pub api_url: String,
    pub credentials: Credentials,
    /// Branch pages of 100 to read at most; more branches is an error.
    pub max_branch_pages: usize,
    pub retry: RetryPolicy,
    /// Per-request timeout (connect + answer + body).
    pub request_timeout: Duration,
    /// Requests in flight at once (blobs are fetched concurrently).
    pub max_concurrent_requests: usize,
    /// As a GitHub App: an installation token with less than this left is
    /// replaced before use (tokens live an hour).
    pub app_token_refresh_margin: Duration,
    /// Send requests through this proxy (`spec.proxySecretRef`).
    pub proxy: Option<crate::source::proxy::ProxySettings>,
    /// Refuse trees with more entries than this (a walk stops there).
    pub tree_limit: TreeLimit,
    /// Which addresses the API URL, its redirects and the proxy may
    /// resolve to (default: no internal ones).
    pub egress: crate::egress::EgressPolicy,
}

impl GitHubConfig {
    /// Defaults for `owner/repo` on github.com, anonymous.
    pub fn new(owner: impl Into<String>, repo: impl Into<String>) -> Self {
        GitHubConfig {
            owner: owner.into(),
            repo: repo.into(),
            api_url: DEFAULT_API_URL.to_string(),
            credentials: Credentials::Anonymous,
            max_branch_pages: 100,
            retry: RetryPolicy::default(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_concurrent_requests: 8,
            app_token_refresh_margin: Duration::from_secs(5 * 60),
            proxy: None,
            tree_limit: TreeLimit::default(),
            egress: crate::egress::EgressPolicy::default(),
        }
    }
}

/// A repository on GitHub.
#[derive(Debug)]
pub struct GitHubRepo {
    client: Client,
    owner: String,
    name: String,
    base: Uri,
    max_branch_pages: usize,
    /// Whether the last tree this source read had to be walked (GitHub
    /// answered `truncated: true`): the next read of the same repository
    /// skips the recursive request, which would be truncated again and can
    /// cost more than the walk itself (a 100,000-entry answer).
    /// Kept across restarts through [`Source::hints`].
    last_tree_walked: AtomicBool,
    tree_limit: TreeLimit,
}

impl GitHubRepo {
    /// Builds the client; needs a Tokio runtime. Fails on an invalid API
    /// URL, owner or repository name, or SSH credentials.
    pub fn new(config: GitHubConfig) -> Result<Self, GitHubError> {
        let invalid = |detail: String| GitHubError::InvalidConfig { detail };
        for (what, value) in [("owner", &config.owner), ("repo", &config.repo)] {
            let ok = !value.is_empty()
                && value != "."
                && value != ".."
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !ok {
                return Err(invalid(format!(
                    "{what} {value:?} is not a valid GitHub name"
                )));
            }
        }
        let base: Uri = config
            .api_url
            .trim_end_matches('/')
            .parse()
            .map_err(|_| invalid(format!("apiUrl {:?} is not a URL", config.api_url)))?;
        if !matches!(base.scheme_str(), Some("https" | "http")) || base.authority().is_none() {
            return Err(invalid(format!(
                "apiUrl {:?} must be an http(s) URL",
                config.api_url
            )));
        }
        let app = match &config.credentials {
            Credentials::GitHubApp(app) => Some(app_token::shared_installation_tokens(
                &config.api_url,
                app,
                config.app_token_refresh_margin,
            )?),
            _ => None,
        };
        let octocrab = match &config.proxy {
            Some(proxy) => proxy::build_proxied_client(
                base.clone(),
                &config.credentials,
                proxy,
                &config.egress,
            )
            .map_err(|e| invalid(format!("building the proxied HTTP client: {e}")))?,
            None => {
                transport::build_shared_octocrab(base.clone(), &config.credentials, &config.egress)
                    .map_err(|e| invalid(format!("building the HTTP client: {e}")))?
            }
        };
        let repo = format!("{}/{}", config.owner, config.repo);
        Ok(GitHubRepo {
            client: Client {
                octocrab,
                repo,
                retry: config.retry,
                timeout: config.request_timeout,
                permits: Arc::new(Semaphore::new(config.max_concurrent_requests.max(1))),
                stats: StatsRecorder::default(),
                limit: std::sync::Mutex::new(None),
                app,
            },
            owner: config.owner,
            name: config.repo,
            base,
            max_branch_pages: config.max_branch_pages.max(1),
            last_tree_walked: Default::default(),
            tree_limit: config.tree_limit,
        })
    }

    fn repo_path(&self) -> String {
        format!("/repos/{}/{}", self.owner, self.name)
    }

    fn repo(&self) -> String {
        self.client.repo.clone()
    }

    async fn get_json(&self, endpoint: &'static str, path: &str) -> Result<Answer, GitHubError> {
        let req = Request {
            endpoint,
            path,
            accept: JSON,
            if_none_match: None,
            body_limit: JSON_BODY_LIMIT,
        };
        self.client.get(req).await
    }

    fn error_for(
        &self,
        endpoint: &'static str,
        answer: &Answer,
        missing: Missing<'_>,
    ) -> GitHubError {
        build_error_from_response(
            &self.client.repo,
            endpoint,
            answer.status,
            &answer.headers,
            &answer.body,
            missing,
            chrono::Utc::now(),
        )
    }

    fn parse<T: for<'de> Deserialize<'de>>(
        &self,
        endpoint: &'static str,
        answer: &Answer,
    ) -> Result<T, GitHubError> {
        serde_json::from_slice(&answer.body).map_err(|e| GitHubError::InvalidResponse {
            repo: self.repo(),
            endpoint,
            detail: e.to_string(),
        })
    }

    fn require_object_id(&self, what: &str) -> Result<(), GitHubError> {
        if super::is_object_id(what) {
            Ok(())
        } else {
            Err(GitHubError::InvalidObjectId {
                repo: self.repo(),
                what: what.to_string(),
            })
        }
    }

    /// Turns a `Link` URL into a path on the configured API host, refusing
    /// links to any other host (credentials must not leave the API host).
    fn relative_link(&self, link: &str) -> Result<String, GitHubError> {
        let uri: Uri = link.parse().map_err(|_| self.bad_link(link))?;
        if uri.authority() != self.base.authority() {
            return Err(self.bad_link(link));
        }
        Ok(uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default())
    }

    fn bad_link(&self, link: &str) -> GitHubError {
        GitHubError::InvalidResponse {
            repo: self.repo(),
            endpoint: "branches",
            detail: format!("unusable Link target {link:?}"),
        }
    }

    async fn fetch_branches_impl(&self) -> Result<Vec<Branch>, GitHubError> {
        #[derive(Deserialize)]
        struct Item {
            name: String,
            commit: Commit,
        }
        #[derive(Deserialize)]
        struct Commit {
            sha: String,
        }
        let mut path = format!("{}/branches?per_page=100", self.repo_path());
        let mut branches = Vec::new();
        for _ in 0..self.max_branch_pages {
            let answer = self.get_json("branches", &path).await?;
            if answer.status != StatusCode::OK {
                return Err(self.error_for("branches", &answer, Missing::Repository));
            }
            let page: Vec<Item> = self.parse("branches", &answer)?;
            branches.extend(page.into_iter().map(|i| Branch {
                name: i.name,
                commit_sha: i.commit.sha,
            }));
            match answer.header(header::LINK).and_then(next_link) {
                Some(next) => path = self.relative_link(next)?,
                None => {
                    branches.sort();
                    return Ok(branches);
                }
            }
        }
        Err(GitHubError::TooManyBranches {
            repo: self.repo(),
            max: self.max_branch_pages * 100,
        })
    }

    async fn fetch_branch_head_impl(
        &self,
        branch: &str,
        cached: Option<&HeadCache>,
    ) -> Result<HeadLookup, GitHubError> {
        #[derive(Deserialize)]
        struct Ref {
            object: Object,
        }
        #[derive(Deserialize)]
        struct Object {
            sha: String,
        }
        let path = format!("{}/git/ref/heads/{}", self.repo_path(), encode_ref(branch));
        let etag = cached.and_then(|c| c.etag.as_deref());
        let req = Request {
            endpoint: "ref",
            path: &path,
            accept: JSON,
            if_none_match: etag,
            body_limit: REF_BODY_LIMIT,
        };
        let answer = self.client.get(req).await?;
        match answer.status {
            StatusCode::NOT_MODIFIED if cached.is_some() => Ok(HeadLookup::Unchanged),
            StatusCode::OK => {
                let found: Ref = self.parse("ref", &answer)?;
                let etag = answer.header(header::ETAG).map(str::to_string);
                // Same commit and same validator: nothing new. Same commit
                // with a new validator is reported so the caller keeps the
                // new ETag (otherwise every later poll would be a full 200).
                if cached.is_some_and(|c| c.sha == found.object.sha && c.etag == etag) {
                    return Ok(HeadLookup::Unchanged);
                }
                Ok(HeadLookup::Changed {
                    sha: found.object.sha,
                    etag,
                })
            }
            StatusCode::NOT_FOUND => Err(self.explain_missing_branch(branch).await),
            _ => Err(self.error_for("ref", &answer, Missing::Repository)),
        }
    }

    /// A 404 on a ref means a missing branch or a missing (or invisible)
    /// repository; one request on the error path tells them apart.
    async fn explain_missing_branch(&self, branch: &str) -> GitHubError {
        match self.get_json("repository", &self.repo_path()).await {
            Ok(answer) if answer.status == StatusCode::OK => GitHubError::BranchNotFound {
                repo: self.repo(),
                branch: branch.to_string(),
            },
            Ok(answer) => self.error_for("repository", &answer, Missing::Repository),
            Err(e) => e,
        }
    }

    async fn fetch_blob_impl(&self, sha: &str, max_size: u64) -> Result<Bytes, GitHubError> {
        #[derive(Deserialize)]
        struct Blob {
            content: String,
            encoding: String,
            size: u64,
        }
        self.require_object_id(sha)?;
        let path = format!("{}/git/blobs/{sha}", self.repo_path());
        // base64 (4/3) with a newline every 60 characters, plus the JSON.
        let body_limit =
            usize::try_from(max_size.saturating_mul(14) / 10 + 64 * 1024).unwrap_or(usize::MAX);
        let req = Request {
            endpoint: "blob",
            path: &path,
            accept: JSON,
            if_none_match: None,
            body_limit,
        };
        let too_large = |size| GitHubError::BlobTooLarge {
            repo: self.repo(),
            sha: sha.to_string(),
            size,
            max: max_size,
        };
        let answer = match self.client.get(req).await {
            Err(GitHubError::ResponseTooLarge { .. }) => return Err(too_large(None)),
            other => other?,
        };
        if answer.status != StatusCode::OK {
            return Err(self.error_for("blob", &answer, Missing::Commit(sha)));
        }
        let blob: Blob = self.parse("blob", &answer)?;
        if blob.size > max_size {
            return Err(too_large(Some(blob.size)));
        }
        let corrupt = |detail: String| GitHubError::BlobCorrupt {
            repo: self.repo(),
            sha: sha.to_string(),
            detail,
        };
        if blob.encoding != "base64" {
            return Err(corrupt(format!("unexpected encoding {:?}", blob.encoding)));
        }
        let compact: Vec<u8> = blob
            .content
            .bytes()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&compact)
            .map_err(|e| corrupt(format!("base64: {e}")))?;
        if bytes.len() as u64 != blob.size {
            return Err(corrupt(format!(
                "decoded {} bytes, expected {}",
                bytes.len(),
                blob.size
            )));
        }
        if sha.len() == 40 && build_blob_sha1(&bytes) != sha.to_ascii_lowercase() {
            return Err(corrupt("content does not hash to the blob id".into()));
        }
        Ok(Bytes::from(bytes))
    }
}

impl Source for GitHubRepo {
    fn describe(&self) -> String {
        format!("github:{}", self.client.repo)
    }

    fn fetch_branches(&self) -> BoxFuture<'_, SourceResult<Vec<Branch>>> {
        Box::pin(async move { Ok(self.fetch_branches_impl().await?) })
    }

    fn fetch_branch_head<'a>(
        &'a self,
        branch: &'a str,
        cached: Option<&'a HeadCache>,
    ) -> BoxFuture<'a, SourceResult<HeadLookup>> {
        Box::pin(async move { Ok(self.fetch_branch_head_impl(branch, cached).await?) })
    }

    fn fetch_tree<'a>(
        &'a self,
        commit: &'a str,
        previous: Option<&'a Tree>,
    ) -> BoxFuture<'a, SourceResult<Tree>> {
        Box::pin(async move { Ok(walk::fetch_tree(self, commit, previous).await?) })
    }

    fn fetch_blob<'a>(&'a self, sha: &'a str, max_size: u64) -> BoxFuture<'a, SourceResult<Bytes>> {
        Box::pin(async move { Ok(self.fetch_blob_impl(sha, max_size).await?) })
    }

    fn fetch_changes<'a>(
        &'a self,
        base: &'a str,
        head: &'a str,
    ) -> BoxFuture<'a, SourceResult<Changes>> {
        Box::pin(async move { Ok(compare::fetch_changes(self, base, head).await?) })
    }

    fn fetch_archive<'a>(
        &'a self,
        commit: &'a str,
    ) -> BoxFuture<'a, SourceResult<Option<Archive>>> {
        Box::pin(async move { Ok(archive::fetch_archive(self, commit).await?) })
    }

    fn stats(&self) -> SourceStats {
        self.client.stats.snapshot()
    }

    fn hints(&self) -> SourceHints {
        SourceHints {
            tree_walked: self.last_tree_walked.load(Ordering::Relaxed),
        }
    }

    fn restore_hints(&self, hints: SourceHints) {
        self.last_tree_walked
            .store(hints.tree_walked, Ordering::Relaxed);
    }
}
