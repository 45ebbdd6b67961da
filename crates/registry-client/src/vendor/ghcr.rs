//! GitHub Container Registry (`ghcr.io`): no `_catalog`; an owner's (user or
//! organisation) container packages are listed through GitHub's REST API.
//!
//! The registry side is ordinary distribution token auth: `username:PAT` as Basic at
//! `https://ghcr.io/token` (the realm `ghcr.io` announces, on its own host), which the
//! client already does. The REST API (`GET {api}/orgs/{owner}/packages?package_type=container`,
//! or `/users/{owner}/packages` when the owner is not an organisation) is asked with the
//! PAT as `Authorization: Bearer`, sent to the API's origin only.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use imagelib_events::RepositoryName;
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use url::Url;

use crate::auth::Credentials;
use crate::config::{RegistryConfig, RegistryUrl};
use crate::error::{Cap, Error, Result};
use crate::pagination::{Listing, next_link};
use crate::transport::{Authz, Transport};

/// The registry host.
pub const REGISTRY_HOST: &str = "ghcr.io";
/// GitHub's REST API.
pub const DEFAULT_API: &str = "https://api.github.com";
/// The REST API version asked for (`X-GitHub-Api-Version`).
pub const API_VERSION: &str = "2022-11-28";
const ACCEPT: &str = "application/vnd.github+json";

/// Whether `host` (without a port) is GitHub Container Registry.
pub fn is_ghcr_host(host: &str) -> bool {
    host.trim_end_matches('.')
        .eq_ignore_ascii_case(REGISTRY_HOST)
}

/// Whether `owner` can be a GitHub user or organisation login: 1 to 39 characters of
/// ASCII letters, digits and single inner hyphens.
pub fn is_owner(owner: &str) -> bool {
    (1..=39).contains(&owner.len())
        && owner
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !owner.starts_with('-')
        && !owner.ends_with('-')
        && !owner.contains("--")
}

/// The container packages of an owner: the repositories and each one's `visibility`
/// (`public`, `private` or `internal`, as GitHub says).
#[derive(Debug)]
pub struct Packages {
    pub listing: Listing<RepositoryName>,
    pub visibility: BTreeMap<RepositoryName, String>,
}

#[derive(serde::Deserialize)]
struct Package {
    name: String,
    #[serde(default)]
    visibility: Option<String>,
}

/// `{"message": "...", "documentation_url": "..."}`.
fn github_message(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Message {
        message: String,
    }
    serde_json::from_slice::<Message>(body)
        .ok()
        .map(|m| m.message.chars().take(200).collect())
}

fn api_error(url: &Url, status: u16, body: &[u8]) -> Error {
    let said = github_message(body).unwrap_or_else(|| format!("answered {status}"));
    match status {
        401 | 403 => Error::Unauthorized {
            url: url.to_string(),
            reason: format!(
                "the GitHub API refused the token ({said}); a personal access token with `read:packages` is needed"
            ),
        },
        404 => Error::NotFound {
            url: url.to_string(),
        },
        s if s >= 500 => Error::Server {
            url: url.to_string(),
            status: s,
        },
        _ => Error::protocol(url, said),
    }
}

/// The container packages of `owner` through GitHub's REST API at `api`: the
/// organisation's (`/orgs/{owner}/packages`), or, when GitHub answers `404` there, the
/// user's (`/users/{owner}/packages`). With `login` Basic credentials, the password (a
/// personal access token with `read:packages`) is sent as `Authorization: Bearer` to the
/// API's origin only. Pages follow `Link: <…>; rel="next"` on the API's origin only and
/// never to a page already read; pages, bytes and items are bounded by `config`'s listing
/// caps, and requests pass the same network guard, timeouts and retries as registry
/// requests. A failure after the first page ends the listing incomplete.
pub async fn owner_packages(
    config: &RegistryConfig,
    api: &Url,
    owner: &str,
    login: Option<&Credentials>,
) -> Result<Packages> {
    if !is_owner(owner) {
        return Err(Error::Config(format!(
            "`{owner}` is not a GitHub user or organisation"
        )));
    }
    let host = api
        .host_str()
        .ok_or_else(|| Error::Config(format!("the GitHub API `{api}` has no host")))?;
    let mut api_config = config.clone();
    api_config.url = RegistryUrl::verbatim(host, api.port(), api.scheme() == "http");
    api_config.auth_hosts = Vec::new();
    let mut headers = HeaderMap::new();
    headers.insert(
        HeaderName::from_static("x-github-api-version"),
        HeaderValue::from_static(API_VERSION),
    );
    let transport =
        Transport::new(api_config, Arc::new(Credentials::Anonymous))?.with_headers(headers);
    let authz = match login {
        Some(Credentials::Basic { password, .. }) => {
            use secrecy::ExposeSecret as _;
            Some(Authz::bearer_for(api.origin(), password.expose_secret())?)
        }
        _ => None,
    };
    let base = if api.path().ends_with('/') {
        api.clone()
    } else {
        let mut b = api.clone();
        b.set_path(&format!("{}/", api.path()));
        b
    };
    let per_page = config.page_size.clamp(1, 100);
    let first = |kind: &str| {
        base.join(&format!(
            "{kind}/{owner}/packages?package_type=container&per_page={per_page}"
        ))
        .map_err(|e| Error::Config(format!("the GitHub API `{api}`: {e}")))
    };
    match list(config, &transport, authz.as_ref(), first("orgs")?, owner).await {
        Err(Error::NotFound { .. }) => {
            list(config, &transport, authz.as_ref(), first("users")?, owner).await
        }
        other => other,
    }
}

