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
//!
//! GitHub Apps ([`FakeGitHub::app`]): `POST /app/installations/{id}/access_tokens` takes
//! the app's JWT as `Authorization: Bearer`, verified as GitHub does (RS256 against the
//! app's public key, `iss` the App ID, `exp - iat` at most 600 s, not expired, `iat` not in
//! the future; `401` with GitHub's message otherwise) and answers `201`
//! `{"token": "ghs_…", "expires_at", "permissions", "repository_selection"}`, or `404 Not
//! Found` for an installation the app does not have. The tokens live
//! [`FakeGitHub::installation_token_lifetime`] (an hour by default); until then the API
//! takes them as tokens of no user, after it they are `401 Bad credentials`.
//!
//! From the first app on, the registry side asks for a token as ghcr.io does: `/v2/…`
//! without one is `401` with `WWW-Authenticate: Bearer realm="http://<host>/token",
//! service="ghcr.io"`, and `GET /token` exchanges Basic `x-access-token:<installation
//! token>` (an issued, unexpired one) or `<login>:<known token>` for a registry token that
//! lives as long as the installation token (an hour for a static one).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;

use crate::proxy::{Action, FaultProxy, Request, Response};
use crate::registry::TestRegistry;

const DOCS: &str = "https://docs.github.com/rest/packages/packages";
const RATE_LIMIT_DOCS: &str =
    "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api";

/// An owner: whether an organisation, and its packages (name, visibility).
type Owner = (bool, Vec<(String, String)>);

/// A GitHub App installation.
#[derive(Debug, Clone)]
struct Installation {
    app_id: String,
    public_key: rsa::RsaPublicKey,
}

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
    /// Installation id → its app.
    installations: Mutex<HashMap<String, Installation>>,
    /// Installation tokens handed out, and until when they are good.
    issued: Mutex<Vec<(String, SystemTime)>>,
    /// The lifetime of installation tokens handed out from now on.
    lifetime: Mutex<Duration>,
    /// Registry tokens handed out by `/token`, and until when they are good; `Some` once
    /// the registry side asks for them.
    registry_tokens: Mutex<Option<HashMap<String, SystemTime>>>,
}

