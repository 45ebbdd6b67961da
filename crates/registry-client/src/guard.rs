//! The network guard: registry hosts, token realms and redirect targets must not reach the
//! networks a platform keeps to itself (SSRF): loopback, private, shared (CGNAT), link-local
//! and multicast ranges, and the cloud metadata addresses.
//!
//! Denying by default is the point. Whoever may register a registry chooses a host name, and
//! a name can resolve to anything: the scanner's own admin endpoints on loopback, the
//! database on the pod network, the metadata service that hands out the node's cloud role.
//! Registries that legitimately live on a private network are allowed explicitly, by the
//! operator, with `IMAGELIB_ALLOW_NETWORKS`; `IMAGELIB_DENY_NETWORKS` can only add to the
//! defaults, never shrink them by accident.
//!
//! The check has to run on the address the socket connects to, not on the name a user typed,
//! or a DNS answer that changes between check and connect (rebinding) slips through. So the
//! guard is a [`reqwest::dns::Resolve`]: reqwest connects only to what it returns. IP-literal
//! hosts never reach a resolver, so [`NetworkGuard::check_url`] refuses those before any
//! request is built.
//!
//! Through an HTTP proxy the resolver only ever sees the proxy's name: the proxy resolves the
//! target. So when a proxy may be in use ([`Proxies`]), every request's host is resolved and
//! checked here first ([`NetworkGuard::check_target`]), and a name that does not resolve here
//! is refused. The proxy's own address is not checked: it is the operator's choice, and it
//! usually is a private address. What remains is the window between our resolution and the
//! proxy's; a proxy that enforces egress rules of its own closes it.
//!
//! Cloud metadata endpoints (the instance metadata service, the EKS Pod Identity agent, the
//! GKE metadata server) hand out the node's or the pod's cloud credentials. They are denied
//! harder than the rest: [`NetworkGuard::METADATA_NETWORKS`] and
//! [`NetworkGuard::METADATA_HOSTS`] (plus what an operator adds with
//! [`NetworkGuard::metadata`]) are never re-allowed by an allow list, a proxy or a redirect.
//! The only way through is [`NetworkGuard::exempt`]: a copy of the guard for exactly one
//! endpoint (host and port), which the workload identity providers (`gcp_workload_identity`,
//! Pod Identity) build for their own HTTP clients and nothing else ever sees.
//!
//! IPv4 carried in IPv6 is looked through: an IPv4-mapped address (`::ffff:a.b.c.d`) is the
//! IPv4 address on the wire, a NAT64-translated one (`64:ff9b::a.b.c.d`) or a 6to4 one
//! reaches its IPv4 address through a gateway, so the embedded address is checked too.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

use crate::error::Error;

/// The variable that re-allows networks, named in every refusal.
pub const ALLOW_VARIABLE: &str = "IMAGELIB_ALLOW_NETWORKS";

/// Deny and allow lists of networks; an allowed address is never denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkGuard {
    deny: Vec<IpNet>,
    allow: Vec<IpNet>,
    /// Credential endpoints: denied even when `allow` holds them.
    metadata: Vec<IpNet>,
    /// Names of credential endpoints, refused before they are resolved.
    metadata_hosts: Vec<String>,
    /// The one endpoint a provider's own client may reach although it is denied.
    exempt: Option<Exemption>,
}

/// One endpoint (host as in the URL, port) a credential provider's client may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Exemption {
    host: String,
    port: u16,
}

