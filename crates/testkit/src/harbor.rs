//! A fake of Harbor in front of a real `docker-registry`, speaking Harbor's wire protocol:
//!
//! - `/v2/` is passed through behind Harbor's token auth: `401` with
//!   `WWW-Authenticate: Bearer realm="http://<host>/service/token",service="harbor-registry"`,
//!   and `GET /service/token` exchanges a robot account's Basic credentials (or none:
//!   anonymous, public projects only) for a token. A repository of a project the token's
//!   account may not pull is `401 UNAUTHORIZED` (`insufficient_scope`), and `_catalog` is
//!   refused to every account but a system admin, as Harbor does.
//! - Harbor's API under `/api/v2.0/`, with Basic auth on each request: `projects`,
//!   `projects/{p}/repositories`, `projects/{p}/repositories/{r}/artifacts` (`r` URL-encoded
//!   twice when it holds `/`), `page`/`page_size` (at most 100), `X-Total-Count`, and an
//!   RFC 5988 `Link` with `rel="next"` (and `rel="prev"`). A robot sees its own projects and
//!   the public ones; another project is `403 FORBIDDEN`, an unknown one `404 NOT_FOUND`,
//!   bad credentials `401 UNAUTHORIZED`, all as `{"errors":[{"code","message"}]}`.
//! - Artifacts carry `scan_overview` (keyed by report MIME type) only when asked with
//!   `with_scan_overview=true`.
//!
//! Everything received is recorded ([`FakeHarbor::seen`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use base64::Engine as _;

use crate::proxy::{Action, FaultProxy, Request, Response};
use crate::registry::TestRegistry;

/// The report type Trivy's overviews are keyed by.
pub const REPORT_MIME: &str = "application/vnd.security.vulnerability.report; version=1.1";

#[derive(Debug, Clone)]
struct Account {
    secret: String,
    projects: Vec<String>,
    admin: bool,
}

#[derive(Debug, Clone)]
struct Project {
    public: bool,
    repositories: Vec<String>,
}

#[derive(Debug, Clone)]
struct Artifact {
    digest: String,
    tags: Vec<String>,
    overview: Option<serde_json::Value>,
}

#[derive(Debug, Default)]
struct State {
    projects: Mutex<BTreeMap<String, Project>>,
    accounts: Mutex<HashMap<String, Account>>,
    /// Tokens handed out by `/service/token`, and whose (none: anonymous).
    tokens: Mutex<HashMap<String, Option<String>>>,
    /// Repository → its artifacts.
    artifacts: Mutex<HashMap<String, Vec<Artifact>>>,
    next_origin: Mutex<Option<String>>,
    no_links: Mutex<bool>,
    /// Paths answered by a fixed response (a broken Harbor).
    overrides: Mutex<HashMap<String, Response>>,
}

fn error(status: u16, code: &str, message: &str) -> Response {
    Response::new(
        status,
        &[("Content-Type", "application/json; charset=utf-8")],
        serde_json::json!({ "errors": [{ "code": code, "message": message }] }).to_string(),
    )
}

