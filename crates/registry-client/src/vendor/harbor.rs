//! Harbor: repositories listed through Harbor's own API when `_catalog` is refused, and
//! Harbor's scan summaries read as a vulnerability report source.
//!
//! Harbor answers `_catalog` only to accounts with system-level permission, which robot
//! accounts (`robot$project+name`) rarely have. Its API lives on the registry's own host
//! (`/api/v2.0/`), so the robot's Basic credentials go to the registry's origin only:
//! - `GET /api/v2.0/projects?page=N&page_size=…`: the projects the robot sees;
//! - `GET /api/v2.0/projects/{project}/repositories?page=N&page_size=…`: a project's
//!   repositories, each `name` already `project/repo…`;
//! - `GET /api/v2.0/projects/{p}/repositories/{r}/artifacts?with_scan_overview=true`: each
//!   artifact's digest and `scan_overview` (keyed by report MIME type). A repository name
//!   with `/` is URL-encoded twice there (`a/b` → `a%252Fb`).
//!
//! Pages follow `Link: <…>; rel="next"` on the registry's origin only and never to a page
//! already read (or, without a link, the next page while `X-Total-Count` says more); pages,
//! bytes and items of one listing share [`crate::RegistryConfig`]'s listing caps. Errors are
//! Harbor's `{"errors":[{"code","message"}]}`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use imagelib_events::model::SeverityCounts;
use imagelib_events::{Digest, RepositoryName};
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::de::DeserializeOwned;
use url::Url;

use crate::auth::Credentials;
use crate::config::{RegistryConfig, RegistryUrl};
use crate::error::{Cap, Error, Result};
use crate::pagination::{Listing, next_link};
use crate::transport::{Authz, Reply, Transport};

/// Where Harbor's API lives on the registry's host.
pub const API_PREFIX: &str = "api/v2.0/";
/// The report MIME type Harbor's scanners (Trivy) write.
pub const REPORT_MIME: &str = "application/vnd.security.vulnerability.report; version=1.1";
/// The older Harbor-native report type.
pub const NATIVE_REPORT_MIME: &str =
    "application/vnd.scanner.adapter.vuln.report.harbor+json; version=1.0";
/// What `X-Accept-Vulnerabilities` asks for: Harbor leaves `scan_overview` out without it.
const ACCEPT_VULNERABILITIES: &str = "application/vnd.security.vulnerability.report; version=1.1, application/vnd.scanner.adapter.vuln.report.harbor+json; version=1.0";
/// The most one page asks for (Harbor's own maximum).
const MAX_PAGE_SIZE: u32 = 100;
/// The largest canonical scan overview kept (a real one is a few hundred bytes).
const MAX_OVERVIEW_BYTES: usize = 16 * 1024;

/// Whether `name` can be a Harbor project: 1 to 255 characters of `a-z`, `0-9`, `.`,
/// `_` and `-`, starting with a letter or digit.
pub fn is_project(name: &str) -> bool {
    (1..=255).contains(&name.len())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Whether `username` is a Harbor robot account (`robot$project+name`, `robot$name`).
pub fn is_robot(username: &str) -> bool {
    username.len() > "robot$".len() && username.starts_with("robot$")
}

/// The project and the repository inside it, as Harbor's artifact API wants them: `ai/a/b`
/// → (`ai`, `a%252Fb`).
pub fn split_repository(repository: &RepositoryName) -> Option<(&str, String)> {
    let (project, rest) = repository.as_str().split_once('/')?;
    is_project(project).then(|| (project, rest.replace('/', "%252F")))
}

/// The project a project-scoped registration names (`harbor.example/ai` → `ai`), and the
/// whole namespace it is limited to.
fn scope_of(url: &RegistryUrl) -> Option<(&str, &str)> {
    let ns = url.namespace()?;
    let project = ns.split('/').next().unwrap_or(ns);
    Some((project, ns))
}

/// One artifact of a repository and its completed vulnerability scan, if any.
#[derive(Debug, Clone)]
pub struct ArtifactScan {
    pub digest: Digest,
    /// The artifact's tags (at most 100 kept).
    pub tags: Vec<String>,
    /// The overview of a completed scan (`scan_status: Success`); none otherwise.
    pub report: Option<ScanReport>,
}

/// A completed Harbor scan of one artifact, summarised.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanReport {
    /// The report MIME type the overview was keyed by.
    pub mime_type: String,
    pub scanner_name: String,
    pub scanner_vendor: String,
    pub scanner_version: String,
    /// Harbor's overall severity (`Critical`, `High`, …, `None`).
    pub severity: String,
    /// `Negligible` counts as low; `Unknown` and anything else as unknown.
    pub counts: SeverityCounts,
    pub total: u64,
    pub fixable: u64,
    pub end_time: Option<DateTime<Utc>>,
    /// `sha256` of the canonical JSON of the overview entry: the same overview read again
    /// is the same source.
    pub source: Digest,
}

