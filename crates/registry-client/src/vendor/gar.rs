//! Google Artifact Registry (`{location}-docker.pkg.dev/{project}/{repository}`) and the
//! older Container Registry hosts (`gcr.io`, `us.gcr.io`, `eu.gcr.io`, `asia.gcr.io`
//! `/{project}`), which Artifact Registry serves today from repositories named after the
//! host (`gcr.io` in `us`, `eu.gcr.io` in `europe`, …).
//!
//! An address is parsed once into a [`GarLocation`]: the location, project and
//! repository the REST API names. The registry side is ordinary distribution token auth
//! (`oauth2accesstoken` / access token, or `_json_key` / the key JSON, as Basic at the
//! registry's own token endpoint), which the client already does.
//!
//! Listing when `_catalog` is refused or cut: the Artifact Registry REST API's
//! `…/repositories/{repository}/packages`, not `…/dockerImages`. A package is one image
//! path, so a page of packages is a page of distinct repository names; `dockerImages` has
//! one entry per image *version* (digest), so a repository with a thousand builds of one
//! image is a thousand entries to read there and one here. Package ids are the image path
//! URL-encoded (`team%2Fapp`). The API takes an OAuth 2.0 access token as
//! `Authorization: Bearer`, sent to the API's origin only; a `_json_key` login is not
//! one (the registry exchanges it itself), so such a registry is listed through `_catalog`
//! only ([`api_token`] says so).

use std::collections::HashSet;
use std::sync::Arc;

use imagelib_events::RepositoryName;
use reqwest::Method;
use secrecy::SecretString;
use url::Url;

use crate::auth::Credentials;
use crate::config::{RegistryConfig, RegistryUrl};
use crate::error::{Cap, Error, Result};
use crate::pagination::Listing;
use crate::transport::{Authz, Transport};

/// The Artifact Registry REST API.
pub const DEFAULT_API: &str = "https://artifactregistry.googleapis.com";
/// The username whose password is an OAuth 2.0 access token.
pub const ACCESS_TOKEN_USERNAME: &str = "oauth2accesstoken";
/// Usernames whose password is a service-account key (JSON, or base64 of it).
pub const JSON_KEY_USERNAMES: [&str; 2] = ["_json_key", "_json_key_base64"];
/// The suffix of Artifact Registry's Docker hosts (`us-central1-docker.pkg.dev`).
pub const DOCKER_HOST_SUFFIX: &str = "-docker.pkg.dev";

/// Container Registry hosts: the host, the Artifact Registry location and repository
/// that serve it.
const GCR_HOSTS: [(&str, &str); 4] = [
    ("gcr.io", "us"),
    ("us.gcr.io", "us"),
    ("eu.gcr.io", "europe"),
    ("asia.gcr.io", "asia"),
];

/// Longest `nextPageToken` followed (Google's are a few hundred bytes).
const MAX_PAGE_TOKEN: usize = 4096;

/// What a Google registry address says, or why it says nothing usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GarAddressError {
    #[error(
        "`{0}` is not an Artifact Registry host (`<location>-docker.pkg.dev`) nor a Container Registry host (`gcr.io`, `us.gcr.io`, `eu.gcr.io`, `asia.gcr.io`)"
    )]
    NotGoogle(String),
    #[error(
        "the address names no project: give `<location>-docker.pkg.dev/<project>/<repository>` or `gcr.io/<project>`"
    )]
    NoProject,
    #[error(
        "the address names no repository: give `<location>-docker.pkg.dev/<project>/<repository>`"
    )]
    NoRepository,
    #[error("`{value}` is not an Artifact Registry repository name: give `{expected}`")]
    NotAResource {
        value: String,
        expected: &'static str,
    },
    #[error("`{value}` is not a {what}: {why}")]
    Invalid {
        what: &'static str,
        value: String,
        why: &'static str,
    },
}

impl From<GarAddressError> for Error {
    fn from(e: GarAddressError) -> Self {
        Error::Config(e.to_string())
    }
}

