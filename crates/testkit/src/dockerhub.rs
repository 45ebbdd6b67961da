//! A fake of Docker Hub's registry side in front of a real `docker-registry`: every `/v2/`
//! answer carries Hub's rate-limit headers (`ratelimit-limit: 100;w=21600`,
//! `ratelimit-remaining: 76;w=21600`), manifest `GET`s spend the budget (`HEAD`s and blobs
//! do not, as on Hub), a GET with nothing left is Hub's `429 TOOMANYREQUESTS`, and
//! `_catalog` is not served (`404`), as on Hub. The same server plays the Hub API's
//! namespace listing (`GET /v2/namespaces/{namespace}/repositories?page_size=&page=`,
//! JSON with `count`, `next`, `results[].name`; `404` for an unknown namespace), with
//! `POST /v2/users/login` (`{"username","password"}` → `{"token"}`, `401` otherwise) and
//! private repositories listed only with that token as `Authorization: Bearer`. The Hub
//! API has a rate limit of its own, apart from pulls ([`FakeHub::api_limit`]): each answer
//! carries `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` (a unix
//! time), an anonymous caller has a smaller allowance than a logged-in one, and a call
//! beyond it is `429` with `Retry-After` in seconds, as Hub's API reference documents.
//! Everything received is recorded ([`FakeHub::seen`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::proxy::{Action, FaultProxy, Request, Response};
use crate::registry::TestRegistry;

/// Hub's answer to a pull beyond the limit.
pub const TOO_MANY_REQUESTS_BODY: &str = r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit. You may increase the limit by authenticating and upgrading: https://www.docker.com/increase-rate-limit"}]}"#;

#[derive(Debug)]
struct Budget {
    limit: u64,
    window_secs: u64,
    remaining: AtomicU64,
    counted: AtomicU64,
    refused: AtomicU64,
}

impl Budget {
    fn headers(&self, remaining: u64) -> [(String, String); 2] {
        let w = self.window_secs;
        [
            ("ratelimit-limit".into(), format!("{};w={w}", self.limit)),
            ("ratelimit-remaining".into(), format!("{remaining};w={w}")),
        ]
    }
}

/// The Hub API side: namespaces and their repositories, served at
/// `GET /v2/namespaces/{namespace}/repositories?page_size=&page=` with `next` URLs.
#[derive(Debug, Default)]
struct Api {
    namespaces: Mutex<HashMap<String, Vec<String>>>,
    /// Another `scheme://host` for `next` links (a hostile API).
    next_origin: Mutex<Option<String>>,
    /// Docker IDs and their passwords (or tokens), for `POST /v2/users/login`.
    users: Mutex<HashMap<String, String>>,
    /// Session tokens handed out.
    tokens: Mutex<Vec<String>>,
    /// Repositories a namespace shows only to a logged-in caller.
    private: Mutex<HashMap<String, Vec<String>>>,
    /// The API's allowance: (limit, remaining) for anonymous and for logged-in callers.
    limits: Mutex<Option<ApiLimits>>,
}

#[derive(Debug, Clone, Copy)]
struct ApiLimits {
    anonymous: (u64, u64),
    authenticated: (u64, u64),
    /// Calls answered `429`.
    refused: u64,
}

/// When an API allowance resets: a minute ahead, as a unix time.
fn api_reset() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() + 60)
        .unwrap_or(60)
}

impl Api {
    /// `POST /v2/users/login` `{"username", "password"}` → `{"token": "<jwt>"}`.
    fn login(&self, req: &Request) -> Response {
        let json = [("Content-Type", "application/json")];
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
        let (Some(user), Some(password)) = (body["username"].as_str(), body["password"].as_str())
        else {
            return Response::new(
                400,
                &json,
                r#"{"detail":"username and password are required"}"#,
            );
        };
        if self.users.lock().unwrap().get(user).map(String::as_str) != Some(password) {
            return Response::new(
                401,
                &json,
                r#"{"detail":"Incorrect authentication credentials"}"#,
            );
        }
        let token = format!("eyJhbGciOiJIUzI1NiJ9.{}.sig", crate::unique_id());
        self.tokens.lock().unwrap().push(token.clone());
        Response::new(
            200,
            &json,
            serde_json::json!({ "token": token }).to_string(),
        )
    }

