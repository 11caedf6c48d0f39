//! Authentication and authorization of HTTP callers the way the API server
//! (and kube-rbac-proxy) does it: the caller's `Authorization: Bearer` token
//! goes through a TokenReview, then the identity it names through a
//! SubjectAccessReview for the verb on the resource. Network I/O (two API
//! calls per fresh decision); decisions are cached briefly so a reconnecting
//! stream costs none. Reusable for any verb and resource of the API.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec, UserInfo},
    authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
};
use kube::{Api, Client, api::PostParams};
use sha2::{Digest, Sha256};

use super::cache::TtlCache;
use crate::metrics::Metrics;

/// How long a decision (positive or negative) is reused.
pub const DECISION_TTL: Duration = Duration::from_secs(10);
/// How many identities and decisions are remembered at most.
pub const DECISION_CAPACITY: usize = 4096;
/// Longest bearer token accepted (service account tokens are ~1 KB, OIDC
/// tokens a few KB).
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// What a caller asks to do: `verb` on a resource, as in a
/// SubjectAccessReview's `resourceAttributes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceAccess {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: String,
    pub name: Option<String>,
}

impl ResourceAccess {
    /// `verb` on the ProjectSync `namespace/name` (or on all of them in the
    /// namespace when `name` is `None`, e.g. for `list`).
    pub fn project_sync(verb: &str, namespace: &str, name: Option<&str>) -> Self {
        ResourceAccess {
            verb: verb.to_string(),
            group: "projectsync.dev".to_string(),
            resource: "projectsyncs".to_string(),
            subresource: None,
            namespace: namespace.to_string(),
            name: name.map(str::to_string),
        }
    }

    fn describe(&self) -> String {
        let resource = match &self.subresource {
            Some(sub) => format!("{}/{sub}", self.resource),
            None => self.resource.clone(),
        };
        format!(
            "{} {}.{} {}/{}",
            self.verb,
            resource,
            self.group,
            self.namespace,
            self.name.as_deref().unwrap_or("*")
        )
    }
}

/// Who passed the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A user the TokenReview named.
    User(String),
    /// Authentication is off (`--http-auth=false`).
    Anonymous,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token")]
    MissingToken,
    #[error("the bearer token is not valid")]
    InvalidToken,
    #[error("{user} may not {what}")]
    Forbidden { user: String, what: String },
    #[error("cannot review the caller's access: {0}")]
    Unavailable(String),
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let status = match self {
            AuthError::MissingToken | AuthError::InvalidToken => StatusCode::UNAUTHORIZED,
            AuthError::Forbidden { .. } => StatusCode::FORBIDDEN,
            AuthError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        let message = match &self {
            // The API server's failure text stays in the log.
            AuthError::Unavailable(_) => "cannot review the caller's access".to_string(),
            other => other.to_string(),
        };
        let mut response = (status, message).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Reviews callers against the API server. Cheap to clone.
#[derive(Clone)]
pub struct Authorizer {
    client: Option<Client>,
    metrics: Metrics,
    identities: Arc<Mutex<TtlCache<[u8; 32], Option<UserInfo>>>>,
    decisions: Arc<Mutex<TtlCache<[u8; 32], bool>>>,
}

impl Authorizer {
    /// Reviews every caller with `client`.
    pub fn new(client: Client, metrics: Metrics) -> Self {
        Self::build(Some(client), metrics)
    }

    /// Lets every caller through (`--http-auth=false`: a local quickstart).
    pub fn disabled(metrics: Metrics) -> Self {
        Self::build(None, metrics)
    }

    fn build(client: Option<Client>, metrics: Metrics) -> Self {
        Authorizer {
            client,
            metrics,
            identities: Arc::new(Mutex::new(TtlCache::new(DECISION_TTL, DECISION_CAPACITY))),
            decisions: Arc::new(Mutex::new(TtlCache::new(DECISION_TTL, DECISION_CAPACITY))),
        }
    }

    /// Whether callers are reviewed at all.
    pub fn enabled(&self) -> bool {
        self.client.is_some()
    }

    /// Authenticates the bearer token in `headers` only: for answers that
    /// depend on no resource (an unknown id), which still owe a caller
    /// without a valid token its 401, and for signing in to the web page.
    pub async fn identify(&self, headers: &HeaderMap) -> Result<Caller, AuthError> {
        let Some(client) = &self.client else {
            return Ok(Caller::Anonymous);
        };
        let token = bearer_token(headers).ok_or(AuthError::MissingToken)?;
        let user = self.authenticate(client, token).await?;
        Ok(Caller::User(user.username.unwrap_or_default()))
    }

    /// Authenticates the bearer token in `headers`, then authorizes `access`
    /// for the user it names.
    pub async fn authorize(
        &self,
        headers: &HeaderMap,
        access: &ResourceAccess,
    ) -> Result<Caller, AuthError> {
        let Some(client) = &self.client else {
            return Ok(Caller::Anonymous);
        };
        let token = bearer_token(headers).ok_or(AuthError::MissingToken)?;
        let user = self.authenticate(client, token).await?;
        let username = user.username.clone().unwrap_or_default();
        let key = build_decision_key(&user, access);
        let cached = lock(&self.decisions).get(&key, Instant::now());
        let allowed = match cached {
            Some(allowed) => allowed,
            None => {
                let allowed = self.review_access(client, &user, access).await?;
                lock(&self.decisions).insert(key, allowed, Instant::now());
                allowed
            }
        };
        if allowed {
            Ok(Caller::User(username))
        } else {
            Err(AuthError::Forbidden {
                user: username,
                what: access.describe(),
            })
        }
    }

    async fn authenticate(&self, client: &Client, token: &str) -> Result<UserInfo, AuthError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(cached) = lock(&self.identities).get(&key, Instant::now()) {
            return cached.ok_or(AuthError::InvalidToken);
        }
        self.metrics
            .http_auth_reviews
            .with_label_values(&["token"])
            .inc();
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: None,
            },
            ..Default::default()
        };
        let answer = Api::<TokenReview>::all(client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|error| {
                tracing::warn!(%error, "TokenReview failed");
                AuthError::Unavailable(error.to_string())
            })?;
        let user = answer
            .status
            .filter(|s| s.authenticated == Some(true))
            .and_then(|s| s.user)
            .filter(|u| u.username.as_deref().is_some_and(|n| !n.is_empty()));
        lock(&self.identities).insert(key, user.clone(), Instant::now());
        user.ok_or(AuthError::InvalidToken)
    }

    async fn review_access(
        &self,
        client: &Client,
        user: &UserInfo,
        access: &ResourceAccess,
    ) -> Result<bool, AuthError> {
        self.metrics
            .http_auth_reviews
            .with_label_values(&["access"])
            .inc();
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username.clone(),
                groups: user.groups.clone(),
                uid: user.uid.clone(),
                extra: user.extra.clone(),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(access.verb.clone()),
                    group: Some(access.group.clone()),
                    resource: Some(access.resource.clone()),
                    subresource: access.subresource.clone(),
                    namespace: Some(access.namespace.clone()),
                    name: access.name.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = Api::<SubjectAccessReview>::all(client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|error| {
                tracing::warn!(%error, "SubjectAccessReview failed");
                AuthError::Unavailable(error.to_string())
            })?;
        Ok(answer.status.is_some_and(|s| s.allowed))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The token of `Authorization: Bearer <token>`, if well formed.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= MAX_TOKEN_BYTES)
        .then_some(token)
}

