//! GitHub App installation tokens (I/O): minted with the app's JWT through
//! `POST /app/installations/{id}/access_tokens`, cached until shortly before
//! they expire, and shared by every source of the same app installation on
//! the same API host.
//!
//! One cache per installation, not per source: a token lives an hour, and a
//! source is rebuilt whenever its resource's spec or Secret changes, so a
//! per-source cache would mint again on every edit and once per resource.
//! Minting happens under the cache's lock, so requests that find no valid
//! token wait for one mint instead of each minting their own.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::client::{Client, Request};
use super::error::{Missing, build_error_from_response, error_message};
use super::jwt::{AppKey, build_app_jwt};
use super::{GitHubError, JSON};
use crate::source::credentials::GitHubAppCredentials;

/// The endpoint label of token mints in request counters and metrics.
pub const MINT_ENDPOINT: &str = "app_token";
/// Bound on the mint answer (a token and its permissions).
const MINT_BODY_LIMIT: usize = 256 * 1024;

/// An installation token and when GitHub said it expires.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct InstallationToken {
    value: String,
    expires_at: DateTime<Utc>,
}

impl InstallationToken {
    /// The `Authorization` header value for REST requests.
    pub fn header(&self) -> Option<HeaderValue> {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", self.value)).ok()?;
        value.set_sensitive(true);
        Some(value)
    }
}

/// The token cache of one app installation.
pub(crate) struct InstallationTokens {
    app_id: u64,
    installation_id: u64,
    key: AppKey,
    /// A token with less than this left is replaced before use.
    refresh_margin: Duration,
    current: tokio::sync::Mutex<Option<InstallationToken>>,
}

/// Names the installation, never the key or the token.
impl fmt::Debug for InstallationTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstallationTokens")
            .field("app_id", &self.app_id)
            .field("installation_id", &self.installation_id)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    api_url: String,
    app_id: u64,
    installation_id: u64,
    key_sha256: [u8; 32],
}

/// Every live installation cache of the process. Weak: a cache goes when
/// the last source using it is dropped.
static POOL: LazyLock<Mutex<HashMap<PoolKey, Weak<InstallationTokens>>>> =
    LazyLock::new(Mutex::default);

/// The shared cache for `app` on `api_url`, created on first use. Fails when
/// the private key does not parse (the Secret was checked, so only a
/// hand-built config gets here).
pub(crate) fn shared_installation_tokens(
    api_url: &str,
    app: &GitHubAppCredentials,
    refresh_margin: Duration,
) -> Result<Arc<InstallationTokens>, GitHubError> {
    let key = PoolKey {
        api_url: api_url.trim_end_matches('/').to_string(),
        app_id: app.app_id,
        installation_id: app.installation_id,
        key_sha256: Sha256::digest(app.private_key_pem.trim().as_bytes()).into(),
    };
    let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(tokens) = pool.get(&key).and_then(Weak::upgrade) {
        return Ok(tokens);
    }
    let private_key =
        AppKey::from_pem(&app.private_key_pem).map_err(|e| GitHubError::InvalidConfig {
            detail: format!("githubAppPrivateKey of app {}: {e}", app.app_id),
        })?;
    let tokens = Arc::new(InstallationTokens {
        app_id: app.app_id,
        installation_id: app.installation_id,
        key: private_key,
        refresh_margin,
        current: tokio::sync::Mutex::new(None),
    });
    pool.retain(|_, cache| cache.strong_count() > 0);
    pool.insert(key, Arc::downgrade(&tokens));
    Ok(tokens)
}

impl InstallationTokens {
    /// A token valid for at least the refresh margin, minting one through
    /// `client` when the cached one is missing or about to expire.
    pub async fn token(&self, client: &Client) -> Result<InstallationToken, GitHubError> {
        let mut current = self.current.lock().await;
        let margin = chrono::Duration::from_std(self.refresh_margin).unwrap_or_default();
        if let Some(token) = current.as_ref()
            && token.expires_at - margin > Utc::now()
        {
            return Ok(token.clone());
        }
        let token = self.mint(client).await?;
        *current = Some(token.clone());
        Ok(token)
    }

    /// Forgets `stale` after GitHub refused it (revoked, or expired early),
    /// unless another request already replaced it.
    pub async fn invalidate(&self, stale: &InstallationToken) {
        let mut current = self.current.lock().await;
        if current.as_ref() == Some(stale) {
            *current = None;
        }
    }

