//! Signing in to the web page the way the Kubernetes Dashboard does: the user
//! pastes a bearer token, the operator checks it with a TokenReview and keeps
//! it in an `HttpOnly`, `SameSite=Strict` cookie scoped to `/ui`; every
//! request then carries it to the same TokenReview and SubjectAccessReview
//! as the API. An `Authorization: Bearer` header is accepted as well (curl,
//! scripts) and wins over the cookie. Writes that a browser could be tricked
//! into sending (cookie-authenticated, or with authentication off) must come
//! from the page's own origin. Pure helpers plus the two handlers (the
//! TokenReview is the only I/O).

use axum::{
    Form,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
};
use serde::Deserialize;

use super::{UiState, html_response, views};
use crate::http::AuthError;

/// The cookie that holds the token.
pub const COOKIE: &str = "projectsync_token";
/// Longest token kept in a cookie (browsers keep about 4 KiB per cookie);
/// a longer one (a large OIDC token) is sent in the Authorization header.
pub const MAX_COOKIE_TOKEN_BYTES: usize = 3_800;
/// How long the cookie lives; the token's own expiry still applies.
const COOKIE_MAX_AGE_SECS: u64 = 12 * 60 * 60;

/// Where a request's credentials came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `Authorization: Bearer`: a browser never adds it on its own.
    Header,
    /// The sign-in cookie: sent by the browser with every request to `/ui`.
    Cookie,
    /// No credentials.
    None,
}

/// The headers to authorize with (the cookie's token moved into an
/// `Authorization` header), and where the token came from.
pub fn credentials(headers: &HeaderMap) -> (HeaderMap, Source) {
    if headers.contains_key(header::AUTHORIZATION) {
        return (headers.clone(), Source::Header);
    }
    let mut out = headers.clone();
    match cookie_token(headers).and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok()) {
        Some(value) => {
            out.insert(header::AUTHORIZATION, value);
            (out, Source::Cookie)
        }
        None => (out, Source::None),
    }
}

/// The token in the sign-in cookie, if any.
pub fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_string())
        .filter(|t| valid_token_text(t))
}

/// Bearer tokens (JWTs, service account and bootstrap tokens) are made of
/// these characters; anything else cannot be a cookie value safely.
fn valid_token_text(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= MAX_COOKIE_TOKEN_BYTES
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b))
}

/// Whether a state-changing request comes from the page's own origin: the
/// browser's `Sec-Fetch-Site`, or else an `Origin` naming the `Host`.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site") {
        return site == "same-origin";
    }
    match (text("origin"), text("host")) {
        (Some(origin), Some(host)) => {
            origin == format!("http://{host}") || origin == format!("https://{host}")
        }
        _ => false,
    }
}

/// Whether a write with credentials from `source` needs the same-origin
/// check: anything a browser adds by itself does.
pub fn needs_origin_check(source: Source, auth_enabled: bool) -> bool {
    !auth_enabled || source != Source::Header
}

/// The `Set-Cookie` value that keeps `token`.
fn build_cookie(token: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{COOKIE}={token}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={COOKIE_MAX_AGE_SECS}{secure}"
    )
}

/// The `Set-Cookie` value that removes the cookie.
fn build_cleared_cookie() -> String {
    format!("{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// A `next` that stays on this site's `/ui` (no open redirect).
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if (n == "/ui" || n.starts_with("/ui/") || n.starts_with("/ui?"))
                && !n.contains("//")
                && !n.contains('\\')
                && n.len() <= 2048
                && n.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            n.to_string()
        }
        _ => "/ui".to_string(),
    }
}

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

/// `GET /ui/sign-in`.
pub async fn sign_in_page(
    State(state): State<UiState>,
    axum::extract::Query(query): axum::extract::Query<NextQuery>,
) -> Response {
    if !state.auth().enabled() {
        return Redirect::to("/ui").into_response();
    }
    html_response(
        StatusCode::OK,
        views::sign_in(None, &safe_next(query.next.as_deref())),
    )
}

#[derive(Deserialize)]
pub struct SignInForm {
    token: String,
    next: Option<String>,
}

