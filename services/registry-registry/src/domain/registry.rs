//! A registry as an admin registers it: parsed and checked before anything is published.

use imagelib_events::RepositoryName;
use imagelib_events::model::RegistryType;
use registry_client::RegistryUrl;
use registry_client::vendor::dockerhub;
use registry_client::vendor::gar::GarLocation;
use serde::Deserialize;

use super::credentials::Credentials;

/// `POST /v1/registries`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// A name people recognise, e.g. `Acme Harbor`; the type's label and the address
    /// when left out.
    #[serde(default)]
    pub label: Option<String>,
    /// `host[:port][/namespace]`; `https://` is accepted and stripped. Optional for the
    /// types with one address (`dockerhub`: `registry-1.docker.io`, `ghcr`: `ghcr.io`; see
    /// `GET /v1/registry-types`).
    #[serde(default)]
    pub url: Option<String>,
    /// A namespace appended to `url` (or to the type's default address): the Docker Hub
    /// user or organisation, the GitHub owner, the Harbor project.
    #[serde(default)]
    pub namespace: Option<String>,
    #[schema(value_type = String, example = "harbor")]
    pub registry_type: RegistryType,
    /// Plain HTTP instead of HTTPS.
    #[serde(default)]
    pub insecure: bool,
    /// PEM CA certificates trusted for this registry in addition to the system roots.
    #[serde(default)]
    pub ca_pem: Option<String>,
    /// Teams that see the registry; empty means everyone.
    #[serde(default)]
    pub visibility: Vec<String>,
    /// `{"kind": "none" | "basic" | "token" | "aws_ecr" | "azure_service_principal", …}`
    #[serde(default)]
    #[schema(value_type = Object)]
    pub credentials: Credentials,
    /// Seconds between scheduled scans (60 to 604800).
    #[serde(default)]
    pub scan_interval_secs: Option<u64>,
    /// Repositories to scan when the registry has no usable `_catalog` (Docker Hub, GHCR, ECR
    /// without the permission).
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub repositories: Vec<String>,
    /// Hosts besides the registry's own whose `WWW-Authenticate` token realm may receive
    /// the credentials (a token service on another host). Docker Hub's `auth.docker.io`
    /// and GitLab's `gitlab.com` are built in; any other realm host is refused
    /// (`realm_not_allowed`).
    #[serde(default)]
    pub auth_hosts: Vec<String>,
    /// Count the registry's pull notifications (per-tag pull counts and last pull in the
    /// catalog). Off by default.
    #[serde(default)]
    pub report_pulls: bool,
    /// The registry's own forward proxy, `http://host:port` or `https://host:port` (no
    /// credentials, no path). Requests to the registry (and its token realm and vendor API)
    /// go through it, HTTPS ones through a `CONNECT` tunnel; its address must pass the
    /// network guard. Absent: the scanner's proxy environment decides.
    #[serde(default)]
    pub proxy_url: Option<String>,
    /// Hosts reached directly despite `proxy_url`: `example.com` (and its subdomains),
    /// `.example.com` (its subdomains), IP addresses, CIDRs; at most 32.
    #[serde(default)]
    pub no_proxy: Vec<String>,
    /// `gcr` only: the Artifact Registry repository the registry serves, as Google names it,
    /// `projects/{project}/locations/{location}/repositories/{repository}`. Its packages
    /// are listed through the Artifact Registry API when `_catalog` is refused. Needed when
    /// the URL is not the repository's `<location>-docker.pkg.dev/<project>/<repository>`
    /// address (a mirror, a private endpoint, a proxy host); with such a URL it may be left
    /// out, and if given must name the same repository.
    #[serde(default)]
    pub artifact_registry: Option<String>,
    /// `false` saves the registry without checking the connection first.
    #[serde(default = "yes")]
    pub validate: bool,
}

fn yes() -> bool {
    true
}