/// One digest of everything the SubjectAccessReview depends on: the
/// identity (name, uid, groups, extra) and the access asked for.
fn build_decision_key(user: &UserInfo, access: &ResourceAccess) -> [u8; 32] {
    let mut hasher = Sha256::new();
    let mut field = |value: &str| {
        hasher.update((value.len() as u64).to_le_bytes());
        hasher.update(value.as_bytes());
    };
    field(user.username.as_deref().unwrap_or_default());
    field(user.uid.as_deref().unwrap_or_default());
    for group in user.groups.iter().flatten() {
        field("group");
        field(group);
    }
    for (key, values) in user.extra.iter().flatten() {
        field("extra");
        field(key);
        for value in values {
            field(value);
        }
    }
    field("access");
    field(&access.verb);
    field(&access.group);
    field(&access.resource);
    field(access.subresource.as_deref().unwrap_or_default());
    field(&access.namespace);
    field(access.name.as_deref().unwrap_or("\0all"));
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        headers
    }

    #[test]
    fn only_a_bearer_authorization_carries_a_token() {
        assert_eq!(bearer_token(&headers("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&headers("bearer  abc ")), Some("abc"));
        assert_eq!(bearer_token(&headers("Basic abc")), None);
        assert_eq!(bearer_token(&headers("Bearer ")), None);
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }

    #[test]
    fn a_decision_is_keyed_on_the_identity_and_the_access() {
        let alice = UserInfo {
            username: Some("alice".into()),
            groups: Some(vec!["dev".into()]),
            ..Default::default()
        };
        let mut alice_admin = alice.clone();
        alice_admin.groups = Some(vec!["dev".into(), "admin".into()]);
        let get_a = ResourceAccess::project_sync("get", "ns", Some("a"));
        let get_b = ResourceAccess::project_sync("get", "ns", Some("b"));
        let patch_a = ResourceAccess::project_sync("patch", "ns", Some("a"));
        let key = build_decision_key(&alice, &get_a);
        assert_eq!(key, build_decision_key(&alice, &get_a));
        assert_ne!(key, build_decision_key(&alice, &get_b));
        assert_ne!(key, build_decision_key(&alice, &patch_a));
        assert_ne!(key, build_decision_key(&alice_admin, &get_a));
    }
}
