//! GitHub source errors and how each maps to what the caller does next
//! (pure, no I/O). Classification of HTTP answers lives in
//! [`build_error_from_response`] so every endpoint maps statuses the same way.

use std::time::Duration;

use chrono::{DateTime, Utc};
use http::{HeaderMap, StatusCode};

use crate::{
    api::conditions::reason,
    retry::{clamp_instant, parse_retry_after, wait_from},
    source::Retry,
};

/// Everything that can go wrong talking to GitHub, one actionable kind each.
#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    #[error("github {repo}: bad credentials (the token is invalid, expired or revoked)")]
    BadCredentials { repo: String },
    #[error("github {repo}: repository not found, or the credentials have no access to it")]
    RepositoryNotFound { repo: String },
    #[error("github {repo}: access denied: {message}")]
    AccessDenied { repo: String, message: String },
    #[error("github {repo}: the organization requires SAML single sign-on for this token{}", .url.as_deref().map(|u| format!("; authorize it at {u}")).unwrap_or_default())]
    SsoRequired { repo: String, url: Option<String> },
    #[error("github {repo}: branch {branch:?} not found")]
    BranchNotFound { repo: String, branch: String },
    #[error("github {repo}: commit {commit} not found")]
    CommitNotFound { repo: String, commit: String },
    #[error("github {repo}: repository is empty (no commits yet)")]
    EmptyRepository { repo: String },
    #[error("github {repo}: rate limit exhausted until {until}")]
    RateLimited { repo: String, until: DateTime<Utc> },
    #[error("github {repo}: secondary rate limit hit, retry after {until}")]
    SecondaryRateLimited { repo: String, until: DateTime<Utc> },
    #[error("github {repo}: {endpoint} answered {status} after {attempts} attempts")]
    ServerError {
        repo: String,
        endpoint: &'static str,
        status: u16,
        attempts: u32,
    },
    #[error(
        "github {repo}: {endpoint} timed out after {attempts} attempts of {seconds}s each (spec.timeout)"
    )]
    Timeout {
        repo: String,
        endpoint: &'static str,
        attempts: u32,
        seconds: u64,
    },
    #[error("github {repo}: {endpoint}: {source}")]
    Proxy {
        repo: String,
        endpoint: &'static str,
        #[source]
        source: Box<super::proxy::ProxyConnectError>,
    },
    #[error("github {repo}: {endpoint}: {source}")]
    EgressDenied {
        repo: String,
        endpoint: &'static str,
        #[source]
        source: Box<crate::egress::EgressDenied>,
    },
    #[error("github {repo}: {endpoint} unreachable after {attempts} attempts")]
    Transport {
        repo: String,
        endpoint: &'static str,
        attempts: u32,
        #[source]
        source: Box<octocrab::Error>,
    },
    #[error("github {repo}: {endpoint} answered with a body larger than {limit} bytes")]
    ResponseTooLarge {
        repo: String,
        endpoint: &'static str,
        limit: usize,
    },
    #[error("github {repo}: {endpoint} gave an invalid response: {detail}")]
    InvalidResponse {
        repo: String,
        endpoint: &'static str,
        detail: String,
    },
    #[error("github {repo}: {endpoint} answered unexpected status {status}: {message}")]
    UnexpectedStatus {
        repo: String,
        endpoint: &'static str,
        status: u16,
        message: String,
    },
    #[error("github {repo}: blob {sha} is {} bytes, over the limit of {max} bytes", .size.map(|s| s.to_string()).unwrap_or_else(|| "more than that".into()))]
    BlobTooLarge {
        repo: String,
        sha: String,
        size: Option<u64>,
        max: u64,
    },
    #[error(
        "github {repo}: the tree of commit {commit} has more than {limit} entries, the limit set by {set_by}"
    )]
    TreeTooLarge {
        repo: String,
        commit: String,
        limit: usize,
        set_by: &'static str,
    },
    #[error("github {repo}: blob {sha} content is corrupt: {detail}")]
    BlobCorrupt {
        repo: String,
        sha: String,
        detail: String,
    },
    #[error("github {repo}: more than {max} branches; raise the branch page limit")]
    TooManyBranches { repo: String, max: usize },
    #[error("github {repo}: {what:?} is not a full object id")]
    InvalidObjectId { repo: String, what: String },
    #[error("github source configuration is invalid: {detail}")]
    InvalidConfig { detail: String },
    #[error(
        "github {repo}: GitHub app {app_id} has no installation {installation_id}: check githubAppID and githubAppInstallationID, and that the app is installed on the repository's owner"
    )]
    AppInstallationNotFound {
        repo: String,
        app_id: u64,
        installation_id: u64,
    },
    #[error(
        "github {repo}: GitHub refused the JWT of app {app_id} (installation {installation_id}): {message}; githubAppPrivateKey must be a key of app {app_id}, and the operator's clock must be right"
    )]
    AppJwtRejected {
        repo: String,
        app_id: u64,
        installation_id: u64,
        message: String,
    },
    #[error(
        "github {repo}: installation {installation_id} of GitHub app {app_id} is suspended: {message}"
    )]
    AppInstallationSuspended {
        repo: String,
        app_id: u64,
        installation_id: u64,
        message: String,
    },
}

