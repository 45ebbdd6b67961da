//! Docker Hub: the addresses people type, the registry they mean, and official images.
//!
//! `docker.io`, `index.docker.io`, `registry.hub.docker.com` and `hub.docker.com` (with or
//! without `https://`, a trailing slash or `:443`) all mean the registry API at
//! `https://registry-1.docker.io` — none of the others serves `/v2/` usefully. Its token
//! service is `auth.docker.io` (a built-in token host of [`crate::auth::realm_host_allowed`]
//! for these hosts only). Official images live under `library/`: `postgres` is
//! `library/postgres`.

use std::sync::Arc;

use imagelib_events::RepositoryName;
use reqwest::Method;
use url::Url;

use crate::auth::Credentials;
use crate::config::{RegistryConfig, RegistryUrl};
use crate::error::{Cap, Error, Result};
use crate::pagination::Listing;
use crate::transport::{Authz, Transport};

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

/// One page of `GET /v2/namespaces/{namespace}/repositories`.
#[derive(serde::Deserialize)]
struct RepositoriesPage {
    #[serde(default)]
    next: Option<String>,
    #[serde(default)]
    results: Vec<RepositoryEntry>,
}

#[derive(serde::Deserialize)]
struct RepositoryEntry {
    name: String,
}

/// `POST {api}/v2/users/login` with the Docker ID and password (or personal access
/// token): the session token (a JWT) for the API's own origin only.
async fn hub_login(
    transport: &Transport,
    api: &Url,
    username: &str,
    password: &secrecy::SecretString,
) -> Result<Authz> {
    use secrecy::ExposeSecret as _;
    let url = api
        .join("v2/users/login")
        .map_err(|e| Error::Config(format!("the Hub API `{api}`: {e}")))?;
    let body = serde_json::to_vec(&serde_json::json!({
        "username": username,
        "password": password.expose_secret(),
    }))
    .map_err(|e| Error::Config(format!("the Hub login: {e}")))?;
    let reply = transport.post_json(url.clone(), body, 64 * 1024).await?;
    if !reply.status.is_success() {
        return Err(match reply.status.as_u16() {
            401 | 403 => Error::Unauthorized {
                url: url.to_string(),
                reason: "the Hub API refused the login (Docker ID and personal access token)"
                    .into(),
            },
            _ => reply.status_error(),
        });
    }
    #[derive(serde::Deserialize)]
    struct Login {
        token: String,
    }
    let login: Login = serde_json::from_slice(&reply.body)
        .map_err(|e| Error::protocol(&url, format!("not a Hub login answer: {e}")))?;
    if login.token.is_empty() || login.token.len() > 16 * 1024 {
        return Err(Error::protocol(
            &url,
            "the Hub login answered no usable token",
        ));
    }
    Authz::bearer_for(api.origin(), &login.token)
}

/// Whether `namespace` is a Docker Hub namespace (a user or organisation): 2 to 255
/// characters of `a-z`, `0-9`, `-`, `_` and `.`.
pub fn is_namespace(namespace: &str) -> bool {
    (2..=255).contains(&namespace.len())
        && namespace.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        })
}

