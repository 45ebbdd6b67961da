//! What one registry connection is allowed to do: where it goes, what it trusts, how long it
//! waits, how hard it pushes.
//!
//! The URL form is the one of the HTTP contract (`host[:port][/namespace]`), parsed once here
//! so the rest of the client only sees a base URL that cannot carry credentials, a query or a
//! fragment: error messages print URLs, and a URL with user-info would leak a password.

use std::fmt;
use std::time::Duration;

use imagelib_events::RepositoryName;
use url::Url;

use crate::error::Error;
use crate::guard::NetworkGuard;
use crate::vendor::dockerhub;

/// A registry's location: `host[:port][/namespace]`, over HTTPS unless `insecure`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryUrl {
    insecure: bool,
    host: String,
    port: Option<u16>,
    namespace: Option<String>,
}

impl RegistryUrl {
    /// Accepts `host[:port][/namespace]`, with an optional `https://` (stripped) or `http://`
    /// (only when `insecure`). Refuses user-info, a query and a fragment, saying what to change.
    /// Docker Hub's names (`docker.io`, `index.docker.io`, `registry.hub.docker.com`,
    /// `hub.docker.com`) become `registry-1.docker.io` ([`crate::vendor::dockerhub`]).
    pub fn parse(input: &str, insecure: bool) -> Result<Self, Error> {
        let input = input.trim();
        let after_scheme = input.split_once("://").map_or(input, |(_, rest)| rest);
        if after_scheme
            .split(['/', '?', '#'])
            .next()
            .unwrap_or_default()
            .contains('@')
        {
            return Err(Error::Config(
                "the registry URL must not hold user-info (user:password@); pass credentials separately"
                    .into(),
            ));
        }
        let rest = if let Some(rest) = strip_prefix_ci(input, "https://") {
            rest
        } else if let Some(rest) = strip_prefix_ci(input, "http://") {
            if !insecure {
                return Err(Error::Config(format!(
                    "`{input}` uses http://; set insecure to use plain HTTP, or drop the scheme for HTTPS"
                )));
            }
            rest
        } else if input.contains("://") {
            return Err(Error::Config(format!(
                "`{input}` has an unsupported scheme; give host[:port][/namespace]"
            )));
        } else {
            input
        };
        if rest.is_empty() {
            return Err(Error::Config("the registry URL is empty".into()));
        }
        if rest.contains('?') || rest.contains('#') {
            return Err(Error::Config(
                "the registry URL must not hold a query (?…) or a fragment (#…)".into(),
            ));
        }
        let url = Url::parse(&format!("https://{rest}"))
            .map_err(|e| Error::Config(format!("`{input}` is not host[:port][/namespace]: {e}")))?;
        let mut host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| Error::Config(format!("`{input}` has no host")))?
            .to_owned();
        let mut port = url.port();
        let mut namespace = url.path().trim_matches('/');
        if dockerhub::is_hub(&host, port) {
            // Docker Hub by any of its names is the registry API's host (see the module).
            if insecure {
                return Err(Error::Config(
                    "Docker Hub is served over HTTPS only; unset insecure".into(),
                ));
            }
            host = dockerhub::REGISTRY_HOST.to_owned();
            port = None;
            namespace = dockerhub::namespace_of_path(namespace);
        }
        let lowered;
        if crate::vendor::ghcr::is_ghcr_host(&host) && port.is_none_or(|p| p == 443) {
            // GitHub Container Registry: one host, HTTPS only, and owners and package
            // names are lower-case there (`ghcr.io/Acme` is `ghcr.io/acme`).
            if insecure {
                return Err(Error::Config(
                    "GitHub Container Registry is served over HTTPS only; unset insecure".into(),
                ));
            }
            host = crate::vendor::ghcr::REGISTRY_HOST.to_owned();
            port = None;
            lowered = namespace.to_ascii_lowercase();
            namespace = &lowered;
        }
        let namespace = if namespace.is_empty() {
            None
        } else {
            namespace.parse::<RepositoryName>().map_err(|e| {
                Error::Config(format!(
                    "the namespace `{namespace}` is not a repository path: {e}"
                ))
            })?;
            Some(namespace.to_owned())
        };
        Ok(RegistryUrl {
            insecure,
            host,
            port,
            namespace,
        })
    }

    /// A host taken as it is, without Docker Hub's normalisation: the Hub API's own host
    /// (`hub.docker.com`) is not the registry's.
    pub(crate) fn verbatim(host: &str, port: Option<u16>, insecure: bool) -> Self {
        RegistryUrl {
            insecure,
            host: host.to_owned(),
            port,
            namespace: None,
        }
    }

    pub fn insecure(&self) -> bool {
        self.insecure
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The repository prefix the registry is limited to (a Harbor project, say), if any.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    pub fn scheme(&self) -> &'static str {
        if self.insecure { "http" } else { "https" }
    }

    /// `scheme://host[:port]/`, the base every API path is joined to.
    pub fn base(&self) -> Url {
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        Url::parse(&format!("{}://{}{}/", self.scheme(), self.host, port))
            .expect("a parsed host and port form a URL")
    }
}