fn query(req: &Request) -> HashMap<String, String> {
    req.target
        .split_once('?')
        .map(|(_, q)| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Who a request is: `Ok(None)` anonymous, `Ok(Some(name))` an account, `Err` bad
/// credentials.
enum Caller {
    Anonymous,
    Account(String, Account),
    Refused,
}

impl State {
    fn basic(&self, req: &Request) -> Caller {
        let Some(value) = req.header("authorization") else {
            return Caller::Anonymous;
        };
        let Some(encoded) = value.strip_prefix("Basic ") else {
            return Caller::Refused;
        };
        let Some(decoded) = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
        else {
            return Caller::Refused;
        };
        let Some((user, secret)) = decoded.split_once(':') else {
            return Caller::Refused;
        };
        match self.accounts.lock().unwrap().get(user) {
            Some(a) if a.secret == secret => Caller::Account(user.to_owned(), a.clone()),
            _ => Caller::Refused,
        }
    }

    fn may_see(&self, account: Option<&Account>, project: &str) -> bool {
        let public = self
            .projects
            .lock()
            .unwrap()
            .get(project)
            .is_some_and(|p| p.public);
        public || account.is_some_and(|a| a.admin || a.projects.iter().any(|p| p == project))
    }

    fn origin(&self, req: &Request) -> String {
        self.next_origin
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| format!("http://{}", req.header("host").unwrap_or("localhost")))
    }

    /// One page of `all`, with Harbor's `X-Total-Count` and `Link`.
    fn page(&self, req: &Request, all: Vec<serde_json::Value>) -> Response {
        let q = query(req);
        let size: usize = q
            .get("page_size")
            .and_then(|v| v.parse().ok())
            .unwrap_or(10);
        let page: usize = q.get("page").and_then(|v| v.parse().ok()).unwrap_or(1);
        if !(1..=100).contains(&size) || page == 0 {
            return error(400, "BAD_REQUEST", "invalid page or page_size");
        }
        let start = (page - 1).saturating_mul(size);
        let body: Vec<serde_json::Value> = all.iter().skip(start).take(size).cloned().collect();
        let total = all.len().to_string();
        let mut headers = vec![
            (
                "Content-Type".to_owned(),
                "application/json; charset=utf-8".to_owned(),
            ),
            ("X-Total-Count".to_owned(), total),
        ];
        if !*self.no_links.lock().unwrap() {
            let origin = self.origin(req);
            let kept: Vec<String> = req
                .target
                .split_once('?')
                .map(|(_, q)| q)
                .unwrap_or_default()
                .split('&')
                .filter(|kv| {
                    !kv.is_empty() && !kv.starts_with("page=") && !kv.starts_with("page_size=")
                })
                .map(str::to_owned)
                .collect();
            let link = |p: usize| {
                let mut qs = kept.clone();
                qs.push(format!("page={p}"));
                qs.push(format!("page_size={size}"));
                format!("{origin}{}?{}", req.path(), qs.join("&"))
            };
            let mut links = Vec::new();
            if page > 1 {
                links.push(format!("<{}>; rel=\"prev\"", link(page - 1)));
            }
            if start + size < all.len() {
                links.push(format!("<{}>; rel=\"next\"", link(page + 1)));
            }
            if !links.is_empty() {
                headers.push(("Link".to_owned(), links.join(" , ")));
            }
        }
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        Response::new(200, &headers, serde_json::Value::Array(body).to_string())
    }

    fn api(&self, req: &Request) -> Response {
        if let Some(r) = self.overrides.lock().unwrap().get(req.path()) {
            return r.clone();
        }
        let account = match self.basic(req) {
            Caller::Refused => return error(401, "UNAUTHORIZED", "unauthorized"),
            Caller::Anonymous => None,
            Caller::Account(_, a) => Some(a),
        };
        let rest = req.path().trim_start_matches("/api/v2.0/");
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            ["projects"] => {
                let all: Vec<serde_json::Value> = self
                    .projects
                    .lock()
                    .unwrap()
                    .iter()
                    .enumerate()
                    .filter(|(_, (name, p))| {
                        p.public
                            || account
                                .as_ref()
                                .is_some_and(|a| a.admin || a.projects.contains(name))
                    })
                    .map(|(i, (name, p))| {
                        serde_json::json!({
                            "project_id": i + 1,
                            "name": name,
                            "metadata": {"public": p.public.to_string()},
                            "repo_count": p.repositories.len(),
                        })
                    })
                    .collect();
                self.page(req, all)
            }
            ["projects", project, "repositories"] => {
                let Some(p) = self.projects.lock().unwrap().get(*project).cloned() else {
                    return error(404, "NOT_FOUND", &format!("project {project} not found"));
                };
                if !self.may_see(account.as_ref(), project) {
                    return match account {
                        None => error(401, "UNAUTHORIZED", "unauthorized"),
                        Some(_) => error(403, "FORBIDDEN", "forbidden"),
                    };
                }
                let all = p
                    .repositories
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        serde_json::json!({
                            "id": i + 1,
                            "name": format!("{project}/{r}"),
                            "artifact_count": 1,
                            "pull_count": 0,
                        })
                    })
                    .collect();
                self.page(req, all)
            }
            ["projects", project, "repositories", repo, "artifacts"] => {
                if !self.projects.lock().unwrap().contains_key(*project) {
                    return error(404, "NOT_FOUND", &format!("project {project} not found"));
                }
                if !self.may_see(account.as_ref(), project) {
                    return match account {
                        None => error(401, "UNAUTHORIZED", "unauthorized"),
                        Some(_) => error(403, "FORBIDDEN", "forbidden"),
                    };
                }
                // Harbor wants `/` in a repository name encoded twice (`%252F`).
                if repo.contains("%2F") && !repo.contains("%252F") {
                    return error(404, "NOT_FOUND", "repository not found");
                }
                let name = format!("{project}/{}", repo.replace("%252F", "/"));
                let with_overview = query(req).get("with_scan_overview").map(String::as_str)
                    == Some("true")
                    && req.header("x-accept-vulnerabilities").is_some();
                let all = self
                    .artifacts
                    .lock()
                    .unwrap()
                    .get(&name)
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .enumerate()
                    .map(|(i, a)| {
                        let mut v = serde_json::json!({
                            "id": i + 1,
                            "digest": a.digest,
                            "media_type": "application/vnd.oci.image.config.v1+json",
                            "manifest_media_type": "application/vnd.oci.image.manifest.v1+json",
                            "type": "IMAGE",
                            "tags": a.tags.iter().map(|t| serde_json::json!({"name": t, "immutable": false})).collect::<Vec<_>>(),
                        });
                        if with_overview && let Some(o) = a.overview {
                            v["scan_overview"] = o;
                        }
                        v
                    })
                    .collect();
                self.page(req, all)
            }
            _ => error(404, "NOT_FOUND", "not found"),
        }
    }

    /// `GET /service/token`: Basic credentials (or none) for a token.
    fn token(&self, req: &Request) -> Response {
        let whose = match self.basic(req) {
            Caller::Refused => return error(401, "UNAUTHORIZED", "authentication failed"),
            Caller::Anonymous => None,
            Caller::Account(name, _) => Some(name),
        };
        let token = format!("harbor.{}", crate::unique_id());
        self.tokens.lock().unwrap().insert(token.clone(), whose);
        Response::new(
            200,
            &[("Content-Type", "application/json")],
            serde_json::json!({"token": token, "expires_in": 1800, "issued_at": "2026-12-04T00:00:00Z"})
                .to_string(),
        )
    }

    /// `/v2/`: a token's account must be allowed the repository's project.
    fn registry(&self, req: &Request) -> Option<Response> {
        let challenge = |error: Option<&str>| {
            let realm = format!(
                "http://{}/service/token",
                req.header("host").unwrap_or("localhost")
            );
            let mut value = format!("Bearer realm=\"{realm}\",service=\"harbor-registry\"");
            if let Some(e) = error {
                value.push_str(&format!(",error=\"{e}\""));
            }
            value
        };
        let token = req
            .header("authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
            .map(str::to_owned);
        let whose = token.and_then(|t| self.tokens.lock().unwrap().get(&t).cloned());
        let Some(whose) = whose else {
            let mut r = error(401, "UNAUTHORIZED", "unauthorized: authentication required");
            r.set_header("WWW-Authenticate", &challenge(None));
            return Some(r);
        };
        let account = whose
            .as_ref()
            .and_then(|w| self.accounts.lock().unwrap().get(w).cloned());
        let path = req.path();
        if path == "/v2/" || path == "/v2" {
            return None;
        }
        if path == "/v2/_catalog" {
            if account.as_ref().is_some_and(|a| a.admin) {
                return None;
            }
            let mut r = error(
                401,
                "UNAUTHORIZED",
                "unauthorized to list catalog: unauthorized to list catalog",
            );
            r.set_header("WWW-Authenticate", &challenge(Some("insufficient_scope")));
            return Some(r);
        }
        let project = path
            .trim_start_matches("/v2/")
            .split('/')
            .next()
            .unwrap_or_default();
        if self.may_see(account.as_ref(), project) {
            return None;
        }
        let mut r = error(401, "UNAUTHORIZED", "unauthorized to access repository");
        r.set_header("WWW-Authenticate", &challenge(Some("insufficient_scope")));
        Some(r)
    }
}

