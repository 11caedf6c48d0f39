//! Credentials for sources, and building them from a Secret's data (pure).
//!
//! Reading the Kubernetes Secret is the controller's job; this module turns
//! its `data` map into [`Credentials`] with an error naming the missing or
//! malformed key. Key names follow Flux's GitRepository conventions
//! (`username`/`password`, `bearerToken`, `identity`/`known_hosts`, and
//! `githubAppID`/`githubAppInstallationID`/`githubAppPrivateKey` for a GitHub
//! App) plus `token` for GitHub personal access tokens. Secret values never
//! appear in `Debug` output or error messages.

use std::collections::BTreeMap;
use std::fmt;

use crate::api::conditions::reason;

/// Already-resolved credentials handed to a source.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    /// Anonymous access (public repositories).
    #[default]
    Anonymous,
    /// A bearer token (GitHub personal access token or app token; for git
    /// over https it is sent as the password with user `x-access-token`).
    Token(String),
    /// HTTP basic authentication.
    Basic { username: String, password: String },
    /// An SSH private key and the `known_hosts` lines to verify the server.
    SshKey {
        private_key: String,
        known_hosts: String,
    },
    /// A GitHub App installation: the source mints installation tokens.
    GitHubApp(GitHubAppCredentials),
}

/// Secret keys of a GitHub App, named as Flux names them.
pub const GITHUB_APP_ID_KEY: &str = "githubAppID";
pub const GITHUB_APP_INSTALLATION_ID_KEY: &str = "githubAppInstallationID";
pub const GITHUB_APP_PRIVATE_KEY_KEY: &str = "githubAppPrivateKey";
const GITHUB_APP_KEYS: [&str; 3] = [
    GITHUB_APP_ID_KEY,
    GITHUB_APP_INSTALLATION_ID_KEY,
    GITHUB_APP_PRIVATE_KEY_KEY,
];

/// What authenticates a GitHub App installation. The private key is kept as
/// PEM text (already checked to parse) so credentials stay comparable.
#[derive(Clone, PartialEq, Eq)]
pub struct GitHubAppCredentials {
    pub app_id: u64,
    pub installation_id: u64,
    pub private_key_pem: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Token(_) => f.write_str("Token(<redacted>)"),
            Credentials::Basic { username, .. } => {
                write!(
                    f,
                    "Basic {{ username: {username:?}, password: <redacted> }}"
                )
            }
            Credentials::SshKey { .. } => f.write_str("SshKey(<redacted>)"),
            Credentials::GitHubApp(app) => write!(f, "{app:?}"),
        }
    }
}

impl fmt::Debug for GitHubAppCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "GitHubApp {{ app_id: {}, installation_id: {}, private_key: <redacted> }}",
            self.app_id, self.installation_id
        )
    }
}

/// Why a Secret's data does not make credentials.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialsError {
    #[error("secret has no key {key:?}")]
    MissingKey { key: String },
    #[error("secret key {key:?} is empty")]
    EmptyValue { key: String },
    #[error("secret key {key:?} is not valid UTF-8")]
    NotUtf8 { key: String },
    #[error("secret has {present:?} but not {missing:?}; both are needed")]
    Incomplete {
        present: &'static str,
        missing: &'static str,
    },
    #[error("secret key {key:?} must be a positive whole number (the GitHub App's {what})")]
    AppIdInvalid {
        key: &'static str,
        what: &'static str,
    },
    #[error("secret key \"githubAppPrivateKey\" is not a PEM RSA private key: {detail}")]
    AppPrivateKeyInvalid { detail: String },
    #[error(
        "secret has none of the keys token, bearerToken, username+password, identity+known_hosts (found: {found:?})"
    )]
    NoCredentialKeys { found: Vec<String> },
}

impl CredentialsError {
    /// Short static category for condition reasons and events.
    pub fn reason(&self) -> &'static str {
        match self {
            CredentialsError::MissingKey { .. } => reason::SECRET_KEY_MISSING,
            CredentialsError::EmptyValue { .. } => reason::SECRET_KEY_EMPTY,
            CredentialsError::NotUtf8 { .. } => reason::SECRET_KEY_NOT_UTF8,
            CredentialsError::Incomplete { .. } => reason::SECRET_INCOMPLETE,
            CredentialsError::NoCredentialKeys { .. } => reason::SECRET_HAS_NO_CREDENTIALS,
            CredentialsError::AppIdInvalid { .. } => reason::GITHUB_APP_ID_INVALID,
            CredentialsError::AppPrivateKeyInvalid { .. } => reason::GITHUB_APP_PRIVATE_KEY_INVALID,
        }
    }
}

