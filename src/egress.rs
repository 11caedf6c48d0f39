//! The egress policy: which addresses the operator may connect to on a
//! tenant's behalf (GitHub API URLs, git remotes, proxies, embedding
//! endpoints). Pure decisions plus the DNS look-up that feeds them.
//!
//! A tenant names any URL it likes; without a policy the operator would
//! send requests from its own network position (the cloud metadata
//! address, the API server, Postgres, other tenants' services). So, in the
//! spirit of Flux's lockdown flags, the default (`restricted`) refuses
//! loopback, link-local (incl. 169.254.169.254), private, shared (CGNAT),
//! unspecified, multicast and reserved addresses, unless an address falls
//! in an `--egress-allow-cidr` or the host is an `--egress-allow-host`.
//!
//! The check is made on the *resolved* addresses, at connect time: the
//! HTTP clients resolve through [`EgressPolicy::resolve`] (so a name that
//! resolves to 127.0.0.1, or rebinds to it between two look-ups, is
//! refused), IP literals are checked before dialing, and every redirect is
//! checked the same way because it connects through the same resolver. Git
//! runs its own connect, so the git source resolves and checks first and
//! then pins git to the checked addresses (see `source::git::command`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// Whether the policy applies at all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum EgressMode {
    /// Refuse internal destinations unless allowed by CIDR or host.
    #[default]
    Restricted,
    /// Connect anywhere (the operator's network position is trusted to
    /// tenants, e.g. a single-team install).
    Unrestricted,
}

/// An IP network, `10.0.0.0/8` or `fd00::/8`; a bare address is a /32 or
/// /128.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` lies in the network (IPv4-mapped IPv6 addresses count
    /// as their IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a CIDR such as 10.0.0.0/8 or fd00::/8");
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text.trim(), None),
        };
        let network: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
        };
        Ok(Cidr {
            network: network.to_canonical(),
            prefix,
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// What the operator may connect to. Cheap to clone; compared and hashed
/// so clients built for one policy can be shared.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct EgressPolicy {
    pub mode: EgressMode,
    /// Networks allowed although internal (`--egress-allow-cidr`).
    pub allow_cidrs: Vec<Cidr>,
    /// Hosts whose addresses are not checked (`--egress-allow-host`): an
    /// exact name, or `.example.com` for the domain and its subdomains.
    pub allow_hosts: Vec<String>,
}

/// A destination the policy refuses. The message names the host, the
/// address and the flag that would allow it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "egress to {host} ({address}, a {kind} address) is refused by the operator's egress policy; \
     an administrator can allow it with --egress-allow-cidr {address_cidr} or --egress-allow-host {host}"
)]
pub struct EgressDenied {
    pub host: String,
    pub address: IpAddr,
    pub kind: &'static str,
    address_cidr: String,
}

/// Why a destination could not be used: refused, or not resolvable.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error(transparent)]
    Denied(#[from] EgressDenied),
    #[error("resolving {host}: {source}")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },
}

impl EgressPolicy {
    /// No checks at all.
    pub fn unrestricted() -> Self {
        EgressPolicy {
            mode: EgressMode::Unrestricted,
            ..Default::default()
        }
    }

    /// The default policy plus loopback (127.0.0.0/8 and ::1): what tests
    /// and local development against servers on the same machine need.
    pub fn allow_loopback() -> Self {
        EgressPolicy {
            mode: EgressMode::Restricted,
            allow_cidrs: vec![
                "127.0.0.0/8".parse().expect("valid CIDR"),
                "::1/128".parse().expect("valid CIDR"),
            ],
            allow_hosts: Vec::new(),
        }
    }

    /// Whether `host` (a name from a URL) is on the host allow-list.
    pub fn allows_host(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.allow_hosts.iter().any(|allowed| {
            let allowed = allowed.trim_end_matches('.').to_ascii_lowercase();
            match allowed.strip_prefix('.') {
                Some(domain) => host == domain || host.ends_with(&format!(".{domain}")),
                None => host == allowed,
            }
        })
    }

