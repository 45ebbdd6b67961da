//! A fake of GitHub Container Registry in front of a real `docker-registry`: `/v2/` is
//! passed through (but `_catalog` is `404`, as ghcr.io serves none), and the same server
//! plays GitHub's REST API for container packages:
//! `GET /orgs/{owner}/packages?package_type=container&per_page=&page=`,
//! `GET /users/{owner}/packages?…` (a user's public packages only) and
//! `GET /user/packages?…` (all the packages of the token's own user), JSON arrays of
//! `{"name", "visibility", …}`, paged by `Link: <…>; rel="next"`, and `GET /user`
//! (`{"login", …}` for a personal access token; `403 Resource not accessible by
//! integration` for a token of no user, as for a GitHub App installation token). Errors are
//! GitHub's JSON (`{"message", "documentation_url"}`): `404` for an unknown owner (and for
//! `/orgs/` of a user), `401 Bad credentials` for a bearer token it does not know,
//! `401 Requires authentication` for `/user…` without one. Private and internal packages
//! of an organisation are listed only with a known token as `Authorization: Bearer`.
//! Every API answer carries GitHub's rate-limit headers (`x-ratelimit-limit`,
//! `-remaining`, `-used`, `-reset`, `-resource`); each API request spends one, and with
//! none left the answer is GitHub's `403` (`API rate limit exceeded for …`,
//! `x-ratelimit-remaining: 0`). [`FakeGitHub::secondary_limit`] answers the next API
//! request with a secondary rate limit (`403`/`429` and `retry-after`). Everything
//! received is recorded ([`FakeGitHub::seen`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::proxy::{Action, FaultProxy, Request, Response};
use crate::registry::TestRegistry;

const DOCS: &str = "https://docs.github.com/rest/packages/packages";
const RATE_LIMIT_DOCS: &str =
    "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api";

/// An owner: whether an organisation, and its packages (name, visibility).
type Owner = (bool, Vec<(String, String)>);

#[derive(Debug)]
struct Api {
    /// Owner → is an organisation, and its packages (name, visibility).
    owners: Mutex<HashMap<String, Owner>>,
    /// Known tokens and the login of their user (none for an installation token).
    tokens: Mutex<Vec<(String, Option<String>)>>,
    next_origin: Mutex<Option<String>>,
    /// The rate limit: (limit, remaining, reset as a Unix time).
    budget: Mutex<(u64, u64, u64)>,
    /// The next API request is answered with this status and `retry-after`.
    secondary: Mutex<Option<(u16, String)>>,
}