/// `PATCH /v1/registries/{id}`: absent fields stay as they are.
///
/// Stored credentials never follow a registry to another place: a change of `url`,
/// `insecure` or `registry_type`, or a new host in `auth_hosts`, needs `credentials` in the
/// same request (unless the registry's auth is `none`), and is validated with them before
/// anything is saved.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    pub label: Option<String>,
    pub url: Option<String>,
    pub insecure: Option<bool>,
    #[schema(value_type = Option<String>)]
    pub registry_type: Option<RegistryType>,
    /// Replaces the list of hosts whose token realm may receive the credentials.
    pub auth_hosts: Option<Vec<String>>,
    /// New credentials, required with a change of `url`, `insecure`, `registry_type` or a
    /// new `auth_hosts` entry.
    #[schema(value_type = Option<Object>)]
    pub credentials: Option<Credentials>,
    /// `null` removes the custom CA.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub ca_pem: Option<Option<String>>,
    pub visibility: Option<Vec<String>>,
    pub scan_interval_secs: Option<u64>,
    #[schema(value_type = Option<Vec<String>>)]
    pub repositories: Option<Vec<String>>,
    pub report_pulls: Option<bool>,
    /// `null` removes the registry's proxy.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub proxy_url: Option<Option<String>>,
    /// Replaces the hosts reached directly despite the proxy.
    pub no_proxy: Option<Vec<String>>,
    /// `gcr` only: the Artifact Registry repository's resource name; `null` removes it
    /// (the URL's location is used again).
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub artifact_registry: Option<Option<String>>,
}

fn double_option<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// `PUT /v1/registries/{id}/credentials`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    #[schema(value_type = Object)]
    pub credentials: Credentials,
    #[serde(default = "yes")]
    pub validate: bool,
}

/// A field that is wrong, as a JSON pointer and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pointer}: {message}")]
pub struct FieldError {
    pub pointer: String,
    pub message: String,
}

pub fn field(pointer: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        pointer: pointer.into(),
        message: message.into(),
    }
}

pub fn check_label(label: &str) -> Result<String, FieldError> {
    let label = label.trim();
    if label.is_empty() || label.chars().count() > 200 || label.chars().any(char::is_control) {
        return Err(field(
            "/label",
            "1 to 200 characters, no control characters",
        ));
    }
    Ok(label.to_owned())
}

pub fn check_url(url: &str, insecure: bool) -> Result<RegistryUrl, FieldError> {
    RegistryUrl::parse(url, insecure).map_err(|e| field("/url", e.to_string()))
}

pub fn check_visibility(teams: &[String]) -> Result<Vec<String>, FieldError> {
    let mut out = Vec::with_capacity(teams.len());
    for (i, t) in teams.iter().enumerate() {
        let ok = !t.is_empty()
            && t.len() <= 63
            && t.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
            });
        if !ok {
            return Err(field(
                &format!("/visibility/{i}"),
                "team names are 1 to 63 characters of a-z, 0-9, `-`, `_` and `.`",
            ));
        }
        if !out.contains(t) {
            out.push(t.clone());
        }
    }
    Ok(out)
}

pub fn check_ca(ca: Option<&str>) -> Result<Option<String>, FieldError> {
    let Some(ca) = ca.map(str::trim).filter(|c| !c.is_empty()) else {
        return Ok(None);
    };
    if ca.len() > 256 * 1024 {
        return Err(field("/ca_pem", "larger than 256 KiB"));
    }
    let count = ca.matches("-----BEGIN CERTIFICATE-----").count();
    if count == 0 || count != ca.matches("-----END CERTIFICATE-----").count() {
        return Err(field(
            "/ca_pem",
            "PEM certificates (-----BEGIN CERTIFICATE----- … -----END CERTIFICATE-----)",
        ));
    }
    reqwest::Certificate::from_pem_bundle(ca.as_bytes())
        .map_err(|e| field("/ca_pem", format!("not valid PEM certificates: {e}")))?;
    Ok(Some(ca.to_owned()))
}