    /// Checks one address `host` resolved to (or `host` itself, an IP).
    pub fn check_address(&self, host: &str, address: IpAddr) -> Result<(), EgressDenied> {
        if self.mode == EgressMode::Unrestricted || self.allows_host(host) {
            return Ok(());
        }
        let address = address.to_canonical();
        let Some(kind) = forbidden_kind(address) else {
            return Ok(());
        };
        if self.allow_cidrs.iter().any(|c| c.contains(address)) {
            return Ok(());
        }
        let bits = if address.is_ipv4() { 32 } else { 128 };
        Err(EgressDenied {
            host: host.to_string(),
            address,
            kind,
            address_cidr: format!("{address}/{bits}"),
        })
    }

    /// Checks `host` when it is an IP literal (brackets allowed); names are
    /// checked when they are resolved. HTTP clients skip their resolver for
    /// literals, so they call this before dialing.
    pub fn check_literal(&self, host: &str) -> Result<(), EgressDenied> {
        match parse_ip(host) {
            Some(ip) => self.check_address(host, ip),
            None => Ok(()),
        }
    }

    /// Resolves `host` and keeps the addresses the policy allows. Refused
    /// if none is left (naming the first refused address). An IP literal
    /// is checked without a look-up.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, EgressError> {
        if let Some(ip) = parse_ip(host) {
            self.check_address(host, ip)?;
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let found: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|source| EgressError::Resolve {
                host: host.to_string(),
                source,
            })?
            .collect();
        let mut refused = None;
        let allowed: Vec<SocketAddr> = found
            .into_iter()
            .filter(|addr| match self.check_address(host, addr.ip()) {
                Ok(()) => true,
                Err(denied) => {
                    refused.get_or_insert(denied);
                    false
                }
            })
            .collect();
        match (allowed.is_empty(), refused) {
            (true, Some(denied)) => Err(denied.into()),
            (true, None) => Err(EgressError::Resolve {
                host: host.to_string(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses"),
            }),
            (false, _) => Ok(allowed),
        }
    }
}

/// The refusal in an error's source chain, if the chain has one.
pub fn find_denied<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a EgressDenied> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<EgressDenied>() {
            return Some(found);
        }
        if let Some(EgressError::Denied(found)) = e.downcast_ref::<EgressError>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// `host` as an IP address, with or without IPv6 brackets.
fn parse_ip(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// The kind of internal address `ip` is, or `None` for a public one.
fn forbidden_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    Some(if ip.is_unspecified() || a == 0 {
        "unspecified"
    } else if ip.is_loopback() {
        "loopback"
    } else if ip.is_link_local() {
        "link-local"
    } else if ip.is_private() {
        "private"
    } else if a == 100 && (64..128).contains(&b) {
        "shared (carrier-grade NAT)"
    } else if ip.is_multicast() {
        "multicast"
    } else if ip.is_broadcast() || a >= 240 {
        "reserved"
    } else {
        return None;
    })
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    Some(if ip.is_unspecified() {
        "unspecified"
    } else if ip.is_loopback() {
        "loopback"
    } else if first & 0xffc0 == 0xfe80 {
        "link-local"
    } else if first & 0xfe00 == 0xfc00 {
        "private"
    } else if ip.is_multicast() {
        "multicast"
    } else {
        return None;
    })
}

/// The resolver the HTTP clients dial through (hyper-util's `Resolve`, and
/// reqwest's): looks `name` up and keeps only allowed addresses.
#[derive(Clone, Debug)]
pub struct EgressResolver {
    policy: std::sync::Arc<EgressPolicy>,
}

impl EgressResolver {
    pub fn new(policy: EgressPolicy) -> Self {
        EgressResolver {
            policy: std::sync::Arc::new(policy),
        }
    }

    /// The policy this resolver enforces.
    pub fn policy(&self) -> &EgressPolicy {
        &self.policy
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<hyper_util::client::legacy::connect::dns::Name> for EgressResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = EgressError;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, EgressError>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), EgressError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: hyper_util::client::legacy::connect::dns::Name) -> Self::Future {
        let policy = self.policy.clone();
        Box::pin(async move {
            // The connector sets the port afterwards.
            Ok(policy.resolve(name.as_str(), 0).await?.into_iter())
        })
    }
}

impl reqwest::dns::Resolve for EgressResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let addrs = policy
                .resolve(name.as_str(), 0)
                .await
                .map_err(|e| Box::new(e) as BoxError)?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// A connector that checks IP-literal destinations (which hyper-util dials
/// without asking the resolver) before handing them to `inner`, an
/// `HttpConnector` that resolves names through [`EgressResolver`].
#[derive(Clone)]
pub struct EgressConnector<C> {
    inner: C,
    policy: std::sync::Arc<EgressPolicy>,
}