/// Harbor's API on the registry's host, with the robot's Basic credentials for that
/// origin only.
pub struct HarborApi {
    /// The registration's URL, with the project it is limited to.
    registry: RegistryUrl,
    config: RegistryConfig,
    transport: Transport,
    authz: Option<Authz>,
    base: Url,
}

impl std::fmt::Debug for HarborApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HarborApi")
            .field("base", &self.base.as_str())
            .field("login", &self.authz.is_some())
            .finish_non_exhaustive()
    }
}

/// What one listing may still read: pages, bytes and items, shared by its requests.
struct Budget {
    pages: u32,
    bytes: u64,
    items: u64,
}

impl Budget {
    fn of(config: &RegistryConfig) -> Self {
        Budget {
            pages: config.max_pages,
            bytes: config.max_listing_bytes,
            items: config.max_listing_items,
        }
    }
}

fn empty<T>() -> Listing<T> {
    Listing {
        items: Vec::new(),
        complete: true,
        pages: 0,
        skipped: Vec::new(),
        error: None,
    }
}

fn cut<T>(listing: &mut Listing<T>, e: Error) {
    tracing::warn!(error = %e, pages = listing.pages, "Harbor listing cut short");
    listing.complete = false;
    if listing.error.is_none() {
        listing.error = Some(e);
    }
}

/// Harbor's error for a reply that is not a success.
fn api_error(reply: &Reply) -> Error {
    let e = reply.status_error();
    match e {
        Error::Unauthorized { url, reason } => Error::Unauthorized {
            url,
            reason: format!(
                "Harbor refused the credentials ({reason}); give a robot account (robot$project+name) and its secret"
            ),
        },
        Error::Forbidden { url, reason } => Error::Forbidden {
            url,
            reason: format!(
                "Harbor refused access ({reason}); the robot account needs the project's `list repository` and `pull` permissions"
            ),
        },
        e => e,
    }
}

#[derive(serde::Deserialize)]
struct Project {
    name: String,
}

#[derive(serde::Deserialize)]
struct Repository {
    name: String,
}

#[derive(serde::Deserialize)]
struct Artifact {
    digest: String,
    #[serde(default)]
    tags: Option<Vec<TagEntry>>,
    #[serde(default)]
    scan_overview: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(serde::Deserialize)]
struct TagEntry {
    name: String,
}

