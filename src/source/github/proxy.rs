//! The GitHub source's HTTP client when the resource names a proxy (I/O
//! when used; building it makes no request).
//!
//! Octocrab's default client has no proxy support, so this builds the
//! connector stack itself and hands it to octocrab's builder:
//! TCP → [`ProxyConnector`] (a `CONNECT` tunnel for https targets,
//! absolute-form requests for plain http, direct for `noProxy` hosts) →
//! rustls with the system roots (as octocrab's own client) → hyper's pooled
//! client → octocrab's base-URI and auth layers. The TCP dialer is the
//! egress-checked one of `transport`: the proxy's address and `noProxy`
//! targets are checked; a tunnelled target is resolved by the proxy.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use futures::future::BoxFuture;
use http::{Request, Uri};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::{
    client::{
        legacy::{
            Client,
            connect::{Connected, Connection, proxy::Tunnel},
        },
        proxy::matcher::Matcher,
    },
    rt::{TokioExecutor, TokioIo},
};
use octocrab::{OctoBody, Octocrab};
use tower::ServiceExt;

use crate::{
    api::conditions::reason,
    egress::EgressPolicy,
    source::{Credentials, proxy::ProxySettings},
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a connection through the proxy could not be made. Found in the
/// error chain of a failed request, so the source can name the proxy.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProxyConnectError {
    #[error("proxy {proxy} refused the credentials (407 Proxy Authentication Required)")]
    AuthenticationRequired { proxy: String },
    #[error("proxy {proxy} refused the tunnel to {target}")]
    TunnelRefused { proxy: String, target: String },
    #[error("cannot reach proxy {proxy}: {detail}")]
    Unreachable { proxy: String, detail: String },
}

impl ProxyConnectError {
    /// Short static category for condition reasons and events.
    pub fn reason(&self) -> &'static str {
        match self {
            ProxyConnectError::AuthenticationRequired { .. } => reason::PROXY_AUTHENTICATION_FAILED,
            ProxyConnectError::TunnelRefused { .. } => reason::PROXY_TUNNEL_REFUSED,
            ProxyConnectError::Unreachable { .. } => reason::PROXY_UNREACHABLE,
        }
    }
}

/// Builds octocrab on the proxied connector stack.
pub(crate) fn build_proxied_client(
    base: Uri,
    credentials: &Credentials,
    proxy: &ProxySettings,
    policy: &EgressPolicy,
) -> Result<Octocrab, String> {
    let matcher = Arc::new(proxy.matcher());
    let http = super::transport::build_dialer(policy);
    let connector = ProxyConnector {
        matcher: matcher.clone(),
        http,
        proxy: proxy.address.clone(),
    };
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| format!("loading the system's CA certificates: {e}"))?
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector);
    let client = Client::builder(TokioExecutor::new()).build::<_, OctoBody>(https);
    // Absolute-form requests carry the proxy credentials themselves (a
    // tunnel carries them in its CONNECT).
    let service = client.map_request(move |mut req: Request<OctoBody>| {
        if req.uri().scheme_str() == Some("http")
            && let Some(auth) = matcher
                .intercept(req.uri())
                .and_then(|i| i.basic_auth().cloned())
        {
            req.headers_mut()
                .insert(http::header::PROXY_AUTHORIZATION, auth);
        }
        req
    });
    super::transport::layered_octocrab(service, base, credentials)
}

/// Dials the target directly, or the proxy (tunnelling https targets).
#[derive(Clone)]
struct ProxyConnector {
    matcher: Arc<Matcher>,
    http: super::transport::EgressDialer,
    proxy: String,
}

impl tower::Service<Uri> for ProxyConnector {
    type Response = ProxyStream;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<ProxyStream, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        tower::Service::<Uri>::poll_ready(&mut self.http, cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let mut http = self.http.clone();
        let proxy = self.proxy.clone();
        let intercept = self.matcher.intercept(&dst);
        Box::pin(async move {
            let Some(intercept) = intercept else {
                let io = http.call(dst).await?;
                return Ok(ProxyStream { io, proxied: false });
            };
            if dst.scheme_str() == Some("https") {
                let mut tunnel = Tunnel::new(intercept.uri().clone(), http);
                if let Some(auth) = intercept.basic_auth() {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                let target = dst.authority().map(|a| a.to_string()).unwrap_or_default();
                let io = tunnel
                    .call(dst)
                    .await
                    .map_err(|e| build_tunnel_error(e, &proxy, target))?;
                Ok(ProxyStream { io, proxied: false })
            } else {
                let io = http
                    .call(intercept.uri().clone())
                    .await
                    .map_err(|e| -> BoxError {
                        if let Some(denied) = crate::egress::find_denied(e.as_ref()) {
                            return Box::new(denied.clone());
                        }
                        Box::new(ProxyConnectError::Unreachable {
                            proxy,
                            detail: e.to_string(),
                        })
                    })?;
                Ok(ProxyStream { io, proxied: true })
            }
        })
    }
}

/// hyper-util does not export its tunnel error type, only its messages
/// ("tunnel error: proxy authorization required", "... unsuccessful").
fn build_tunnel_error(
    error: impl std::error::Error + 'static,
    proxy: &str,
    target: String,
) -> BoxError {
    if let Some(denied) = crate::egress::find_denied(&error) {
        return Box::new(denied.clone());
    }
    let proxy = proxy.to_string();
    let text = error.to_string();
    Box::new(if text.ends_with("proxy authorization required") {
        ProxyConnectError::AuthenticationRequired { proxy }
    } else if text.ends_with("unsuccessful") {
        ProxyConnectError::TunnelRefused { proxy, target }
    } else {
        let cause = std::iter::successors(error.source(), |e| e.source())
            .last()
            .map(|e| format!(": {e}"));
        ProxyConnectError::Unreachable {
            proxy,
            detail: format!("{text}{}", cause.unwrap_or_default()),
        }
    })
}

/// A TCP connection that tells hyper whether it leads to a proxy (then
/// hyper writes requests in absolute form).
struct ProxyStream {
    io: TokioIo<tokio::net::TcpStream>,
    proxied: bool,
}

impl Connection for ProxyStream {
    fn connected(&self) -> Connected {
        self.io.connected().proxy(self.proxied)
    }
}

impl Read for ProxyStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl Write for ProxyStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// The proxy failure in a request error's chain, if any.
pub(crate) fn find_proxy_error<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a ProxyConnectError> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<ProxyConnectError>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}
