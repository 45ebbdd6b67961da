//! The client handle, and the checks registry-registry runs before it accepts a registry.
//!
//! One [`RegistryClient`] per registry: it owns that registry's concurrency cap, budget,
//! counters, learnt auth scheme and token cache, so a slow or rate-limited registry never
//! holds up another one's client.

use std::sync::Arc;
use std::sync::atomic::AtomicU8;

use imagelib_events::RepositoryName;
use reqwest::Method;

use crate::auth::{CredentialProvider, Scope, parse_challenges};
use crate::config::RegistryConfig;
use crate::error::{Error, Result};
use crate::transport::{AuthMode, RequestStats, Transport};

/// The registry's answer to `GET /v2/`, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingOutcome {
    /// `Docker-Distribution-API-Version`, e.g. `registry/2.0`.
    pub api_version: Option<String>,
    pub auth: AuthScheme,
    /// True when the registry asked for authentication and the client passed it (with an
    /// anonymous token, for anonymous credentials on a Bearer registry).
    pub authenticated: bool,
}

/// How a registry asks clients to authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthScheme {
    None,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

#[derive(Debug, Clone)]
pub struct RegistryClient {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) transport: Transport,
    /// Whether `GET /v2/<name>/referrers/<digest>` exists here: unknown, yes, no.
    pub(crate) referrers_api: AtomicU8,
    /// Held while the referrers API is asked for the first time, so concurrent lookups
    /// wait for its answer instead of each asking it.
    pub(crate) referrers_probe: tokio::sync::Mutex<()>,
}

pub(crate) const API_VERSION_HEADER: &str = "docker-distribution-api-version";

impl RegistryClient {
    pub fn new(
        config: RegistryConfig,
        credentials: impl CredentialProvider + 'static,
    ) -> Result<Self> {
        Self::with_provider(config, Arc::new(credentials))
    }

    pub fn with_provider(
        config: RegistryConfig,
        provider: Arc<dyn CredentialProvider>,
    ) -> Result<Self> {
        Ok(RegistryClient {
            inner: Arc::new(Inner {
                transport: Transport::new(config, provider)?,
                referrers_api: AtomicU8::new(0),
                referrers_probe: tokio::sync::Mutex::new(()),
            }),
        })
    }

    pub(crate) fn t(&self) -> &Transport {
        &self.inner.transport
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.t().config
    }

    /// The client's credential provider: a vendor API that takes the registry's
    /// credentials too (GitHub's, Docker Hub's) asks it, so an exchanged credential is
    /// shared with the registry requests instead of exchanged again.
    pub fn provider(&self) -> Arc<dyn CredentialProvider> {
        self.t().provider.clone()
    }

    /// HTTP requests made so far (redirect hops, retries and token requests included).
    pub fn requests(&self) -> u64 {
        self.t().stats().requests
    }

    /// `429` answers received so far.
    pub fn rate_limited(&self) -> u64 {
        self.t().stats().rate_limited
    }

    pub fn stats(&self) -> RequestStats {
        self.t().stats()
    }

    /// The pull budget the registry announced last (Docker Hub's `ratelimit-limit` and
    /// `ratelimit-remaining`), with the GETs sent since counted down; `None` when it never
    /// said.
    pub fn rate_limit(&self) -> Option<crate::ratelimit::RateLimit> {
        self.t().rate_limit()
    }

    /// `GET /v2/`, answering the challenge with the credentials. Tells a registry from
    /// anything else: a success needs the `Docker-Distribution-API-Version` header, a 401 a
    /// Basic or Bearer challenge, and an HTML page is never a registry.
    pub async fn ping(&self) -> Result<PingOutcome> {
        let t = self.t();
        let url = t.url("v2/");
        let first = t
            .send(Method::GET, url.clone(), None, None, 64 * 1024)
            .await?;
        let status = first.status.as_u16();
        let reply = match status {
            200..=299 => first,
            401 => {
                let challenges: Vec<_> = first
                    .headers
                    .get_all("www-authenticate")
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(parse_challenges)
                    .collect();
                let registry_challenge = challenges.iter().any(|c| {
                    c.scheme == "basic" || (c.scheme == "bearer" && c.param("realm").is_some())
                });
                if !registry_challenge || looks_like_html(&first) {
                    return Err(Error::NotARegistry {
                        url: url.to_string(),
                        reason: "it answered 401 without a Basic or Bearer challenge".into(),
                    });
                }
                t.learn(&Scope::Registry, &challenges, None).await?;
                let reply = t
                    .execute(Method::GET, url.clone(), &Scope::Registry, None, 64 * 1024)
                    .await?;
                if !reply.status.is_success() {
                    return Err(reply.status_error());
                }
                reply
            }
            403 => return Err(first.status_error()),
            _ => {
                return Err(Error::NotARegistry {
                    url: url.to_string(),
                    reason: format!("GET /v2/ answered {}", first.status),
                });
            }
        };
        if looks_like_html(&reply) {
            return Err(Error::NotARegistry {
                url: url.to_string(),
                reason: "GET /v2/ answered with an HTML page".into(),
            });
        }
        let Some(api_version) = reply.header(API_VERSION_HEADER).map(str::to_owned) else {
            return Err(Error::NotARegistry {
                url: url.to_string(),
                reason: "GET /v2/ answered without a Docker-Distribution-API-Version header".into(),
            });
        };
        let auth = match t.mode() {
            AuthMode::Unknown => AuthScheme::None,
            AuthMode::Basic => AuthScheme::Basic,
            AuthMode::Bearer { realm, service } => AuthScheme::Bearer {
                realm: realm.to_string(),
                service,
            },
        };
        Ok(PingOutcome {
            api_version: Some(api_version),
            authenticated: auth != AuthScheme::None,
            auth,
        })
    }

    /// Whether the credentials may list the catalog (`registry:catalog:*`): `forbidden` when
    /// they authenticate but lack the scope.
    pub async fn check_catalog_access(&self) -> Result<()> {
        let url = self.t().url("v2/_catalog?n=1");
        self.check(url, &Scope::Catalog).await
    }

    /// Whether the credentials may pull from `repository`.
    pub async fn check_pull_access(&self, repository: &RepositoryName) -> Result<()> {
        let url = self.t().url(&format!("v2/{repository}/tags/list?n=1"));
        self.check(url, &Scope::Pull(repository.to_string())).await
    }

    async fn check(&self, url: url::Url, scope: &Scope) -> Result<()> {
        let reply = self
            .t()
            .execute(Method::GET, url, scope, Some("application/json"), 1 << 20)
            .await?;
        if !reply.status.is_success() {
            return Err(reply.status_error());
        }
        serde_json::from_slice::<serde_json::Value>(&reply.body)
            .map(|_| ())
            .map_err(|e| Error::protocol(&reply.url, format!("the answer is not JSON: {e}")))
    }
}

fn looks_like_html(reply: &crate::transport::Reply) -> bool {
    reply
        .content_type()
        .is_some_and(|ct| ct.eq_ignore_ascii_case("text/html"))
        || reply
            .body
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| *b == b'<')
}
