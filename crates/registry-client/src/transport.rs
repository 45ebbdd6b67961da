//! The one path every request takes: guard, budget, concurrency cap, timeout, redirects,
//! retries, auth. Nothing else in the crate talks to reqwest.
//!
//! Redirects are followed here rather than by reqwest, because the rule is ours: the
//! `Authorization` header only ever goes to the origin it was issued for (the registry, or
//! the token realm), so a blob redirect to a storage host or anywhere else never carries
//! it, and every hop passes the network guard again. Auth is here too because a token
//! request is just another guarded, counted, rate-limited request.

use parking_lot::RwLock;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use rand::Rng as _;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret as _;
use tokio::sync::Semaphore;
use url::{Origin, Url};

use crate::auth::{
    CREDENTIAL_REFRESH_MARGIN, CachedToken, Challenge, CredentialProvider, Credentials,
    IssuedToken, Scope, TokenCache, TokenResponse, parse_challenges,
};
use crate::config::RegistryConfig;
use crate::error::{Error, Result};
use crate::guard::{GuardedResolver, Proxies, ResolveError};

/// Error bodies and token answers are small; more is not read.
const SMALL_BODY: u64 = 64 * 1024;

/// How the registry asked us to authenticate, learnt from its first challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AuthMode {
    Unknown,
    Basic,
    Bearer { realm: Url, service: Option<String> },
}

/// An `Authorization` value and the only origin it may be sent to.
#[derive(Debug, Clone)]
pub(crate) struct Authz {
    origin: Origin,
    value: HeaderValue,
    /// Identifies the cached token it came from, so a 401 only evicts that token.
    token_id: Option<u64>,
}

impl Authz {
    /// `Authorization: Bearer <token>` for `origin` only (a vendor API's session token).
    pub(crate) fn bearer_for(origin: Origin, token: &str) -> Result<Self> {
        Ok(Authz {
            origin,
            value: sensitive(format!("Bearer {token}"))?,
            token_id: None,
        })
    }

    /// `Authorization: Basic …` for `origin` only (Harbor's API on the registry's host).
    pub(crate) fn basic_for(origin: Origin, username: &str, password: &str) -> Result<Self> {
        Ok(Authz {
            origin,
            value: basic(username, password)?,
            token_id: None,
        })
    }
}

#[derive(Debug)]
pub(crate) struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The URL that answered, after redirects.
    pub url: Url,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub(crate) fn content_type(&self) -> Option<&str> {
        self.header("content-type")
            .map(|ct| ct.split(';').next().unwrap_or_default().trim())
    }

    /// The error this reply stands for when its status is not a success.
    pub(crate) fn status_error(&self) -> Error {
        let url = self.url.to_string();
        let reason = registry_error_message(&self.body)
            .unwrap_or_else(|| format!("answered {}", self.status));
        match self.status.as_u16() {
            401 => Error::Unauthorized { url, reason },
            403 => Error::Forbidden { url, reason },
            404 => Error::NotFound { url },
            429 => Error::RateLimited {
                url,
                retry_after: None,
            },
            s if s >= 500 => Error::Server { url, status: s },
            _ => Error::Protocol { url, reason },
        }
    }
}

/// `{"errors":[{"code":"…","message":"…"}]}` → `CODE: message`.
fn registry_error_message(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        code: Option<String>,
        message: Option<String>,
    }
    let errors: Errors = serde_json::from_slice(body).ok()?;
    let parts: Vec<String> = errors
        .errors
        .into_iter()
        .map(|e| match (e.code, e.message) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (c, m) => c.or(m).unwrap_or_default(),
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// Counters of what the client has done, for sync reports and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RequestStats {
    /// Every HTTP request sent: redirect hops, retries and token requests included.
    pub requests: u64,
    /// Requests to a token realm.
    pub token_requests: u64,
    /// `429` answers received.
    pub rate_limited: u64,
    /// Retries after a 5xx, a dropped connection or a 429.
    pub retries: u64,
}