    async fn mint(&self, client: &Client) -> Result<InstallationToken, GitHubError> {
        #[derive(Deserialize)]
        struct Minted {
            token: String,
            expires_at: DateTime<Utc>,
        }
        let now = Utc::now();
        let jwt = build_app_jwt(&self.key, self.app_id, now);
        let mut authorization =
            HeaderValue::from_str(&format!("Bearer {jwt}")).expect("a JWT is base64url and dots");
        authorization.set_sensitive(true);
        let path = format!("/app/installations/{}/access_tokens", self.installation_id);
        let req = Request {
            endpoint: MINT_ENDPOINT,
            path: &path,
            accept: JSON,
            if_none_match: None,
            body_limit: MINT_BODY_LIMIT,
        };
        let answer = client.send(Method::POST, &req, Some(authorization)).await?;
        if answer.status != StatusCode::CREATED && answer.status != StatusCode::OK {
            return Err(build_mint_error(
                &client.repo,
                (self.app_id, self.installation_id),
                answer.status,
                &answer.headers,
                &answer.body,
                Utc::now(),
            ));
        }
        let minted: Minted =
            serde_json::from_slice(&answer.body).map_err(|e| GitHubError::InvalidResponse {
                repo: client.repo.clone(),
                endpoint: MINT_ENDPOINT,
                detail: e.to_string(),
            })?;
        tracing::info!(
            repo = %client.repo,
            app_id = self.app_id,
            installation_id = self.installation_id,
            expires_at = %minted.expires_at,
            "minted a GitHub App installation token"
        );
        Ok(InstallationToken {
            value: minted.token,
            expires_at: minted.expires_at,
        })
    }
}

/// Maps a refused mint to the specific error: 401 the JWT (wrong key or app
/// id, or clock skew), 404 the installation, 403 a suspended installation
/// (unless it is a rate limit). Pure: `now` is passed in.
pub(crate) fn build_mint_error(
    repo: &str,
    (app_id, installation_id): (u64, u64),
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> GitHubError {
    let repo = repo.to_string();
    let message = error_message(body);
    match status {
        StatusCode::UNAUTHORIZED => GitHubError::AppJwtRejected {
            repo,
            app_id,
            installation_id,
            message,
        },
        StatusCode::NOT_FOUND => GitHubError::AppInstallationNotFound {
            repo,
            app_id,
            installation_id,
        },
        _ => match build_error_from_response(
            &repo,
            MINT_ENDPOINT,
            status,
            headers,
            body,
            Missing::Repository,
            now,
        ) {
            GitHubError::AccessDenied { .. } => GitHubError::AppInstallationSuspended {
                repo,
                app_id,
                installation_id,
                message,
            },
            other => other,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mint_error(status: u16, headers: &[(&str, &str)], body: &str) -> GitHubError {
        build_mint_error(
            "o/r",
            (11, 22),
            StatusCode::from_u16(status).unwrap(),
            &super::super::error::build_test_headers(headers),
            body.as_bytes(),
            DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        )
    }

    #[test]
    fn refused_mints_name_the_app_and_installation() {
        let e = mint_error(
            401,
            &[],
            r#"{"message":"A JSON web token could not be decoded"}"#,
        );
        assert_eq!(e.reason(), "GithubAppJwtRejected");
        let text = e.to_string();
        assert!(
            text.contains("app 11")
                && text.contains("installation 22")
                && text.contains("could not be decoded"),
            "{text}"
        );
        let e = mint_error(404, &[], r#"{"message":"Not Found"}"#);
        assert_eq!(e.reason(), "GithubAppInstallationNotFound");
        assert!(e.to_string().contains("no installation 22"), "{e}");
        let e = mint_error(
            403,
            &[],
            r#"{"message":"This installation has been suspended"}"#,
        );
        assert_eq!(e.reason(), "GithubAppInstallationSuspended");
        assert_eq!(e.retry(), crate::source::Retry::Stalled);
    }

    #[test]
    fn a_rate_limited_mint_waits_instead_of_reporting_a_suspension() {
        let e = mint_error(
            403,
            &[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "1700000600"),
            ],
            r#"{"message":"API rate limit exceeded"}"#,
        );
        assert_eq!(e.reason(), "RateLimited");
    }
}