impl HarborApi {
    /// The API of the registry `config` points at. With `login` Basic credentials (the
    /// robot account), they are sent as `Authorization: Basic` to the registry's origin
    /// only; anything else is anonymous.
    pub fn new(config: &RegistryConfig, login: Option<&Credentials>) -> Result<Self> {
        let url = &config.url;
        let mut api_config = config.clone();
        api_config.url = RegistryUrl::verbatim(url.host(), url.port(), url.insecure());
        api_config.auth_hosts = Vec::new();
        let base = api_config
            .url
            .base()
            .join(API_PREFIX)
            .map_err(|e| Error::Config(format!("the Harbor API of {url}: {e}")))?;
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static("x-accept-vulnerabilities"),
            HeaderValue::from_static(ACCEPT_VULNERABILITIES),
        );
        let transport = Transport::new(api_config.clone(), Arc::new(Credentials::Anonymous))?
            .with_headers(headers);
        let authz = match login {
            Some(Credentials::Basic { username, password }) => {
                use secrecy::ExposeSecret as _;
                Some(Authz::basic_for(
                    base.origin(),
                    username,
                    password.expose_secret(),
                )?)
            }
            _ => None,
        };
        Ok(HarborApi {
            registry: config.url.clone(),
            config: api_config,
            transport,
            authz,
            base,
        })
    }

    fn page_size(&self) -> u32 {
        self.config.page_size.clamp(1, MAX_PAGE_SIZE)
    }

    fn url(&self, path: &str, query: &[(&str, &str)]) -> Result<Url> {
        let mut url = self
            .base
            .join(path)
            .map_err(|e| Error::Config(format!("the Harbor API path `{path}`: {e}")))?;
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
            q.append_pair("page", "1");
            q.append_pair("page_size", &self.page_size().to_string());
        }
        Ok(url)
    }

    /// The projects the credentials see (a robot sees only its own, and public ones).
    pub async fn projects(&self) -> Result<Listing<String>> {
        self.projects_within(&mut Budget::of(&self.config)).await
    }

    async fn projects_within(&self, budget: &mut Budget) -> Result<Listing<String>> {
        let url = self.url("projects", &[])?;
        let mut out = empty();
        let mut seen = HashSet::new();
        self.pages(&url, budget, &mut out, |p: Project, out| {
            if is_project(&p.name) {
                if seen.insert(p.name.clone()) {
                    out.items.push(p.name);
                }
            } else if out.skipped.len() < 100 {
                out.skipped.push(p.name.chars().take(256).collect());
            }
        })
        .await?;
        Ok(out)
    }

    /// The repositories of `project`: `404` for a project that does not exist, `403` for
    /// one the credentials may not see.
    pub async fn project_repositories(&self, project: &str) -> Result<Listing<RepositoryName>> {
        let mut budget = Budget::of(&self.config);
        let mut out = empty();
        self.project_into(project, None, &mut budget, &mut out, &mut HashSet::new())
            .await?;
        Ok(out)
    }

    async fn project_into(
        &self,
        project: &str,
        within: Option<&str>,
        budget: &mut Budget,
        out: &mut Listing<RepositoryName>,
        seen: &mut HashSet<String>,
    ) -> Result<()> {
        if !is_project(project) {
            return Err(Error::Config(format!(
                "`{project}` is not a Harbor project"
            )));
        }
        let url = self.url(&format!("projects/{project}/repositories"), &[])?;
        let prefix = format!("{project}/");
        self.pages(&url, budget, out, |r: Repository, out| {
            let name = r.name;
            let inside = name.starts_with(&prefix)
                && within.is_none_or(|ns| {
                    name == ns
                        || name
                            .strip_prefix(ns)
                            .is_some_and(|rest| rest.starts_with('/'))
                });
            match name.parse::<RepositoryName>() {
                Ok(repo) if inside => {
                    if seen.insert(name) {
                        out.items.push(repo);
                    }
                }
                Ok(_) => {}
                Err(_) if out.skipped.len() < 100 => {
                    out.skipped.push(name.chars().take(256).collect())
                }
                Err(_) => {}
            }
        })
        .await
    }

    /// The repositories to scan: those of the registration's project (a URL with a path;
    /// nothing of another project is asked for), or those of every project the credentials
    /// see. One budget of pages, bytes and items for the whole listing; a project that
    /// fails after the first ends the listing incomplete.
    pub async fn repositories(&self) -> Result<Listing<RepositoryName>> {
        let mut budget = Budget::of(&self.config);
        let mut out = empty();
        let mut seen = HashSet::new();
        if let Some((project, ns)) = scope_of(&self.registry) {
            let within = (ns != project).then_some(ns);
            self.project_into(project, within, &mut budget, &mut out, &mut seen)
                .await?;
            return Ok(out);
        }
        let projects = self.projects_within(&mut budget).await?;
        if let Some(e) = projects.error {
            cut(&mut out, e);
        }
        out.pages = projects.pages;
        // Project names are not repositories: they do not spend the entries' budget.
        budget.items = self.config.max_listing_items;
        for project in projects.items {
            if !out.complete {
                break;
            }
            if let Err(e) = self
                .project_into(&project, None, &mut budget, &mut out, &mut seen)
                .await
            {
                cut(&mut out, e);
            }
        }
        Ok(out)
    }

    /// The artifacts of `repository` with their completed scan overviews, newest first as
    /// Harbor lists them.
    pub async fn scan_overviews(
        &self,
        repository: &RepositoryName,
    ) -> Result<Listing<ArtifactScan>> {
        let (project, encoded) = split_repository(repository).ok_or_else(|| {
            Error::Config(format!(
                "`{repository}` is not `project/repository` in Harbor"
            ))
        })?;
        let url = self.url(
            &format!("projects/{project}/repositories/{encoded}/artifacts"),
            &[("with_scan_overview", "true"), ("with_tag", "true")],
        )?;
        let mut budget = Budget::of(&self.config);
        let mut out = empty();
        let mut seen = HashSet::new();
        self.pages(&url, &mut budget, &mut out, |a: Artifact, out| {
            let Ok(digest) = a.digest.parse::<Digest>() else {
                if out.skipped.len() < 100 {
                    out.skipped.push(a.digest.chars().take(256).collect());
                }
                return;
            };
            if !seen.insert(a.digest) {
                return;
            }
            let tags = a
                .tags
                .unwrap_or_default()
                .into_iter()
                .take(100)
                .map(|t| t.name.chars().take(128).collect())
                .collect();
            let report = a.scan_overview.as_ref().and_then(completed_report);
            out.items.push(ArtifactScan {
                digest,
                tags,
                report,
            });
        })
        .await?;
        Ok(out)
    }

    /// Reads pages of JSON arrays of `T` from `first` into `out` through `each`. The first
    /// page's failure is the error; a later one ends `out` incomplete.
    async fn pages<T: DeserializeOwned, U>(
        &self,
        first: &Url,
        budget: &mut Budget,
        out: &mut Listing<U>,
        mut each: impl FnMut(T, &mut Listing<U>),
    ) -> Result<()> {
        let origin = self.base.origin();
        let mut url = first.clone();
        let mut read = HashSet::new();
        let mut page_number = 1u64;
        let mut entries = 0u64;
        let mut first_page = true;
        loop {
            let fail = |out: &mut Listing<U>, e: Error, first_page: bool| {
                if first_page {
                    Err(e)
                } else {
                    cut(out, e);
                    Ok(())
                }
            };
            if budget.pages == 0 {
                let e = Error::Capped {
                    url: url.to_string(),
                    cap: Cap::ListingPages,
                    limit: u64::from(self.config.max_pages),
                };
                cut(out, e);
                return Ok(());
            }
            read.insert(url.to_string());
            let cap = self.config.max_page_bytes.min(budget.bytes).max(1);
            let reply = match self
                .transport
                .send(
                    Method::GET,
                    url.clone(),
                    self.authz.as_ref(),
                    Some("application/json"),
                    cap,
                )
                .await
            {
                Ok(r) if r.status.is_success() => r,
                Ok(r) => return fail(out, api_error(&r), first_page),
                Err(e) => return fail(out, e.into_cap(Cap::ListingBytes), first_page),
            };
            budget.pages -= 1;
            out.pages += 1;
            budget.bytes = budget.bytes.saturating_sub(reply.body.len() as u64);
            let page: Vec<T> = match serde_json::from_slice(&reply.body) {
                Ok(p) => p,
                Err(e) => {
                    let e = Error::protocol(&url, format!("not a Harbor API page: {e}"));
                    return fail(out, e, first_page);
                }
            };
            first_page = false;
            let on_page = page.len() as u64;
            entries += on_page;
            for entry in page {
                if budget.items == 0 {
                    let e = Error::Capped {
                        url: url.to_string(),
                        cap: Cap::ListingItems,
                        limit: self.config.max_listing_items,
                    };
                    cut(out, e);
                    return Ok(());
                }
                let before = out.items.len();
                each(entry, out);
                budget.items = budget
                    .items
                    .saturating_sub((out.items.len() - before) as u64);
            }
            let total = reply
                .header("x-total-count")
                .and_then(|t| t.trim().parse::<u64>().ok());
            let next = match next_link(&reply.headers, &url) {
                Ok(Some(next)) => next,
                Ok(None) => {
                    // No link: the next page only while Harbor's total says there is more
                    // and this page was full.
                    let more = total.is_some_and(|t| entries < t)
                        && on_page >= u64::from(self.page_size());
                    if !more {
                        return Ok(());
                    }
                    page_number += 1;
                    let mut next = url.clone();
                    let pairs: Vec<(String, String)> = url
                        .query_pairs()
                        .filter(|(k, _)| k != "page")
                        .map(|(k, v)| (k.into_owned(), v.into_owned()))
                        .collect();
                    next.query_pairs_mut()
                        .clear()
                        .extend_pairs(pairs)
                        .append_pair("page", &page_number.to_string());
                    next
                }
                Err(e) => {
                    cut(out, Error::protocol(&url, e));
                    return Ok(());
                }
            };
            if next.origin() != origin {
                let e = Error::protocol(
                    &url,
                    format!(
                        "`next` leaves the registry for {}; the credentials are not sent there",
                        next.origin().ascii_serialization()
                    ),
                );
                cut(out, e);
                return Ok(());
            }
            if read.contains(next.as_str()) {
                cut(
                    out,
                    Error::protocol(&url, "`next` loops to a page already read"),
                );
                return Ok(());
            }
            page_number = next
                .query_pairs()
                .find(|(k, _)| k == "page")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(page_number + 1);
            url = next;
        }
    }
}