impl<C> EgressConnector<C> {
    pub fn new(inner: C, resolver: &EgressResolver) -> Self {
        EgressConnector {
            inner,
            policy: resolver.policy.clone(),
        }
    }
}

impl<C> tower::Service<http::Uri> for EgressConnector<C>
where
    C: tower::Service<http::Uri> + Send,
    C::Error: Into<BoxError>,
    C::Future: Send + 'static,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = futures::future::BoxFuture<'static, Result<C::Response, BoxError>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: http::Uri) -> Self::Future {
        let checked = dst
            .host()
            .map(|host| self.policy.check_literal(host))
            .unwrap_or(Ok(()));
        let connect = checked.map(|()| self.inner.call(dst));
        Box::pin(async move {
            match connect {
                Ok(future) => future.await.map_err(Into::into),
                Err(denied) => Err(Box::new(denied) as BoxError),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn internal_addresses_are_refused_by_default_and_public_ones_pass() {
        let policy = EgressPolicy::default();
        for internal in [
            "127.0.0.1",
            "127.8.9.10",
            "::1",
            "169.254.169.254",
            "fe80::1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "fd00::1",
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "ff02::1",
            "100.64.0.1",
            "255.255.255.255",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            let denied = policy.check_address("h", ip(internal)).unwrap_err();
            assert!(
                denied.to_string().contains("--egress-allow-cidr"),
                "{denied}"
            );
        }
        for public in ["140.82.112.6", "8.8.8.8", "172.32.0.1", "2606:4700::1111"] {
            assert!(policy.check_address("h", ip(public)).is_ok(), "{public}");
        }
    }

    #[test]
    fn allowed_cidrs_and_hosts_open_internal_destinations() {
        let policy = EgressPolicy {
            allow_cidrs: vec!["10.20.0.0/16".parse().unwrap()],
            allow_hosts: vec!["ghe.corp".into(), ".svc.cluster.local".into()],
            ..Default::default()
        };
        assert!(policy.check_address("x", ip("10.20.3.4")).is_ok());
        assert!(policy.check_address("x", ip("10.21.3.4")).is_err());
        assert!(policy.check_address("GHE.corp", ip("10.0.0.1")).is_ok());
        assert!(
            policy
                .check_address("a.b.svc.cluster.local", ip("10.0.0.1"))
                .is_ok()
        );
        assert!(
            policy
                .check_address("evilsvc.cluster.local", ip("10.0.0.1"))
                .is_err()
        );
        assert!(
            EgressPolicy::unrestricted()
                .check_address("x", ip("127.0.0.1"))
                .is_ok()
        );
        let loopback = EgressPolicy::allow_loopback();
        assert!(loopback.check_address("x", ip("127.0.0.1")).is_ok());
        assert!(loopback.check_address("x", ip("::1")).is_ok());
        assert!(loopback.check_address("x", ip("169.254.169.254")).is_err());
    }

    #[test]
    fn cidrs_parse_with_and_without_a_prefix() {
        assert_eq!(
            "10.0.0.0/8".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!("::1".parse::<Cidr>().unwrap().to_string(), "::1/128");
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("example.com/8".parse::<Cidr>().is_err());
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(ip("1.2.3.4")));
    }

    #[test]
    fn the_refusal_names_host_address_and_flags() {
        let denied = EgressPolicy::default()
            .check_address("metadata.internal", ip("169.254.169.254"))
            .unwrap_err();
        assert_eq!(
            denied.to_string(),
            "egress to metadata.internal (169.254.169.254, a link-local address) is refused by \
             the operator's egress policy; an administrator can allow it with \
             --egress-allow-cidr 169.254.169.254/32 or --egress-allow-host metadata.internal"
        );
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_after_the_look_up() {
        let err = EgressPolicy::default()
            .resolve("localhost", 80)
            .await
            .unwrap_err();
        assert!(
            matches!(err, EgressError::Denied(ref d) if d.address.is_loopback()),
            "{err}"
        );
        let ok = EgressPolicy::allow_loopback()
            .resolve("localhost", 80)
            .await
            .unwrap();
        assert!(ok.iter().all(|a| a.ip().is_loopback() && a.port() == 80));
        assert!(EgressPolicy::default().resolve("[::1]", 1).await.is_err());
    }
}
