//! GitHub Container Registry (`ghcr.io`): no `_catalog`; an owner's (user or
//! organisation) container packages are listed through GitHub's REST API.
//!
//! The registry side is ordinary distribution token auth: `username:token` as Basic at
//! `https://ghcr.io/token` (the realm `ghcr.io` announces, on its own host), which the
//! client already does. The token is a personal access token (`ghp_…`, `github_pat_…`,
//! with the user's login as username) or a GitHub App installation token (`ghs_…`, with
//! the username [`INSTALLATION_TOKEN_USERNAME`]). The REST API
//! (`GET {api}/orgs/{owner}/packages?package_type=container`; when the owner is not an
//! organisation, `/user/packages` if the owner is the token's own user — the only place
//! GitHub lists a user's private packages — else `/users/{owner}/packages`) is asked with
//! the token as `Authorization: Bearer`, sent to the API's origin only.
//!
//! GitHub's rate limit (`x-ratelimit-limit`, `-remaining`, `-reset`) is read on every API
//! answer: paging stops, the listing incomplete and `rate_limited`, when nothing remains,
//! or on a `403`/`429` that says so (`x-ratelimit-remaining: 0` or `retry-after`), instead
//! of asking again.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use imagelib_events::RepositoryName;
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use url::Url;

use crate::auth::Credentials;
use crate::config::{RegistryConfig, RegistryUrl};
use crate::error::{Cap, Error, Result};
use crate::pagination::{Listing, next_link};
use crate::transport::{Authz, Reply, Transport, parse_retry_after};

/// The registry host.
pub const REGISTRY_HOST: &str = "ghcr.io";
/// GitHub's REST API.
pub const DEFAULT_API: &str = "https://api.github.com";
/// The REST API version asked for (`X-GitHub-Api-Version`).
pub const API_VERSION: &str = "2022-11-28";
const ACCEPT: &str = "application/vnd.github+json";
/// The registry username of a GitHub App installation token (`ghs_…`).
pub const INSTALLATION_TOKEN_USERNAME: &str = "x-access-token";
/// The longest wait a rate-limit answer is taken to ask for: GitHub's windows are an
/// hour, so a `retry-after` or `x-ratelimit-reset` beyond that is a broken or hostile
/// value.
pub const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(3600);

/// GitHub's API budget, as its last answer announced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRateLimit {
    /// `x-ratelimit-limit`: requests per hour.
    pub limit: u64,
    /// `x-ratelimit-remaining`.
    pub remaining: u64,
    /// `x-ratelimit-reset` (a Unix time), when the budget is full again.
    pub reset: Option<SystemTime>,
    /// `x-ratelimit-resource` (`core`, …).
    pub resource: Option<String>,
}

impl ApiRateLimit {
    /// The rate-limit headers of an answer, if it has the limit and the remaining count
    /// (each at most 20 digits; anything else is ignored).
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let number = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| (1..=20).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
        };
        Some(ApiRateLimit {
            limit: number("x-ratelimit-limit")?,
            remaining: number("x-ratelimit-remaining")?,
            reset: number("x-ratelimit-reset")
                .and_then(|s| UNIX_EPOCH.checked_add(Duration::from_secs(s))),
            resource: headers
                .get("x-ratelimit-resource")
                .and_then(|v| v.to_str().ok())
                .map(|v| v.chars().take(32).collect()),
        })
    }

    /// How long until the reset, at most [`MAX_RATE_LIMIT_WAIT`].
    pub fn wait(&self, now: SystemTime) -> Option<Duration> {
        self.reset.map(|r| {
            r.duration_since(now)
                .unwrap_or_default()
                .min(MAX_RATE_LIMIT_WAIT)
        })
    }
}

/// What kind of GitHub token `token` is, by its prefix (for messages; never the token).
pub fn token_kind(token: &str) -> &'static str {
    if token.starts_with("ghp_") {
        "personal access token (classic)"
    } else if token.starts_with("github_pat_") {
        "fine-grained personal access token"
    } else if token.starts_with("ghs_") {
        "GitHub App installation token"
    } else if token.starts_with("gho_") || token.starts_with("ghu_") {
        "OAuth token"
    } else {
        "token"
    }
}

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
    /// GitHub's API budget after the last answer, when it announced one.
    pub rate_limit: Option<ApiRateLimit>,
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