/// The completed report of an artifact's `scan_overview`: the Trivy-style report type
/// first, then Harbor's native one, then any other; only `scan_status: Success`.
pub fn completed_report(overview: &BTreeMap<String, serde_json::Value>) -> Option<ScanReport> {
    let mut keys: Vec<&String> = overview.keys().collect();
    keys.sort_by_key(|k| match k.as_str() {
        REPORT_MIME => 0,
        NATIVE_REPORT_MIME => 1,
        _ => 2,
    });
    keys.into_iter()
        .find_map(|k| report_of(k, overview.get(k)?))
}

fn report_of(mime_type: &str, entry: &serde_json::Value) -> Option<ScanReport> {
    let text = |v: &serde_json::Value| -> String {
        v.as_str().unwrap_or_default().chars().take(128).collect()
    };
    if entry.get("scan_status")?.as_str()? != "Success" {
        return None;
    }
    let summary = entry.get("summary");
    let mut counts = SeverityCounts {
        critical: 0,
        high: 0,
        medium: 0,
        low: 0,
        unknown: 0,
    };
    if let Some(by) = summary
        .and_then(|s| s.get("summary"))
        .and_then(|s| s.as_object())
    {
        for (severity, n) in by {
            let n = n.as_u64().unwrap_or(0);
            let slot = match severity.to_ascii_lowercase().as_str() {
                "critical" => &mut counts.critical,
                "high" => &mut counts.high,
                "medium" => &mut counts.medium,
                "low" | "negligible" => &mut counts.low,
                "none" => continue,
                _ => &mut counts.unknown,
            };
            *slot = slot.saturating_add(n);
        }
    }
    let number = |key: &str| {
        summary
            .and_then(|s| s.get(key))
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    };
    let scanner = entry.get("scanner").cloned().unwrap_or_default();
    let canonical = canonical_json(&serde_json::json!({
        "mime_type": mime_type,
        "overview": entry,
    }));
    if canonical.len() > MAX_OVERVIEW_BYTES {
        return None;
    }
    use sha2::Digest as _;
    let source = format!("sha256:{:x}", sha2::Sha256::digest(&canonical))
        .parse::<Digest>()
        .ok()?;
    Some(ScanReport {
        mime_type: mime_type.chars().take(128).collect(),
        scanner_name: text(&scanner["name"]),
        scanner_vendor: text(&scanner["vendor"]),
        scanner_version: text(&scanner["version"]),
        severity: text(&entry["severity"]),
        counts,
        total: number("total"),
        fixable: number("fixable"),
        end_time: entry
            .get("end_time")
            .and_then(serde_json::Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.to_utc()),
        source,
    })
}