    fn logged_in(&self, req: &Request) -> bool {
        req.header("authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
            .is_some_and(|t| self.tokens.lock().unwrap().iter().any(|k| k == t))
    }

    /// Spends one API call of the caller's allowance: its rate-limit headers, or the `429`.
    fn spend(&self, req: &Request) -> Result<Vec<(String, String)>, Response> {
        let logged_in = self.logged_in(req);
        let mut limits = self.limits.lock().unwrap();
        let Some(l) = limits.as_mut() else {
            return Ok(Vec::new());
        };
        let (limit, remaining) = if logged_in {
            &mut l.authenticated
        } else {
            &mut l.anonymous
        };
        let reset = api_reset().to_string();
        let headers = |left: u64| {
            vec![
                ("X-RateLimit-Limit".to_owned(), limit.to_string()),
                ("X-RateLimit-Remaining".to_owned(), left.to_string()),
                ("X-RateLimit-Reset".to_owned(), reset.clone()),
            ]
        };
        if *remaining == 0 {
            let h = headers(0);
            l.refused += 1;
            let mut all: Vec<(&str, &str)> =
                h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            all.push(("Retry-After", "60"));
            all.push(("Content-Type", "application/json"));
            return Err(Response::new(
                429,
                &all,
                r#"{"detail":"Rate limit exceeded"}"#,
            ));
        }
        *remaining -= 1;
        Ok(headers(*remaining))
    }

    fn page(&self, req: &Request, namespace: &str) -> Response {
        let limit_headers = match self.spend(req) {
            Ok(h) => h,
            Err(refused) => return refused,
        };
        let mut resp = self.page_of(req, namespace);
        for (k, v) in &limit_headers {
            resp.set_header(k, v);
        }
        resp
    }

    fn page_of(&self, req: &Request, namespace: &str) -> Response {
        let json = [("Content-Type", "application/json")];
        let Some(mut all) = self.namespaces.lock().unwrap().get(namespace).cloned() else {
            return Response::new(404, &json, r#"{"message":"object not found","errinfo":{}}"#);
        };
        if self.logged_in(req) {
            all.extend(
                self.private
                    .lock()
                    .unwrap()
                    .get(namespace)
                    .cloned()
                    .unwrap_or_default(),
            );
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
        let size: usize = query
            .get("page_size")
            .and_then(|v| v.parse().ok())
            .unwrap_or(10);
        let page: usize = query.get("page").and_then(|v| v.parse().ok()).unwrap_or(1);
        if !(1..=100).contains(&size) || page == 0 {
            return Response::new(400, &json, r#"{"message":"invalid page or page_size"}"#);
        }
        let start = (page - 1) * size;
        let results: Vec<serde_json::Value> = all
            .iter()
            .skip(start)
            .take(size)
            .map(|name| {
                serde_json::json!({
                    "name": name,
                    "namespace": namespace,
                    "repository_type": "image",
                    "status": 1,
                    "is_private": false,
                    "star_count": 0,
                    "pull_count": 0,
                })
            })
            .collect();
        let origin = self
            .next_origin
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| format!("http://{}", req.header("host").unwrap_or("localhost")));
        let next = (start + size < all.len()).then(|| {
            format!(
                "{origin}/v2/namespaces/{namespace}/repositories?page_size={size}&page={}",
                page + 1
            )
        });
        let body = serde_json::json!({
            "count": all.len(),
            "next": next,
            "previous": null,
            "results": results,
        });
        Response::new(200, &json, body.to_string())
    }
}

#[derive(Debug)]
pub struct FakeHub {
    proxy: FaultProxy,
    budget: Arc<Budget>,
    api: Arc<Api>,
}

impl FakeHub {
    /// Hub's registry API in front of `registry`, with `limit` pulls per `window_secs`.
    pub async fn start(registry: &TestRegistry, limit: u64, window_secs: u64) -> Self {
        let budget = Arc::new(Budget {
            limit,
            window_secs,
            remaining: AtomicU64::new(limit),
            counted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        });
        let upstream = format!("127.0.0.1:{}", registry.port())
            .parse()
            .expect("a loopback address");
        let b = budget.clone();
        let api = Arc::new(Api::default());
        let a = api.clone();
        let proxy = FaultProxy::start(Some(upstream), move |req: &Request, _| {
            if req.method == "POST" && req.path() == "/v2/users/login" {
                return Action::Respond(a.login(req));
            }
            if let Some(ns) = req
                .path()
                .strip_prefix("/v2/namespaces/")
                .and_then(|rest| rest.strip_suffix("/repositories"))
            {
                return Action::Respond(a.page(req, ns));
            }
            if !req.path().starts_with("/v2/") {
                return Action::Respond(Response::new(404, &[], "not found"));
            }
            if req.path() == "/v2/_catalog" {
                // Hub has no catalog: its namespaces are listed through the Hub API.
                return Action::Respond(Response::new(
                    404,
                    &[("Content-Type", "application/json")],
                    r#"{"errors":[{"code":"NOT_FOUND","message":"the catalog is not served"}]}"#,
                ));
            }
            let pull = req.method == "GET" && req.path().contains("/manifests/");
            let remaining = if pull {
                let taken = b
                    .remaining
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |r| r.checked_sub(1));
                match taken {
                    Ok(before) => {
                        b.counted.fetch_add(1, Ordering::SeqCst);
                        before - 1
                    }
                    Err(_) => {
                        b.refused.fetch_add(1, Ordering::SeqCst);
                        let [l, r] = b.headers(0);
                        return Action::Respond(Response::new(
                            429,
                            &[
                                ("Content-Type", "application/json"),
                                (&l.0, &l.1),
                                (&r.0, &r.1),
                            ],
                            TOO_MANY_REQUESTS_BODY,
                        ));
                    }
                }
            } else {
                b.remaining.load(Ordering::SeqCst)
            };
            let headers = b.headers(remaining);
            Action::Rewrite(Box::new(move |mut resp: Response| {
                for (k, v) in &headers {
                    resp.set_header(k, v);
                }
                resp
            }))
        })
        .await;
        FakeHub { proxy, budget, api }
    }

    /// Serves `namespace`'s repositories on the Hub API (`/v2/namespaces/{namespace}/repositories`).
    pub fn namespace(&self, namespace: &str, repositories: &[&str]) {
        self.api.namespaces.lock().unwrap().insert(
            namespace.to_owned(),
            repositories.iter().map(|r| (*r).to_owned()).collect(),
        );
    }

    /// A Docker ID that may log in to the Hub API.
    pub fn user(&self, username: &str, password: &str) {
        self.api
            .users
            .lock()
            .unwrap()
            .insert(username.to_owned(), password.to_owned());
    }

    /// Repositories of `namespace` listed only to a logged-in caller.
    pub fn private(&self, namespace: &str, repositories: &[&str]) {
        self.api.private.lock().unwrap().insert(
            namespace.to_owned(),
            repositories.iter().map(|r| (*r).to_owned()).collect(),
        );
    }

    /// The Hub API's allowance of listing calls: `anonymous` for callers that did not log
    /// in, `authenticated` for those that did; each answer says what is left, and a call
    /// with nothing left is `429` with `Retry-After: 60`.
    pub fn api_limit(&self, anonymous: u64, authenticated: u64) {
        *self.api.limits.lock().unwrap() = Some(ApiLimits {
            anonymous: (anonymous, anonymous),
            authenticated: (authenticated, authenticated),
            refused: 0,
        });
    }

    /// Hub API calls answered `429`.
    pub fn api_refused(&self) -> u64 {
        self.api
            .limits
            .lock()
            .unwrap()
            .map(|l| l.refused)
            .unwrap_or(0)
    }

    /// `next` links point at `origin` (`http://host:port`) instead of the fake itself.
    pub fn next_on(&self, origin: &str) {
        *self.api.next_origin.lock().unwrap() = Some(origin.to_owned());
    }

    /// `http://127.0.0.1:<port>/`: the Hub API's base (the same server).
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

    pub fn remaining(&self) -> u64 {
        self.budget.remaining.load(Ordering::SeqCst)
    }

    /// Sets what is left of the window's budget.
    pub fn set_remaining(&self, remaining: u64) {
        self.budget.remaining.store(remaining, Ordering::SeqCst);
    }

    /// Manifest GETs that spent the budget.
    pub fn counted_pulls(&self) -> u64 {
        self.budget.counted.load(Ordering::SeqCst)
    }

    /// Manifest GETs answered `429`.
    pub fn refused_pulls(&self) -> u64 {
        self.budget.refused.load(Ordering::SeqCst)
    }
}
