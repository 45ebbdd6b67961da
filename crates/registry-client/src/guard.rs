//! The network guard: registry hosts, token realms and redirect targets must not reach
//! link-local or cloud-metadata addresses (SSRF).
//!
//! The check has to run on the address the socket connects to, not on the name a user typed,
//! or a DNS answer that changes between check and connect (rebinding) slips through. So the
//! guard is a [`reqwest::dns::Resolve`]: reqwest connects only to what it returns. IP-literal
//! hosts never reach a resolver, so [`NetworkGuard::check_url`] refuses those before any
//! request is built.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

use crate::error::Error;

/// Deny and allow lists of networks; an allowed address is never denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkGuard {
    deny: Vec<IpNet>,
    allow: Vec<IpNet>,
}

impl NetworkGuard {
    /// Link-local (which holds the AWS/GCP/Azure metadata address 169.254.169.254), the IPv6
    /// link-local range, AWS's IPv6 metadata address and Alibaba Cloud's metadata address.
    pub const DEFAULT_DENY: [&'static str; 4] = [
        "169.254.0.0/16",
        "fe80::/10",
        "fd00:ec2::254/128",
        "100.100.100.200/32",
    ];

    /// A guard that refuses nothing; for tests and trusted set-ups only.
    pub fn permissive() -> Self {
        NetworkGuard {
            deny: Vec::new(),
            allow: Vec::new(),
        }
    }

    pub fn new(deny: Vec<IpNet>, allow: Vec<IpNet>) -> Self {
        NetworkGuard { deny, allow }
    }

    /// Parses comma- or whitespace-separated CIDR lists, as in `IMAGELIB_DENY_NETWORKS` and
    /// `IMAGELIB_ALLOW_NETWORKS`. A bare address is a /32 or /128. `deny = None` keeps the
    /// default deny list.
    pub fn from_lists(deny: Option<&str>, allow: Option<&str>) -> Result<Self, Error> {
        let deny = match deny {
            Some(list) => parse_networks(list)?,
            None => Self::default().deny,
        };
        let allow = allow.map(parse_networks).transpose()?.unwrap_or_default();
        Ok(NetworkGuard { deny, allow })
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
        let addr = canonical(addr);
        !self.allow.iter().any(|n| n.contains(&addr)) && self.deny.iter().any(|n| n.contains(&addr))
    }

    /// Refuses a URL whose host is an IP literal in a denied network. Names are checked when
    /// they are resolved, inside the client's DNS resolver.
    pub fn check_url(&self, url: &Url) -> Result<(), Error> {
        let ip = match url.host() {
            Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
            Some(Host::Domain(name)) => match name.parse::<IpAddr>() {
                Ok(ip) => ip,
                Err(_) => return Ok(()),
            },
            None => return Err(Error::Config(format!("URL {url} has no host"))),
        };
        if self.is_denied(ip) {
            return Err(Error::Blocked {
                host: url.host_str().unwrap_or_default().to_owned(),
                addr: canonical(ip),
            });
        }
        Ok(())
    }
}

impl Default for NetworkGuard {
    fn default() -> Self {
        NetworkGuard {
            deny: Self::DEFAULT_DENY
                .iter()
                .map(|s| s.parse().expect("default deny list parses"))
                .collect(),
            allow: Vec::new(),
        }
    }
}

fn parse_networks(list: &str) -> Result<Vec<IpNet>, Error> {
    list.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| {
            IpNet::from_str(s)
                .or_else(|_| IpAddr::from_str(s).map(IpNet::from))
                .map_err(|_| Error::Config(format!("`{s}` is not a network (CIDR) or an address")))
        })
        .collect()
}

/// `::ffff:169.254.169.254` is 169.254.169.254 on the wire.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// Why the guarded resolver gave no address; [`crate::transport`] finds it in reqwest's error
/// chain to classify the failure as `dns` or `blocked`.
#[derive(Debug)]
pub(crate) enum ResolveError {
    Blocked { host: String, addr: IpAddr },
    Dns { host: String, reason: String },
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveError::Blocked { host, addr } => {
                write!(f, "blocked: {host} resolves to {addr}, a denied network")
            }
            ResolveError::Dns { host, reason } => write!(f, "dns: cannot resolve {host}: {reason}"),
        }
    }
}

impl std::error::Error for ResolveError {}

/// Resolves with the system resolver and refuses a name if any of its addresses is denied:
/// a name that mixes a metadata address with others is not one to trust.
#[derive(Debug, Clone)]
pub(crate) struct GuardedResolver {
    pub(crate) guard: Arc<NetworkGuard>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.guard.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| ResolveError::Dns {
                    host: host.clone(),
                    reason: e.to_string(),
                })?
                .collect();
            if addrs.is_empty() {
                return Err(ResolveError::Dns {
                    host,
                    reason: "no addresses".into(),
                }
                .into());
            }
            if let Some(bad) = addrs.iter().find(|a| guard.is_denied(a.ip())) {
                return Err(ResolveError::Blocked {
                    host,
                    addr: canonical(bad.ip()),
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

    #[test]
    fn default_denies_metadata_and_link_local_only() {
        let g = NetworkGuard::default();
        for denied in [
            "169.254.169.254",
            "169.254.1.1",
            "fe80::1",
            "fd00:ec2::254",
            "100.100.100.200",
            "::ffff:169.254.169.254",
        ] {
            assert!(g.is_denied(denied.parse().unwrap()), "{denied}");
        }
        for ok in ["127.0.0.1", "10.0.0.1", "8.8.8.8", "::1", "fd00:ec2::253"] {
            assert!(!g.is_denied(ok.parse().unwrap()), "{ok}");
        }
    }

    #[test]
    fn allow_list_overrides_deny_list() {
        let g = NetworkGuard::from_lists(Some("127.0.0.0/8, ::1"), Some("127.0.0.2/32")).unwrap();
        assert!(g.is_denied("127.0.0.1".parse().unwrap()));
        assert!(g.is_denied("::1".parse().unwrap()));
        assert!(!g.is_denied("127.0.0.2".parse().unwrap()));
        assert!(NetworkGuard::from_lists(Some("not-a-cidr"), None).is_err());
    }

    #[test]
    fn ip_literal_urls_are_checked_before_connecting() {
        let g = NetworkGuard::default();
        let err = g
            .check_url(&"http://169.254.169.254/latest/meta-data".parse().unwrap())
            .unwrap_err();
        assert!(err.to_string().starts_with("blocked"), "{err}");
        assert!(
            g.check_url(&"http://[fe80::1]:5000/v2/".parse().unwrap())
                .is_err()
        );
        assert!(
            g.check_url(&"https://registry.example/v2/".parse().unwrap())
                .is_ok()
        );
    }
}
