//! The HTTP(S) proxy of one resource, read from the Secret named by
//! `spec.proxySecretRef` (pure, no I/O): `address` (`http://host:port`),
//! optional `username` and `password`, optional `noProxy` (comma-separated
//! hosts, domains, IPs and CIDRs, the usual `no_proxy` syntax).
//!
//! The GitHub source tunnels through it with `CONNECT` (absolute-form for
//! plain http); the git source hands it to git as `http.proxy` plus
//! `no_proxy`. SSH and git:// remotes never use it.

use std::collections::BTreeMap;

use hyper_util::client::proxy::matcher::Matcher;

/// Secret keys of a proxy Secret.
pub const ADDRESS_KEY: &str = "address";
pub const USERNAME_KEY: &str = "username";
pub const PASSWORD_KEY: &str = "password";
pub const NO_PROXY_KEY: &str = "noProxy";

/// Where and how to reach the proxy.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxySettings {
    /// `http://host:port`, without credentials.
    pub address: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Hosts that bypass the proxy (`no_proxy` syntax).
    pub no_proxy: String,
}

/// Never prints the password.
impl std::fmt::Debug for ProxySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxySettings")
            .field("address", &self.address)
            .field("username", &self.username)
            .field("no_proxy", &self.no_proxy)
            .finish_non_exhaustive()
    }
}

/// A proxy Secret that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyError {
    #[error("proxy secret has no key \"address\" (an http://host:port URL)")]
    MissingAddress,
    #[error("proxy secret key {key:?} is not valid UTF-8")]
    NotUtf8 { key: &'static str },
    #[error("proxy address {address:?} is not an http://host:port URL: {detail}")]
    InvalidAddress {
        address: String,
        detail: &'static str,
    },
    #[error("proxy secret has \"password\" but no \"username\"")]
    PasswordWithoutUsername,
}

impl ProxyError {
    /// Short static category for condition reasons and events: one for
    /// every variant, as the fix is always in the Secret.
    pub fn reason(&self) -> &'static str {
        crate::api::conditions::reason::PROXY_SECRET_INVALID
    }
}

/// Reads a proxy Secret's `data`.
pub fn build_proxy_from_secret(
    data: &BTreeMap<String, Vec<u8>>,
) -> Result<ProxySettings, ProxyError> {
    let text = |key: &'static str| -> Result<Option<String>, ProxyError> {
        match data.get(key) {
            None => Ok(None),
            Some(bytes) => {
                let value = std::str::from_utf8(bytes)
                    .map_err(|_| ProxyError::NotUtf8 { key })?
                    .trim();
                Ok((!value.is_empty()).then(|| value.to_string()))
            }
        }
    };
    let address = text(ADDRESS_KEY)?.ok_or(ProxyError::MissingAddress)?;
    // Never repeats credentials someone wrote into the address.
    let shown = crate::source::git::redact_url(&address);
    let invalid = |detail| ProxyError::InvalidAddress {
        address: shown.clone(),
        detail,
    };
    let uri: http::Uri = address.parse().map_err(|_| invalid("not a URL"))?;
    if uri.scheme_str() != Some("http") {
        return Err(invalid(
            "only http:// proxies are supported (the tunnel to https targets is still TLS)",
        ));
    }
    let Some(authority) = uri.authority() else {
        return Err(invalid("no host"));
    };
    if authority.as_str().contains('@') {
        return Err(invalid(
            "put credentials in the username and password keys, not in the address",
        ));
    }
    if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
        return Err(invalid("a proxy address has no path"));
    }
    let username = text(USERNAME_KEY)?;
    let password = text(PASSWORD_KEY)?;
    if username.is_none() && password.is_some() {
        return Err(ProxyError::PasswordWithoutUsername);
    }
    Ok(ProxySettings {
        address: format!("http://{authority}"),
        username,
        password,
        no_proxy: text(NO_PROXY_KEY)?.unwrap_or_default(),
    })
}

impl ProxySettings {
    /// The proxy URL with percent-encoded credentials, as git's
    /// `http.proxy` and curl-style matchers take it. Holds the password:
    /// never log it.
    pub fn url_with_credentials(&self) -> String {
        match &self.username {
            None => self.address.clone(),
            Some(user) => {
                let host = self.address.trim_start_matches("http://");
                let pass = self
                    .password
                    .as_deref()
                    .map(|p| format!(":{}", percent_encode(p, b"")))
                    .unwrap_or_default();
                format!("http://{}{pass}@{host}", percent_encode(user, b""))
            }
        }
    }

    /// Which requests go through the proxy (all http and https ones, except
    /// hosts matching `noProxy`).
    pub fn matcher(&self) -> Matcher {
        Matcher::builder()
            .all(self.url_with_credentials())
            .no(self.no_proxy.clone())
            .build()
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters and the
/// bytes in `keep` (a user name in a URL keeps none; a git ref path keeps `/`).
pub(crate) fn percent_encode(text: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') || keep.contains(&b)
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn a_proxy_secret_reads_address_credentials_and_no_proxy() {
        let proxy = build_proxy_from_secret(&secret(&[
            ("address", "http://proxy.internal:3128"),
            ("username", "bot"),
            ("password", "p@ss:word"),
            ("noProxy", "internal.example, 10.0.0.0/8"),
        ]))
        .unwrap();
        assert_eq!(proxy.address, "http://proxy.internal:3128");
        assert_eq!(
            proxy.url_with_credentials(),
            "http://bot:p%40ss%3Aword@proxy.internal:3128"
        );
        assert!(!format!("{proxy:?}").contains("p@ss"));
    }

    #[test]
    fn bad_proxy_secrets_are_refused_with_the_fix() {
        assert_eq!(
            build_proxy_from_secret(&secret(&[])),
            Err(ProxyError::MissingAddress)
        );
        for address in [
            "https://proxy:3128",
            "socks5://proxy:1080",
            "http://u:p@proxy:3128",
            "http://proxy:3128/path",
            "::",
        ] {
            let err = build_proxy_from_secret(&secret(&[("address", address)])).unwrap_err();
            assert!(
                matches!(err, ProxyError::InvalidAddress { .. }),
                "{address}: {err}"
            );
            assert!(!err.to_string().contains("u:p@"), "{err}");
        }
        let err = build_proxy_from_secret(&secret(&[("address", "http://p:1"), ("password", "x")]))
            .unwrap_err();
        assert_eq!(err, ProxyError::PasswordWithoutUsername);
    }

    #[test]
    fn no_proxy_hosts_domains_and_cidrs_bypass_the_proxy() {
        let proxy = build_proxy_from_secret(&secret(&[
            ("address", "http://127.0.0.1:3128"),
            ("noProxy", "github.internal,10.0.0.0/8"),
        ]))
        .unwrap();
        let matcher = proxy.matcher();
        let via = |url: &str| matcher.intercept(&url.parse().unwrap()).is_some();
        assert!(via("https://api.github.com/repos"));
        assert!(via("http://example.com/"));
        assert!(!via("https://api.github.internal/v3"));
        assert!(!via("https://10.1.2.3/api"));
        let intercept = matcher
            .intercept(&"https://api.github.com/".parse().unwrap())
            .unwrap();
        assert_eq!(
            intercept.uri().authority().unwrap().as_str(),
            "127.0.0.1:3128"
        );
    }
}