impl Default for Api {
    fn default() -> Self {
        Api {
            owners: Mutex::default(),
            tokens: Mutex::default(),
            next_origin: Mutex::default(),
            budget: Mutex::new((5000, 5000, now_secs() + 3600)),
            secondary: Mutex::default(),
            installations: Mutex::default(),
            issued: Mutex::default(),
            lifetime: Mutex::new(Duration::from_secs(3600)),
            registry_tokens: Mutex::default(),
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

fn rfc3339(at: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(at).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn registry_error(code: &str, message: &str) -> Response {
    Response::new(
        401,
        &[("Content-Type", "application/json")],
        serde_json::json!({ "errors": [{ "code": code, "message": message }] }).to_string(),
    )
}

impl Api {
    /// Who `token` is: `Some(login)` for a known token (`None` for one of no user, as an
    /// unexpired installation token), `None` for an unknown or expired one.
    fn whose(&self, token: &str) -> Option<Option<String>> {
        if let Some((_, login)) = self.tokens.lock().unwrap().iter().find(|(k, _)| k == token) {
            return Some(login.clone());
        }
        let now = SystemTime::now();
        self.issued
            .lock()
            .unwrap()
            .iter()
            .any(|(t, until)| t == token && now < *until)
            .then_some(None)
    }

    fn caller(&self, req: &Request) -> Caller {
        match req.header("authorization") {
            None => Ok(None),
            Some(a) => match a.strip_prefix("Bearer ") {
                Some(t) => self.whose(t).map(Some).ok_or(()),
                None => Err(()),
            },
        }
    }

    /// `POST /app/installations/{id}/access_tokens`: the app's JWT for an installation
    /// token.
    fn access_token(&self, req: &Request, installation_id: &str) -> Response {
        use rsa::signature::Verifier as _;
        let undecodable = || error(401, "A JSON web token could not be decoded");
        if req.method != "POST" {
            return error(404, "Not Found");
        }
        let Some(jwt) = req
            .header("authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
        else {
            return error(401, "A JSON web token could not be decoded");
        };
        let parts: Vec<&str> = jwt.split('.').collect();
        let [header_b64, claims_b64, signature_b64] = parts[..] else {
            return undecodable();
        };
        let decode = |s: &str| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(s)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        };
        let (Some(header), Some(claims)) = (decode(header_b64), decode(claims_b64)) else {
            return undecodable();
        };
        if header["alg"] != "RS256" {
            return undecodable();
        }
        let iss = match &claims["iss"] {
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::String(s) => s.clone(),
            _ => return error(401, "'Issuer' claim ('iss') must be an Integer"),
        };
        let installation = self
            .installations
            .lock()
            .unwrap()
            .get(installation_id)
            .cloned();
        let apps: Vec<Installation> = self
            .installations
            .lock()
            .unwrap()
            .values()
            .filter(|i| i.app_id == iss)
            .cloned()
            .collect();
        let Some(app) = apps.first() else {
            return error(401, "Integration not found");
        };
        let verifying = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(app.public_key.clone());
        let signed = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(signature_b64)
            .ok()
            .and_then(|sig| rsa::pkcs1v15::Signature::try_from(sig.as_slice()).ok())
            .is_some_and(|sig| {
                verifying
                    .verify(format!("{header_b64}.{claims_b64}").as_bytes(), &sig)
                    .is_ok()
            });
        if !signed {
            return undecodable();
        }
        let (Some(iat), Some(exp)) = (claims["iat"].as_u64(), claims["exp"].as_u64()) else {
            return error(
                401,
                "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued",
            );
        };
        let now = now_secs();
        if iat > now + 5 {
            return error(
                401,
                "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued",
            );
        }
        if exp.saturating_sub(iat) > 600 || exp > now + 600 {
            return error(
                401,
                "'Expiration time' claim ('exp') is too far in the future",
            );
        }
        if exp <= now {
            return error(
                401,
                "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires",
            );
        }
        if installation.is_none_or(|i| i.app_id != iss) {
            return error(404, "Not Found");
        }
        let token = format!("ghs_{}", uuid::Uuid::new_v4().simple());
        let until = SystemTime::now() + *self.lifetime.lock().unwrap();
        self.issued.lock().unwrap().push((token.clone(), until));
        Response::new(
            201,
            &[("Content-Type", "application/json; charset=utf-8")],
            serde_json::json!({
                "token": token,
                "expires_at": rfc3339(until),
                "permissions": { "metadata": "read", "packages": "read" },
                "repository_selection": "all",
            })
            .to_string(),
        )
    }

    /// `GET /token`: ghcr.io's token service, Basic credentials for a registry token.
    fn registry_token(&self, req: &Request) -> Response {
        let refused = || registry_error("UNAUTHORIZED", "authentication required");
        let Some(decoded) = req
            .header("authorization")
            .and_then(|a| a.strip_prefix("Basic "))
            .and_then(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()
            })
            .and_then(|b| String::from_utf8(b).ok())
        else {
            return refused();
        };
        let Some((user, secret)) = decoded.split_once(':') else {
            return refused();
        };
        let static_token = self.tokens.lock().unwrap().iter().any(|(t, _)| t == secret);
        let now = SystemTime::now();
        let until = if static_token {
            now + Duration::from_secs(3600)
        } else if user == "x-access-token"
            && let Some((_, until)) = self
                .issued
                .lock()
                .unwrap()
                .iter()
                .find(|(t, until)| t == secret && now < *until)
        {
            *until
        } else {
            return refused();
        };
        let token = format!("ghcr-{}", uuid::Uuid::new_v4().simple());
        if let Some(tokens) = self.registry_tokens.lock().unwrap().as_mut() {
            tokens.insert(token.clone(), until);
        }
        Response::new(
            200,
            &[("Content-Type", "application/json")],
            serde_json::json!({
                "token": token,
                "expires_in": until.duration_since(now).unwrap_or_default().as_secs().max(1),
            })
            .to_string(),
        )
    }

    /// `/v2/…` once apps exist: a registry token from `/token`, unexpired. `None` passes
    /// the request on to the registry.
    fn registry(&self, req: &Request) -> Option<Response> {
        let tokens = self.registry_tokens.lock().unwrap();
        let tokens = tokens.as_ref()?;
        let given = req
            .header("authorization")
            .and_then(|a| a.strip_prefix("Bearer "));
        let now = SystemTime::now();
        if given.is_some_and(|t| tokens.get(t).is_some_and(|until| now < *until)) {
            return None;
        }
        let host = req.header("host").unwrap_or("localhost");
        let mut challenge = format!("Bearer realm=\"http://{host}/token\",service=\"ghcr.io\"");
        let repository = req.path().strip_prefix("/v2/").and_then(|rest| {
            ["/manifests/", "/blobs/", "/tags/", "/referrers/"]
                .iter()
                .find_map(|m| rest.find(m).map(|at| &rest[..at]))
        });
        if let Some(repository) = repository {
            challenge.push_str(&format!(",scope=\"repository:{repository}:pull\""));
        }
        if given.is_some() {
            challenge.push_str(",error=\"invalid_token\"");
        }
        let mut r = registry_error("UNAUTHORIZED", "authentication required");
        r.set_header("WWW-Authenticate", &challenge);
        Some(r)
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
            if let Some(id) = path
                .strip_prefix("/app/installations/")
                .and_then(|rest| rest.strip_suffix("/access_tokens"))
            {
                return Action::Respond(a.access_token(req, id));
            }
            if path == "/token" {
                return Action::Respond(a.registry_token(req));
            }
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
            if let Some(refused) = a.registry(req) {
                return Action::Respond(refused);
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

    /// A GitHub App (`app_id`, its public key as an SPKI PEM) installed on `owner` as
    /// `installation_id`. From now on the registry side asks for tokens (module docs).
    pub fn app(&self, app_id: &str, public_key_pem: &str, installation_id: &str, owner: &str) {
        use rsa::pkcs8::DecodePublicKey as _;
        let public_key =
            rsa::RsaPublicKey::from_public_key_pem(public_key_pem).expect("an SPKI PEM RSA key");
        tracing::debug!(app_id, installation_id, owner, "fake GitHub App installed");
        self.api.installations.lock().unwrap().insert(
            installation_id.to_owned(),
            Installation {
                app_id: app_id.to_owned(),
                public_key,
            },
        );
        self.api
            .registry_tokens
            .lock()
            .unwrap()
            .get_or_insert_with(HashMap::new);
    }

    /// The lifetime of the installation tokens handed out from now on (an hour by
    /// default), so a test can cross an expiry in seconds.
    pub fn installation_token_lifetime(&self, lifetime: Duration) {
        *self.api.lifetime.lock().unwrap() = lifetime;
    }

    /// The installation tokens handed out so far, oldest first.
    pub fn installation_tokens(&self) -> Vec<String> {
        self.api
            .issued
            .lock()
            .unwrap()
            .iter()
            .map(|(t, _)| t.clone())
            .collect()
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

/// A fresh GitHub App key pair: the private key as GitHub hands it out (PKCS#1,
/// `-----BEGIN RSA PRIVATE KEY-----`) and the public key as an SPKI PEM for
/// [`FakeGitHub::app`].
pub fn app_key() -> (String, String) {
    use rsa::pkcs1::EncodeRsaPrivateKey as _;
    use rsa::pkcs8::DecodePrivateKey as _;
    let (pkcs8, public) = crate::cloud::service_account_key();
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(&pkcs8).expect("a PKCS#8 RSA key");
    let pkcs1 = key
        .to_pkcs1_pem(rsa::pkcs1::LineEnding::LF)
        .expect("PKCS#1 PEM");
    (pkcs1.to_string(), public)
}