pub(crate) struct Transport {
    pub(crate) config: RegistryConfig,
    pub(crate) base: Url,
    http: reqwest::Client,
    /// A proxy may resolve the targets, so the guard checks them before each request.
    proxied: bool,
    /// A registry's own proxy, whose address the guard checks before each request.
    guarded_proxy: Option<Url>,
    permits: Semaphore,
    requests: AtomicU64,
    token_requests: AtomicU64,
    rate_limited: AtomicU64,
    retries: AtomicU64,
    pub(crate) provider: Arc<dyn CredentialProvider>,
    credentials: tokio::sync::Mutex<Option<CachedCredentials>>,
    mode: RwLock<AuthMode>,
    tokens: TokenCache,
    token_ids: AtomicU64,
    /// Until when each host (`host:port`) asked us to wait (`Retry-After`): every request
    /// to that host waits, not only the one that was told.
    gates: parking_lot::Mutex<std::collections::HashMap<String, Instant>>,
    /// The attributes of this client's metrics.
    metrics: crate::metrics::Target,
    /// The registry's announced budget and the pacing of counted GETs.
    pacer: parking_lot::Mutex<crate::ratelimit::Pacer>,
    /// Headers every request carries (a vendor API's version header); never secrets.
    extra_headers: HeaderMap,
}

struct CachedCredentials {
    credentials: Credentials,
    refresh_at: Option<SystemTime>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("registry", &self.config.url.to_string())
            .field("mode", &*self.mode.read())
            .field("tokens", &self.tokens)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

enum Attempt {
    Done(Reply),
    Retry(Error),
}

impl Transport {
    pub(crate) fn new(
        config: RegistryConfig,
        provider: Arc<dyn CredentialProvider>,
    ) -> Result<Self> {
        let guarded_proxy = match (&config.proxy, config.guard_proxy) {
            (Some(proxy), true) => Some(guarded_proxy_url(proxy)?),
            _ => None,
        };
        let proxies = if guarded_proxy.is_some() {
            Proxies::guarded()
        } else {
            Proxies::detect(config.proxy.as_deref())
        };
        let proxied = proxies.active();
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(GuardedResolver::new(
                config.guard.clone(),
                proxies,
            )))
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .user_agent(config.user_agent.clone())
            .https_only(!config.url.insecure());
        if let Some(pem) = &config.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .map_err(|e| Error::Config(format!("the custom CA is not PEM: {e}")))?;
            if certs.is_empty() {
                return Err(Error::Config("the custom CA holds no certificate".into()));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some(proxy) = &config.proxy {
            let mut proxy = reqwest::Proxy::all(proxy)
                .map_err(|e| Error::Config(format!("the proxy URL is not usable: {e}")))?;
            if !config.no_proxy.is_empty() {
                proxy = proxy.no_proxy(reqwest::NoProxy::from_string(&config.no_proxy.join(",")));
            }
            builder = builder.proxy(proxy);
        }
        let http = builder
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Transport {
            base: config.url.base(),
            metrics: crate::metrics::Target::new(config.registry_id.as_deref(), config.url.host()),
            permits: Semaphore::new(config.max_concurrency.max(1)),
            config,
            http,
            proxied,
            guarded_proxy,
            requests: AtomicU64::new(0),
            token_requests: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            provider,
            credentials: tokio::sync::Mutex::new(None),
            mode: RwLock::new(AuthMode::Unknown),
            tokens: TokenCache::default(),
            token_ids: AtomicU64::new(1),
            gates: parking_lot::Mutex::new(std::collections::HashMap::new()),
            pacer: parking_lot::Mutex::new(crate::ratelimit::Pacer::default()),
            extra_headers: HeaderMap::new(),
        })
    }

    /// Every request also carries `headers` (not secrets: they go wherever requests go).
    pub(crate) fn with_headers(mut self, headers: HeaderMap) -> Self {
        self.extra_headers = headers;
        self
    }

    pub(crate) fn stats(&self) -> RequestStats {
        RequestStats {
            requests: self.requests.load(Ordering::Relaxed),
            token_requests: self.token_requests.load(Ordering::Relaxed),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
        }
    }

    /// The budget the registry announced last (`ratelimit-limit` / `ratelimit-remaining`).
    pub(crate) fn rate_limit(&self) -> Option<crate::ratelimit::RateLimit> {
        self.pacer.lock().last()
    }

    /// A manifest GET to the registry itself: what a pull budget counts.
    fn counted(&self, method: &Method, url: &Url) -> bool {
        *method == Method::GET
            && url.origin() == self.base.origin()
            && url.path().contains("/manifests/")
    }