/// An Artifact Registry repository: what `projects/{project}/locations/{location}/
/// repositories/{repository}` names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GarLocation {
    /// `us-central1`, `europe`, … (`us` for `gcr.io`).
    pub location: String,
    /// The project id; a domain-scoped one as `example.com:project`.
    pub project: String,
    /// The repository id (`gcr.io`, `eu.gcr.io`, … for Container Registry hosts).
    pub repository: String,
}

fn invalid(what: &'static str, value: &str, why: &'static str) -> GarAddressError {
    GarAddressError::Invalid {
        what,
        value: value.chars().take(100).collect(),
        why,
    }
}

fn location_id(s: &str) -> Result<String, GarAddressError> {
    let ok = (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    ok.then(|| s.to_owned())
        .ok_or_else(|| invalid("location", s, "1 to 63 of a-z, 0-9 and inner `-`"))
}

/// `project` or, domain-scoped, `example.com:project`.
fn project_id(domain: Option<&str>, id: &str) -> Result<String, GarAddressError> {
    let id_ok = (6..=30).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.ends_with('-');
    if !id_ok {
        return Err(invalid(
            "project id",
            id,
            "6 to 30 of a-z, 0-9 and `-`, starting with a letter",
        ));
    }
    match domain {
        None => Ok(id.to_owned()),
        Some(d) => {
            let d_ok = (3..=253).contains(&d.len())
                && d.contains('.')
                && d.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                })
                && !d.starts_with(['.', '-'])
                && !d.ends_with(['.', '-'])
                && !d.contains("..");
            if !d_ok {
                return Err(invalid(
                    "project domain",
                    d,
                    "a domain name (domain-scoped projects are `example.com/project`)",
                ));
            }
            Ok(format!("{d}:{id}"))
        }
    }
}

fn repository_id(s: &str) -> Result<String, GarAddressError> {
    let ok = (1..=63).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.ends_with('-');
    ok.then(|| s.to_owned()).ok_or_else(|| {
        invalid(
            "repository id",
            s,
            "1 to 63 of a-z, 0-9 and `-`, starting with a letter",
        )
    })
}

/// The Container Registry host `host` is, if any: its Artifact Registry location.
fn gcr_location(host: &str) -> Option<(&'static str, &'static str)> {
    GCR_HOSTS
        .iter()
        .find(|(h, _)| host.eq_ignore_ascii_case(h))
        .copied()
}

/// Whether `host` (without a port) is an Artifact Registry or Container Registry host.
pub fn is_google_host(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    gcr_location(&host).is_some()
        || host
            .strip_suffix(DOCKER_HOST_SUFFIX)
            .is_some_and(|l| location_id(l).is_ok())
}

impl GarLocation {
    /// A location from its three ids, each checked as [`Self::parse`] does.
    pub fn new(location: &str, project: &str, repository: &str) -> Result<Self, GarAddressError> {
        let project = match project.split_once(':') {
            Some((d, id)) => project_id(Some(d), id)?,
            None => project_id(None, project)?,
        };
        let repository = match gcr_location(repository) {
            Some((h, _)) => h.to_owned(),
            None => repository_id(repository)?,
        };
        Ok(GarLocation {
            location: location_id(location)?,
            project,
            repository,
        })
    }