/// The repositories of a Hub namespace through the Hub API
/// (`GET {api}/v2/namespaces/{namespace}/repositories?page_size=…`): anonymously what a
/// public namespace shows, or, with `login` Basic credentials (a Docker ID and a personal
/// access token), after `POST {api}/v2/users/login`, with the session token sent to the
/// API's origin only — private repositories included. Pages are followed by their `next` URL, only on the API's own
/// origin; pages, bytes and items are bounded by `config`'s listing caps, and the
/// requests pass the same network guard, timeouts, retries and `Retry-After` handling as
/// registry requests. Like [`crate::RegistryClient::catalog`], a failure after the first
/// page ends the listing incomplete rather than failing it.
pub async fn namespace_repositories(
    config: &RegistryConfig,
    api: &Url,
    namespace: &str,
    login: Option<&Credentials>,
) -> Result<Listing<RepositoryName>> {
    if !is_namespace(namespace) {
        return Err(Error::Config(format!(
            "`{namespace}` is not a Docker Hub namespace"
        )));
    }
    let host = api
        .host_str()
        .ok_or_else(|| Error::Config(format!("the Hub API `{api}` has no host")))?;
    let mut api_config = config.clone();
    api_config.url = RegistryUrl::verbatim(host, api.port(), api.scheme() == "http");
    api_config.auth_hosts = Vec::new();
    let transport = Transport::new(api_config, Arc::new(Credentials::Anonymous))?;
    let origin = api.origin();
    let authz = match login {
        Some(Credentials::Basic { username, password }) => {
            Some(hub_login(&transport, api, username, password).await?)
        }
        _ => None,
    };
    let page_size = config.page_size.clamp(1, 100);
    let mut url = api
        .join(&format!(
            "v2/namespaces/{namespace}/repositories?page_size={page_size}"
        ))
        .map_err(|e| Error::Config(format!("the Hub API `{api}`: {e}")))?;
    let mut listing = Listing {
        items: Vec::new(),
        complete: true,
        pages: 0,
        skipped: Vec::new(),
        error: None,
    };
    let mut seen = std::collections::HashSet::new();
    let mut bytes = 0u64;
    loop {
        let cut = |listing: &mut Listing<RepositoryName>, e: Error| {
            listing.complete = false;
            listing.error = Some(e);
        };
        if listing.pages >= config.max_pages {
            cut(
                &mut listing,
                Error::Capped {
                    url: url.to_string(),
                    cap: Cap::ListingPages,
                    limit: u64::from(config.max_pages),
                },
            );
            return Ok(listing);
        }
        seen.insert(url.to_string());
        let reply = match transport
            .send(
                Method::GET,
                url.clone(),
                authz.as_ref(),
                Some("application/json"),
                config.max_page_bytes,
            )
            .await
        {
            Ok(r) if r.status.is_success() => r,
            Ok(r) if listing.pages == 0 => return Err(r.status_error()),
            Err(e) if listing.pages == 0 => return Err(e),
            Ok(r) => {
                cut(&mut listing, r.status_error());
                return Ok(listing);
            }
            Err(e) => {
                cut(&mut listing, e);
                return Ok(listing);
            }
        };
        listing.pages += 1;
        let api_left = api_allowance_left(&reply.headers);
        bytes += reply.body.len() as u64;
        if bytes > config.max_listing_bytes {
            cut(
                &mut listing,
                Error::Capped {
                    url: url.to_string(),
                    cap: Cap::ListingBytes,
                    limit: config.max_listing_bytes,
                },
            );
            return Ok(listing);
        }
        let page: RepositoriesPage = match serde_json::from_slice(&reply.body) {
            Ok(p) => p,
            Err(e) => {
                let e = Error::protocol(&url, format!("not a Hub repositories page: {e}"));
                if listing.pages == 1 {
                    return Err(e);
                }
                cut(&mut listing, e);
                return Ok(listing);
            }
        };
        for entry in page.results {
            match format!("{namespace}/{}", entry.name).parse::<RepositoryName>() {
                Ok(name) if !listing.items.contains(&name) => listing.items.push(name),
                Ok(_) => {}
                Err(_) if listing.skipped.len() < 100 => {
                    listing.skipped.push(entry.name.chars().take(256).collect())
                }
                Err(_) => {}
            }
            if listing.items.len() as u64 > config.max_listing_items {
                listing.items.truncate(config.max_listing_items as usize);
                cut(
                    &mut listing,
                    Error::Capped {
                        url: url.to_string(),
                        cap: Cap::ListingItems,
                        limit: config.max_listing_items,
                    },
                );
                return Ok(listing);
            }
        }
        let Some(next) = page.next.filter(|n| !n.is_empty()) else {
            return Ok(listing);
        };
        let next = match url.join(&next) {
            Ok(n) if n.origin() == origin && !seen.contains(n.as_str()) => n,
            Ok(n) if n.origin() != origin => {
                cut(
                    &mut listing,
                    Error::protocol(
                        &url,
                        format!(
                            "`next` leaves the Hub API for {}",
                            n.origin().ascii_serialization()
                        ),
                    ),
                );
                return Ok(listing);
            }
            Ok(_) => {
                cut(
                    &mut listing,
                    Error::protocol(&url, "`next` loops to a page already read"),
                );
                return Ok(listing);
            }
            Err(e) => {
                cut(
                    &mut listing,
                    Error::protocol(&url, format!("bad `next`: {e}")),
                );
                return Ok(listing);
            }
        };
        // The Hub API's own allowance is spent: the next call would be a `429`. Stop here,
        // incomplete and rate limited, until the allowance resets.
        if let Some((0, retry_after)) = api_left {
            cut(
                &mut listing,
                Error::RateLimited {
                    url: next.to_string(),
                    retry_after,
                },
            );
            return Ok(listing);
        }
        url = next;
    }
}

/// The Hub API's `X-RateLimit-Remaining` and how long until `X-RateLimit-Reset` (a unix
/// time), bounded to a day: what a listing may still ask.
fn api_allowance_left(
    headers: &reqwest::header::HeaderMap,
) -> Option<(u64, Option<std::time::Duration>)> {
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let remaining = number("x-ratelimit-remaining")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let wait = number("x-ratelimit-reset")
        .map(|reset| std::time::Duration::from_secs(reset.saturating_sub(now).min(86_400)));
    Some((remaining, wait))
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