impl GitHubError {
    /// Short static category (condition reason, event reason, metric label).
    pub fn reason(&self) -> &'static str {
        match self {
            GitHubError::BadCredentials { .. } => reason::BAD_CREDENTIALS,
            GitHubError::RepositoryNotFound { .. } => reason::REPOSITORY_NOT_FOUND,
            GitHubError::AccessDenied { .. } => reason::ACCESS_DENIED,
            GitHubError::SsoRequired { .. } => reason::SAML_SSO_REQUIRED,
            GitHubError::BranchNotFound { .. } => reason::BRANCH_NOT_FOUND,
            GitHubError::CommitNotFound { .. } => reason::COMMIT_NOT_FOUND,
            GitHubError::EmptyRepository { .. } => reason::EMPTY_REPOSITORY,
            GitHubError::RateLimited { .. } => reason::RATE_LIMITED,
            GitHubError::SecondaryRateLimited { .. } => reason::SECONDARY_RATE_LIMITED,
            GitHubError::ServerError { .. } => reason::PROVIDER_UNAVAILABLE,
            GitHubError::Timeout { .. } => reason::PROVIDER_TIMEOUT,
            GitHubError::Transport { .. } => reason::PROVIDER_UNREACHABLE,
            GitHubError::EgressDenied { .. } => reason::EGRESS_DENIED,
            GitHubError::Proxy { source, .. } => source.reason(),
            GitHubError::InvalidResponse { .. } => reason::INVALID_PROVIDER_RESPONSE,
            GitHubError::ResponseTooLarge { .. } => reason::PROVIDER_RESPONSE_TOO_LARGE,
            GitHubError::UnexpectedStatus { .. } => reason::UNEXPECTED_PROVIDER_RESPONSE,
            GitHubError::BlobTooLarge { .. } => reason::BLOB_TOO_LARGE,
            GitHubError::TreeTooLarge { .. } => reason::TREE_TOO_LARGE,
            GitHubError::BlobCorrupt { .. } => reason::BLOB_CORRUPT,
            GitHubError::TooManyBranches { .. } => reason::TOO_MANY_BRANCHES,
            GitHubError::InvalidObjectId { .. } => reason::INVALID_OBJECT_ID,
            GitHubError::InvalidConfig { .. } => reason::INVALID_SOURCE_CONFIG,
            GitHubError::AppInstallationNotFound { .. } => {
                reason::GITHUB_APP_INSTALLATION_NOT_FOUND
            }
            GitHubError::AppJwtRejected { .. } => reason::GITHUB_APP_JWT_REJECTED,
            GitHubError::AppInstallationSuspended { .. } => {
                reason::GITHUB_APP_INSTALLATION_SUSPENDED
            }
        }
    }

    /// Stall (user must act), wait until a known time, or back off.
    pub fn retry(&self) -> Retry {
        match self {
            GitHubError::RateLimited { until, .. }
            | GitHubError::SecondaryRateLimited { until, .. } => Retry::WaitUntil(*until),
            GitHubError::ServerError { .. }
            | GitHubError::Timeout { .. }
            | GitHubError::Transport { .. }
            | GitHubError::InvalidResponse { .. }
            | GitHubError::UnexpectedStatus { .. }
            | GitHubError::BlobCorrupt { .. } => Retry::Transient,
            GitHubError::BadCredentials { .. }
            | GitHubError::RepositoryNotFound { .. }
            | GitHubError::AccessDenied { .. }
            | GitHubError::SsoRequired { .. }
            | GitHubError::BranchNotFound { .. }
            | GitHubError::CommitNotFound { .. }
            | GitHubError::EmptyRepository { .. }
            | GitHubError::BlobTooLarge { .. }
            | GitHubError::TreeTooLarge { .. }
            | GitHubError::ResponseTooLarge { .. }
            | GitHubError::TooManyBranches { .. }
            | GitHubError::InvalidObjectId { .. }
            | GitHubError::InvalidConfig { .. }
            | GitHubError::EgressDenied { .. }
            | GitHubError::AppInstallationNotFound { .. }
            | GitHubError::AppJwtRejected { .. }
            | GitHubError::AppInstallationSuspended { .. } => Retry::Stalled,
            // An unreachable proxy may come back; one that refuses will not.
            GitHubError::Proxy { source, .. } => match source.as_ref() {
                super::proxy::ProxyConnectError::Unreachable { .. } => Retry::Transient,
                _ => Retry::Stalled,
            },
        }
    }
}