    /// Waits for a counted GET's slot, or refuses it (see [`crate::ratelimit`]).
    async fn pace(&self, url: &Url) -> Result<()> {
        let pace = self.pacer.lock().reserve(
            self.config.rate_limit_reserve_percent,
            self.config.retry.max_retry_after,
            Instant::now(),
        );
        match pace {
            crate::ratelimit::Pace::Go => Ok(()),
            crate::ratelimit::Pace::Wait(wait) => {
                tracing::debug!(%url, wait_ms = wait.as_millis() as u64, "pull budget low; pacing");
                tokio::time::sleep(wait).await;
                Ok(())
            }
            crate::ratelimit::Pace::Refuse(wait) => {
                tracing::info!(%url, wait_ms = wait.as_millis() as u64, "pull budget spent; not sending");
                Err(Error::RateLimited {
                    url: url.to_string(),
                    retry_after: Some(wait),
                })
            }
        }
    }

    pub(crate) fn url(&self, path: &str) -> Url {
        self.base.join(path).expect("API paths are relative URLs")
    }

    pub(crate) fn mode(&self) -> AuthMode {
        self.mode.read().clone()
    }

    /// One authenticated request. A 401 to a request without credentials teaches the
    /// registry's scheme; a 401 to one with credentials (a token that expired mid-scan) gets
    /// exactly one new attempt with fresh ones.
    pub(crate) async fn execute(
        &self,
        method: Method,
        url: Url,
        scope: &Scope,
        accept: Option<&str>,
        max_body: u64,
    ) -> Result<Reply> {
        let mut challenged = false;
        let mut reauthenticated = false;
        let mut reexchanged = false;
        loop {
            let authz = self.authorization(scope).await?;
            let reply = self
                .send(
                    method.clone(),
                    url.clone(),
                    authz.as_ref(),
                    accept,
                    max_body,
                )
                .await?;
            if reply.status != StatusCode::UNAUTHORIZED {
                return Ok(reply);
            }
            let challenges = challenges_of(&reply.headers);
            let spent = match authz {
                Some(_) => std::mem::replace(&mut reauthenticated, true),
                None => std::mem::replace(&mut challenged, true),
            };
            if !spent && self.learn(scope, &challenges, authz.as_ref()).await? {
                continue;
            }
            let insufficient_scope = challenges
                .iter()
                .any(|c| c.param("error") == Some("insufficient_scope"));
            if authz.is_some() && !reexchanged && !insufficient_scope && self.reexchange().await {
                // Exchanged credentials (ECR, ACR, Artifact Registry) refused: revoked or
                // rotated early. Exchange them again, once, before failing.
                reexchanged = true;
                continue;
            }
            return Err(unauthorized(&reply, &challenges, authz.is_some()));
        }
    }

    /// Drops credentials a provider exchanged (and the tokens made from them), so the next
    /// request exchanges again; false for static credentials, which a retry cannot change.
    async fn reexchange(&self) -> bool {
        let mut cached = self.credentials.lock().await;
        if cached.as_ref().is_none_or(|c| c.refresh_at.is_none()) {
            return false;
        }
        *cached = None;
        self.provider.invalidate().await;
        self.tokens.clear();
        tracing::debug!(registry = %self.config.url, "exchanged credentials refused; exchanging again");
        true
    }

    /// Takes in a 401's challenges; true when a new attempt can succeed.
    pub(crate) async fn learn(
        &self,
        scope: &Scope,
        challenges: &[Challenge],
        sent: Option<&Authz>,
    ) -> Result<bool> {
        let credentials = self.credentials().await?;
        if matches!(credentials, Credentials::Bearer(_)) {
            return Ok(false);
        }
        if let Some(bearer) = challenges
            .iter()
            .find(|c| c.scheme == "bearer" && c.param("realm").is_some())
        {
            if sent.is_some() && bearer.param("error") == Some("insufficient_scope") {
                return Ok(false);
            }
            let realm_param = bearer.param("realm").unwrap_or_default();
            let realm = self.base.join(realm_param).map_err(|e| {
                Error::protocol(&self.base, format!("token realm `{realm_param}`: {e}"))
            })?;
            let mode = AuthMode::Bearer {
                realm,
                service: bearer.param("service").map(str::to_owned),
            };
            *self.mode.write() = mode;
            if let Some(id) = sent.and_then(|a| a.token_id) {
                let slot = self.tokens.slot(scope);
                let mut token = slot.lock().await;
                if token.as_ref().is_some_and(|t| t.id == id) {
                    *token = None;
                }
            }
            return Ok(true);
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            *self.mode.write() = AuthMode::Basic;
            return Ok(matches!(credentials, Credentials::Basic { .. }) && sent.is_none());
        }
        Ok(false)
    }