fn api_error(url: &Url, status: u16, body: &[u8], kind: &str) -> Error {
    let said = github_message(body).unwrap_or_else(|| format!("answered {status}"));
    match status {
        401 | 403 => Error::Unauthorized {
            url: url.to_string(),
            reason: format!(
                "the GitHub API refused the {kind} ({said}); a personal access token (classic) with `read:packages`, or an installation token of an app with the packages read permission, is needed"
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

/// The error a refused answer stands for: `rate_limited` when GitHub says its rate limit
/// is spent (`403`/`429` with `x-ratelimit-remaining: 0` or a `retry-after`, bounded by
/// [`MAX_RATE_LIMIT_WAIT`]), else [`api_error`].
fn refusal(url: &Url, reply: &Reply, kind: &str) -> Error {
    let status = reply.status.as_u16();
    if matches!(status, 403 | 429) {
        let now = SystemTime::now();
        let limit = ApiRateLimit::from_headers(&reply.headers);
        let retry_after = reply
            .header("retry-after")
            .and_then(|v| parse_retry_after(v, now))
            .map(|d| d.min(MAX_RATE_LIMIT_WAIT));
        let spent = limit.as_ref().is_some_and(|l| l.remaining == 0);
        if spent || retry_after.is_some() || status == 429 {
            return Error::RateLimited {
                url: url.to_string(),
                retry_after: retry_after.or_else(|| limit.and_then(|l| l.wait(now))),
            };
        }
    }
    api_error(url, status, &reply.body, kind)
}

/// The bearer token a login gives the API: the password of Basic credentials (a PAT or
/// an installation token), or a Bearer token.
fn api_token(login: Option<&Credentials>) -> Option<&secrecy::SecretString> {
    match login {
        Some(Credentials::Basic { password, .. }) => Some(password),
        Some(Credentials::Bearer(token)) => Some(token),
        _ => None,
    }
}

/// The container packages of `owner` through GitHub's REST API at `api`: the
/// organisation's (`/orgs/{owner}/packages`), or, when GitHub answers `404` there, the
/// user's — `/user/packages` when `owner` is the token's own user (`GET /user` →
/// `login`; private packages are listed only there), else `/users/{owner}/packages`.
/// With `login` Basic credentials (a personal access token with `read:packages`, or a
/// GitHub App installation token) or a Bearer token, the token is sent as
/// `Authorization: Bearer` to the API's origin only. Pages follow `Link: <…>; rel="next"`
/// on the API's origin only and never to a page already read; pages, bytes and items are
/// bounded by `config`'s listing caps, and requests pass the same network guard, timeouts
/// and retries as registry requests. GitHub's rate limit stops the paging (see the module
/// docs). A failure after the first page ends the listing incomplete.
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
    let token = api_token(login);
    let kind = {
        use secrecy::ExposeSecret as _;
        token.map_or("token", |t| token_kind(t.expose_secret()))
    };
    let authz = match token {
        Some(t) => {
            use secrecy::ExposeSecret as _;
            Some(Authz::bearer_for(api.origin(), t.expose_secret())?)
        }
        None => None,
    };
    let base = if api.path().ends_with('/') {
        api.clone()
    } else {
        let mut b = api.clone();
        b.set_path(&format!("{}/", api.path()));
        b
    };
    let per_page = config.page_size.clamp(1, 100);
    let join = |path: &str| {
        base.join(path)
            .map_err(|e| Error::Config(format!("the GitHub API `{api}`: {e}")))
    };
    let query = format!("packages?package_type=container&per_page={per_page}");
    let call = Call {
        config,
        transport: &transport,
        authz: authz.as_ref(),
        kind,
    };
    match call
        .list(join(&format!("orgs/{owner}/{query}"))?, owner)
        .await
    {
        Err(Error::NotFound { .. }) => {}
        other => return other,
    }
    let own = match &authz {
        Some(_) => call.own_login(join("user")?).await,
        None => None,
    };
    if own.is_some_and(|l| l.eq_ignore_ascii_case(owner)) {
        call.list(join(&format!("user/{query}"))?, owner).await
    } else {
        call.list(join(&format!("users/{owner}/{query}"))?, owner)
            .await
    }
}

/// One listing's requests: the transport, the bearer and what the token is.
struct Call<'a> {
    config: &'a RegistryConfig,
    transport: &'a Transport,
    authz: Option<&'a Authz>,
    kind: &'static str,
}

impl Call<'_> {
    async fn get(&self, url: &Url, max_body: u64) -> Result<Reply> {
        self.transport
            .send(Method::GET, url.clone(), self.authz, Some(ACCEPT), max_body)
            .await
    }

    /// `GET /user` → `login`: the token's own user, or `None` when the token has none (an
    /// installation token is answered `403`) or the answer is not one.
    async fn own_login(&self, url: Url) -> Option<String> {
        #[derive(serde::Deserialize)]
        struct User {
            login: String,
        }
        match self.get(&url, 256 * 1024).await {
            Ok(r) if r.status.is_success() => serde_json::from_slice::<User>(&r.body)
                .ok()
                .map(|u| u.login)
                .filter(|l| is_owner(l)),
            Ok(r) => {
                tracing::debug!(
                    status = r.status.as_u16(),
                    "GET /user refused; listing /users/{{owner}}"
                );
                None
            }
            Err(e) => {
                tracing::debug!(error = %e, "GET /user failed; listing /users/{{owner}}");
                None
            }
        }
    }

    async fn list(&self, mut url: Url, owner: &str) -> Result<Packages> {
        let config = self.config;
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
            rate_limit: None,
        };
        let mut seen = HashSet::new();
        let mut bytes = 0u64;
        let cut = |out: &mut Packages, e: Error| {
            tracing::warn!(error = %e, pages = out.listing.pages, "GitHub packages listing cut short");
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
            let reply = match self.get(&url, config.max_page_bytes).await {
                Ok(r) => {
                    if let Some(limit) = ApiRateLimit::from_headers(&r.headers) {
                        out.rate_limit = Some(limit);
                    }
                    r
                }
                Err(e) if out.listing.pages == 0 => return Err(e),
                Err(e) => {
                    cut(&mut out, e);
                    return Ok(out);
                }
            };
            if !reply.status.is_success() {
                let e = refusal(&url, &reply, self.kind);
                if out.listing.pages == 0 {
                    return Err(e);
                }
                cut(&mut out, e);
                return Ok(out);
            }
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
            // Nothing left of the budget: the next page would be refused; stop here.
            if let Some(limit) = out.rate_limit.as_ref().filter(|l| l.remaining == 0) {
                let e = Error::RateLimited {
                    url: next.to_string(),
                    retry_after: limit.wait(SystemTime::now()),
                };
                cut(&mut out, e);
                return Ok(out);
            }
            url = next;
        }
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
        let e = api_error(&url, 401, body, "token");
        assert!(e.to_string().contains("Bad credentials"), "{e}");
        assert!(matches!(
            api_error(&url, 404, b"{}", "token"),
            Error::NotFound { .. }
        ));
    }

    #[test]
    fn rate_limit_headers_are_read_bounded() {
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-limit", HeaderValue::from_static("5000"));
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        h.insert("x-ratelimit-reset", HeaderValue::from_static("1800000000"));
        h.insert("x-ratelimit-resource", HeaderValue::from_static("core"));
        let l = ApiRateLimit::from_headers(&h).unwrap();
        assert_eq!((l.limit, l.remaining), (5000, 0));
        assert_eq!(l.resource.as_deref(), Some("core"));
        let before = UNIX_EPOCH + Duration::from_secs(1_800_000_000 - 60);
        assert_eq!(l.wait(before), Some(Duration::from_secs(60)));
        assert_eq!(l.wait(UNIX_EPOCH), Some(MAX_RATE_LIMIT_WAIT));
        assert_eq!(
            l.wait(UNIX_EPOCH + Duration::from_secs(1_900_000_000)),
            Some(Duration::ZERO)
        );
        for bad in ["-1", "", "5e3", "99999999999999999999999", " 12 34"] {
            h.insert("x-ratelimit-remaining", HeaderValue::from_str(bad).unwrap());
            assert_eq!(ApiRateLimit::from_headers(&h), None, "{bad:?}");
        }
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("7"));
        h.insert(
            "x-ratelimit-reset",
            HeaderValue::from_static("18446744073709551615"),
        );
        let l = ApiRateLimit::from_headers(&h).unwrap();
        assert_eq!(l.remaining, 7);
        assert_eq!(
            l.wait(SystemTime::now()),
            l.reset.map(|_| MAX_RATE_LIMIT_WAIT)
        );
    }

    #[test]
    fn token_kinds() {
        assert_eq!(token_kind("ghp_x"), "personal access token (classic)");
        assert_eq!(
            token_kind("github_pat_x"),
            "fine-grained personal access token"
        );
        assert_eq!(token_kind("ghs_x"), "GitHub App installation token");
        assert_eq!(token_kind("whatever"), "token");
    }
}