/// Host names (or IP literals) without scheme, port or path; at most 16, lower-cased,
/// deduplicated.
pub fn check_auth_hosts(hosts: &[String]) -> Result<Vec<String>, FieldError> {
    if hosts.len() > 16 {
        return Err(field("/auth_hosts", "at most 16 hosts"));
    }
    let mut out: Vec<String> = Vec::with_capacity(hosts.len());
    for (i, h) in hosts.iter().enumerate() {
        let h = h.trim().trim_end_matches('.').to_ascii_lowercase();
        let parsed = reqwest::Url::parse(&format!("https://{h}/")).ok();
        let ok = !h.is_empty()
            && h.len() <= 253
            && !h.contains(['/', '@', '?', '#', ':'])
            && parsed.is_some_and(|u| u.host_str() == Some(h.as_str()));
        if !ok {
            return Err(field(
                &format!("/auth_hosts/{i}"),
                "a host name such as `auth.example.com` (no scheme, port or path)",
            ));
        }
        if !out.contains(&h) {
            out.push(h);
        }
    }
    Ok(out)
}

/// A registry's proxy: `http[s]://host[:port]` only. User-info is refused (proxy
/// credentials would be a secret in the clear in every event and view), and so is a path,
/// a query or a fragment. Returned as `scheme://host:port` (the scheme's port when absent).
pub fn check_proxy_url(proxy: Option<&str>) -> Result<Option<String>, FieldError> {
    let Some(proxy) = proxy.map(str::trim).filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let bad = |m: &str| field("/proxy_url", m);
    if proxy.len() > 2048 {
        return Err(bad("longer than 2048 characters"));
    }
    let url = reqwest::Url::parse(proxy)
        .map_err(|_| bad("a proxy URL such as `http://proxy.internal:3128`"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("the proxy's scheme must be http:// or https://"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "a proxy URL must not hold credentials (user:password@): proxies that need them are not supported",
        ));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(bad(
            "only scheme, host and port: `http://proxy.internal:3128` (no path, query or fragment)",
        ));
    }
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        return Err(bad("the proxy URL has no host"));
    };
    let port = url.port_or_known_default().unwrap_or(80);
    Ok(Some(format!("{}://{host}:{port}", url.scheme())))
}

/// The proxy's address against the network guard: an IP literal is checked as it is, a
/// name as it resolves here (a name that does not resolve is left to validation and to
/// the scanner's resolver, which checks it again at every connection).
pub async fn check_proxy_network(
    proxy: &str,
    guard: &registry_client::NetworkGuard,
) -> Result<(), FieldError> {
    let url = reqwest::Url::parse(proxy).map_err(|e| field("/proxy_url", e.to_string()))?;
    let refused = |e: registry_client::Error| {
        field(
            "/proxy_url",
            format!("the proxy's address is not allowed by the network guard: {e}"),
        )
    };
    guard.check_url(&url).map_err(refused)?;
    match guard
        .check_target(&url, std::time::Duration::from_secs(5))
        .await
    {
        Err(e) if e.kind() == registry_client::ErrorKind::Dns => Ok(()),
        other => other.map_err(refused),
    }
}

/// Hosts that bypass the proxy: names (`.suffix` for subdomains only), IP addresses and
/// CIDRs; at most 32, each at most 253 characters, lower-cased, deduplicated.
pub fn check_no_proxy(hosts: &[String]) -> Result<Vec<String>, FieldError> {
    if hosts.len() > 32 {
        return Err(field("/no_proxy", "at most 32 entries"));
    }
    let mut out: Vec<String> = Vec::with_capacity(hosts.len());
    for (i, h) in hosts.iter().enumerate() {
        let h = h.trim().trim_end_matches('.').to_ascii_lowercase();
        let network = is_network(&h);
        let name = h.strip_prefix('.').unwrap_or(&h);
        let ok = !h.is_empty()
            && h.len() <= 253
            && (network
                || (!name.is_empty()
                    && !name.contains(['/', '@', '?', '#', ':', '*', ','])
                    && reqwest::Url::parse(&format!("https://{name}/"))
                        .ok()
                        .is_some_and(|u| u.host_str() == Some(name))));
        if !ok {
            return Err(field(
                &format!("/no_proxy/{i}"),
                "a host (`registry.internal`), a suffix (`.internal`), an address or a CIDR (`10.0.0.0/8`)",
            ));
        }
        if !out.contains(&h) {
            out.push(h);
        }
    }
    Ok(out)
}