    /// The `Authorization` for a request in `scope`, fetching a token when needed.
    async fn authorization(&self, scope: &Scope) -> Result<Option<Authz>> {
        let credentials = self.credentials().await?;
        let origin = self.base.origin();
        match (&credentials, self.mode()) {
            (Credentials::Bearer(token), _) => Ok(Some(Authz {
                origin,
                value: sensitive(format!("Bearer {}", token.expose_secret()))?,
                token_id: None,
            })),
            (_, AuthMode::Unknown) => Ok(None),
            (Credentials::Basic { username, password }, AuthMode::Basic) => Ok(Some(Authz {
                origin,
                value: basic(username, password.expose_secret())?,
                token_id: None,
            })),
            (_, AuthMode::Basic) => Ok(None),
            (_, AuthMode::Bearer { realm, service }) => {
                let slot = self.tokens.slot(scope);
                let mut cached = slot.lock().await;
                if let Some(token) = cached.as_ref().filter(|t| t.refresh_at > Instant::now()) {
                    return Ok(Some(Authz {
                        origin,
                        value: token.value.clone(),
                        token_id: Some(token.id),
                    }));
                }
                let issued = self
                    .fetch_token(scope, &realm, service.as_deref(), &credentials)
                    .await?;
                let token = CachedToken {
                    id: self.token_ids.fetch_add(1, Ordering::Relaxed),
                    value: sensitive(format!("Bearer {}", issued.token.expose_secret()))?,
                    refresh_at: issued.refresh_at,
                };
                let authz = Authz {
                    origin,
                    value: token.value.clone(),
                    token_id: Some(token.id),
                };
                *cached = Some(token);
                Ok(Some(authz))
            }
        }
    }