#[derive(Debug)]
pub struct FakeHarbor {
    proxy: FaultProxy,
    state: Arc<State>,
}

impl FakeHarbor {
    /// Harbor in front of `registry` (which must be open: the fake does the auth).
    pub async fn start(registry: &TestRegistry) -> Self {
        let upstream = format!("127.0.0.1:{}", registry.port())
            .parse()
            .expect("a loopback address");
        let state = Arc::new(State::default());
        let s = state.clone();
        let proxy = FaultProxy::start(Some(upstream), move |req: &Request, _| {
            let path = req.path();
            if path.starts_with("/api/v2.0/") {
                return Action::Respond(s.api(req));
            }
            if path == "/service/token" {
                return Action::Respond(s.token(req));
            }
            if !path.starts_with("/v2") {
                return Action::Respond(error(404, "NOT_FOUND", "not found"));
            }
            match s.registry(req) {
                Some(r) => Action::Respond(r),
                None => Action::Forward,
            }
        })
        .await;
        FakeHarbor { proxy, state }
    }

    /// A project and its repositories (names inside the project: `models/llama`).
    pub fn project(&self, name: &str, public: bool, repositories: &[&str]) {
        self.state_handle().project(name, public, repositories)
    }

    /// A robot account (`robot$project+name`) with pull and list permissions on `projects`.
    pub fn robot(&self, name: &str, secret: &str, projects: &[&str]) {
        self.state.accounts.lock().unwrap().insert(
            name.to_owned(),
            Account {
                secret: secret.to_owned(),
                projects: projects.iter().map(|p| (*p).to_owned()).collect(),
                admin: false,
            },
        );
    }