/// Builds credentials from a Secret's `data`.
///
/// With `key` (a `secretRef.key`), that key must hold a token. Without it,
/// the keys present decide: `token` or `bearerToken` → token;
/// `username` + `password` → basic; `identity` + `known_hosts` → SSH.
pub fn build_credentials_from_secret(
    data: &BTreeMap<String, Vec<u8>>,
    key: Option<&str>,
) -> Result<Credentials, CredentialsError> {
    if let Some(key) = key {
        return Ok(Credentials::Token(required(data, key)?.trim().to_string()));
    }
    for token_key in ["token", "bearerToken"] {
        if data.contains_key(token_key) {
            return Ok(Credentials::Token(
                required(data, token_key)?.trim().to_string(),
            ));
        }
    }
    match (data.contains_key("username"), data.contains_key("password")) {
        (true, true) => {
            return Ok(Credentials::Basic {
                username: required(data, "username")?,
                password: required(data, "password")?,
            });
        }
        (true, false) => return Err(incomplete("username", "password")),
        (false, true) => return Err(incomplete("password", "username")),
        (false, false) => {}
    }
    match (
        data.contains_key("identity"),
        data.contains_key("known_hosts"),
    ) {
        (true, true) => Ok(Credentials::SshKey {
            private_key: required(data, "identity")?,
            known_hosts: required(data, "known_hosts")?,
        }),
        (true, false) => Err(incomplete("identity", "known_hosts")),
        (false, true) => Err(incomplete("known_hosts", "identity")),
        (false, false) => Err(CredentialsError::NoCredentialKeys {
            found: data.keys().cloned().collect(),
        }),
    }
}

/// Builds the credentials of a GitHub source from a Secret's `data`.
///
/// When the Secret holds any `githubApp*` key, it is a GitHub App: all three
/// of `githubAppID`, `githubAppInstallationID` and `githubAppPrivateKey` are
/// needed, and `key` (the token key of `secretRef`) is not read. Otherwise
/// `key` holds a token, as [`build_credentials_from_secret`] reads it.
pub fn build_github_credentials_from_secret(
    data: &BTreeMap<String, Vec<u8>>,
    key: Option<&str>,
) -> Result<Credentials, CredentialsError> {
    let present = GITHUB_APP_KEYS.into_iter().find(|k| data.contains_key(*k));
    let Some(present) = present else {
        return build_credentials_from_secret(data, key);
    };
    if let Some(missing) = GITHUB_APP_KEYS.into_iter().find(|k| !data.contains_key(*k)) {
        return Err(incomplete(present, missing));
    }
    let number = |key: &'static str, what: &'static str| {
        required(data, key)?
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or(CredentialsError::AppIdInvalid { key, what })
    };
    let app_id = number(GITHUB_APP_ID_KEY, "App ID")?;
    let installation_id = number(GITHUB_APP_INSTALLATION_ID_KEY, "installation ID")?;
    let private_key_pem = required(data, GITHUB_APP_PRIVATE_KEY_KEY)?;
    crate::source::github::AppKey::from_pem(&private_key_pem).map_err(|e| {
        CredentialsError::AppPrivateKeyInvalid {
            detail: e.to_string(),
        }
    })?;
    Ok(Credentials::GitHubApp(GitHubAppCredentials {
        app_id,
        installation_id,
        private_key_pem,
    }))
}

fn incomplete(present: &'static str, missing: &'static str) -> CredentialsError {
    CredentialsError::Incomplete { present, missing }
}