    /// `host` and the path after it: `us-central1-docker.pkg.dev` +
    /// `my-project/images[/team]` is (`us-central1`, `my-project`, `images`);
    /// `eu.gcr.io` + `my-project[/team]` is (`europe`, `my-project`, `eu.gcr.io`). A
    /// domain-scoped project is written `example.com/project` in an address. The host is
    /// case-insensitive and may end with `.`; the path may have leading and trailing `/`.
    pub fn parse(host: &str, path: &str) -> Result<Self, GarAddressError> {
        let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
        let mut segments = path.split('/').filter(|s| !s.is_empty());
        fn project<'a>(
            segments: &mut impl Iterator<Item = &'a str>,
        ) -> Result<String, GarAddressError> {
            let first = segments.next().ok_or(GarAddressError::NoProject)?;
            if first.contains('.') {
                let id = segments.next().ok_or(GarAddressError::NoProject)?;
                project_id(Some(first), id)
            } else {
                project_id(None, first)
            }
        }
        if let Some((gcr_host, location)) = gcr_location(&host) {
            return Ok(GarLocation {
                location: location.to_owned(),
                project: project(&mut segments)?,
                repository: gcr_host.to_owned(),
            });
        }
        let location = host
            .strip_suffix(DOCKER_HOST_SUFFIX)
            .filter(|l| !l.is_empty())
            .ok_or_else(|| GarAddressError::NotGoogle(host.chars().take(253).collect()))?;
        let location = location_id(location)?;
        let project = project(&mut segments)?;
        let repository = repository_id(segments.next().ok_or(GarAddressError::NoRepository)?)?;
        Ok(GarLocation {
            location,
            project,
            repository,
        })
    }

    /// Google's resource name of a repository,
    /// `projects/{project}/locations/{location}/repositories/{repository}` (as
    /// [`Self::resource`] writes it and `gcloud artifacts repositories describe` shows it;
    /// a domain-scoped project as `example.com:project`). Surrounding spaces are ignored;
    /// anything else, a `https://…` link or a trailing `/packages/…` included, is refused
    /// with the part that is wrong.
    pub fn from_resource(name: &str) -> Result<Self, GarAddressError> {
        let name = name.trim();
        let expected = "projects/{project}/locations/{location}/repositories/{repository}";
        let parts: Vec<&str> = name.splitn(7, '/').collect();
        match parts.as_slice() {
            [
                "projects",
                project,
                "locations",
                location,
                "repositories",
                repository,
            ] => Self::new(location, project, repository),
            _ => Err(GarAddressError::NotAResource {
                value: name.chars().take(200).collect(),
                expected,
            }),
        }
    }

    /// The location a registry's address names.
    pub fn from_registry_url(url: &RegistryUrl) -> Result<Self, GarAddressError> {
        Self::parse(url.host(), url.namespace().unwrap_or_default())
    }

    /// The repository a `gcr` registration lists through the API: the one it names
    /// (`artifact_registry`, a resource name, for an address that is not Google's: a
    /// mirror, a private endpoint), else the one its address names.
    pub fn for_registry(
        artifact_registry: Option<&str>,
        url: &RegistryUrl,
    ) -> Result<Self, GarAddressError> {
        match artifact_registry {
            Some(resource) => Self::from_resource(resource),
            None => Self::from_registry_url(url),
        }
    }

    /// Whether this is one of the repositories that serve a Container Registry host.
    pub fn is_container_registry(&self) -> bool {
        gcr_location(&self.repository).is_some()
    }

    /// The project as it is written in image paths: `example.com/project` for a
    /// domain-scoped one.
    fn project_path(&self) -> String {
        self.project.replace(':', "/")
    }

    /// The repository prefix of this location's images on the registry:
    /// `project/repository` on `*-docker.pkg.dev`, `project` on `gcr.io`.
    pub fn registry_prefix(&self) -> String {
        if self.is_container_registry() {
            self.project_path()
        } else {
            format!("{}/{}", self.project_path(), self.repository)
        }
    }

    /// `projects/{project}/locations/{location}/repositories/{repository}`.
    pub fn resource(&self) -> String {
        format!(
            "projects/{}/locations/{}/repositories/{}",
            self.project, self.location, self.repository
        )
    }
}

/// The access token a login gives the REST API: the password of an
/// `oauth2accesstoken` Basic login (what [`crate::GcpServiceAccountProvider`] hands out),
/// or a Bearer token. A `_json_key` login, another username or no login cannot call the
/// API: the error says to list through `_catalog` (or to use the service-account
/// credential kind, which the client exchanges for access tokens).
pub fn api_token(login: Option<&Credentials>) -> std::result::Result<&SecretString, String> {
    match login {
        Some(Credentials::Basic { username, password }) if username == ACCESS_TOKEN_USERNAME => {
            Ok(password)
        }
        Some(Credentials::Bearer(token)) => Ok(token),
        Some(Credentials::Basic { username, .. })
            if JSON_KEY_USERNAMES.contains(&username.as_str()) =>
        {
            Err(format!(
                "a `{username}` login is exchanged by the registry itself and is not an access token for the Artifact Registry API; such a registry is listed through `_catalog` only (or store the key as a service-account credential, which is exchanged for access tokens)"
            ))
        }
        Some(Credentials::Basic { .. }) => Err(format!(
            "the Artifact Registry API takes an OAuth 2.0 access token (username `{ACCESS_TOKEN_USERNAME}`); this login is listed through `_catalog` only"
        )),
        Some(Credentials::Anonymous) | None => Err(
            "the Artifact Registry API needs an access token; an anonymous registry is listed through `_catalog` only"
                .into(),
        ),
    }
}

