//! A registry as an admin registers it: parsed and checked before anything is published.

use imagelib_events::RepositoryName;
use imagelib_events::model::RegistryType;
use registry_client::RegistryUrl;
use registry_client::vendor::dockerhub;
use serde::Deserialize;

use super::credentials::Credentials;

/// `POST /v1/registries`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// A name people recognise, e.g. `Acme Harbor`.
    pub label: String,
    /// `host[:port][/namespace]`; `https://` is accepted and stripped.
    pub url: String,
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