    /// The token protocol: `GET realm?service=…&scope=…`, with the credentials only when the
    /// realm may see them (HTTPS, or the insecure registry's own host over HTTP).
    async fn fetch_token(
        &self,
        scope: &Scope,
        realm: &Url,
        service: Option<&str>,
        credentials: &Credentials,
    ) -> Result<IssuedToken> {
        let mut url = realm.clone();
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = service {
                query.append_pair("service", service);
            }
            if let Some(scope) = scope.as_param() {
                query.append_pair("scope", &scope);
            }
        }
        let authz = match credentials {
            Credentials::Basic { username, password } => {
                if !crate::auth::realm_host_allowed(
                    self.config.url.host(),
                    realm,
                    &self.config.auth_hosts,
                ) {
                    return Err(Error::RealmNotAllowed {
                        realm: realm.to_string(),
                        registry: self.config.url.host().to_owned(),
                    });
                }
                if !self.realm_may_receive_credentials(realm) {
                    return Err(Error::Unauthorized {
                        url: realm.to_string(),
                        reason: "refusing to send credentials to a token realm that is neither \
                                 HTTPS nor the insecure registry's own host"
                            .into(),
                    });
                }
                Some(Authz {
                    origin: realm.origin(),
                    value: basic(username, password.expose_secret())?,
                    token_id: None,
                })
            }
            _ => None,
        };
        self.token_requests.fetch_add(1, Ordering::Relaxed);
        let reply = self
            .send(
                Method::GET,
                url,
                authz.as_ref(),
                Some("application/json"),
                SMALL_BODY,
            )
            .await?;
        match reply.status.as_u16() {
            200..=299 => {}
            400 | 401 => {
                return Err(Error::Unauthorized {
                    url: realm.to_string(),
                    reason: "the token endpoint refused the credentials".into(),
                });
            }
            _ => return Err(reply.status_error()),
        }
        serde_json::from_slice::<TokenResponse>(&reply.body)
            .ok()
            .and_then(TokenResponse::into_issued)
            .ok_or_else(|| Error::protocol(realm, "the token endpoint's answer holds no token"))
    }

    /// Plain HTTP only for an insecure registry, and only to its own host or a host its
    /// configuration lists in `auth_hosts` (never a built-in token host).
    fn realm_may_receive_credentials(&self, realm: &Url) -> bool {
        match realm.scheme() {
            "https" => true,
            "http" => {
                self.config.url.insecure()
                    && (realm.host_str() == self.base.host_str()
                        || realm.host_str().is_some_and(|h| {
                            self.config
                                .auth_hosts
                                .iter()
                                .any(|a| a.trim_end_matches('.').eq_ignore_ascii_case(h))
                        }))
            }
            _ => false,
        }
    }

    async fn credentials(&self) -> Result<Credentials> {
        let mut cached = self.credentials.lock().await;
        if let Some(c) = cached.as_ref()
            && c.refresh_at.is_none_or(|at| SystemTime::now() < at)
        {
            return Ok(c.credentials.clone());
        }
        let provided = self.provider.credentials().await?;
        if cached.is_some() {
            self.tokens.clear();
        }
        let refresh_at = provided.expires_at.map(|expires| {
            let lifetime = expires
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            expires
                .checked_sub((lifetime / 4).min(CREDENTIAL_REFRESH_MARGIN))
                .unwrap_or(expires)
        });
        *cached = Some(CachedCredentials {
            credentials: provided.credentials.clone(),
            refresh_at,
        });
        Ok(provided.credentials)
    }

    /// A request with retries: a 429 (or a 503 with `Retry-After`) closes the host's gate
    /// for the time asked (every request to it waits, see [`Self::pass_gate`]), up to the
    /// cap; beyond the cap the request fails `rate_limited` at once. 5xx and dropped
    /// connections back off with jitter. All bounded by `max_retries`.
    pub(crate) async fn send(
        &self,
        method: Method,
        url: Url,
        authz: Option<&Authz>,
        accept: Option<&str>,
        max_body: u64,
    ) -> Result<Reply> {
        let policy = &self.config.retry;
        let mut attempt = 0;
        loop {
            let outcome = self
                .send_once(method.clone(), url.clone(), authz, accept, max_body)
                .await?;
            let (error, gated) = match outcome {
                Attempt::Retry(error) => (error, false),
                Attempt::Done(reply) if reply.status == StatusCode::TOO_MANY_REQUESTS => {
                    self.rate_limited.fetch_add(1, Ordering::Relaxed);
                    let retry_after = reply
                        .header("retry-after")
                        .and_then(|v| parse_retry_after(v, SystemTime::now()));
                    let wait = retry_after
                        .unwrap_or_else(|| backoff(policy.base_delay, policy.max_delay, attempt));
                    self.metrics.rate_limited(429, wait);
                    self.close_gate(&reply.url, wait);
                    let error = Error::RateLimited {
                        url: reply.url.to_string(),
                        retry_after,
                    };
                    if wait > policy.max_retry_after {
                        return Err(error);
                    }
                    (error, true)
                }
                Attempt::Done(reply) if is_transient(reply.status) => {
                    let retry_after = reply
                        .header("retry-after")
                        .and_then(|v| parse_retry_after(v, SystemTime::now()));
                    match retry_after {
                        Some(wait) => {
                            self.metrics.rate_limited(reply.status.as_u16(), wait);
                            self.close_gate(&reply.url, wait);
                            if wait > policy.max_retry_after {
                                return Err(Error::RateLimited {
                                    url: reply.url.to_string(),
                                    retry_after: Some(wait),
                                });
                            }
                            (reply.status_error(), true)
                        }
                        None => (reply.status_error(), false),
                    }
                }
                Attempt::Done(reply) => return Ok(reply),
            };
            if attempt >= policy.max_retries {
                return Err(error);
            }
            tracing::debug!(%error, gated, attempt, "retrying");
            self.retries.fetch_add(1, Ordering::Relaxed);
            if !gated {
                tokio::time::sleep(backoff(policy.base_delay, policy.max_delay, attempt)).await;
            }
            attempt += 1;
        }
    }

    /// `host:port` of a URL: what a `Retry-After` applies to.
    fn gate_key(url: &Url) -> String {
        format!(
            "{}:{}",
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or_default()
        )
    }

    /// Makes every request to `url`'s host wait `wait` (at most a day: a hostile value must
    /// not overflow `Instant`); a gate already closed for longer stays so.
    fn close_gate(&self, url: &Url, wait: Duration) {
        let now = Instant::now();
        let until = now
            .checked_add(wait.min(Duration::from_secs(24 * 3600)))
            .unwrap_or(now);
        let mut gates = self.gates.lock();
        let gate = gates.entry(Self::gate_key(url)).or_insert(until);
        if *gate < until {
            *gate = until;
        }
        tracing::info!(host = %Self::gate_key(url), wait_ms = wait.as_millis() as u64, "registry asked us to wait; pausing every request to it");
    }

    /// Waits while `url`'s host has asked us to wait; fails `rate_limited` at once (no
    /// request) when the wait left is beyond the cap.
    async fn pass_gate(&self, url: &Url) -> Result<()> {
        let key = Self::gate_key(url);
        loop {
            let until = self.gates.lock().get(&key).copied();
            let now = Instant::now();
            let Some(until) = until.filter(|u| *u > now) else {
                return Ok(());
            };
            let left = until - now;
            if left > self.config.retry.max_retry_after {
                return Err(Error::RateLimited {
                    url: url.to_string(),
                    retry_after: Some(left),
                });
            }
            tokio::time::sleep(left).await;
        }
    }

    /// One `POST` of a JSON body that holds a secret (a vendor API login): guarded,
    /// counted and capped like every request, never retried and never redirected (a
    /// redirect would carry the body elsewhere).
    pub(crate) async fn post_json(&self, url: Url, body: Vec<u8>, max_body: u64) -> Result<Reply> {
        let _permit = self.admit(&url, false).await?;
        let sent = Instant::now();
        let response = match self
            .http
            .post(url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => {
                self.metrics
                    .request(&Method::POST, None, Some(error_type(&e)), sent.elapsed());
                return match classify(e, &url)? {
                    Attempt::Retry(e) => Err(e),
                    Attempt::Done(r) => Ok(r),
                };
            }
        };
        let status = response.status();
        if status.is_redirection() {
            return Err(Error::protocol(
                &url,
                format!("{status}: a login is not redirected"),
            ));
        }
        let cap = if status.is_success() {
            max_body
        } else {
            SMALL_BODY
        };
        let headers = response.headers().clone();
        let body = read_body(response, cap, status.is_success()).await;
        self.metrics.request(
            &Method::POST,
            Some(status.as_u16()),
            body.as_ref().err().map(|e| match e {
                BodyError::TooLarge => "body_too_large",
                BodyError::Transport(e) => error_type(e),
            }),
            sent.elapsed(),
        );
        match body {
            Ok(body) => Ok(Reply {
                status,
                headers,
                body,
                url,
            }),
            Err(BodyError::TooLarge) => Err(Error::TooLarge {
                url: url.to_string(),
                limit: cap,
            }),
            Err(BodyError::Transport(e)) => match classify(e, &url)? {
                Attempt::Retry(e) => Err(e),
                Attempt::Done(r) => Ok(r),
            },
        }
    }

    /// What every request passes before it is sent, in order: the network guard (and,
    /// through a proxy, the resolved target), the host's `Retry-After` gate, the pull budget
    /// when `pace` (a request the registry counts), the request budget, a concurrency slot,
    /// and the gate again (it may have closed while this request waited for a slot).
    async fn admit(&self, url: &Url, pace: bool) -> Result<tokio::sync::SemaphorePermit<'_>> {
        self.config.guard.check_url(url)?;
        if let Some(proxy) = &self.guarded_proxy {
            self.config.guard.check_url(proxy)?;
        }
        self.pass_gate(url).await?;
        if self.proxied {
            self.config
                .guard
                .check_target(url, self.config.connect_timeout)
                .await?;
        }
        if pace {
            self.pace(url).await?;
        }
        let spent = self.requests.fetch_add(1, Ordering::Relaxed);
        if let Some(budget) = self.config.request_budget
            && spent >= budget
        {
            self.requests.fetch_sub(1, Ordering::Relaxed);
            return Err(Error::BudgetExhausted { budget });
        }
        let permit = self
            .permits
            .acquire()
            .await
            .expect("semaphore never closed");
        self.pass_gate(url).await?;
        Ok(permit)
    }

    /// One request, redirects included. `Attempt::Retry` is a dropped connection.
    async fn send_once(
        &self,
        mut method: Method,
        mut url: Url,
        authz: Option<&Authz>,
        accept: Option<&str>,
        max_body: u64,
    ) -> Result<Attempt> {
        for _ in 0..=self.config.max_redirects {
            let _permit = self.admit(&url, self.counted(&method, &url)).await?;
            let mut request = self.http.request(method.clone(), url.clone());
            if let Some(accept) = accept {
                request = request.header(header::ACCEPT, accept);
            }
            for (name, value) in &self.extra_headers {
                request = request.header(name, value.clone());
            }
            if let Some(authz) = authz.filter(|a| a.origin == url.origin()) {
                request = request.header(header::AUTHORIZATION, authz.value.clone());
            }
            let sent = Instant::now();
            let response = match request.send().await {
                Ok(r) => r,
                Err(e) => {
                    self.metrics
                        .request(&method, None, Some(error_type(&e)), sent.elapsed());
                    return classify(e, &url);
                }
            };
            let status = response.status();
            if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
                self.metrics
                    .request(&method, Some(status.as_u16()), None, sent.elapsed());
            }
            if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
                let location = response
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .ok_or_else(|| Error::protocol(&url, format!("{status} without a Location")))?;
                let next = url.join(location).map_err(|e| {
                    Error::protocol(&url, format!("bad redirect `{location}`: {e}"))
                })?;
                if status == StatusCode::SEE_OTHER && method != Method::HEAD {
                    method = Method::GET;
                }
                tracing::debug!(from = %url, to = %next, "following redirect");
                url = next;
                continue;
            }
            let cap = if status.is_success() {
                max_body
            } else {
                SMALL_BODY
            };
            let headers = response.headers().clone();
            if url.origin() == self.base.origin()
                && let Some(rl) = crate::ratelimit::from_headers(&headers, SystemTime::now())
            {
                self.pacer.lock().observe(rl);
            }
            let body = read_body(response, cap, status.is_success()).await;
            self.metrics.request(
                &method,
                Some(status.as_u16()),
                match &body {
                    Ok(_) => None,
                    Err(BodyError::TooLarge) => Some("body_too_large"),
                    Err(BodyError::Transport(e)) => Some(error_type(e)),
                },
                sent.elapsed(),
            );
            return match body {
                Ok(body) => Ok(Attempt::Done(Reply {
                    status,
                    headers,
                    body,
                    url,
                })),
                Err(BodyError::TooLarge) => Err(Error::TooLarge {
                    url: url.to_string(),
                    limit: cap,
                }),
                Err(BodyError::Transport(e)) => classify(e, &url),
            };
        }
        Err(Error::protocol(
            &url,
            format!("more than {} redirects", self.config.max_redirects),
        ))
    }
}