impl fmt::Display for RegistryUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        if let Some(ns) = &self.namespace {
            write!(f, "/{ns}")?;
        }
        Ok(())
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    (s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &s[prefix.len()..])
}

/// Retries and waits: backoff on 5xx and dropped connections, and how long a `Retry-After`
/// may make us wait before we hand the wait back to the caller as `rate_limited`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt, for 5xx, dropped connections and 429.
    pub max_retries: u32,
    /// The first backoff; doubled on every retry, with jitter.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// The longest `Retry-After` waited for in place.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

/// Everything one [`crate::RegistryClient`] needs besides credentials.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    pub url: RegistryUrl,
    /// Extra trusted roots (PEM, one or more certificates), added to the system roots.
    pub ca_pem: Option<String>,
    pub connect_timeout: Duration,
    /// The whole of one HTTP exchange, body included.
    pub request_timeout: Duration,
    /// `n` for `_catalog` and `tags/list`.
    pub page_size: u32,
    /// Pages one listing may take; more ends it incomplete (an endless `Link` chain).
    pub max_pages: u32,
    /// Entries one listing may hold (tags of a repository, repositories of a catalog).
    pub max_listing_items: u64,
    /// Bytes of all of one listing's pages together.
    pub max_listing_bytes: u64,
    /// Bytes of one listing page (a registry that ignores `n`).
    pub max_page_bytes: u64,
    /// Children of one image index looked at.
    pub max_index_children: usize,
    /// Requests in flight to this registry at once.
    pub max_concurrency: usize,
    /// Requests this client may make in its lifetime (token requests included).
    pub request_budget: Option<u64>,
    pub user_agent: String,
    /// An explicit proxy for every request; otherwise the `HTTPS_PROXY`/`HTTP_PROXY`/
    /// `ALL_PROXY`/`NO_PROXY` environment is honoured. Either way the guard resolves and
    /// checks each request's host before sending it (the proxy resolves it, not our
    /// resolver); the proxy's own address is not checked.
    pub proxy: Option<String>,
    /// Hosts that bypass `proxy` and are reached directly: `example.com` (and its
    /// subdomains), `.example.com` (its subdomains), IP addresses and CIDRs.
    pub no_proxy: Vec<String>,
    /// `proxy` is a registry's own, chosen by whoever registered it, not the operator's:
    /// its address passes the guard like a registry host's, before each request (an IP
    /// literal) and when it is resolved (a name).
    pub guard_proxy: bool,
    /// Where requests may go: [`NetworkGuard::default`] denies loopback and private
    /// networks, so a registry on one needs [`NetworkGuard::from_lists`] with an allow list.
    pub guard: NetworkGuard,
    pub retry: RetryPolicy,
    pub max_manifest_bytes: u64,
    /// Cap for blobs read into memory (config blobs).
    pub max_blob_bytes: u64,
    /// Redirect hops followed for one request.
    pub max_redirects: u32,
    /// Hosts besides the registry's own whose `WWW-Authenticate` token realm may receive
    /// the credentials (see [`crate::auth::realm_host_allowed`]); any other realm is
    /// refused with `realm_not_allowed`.
    pub auth_hosts: Vec<String>,
    /// Manifest GETs are paced once the registry's announced remaining budget
    /// (`ratelimit-remaining`) is at or below this share of its limit (see
    /// [`crate::ratelimit`]).
    pub rate_limit_reserve_percent: u8,
    /// The registry's id in imagelib, named in the client's metrics
    /// (`imagelib.registry.id`); without it they name only the host (`server.address`).
    pub registry_id: Option<String>,
}

impl RegistryConfig {
    pub const DEFAULT_USER_AGENT: &'static str =
        concat!("imagelib-registry-client/", env!("CARGO_PKG_VERSION"));

    pub fn new(url: &str, insecure: bool) -> Result<Self, Error> {
        Ok(Self::from_url(RegistryUrl::parse(url, insecure)?))
    }