fn normalise_host(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

impl NetworkGuard {
    /// Cloud metadata and credential endpoints: AWS/GCP/Azure IMDS, the ECS and EKS Pod
    /// Identity agents (IPv4 and IPv6), AWS IMDS over IPv6, Alibaba Cloud. No allow list
    /// re-allows them.
    pub const METADATA_NETWORKS: [&'static str; 6] = [
        "169.254.169.254/32",
        "169.254.170.2/32",
        "169.254.170.23/32",
        "fd00:ec2::254/128",
        "fd00:ec2::23/128",
        "100.100.100.200/32",
    ];

    /// Names of metadata servers, refused before any lookup (a proxy or a split-horizon
    /// resolver could answer them with anything).
    pub const METADATA_HOSTS: [&'static str; 2] = ["metadata.google.internal", "metadata.goog"];

    /// Networks no registry may resolve to unless allowed. The metadata addresses come first
    /// so a refusal names them rather than the wider range that holds them.
    pub const DEFAULT_DENY: [&'static str; 23] = [
        // cloud metadata: AWS/GCP/Azure, AWS over IPv6, Alibaba Cloud
        "169.254.169.254/32",
        "fd00:ec2::254/128",
        "100.100.100.200/32",
        // this host
        "127.0.0.0/8",
        "::1/128",
        "0.0.0.0/8",
        "::/128",
        // private networks (RFC 1918), unique local IPv6 (RFC 4193), shared CGNAT (RFC 6598)
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "fc00::/7",
        "100.64.0.0/10",
        // link-local
        "169.254.0.0/16",
        "fe80::/10",
        // multicast and broadcast
        "224.0.0.0/4",
        "ff00::/8",
        "255.255.255.255/32",
        // IPv4 inside IPv6: mapped, NAT64 well-known and local-use prefixes, and the
        // deprecated IPv4-compatible form
        "::ffff:0:0/96",
        "64:ff9b::/96",
        "64:ff9b:1::/48",
        "::/96",
        // site-local IPv6 (deprecated, still routed inside some networks) and the IETF
        // protocol assignments (NAT64 discovery, DS-Lite); 6to4 is looked through instead
        "fec0::/10",
        "192.0.0.0/24",
    ];

    /// A guard that refuses nothing; for tests and trusted set-ups only.
    /// The metadata endpoints stay refused.
    pub fn permissive() -> Self {
        Self::new(Vec::new(), Vec::new())
    }

    /// Exactly these lists, without the defaults (the metadata endpoints stay refused).
    pub fn new(deny: Vec<IpNet>, allow: Vec<IpNet>) -> Self {
        NetworkGuard {
            deny,
            allow,
            metadata: Self::METADATA_NETWORKS
                .iter()
                .filter_map(|s| s.parse().ok())
                .collect(),
            metadata_hosts: Self::METADATA_HOSTS.iter().map(|s| s.to_string()).collect(),
            exempt: None,
        }
    }

    /// Adds a credential endpoint's network (a metadata server elsewhere, or a test's
    /// stand-in): denied even if an allow list holds it.
    pub fn metadata(mut self, net: IpNet) -> Self {
        self.metadata.push(net);
        self
    }

    /// Adds a credential endpoint's host name, refused before lookup.
    pub fn metadata_host(mut self, host: &str) -> Self {
        self.metadata_hosts.push(normalise_host(host));
        self
    }

    /// Marks `endpoint`'s host as a credential endpoint for every request this guard checks:
    /// an IP literal joins [`Self::metadata`], a name [`Self::metadata_host`].
    pub fn metadata_endpoint(self, endpoint: &Url) -> Self {
        match endpoint.host() {
            Some(Host::Ipv4(ip)) => self.metadata(IpNet::from(IpAddr::V4(ip))),
            Some(Host::Ipv6(ip)) => self.metadata(IpNet::from(IpAddr::V6(ip))),
            Some(Host::Domain(name)) => match name.parse::<IpAddr>() {
                Ok(ip) => self.metadata(IpNet::from(ip)),
                Err(_) => self.metadata_host(name),
            },
            None => self,
        }
    }

    /// A copy of this guard that lets requests reach exactly `endpoint` (its host and port),
    /// metadata endpoint or not; for the client of the provider that owns that endpoint, and
    /// nothing else. Every other target is checked as before.
    pub fn exempt(&self, endpoint: &Url) -> Self {
        let mut guard = self.clone();
        guard.exempt = endpoint.host_str().map(|host| Exemption {
            host: normalise_host(host),
            port: endpoint.port_or_known_default().unwrap_or(80),
        });
        guard
    }

    fn is_exempt_url(&self, url: &Url) -> bool {
        self.exempt.as_ref().is_some_and(|e| {
            url.host_str().map(normalise_host).as_deref() == Some(e.host.as_str())
                && url.port_or_known_default() == Some(e.port)
        })
    }

    fn is_exempt_name(&self, name: &str) -> bool {
        self.exempt
            .as_ref()
            .is_some_and(|e| normalise_host(name) == e.host)
    }

    fn is_metadata_host(&self, host: &str) -> bool {
        let host = normalise_host(host);
        self.metadata_hosts.contains(&host)
    }

    fn metadata_host_error(host: &str) -> Error {
        Error::HostNotAllowed {
            host: host.to_owned(),
            reason: "it is a cloud metadata server: only its own workload identity provider \
                     reaches it, never a registry request"
                .into(),
        }
    }

    /// Parses comma- or whitespace-separated CIDR lists, as in `IMAGELIB_DENY_NETWORKS` and
    /// `IMAGELIB_ALLOW_NETWORKS`. A bare address is a /32 or /128. `deny` adds to
    /// [`Self::DEFAULT_DENY`]; `allow` re-allows addresses inside any denied network.
    pub fn from_lists(deny: Option<&str>, allow: Option<&str>) -> Result<Self, Error> {
        let mut guard = Self::default();
        if let Some(list) = deny {
            guard
                .deny
                .extend(parse_networks(list, "IMAGELIB_DENY_NETWORKS")?);
        }
        if let Some(list) = allow {
            guard.allow = parse_networks(list, ALLOW_VARIABLE)?;
        }
        Ok(guard)
    }

    pub fn deny(mut self, net: IpNet) -> Self {
        self.deny.push(net);
        self
    }

    pub fn allow(mut self, net: IpNet) -> Self {
        self.allow.push(net);
        self
    }

    pub fn is_denied(&self, addr: IpAddr) -> bool {
        self.denied_by(addr).is_some()
    }

    /// The denied network `addr` falls into, if it is not allowed. An IPv4-mapped address is
    /// its IPv4 address (allowing that allows it); a translated one must pass both as itself
    /// (the NAT64 route) and as the IPv4 address it reaches.
    pub fn denied_by(&self, addr: IpAddr) -> Option<IpNet> {
        if let Some(net) = self.metadata_match(addr) {
            return Some(net);
        }
        match embedded_ipv4(addr) {
            Some((v4, Embedding::Mapped)) => {
                let v4 = IpAddr::V4(v4);
                if self.allows(v4) || self.allows(addr) {
                    return None;
                }
                self.deny_match(v4).or_else(|| self.deny_match(addr))
            }
            Some((v4, Embedding::Translated)) => self
                .denied_plain(IpAddr::V4(v4))
                .or_else(|| self.denied_plain(addr)),
            None => self.denied_plain(addr),
        }
    }

    /// A metadata network holding `addr`, or the IPv4 address inside it.
    fn metadata_match(&self, addr: IpAddr) -> Option<IpNet> {
        let embedded = embedded_ipv4(addr).map(|(v4, _)| IpAddr::V4(v4));
        [Some(addr), embedded]
            .into_iter()
            .flatten()
            .find_map(|a| self.metadata.iter().find(|n| n.contains(&a)).copied())
    }

    fn allows(&self, addr: IpAddr) -> bool {
        self.allow.iter().any(|n| n.contains(&addr))
    }

    fn deny_match(&self, addr: IpAddr) -> Option<IpNet> {
        self.deny.iter().find(|n| n.contains(&addr)).copied()
    }

    fn denied_plain(&self, addr: IpAddr) -> Option<IpNet> {
        if self.allows(addr) {
            None
        } else {
            self.deny_match(addr)
        }
    }

    /// Refuses a URL whose host is an IP literal in a denied network. Names are checked when
    /// they are resolved, inside the client's DNS resolver (or by [`Self::check_target`]
    /// when a proxy resolves them).
    pub fn check_url(&self, url: &Url) -> Result<(), Error> {
        if self.is_exempt_url(url) {
            return Ok(());
        }
        let ip = match url.host() {
            Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
            Some(Host::Domain(name)) => match name.parse::<IpAddr>() {
                Ok(ip) => ip,
                Err(_) if self.is_metadata_host(name) => {
                    return Err(Self::metadata_host_error(name));
                }
                Err(_) => return Ok(()),
            },
            None => return Err(Error::Config(format!("URL {url} has no host"))),
        };
        match self.denied_by(ip) {
            Some(network) => Err(Error::Blocked {
                host: url.host_str().unwrap_or_default().to_owned(),
                addr: shown(ip),
                network,
            }),
            None => Ok(()),
        }
    }

    /// Resolves `url`'s host here and refuses it if any of its addresses is denied; for
    /// requests that go through a proxy, whose resolver the guard cannot see. A name that
    /// does not resolve here is refused: the guard cannot vouch for it.
    pub async fn check_target(&self, url: &Url, timeout: Duration) -> Result<(), Error> {
        self.check_url(url)?;
        if self.is_exempt_url(url) {
            return Ok(());
        }
        let Some(Host::Domain(name)) = url.host() else {
            return Ok(());
        };
        if name.parse::<IpAddr>().is_ok() {
            return Ok(());
        }
        let host = name.to_owned();
        let dns = |reason: String| Error::Dns {
            host: host.clone(),
            reason: format!(
                "{reason} (a proxy is configured, and the network guard resolves every \
                 registry host itself before the proxy does)"
            ),
        };
        let addrs = match tokio::time::timeout(timeout, lookup(&host)).await {
            Ok(Ok(addrs)) => addrs,
            Ok(Err(reason)) => return Err(dns(reason)),
            Err(_) => return Err(dns(format!("no answer within {timeout:?}"))),
        };
        match self.first_denied(&addrs) {
            Some((addr, network)) => Err(Error::Blocked {
                host,
                addr,
                network,
            }),
            None => Ok(()),
        }
    }

    /// A DNS resolver for a `reqwest` client of another outbound path (registry-registry's
    /// subscription deliveries): the same check as the registry client's own, on the
    /// resolved addresses, so every outbound request of imagelib passes one guard. The
    /// proxies the environment names are resolved unchecked. Pair it with
    /// [`Self::check_url`] (IP-literal hosts never reach a resolver) and, when
    /// [`Self::proxy_in_environment`], [`Self::check_target`] before each request.
    pub fn resolver(&self) -> Arc<dyn Resolve> {
        Arc::new(GuardedResolver::new(self.clone(), Proxies::detect(None)))
    }

    /// Whether the proxy environment variables name a proxy: the resolver then sees the
    /// proxy's name, not the targets'.
    pub fn proxy_in_environment() -> bool {
        Proxies::detect(None).active()
    }

    fn first_denied(&self, addrs: &[SocketAddr]) -> Option<(IpAddr, IpNet)> {
        addrs
            .iter()
            .find_map(|a| self.denied_by(a.ip()).map(|net| (shown(a.ip()), net)))
    }
}

impl Default for NetworkGuard {
    fn default() -> Self {
        Self::new(
            Self::DEFAULT_DENY
                .iter()
                .filter_map(|s| s.parse().ok())
                .collect(),
            Vec::new(),
        )
    }
}

fn parse_networks(list: &str, variable: &str) -> Result<Vec<IpNet>, Error> {
    list.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| {
            IpNet::from_str(s)
                .or_else(|_| IpAddr::from_str(s).map(IpNet::from))
                .map_err(|_| {
                    Error::Config(format!(
                        "{variable}: `{s}` is not a network (CIDR) or an address"
                    ))
                })
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Embedding {
    /// `::ffff:a.b.c.d`: a dual-stack socket sends it as IPv4.
    Mapped,
    /// NAT64 (`64:ff9b::/96`, RFC 6052) and 6to4 (`2002::/16`, RFC 3056): a gateway or relay
    /// forwards it to the IPv4 address.
    Translated,
}

fn embedded_ipv4(addr: IpAddr) -> Option<(Ipv4Addr, Embedding)> {
    let IpAddr::V6(v6) = addr else { return None };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some((v4, Embedding::Mapped));
    }
    let o = v6.octets();
    let nat64: Ipv6Addr = "64:ff9b::".parse().expect("prefix parses");
    if o[..12] == nat64.octets()[..12] {
        return Some((
            Ipv4Addr::new(o[12], o[13], o[14], o[15]),
            Embedding::Translated,
        ));
    }
    if o[0] == 0x20 && o[1] == 0x02 {
        return Some((Ipv4Addr::new(o[2], o[3], o[4], o[5]), Embedding::Translated));
    }
    None
}

/// `::ffff:169.254.169.254` is 169.254.169.254 on the wire, and is shown so.
fn shown(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

async fn lookup(host: &str) -> Result<Vec<SocketAddr>, String> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
        .await
        .map_err(|e| e.to_string())?
        .collect();
    if addrs.is_empty() {
        return Err("no addresses".into());
    }
    Ok(addrs)
}

/// The proxies a client may send through: the one in its configuration or, without one, the
/// ones the proxy environment variables name (reqwest reads the same variables). Knowing
/// them tells the transport that the resolver will not see the targets, and tells the
/// resolver which names are the operator's proxies rather than targets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Proxies {
    active: bool,
    hosts: Vec<String>,
}

impl Proxies {
    /// The variables reqwest honours; `NO_PROXY` only narrows them, so it does not matter
    /// here (a target it exempts is checked twice, not never).
    const VARIABLES: [&'static str; 6] = [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ];

    pub(crate) fn detect(explicit: Option<&str>) -> Self {
        Self::detect_with(explicit, |name| std::env::var(name).ok())
    }

    fn detect_with(explicit: Option<&str>, env: impl Fn(&str) -> Option<String>) -> Self {
        let values: Vec<String> = match explicit {
            Some(proxy) => vec![proxy.to_owned()],
            None => Self::VARIABLES
                .iter()
                .filter_map(|v| env(v))
                .filter(|v| !v.trim().is_empty())
                .collect(),
        };
        let hosts = values
            .iter()
            .filter_map(|v| {
                let v = v.trim();
                let url = if v.contains("://") {
                    Url::parse(v)
                } else {
                    Url::parse(&format!("http://{v}"))
                };
                url.ok()?.host_str().map(|h| {
                    h.trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_ascii_lowercase()
                })
            })
            .collect();
        Proxies {
            active: !values.is_empty(),
            hosts,
        }
    }

    /// A registry's own proxy: targets are checked before sending, and no name is exempt
    /// from the resolver's check (the proxy's included).
    pub(crate) fn guarded() -> Self {
        Proxies {
            active: true,
            hosts: Vec::new(),
        }
    }

    /// True when requests may go through a proxy, so targets must be checked before sending.
    pub(crate) fn active(&self) -> bool {
        self.active
    }

    fn is_proxy(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.');
        self.hosts.iter().any(|h| h.eq_ignore_ascii_case(name))
    }
}

/// Why the guarded resolver gave no address; [`crate::transport`] finds it in reqwest's error
/// chain to classify the failure as `dns` or `blocked`.
#[derive(Debug)]
pub(crate) enum ResolveError {
    Blocked {
        host: String,
        addr: IpAddr,
        network: IpNet,
    },
    Dns {
        host: String,
        reason: String,
    },
}

impl ResolveError {
    pub(crate) fn to_error(&self) -> Error {
        match self {
            ResolveError::Blocked {
                host,
                addr,
                network,
            } => Error::Blocked {
                host: host.clone(),
                addr: *addr,
                network: *network,
            },
            ResolveError::Dns { host, reason } => Error::Dns {
                host: host.clone(),
                reason: reason.clone(),
            },
        }
    }
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.to_error().fmt(f)
    }
}

impl std::error::Error for ResolveError {}

/// Resolves with the system resolver and refuses a name if any of its addresses is denied:
/// a name that mixes a metadata address with others is not one to trust. The configured
/// proxies' names are resolved without the check.
#[derive(Debug, Clone)]
pub(crate) struct GuardedResolver {
    guard: Arc<NetworkGuard>,
    proxies: Arc<Proxies>,
}

impl GuardedResolver {
    pub(crate) fn new(guard: NetworkGuard, proxies: Proxies) -> Self {
        GuardedResolver {
            guard: Arc::new(guard),
            proxies: Arc::new(proxies),
        }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.guard.clone();
        let proxies = self.proxies.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let exempt = guard.is_exempt_name(&host);
            if !exempt && !proxies.is_proxy(&host) && guard.is_metadata_host(&host) {
                return Err(ResolveError::Dns {
                    host: host.clone(),
                    reason: "a cloud metadata server is never resolved for a registry request"
                        .into(),
                }
                .into());
            }
            let addrs = lookup(&host).await.map_err(|reason| ResolveError::Dns {
                host: host.clone(),
                reason,
            })?;
            if !exempt
                && !proxies.is_proxy(&host)
                && let Some((addr, network)) = guard.first_denied(&addrs)
            {
                return Err(ResolveError::Blocked {
                    host,
                    addr,
                    network,
                }
                .into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn default_denies_private_and_special_networks() {
        let g = NetworkGuard::default();
        for (denied, by) in [
            ("169.254.169.254", "169.254.169.254/32"),
            ("169.254.1.1", "169.254.0.0/16"),
            ("fe80::1", "fe80::/10"),
            ("fd00:ec2::254", "fd00:ec2::254/128"),
            ("100.100.100.200", "100.100.100.200/32"),
            ("127.0.0.1", "127.0.0.0/8"),
            ("127.1.2.3", "127.0.0.0/8"),
            ("::1", "::1/128"),
            ("::", "::/128"),
            ("0.0.0.0", "0.0.0.0/8"),
            ("10.1.2.3", "10.0.0.0/8"),
            ("172.16.0.1", "172.16.0.0/12"),
            ("172.31.255.254", "172.16.0.0/12"),
            ("192.168.1.1", "192.168.0.0/16"),
            ("fd12:3456::1", "fc00::/7"),
            ("100.64.0.1", "100.64.0.0/10"),
            ("100.127.255.254", "100.64.0.0/10"),
            ("224.0.0.1", "224.0.0.0/4"),
            ("239.255.255.250", "224.0.0.0/4"),
            ("ff02::1", "ff00::/8"),
            ("255.255.255.255", "255.255.255.255/32"),
            // IPv4 inside IPv6: the embedded address names the network
            ("::ffff:127.0.0.1", "127.0.0.0/8"),
            ("::ffff:169.254.169.254", "169.254.169.254/32"),
            ("::ffff:10.0.0.1", "10.0.0.0/8"),
            ("::ffff:8.8.8.8", "::ffff:0:0/96"),
            ("64:ff9b::7f00:1", "127.0.0.0/8"),
            ("64:ff9b::a9fe:a9fe", "169.254.169.254/32"),
            ("64:ff9b::808:808", "64:ff9b::/96"),
            ("64:ff9b:1::1", "64:ff9b:1::/48"),
            ("2002:7f00:1::1", "127.0.0.0/8"),
            ("2002:a9fe:a9fe::1", "169.254.169.254/32"),
            ("::7f00:1", "::/96"),
        ] {
            assert_eq!(g.denied_by(ip(denied)), Some(net(by)), "{denied}");
        }
        for ok in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700:4700::1111",
            "2002:808:808::1",
        ] {
            assert_eq!(g.denied_by(ip(ok)), None, "{ok}");
        }
    }

    #[test]
    fn deny_adds_to_the_defaults_and_allow_overrides_them() {
        let g = NetworkGuard::from_lists(Some("203.0.113.0/24"), None).unwrap();
        assert_eq!(g.denied_by(ip("203.0.113.7")), Some(net("203.0.113.0/24")));
        assert!(g.is_denied(ip("127.0.0.1")), "defaults still apply");
        assert!(g.is_denied(ip("169.254.169.254")), "defaults still apply");

        let g = NetworkGuard::from_lists(None, Some("127.0.0.0/8, ::1")).unwrap();
        assert!(!g.is_denied(ip("127.0.0.1")));
        assert!(!g.is_denied(ip("::1")));
        assert!(!g.is_denied(ip("::ffff:127.0.0.1")), "mapped is the IPv4");
        assert!(g.is_denied(ip("10.0.0.1")));
        assert!(
            g.is_denied(ip("64:ff9b::7f00:1")),
            "a translated address needs the NAT64 prefix allowed too"
        );

        let g = NetworkGuard::from_lists(None, Some("64:ff9b::/96")).unwrap();
        assert!(
            !g.is_denied(ip("64:ff9b::808:808")),
            "NAT64 to a public host"
        );
        assert!(
            g.is_denied(ip("64:ff9b::a9fe:a9fe")),
            "NAT64 to metadata stays denied"
        );

        let g = NetworkGuard::from_lists(Some("127.0.0.0/8"), Some("127.0.0.2/32")).unwrap();
        assert!(g.is_denied(ip("127.0.0.1")));
        assert!(!g.is_denied(ip("127.0.0.2")), "allow wins over deny");

        let err = NetworkGuard::from_lists(Some("not-a-cidr"), None).unwrap_err();
        assert!(err.to_string().contains("IMAGELIB_DENY_NETWORKS"), "{err}");
        let err = NetworkGuard::from_lists(None, Some("10.0.0.0/33")).unwrap_err();
        assert!(err.to_string().contains(ALLOW_VARIABLE), "{err}");
    }

    #[test]
    fn ip_literal_urls_are_checked_before_connecting() {
        let g = NetworkGuard::default();
        let err = g
            .check_url(&"http://169.254.169.254/latest/meta-data".parse().unwrap())
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("blocked"), "{msg}");
        assert!(
            msg.contains("169.254.169.254/32"),
            "names the network: {msg}"
        );
        assert!(msg.contains(ALLOW_VARIABLE), "says how to allow it: {msg}");
        for url in [
            "http://[fe80::1]:5000/v2/",
            "http://127.0.0.1:5000/v2/",
            "http://[::ffff:127.0.0.1]:5000/v2/",
            "http://[64:ff9b::7f00:1]/v2/",
            "https://10.0.0.1/v2/",
            "https://100.64.0.1/v2/",
        ] {
            let err = g.check_url(&url.parse().unwrap()).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Blocked, "{url}");
        }
        let err = g
            .check_url(&"http://[::ffff:127.0.0.1]:5000/v2/".parse().unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("127.0.0.1") && err.contains("127.0.0.0/8"),
            "{err}"
        );
        assert!(
            g.check_url(&"https://registry.example/v2/".parse().unwrap())
                .is_ok()
        );
        assert_eq!(
            g.check_url(&"http://10.20.0.7:5000/v2/".parse().unwrap())
                .unwrap_err()
                .to_string(),
            "blocked: 10.20.0.7 is in the denied network 10.0.0.0/8; if this registry is meant \
             to be reached, add 10.0.0.0/8 (or 10.20.0.7) to IMAGELIB_ALLOW_NETWORKS"
        );
    }

    #[tokio::test]
    async fn targets_are_resolved_and_checked_for_a_proxy() {
        let g = NetworkGuard::default();
        let t = Duration::from_secs(5);
        let err = g
            .check_target(&"https://localhost:5000/v2/".parse().unwrap(), t)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Blocked, "{err}");
        assert!(
            err.to_string()
                .starts_with("blocked: localhost (127.0.0.1) is in the denied network 127.0.0.0/8"),
            "{err}"
        );
        let err = g
            .check_target(&"https://registry.imagelib.invalid/v2/".parse().unwrap(), t)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Dns, "{err}");
        assert!(err.to_string().contains("proxy"), "{err}");
        let allowed = NetworkGuard::from_lists(None, Some("127.0.0.0/8,::1/128")).unwrap();
        allowed
            .check_target(&"https://localhost:5000/v2/".parse().unwrap(), t)
            .await
            .unwrap();
    }

    #[test]
    fn proxies_come_from_the_configuration_or_the_environment() {
        let none = Proxies::detect_with(None, |_| None);
        assert!(!none.active());

        let explicit = Proxies::detect_with(Some("http://Proxy.Corp:3128"), |_| {
            Some("http://ignored:1".into())
        });
        assert!(explicit.active());
        assert!(explicit.is_proxy("proxy.corp"));
        assert!(!explicit.is_proxy("ignored"));

        let env = Proxies::detect_with(None, |name| match name {
            "https_proxy" => Some("squid.internal:3128".into()),
            "ALL_PROXY" => Some("socks5h://[::1]:1080".into()),
            "HTTP_PROXY" => Some("  ".into()),
            _ => None,
        });
        assert!(env.active());
        assert!(env.is_proxy("squid.internal"));
        assert!(env.is_proxy("squid.internal."));
        assert!(env.is_proxy("::1"));
        assert!(!env.is_proxy("registry.example"));

        let blank = Proxies::detect_with(None, |_| Some(String::new()));
        assert!(!blank.active());
    }

    #[test]
    fn metadata_endpoints_are_not_re_allowed_and_only_exempted_exactly() {
        let everything = NetworkGuard::from_lists(None, Some("0.0.0.0/0, ::/0")).unwrap();
        for (addr, by) in [
            ("169.254.169.254", "169.254.169.254/32"),
            ("169.254.170.23", "169.254.170.23/32"),
            ("169.254.170.2", "169.254.170.2/32"),
            ("fd00:ec2::23", "fd00:ec2::23/128"),
            ("::ffff:169.254.170.23", "169.254.170.23/32"),
            ("64:ff9b::a9fe:aa17", "169.254.170.23/32"),
        ] {
            assert_eq!(everything.denied_by(ip(addr)), Some(net(by)), "{addr}");
        }
        assert!(
            !everything.is_denied(ip("169.254.1.1")),
            "the allow list still works"
        );
        assert!(NetworkGuard::permissive().is_denied(ip("169.254.169.254")));

        let url = |s: &str| s.parse::<Url>().unwrap();
        let err = everything
            .check_url(&url("http://169.254.170.23/v1/credentials"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("metadata"), "{err}");
        for host in [
            "metadata.google.internal",
            "METADATA.google.internal.",
            "metadata.goog",
        ] {
            let err = everything
                .check_url(&url(&format!("http://{host}/computeMetadata/v1/")))
                .unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::HostNotAllowed, "{host}");
        }

        let agent = url("http://169.254.170.23/v1/credentials");
        let exempt = NetworkGuard::default().exempt(&agent);
        assert!(exempt.check_url(&agent).is_ok());
        assert!(
            exempt
                .check_url(&url("http://169.254.170.23:80/other"))
                .is_ok()
        );
        assert!(
            exempt.check_url(&url("http://169.254.170.23:81/")).is_err(),
            "other port"
        );
        assert!(
            exempt.check_url(&url("http://169.254.169.254/")).is_err(),
            "other host"
        );
        assert!(exempt.check_url(&url("http://10.0.0.1/")).is_err());
        assert!(
            NetworkGuard::default().check_url(&agent).is_err(),
            "the original guard"
        );

        let google = url("http://metadata.google.internal/");
        let exempt = NetworkGuard::default().exempt(&google);
        assert!(exempt.check_url(&google).is_ok());
        assert!(exempt.is_exempt_name("metadata.google.internal"));
        assert!(!exempt.is_exempt_name("metadata.goog"));

        let stand_in = NetworkGuard::from_lists(None, Some("127.0.0.0/8"))
            .unwrap()
            .metadata_endpoint(&url("http://127.0.0.2:8080/"));
        assert!(stand_in.is_denied(ip("127.0.0.2")));
        assert!(!stand_in.is_denied(ip("127.0.0.1")));
        let named = NetworkGuard::default().metadata_endpoint(&url("http://md.internal.example/"));
        assert!(
            named
                .check_url(&url("https://md.internal.example/v2/"))
                .is_err()
        );
    }

    #[tokio::test]
    async fn the_resolver_refuses_metadata_names_unless_exempt() {
        let name = |s: &str| Name::from_str(s).unwrap();
        let guard = NetworkGuard::from_lists(None, Some("0.0.0.0/0,::/0"))
            .unwrap()
            .metadata_host("localhost");
        let resolver = GuardedResolver::new(guard.clone(), Proxies::default());
        let err = match resolver.resolve(name("localhost")).await {
            Ok(_) => panic!("a metadata name resolved"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("metadata"), "{err}");
        let exempt = guard.exempt(&"http://localhost:8080/".parse().unwrap());
        let resolver = GuardedResolver::new(exempt, Proxies::default());
        assert!(resolver.resolve(name("localhost")).await.is_ok());
    }

    #[tokio::test]
    async fn the_resolver_checks_targets_but_not_the_proxy() {
        let name = |s: &str| Name::from_str(s).unwrap();
        let resolver = GuardedResolver::new(NetworkGuard::default(), Proxies::default());
        let err = match resolver.resolve(name("localhost")).await {
            Ok(_) => panic!("localhost resolved under the default guard"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.starts_with("blocked") && err.contains("127.0.0.0/8"),
            "{err}"
        );

        let proxies = Proxies::detect_with(Some("http://localhost:3128"), |_| None);
        let resolver = GuardedResolver::new(NetworkGuard::default(), proxies);
        let addrs: Vec<SocketAddr> = match resolver.resolve(name("localhost")).await {
            Ok(addrs) => addrs.collect(),
            Err(e) => panic!("the proxy's own name is not checked: {e}"),
        };
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
    }
}