/// How long to wait on a secondary limit that names no time: GitHub's
/// documentation says "at least one minute".
const SECONDARY_LIMIT_DEFAULT_WAIT: Duration = Duration::from_secs(60);

/// What a 404 means at the endpoint that got it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Missing<'a> {
    Repository,
    Commit(&'a str),
}

/// Maps a non-success answer to the specific error. `now` is passed in so
/// the mapping stays pure. The times a server names are its own to choose:
/// a `Retry-After` or reset beyond an hour waits an hour, one in the past
/// or unreadable waits as if none was given, so no header can overflow the
/// time arithmetic or park a resource for years.
pub(crate) fn build_error_from_response(
    repo: &str,
    endpoint: &'static str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    missing: Missing<'_>,
    now: DateTime<Utc>,
) -> GitHubError {
    let repo = repo.to_string();
    let message = error_message(body);
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let lower = message.to_ascii_lowercase();
    let retry_after = header("retry-after").and_then(|v| parse_retry_after(&v, now));
    match status.as_u16() {
        401 => GitHubError::BadCredentials { repo },
        403 | 429 => {
            if let Some(sso) = header("x-github-sso") {
                let url = sso
                    .split(';')
                    .find_map(|p| p.trim().strip_prefix("url="))
                    .map(str::to_string);
                return GitHubError::SsoRequired { repo, url };
            }
            if lower.contains("saml") {
                return GitHubError::SsoRequired { repo, url: None };
            }
            if let Some(wait) = retry_after {
                return GitHubError::SecondaryRateLimited {
                    repo,
                    until: wait_from(now, wait),
                };
            }
            let remaining =
                header("x-ratelimit-remaining").and_then(|v| v.trim().parse::<u64>().ok());
            if remaining == Some(0) {
                let until = header("x-ratelimit-reset")
                    .and_then(|v| v.trim().parse::<i64>().ok())
                    .and_then(|s| DateTime::from_timestamp(s, 0))
                    .map(|at| clamp_instant(now, at))
                    .unwrap_or_else(|| wait_from(now, SECONDARY_LIMIT_DEFAULT_WAIT));
                return GitHubError::RateLimited { repo, until };
            }
            if status == StatusCode::TOO_MANY_REQUESTS
                || lower.contains("secondary rate limit")
                || lower.contains("abuse detection")
                || lower.contains("rate limit")
            {
                let until = wait_from(now, SECONDARY_LIMIT_DEFAULT_WAIT);
                return GitHubError::SecondaryRateLimited { repo, until };
            }
            GitHubError::AccessDenied { repo, message }
        }
        404 => match missing {
            Missing::Repository => GitHubError::RepositoryNotFound { repo },
            Missing::Commit(commit) => GitHubError::CommitNotFound {
                repo,
                commit: commit.to_string(),
            },
        },
        409 => GitHubError::EmptyRepository { repo },
        422 => match missing {
            Missing::Commit(commit) => GitHubError::CommitNotFound {
                repo,
                commit: commit.to_string(),
            },
            Missing::Repository => GitHubError::UnexpectedStatus {
                repo,
                endpoint,
                status: 422,
                message,
            },
        },
        s => GitHubError::UnexpectedStatus {
            repo,
            endpoint,
            status: s,
            message,
        },
    }
}

