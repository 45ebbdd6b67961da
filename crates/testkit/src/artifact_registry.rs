//! A fake of Google Artifact Registry in front of a real `docker-registry`: `/v2/` is
//! passed through (`_catalog` refused with `403 DENIED` unless [`FakeArtifactRegistry::serve_catalog`]),
//! and the same server plays the Artifact Registry REST API's package listing,
//! `GET /v1/projects/{project}/locations/{location}/repositories/{repository}/packages?pageSize=&pageToken=`,
//! answering `{"packages":[{"name":"projects/…/packages/{image, URL-encoded}","createTime","updateTime"}],"nextPageToken"}`
//! from the repositories that really exist in the registry under the repository's prefix
//! (the registry's own `_catalog`, read per request). Errors are Google's JSON
//! (`{"error":{"code","message","status"}}`): `401 UNAUTHENTICATED` without a bearer token
//! or with one it does not know, `403 PERMISSION_DENIED` for a token not granted the
//! repository, `404 NOT_FOUND` for an unknown repository or path, `400 INVALID_ARGUMENT`
//! for a bad `pageSize` or `pageToken`. Every request is recorded ([`FakeArtifactRegistry::seen`])
//! and the API requests counted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;

use crate::proxy::{Action, FaultProxy, Request, Response};
use crate::registry::TestRegistry;

/// A repository the API knows: its registry prefix and the tokens granted to read it.
#[derive(Debug, Clone)]
struct Repo {
    prefix: String,
    readers: Vec<String>,
}

#[derive(Debug, Default)]
struct Api {
    /// `projects/{p}/locations/{l}/repositories/{r}` → the repository.
    repos: Mutex<HashMap<String, Repo>>,
    tokens: Mutex<Vec<String>>,
    requests: AtomicUsize,
    serve_catalog: Mutex<bool>,
    /// The n-th API request (from 0) answered with this instead.
    faults: Mutex<HashMap<usize, Response>>,
    /// Every page's `nextPageToken` is this one (an API that loops).
    stuck_token: Mutex<Option<String>>,
    /// Extra package names put on the first page (hostile entries).
    extra: Mutex<Vec<String>>,
    /// `Authorization` of the registry (basic), for reading its catalog.
    registry_auth: Option<String>,
}

fn google_error(code: u16, status: &str, message: &str) -> Response {
    Response::new(
        code,
        &[("Content-Type", "application/json; charset=UTF-8")],
        serde_json::json!({ "error": { "code": code, "message": message, "status": status } })
            .to_string(),
    )
}

fn encode_id(image: &str) -> String {
    image.replace('%', "%25").replace('/', "%2F")
}

impl Api {
    fn packages(&self, req: &Request, resource: &str) -> Action {
        let n = self.requests.fetch_add(1, Ordering::SeqCst);
        if let Some(r) = self.faults.lock().unwrap().remove(&n) {
            return Action::Respond(r);
        }
        let token = match req.header("authorization") {
            None => {
                return Action::Respond(google_error(
                    401,
                    "UNAUTHENTICATED",
                    "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
                ));
            }
            Some(a) => match a.strip_prefix("Bearer ") {
                Some(t) if self.tokens.lock().unwrap().iter().any(|k| k == t) => t.to_owned(),
                _ => {
                    return Action::Respond(google_error(
                        401,
                        "UNAUTHENTICATED",
                        "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
                    ));
                }
            },
        };
        let Some(repo) = self.repos.lock().unwrap().get(resource).cloned() else {
            return Action::Respond(google_error(
                404,
                "NOT_FOUND",
                "Requested entity was not found.",
            ));
        };
        if !repo.readers.contains(&token) {
            return Action::Respond(google_error(
                403,
                "PERMISSION_DENIED",
                &format!(
                    "Permission 'artifactregistry.packages.list' denied on resource '//artifactregistry.googleapis.com/{resource}' (or it may not exist)."
                ),
            ));
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
        let page_size: i64 = match query.get("pageSize").map(|v| v.parse()) {
            None => 100,
            Some(Ok(n)) if n >= 0 => n,
            Some(_) => {
                return Action::Respond(google_error(
                    400,
                    "INVALID_ARGUMENT",
                    "Invalid value for page_size.",
                ));
            }
        };
        // Google coerces page sizes: 0 is the default, more than 1000 is 1000.
        let page_size = match page_size {
            0 => 100,
            n => n.min(1000) as usize,
        };
        let start = match query.get("pageToken") {
            None => 0,
            Some(t) => match decode_token(t) {
                Some(s) => s,
                None => {
                    return Action::Respond(google_error(
                        400,
                        "INVALID_ARGUMENT",
                        "Invalid page token.",
                    ));
                }
            },
        };
        let stuck = self.stuck_token.lock().unwrap().clone();
        let extra = std::mem::take(&mut *self.extra.lock().unwrap());
        let resource = resource.to_owned();
        let mut catalog = Request {
            method: "GET".into(),
            target: "/v2/_catalog?n=1000".into(),
            headers: vec![(
                "Host".into(),
                req.header("host").unwrap_or("localhost").into(),
            )],
            body: Vec::new(),
        };
        if let Some(a) = &self.registry_auth {
            catalog.headers.push(("Authorization".into(), a.clone()));
        }
        Action::ForwardAs(
            catalog,
            Box::new(move |resp| {
                if resp.status != 200 {
                    return google_error(500, "INTERNAL", "Internal error encountered.");
                }
                let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap_or_default();
                let all: Vec<String> =
                    serde_json::from_value(v["repositories"].clone()).unwrap_or_default();
                let under = format!("{}/", repo.prefix);
                let mut images: Vec<String> = all
                    .iter()
                    .filter_map(|r| r.strip_prefix(&under))
                    .map(str::to_owned)
                    .collect();
                images.sort();
                let total = images.len();
                let mut packages: Vec<serde_json::Value> = images
                    .iter()
                    .skip(start)
                    .take(page_size)
                    .map(|image| {
                        serde_json::json!({
                            "name": format!("{resource}/packages/{}", encode_id(image)),
                            "createTime": "2026-11-02T09:14:02.123456Z",
                            "updateTime": "2026-11-30T17:40:11.654321Z",
                        })
                    })
                    .collect();
                if start == 0 {
                    packages.extend(extra.into_iter().map(|n| serde_json::json!({ "name": n })));
                }
                let mut body = serde_json::json!({ "packages": packages });
                if let Some(t) = stuck {
                    body["nextPageToken"] = t.into();
                } else if start + page_size < total {
                    body["nextPageToken"] = encode_token(start + page_size).into();
                }
                Response::new(
                    200,
                    &[("Content-Type", "application/json; charset=UTF-8")],
                    body.to_string(),
                )
            }),
        )
    }
}

/// Google's page tokens are opaque; this one is base64 of the offset.
fn encode_token(offset: usize) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("offset:{offset}"))
}