/// `error.type` of a request that got no (whole) answer: a few stable values.
fn error_type(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "transport"
    }
}

fn is_transient(status: StatusCode) -> bool {
    matches!(status.as_u16(), 500 | 502 | 503 | 504)
}

fn challenges_of(headers: &HeaderMap) -> Vec<Challenge> {
    headers
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(parse_challenges)
        .collect()
}

fn unauthorized(reply: &Reply, challenges: &[Challenge], sent_credentials: bool) -> Error {
    let url = reply.url.to_string();
    let scope_error = challenges.iter().find_map(|c| c.param("error"));
    if sent_credentials && scope_error == Some("insufficient_scope") {
        return Error::Forbidden {
            url,
            reason: "the credentials lack the scope this request needs".into(),
        };
    }
    let reason = if sent_credentials {
        "the registry refused the credentials".to_owned()
    } else {
        "the registry requires credentials".to_owned()
    };
    Error::Unauthorized { url, reason }
}

fn sensitive(value: String) -> Result<HeaderValue> {
    let mut value = HeaderValue::from_str(&value)
        .map_err(|_| Error::Config("credentials hold characters not allowed in a header".into()))?;
    value.set_sensitive(true);
    Ok(value)
}

fn basic(username: &str, password: &str) -> Result<HeaderValue> {
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    sensitive(format!("Basic {encoded}"))
}