/// The `message` of a body in GitHub's error shape (a JSON object with a
/// string `message`), at most 200 characters. Anything else (a proxy's or
/// another host's page) is reduced to its size: a host the tenant points
/// at must not have its text copied into status, events and logs.
pub(crate) fn error_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Body {
        message: String,
    }
    match serde_json::from_slice::<Body>(body) {
        Ok(b) => b.message.chars().take(200).collect(),
        Err(_) => format!("a {}-byte body that is not GitHub's error JSON", body.len()),
    }
}

/// A header map from `(name, value)` pairs, for the classification tests.
#[cfg(test)]
pub(crate) fn build_test_headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(status: u16, headers: &[(&str, &str)], body: &str) -> GitHubError {
        let map = build_test_headers(headers);
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        build_error_from_response(
            "o/r",
            "ref",
            StatusCode::from_u16(status).unwrap(),
            &map,
            body.as_bytes(),
            Missing::Repository,
            now,
        )
    }

    #[test]
    fn a_primary_limit_waits_until_the_reset_header() {
        let e = classify(
            403,
            &[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "1700000500"),
            ],
            "{}",
        );
        assert_eq!(e.reason(), "RateLimited");
        assert_eq!(
            e.retry(),
            Retry::WaitUntil(DateTime::from_timestamp(1_700_000_500, 0).unwrap())
        );
    }

    #[test]
    fn a_secondary_limit_waits_for_retry_after_or_a_minute() {
        let e = classify(429, &[("retry-after", "30")], "{}");
        assert_eq!(
            e.retry(),
            Retry::WaitUntil(DateTime::from_timestamp(1_700_000_030, 0).unwrap())
        );
        let e = classify(
            403,
            &[],
            r#"{"message":"You have exceeded a secondary rate limit."}"#,
        );
        assert_eq!(
            (e.reason(), e.retry()),
            (
                "SecondaryRateLimited",
                Retry::WaitUntil(DateTime::from_timestamp(1_700_000_060, 0).unwrap())
            )
        );
    }

    #[test]
    fn absurd_rate_limit_headers_wait_at_most_an_hour_and_never_panic() {
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let hour = DateTime::from_timestamp(1_700_003_600, 0).unwrap();
        let minute = DateTime::from_timestamp(1_700_000_060, 0).unwrap();
        let waits = |status, headers: &[(&str, &str)]| match classify(status, headers, "{}").retry()
        {
            Retry::WaitUntil(at) => at,
            other => panic!("{headers:?}: {other:?}"),
        };
        for value in [
            "9223372036854775807",
            "18446744073709551616",
            "315360000000",
        ] {
            assert_eq!(waits(429, &[("retry-after", value)]), hour, "{value}");
        }
        // Unreadable or negative: as if absent (a minute for a 429).
        for value in ["-1", "1e30", "-9223372036854775808", "soon"] {
            assert_eq!(waits(429, &[("retry-after", value)]), minute, "{value}");
        }
        for (reset, expected) in [
            ("9223372036854775807", minute),
            ("8210266876799", hour),
            ("253402300799", hour),
            ("-1", now),
            ("0", now),
            ("1e30", minute),
        ] {
            let at = waits(
                403,
                &[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", reset)],
            );
            assert_eq!(at, expected, "reset {reset}");
        }
    }

    #[test]
    fn saml_enforcement_is_reported_with_the_authorization_url() {
        let e = classify(
            403,
            &[(
                "x-github-sso",
                "required; url=https://github.com/orgs/o/sso?authorization_request=x",
            )],
            "{}",
        );
        assert!(
            matches!(&e, GitHubError::SsoRequired { url: Some(u), .. } if u.contains("authorization_request"))
        );
        assert_eq!(e.retry(), Retry::Stalled);
    }

    #[test]
    fn other_statuses_map_to_their_own_kinds() {
        assert_eq!(
            classify(401, &[], r#"{"message":"Bad credentials"}"#).reason(),
            "BadCredentials"
        );
        assert_eq!(classify(404, &[], "{}").reason(), "RepositoryNotFound");
        assert_eq!(
            classify(409, &[], r#"{"message":"Git Repository is empty."}"#).reason(),
            "EmptyRepository"
        );
        assert_eq!(
            classify(403, &[], r#"{"message":"Must have admin rights"}"#).reason(),
            "AccessDenied"
        );
        assert_eq!(classify(418, &[], "teapot").retry(), Retry::Transient);
    }
}