    /// A system administrator: every project, and `_catalog`.
    pub fn admin(&self, name: &str, secret: &str) {
        self.state.accounts.lock().unwrap().insert(
            name.to_owned(),
            Account {
                secret: secret.to_owned(),
                projects: Vec::new(),
                admin: true,
            },
        );
    }

    /// An artifact of `repository` (`project/repo…`) with its tags and, if scanned, its
    /// `scan_overview` (an object keyed by report MIME type; see [`overview`]).
    pub fn artifact(
        &self,
        repository: &str,
        digest: &str,
        tags: &[&str],
        overview: Option<serde_json::Value>,
    ) {
        self.state_handle()
            .artifact(repository, digest, tags, overview)
    }

    /// `Link` targets point at `origin` (`http://host:port`) instead of the fake.
    pub fn next_on(&self, origin: &str) {
        *self.state.next_origin.lock().unwrap() = Some(origin.to_owned());
    }

    /// Pages carry no `Link` header (only `X-Total-Count`), as some Harbor versions do.
    pub fn without_links(&self) {
        *self.state.no_links.lock().unwrap() = true;
    }

    /// `path` (e.g. `/api/v2.0/projects`) is answered with `response`.
    pub fn answer(&self, path: &str, response: Response) {
        self.state
            .overrides
            .lock()
            .unwrap()
            .insert(path.to_owned(), response);
    }

    /// `127.0.0.1:<port>`: the registry and the API (plain HTTP).
    pub fn host(&self) -> String {
        self.proxy.host()
    }

    /// A handle that changes the fake's projects and artifacts from another task.
    pub fn state_handle(&self) -> HarborHandle {
        HarborHandle {
            state: self.state.clone(),
        }
    }

    pub fn seen(&self) -> Vec<Request> {
        self.proxy.seen()
    }
}

/// A Harbor `scan_overview` as Trivy leaves it: `status` (`Success`, `Running`, `Error`…)
/// and the counts by severity (`Critical`, `High`, `Medium`, `Low`, `Unknown`).
pub fn overview(status: &str, counts: &[(&str, u64)], fixable: u64) -> serde_json::Value {
    let summary: serde_json::Map<String, serde_json::Value> = counts
        .iter()
        .map(|(k, v)| ((*k).to_owned(), serde_json::json!(v)))
        .collect();
    let total: u64 = counts.iter().map(|(_, v)| v).sum();
    let severity = ["Critical", "High", "Medium", "Low", "Unknown"]
        .into_iter()
        .find(|s| counts.iter().any(|(k, v)| k == s && *v > 0))
        .unwrap_or("None");
    serde_json::json!({
        REPORT_MIME: {
            "report_id": crate::unique_id(),
            "scan_status": status,
            "severity": severity,
            "duration": 3,
            "summary": {"total": total, "fixable": fixable, "summary": summary},
            "start_time": "2026-12-01T10:00:00.000Z",
            "end_time": "2026-12-01T10:00:03.000Z",
            "complete_percent": 100,
            "scanner": {"name": "Trivy", "vendor": "Aqua Security", "version": "v0.58.1"}
        }
    })
}

/// Changes a [`FakeHarbor`]'s projects and artifacts; cheap to clone and `Send`.
#[derive(Debug, Clone)]
pub struct HarborHandle {
    state: Arc<State>,
}

impl HarborHandle {
    /// See [`FakeHarbor::project`].
    pub fn project(&self, name: &str, public: bool, repositories: &[&str]) {
        self.state.projects.lock().unwrap().insert(
            name.to_owned(),
            Project {
                public,
                repositories: repositories.iter().map(|r| (*r).to_owned()).collect(),
            },
        );
    }

    /// See [`FakeHarbor::artifact`].
    pub fn artifact(
        &self,
        repository: &str,
        digest: &str,
        tags: &[&str],
        overview: Option<serde_json::Value>,
    ) {
        let mut all = self.state.artifacts.lock().unwrap();
        let list = all.entry(repository.to_owned()).or_default();
        list.retain(|a| a.digest != digest);
        list.push(Artifact {
            digest: digest.to_owned(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            overview,
        });
    }
}