async fn list(
    config: &RegistryConfig,
    transport: &Transport,
    authz: Option<&Authz>,
    mut url: Url,
    owner: &str,
) -> Result<Packages> {
    let origin = url.origin();
    let mut out = Packages {
        listing: Listing {
            items: Vec::new(),
            complete: true,
            pages: 0,
            skipped: Vec::new(),
            error: None,
        },
        visibility: BTreeMap::new(),
    };
    let mut seen = HashSet::new();
    let mut bytes = 0u64;
    let cut = |out: &mut Packages, e: Error| {
        out.listing.complete = false;
        out.listing.error = Some(e);
    };
    loop {
        if out.listing.pages >= config.max_pages {
            let e = Error::Capped {
                url: url.to_string(),
                cap: Cap::ListingPages,
                limit: u64::from(config.max_pages),
            };
            cut(&mut out, e);
            return Ok(out);
        }
        seen.insert(url.to_string());
        let reply = match transport
            .send(
                Method::GET,
                url.clone(),
                authz,
                Some(ACCEPT),
                config.max_page_bytes,
            )
            .await
        {
            Ok(r) if r.status.is_success() => r,
            Ok(r) if out.listing.pages == 0 => {
                return Err(api_error(&url, r.status.as_u16(), &r.body));
            }
            Err(e) if out.listing.pages == 0 => return Err(e),
            Ok(r) => {
                cut(&mut out, api_error(&url, r.status.as_u16(), &r.body));
                return Ok(out);
            }
            Err(e) => {
                cut(&mut out, e);
                return Ok(out);
            }
        };
        out.listing.pages += 1;
        bytes += reply.body.len() as u64;
        if bytes > config.max_listing_bytes {
            let e = Error::Capped {
                url: url.to_string(),
                cap: Cap::ListingBytes,
                limit: config.max_listing_bytes,
            };
            cut(&mut out, e);
            return Ok(out);
        }
        let page: Vec<Package> = match serde_json::from_slice(&reply.body) {
            Ok(p) => p,
            Err(e) => {
                let e = Error::protocol(&url, format!("not a GitHub packages page: {e}"));
                if out.listing.pages == 1 {
                    return Err(e);
                }
                cut(&mut out, e);
                return Ok(out);
            }
        };
        for package in page {
            match format!("{}/{}", owner.to_ascii_lowercase(), package.name)
                .parse::<RepositoryName>()
            {
                Ok(name) if !out.listing.items.contains(&name) => {
                    let visibility = package.visibility.unwrap_or_default();
                    tracing::debug!(repository = %name, %visibility, "ghcr package");
                    out.visibility
                        .insert(name.clone(), visibility.chars().take(32).collect());
                    out.listing.items.push(name);
                }
                Ok(_) => {}
                Err(_) if out.listing.skipped.len() < 100 => out
                    .listing
                    .skipped
                    .push(package.name.chars().take(256).collect()),
                Err(_) => {}
            }
            if out.listing.items.len() as u64 > config.max_listing_items {
                out.listing
                    .items
                    .truncate(config.max_listing_items as usize);
                let e = Error::Capped {
                    url: url.to_string(),
                    cap: Cap::ListingItems,
                    limit: config.max_listing_items,
                };
                cut(&mut out, e);
                return Ok(out);
            }
        }
        let next = match next_link(&reply.headers, &url) {
            Ok(Some(n)) => n,
            Ok(None) => return Ok(out),
            Err(e) => {
                cut(&mut out, Error::protocol(&url, e));
                return Ok(out);
            }
        };
        if next.origin() != origin {
            let e = Error::protocol(
                &url,
                format!(
                    "`next` leaves the GitHub API for {}",
                    next.origin().ascii_serialization()
                ),
            );
            cut(&mut out, e);
            return Ok(out);
        }
        if seen.contains(next.as_str()) {
            cut(
                &mut out,
                Error::protocol(&url, "`next` loops to a page already read"),
            );
            return Ok(out);
        }
        url = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners() {
        for o in ["acme", "Acme-Corp", "a", "x1"] {
            assert!(is_owner(o), "{o}");
        }
        for o in ["", "-a", "a-", "a--b", "a/b", "a.b", &"a".repeat(40)] {
            assert!(!is_owner(o), "{o}");
        }
        assert!(is_ghcr_host("GHCR.io"));
        assert!(!is_ghcr_host("ghcr.io.evil.example"));
    }

    #[test]
    fn github_error_bodies_are_read() {
        let body =
            br#"{"message":"Bad credentials","documentation_url":"https://docs.github.com/rest"}"#;
        assert_eq!(github_message(body).as_deref(), Some("Bad credentials"));
        let url: Url = "https://api.github.com/orgs/a/packages".parse().unwrap();
        let e = api_error(&url, 401, body);
        assert!(e.to_string().contains("Bad credentials"), "{e}");
        assert!(matches!(
            api_error(&url, 404, b"{}"),
            Error::NotFound { .. }
        ));
    }
}