/// JSON with object keys sorted at every level and no insignificant whitespace.
pub fn canonical_json(value: &serde_json::Value) -> Vec<u8> {
    fn write(v: &serde_json::Value, out: &mut Vec<u8>) {
        match v {
            serde_json::Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push(b'{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend(serde_json::to_vec(k).unwrap_or_default());
                    out.push(b':');
                    if let Some(v) = map.get(k) {
                        write(v, out);
                    }
                }
                out.push(b'}');
            }
            serde_json::Value::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write(item, out);
                }
                out.push(b']');
            }
            other => out.extend(serde_json::to_vec(other).unwrap_or_default()),
        }
    }
    let mut out = Vec::new();
    write(value, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projects_robots_and_encoded_names() {
        for p in ["ai", "library", "a.b_c-d", "0x"] {
            assert!(is_project(p), "{p}");
        }
        for p in ["", "AI", "-a", ".a", "a/b", "a b", &"a".repeat(256)] {
            assert!(!is_project(p), "{p}");
        }
        assert!(is_robot("robot$ai+scanner"));
        assert!(!is_robot("robot$"));
        assert!(!is_robot("admin"));
        let r: RepositoryName = "ai/models/llama".parse().unwrap();
        assert_eq!(
            split_repository(&r),
            Some(("ai", "models%252Fllama".to_owned()))
        );
        let r: RepositoryName = "single".parse().unwrap();
        assert_eq!(split_repository(&r), None);
    }

    fn overview(status: &str, end: &str) -> BTreeMap<String, serde_json::Value> {
        let entry = serde_json::json!({
            "report_id": "r1",
            "scan_status": status,
            "severity": "High",
            "duration": 4,
            "summary": {"total": 9, "fixable": 3, "summary": {
                "Critical": 1, "High": 2, "Medium": 3, "Low": 1, "Negligible": 1, "Unknown": 1}},
            "start_time": "2026-12-01T10:00:00Z",
            "end_time": end,
            "complete_percent": 100,
            "scanner": {"name": "Trivy", "vendor": "Aqua Security", "version": "v0.58.1"}
        });
        [(REPORT_MIME.to_owned(), entry)].into_iter().collect()
    }

    #[test]
    fn a_completed_overview_is_summarised_and_its_source_is_stable() {
        let report = completed_report(&overview("Success", "2026-12-01T10:00:04Z")).unwrap();
        assert_eq!(report.scanner_name, "Trivy");
        assert_eq!(report.scanner_vendor, "Aqua Security");
        assert_eq!(report.severity, "High");
        assert_eq!(
            (
                report.counts.critical,
                report.counts.high,
                report.counts.medium,
                report.counts.low,
                report.counts.unknown
            ),
            (1, 2, 3, 2, 1)
        );
        assert_eq!((report.total, report.fixable), (9, 3));
        assert_eq!(
            report.end_time.unwrap().to_rfc3339(),
            "2026-12-01T10:00:04+00:00"
        );
        let again = completed_report(&overview("Success", "2026-12-01T10:00:04Z")).unwrap();
        assert_eq!(report.source, again.source);
        let rescanned = completed_report(&overview("Success", "2026-12-02T10:00:04Z")).unwrap();
        assert_ne!(report.source, rescanned.source);
        for status in ["Running", "Pending", "Error", "Stopped"] {
            assert!(
                completed_report(&overview(status, "")).is_none(),
                "{status}"
            );
        }
        let garbage: BTreeMap<String, serde_json::Value> =
            [("x".to_owned(), serde_json::json!([1, 2]))]
                .into_iter()
                .collect();
        assert!(completed_report(&garbage).is_none());
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let a = serde_json::json!({"b": 1, "a": {"d": [1, {"y": 2, "x": 1}], "c": null}});
        assert_eq!(
            String::from_utf8(canonical_json(&a)).unwrap(),
            r#"{"a":{"c":null,"d":[1,{"x":1,"y":2}]},"b":1}"#
        );
    }
}