/// Full jitter between half and all of `base * 2^attempt`, capped.
pub(crate) fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let ceiling = base.saturating_mul(1 << attempt.min(16)).min(max);
    let half = ceiling / 2;
    half + rand::rng().random_range(Duration::ZERO..=half)
}

/// `Retry-After` as delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

enum BodyError {
    TooLarge,
    Transport(reqwest::Error),
}

async fn read_body(
    mut response: reqwest::Response,
    cap: u64,
    strict: bool,
) -> Result<Bytes, BodyError> {
    if strict && response.content_length().is_some_and(|len| len > cap) {
        return Err(BodyError::TooLarge);
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if body.len() as u64 + chunk.len() as u64 > cap {
            if strict {
                return Err(BodyError::TooLarge);
            }
            let room = cap as usize - body.len();
            body.extend_from_slice(&chunk[..room]);
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Turns a reqwest failure into our classes; dropped connections come back as retryable.
/// A registry's own proxy: `http[s]://host[:port]` and nothing else, so it cannot carry
/// credentials of its own (they would be a secret in the clear wherever the URL is shown).
fn guarded_proxy_url(proxy: &str) -> Result<Url> {
    let url = Url::parse(proxy)
        .map_err(|e| Error::Config(format!("the registry's proxy URL is not a URL: {e}")))?;
    let plain = matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some_and(|h| !h.is_empty())
        && url.username().is_empty()
        && url.password().is_none()
        && url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none();
    if !plain {
        return Err(Error::Config(
            "the registry's proxy URL must be http[s]://host[:port], without credentials or a path"
                .into(),
        ));
    }
    Ok(url)
}

fn classify(err: reqwest::Error, url: &Url) -> Result<Attempt> {
    let url_s = url.to_string();
    let mut messages = Vec::new();
    let mut refused = false;
    let mut dropped = false;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(e) = source {
        let inner = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|i| i as &(dyn std::error::Error + 'static));
        for candidate in [Some(e), inner].into_iter().flatten() {
            if let Some(resolve) = candidate.downcast_ref::<ResolveError>() {
                return Err(resolve.to_error());
            }
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            match io.kind() {
                K::ConnectionRefused => refused = true,
                K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
                    dropped = true
                }
                _ => {}
            }
        }
        messages.push(e.to_string());
        source = e.source();
    }
    // The first message is reqwest's, which names the URL: a host called `tls.example`
    // must not make a refused connection look like a TLS failure.
    let all = messages[1.min(messages.len())..]
        .join(": ")
        .to_ascii_lowercase();
    let reason = messages
        .iter()
        .skip(1)
        .cloned()
        .collect::<Vec<_>>()
        .join(": ");
    let reason = if reason.is_empty() {
        messages.first().cloned().unwrap_or_default()
    } else {
        reason
    };
    if err.is_timeout() {
        return Err(Error::Timeout { url: url_s });
    }
    if [
        "certificate",
        "tls",
        "handshake",
        "corrupt message",
        "invalidcontenttype",
    ]
    .iter()
    .any(|needle| all.contains(needle))
    {
        return Err(Error::Tls { url: url_s, reason });
    }
    if refused {
        return Err(Error::Connect { url: url_s, reason });
    }
    if dropped
        || [
            "connection closed",
            "connection reset",
            "incomplete",
            "unexpected eof",
            "end of file",
        ]
        .iter()
        .any(|needle| all.contains(needle))
    {
        return Ok(Attempt::Retry(Error::Connect { url: url_s, reason }));
    }
    Err(Error::Connect { url: url_s, reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_both_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_secs(0))
        );
        let earlier = now - Duration::from_secs(30);
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", earlier),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        for attempt in 0..10 {
            let d = backoff(base, max, attempt);
            let ceiling = (base * (1 << attempt)).min(max);
            assert!(d >= ceiling / 2 && d <= ceiling, "{attempt}: {d:?}");
        }
    }

    #[test]
    fn registry_errors_are_summarised() {
        let body = br#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}"#;
        assert_eq!(
            registry_error_message(body).as_deref(),
            Some("NAME_UNKNOWN: repository name not known to registry")
        );
        assert_eq!(registry_error_message(b"<html>"), None);
    }
}