    pub fn from_url(url: RegistryUrl) -> Self {
        RegistryConfig {
            url,
            ca_pem: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            page_size: 100,
            max_pages: 1_000,
            max_listing_items: 100_000,
            max_listing_bytes: 64 << 20,
            max_page_bytes: 8 << 20,
            max_index_children: 256,
            max_concurrency: 8,
            request_budget: None,
            user_agent: Self::DEFAULT_USER_AGENT.to_owned(),
            proxy: None,
            no_proxy: Vec::new(),
            guard_proxy: false,
            guard: NetworkGuard::default(),
            retry: RetryPolicy::default(),
            max_manifest_bytes: 4 << 20,
            max_blob_bytes: 4 << 20,
            max_redirects: 5,
            auth_hosts: Vec::new(),
            rate_limit_reserve_percent: 20,
            registry_id: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_contract_forms() {
        let u = RegistryUrl::parse("harbor.acme.internal/ai", false).unwrap();
        assert_eq!(u.host(), "harbor.acme.internal");
        assert_eq!(u.namespace(), Some("ai"));
        assert_eq!(u.base().as_str(), "https://harbor.acme.internal/");
        assert_eq!(u.to_string(), "harbor.acme.internal/ai");

        let u = RegistryUrl::parse("https://127.0.0.1:5000/", false).unwrap();
        assert_eq!(u.base().as_str(), "https://127.0.0.1:5000/");
        assert_eq!(u.namespace(), None);

        let u = RegistryUrl::parse("http://localhost:5000/team/sub", true).unwrap();
        assert_eq!(u.base().as_str(), "http://localhost:5000/");
        assert_eq!(u.namespace(), Some("team/sub"));

        let u = RegistryUrl::parse("[::1]:5000", true).unwrap();
        assert_eq!(u.base().as_str(), "http://[::1]:5000/");
    }

    #[test]
    fn docker_hub_by_any_name_is_its_registry_api() {
        for (input, want) in [
            ("docker.io", "registry-1.docker.io"),
            ("https://index.docker.io/", "registry-1.docker.io"),
            ("registry.hub.docker.com", "registry-1.docker.io"),
            ("HTTPS://Hub.Docker.com/", "registry-1.docker.io"),
            ("hub.docker.com:443", "registry-1.docker.io"),
            ("registry-1.docker.io", "registry-1.docker.io"),
            ("docker.io/bitnami", "registry-1.docker.io/bitnami"),
            (
                "https://hub.docker.com/u/acme/",
                "registry-1.docker.io/acme",
            ),
            ("hub.docker.com/orgs/acme", "registry-1.docker.io/acme"),
            ("hub.docker.com/_/postgres", "registry-1.docker.io/library"),
        ] {
            let u = RegistryUrl::parse(input, false).unwrap();
            assert_eq!(u.to_string(), want, "{input}");
            assert_eq!(
                u.base().as_str(),
                "https://registry-1.docker.io/",
                "{input}"
            );
        }
        // Another port is another server (a mirror, a test), and is kept.
        assert_eq!(
            RegistryUrl::parse("docker.io:5000", false)
                .unwrap()
                .to_string(),
            "docker.io:5000"
        );
        let err = RegistryUrl::parse("http://docker.io", true).unwrap_err();
        assert!(err.to_string().contains("HTTPS only"), "{err}");
    }

    #[test]
    fn ghcr_addresses_are_normalised() {
        for (input, want) in [
            ("https://ghcr.io/Acme", "ghcr.io/acme"),
            ("GHCR.io/Acme-Corp/", "ghcr.io/acme-corp"),
            ("ghcr.io:443/octocat//", "ghcr.io/octocat"),
            ("ghcr.io.", "ghcr.io"),
            ("https://ghcr.io/", "ghcr.io"),
        ] {
            let u = RegistryUrl::parse(input, false).unwrap();
            assert_eq!(u.to_string(), want, "{input}");
            assert_eq!(u.base().as_str(), "https://ghcr.io/", "{input}");
        }
        let err = RegistryUrl::parse("http://ghcr.io/acme", true).unwrap_err();
        assert!(err.to_string().contains("HTTPS only"), "{err}");
        assert_eq!(
            RegistryUrl::parse("ghcr.io:5000/Acme", false)
                .map(|u| u.to_string())
                .ok(),
            None,
            "another port is another server, and its namespace is not lower-cased"
        );
    }

    #[test]
    fn refuses_what_the_contract_refuses() {
        for (input, insecure, needle) in [
            ("http://r.example", false, "insecure"),
            ("https://user:pw@r.example", false, "user-info"),
            ("http://user:pw@r.example", false, "user-info"),
            ("r.example/x?y=1", false, "query"),
            ("r.example#frag", false, "fragment"),
            ("ftp://r.example", false, "scheme"),
            ("", false, "empty"),
            ("r.example/Not_Valid", false, "namespace"),
        ] {
            let err = RegistryUrl::parse(input, insecure).unwrap_err().to_string();
            assert!(err.contains(needle), "{input}: {err}");
            assert!(!err.contains("pw@"), "{err}");
        }
    }
}