/// One page of `GET …/packages`.
#[derive(serde::Deserialize)]
struct PackagesPage {
    #[serde(default)]
    packages: Vec<Package>,
    #[serde(default, rename = "nextPageToken")]
    next_page_token: Option<String>,
}

#[derive(serde::Deserialize)]
struct Package {
    name: String,
}

/// Google's error body: `{"error":{"code":403,"message":"…","status":"PERMISSION_DENIED"}}`
/// → `PERMISSION_DENIED: …` (at most 200 characters of the message).
fn google_message(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Body {
        error: Inner,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        #[serde(default)]
        message: Option<String>,
        #[serde(default)]
        status: Option<String>,
    }
    let e = serde_json::from_slice::<Body>(body).ok()?.error;
    let message: Option<String> = e.message.map(|m| m.chars().take(200).collect());
    let status: Option<String> = e.status.map(|s| s.chars().take(40).collect());
    match (status, message) {
        (Some(s), Some(m)) => Some(format!("{s}: {m}")),
        (s, m) => s.or(m),
    }
}

fn api_error(url: &Url, status: u16, body: &[u8]) -> Error {
    let said = google_message(body).unwrap_or_else(|| format!("answered {status}"));
    let url = url.to_string();
    match status {
        401 => Error::Unauthorized {
            url,
            reason: format!("the Artifact Registry API refused the access token ({said})"),
        },
        403 => Error::Forbidden {
            url,
            reason: format!(
                "the Artifact Registry API refused the listing ({said}); the credential needs `artifactregistry.packages.list` on the repository (roles/artifactregistry.reader)"
            ),
        },
        404 => Error::NotFound { url },
        429 => Error::RateLimited {
            url,
            retry_after: None,
        },
        s if s >= 500 => Error::Server { url, status: s },
        _ => Error::Protocol { url, reason: said },
    }
}

/// `%XX` decoded; `None` for a broken escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            if !hex.bytes().all(|h| h.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The image path a package's `name` holds, if it is a package of `resource`.
fn image_of(resource: &str, name: &str) -> Option<String> {
    let id = name.strip_prefix(resource)?.strip_prefix("/packages/")?;
    if id.is_empty() || id.contains('/') {
        return None;
    }
    percent_decode(id)
}