impl Default for Api {
    fn default() -> Self {
        Api {
            owners: Mutex::default(),
            tokens: Mutex::default(),
            next_origin: Mutex::default(),
            budget: Mutex::new((5000, 5000, now_secs() + 3600)),
            secondary: Mutex::default(),
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Who the request's bearer token is: `Ok(None)` without a token, `Ok(Some(login))` for a
/// known one (`login` empty for a token of no user), `Err` for an unknown one.
type Caller = Result<Option<Option<String>>, ()>;

fn error(status: u16, message: &str) -> Response {
    Response::new(
        status,
        &[("Content-Type", "application/json; charset=utf-8")],
        serde_json::json!({ "message": message, "documentation_url": DOCS }).to_string(),
    )
}

impl Api {
    fn caller(&self, req: &Request) -> Caller {
        match req.header("authorization") {
            None => Ok(None),
            Some(a) => match a.strip_prefix("Bearer ") {
                Some(t) => self
                    .tokens
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|(k, _)| k == t)
                    .map(|(_, login)| Some(login.clone()))
                    .ok_or(()),
                None => Err(()),
            },
        }
    }

    /// Spends one request of the budget: the rate-limit headers, or GitHub's `403` (or
    /// the secondary limit's answer) when the request is refused.
    fn spend(&self) -> Result<Vec<(String, String)>, Response> {
        if let Some((status, retry_after)) = self.secondary.lock().unwrap().take() {
            let mut r = error(
                status,
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you reach out to GitHub Support for help, please include the request ID.",
            );
            r.set_header("retry-after", &retry_after);
            return Err(r);
        }
        let mut budget = self.budget.lock().unwrap();
        let (limit, remaining, reset) = *budget;
        let headers = |remaining: u64| {
            vec![
                ("x-ratelimit-limit".to_owned(), limit.to_string()),
                ("x-ratelimit-remaining".to_owned(), remaining.to_string()),
                (
                    "x-ratelimit-used".to_owned(),
                    limit.saturating_sub(remaining).to_string(),
                ),
                ("x-ratelimit-reset".to_owned(), reset.to_string()),
                ("x-ratelimit-resource".to_owned(), "core".to_owned()),
            ]
        };
        if remaining == 0 {
            let mut r = Response::new(
                403,
                &[("Content-Type", "application/json; charset=utf-8")],
                serde_json::json!({
                    "message": "API rate limit exceeded for user ID 583231. If you reach out to GitHub Support for help, please include the request ID.",
                    "documentation_url": RATE_LIMIT_DOCS,
                })
                .to_string(),
            );
            for (k, v) in headers(0) {
                r.set_header(&k, &v);
            }
            return Err(r);
        }
        budget.1 = remaining - 1;
        Ok(headers(remaining - 1))
    }

    /// `GET /user`.
    fn user(&self, req: &Request) -> Response {
        match self.caller(req) {
            Err(()) => error(401, "Bad credentials"),
            Ok(None) => error(401, "Requires authentication"),
            Ok(Some(None)) => error(403, "Resource not accessible by integration"),
            Ok(Some(Some(login))) => Response::new(
                200,
                &[("Content-Type", "application/json; charset=utf-8")],
                serde_json::json!({ "login": login, "id": 583231, "type": "User" }).to_string(),
            ),
        }
    }

    /// `/orgs/{owner}/packages` (`Some(true)`), `/users/{owner}/packages`
    /// (`Some(false)`), or `/user/packages` (`None`, the caller's own).
    fn packages(&self, req: &Request, org: Option<bool>, owner: &str) -> Response {
        let caller = match self.caller(req) {
            Ok(c) => c,
            Err(()) => return error(401, "Bad credentials"),
        };
        let authorised = caller.is_some();
        let (kind, owner) = match org {
            Some(true) => ("orgs", owner.to_owned()),
            Some(false) => ("users", owner.to_owned()),
            None => match caller {
                Some(Some(login)) => ("user", login),
                Some(None) => return error(403, "Resource not accessible by integration"),
                None => return error(401, "Requires authentication"),
            },
        };
        let Some((is_org, all)) = self.owners.lock().unwrap().get(&owner).cloned() else {
            return error(404, "Not Found");
        };
        if org.is_some_and(|o| o != is_org) || (org.is_none() && is_org) {
            return error(404, "Not Found");
        }
        let query: HashMap<String, String> = req
            .target
            .split_once('?')
            .map(|(_, q)| {
                q.split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        if query.get("package_type").map(String::as_str) != Some("container") {
            return error(422, "package_type is required");
        }
        let per_page: usize = query
            .get("per_page")
            .and_then(|v| v.parse().ok())
            .unwrap_or(30);
        let page: usize = query.get("page").and_then(|v| v.parse().ok()).unwrap_or(1);
        if !(1..=100).contains(&per_page) || page == 0 {
            return error(422, "invalid page or per_page");
        }
        // An organisation shows its private and internal packages to a known token; a
        // user's show only on `/user/packages`, to the user's own token.
        let visible: Vec<_> = all
            .into_iter()
            .filter(|(_, v)| match org {
                Some(true) => authorised || v == "public",
                Some(false) => v == "public",
                None => true,
            })
            .collect();
        let start = (page - 1) * per_page;
        let body: Vec<serde_json::Value> = visible
            .iter()
            .skip(start)
            .take(per_page)
            .enumerate()
            .map(|(i, (name, visibility))| {
                serde_json::json!({
                    "id": start + i + 1,
                    "name": name,
                    "package_type": "container",
                    "visibility": visibility,
                    "url": format!("https://api.github.com/{kind}/{owner}/packages/container/{}", name.replace('/', "%2F")),
                })
            })
            .collect();
        let origin = self
            .next_origin
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| format!("http://{}", req.header("host").unwrap_or("localhost")));
        let path = match org {
            None => "user/packages".to_owned(),
            Some(_) => format!("{kind}/{owner}/packages"),
        };
        let mut headers = vec![(
            "Content-Type".to_owned(),
            "application/json; charset=utf-8".to_owned(),
        )];
        if start + per_page < visible.len() {
            headers.push((
                "Link".to_owned(),
                format!(
                    "<{origin}/{path}?package_type=container&per_page={per_page}&page={}>; rel=\"next\", <{origin}/{path}?package_type=container&per_page={per_page}&page=1>; rel=\"first\"",
                    page + 1
                ),
            ));
        }
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        Response::new(200, &headers, serde_json::Value::Array(body).to_string())
    }

    /// An API request: the budget spent, then the answer with the rate-limit headers.
    fn answer(&self, route: impl FnOnce(&Self) -> Response) -> Response {
        match self.spend() {
            Err(refused) => refused,
            Ok(limits) => {
                let mut r = route(self);
                for (k, v) in limits {
                    r.set_header(&k, &v);
                }
                r
            }
        }
    }
}

#[derive(Debug)]
pub struct FakeGitHub {
    proxy: FaultProxy,
    api: Arc<Api>,
}

impl FakeGitHub {
    /// ghcr.io's registry API in front of `registry`, and GitHub's packages API.
    pub async fn start(registry: &TestRegistry) -> Self {
        let upstream = format!("127.0.0.1:{}", registry.port())
            .parse()
            .expect("a loopback address");
        let api = Arc::new(Api::default());
        let a = api.clone();
        let proxy = FaultProxy::start(Some(upstream), move |req: &Request, _| {
            let path = req.path();
            if path == "/user" {
                return Action::Respond(a.answer(|a| a.user(req)));
            }
            if path == "/user/packages" {
                return Action::Respond(a.answer(|a| a.packages(req, None, "")));
            }
            for (prefix, org) in [("/orgs/", true), ("/users/", false)] {
                if let Some(owner) = path
                    .strip_prefix(prefix)
                    .and_then(|rest| rest.strip_suffix("/packages"))
                {
                    return Action::Respond(a.answer(|a| a.packages(req, Some(org), owner)));
                }
            }
            if !path.starts_with("/v2/") {
                return Action::Respond(error(404, "Not Found"));
            }
            if path == "/v2/_catalog" {
                return Action::Respond(Response::new(
                    404,
                    &[("Content-Type", "application/json")],
                    r#"{"errors":[{"code":"NOT_FOUND","message":"404 page not found"}]}"#,
                ));
            }
            Action::Forward
        })
        .await;
        FakeGitHub { proxy, api }
    }

    /// An organisation and its container packages (`(name, visibility)`).
    pub fn org(&self, owner: &str, packages: &[(&str, &str)]) {
        self.owner(owner, true, packages);
    }

    /// A user and their container packages (`(name, visibility)`).
    pub fn user(&self, owner: &str, packages: &[(&str, &str)]) {
        self.owner(owner, false, packages);
    }

    fn owner(&self, owner: &str, org: bool, packages: &[(&str, &str)]) {
        self.api.owners.lock().unwrap().insert(
            owner.to_owned(),
            (
                org,
                packages
                    .iter()
                    .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
        );
    }

    /// A token of no user that the API accepts (an organisation's private packages are
    /// then listed too; `GET /user` is `403`, as for a GitHub App installation token).
    pub fn token(&self, token: &str) {
        self.api
            .tokens
            .lock()
            .unwrap()
            .push((token.to_owned(), None));
    }

    /// A personal access token of the user `login` (`GET /user` answers that login, and
    /// `/user/packages` lists the user's private packages too).
    pub fn user_token(&self, token: &str, login: &str) {
        self.api
            .tokens
            .lock()
            .unwrap()
            .push((token.to_owned(), Some(login.to_owned())));
    }

    /// The API's budget: `limit` requests per hour, `remaining` of them left, full again
    /// in `reset_in_secs`.
    pub fn rate_limit(&self, limit: u64, remaining: u64, reset_in_secs: u64) {
        *self.api.budget.lock().unwrap() = (limit, remaining, now_secs() + reset_in_secs);
    }

    /// The API's budget left.
    pub fn remaining(&self) -> u64 {
        self.api.budget.lock().unwrap().1
    }

    /// The next API request is answered `status` (`403` or `429`) with `retry-after`
    /// (GitHub's secondary rate limit).
    pub fn secondary_limit(&self, status: u16, retry_after: &str) {
        *self.api.secondary.lock().unwrap() = Some((status, retry_after.to_owned()));
    }

    /// `Link` `next` targets point at `origin` (`http://host:port`) instead of the fake.
    pub fn next_on(&self, origin: &str) {
        *self.api.next_origin.lock().unwrap() = Some(origin.to_owned());
    }

    /// `http://127.0.0.1:<port>/`: the REST API's base (the same server).
    pub fn api_url(&self) -> String {
        format!("http://{}/", self.proxy.host())
    }

    /// `127.0.0.1:<port>`, where the registry API listens (plain HTTP).
    pub fn host(&self) -> String {
        self.proxy.host()
    }

    pub fn seen(&self) -> Vec<Request> {
        self.proxy.seen()
    }
}
