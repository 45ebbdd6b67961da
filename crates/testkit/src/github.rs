//! A fake of GitHub Container Registry in front of a real `docker-registry`: `/v2/` is
//! passed through (but `_catalog` is `404`, as ghcr.io serves none), and the same server
//! plays GitHub's REST API for container packages:
//! `GET /orgs/{owner}/packages?package_type=container&per_page=&page=` and
//! `GET /users/{owner}/packages?…`, JSON arrays of `{"name", "visibility", …}`, paged by
//! `Link: <…>; rel="next"`. Errors are GitHub's JSON (`{"message", "documentation_url"}`):
//! `404` for an unknown owner (and for `/orgs/` of a user), `401 Bad credentials` for a
//! bearer token it does not know. Private packages are listed only with a known token as
//! `Authorization: Bearer`. Everything received is recorded ([`FakeGitHub::seen`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::proxy::{Action, FaultProxy, Request, Response};
use crate::registry::TestRegistry;

const DOCS: &str = "https://docs.github.com/rest/packages/packages";

/// An owner: whether an organisation, and its packages (name, visibility).
type Owner = (bool, Vec<(String, String)>);

#[derive(Debug, Default)]
struct Api {
    /// Owner → is an organisation, and its packages (name, visibility).
    owners: Mutex<HashMap<String, Owner>>,
    tokens: Mutex<Vec<String>>,
    next_origin: Mutex<Option<String>>,
}

fn error(status: u16, message: &str) -> Response {
    Response::new(
        status,
        &[("Content-Type", "application/json; charset=utf-8")],
        serde_json::json!({ "message": message, "documentation_url": DOCS }).to_string(),
    )
}

impl Api {
    fn packages(&self, req: &Request, org: bool, owner: &str) -> Response {
        let authorised = match req.header("authorization") {
            None => false,
            Some(a) => match a.strip_prefix("Bearer ") {
                Some(t) if self.tokens.lock().unwrap().iter().any(|k| k == t) => true,
                _ => return error(401, "Bad credentials"),
            },
        };
        let Some((is_org, all)) = self.owners.lock().unwrap().get(owner).cloned() else {
            return error(404, "Not Found");
        };
        if is_org != org {
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
        let visible: Vec<_> = all
            .into_iter()
            .filter(|(_, v)| authorised || v == "public")
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
                    "url": format!("https://api.github.com/orgs/{owner}/packages/container/{}", name.replace('/', "%2F")),
                })
            })
            .collect();
        let origin = self
            .next_origin
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| format!("http://{}", req.header("host").unwrap_or("localhost")));
        let kind = if org { "orgs" } else { "users" };
        let mut headers = vec![(
            "Content-Type".to_owned(),
            "application/json; charset=utf-8".to_owned(),
        )];
        if start + per_page < visible.len() {
            headers.push((
                "Link".to_owned(),
                format!(
                    "<{origin}/{kind}/{owner}/packages?package_type=container&per_page={per_page}&page={}>; rel=\"next\", <{origin}/{kind}/{owner}/packages?package_type=container&per_page={per_page}&page=1>; rel=\"first\"",
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
            for (prefix, org) in [("/orgs/", true), ("/users/", false)] {
                if let Some(owner) = path
                    .strip_prefix(prefix)
                    .and_then(|rest| rest.strip_suffix("/packages"))
                {
                    return Action::Respond(a.packages(req, org, owner));
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

    /// A personal access token the API accepts (it then lists private packages too).
    pub fn token(&self, token: &str) {
        self.api.tokens.lock().unwrap().push(token.to_owned());
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
