//! GitHub App JWTs (pure, no I/O): the app's RSA private key read from PEM,
//! and the short-lived RS256 token that authenticates the app itself when it
//! asks GitHub for an installation token.
//!
//! Signed with `ring` (already in the build through rustls) rather than
//! octocrab's `jwt` features, which would add `jsonwebtoken` and a second
//! crypto stack for one signature an hour.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};

/// How far `iat` is backdated: GitHub's recommendation against clock drift
/// between the operator and GitHub.
pub const ISSUED_AT_BACKDATE_SECS: i64 = 60;
/// How long a JWT is valid after `now`. GitHub refuses `exp` more than ten
/// minutes ahead of its clock; nine leaves room for a clock running fast.
pub const LIFETIME_SECS: i64 = 9 * 60;

/// A GitHub App's RSA private key, parsed once.
pub struct AppKey {
    pair: RsaKeyPair,
}

/// Never prints key material.
impl fmt::Debug for AppKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AppKey(<redacted>)")
    }
}

/// Why a `githubAppPrivateKey` value is not a usable key. The detail names
/// what was found, never the key's content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AppKeyError(String);

impl AppKey {
    /// Reads a PEM RSA private key: `RSA PRIVATE KEY` (PKCS#1, what GitHub's
    /// "Generate a private key" button downloads) or `PRIVATE KEY` (PKCS#8,
    /// RSA only). Keys under 2048 bits are refused.
    pub fn from_pem(pem_text: &str) -> Result<Self, AppKeyError> {
        let block = pem::parse(pem_text.trim().as_bytes()).map_err(|_| {
            AppKeyError(
                "not a PEM block (expected -----BEGIN RSA PRIVATE KEY----- as downloaded from the app's settings)"
                    .into(),
            )
        })?;
        let rejected = |e: ring::error::KeyRejected| {
            AppKeyError(format!(
                "the {} block is not a usable RSA key ({e})",
                block.tag()
            ))
        };
        let pair = match block.tag() {
            "RSA PRIVATE KEY" => RsaKeyPair::from_der(block.contents()).map_err(rejected)?,
            "PRIVATE KEY" => RsaKeyPair::from_pkcs8(block.contents()).map_err(rejected)?,
            other => {
                return Err(AppKeyError(format!(
                    "a PEM {other:?} block is not an RSA private key (expected RSA PRIVATE KEY)"
                )));
            }
        };
        Ok(AppKey { pair })
    }

    /// The public half as DER `RSAPublicKey` (PKCS#1), to compare keys in
    /// tests and logs without showing the private half.
    pub fn public_key_der(&self) -> &[u8] {
        ring::signature::KeyPair::public_key(&self.pair).as_ref()
    }
}

/// The JWT that authenticates app `app_id` at `now`: RS256, `iat` backdated
/// by [`ISSUED_AT_BACKDATE_SECS`], `exp` [`LIFETIME_SECS`] ahead, `iss` the
/// app id.
pub fn build_app_jwt(key: &AppKey, app_id: u64, now: DateTime<Utc>) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let claims = serde_json::json!({
        "iat": now.timestamp() - ISSUED_AT_BACKDATE_SECS,
        "exp": now.timestamp() + LIFETIME_SECS,
        "iss": app_id.to_string(),
    });
    let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{claims}");
    let mut signature = vec![0; key.pair.public().modulus_len()];
    key.pair
        .sign(
            &RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            signing_input.as_bytes(),
            &mut signature,
        )
        .expect("the buffer has the modulus length and PKCS#1 v1.5 padding needs no randomness");
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// A throwaway 2048-bit RSA key in PKCS#1 PEM (GitHub's format), made by
/// `openssl` at test time so no private key is committed.
#[cfg(test)]
pub(crate) fn generate_test_key_pem() -> String {
    let out = std::process::Command::new("openssl")
        .args(["genrsa", "-traditional", "2048"])
        .output()
        .expect("openssl makes the test key");
    assert!(out.status.success(), "openssl genrsa failed");
    String::from_utf8(out.stdout).expect("PEM is text")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};

    #[test]
    fn the_jwt_is_signed_rs256_with_github_claims() {
        let key = AppKey::from_pem(&generate_test_key_pem()).expect("a valid key");
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let jwt = build_app_jwt(&key, 42, now);
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let decode = |s: &str| URL_SAFE_NO_PAD.decode(s).unwrap();
        let header: serde_json::Value = serde_json::from_slice(&decode(parts[0])).unwrap();
        assert_eq!(header["alg"], "RS256");
        let claims: serde_json::Value = serde_json::from_slice(&decode(parts[1])).unwrap();
        assert_eq!(
            (&claims["iss"], &claims["iat"], &claims["exp"]),
            (
                &serde_json::json!("42"),
                &serde_json::json!(1_699_999_940),
                &serde_json::json!(1_700_000_540)
            )
        );
        let public = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, key.public_key_der());
        let signed = format!("{}.{}", parts[0], parts[1]);
        assert!(public.verify(signed.as_bytes(), &decode(parts[2])).is_ok());
        assert!(public.verify(b"other", &decode(parts[2])).is_err());
    }

    #[test]
    fn text_that_is_not_a_pem_rsa_key_is_refused_without_echoing_it() {
        let not_pem = AppKey::from_pem("ghp_secret_token_value").unwrap_err();
        assert!(not_pem.to_string().contains("not a PEM block"), "{not_pem}");
        assert!(!not_pem.to_string().contains("ghp_secret"));
        let cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let err = AppKey::from_pem(cert).unwrap_err();
        assert!(
            err.to_string()
                .contains("\"CERTIFICATE\" block is not an RSA private key"),
            "{err}"
        );
        let garbled = "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        let err = AppKey::from_pem(garbled).unwrap_err();
        assert!(err.to_string().contains("not a usable RSA key"), "{err}");
    }
}