/// `POST /ui/sign-in`: the token must pass a TokenReview before it is kept.
pub async fn sign_in(
    State(state): State<UiState>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    let next = safe_next(form.next.as_deref());
    let refuse = |message: &str| {
        html_response(
            StatusCode::UNAUTHORIZED,
            views::sign_in(Some(message), &next),
        )
    };
    if !same_origin(&headers) {
        return html_response(
            StatusCode::FORBIDDEN,
            views::sign_in(Some("sign-in must come from this page"), &next),
        );
    }
    if !state.auth().enabled() {
        return Redirect::to(&next).into_response();
    }
    let token = form.token.trim();
    if token.len() > MAX_COOKIE_TOKEN_BYTES {
        return refuse(
            "this token is too long for a cookie: send it in an Authorization: Bearer header instead",
        );
    }
    if !valid_token_text(token) {
        return refuse("this is not a bearer token");
    }
    let mut probe = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) {
        probe.insert(header::AUTHORIZATION, value);
    }
    match state.auth().identify(&probe).await {
        Ok(caller) => {
            if let crate::http::Caller::User(user) = &caller {
                tracing::info!(%user, "signed in to the web page");
            }
            let secure = headers
                .get("x-forwarded-proto")
                .is_some_and(|v| v.as_bytes() == b"https");
            let mut response = Redirect::to(&next).into_response();
            if let Ok(cookie) = HeaderValue::from_str(&build_cookie(token, secure)) {
                response.headers_mut().insert(header::SET_COOKIE, cookie);
            }
            response
        }
        Err(AuthError::Unavailable(_)) => html_response(
            StatusCode::SERVICE_UNAVAILABLE,
            views::sign_in(Some("cannot review the token now: try again"), &next),
        ),
        Err(_) => refuse("the API server did not accept this token"),
    }
}

/// `POST /ui/sign-out`.
pub async fn sign_out(headers: HeaderMap) -> Response {
    if !same_origin(&headers) {
        return (StatusCode::FORBIDDEN, "sign-out must come from this page").into_response();
    }
    let mut response = Redirect::to("/ui/sign-in").into_response();
    if let Ok(cookie) = HeaderValue::from_str(&build_cleared_cookie()) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn the_cookie_token_becomes_a_bearer_header_and_a_header_wins() {
        let (with_cookie, source) =
            credentials(&headers(&[("cookie", "a=1; projectsync_token=abc.def")]));
        assert_eq!(source, Source::Cookie);
        assert_eq!(with_cookie[header::AUTHORIZATION], "Bearer abc.def");
        let (_, source) = credentials(&headers(&[
            ("cookie", "projectsync_token=abc"),
            ("authorization", "Bearer xyz"),
        ]));
        assert_eq!(source, Source::Header);
        let (_, source) = credentials(&headers(&[("cookie", "projectsync_token=a b\"c")]));
        assert_eq!(source, Source::None);
    }

    #[test]
    fn a_write_must_come_from_the_same_origin() {
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-origin")])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(same_origin(&headers(&[
            ("origin", "http://127.0.0.1:8080"),
            ("host", "127.0.0.1:8080")
        ])));
        assert!(!same_origin(&headers(&[
            ("origin", "http://evil.example"),
            ("host", "127.0.0.1:8080")
        ])));
        assert!(!same_origin(&headers(&[("host", "127.0.0.1:8080")])));
        assert!(needs_origin_check(Source::Cookie, true));
        assert!(needs_origin_check(Source::Header, false));
        assert!(!needs_origin_check(Source::Header, true));
    }

    #[test]
    fn next_stays_on_the_page() {
        assert_eq!(safe_next(Some("/ui/namespaces/a")), "/ui/namespaces/a");
        assert_eq!(safe_next(Some("//evil.example/ui")), "/ui");
        assert_eq!(safe_next(Some("https://evil.example")), "/ui");
        assert_eq!(safe_next(Some("/ui/\\evil")), "/ui");
        assert_eq!(safe_next(None), "/ui");
    }

    #[test]
    fn the_cookie_is_http_only_and_strict() {
        let cookie = build_cookie("t", false);
        assert!(cookie.contains("HttpOnly"));
        assert!(cookie.contains("SameSite=Strict"));
        assert!(cookie.contains("Path=/ui"));
        assert!(build_cookie("t", true).ends_with("; Secure"));
    }
}
