//! The web page under `/ui`, served by the operator on the API listener:
//! server-rendered HTML (so `curl -H 'Authorization: Bearer ...'` reads it),
//! with a small embedded script that follows runs live over the progress
//! stream. Every page authorizes its caller the way the API does
//! ([`crate::http::auth`]): `list` for a namespace's overview, `get` for a
//! resource's pages, `patch` for its controls, which are rendered only for
//! callers allowed to use them and checked again on every POST. Handlers do
//! I/O against the API server (reviews) and Postgres (history, files,
//! search); the markup is built by pure functions in [`views`].

mod actions;
mod assets;
mod model;
mod pages;
mod session;
mod views;

use std::net::SocketAddr;

use axum::{
    Router,
    http::{HeaderValue, StatusCode, header},
    middleware,
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use maud::Markup;

use super::ApiState;

pub use session::COOKIE;

/// How the web page authenticates its users (`--ui-auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UiAuth {
    /// Sign in with a bearer token (kept in an HttpOnly cookie) or send it
    /// in an `Authorization: Bearer` header.
    Token,
    /// No authentication: everyone who reaches the listener sees every
    /// resource and may use every control. For a local quickstart only.
    None,
}

/// Why `--ui-auth` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UiConfigError {
    #[error(
        "--ui-auth=none on {addr}, which is not a loopback address: anyone who reaches it could \
         read every mirror and use every control; listen on 127.0.0.1, or add \
         --insecure-ui-auth-none-on-any-address if this network is really private"
    )]
    NoAuthOffLoopback { addr: SocketAddr },
}

/// Refuses a web page without authentication on a listener others reach,
/// unless the insecure flag says so.
pub fn check_ui_auth(
    mode: UiAuth,
    addr: SocketAddr,
    insecure_any_address: bool,
) -> Result<(), UiConfigError> {
    if mode == UiAuth::None && !addr.ip().is_loopback() && !insecure_any_address {
        return Err(UiConfigError::NoAuthOffLoopback { addr });
    }
    Ok(())
}

/// What the page's handlers share.
#[derive(Clone)]
pub struct UiState {
    /// The progress hub, the resource index, the store, the actions and
    /// the page's own authorizer (disabled with `--ui-auth=none`, whatever
    /// `--http-auth` says).
    pub api: ApiState,
}

impl UiState {
    fn auth(&self) -> &crate::http::Authorizer {
        &self.api.auth
    }
}

/// The `/ui` routes.
pub fn router(state: UiState) -> Router {
    let resource = "/ui/namespaces/{namespace}/projectsyncs/{name}";
    Router::new()
        .route("/ui", get(pages::overview))
        .route("/ui/", get(|| async { Redirect::permanent("/ui") }))
        .route(
            "/ui/sign-in",
            get(session::sign_in_page).post(session::sign_in),
        )
        .route("/ui/sign-out", post(session::sign_out))
        .route("/ui/namespaces/{namespace}", get(pages::namespace_overview))
        .route(resource, get(pages::project))
        .route(&format!("{resource}/syncs/{{sync}}"), get(pages::run))
        .route(&format!("{resource}/search"), get(pages::search))
        .route(&format!("{resource}/events"), get(pages::events))
        .route(
            &format!("{resource}/actions/{{action}}"),
            post(actions::act),
        )
        .route("/ui/assets/{file}", get(assets::asset))
        .layer(middleware::map_response(harden))
        .with_state(state)
}

/// Headers on every page: no framing, no inline or foreign script, no
/// sniffing, no caching of pages that hold a user's data.
async fn harden(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let set = |headers: &mut axum::http::HeaderMap, name, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    );
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::REFERRER_POLICY, "same-origin");
    if !headers.contains_key(header::CACHE_CONTROL) {
        set(headers, header::CACHE_CONTROL, "no-store");
    }
    response
}

/// An HTML answer.
fn html_response(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_without_authentication_is_refused_off_loopback() {
        let loopback: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert!(check_ui_auth(UiAuth::None, loopback, false).is_ok());
        assert!(check_ui_auth(UiAuth::Token, any, false).is_ok());
        let refused = check_ui_auth(UiAuth::None, any, false).unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("--insecure-ui-auth-none-on-any-address")
        );
        assert!(check_ui_auth(UiAuth::None, any, true).is_ok());
    }
}
