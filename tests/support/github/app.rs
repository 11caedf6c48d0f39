//! The stand-in's GitHub App mode: `POST /app/installations/{id}/access_tokens`
//! verifies the app's JWT as GitHub does (RS256 signature with the app's
//! public key, `iss`, and the `iat`/`exp` window) and mints installation
//! tokens with a lifetime the test chooses; the REST endpoints then accept
//! only a live installation token and answer 401 `Bad credentials` for an
//! expired or revoked one. Rate-limit headers show an installation's budget.
//!
//! Keys are made at test time with `openssl` ([`TestAppKey::generate`]), so
//! no private key is committed.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, Method, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use serde_json::{Value, json};

use super::endpoints::Reply;
use super::{GithubStandIn, Inner};

/// The hourly limit GitHub gives an installation (its maximum).
pub const INSTALLATION_RATE_LIMIT: u64 = 12_500;
/// GitHub refuses JWTs whose `exp` is more than ten minutes ahead.
const MAX_JWT_LIFETIME_SECS: i64 = 600;

/// A throwaway RSA key pair for one test.
pub struct TestAppKey {
    /// PKCS#1 PEM (`BEGIN RSA PRIVATE KEY`), as GitHub hands it out.
    pub private_key_pem: String,
    /// DER `RSAPublicKey`, what the stand-in verifies with.
    pub public_key_der: Vec<u8>,
}