/// A `gcr` registry's Artifact Registry repository
/// (`projects/{project}/locations/{location}/repositories/{repository}`), returned as
/// [`GarLocation::resource`] writes it; blank is none. Refused on another type, when it
/// does not parse, and when the URL is itself an Artifact Registry address naming another
/// repository (both are said).
pub fn check_artifact_registry(
    registry_type: RegistryType,
    url: &RegistryUrl,
    value: Option<&str>,
) -> Result<Option<String>, FieldError> {
    const POINTER: &str = "/artifact_registry";
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if registry_type != RegistryType::Gcr {
        return Err(field(
            POINTER,
            "an Artifact Registry repository is named on `gcr` registries only",
        ));
    }
    if value.len() > 1024 {
        return Err(field(POINTER, "longer than 1024 characters"));
    }
    let named = GarLocation::from_resource(value).map_err(|e| field(POINTER, e.to_string()))?;
    if let Ok(at_url) = GarLocation::from_registry_url(url)
        && at_url != named
    {
        return Err(field(
            POINTER,
            format!(
                "the URL `{url}` is the Artifact Registry repository `{}`, but artifact_registry names `{}`: leave artifact_registry out, or make both name the same repository",
                at_url.resource(),
                named.resource()
            ),
        ));
    }
    Ok(Some(named.resource()))
}

/// An IP address, or a CIDR (`address/prefix`).
fn is_network(s: &str) -> bool {
    match s.split_once('/') {
        None => s.parse::<std::net::IpAddr>().is_ok(),
        Some((addr, prefix)) => addr.parse::<std::net::IpAddr>().is_ok_and(|ip| {
            prefix.bytes().all(|b| b.is_ascii_digit())
                && prefix
                    .parse::<u8>()
                    .is_ok_and(|p| p <= if ip.is_ipv4() { 32 } else { 128 })
        }),
    }
}

pub fn check_interval(secs: Option<u64>) -> Result<Option<u64>, FieldError> {
    match secs {
        Some(s) if !(60..=604_800).contains(&s) => Err(field(
            "/scan_interval_secs",
            "between 60 (a minute) and 604800 (a week)",
        )),
        other => Ok(other),
    }
}

pub fn check_repositories(repos: &[String]) -> Result<Vec<RepositoryName>, FieldError> {
    repos
        .iter()
        .enumerate()
        .map(|(i, r)| {
            r.parse::<RepositoryName>()
                .map_err(|e| field(&format!("/repositories/{i}"), e.to_string()))
        })
        .collect()
}