/// The repositories of `location` through the Artifact Registry REST API at `api`
/// (`GET {api}/v1/projects/{project}/locations/{location}/repositories/{repository}/packages?pageSize=…`,
/// then `&pageToken=<nextPageToken>`): each package is the repository
/// `{registry prefix}/{image}` ([`GarLocation::registry_prefix`]), kept when it lies
/// under the registry URL's namespace, as [`crate::RegistryClient::catalog`] does. The
/// access token of `login` ([`api_token`]) is sent as `Authorization: Bearer` to the
/// API's origin only. Pages, bytes and items are bounded by `config`'s listing caps; a
/// page token seen twice, or longer than 4 KiB, ends the listing; requests pass the
/// network guard, timeouts and retries of registry requests. A failure on the first page
/// is the error; after it, the listing ends incomplete.
pub async fn list_repositories(
    config: &RegistryConfig,
    api: &Url,
    location: &GarLocation,
    login: Option<&Credentials>,
) -> Result<Listing<RepositoryName>> {
    let base = if api.path().ends_with('/') {
        api.clone()
    } else {
        let mut b = api.clone();
        b.set_path(&format!("{}/", api.path()));
        b
    };
    let resource = location.resource();
    let first = base
        .join(&format!("v1/{resource}/packages"))
        .map_err(|e| Error::Config(format!("the Artifact Registry API `{api}`: {e}")))?;
    let token = api_token(login).map_err(|reason| Error::Unauthorized {
        url: first.to_string(),
        reason,
    })?;
    let host = api
        .host_str()
        .ok_or_else(|| Error::Config(format!("the Artifact Registry API `{api}` has no host")))?;
    let mut api_config = config.clone();
    api_config.url = RegistryUrl::verbatim(host, api.port(), api.scheme() == "http");
    api_config.auth_hosts = Vec::new();
    let transport = Transport::new(api_config, Arc::new(Credentials::Anonymous))?;
    let authz = {
        use secrecy::ExposeSecret as _;
        Authz::bearer_for(api.origin(), token.expose_secret())?
    };
    let page_size = config.page_size.clamp(1, 1000);
    let page_url = |token: Option<&str>| {
        let mut url = first.clone();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("pageSize", &page_size.to_string());
            if let Some(t) = token {
                q.append_pair("pageToken", t);
            }
        }
        url
    };
    let prefix = location.registry_prefix();
    let namespace = config.url.namespace();
    let mut listing = Listing {
        items: Vec::new(),
        complete: true,
        pages: 0,
        skipped: Vec::new(),
        error: None,
    };
    let mut seen_items = HashSet::new();
    let mut seen_tokens = HashSet::new();
    let mut bytes = 0u64;
    let mut url = page_url(None);
    let cut = |listing: &mut Listing<RepositoryName>, e: Error| {
        tracing::warn!(error = %e, pages = listing.pages, "Artifact Registry listing cut short");
        listing.complete = false;
        listing.error = Some(e);
    };
    loop {
        if listing.pages >= config.max_pages {
            let e = Error::Capped {
                url: url.to_string(),
                cap: Cap::ListingPages,
                limit: u64::from(config.max_pages),
            };
            cut(&mut listing, e);
            return Ok(listing);
        }
        let reply = match transport
            .send(
                Method::GET,
                url.clone(),
                Some(&authz),
                Some("application/json"),
                config.max_page_bytes,
            )
            .await
        {
            Ok(r) if r.status.is_success() => r,
            Ok(r) if listing.pages == 0 => {
                return Err(api_error(&url, r.status.as_u16(), &r.body));
            }
            Err(e) if listing.pages == 0 => return Err(e),
            Ok(r) => {
                cut(&mut listing, api_error(&url, r.status.as_u16(), &r.body));
                return Ok(listing);
            }
            Err(e) => {
                cut(&mut listing, e);
                return Ok(listing);
            }
        };
        listing.pages += 1;
        bytes = bytes.saturating_add(reply.body.len() as u64);
        if bytes > config.max_listing_bytes {
            let e = Error::Capped {
                url: url.to_string(),
                cap: Cap::ListingBytes,
                limit: config.max_listing_bytes,
            };
            cut(&mut listing, e);
            return Ok(listing);
        }
        let page: PackagesPage = match serde_json::from_slice(&reply.body) {
            Ok(p) => p,
            Err(e) => {
                let e =
                    Error::protocol(&url, format!("not an Artifact Registry packages page: {e}"));
                if listing.pages == 1 {
                    return Err(e);
                }
                cut(&mut listing, e);
                return Ok(listing);
            }
        };
        for package in page.packages {
            let name = image_of(&resource, &package.name)
                .and_then(|image| format!("{prefix}/{image}").parse::<RepositoryName>().ok());
            match name {
                Some(name) => {
                    let under = namespace.is_none_or(|ns| {
                        name.as_str() == ns
                            || name
                                .as_str()
                                .strip_prefix(ns)
                                .is_some_and(|rest| rest.starts_with('/'))
                    });
                    if under && seen_items.insert(name.clone()) {
                        listing.items.push(name);
                    }
                }
                None if listing.skipped.len() < 100 => listing
                    .skipped
                    .push(package.name.chars().take(256).collect()),
                None => {}
            }
            if listing.items.len() as u64 > config.max_listing_items {
                listing.items.truncate(config.max_listing_items as usize);
                let e = Error::Capped {
                    url: url.to_string(),
                    cap: Cap::ListingItems,
                    limit: config.max_listing_items,
                };
                cut(&mut listing, e);
                return Ok(listing);
            }
        }
        let Some(token) = page.next_page_token.filter(|t| !t.is_empty()) else {
            return Ok(listing);
        };
        if token.len() > MAX_PAGE_TOKEN || token.chars().any(|c| c.is_control()) {
            cut(
                &mut listing,
                Error::protocol(&url, "the nextPageToken is not a usable page token"),
            );
            return Ok(listing);
        }
        if !seen_tokens.insert(token.clone()) {
            cut(
                &mut listing,
                Error::protocol(&url, "the nextPageToken loops to a page already read"),
            );
            return Ok(listing);
        }
        url = page_url(Some(&token));
    }
}