fn required(data: &BTreeMap<String, Vec<u8>>, key: &str) -> Result<String, CredentialsError> {
    let bytes = data.get(key).ok_or_else(|| CredentialsError::MissingKey {
        key: key.to_string(),
    })?;
    let text = String::from_utf8(bytes.clone()).map_err(|_| CredentialsError::NotUtf8 {
        key: key.to_string(),
    })?;
    if text.trim().is_empty() {
        return Err(CredentialsError::EmptyValue {
            key: key.to_string(),
        });
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(pairs: &[(&str, &[u8])]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect()
    }

    #[test]
    fn a_named_key_holds_a_token_and_trailing_newlines_are_trimmed() {
        let data = secret(&[("gh", b"ghp_abc\n")]);
        assert_eq!(
            build_credentials_from_secret(&data, Some("gh")),
            Ok(Credentials::Token("ghp_abc".into()))
        );
    }

    #[test]
    fn a_named_key_that_is_missing_is_reported_by_name() {
        let err =
            build_credentials_from_secret(&secret(&[("token", b"x")]), Some("gh")).unwrap_err();
        assert_eq!(err, CredentialsError::MissingKey { key: "gh".into() });
        assert_eq!(err.reason(), "SecretKeyMissing");
    }

    #[test]
    fn username_and_password_make_basic_credentials() {
        let data = secret(&[("username", b"bot"), ("password", b"pw")]);
        assert_eq!(
            build_credentials_from_secret(&data, None),
            Ok(Credentials::Basic {
                username: "bot".into(),
                password: "pw".into()
            })
        );
    }

    #[test]
    fn half_a_credential_pair_names_the_missing_half() {
        let err =
            build_credentials_from_secret(&secret(&[("username", b"bot")]), None).unwrap_err();
        assert_eq!(
            err,
            CredentialsError::Incomplete {
                present: "username",
                missing: "password"
            }
        );
        let err =
            build_credentials_from_secret(&secret(&[("identity", b"key")]), None).unwrap_err();
        assert_eq!(
            err,
            CredentialsError::Incomplete {
                present: "identity",
                missing: "known_hosts"
            }
        );
    }

    #[test]
    fn an_ssh_identity_with_known_hosts_makes_ssh_credentials() {
        let data = secret(&[
            ("identity", b"-----BEGIN OPENSSH PRIVATE KEY-----"),
            ("known_hosts", b"host ssh-ed25519 AAAA"),
        ]);
        assert!(matches!(
            build_credentials_from_secret(&data, None),
            Ok(Credentials::SshKey { .. })
        ));
    }

    #[test]
    fn empty_or_non_utf8_values_and_unknown_keys_are_errors() {
        assert_eq!(
            build_credentials_from_secret(&secret(&[("token", b"  \n")]), None),
            Err(CredentialsError::EmptyValue {
                key: "token".into()
            })
        );
        assert_eq!(
            build_credentials_from_secret(&secret(&[("token", b"\xff")]), None),
            Err(CredentialsError::NotUtf8 {
                key: "token".into()
            })
        );
        assert_eq!(
            build_credentials_from_secret(&secret(&[("other", b"x")]), None),
            Err(CredentialsError::NoCredentialKeys {
                found: vec!["other".into()]
            })
        );
    }

    #[test]
    fn github_app_keys_make_app_credentials_and_the_token_key_is_not_read() {
        let pem = crate::source::github::generate_test_key_pem();
        let data = secret(&[
            ("githubAppID", b"12345\n"),
            ("githubAppInstallationID", b"678"),
            ("githubAppPrivateKey", pem.as_bytes()),
        ]);
        match build_github_credentials_from_secret(&data, Some("token")) {
            Ok(Credentials::GitHubApp(app)) => {
                assert_eq!((app.app_id, app.installation_id), (12345, 678));
                let shown = format!("{:?}", Credentials::GitHubApp(app));
                assert!(
                    !shown.contains("PRIVATE KEY") && shown.contains("12345"),
                    "{shown}"
                );
            }
            other => panic!("expected app credentials, got {other:?}"),
        }
        // Without app keys the token key is read as before.
        assert_eq!(
            build_github_credentials_from_secret(&secret(&[("token", b"t")]), Some("token")),
            Ok(Credentials::Token("t".into()))
        );
    }

    #[test]
    fn github_app_secrets_that_are_incomplete_or_garbled_name_the_key() {
        let err = build_github_credentials_from_secret(
            &secret(&[("githubAppID", b"1"), ("githubAppPrivateKey", b"x")]),
            Some("token"),
        )
        .unwrap_err();
        assert_eq!(err, incomplete("githubAppID", "githubAppInstallationID"));
        let err = build_github_credentials_from_secret(
            &secret(&[
                ("githubAppID", b"my-app"),
                ("githubAppInstallationID", b"2"),
                ("githubAppPrivateKey", b"x"),
            ]),
            None,
        )
        .unwrap_err();
        assert_eq!(
            (err.reason(), err.to_string().contains("\"githubAppID\"")),
            ("GithubAppIdInvalid", true)
        );
        let err = build_github_credentials_from_secret(
            &secret(&[
                ("githubAppID", b"1"),
                ("githubAppInstallationID", b"2"),
                ("githubAppPrivateKey", b"-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"),
            ]),
            None,
        )
        .unwrap_err();
        assert_eq!(err.reason(), "GithubAppPrivateKeyInvalid", "{err}");
        assert!(!err.to_string().contains("AAAA"), "{err}");
    }

    #[test]
    fn debug_output_never_shows_secret_values() {
        let shown = format!(
            "{:?} {:?}",
            Credentials::Token("ghp_secret".into()),
            Credentials::Basic {
                username: "bot".into(),
                password: "hunter2".into()
            }
        );
        assert!(
            !shown.contains("ghp_secret") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