/// Docker Hub's official images are under `library/`: on a `dockerhub` registry (or any
/// registry at one of Hub's names), a repository `postgres` is `library/postgres`.
pub fn profile_repositories(
    registry_type: RegistryType,
    url: &RegistryUrl,
    repos: Vec<RepositoryName>,
) -> Vec<RepositoryName> {
    if registry_type != RegistryType::Dockerhub && !dockerhub::is_hub(url.host(), url.port()) {
        return repos;
    }
    let mut out: Vec<RepositoryName> = Vec::with_capacity(repos.len());
    for r in repos.iter().map(dockerhub::official) {
        if !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

/// A rule of a Docker Hub registry: an exact repository `postgres` is `library/postgres`
/// (globs and regular expressions are kept as written).
pub fn profile_rule(
    registry_type: RegistryType,
    url: Option<&RegistryUrl>,
    rule: &mut imagelib_events::event::RuleSet,
) {
    let hub = registry_type == RegistryType::Dockerhub
        || url.is_some_and(|u| dockerhub::is_hub(u.host(), u.port()));
    if !hub {
        return;
    }
    for pattern in &mut rule.repositories {
        if let imagelib_events::model::RepositoryPattern::Exact(name) = pattern {
            *name = dockerhub::official(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_registry_resource_names() {
        let mirror = check_url("mirror.corp.example/team", false).unwrap();
        let res = "projects/my-project/locations/us-central1/repositories/images";
        assert_eq!(
            check_artifact_registry(RegistryType::Gcr, &mirror, Some(&format!(" {res} ")))
                .unwrap()
                .as_deref(),
            Some(res)
        );
        assert_eq!(
            check_artifact_registry(RegistryType::Gcr, &mirror, Some("  ")).unwrap(),
            None
        );
        assert_eq!(
            check_artifact_registry(RegistryType::Gcr, &mirror, None).unwrap(),
            None
        );
        let e = check_artifact_registry(RegistryType::Harbor, &mirror, Some(res)).unwrap_err();
        assert_eq!(e.pointer, "/artifact_registry");
        assert!(e.message.contains("`gcr`"), "{e}");
        for bad in [
            "us-central1-docker.pkg.dev/my-project/images",
            "projects/my-project/locations/us-central1/repositories/Images",
            "projects/my-project/locations/us-central1/repositories/images/packages/app",
        ] {
            let e = check_artifact_registry(RegistryType::Gcr, &mirror, Some(bad)).unwrap_err();
            assert_eq!(e.pointer, "/artifact_registry", "{bad}");
        }
        let google = check_url("us-central1-docker.pkg.dev/my-project/images", false).unwrap();
        assert_eq!(
            check_artifact_registry(RegistryType::Gcr, &google, Some(res))
                .unwrap()
                .as_deref(),
            Some(res)
        );
        let e = check_artifact_registry(
            RegistryType::Gcr,
            &google,
            Some("projects/my-project/locations/europe/repositories/images"),
        )
        .unwrap_err();
        assert_eq!(e.pointer, "/artifact_registry");
        assert!(e.message.contains(res), "{e}");
        assert!(e.message.contains("locations/europe"), "{e}");
    }

    #[test]
    fn urls() {
        assert_eq!(
            check_url("https://harbor.acme.internal/ai", false)
                .unwrap()
                .to_string(),
            "harbor.acme.internal/ai"
        );
        assert!(check_url("http://r.local:5000", false).is_err());
        assert!(check_url("http://r.local:5000", true).is_ok());
        for bad in ["user:pw@r.io", "r.io/?x=1", "r.io/#f", ""] {
            let e = check_url(bad, false).unwrap_err();
            assert_eq!(e.pointer, "/url", "{bad}");
        }
        assert!(
            check_url("user:pw@r.io", false)
                .unwrap_err()
                .message
                .contains("credentials separately")
        );
    }

    #[test]
    fn docker_hub_addresses_and_official_images() {
        for input in [
            "docker.io",
            "https://index.docker.io/",
            "registry.hub.docker.com",
            "hub.docker.com",
        ] {
            assert_eq!(
                check_url(input, false).unwrap().to_string(),
                "registry-1.docker.io",
                "{input}"
            );
        }
        let names = |v: &[&str]| {
            check_repositories(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
        };
        let hub = check_url("docker.io", false).unwrap();
        assert_eq!(
            profile_repositories(
                RegistryType::Generic,
                &hub,
                names(&["postgres", "bitnami/redis", "library/postgres"])
            ),
            names(&["library/postgres", "bitnami/redis"])
        );
        let mirror = check_url("mirror.example:5000", false).unwrap();
        assert_eq!(
            profile_repositories(RegistryType::Dockerhub, &mirror, names(&["redis"])),
            names(&["library/redis"])
        );
        assert_eq!(
            profile_repositories(RegistryType::Harbor, &mirror, names(&["redis"])),
            names(&["redis"])
        );
    }

    #[test]
    fn proxies() {
        assert_eq!(check_proxy_url(None).unwrap(), None);
        assert_eq!(check_proxy_url(Some("  ")).unwrap(), None);
        assert_eq!(
            check_proxy_url(Some("http://Proxy.Internal:3128")).unwrap(),
            Some("http://proxy.internal:3128".into())
        );
        assert_eq!(
            check_proxy_url(Some("https://proxy.internal/")).unwrap(),
            Some("https://proxy.internal:443".into())
        );
        for (bad, needle) in [
            ("http://user:pw@proxy:3128", "credentials"),
            ("http://user@proxy:3128", "credentials"),
            ("socks5://proxy:1080", "scheme"),
            ("http://proxy:3128/path", "only scheme, host and port"),
            ("http://proxy:3128/?q=1", "only scheme, host and port"),
            ("proxy:3128", "scheme"),
            ("not a url", "proxy URL"),
        ] {
            let e = check_proxy_url(Some(bad)).unwrap_err();
            assert_eq!(e.pointer, "/proxy_url", "{bad}");
            assert!(e.message.contains(needle), "{bad}: {}", e.message);
            assert!(!e.message.contains("pw"), "{}", e.message);
        }
        assert_eq!(
            check_no_proxy(&[
                "Registry.Internal.".into(),
                ".corp".into(),
                "10.0.0.0/8".into(),
                "::1".into(),
                "registry.internal".into()
            ])
            .unwrap(),
            vec!["registry.internal", ".corp", "10.0.0.0/8", "::1"]
        );
        for bad in ["", "*", "a.io:5000", "http://a.io", "a b", "u@a.io", "."] {
            assert_eq!(
                check_no_proxy(&["ok.io".into(), bad.into()])
                    .unwrap_err()
                    .pointer,
                "/no_proxy/1",
                "{bad}"
            );
        }
        assert!(check_no_proxy(&vec!["a.io".to_owned(); 33]).is_err());
    }

    #[tokio::test]
    async fn a_proxy_in_a_blocked_network_is_refused() {
        let guard = registry_client::NetworkGuard::default();
        for blocked in [
            "http://169.254.169.254:80",
            "http://127.0.0.1:3128",
            "http://[::1]:3128",
            "http://10.1.2.3:3128",
        ] {
            let e = check_proxy_network(blocked, &guard).await.unwrap_err();
            assert_eq!(e.pointer, "/proxy_url", "{blocked}");
            assert!(e.message.contains("network guard"), "{}", e.message);
        }
        // `localhost` resolves to loopback here.
        assert!(
            check_proxy_network("http://localhost:3128", &guard)
                .await
                .is_err()
        );
        let allowed = registry_client::NetworkGuard::from_lists(None, Some("127.0.0.0/8")).unwrap();
        check_proxy_network("http://127.0.0.2:3128", &allowed)
            .await
            .unwrap();
        // The metadata address stays refused whatever the allow list says.
        let wide = registry_client::NetworkGuard::from_lists(None, Some("0.0.0.0/0")).unwrap();
        assert!(
            check_proxy_network("http://169.254.169.254:80", &wide)
                .await
                .is_err()
        );
    }

    #[test]
    fn fields() {
        assert!(check_label("  ").is_err());
        assert_eq!(check_label(" Acme ").unwrap(), "Acme");
        assert!(check_visibility(&["ML".into()]).is_err());
        assert_eq!(
            check_visibility(&["ml".into(), "ml".into()]).unwrap(),
            vec!["ml".to_owned()]
        );
        assert!(check_interval(Some(5)).is_err());
        assert_eq!(
            check_auth_hosts(&["Auth.Example.com.".into(), "auth.example.com".into()]).unwrap(),
            vec!["auth.example.com".to_owned()]
        );
        for bad in ["https://a.io", "a.io:443", "a.io/x", "", "u@a.io"] {
            assert_eq!(
                check_auth_hosts(&["ok.io".into(), bad.into()])
                    .unwrap_err()
                    .pointer,
                "/auth_hosts/1",
                "{bad}"
            );
        }
        assert!(check_ca(Some("not pem")).is_err());
        assert_eq!(check_ca(Some("  ")).unwrap(), None);
        assert_eq!(
            check_repositories(&["ok/x".into(), "Bad".into()])
                .unwrap_err()
                .pointer,
            "/repositories/1"
        );
    }
}
