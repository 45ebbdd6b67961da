//! Docker Hub: the addresses people type, the registry they mean, and official images.
//!
//! `docker.io`, `index.docker.io`, `registry.hub.docker.com` and `hub.docker.com` (with or
//! without `https://`, a trailing slash or `:443`) all mean the registry API at
//! `https://registry-1.docker.io` — none of the others serves `/v2/` usefully. Its token
//! service is `auth.docker.io` (a built-in token host of [`crate::auth::realm_host_allowed`]
//! for these hosts only). Official images live under `library/`: `postgres` is
//! `library/postgres`.

use imagelib_events::RepositoryName;

/// The host that serves Docker Hub's Registry API.
pub const REGISTRY_HOST: &str = "registry-1.docker.io";
/// Docker Hub's token service (`WWW-Authenticate: Bearer realm="https://auth.docker.io/token"`).
pub const AUTH_HOST: &str = "auth.docker.io";
/// Docker Hub's web API (namespaces, repositories, logins).
pub const DEFAULT_API: &str = "https://hub.docker.com";
/// The namespace of official images.
pub const OFFICIAL_NAMESPACE: &str = "library";

/// Every name Docker Hub's registry goes by.
const ALIASES: [&str; 5] = [
    REGISTRY_HOST,
    "docker.io",
    "index.docker.io",
    "registry.hub.docker.com",
    "hub.docker.com",
];

/// Whether `host` (lower-case, without a port) is one of Docker Hub's registry names.
pub fn is_hub_host(host: &str) -> bool {
    let host = host.trim_end_matches('.');
    ALIASES.iter().any(|a| host.eq_ignore_ascii_case(a))
}

/// Whether a registry at `host[:port]` is Docker Hub: one of its names, on the default
/// HTTPS port.
pub fn is_hub(host: &str, port: Option<u16>) -> bool {
    is_hub_host(host) && port.is_none_or(|p| p == 443)
}

/// The namespace a Hub web address names: `hub.docker.com/u/acme` and
/// `hub.docker.com/orgs/acme` are the namespace `acme`; `hub.docker.com/_/postgres` is the
/// official images' `library`. Other paths are kept as they are.
pub fn namespace_of_path(path: &str) -> &str {
    let path = path.trim_matches('/');
    let mut parts = path.splitn(3, '/');
    match (parts.next(), parts.next()) {
        (Some("u" | "orgs" | "r"), Some(ns)) if !ns.is_empty() => ns,
        (Some("_"), _) => OFFICIAL_NAMESPACE,
        _ => path,
    }
}

/// `postgres` → `library/postgres`; a name with a namespace is kept.
pub fn official(repository: &RepositoryName) -> RepositoryName {
    if repository.as_str().contains('/') {
        return repository.clone();
    }
    format!("{OFFICIAL_NAMESPACE}/{repository}")
        .parse()
        .unwrap_or_else(|_| repository.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_names() {
        for h in [
            "docker.io",
            "Index.Docker.io",
            "registry.hub.docker.com",
            "hub.docker.com",
            "registry-1.docker.io",
            "docker.io.",
        ] {
            assert!(is_hub_host(h), "{h}");
        }
        for h in [
            "docker.io.evil.example",
            "evildocker.io",
            "ghcr.io",
            "auth.docker.io",
        ] {
            assert!(!is_hub_host(h), "{h}");
        }
        assert!(is_hub("docker.io", Some(443)));
        assert!(!is_hub("docker.io", Some(5000)));
    }

    #[test]
    fn web_paths_name_a_namespace() {
        assert_eq!(namespace_of_path("/u/acme/"), "acme");
        assert_eq!(namespace_of_path("orgs/acme"), "acme");
        assert_eq!(namespace_of_path("r/acme/app"), "acme");
        assert_eq!(namespace_of_path("_/postgres"), "library");
        assert_eq!(namespace_of_path("acme"), "acme");
        assert_eq!(namespace_of_path(""), "");
    }

    #[test]
    fn official_images_are_under_library() {
        let r = |s: &str| s.parse::<RepositoryName>().unwrap();
        assert_eq!(official(&r("postgres")), r("library/postgres"));
        assert_eq!(official(&r("bitnami/redis")), r("bitnami/redis"));
        assert_eq!(official(&r("library/redis")), r("library/redis"));
    }
}