/// The registry's repositories: `_catalog` when it answers in full; when it is refused
/// (`forbidden`, `unauthorized`, `not_found`) or cut short, the Artifact Registry API's
/// listing of `location` ([`list_repositories`]) if `login` can call it ([`api_token`]).
/// A refused `_catalog` and a failed API listing is the API's error (it names what the
/// credential lacks); a `_catalog` cut short stays the answer unless the API lists in
/// full. Without an access token, `_catalog`'s answer is returned as it is.
pub async fn catalog_or_api(
    client: &crate::RegistryClient,
    api: &Url,
    location: &GarLocation,
    login: Option<&Credentials>,
) -> Result<Listing<RepositoryName>> {
    use crate::ErrorKind;
    let catalog = client.catalog().await;
    match &catalog {
        Ok(listing) if listing.complete => return catalog,
        Ok(_) => {}
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::Forbidden | ErrorKind::Unauthorized | ErrorKind::NotFound
            ) => {}
        Err(_) => return catalog,
    }
    if let Err(why) = api_token(login) {
        tracing::info!(%why, "_catalog only");
        return catalog;
    }
    let listed = list_repositories(client.config(), api, location, login).await;
    match (catalog, listed) {
        (_, Ok(listing)) if listing.complete => Ok(listing),
        (Ok(cut), _) => Ok(cut),
        (Err(_), listed) => listed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_registry_addresses() {
        let l = GarLocation::parse("us-central1-docker.pkg.dev", "/my-project/images/").unwrap();
        assert_eq!(
            l,
            GarLocation {
                location: "us-central1".into(),
                project: "my-project".into(),
                repository: "images".into(),
            }
        );
        assert_eq!(l.registry_prefix(), "my-project/images");
        assert_eq!(
            l.resource(),
            "projects/my-project/locations/us-central1/repositories/images"
        );
        assert!(!l.is_container_registry());
        let l = GarLocation::parse("Europe-Docker.pkg.dev.", "my-project/images/team/sub").unwrap();
        assert_eq!(l.location, "europe");
        assert_eq!(l.repository, "images");
        let l = GarLocation::parse("us-docker.pkg.dev", "example.com/my-project/images").unwrap();
        assert_eq!(l.project, "example.com:my-project");
        assert_eq!(l.registry_prefix(), "example.com/my-project/images");
    }

    #[test]
    fn container_registry_addresses() {
        for (host, location) in [
            ("gcr.io", "us"),
            ("us.gcr.io", "us"),
            ("EU.gcr.io", "europe"),
            ("asia.gcr.io", "asia"),
        ] {
            let l = GarLocation::parse(host, "my-project/team").unwrap();
            assert_eq!(l.location, location, "{host}");
            assert_eq!(l.repository, host.to_ascii_lowercase(), "{host}");
            assert_eq!(l.registry_prefix(), "my-project", "{host}");
            assert!(l.is_container_registry());
            assert!(is_google_host(host));
        }
        assert!(!is_google_host("gcr.io.evil.example"));
        assert!(!is_google_host("evil-docker.pkg.dev.example"));
        assert!(is_google_host("us-east1-docker.pkg.dev"));
    }

    #[test]
    fn bad_addresses_say_why() {
        let e = |h: &str, p: &str| GarLocation::parse(h, p).unwrap_err();
        assert!(matches!(
            e("registry.example", "a/b"),
            GarAddressError::NotGoogle(_)
        ));
        assert!(matches!(
            e("-docker.pkg.dev", "a/b"),
            GarAddressError::NotGoogle(_)
        ));
        assert_eq!(e("gcr.io", "/"), GarAddressError::NoProject);
        assert_eq!(
            e("us-docker.pkg.dev", "my-project"),
            GarAddressError::NoRepository
        );
        assert!(
            e("us-docker.pkg.dev", "MyProject/x")
                .to_string()
                .contains("project id")
        );
        assert!(
            e("us-docker.pkg.dev", "short/x")
                .to_string()
                .contains("project id")
        );
        assert!(
            e("us-docker.pkg.dev", "my-project/Images")
                .to_string()
                .contains("repository id")
        );
        assert!(
            e("u_s-docker.pkg.dev", "my-project/x")
                .to_string()
                .contains("location")
        );
        assert!(
            e("us-docker.pkg.dev", "example.com/")
                .to_string()
                .contains("project")
        );
        assert!(GarLocation::new("us", "my-project", "a/b").is_err());
        assert!(GarLocation::new("us", "my-project", "../x").is_err());
        assert!(GarLocation::new("us", "my-project", "gcr.io").is_ok());
    }

    #[test]
    fn resource_names() {
        let l = GarLocation::from_resource(
            " projects/my-project/locations/us-central1/repositories/images ",
        )
        .unwrap();
        assert_eq!(
            l,
            GarLocation::new("us-central1", "my-project", "images").unwrap()
        );
        assert_eq!(GarLocation::from_resource(&l.resource()).unwrap(), l);
        let l = GarLocation::from_resource(
            "projects/example.com:my-project/locations/europe/repositories/team",
        )
        .unwrap();
        assert_eq!(l.project, "example.com:my-project");
        assert_eq!(l.registry_prefix(), "example.com/my-project/team");
        let l = GarLocation::from_resource("projects/my-project/locations/us/repositories/gcr.io")
            .unwrap();
        assert!(l.is_container_registry());
        // A registration's named repository wins over its address; without one, the address.
        let mirror = RegistryUrl::parse("mirror.corp.example", false).unwrap();
        let named = "projects/my-project/locations/europe/repositories/team";
        assert_eq!(
            GarLocation::for_registry(Some(named), &mirror)
                .unwrap()
                .resource(),
            named
        );
        assert!(GarLocation::for_registry(None, &mirror).is_err());
        let google = RegistryUrl::parse("us-docker.pkg.dev/my-project/images", false).unwrap();
        assert_eq!(
            GarLocation::for_registry(None, &google).unwrap().repository,
            "images"
        );
        assert_eq!(
            GarLocation::for_registry(Some(named), &google)
                .unwrap()
                .repository,
            "team"
        );
        let e = |s: &str| GarLocation::from_resource(s).unwrap_err();
        for shape in [
            "",
            "projects/my-project",
            "projects/my-project/locations/us",
            "projects/my-project/locations/us/repositories",
            "projects/my-project/locations/us/repositories/images/",
            "projects/my-project/locations/us/repositories/images/packages/app",
            "https://artifactregistry.googleapis.com/v1/projects/my-project/locations/us/repositories/images",
            "/projects/my-project/locations/us/repositories/images",
            "project/my-project/locations/us/repositories/images",
            "projects/my-project/repositories/images/locations/us",
            "us-docker.pkg.dev/my-project/images",
        ] {
            let why = e(shape);
            assert!(
                matches!(why, GarAddressError::NotAResource { .. }),
                "{shape}: {why}"
            );
            assert!(why.to_string().contains("projects/{project}"), "{why}");
        }
        assert!(
            e("projects/MyProject/locations/us/repositories/images")
                .to_string()
                .contains("project id")
        );
        assert!(
            e("projects/my-project/locations/US/repositories/images")
                .to_string()
                .contains("location")
        );
        assert!(
            e("projects/my-project/locations/us/repositories/..")
                .to_string()
                .contains("repository id")
        );
        assert!(
            e("projects/my-project/locations/us/repositories/")
                .to_string()
                .contains("repository id")
        );
        // A long value is cut in the message.
        let long = "x".repeat(10_000);
        assert!(e(&long).to_string().len() < 400);
    }

    #[test]
    fn garbage_addresses_never_panic() {
        let pieces = [
            "",
            "/",
            "//",
            ".",
            "..",
            "%",
            "%2F",
            "é",
            "\u{0}",
            ":",
            "a:b",
            "example.com",
            "my-project",
            "images",
            "-docker.pkg.dev",
            "us-docker.pkg.dev",
            "gcr.io",
            "?",
            "#",
        ];
        for host in pieces {
            for a in pieces {
                for b in pieces {
                    let path = format!("{a}/{b}/{a}");
                    if let Ok(l) = GarLocation::parse(host, &path) {
                        // What parses names a resource without path tricks.
                        assert!(!l.resource().contains(".."), "{l:?}");
                        assert!(!l.resource().contains('%'), "{l:?}");
                        assert!(
                            l.registry_prefix().parse::<RepositoryName>().is_ok(),
                            "{l:?}"
                        );
                    }
                    let _ = GarLocation::new(host, a, b);
                    if let Ok(l) = GarLocation::from_resource(&format!(
                        "projects/{a}/locations/{host}/repositories/{b}"
                    )) {
                        assert!(!l.resource().contains(".."), "{l:?}");
                        assert!(!l.resource().contains('%'), "{l:?}");
                    }
                    let _ = percent_decode(&path);
                }
            }
        }
    }

    #[test]
    fn only_an_access_token_reaches_the_api() {
        let token = Credentials::basic(ACCESS_TOKEN_USERNAME, "ya29.token");
        assert!(api_token(Some(&token)).is_ok());
        assert!(api_token(Some(&Credentials::bearer("ya29.t"))).is_ok());
        let key = Credentials::basic("_json_key", r#"{"private_key":"canary"}"#);
        let why = api_token(Some(&key)).unwrap_err();
        assert!(why.contains("_catalog"), "{why}");
        assert!(!why.contains("canary"), "{why}");
        assert!(api_token(Some(&Credentials::basic("user", "pw"))).is_err());
        assert!(api_token(None).is_err());
    }

    #[test]
    fn package_names_and_google_errors() {
        let r = "projects/p/locations/us/repositories/images";
        assert_eq!(
            image_of(r, &format!("{r}/packages/team%2Fapp")).as_deref(),
            Some("team/app")
        );
        assert_eq!(
            image_of(r, &format!("{r}/packages/app")).as_deref(),
            Some("app")
        );
        assert_eq!(
            image_of(
                r,
                "projects/q/locations/us/repositories/images/packages/app"
            ),
            None
        );
        assert_eq!(image_of(r, &format!("{r}/packages/%zz")), None);
        assert_eq!(image_of(r, &format!("{r}/packages/%")), None);
        assert_eq!(image_of(r, &format!("{r}/packages/%+1")), None);
        assert_eq!(image_of(r, &format!("{r}/packages/%é")), None);
        assert_eq!(
            image_of(r, &format!("{r}/packages/%C3%A9")).as_deref(),
            Some("é")
        );
        assert_eq!(image_of(r, &format!("{r}/packages/%FF")), None);
        assert_eq!(image_of(r, &format!("{r}/packages/")), None);
        assert_eq!(image_of(r, &format!("{r}/packages/a/versions/x")), None);
        let body = br#"{"error":{"code":403,"message":"Permission 'artifactregistry.packages.list' denied","status":"PERMISSION_DENIED"}}"#;
        assert_eq!(
            google_message(body).as_deref(),
            Some("PERMISSION_DENIED: Permission 'artifactregistry.packages.list' denied")
        );
        let url: Url = "https://artifactregistry.googleapis.com/v1/x"
            .parse()
            .unwrap();
        assert_eq!(
            api_error(&url, 403, body).kind(),
            crate::ErrorKind::Forbidden
        );
        assert_eq!(
            api_error(&url, 401, b"garbage").kind(),
            crate::ErrorKind::Unauthorized
        );
        assert_eq!(
            api_error(&url, 404, b"{}").kind(),
            crate::ErrorKind::NotFound
        );
        assert_eq!(google_message(b"\xff\x00"), None);
    }
}