impl TestAppKey {
    /// A fresh 2048-bit key made by `openssl`.
    pub fn generate() -> Self {
        let private = Command::new("openssl")
            .args(["genrsa", "-traditional", "2048"])
            .stderr(Stdio::null())
            .output()
            .expect("run openssl genrsa");
        assert!(private.status.success(), "openssl genrsa failed");
        let mut public = Command::new("openssl")
            .args(["rsa", "-RSAPublicKey_out", "-outform", "DER"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run openssl rsa");
        std::io::Write::write_all(&mut public.stdin.take().expect("stdin"), &private.stdout)
            .expect("write the key to openssl");
        let public = public.wait_with_output().expect("openssl rsa");
        assert!(public.status.success(), "openssl rsa failed");
        TestAppKey {
            private_key_pem: String::from_utf8(private.stdout).expect("PEM is text"),
            public_key_der: public.stdout,
        }
    }
}

/// What the stand-in knows of the one app it serves.
pub(super) struct AppMode {
    app_id: u64,
    installation_id: u64,
    public_key_der: Vec<u8>,
    token_lifetime: Duration,
    suspended: bool,
    /// Minted tokens: expiry (unix seconds) and whether revoked.
    tokens: HashMap<String, (u64, bool)>,
    minted: usize,
    refused: usize,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

impl GithubStandIn {
    /// Serves as GitHub App `app_id` installed as `installation_id`, whose
    /// JWTs verify with `public_key_der`. From now on REST requests need an
    /// installation token; tokens live an hour unless
    /// [`Self::set_app_token_lifetime`] says otherwise.
    pub fn enable_app(&self, app_id: u64, installation_id: u64, public_key_der: &[u8]) {
        self.inner.config.lock().unwrap().app = Some(AppMode {
            app_id,
            installation_id,
            public_key_der: public_key_der.to_vec(),
            token_lifetime: Duration::from_secs(3600),
            suspended: false,
            tokens: HashMap::new(),
            minted: 0,
            refused: 0,
        });
        *self.inner.remaining.lock().unwrap() = INSTALLATION_RATE_LIMIT;
    }

    /// Lifetime of tokens minted from now on.
    pub fn set_app_token_lifetime(&self, lifetime: Duration) {
        self.with_app(|app| app.token_lifetime = lifetime);
    }

    /// Revokes every token minted so far (as `DELETE /installation/token`
    /// or an admin would): they answer 401 from now on.
    pub fn revoke_app_tokens(&self) {
        self.with_app(|app| app.tokens.values_mut().for_each(|t| t.1 = true));
    }

    /// Suspends the installation: mints answer 403.
    pub fn suspend_app_installation(&self) {
        self.with_app(|app| app.suspended = true);
    }

    /// Installation tokens minted.
    pub fn app_tokens_minted(&self) -> usize {
        self.with_app(|app| app.minted)
    }

    /// Mint requests refused (bad JWT, unknown installation, suspended).
    pub fn app_mints_refused(&self) -> usize {
        self.with_app(|app| app.refused)
    }

    fn with_app<T>(&self, f: impl FnOnce(&mut AppMode) -> T) -> T {
        f(self
            .inner
            .config
            .lock()
            .unwrap()
            .app
            .as_mut()
            .expect("enable_app first"))
    }
}

/// The hourly limit the headers report.
pub(super) fn rate_limit(inner: &Inner, default: u64) -> u64 {
    match inner.config.lock().unwrap().app {
        Some(_) => INSTALLATION_RATE_LIMIT,
        None => default,
    }
}

/// Answers a token mint; `None` when the request is not one (or no app is
/// configured).
pub(super) fn route_mint(
    inner: &Inner,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Option<Reply> {
    let id = path
        .strip_prefix("/app/installations/")?
        .strip_suffix("/access_tokens")?;
    let mut config = inner.config.lock().unwrap();
    let app = config.app.as_mut()?;
    if method != Method::POST {
        return Some(Reply::error(404, "Not Found", ""));
    }
    let jwt = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let now = unix_now() as i64;
    let refusal = match verify_jwt(app, jwt, now) {
        Err(message) => Some(Reply::error(401, message, "")),
        Ok(()) if id != app.installation_id.to_string() => Some(Reply::error(
            404,
            "Not Found",
            "/apps/apps#create-an-installation-access-token-for-an-app",
        )),
        Ok(()) if app.suspended => Some(Reply::error(
            403,
            "This installation has been suspended",
            "/apps/apps#create-an-installation-access-token-for-an-app",
        )),
        Ok(()) => None,
    };
    if let Some(reply) = refusal {
        app.refused += 1;
        return Some(reply);
    }
    let token = format!("ghs_{}", uuid::Uuid::new_v4().simple());
    let expires_at = unix_now() + app.token_lifetime.as_secs();
    app.tokens.insert(token.clone(), (expires_at, false));
    app.minted += 1;
    let expires = chrono::DateTime::from_timestamp(expires_at as i64, 0)
        .expect("time")
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut reply = Reply::json(json!({
        "token": token,
        "expires_at": expires,
        "permissions": {"contents": "read", "metadata": "read"},
        "repository_selection": "selected",
    }));
    reply.status = StatusCode::CREATED;
    Some(reply)
}

/// For REST requests in app mode: the refusal of a request without a live
/// installation token (none: 404, as for a private repository; an unknown,
/// expired or revoked one: 401). `None` lets it through, as it does
/// everything outside app mode.
pub(super) fn check_installation_token(inner: &Inner, headers: &HeaderMap) -> Option<Reply> {
    let config = inner.config.lock().unwrap();
    let app = config.app.as_ref()?;
    let Some(given) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return Some(Reply::not_found());
    };
    let token = given
        .strip_prefix("token ")
        .or_else(|| given.strip_prefix("Bearer "))
        .unwrap_or("");
    let live = app
        .tokens
        .get(token)
        .is_some_and(|(expires_at, revoked)| !revoked && *expires_at > unix_now());
    (!live).then(|| Reply::error(401, "Bad credentials", ""))
}

/// GitHub's checks of an app JWT, with its messages.
fn verify_jwt(app: &AppMode, jwt: &str, now: i64) -> Result<(), &'static str> {
    const UNDECODABLE: &str = "A JSON web token could not be decoded";
    let parts: Vec<&str> = jwt.split('.').collect();
    let [header, claims, signature] = parts[..] else {
        return Err(UNDECODABLE);
    };
    let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).map_err(|_| UNDECODABLE);
    let header: Value = serde_json::from_slice(&decode(header)?).map_err(|_| UNDECODABLE)?;
    if header["alg"] != "RS256" {
        return Err(UNDECODABLE);
    }
    let signed = format!("{}.{}", parts[0], parts[1]);
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &app.public_key_der)
        .verify(signed.as_bytes(), &decode(signature)?)
        .map_err(|_| UNDECODABLE)?;
    let claims: Value = serde_json::from_slice(&decode(claims)?).map_err(|_| UNDECODABLE)?;
    let issuer = match &claims["iss"] {
        Value::String(s) => s.parse::<u64>().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    };
    if issuer != Some(app.app_id) {
        return Err(UNDECODABLE);
    }
    let (Some(iat), Some(exp)) = (claims["iat"].as_i64(), claims["exp"].as_i64()) else {
        return Err(
            "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires",
        );
    };
    if iat > now + 60 {
        return Err("'Issued at' claim ('iat') must be an Integer representing a time in the past");
    }
    if exp <= now {
        return Err(
            "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires",
        );
    }
    if exp > now + MAX_JWT_LIFETIME_SECS || exp - iat > MAX_JWT_LIFETIME_SECS {
        return Err("'Expiration time' claim ('exp') is too far in the future");
    }
    Ok(())
}
