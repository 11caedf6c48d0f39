//! The HTTP client under every GitHub source. Building it makes no request.
//!
//! Octocrab's default builder makes a new connector per client: the system's
//! CA roots parsed again, a rustls configuration and a connection pool for
//! each resource (about 120 KiB before the first request, and one idle
//! connection each after it). Sources without a proxy share one client
//! instead, so 500 resources cost one TLS setup and one pool, and requests
//! to the same API host reuse connections across resources. A resource with
//! a proxy gets its own connector (see `proxy`), wrapped the same way.
//!
//! Every connector dials through the egress policy: names resolve through
//! [`EgressResolver`] (only allowed addresses are dialed) and IP literals
//! are checked by [`EgressConnector`], for the API URL, the archive
//! redirect the source follows itself, and the proxy. Clients are shared
//! per policy (an operator has one).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use http::{HeaderValue, Request, Response, Uri, header::USER_AGENT};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use octocrab::{
    AuthState, OctoBody, Octocrab, OctocrabBuilder,
    service::middleware::{
        auth_header::AuthHeaderLayer, base_uri::BaseUriLayer, extra_headers::ExtraHeadersLayer,
    },
};

use crate::egress::{EgressConnector, EgressPolicy, EgressResolver};
use crate::source::Credentials;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The TCP dialer under every GitHub client: names through the egress
/// resolver, literals checked before dialing.
pub(crate) type EgressDialer = EgressConnector<HttpConnector<EgressResolver>>;
type SharedClient = Client<hyper_rustls::HttpsConnector<EgressDialer>, OctoBody>;

/// A dialer enforcing `policy`. The TLS layer above decides the scheme.
pub(crate) fn build_dialer(policy: &EgressPolicy) -> EgressDialer {
    let resolver = EgressResolver::new(policy.clone());
    let mut http = HttpConnector::new_with_resolver(resolver.clone());
    http.enforce_http(false);
    EgressConnector::new(http, &resolver)
}

/// The process-wide client for sources without a proxy under `policy` (a
/// clone shares the pool). The CA roots are loaded once.
fn shared_client(policy: &EgressPolicy) -> Result<SharedClient, String> {
    static CLIENTS: OnceLock<Mutex<HashMap<EgressPolicy, SharedClient>>> = OnceLock::new();
    let clients = CLIENTS.get_or_init(Default::default);
    let mut clients = clients.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(client) = clients.get(policy) {
        return Ok(client.clone());
    }
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| format!("loading the system's CA certificates: {e}"))?
        .https_or_http()
        .enable_http1()
        .wrap_connector(build_dialer(policy));
    let client = Client::builder(TokioExecutor::new()).build(https);
    clients.insert(policy.clone(), client.clone());
    Ok(client)
}

/// Octocrab on the shared client for `policy`.
pub(crate) fn build_shared_octocrab(
    base: Uri,
    credentials: &Credentials,
    policy: &EgressPolicy,
) -> Result<Octocrab, String> {
    layered_octocrab(shared_client(policy)?, base, credentials)
}

/// Octocrab over `service`, with the layers its default builder adds: the
/// user agent, the base URI and the credentials. Retries and timeouts are
/// the source's own (see `client`).
pub(crate) fn layered_octocrab<S>(
    service: S,
    base: Uri,
    credentials: &Credentials,
) -> Result<Octocrab, String>
where
    S: tower::Service<Request<OctoBody>, Response = Response<hyper::body::Incoming>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    let (auth_header, auth_state) = match credentials {
        // An App's installation token is added per request by the client.
        Credentials::Anonymous | Credentials::GitHubApp(_) => (None, AuthState::None),
        Credentials::Token(token) => {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| "the token is not a valid header value".to_string())?;
            value.set_sensitive(true);
            (Some(value), AuthState::None)
        }
        Credentials::Basic { username, password } => (
            None,
            AuthState::BasicAuth {
                username: username.clone(),
                password: password.clone(),
            },
        ),
        Credentials::SshKey { .. } => {
            return Err("an SSH key cannot authenticate to the GitHub API; use a token".into());
        }
    };
    let headers = Arc::new(vec![(USER_AGENT, HeaderValue::from_static("octocrab"))]);
    OctocrabBuilder::new_empty()
        .with_service(service)
        .with_layer(&ExtraHeadersLayer::new(headers))
        .with_layer(&BaseUriLayer::new(base.clone()))
        .with_layer(&AuthHeaderLayer::new(auth_header, base.clone(), base))
        .with_auth(auth_state)
        .build()
        .map_err(|e| e.to_string())
}