fn decode_token(token: &str) -> Option<usize> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    String::from_utf8(raw)
        .ok()?
        .strip_prefix("offset:")?
        .parse()
        .ok()
}

#[derive(Debug)]
pub struct FakeArtifactRegistry {
    proxy: FaultProxy,
    api: Arc<Api>,
}

impl FakeArtifactRegistry {
    /// The registry API in front of `registry`, and the Artifact Registry REST API.
    pub async fn start(registry: &TestRegistry) -> Self {
        let upstream = format!("127.0.0.1:{}", registry.port())
            .parse()
            .expect("a loopback address");
        let registry_auth = registry.credentials().map(|(u, p)| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        });
        let api = Arc::new(Api {
            registry_auth,
            ..Api::default()
        });
        let a = api.clone();
        let proxy = FaultProxy::start(Some(upstream), move |req: &Request, _| {
            let path = req.path();
            if let Some(resource) = path
                .strip_prefix("/v1/")
                .and_then(|p| p.strip_suffix("/packages"))
            {
                if req.method != "GET" {
                    return Action::Respond(google_error(
                        405,
                        "METHOD_NOT_ALLOWED",
                        "Method not allowed.",
                    ));
                }
                return a.packages(req, resource);
            }
            if !path.starts_with("/v2/") {
                return Action::Respond(google_error(
                    404,
                    "NOT_FOUND",
                    "Requested entity was not found.",
                ));
            }
            if path == "/v2/_catalog" && !*a.serve_catalog.lock().unwrap() {
                return Action::Respond(Response::new(
                    403,
                    &[("Content-Type", "application/json")],
                    r#"{"errors":[{"code":"DENIED","message":"Permission \"artifactregistry.repositories.list\" denied on resource"}]}"#,
                ));
            }
            Action::Forward
        })
        .await;
        FakeArtifactRegistry { proxy, api }
    }

    /// `projects/{project}/locations/{location}/repositories/{repository}`, whose
    /// packages are the registry's repositories under `prefix/` (`my-project/images`
    /// for `*-docker.pkg.dev`, `my-project` for `gcr.io`), readable with `tokens`.
    pub fn repository(
        &self,
        project: &str,
        location: &str,
        repository: &str,
        prefix: &str,
        tokens: &[&str],
    ) {
        for t in tokens {
            self.token(t);
        }
        self.api.repos.lock().unwrap().insert(
            format!("projects/{project}/locations/{location}/repositories/{repository}"),
            Repo {
                prefix: prefix.to_owned(),
                readers: tokens.iter().map(|t| (*t).to_owned()).collect(),
            },
        );
    }

    /// An access token the API accepts (granted no repository by itself).
    pub fn token(&self, token: &str) {
        let mut tokens = self.api.tokens.lock().unwrap();
        if !tokens.iter().any(|t| t == token) {
            tokens.push(token.to_owned());
        }
    }

    /// Serve the registry's own `_catalog` instead of refusing it.
    pub fn serve_catalog(&self) {
        *self.api.serve_catalog.lock().unwrap() = true;
    }

    /// The `n`-th API request (from 0, counted by [`Self::api_requests`]) is answered
    /// with `response`.
    pub fn fault(&self, n: usize, response: Response) {
        self.api.faults.lock().unwrap().insert(n, response);
    }

    /// Every page answers the first page's `nextPageToken` (an API that loops).
    pub fn stuck_token(&self) {
        *self.api.stuck_token.lock().unwrap() = Some(encode_token(0));
    }

    /// Package names added to the next first page as they are (hostile entries).
    pub fn extra_packages(&self, names: &[&str]) {
        self.api
            .extra
            .lock()
            .unwrap()
            .extend(names.iter().map(|n| (*n).to_owned()));
    }

    /// API requests received so far.
    pub fn api_requests(&self) -> usize {
        self.api.requests.load(Ordering::SeqCst)
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

/// A Google error body, for [`FakeArtifactRegistry::fault`].
pub fn error_response(code: u16, status: &str, message: &str) -> Response {
    google_error(code, status, message)
}
