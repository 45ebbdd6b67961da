//! Cloud credential exchangers: long-lived cloud credentials in, short-lived registry
//! credentials out, as [`CredentialProvider`]s for [`crate::RegistryClient::with_provider`].
//!
//! | registry | provider | exchange | hands out |
//! | --- | --- | --- | --- |
//! | Amazon ECR | [`EcrProvider`] | `GetAuthorizationToken`, SigV4-signed by `aws-sigv4`, only for `<account>.dkr.ecr.<region>.amazonaws.com(.cn)` ([`check_ecr_host`]) | `AWS` / token password, 12 h |
//! | Azure ACR (service principal) | [`AcrProvider`] | AAD client credentials (ACR audience), then `/oauth2/exchange`, only with `*.azurecr.io` (and the sovereign clouds' suffixes) | `00000000-0000-0000-0000-000000000000` / ACR refresh token, ~3 h |
//! | Google Artifact Registry | [`GcpServiceAccountProvider`] | OAuth 2.0 JWT bearer grant (RFC 7523), only for `gcr.io`, `*.gcr.io`, `*-docker.pkg.dev` ([`check_gcr_host`]) | `oauth2accesstoken` / access token, 1 h |
//! | GitHub Container Registry (GitHub App) | [`GitHubAppProvider`] | the app's RS256 JWT for `POST /app/installations/{id}/access_tokens` at the configured GitHub API | `x-access-token` / installation token, 1 h (also the GitHub API's bearer) |
//! | Google, GKE workload identity | [`GcpMetadataProvider`] | the metadata server's token (`Metadata-Flavor: Google`) | `oauth2accesstoken` / access token, ~1 h |
//! | Amazon ECR, IRSA / EKS Pod Identity | [`EcrProvider`] with an [`AwsIdentity`] | STS `AssumeRoleWithWebIdentity` or the Pod Identity agent, then `GetAuthorizationToken` | as ECR, never past the temporary credentials |
//! | Azure ACR, workload identity | [`AcrProvider`] with [`AadClientCredential::FederatedTokenFile`] | the federated token as AAD client assertion, then `/oauth2/exchange` | as ACR |
//!
//! # Credentials that need no exchange
//!
//! Some provider forms are plain Basic credentials: pass them as [`Credentials::basic`] and
//! the client's usual Basic / Bearer token flow does the rest.
//! - **Artifact Registry `_json_key`**: username `_json_key`, password the whole service
//!   account key JSON. The registry's token endpoint does the exchange itself.
//!   (`_json_key_base64` with the key base64-encoded works the same way.)
//! - **Artifact Registry `oauth2accesstoken`**: username `oauth2accesstoken`, password an
//!   access token obtained elsewhere (`gcloud auth print-access-token`). It expires in an
//!   hour and nothing here can renew it; [`GcpServiceAccountProvider`] is the renewable form.
//! - **ACR admin user**: the registry name and one of its two admin passwords.
//!
//! # Behaviour shared by every provider
//! - **Caching, single flight**: a provider keeps its last credentials and hands them out
//!   again until shortly before they expire; concurrent callers wait for one exchange rather
//!   than each making their own. The provider's margin (a third of the lifetime, at most
//!   20 minutes) is wider than the client's (a quarter, at most 15 minutes), so when the client
//!   comes back for fresh credentials it gets a new exchange, not the credentials it is
//!   about to drop. Failures are not cached.
//! - **Network**: every exchange request passes the [`NetworkGuard`] like registry requests
//!   do (the metadata server and the Pod Identity agent through an exemption for exactly their
//!   endpoint, [`NetworkGuard::exempt`], never through a proxy) (IP literals before the request, names on their resolved addresses inside the DNS
//!   resolver); HTTPS only, except an `http://` endpoint override on a loopback host, for
//!   tests. A custom CA (PEM) is added to the system roots. Redirects are not followed (a
//!   token endpoint has no reason to redirect, and a POST body holds a secret). Every
//!   request has a connect and an overall timeout ([`ExchangeTimeouts`]).
//! - **Errors** are the crate's [`Error`] classes (`unauthorized`, `forbidden`,
//!   `rate_limited`, `timeout`, `connect`, `dns`, `tls`, `blocked`, `server`, `protocol`,
//!   `config`), carrying the endpoint URL and the provider's own error code and message.
//!   They never hold a secret, a token, a request body or the text of a parse error (which
//!   could quote a token).

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use url::{Host, Url};

use crate::auth::{CredentialProvider, Credentials, ProvidedCredentials};
use crate::error::{Error, Result};
use crate::guard::{GuardedResolver, NetworkGuard, Proxies, ResolveError};

mod acr;
mod aws;
mod ecr;
mod gcp;
mod gcp_metadata;
mod github_app;
mod jwt;
mod token_file;

pub use acr::{
    ACR_AAD_SCOPE, ACR_HOST_SUFFIXES, ACR_REFRESH_TOKEN_USERNAME, AZURE_FEDERATED_TOKEN_FILE,
    AadClientCredential, AcrConfig, AcrProvider, check_acr_host,
};
pub use aws::{
    AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE, AWS_CONTAINER_CREDENTIALS_FULL_URI, AWS_ROLE_ARN,
    AWS_WEB_IDENTITY_TOKEN_FILE, AwsIdentity, AwsWebIdentityConfig, PodIdentityConfig,
};
pub use ecr::{ECR_HOST_SUFFIXES, EcrConfig, EcrProvider, check_ecr_host};
pub use gcp::{
    GCP_ACCESS_TOKEN_USERNAME, GCP_CLOUD_PLATFORM_SCOPE, GCR_HOST_SUFFIXES,
    GcpServiceAccountConfig, GcpServiceAccountProvider, check_gcr_host,
};
pub use gcp_metadata::{
    DEFAULT_GCE_METADATA, GcpMetadataConfig, GcpMetadataProvider, METADATA_TOKEN_PATH,
};
pub use github_app::{
    GitHubAppConfig, GitHubAppProvider, MAX_GITHUB_APP_KEY_BYTES, check_github_app_key,
    is_github_id,
};
pub use token_file::TokenFile;

/// Exchange answers are small; more is not read.
const MAX_ANSWER: usize = 64 * 1024;

/// Provider messages copied into errors are cut to this many characters.
const MAX_REASON: usize = 300;

/// Timeouts of every exchange request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExchangeTimeouts {
    /// Until the TCP (and TLS) connection is up.
    pub connect: Duration,
    /// The whole request, answer body included.
    pub request: Duration,
}

impl Default for ExchangeTimeouts {
    fn default() -> Self {
        ExchangeTimeouts {
            connect: Duration::from_secs(10),
            request: Duration::from_secs(30),
        }
    }
}

/// The guarded HTTP client of one provider.
pub(crate) struct ExchangeHttp {
    client: reqwest::Client,
    guard: NetworkGuard,
    /// The proxy environment is honoured; the guard then checks each endpoint itself.
    proxied: bool,
    connect_timeout: Duration,
}

impl fmt::Debug for ExchangeHttp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExchangeHttp")
            .field("guard", &self.guard)
            .finish_non_exhaustive()
    }
}

/// An exchange endpoint's answer.
pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl ExchangeHttp {
    /// A client for `endpoints`, each checked with [`check_endpoint`]; plain HTTP is only
    /// enabled when one of them is a loopback `http://` override.
    pub(crate) fn new(
        endpoints: &[&Url],
        guard: NetworkGuard,
        ca_pem: Option<&str>,
        timeouts: ExchangeTimeouts,
    ) -> Result<Self> {
        let mut plain_http = false;
        for endpoint in endpoints {
            plain_http |= check_endpoint(endpoint)?;
        }
        Self::build(guard, ca_pem, timeouts, plain_http, false)
    }

    /// A client for one metadata endpoint (the GKE metadata server, the EKS Pod Identity
    /// agent): plain HTTP, as those endpoints are link-local and speak nothing else; never
    /// through a proxy; and the guard exempts exactly `endpoint`, nothing else.
    pub(crate) fn metadata(
        endpoint: &Url,
        guard: &NetworkGuard,
        timeouts: ExchangeTimeouts,
    ) -> Result<Self> {
        if !endpoint.username().is_empty() || endpoint.password().is_some() {
            return Err(Error::Config(
                "a metadata endpoint must not hold user-info (user:password@)".into(),
            ));
        }
        if endpoint.fragment().is_some() || endpoint.host_str().is_none() {
            return Err(Error::Config(format!(
                "{endpoint} is not a metadata endpoint URL"
            )));
        }
        let plain_http = match endpoint.scheme() {
            "http" => true,
            "https" => false,
            other => {
                return Err(Error::Config(format!(
                    "{endpoint}: unsupported scheme `{other}` for a metadata endpoint"
                )));
            }
        };
        Self::build(guard.exempt(endpoint), None, timeouts, plain_http, true)
    }

    fn build(
        guard: NetworkGuard,
        ca_pem: Option<&str>,
        timeouts: ExchangeTimeouts,
        plain_http: bool,
        direct: bool,
    ) -> Result<Self> {
        let proxies = if direct {
            Proxies::default()
        } else {
            Proxies::detect(None)
        };
        let proxied = proxies.active();
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(GuardedResolver::new(guard.clone(), proxies)))
            .connect_timeout(timeouts.connect)
            .timeout(timeouts.request)
            .user_agent(concat!(
                "imagelib-registry-client/",
                env!("CARGO_PKG_VERSION")
            ))
            .https_only(!plain_http);
        if direct {
            builder = builder.no_proxy();
        }
        if let Some(pem) = ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .map_err(|e| Error::Config(format!("the custom CA is not PEM: {e}")))?;
            if certs.is_empty() {
                return Err(Error::Config("the custom CA holds no certificate".into()));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(ExchangeHttp {
            client,
            guard,
            proxied,
            connect_timeout: timeouts.connect,
        })
    }

    pub(crate) fn post(&self, url: &Url) -> reqwest::RequestBuilder {
        self.client.post(url.clone())
    }

    pub(crate) fn get(&self, url: &Url) -> reqwest::RequestBuilder {
        self.client.get(url.clone())
    }

    /// Sends a request built by [`Self::post`] for `url`, reading at most [`MAX_ANSWER`]
    /// bytes of the answer. Transport failures come back classified; statuses are the
    /// caller's to judge.
    pub(crate) async fn send(&self, url: &Url, request: reqwest::RequestBuilder) -> Result<Answer> {
        self.guard.check_url(url)?;
        if self.proxied {
            self.guard.check_target(url, self.connect_timeout).await?;
        }
        let mut response = request.send().await.map_err(|e| classify(e, url))?;
        let status = response.status();
        let headers = response.headers().clone();
        let mut body = BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| classify(e, url))? {
            if body.len() + chunk.len() > MAX_ANSWER {
                return Err(Error::TooLarge {
                    url: url.to_string(),
                    limit: MAX_ANSWER as u64,
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer {
            status,
            headers,
            body: body.freeze(),
        })
    }
}

impl Answer {
    /// The error for a status no provider treats specially: 429, 5xx, a redirect.
    pub(crate) fn generic_error(&self, url: &Url, reason: String) -> Error {
        let url_s = url.to_string();
        match self.status.as_u16() {
            429 => Error::RateLimited {
                url: url_s,
                retry_after: self
                    .headers
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| crate::transport::parse_retry_after(v, SystemTime::now())),
            },
            s if s >= 500 => Error::Server {
                url: url_s,
                status: s,
            },
            s if (300..400).contains(&s) => Error::protocol(
                url,
                format!("answered {} (redirects are not followed)", self.status),
            ),
            _ => Error::Protocol { url: url_s, reason },
        }
    }
}

/// Refuses endpoints credentials must not go to. Returns true for a loopback `http://`
/// override, the only plain-HTTP endpoint accepted.
pub(crate) fn check_endpoint(url: &Url) -> Result<bool> {
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::Config(
            "an exchange endpoint must not hold user-info (user:password@)".into(),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(Error::Config(format!(
            "the exchange endpoint {}://{}{} must not hold a query or a fragment",
            url.scheme(),
            url.host_str().unwrap_or_default(),
            url.path()
        )));
    }
    match url.scheme() {
        "https" => Ok(false),
        "http" if is_loopback(url) => Ok(true),
        "http" => Err(Error::Config(format!(
            "{url}: credentials are only exchanged over HTTPS (plain HTTP only on a loopback host)"
        ))),
        other => Err(Error::Config(format!(
            "{url}: unsupported scheme `{other}` for an exchange endpoint"
        ))),
    }
}

pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(name)) => {
            name.eq_ignore_ascii_case("localhost")
                || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
        None => false,
    }
}

/// Turns a reqwest failure into the crate's classes. Like the registry transport, it reads
/// the error chain below reqwest's own message (which names the URL) so a host name cannot
/// make one class look like another. A reqwest error never holds the request body.
pub(crate) fn classify(err: reqwest::Error, url: &Url) -> Error {
    let url_s = url.to_string();
    let mut messages = Vec::new();
    let mut refused = false;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(e) = source {
        let inner = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|i| i as &(dyn std::error::Error + 'static));
        for candidate in [Some(e), inner].into_iter().flatten() {
            if let Some(resolve) = candidate.downcast_ref::<ResolveError>() {
                return resolve.to_error();
            }
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            refused = true;
        }
        messages.push(e.to_string());
        source = e.source();
    }
    if err.is_timeout() {
        return Error::Timeout { url: url_s };
    }
    let below = messages.get(1..).unwrap_or_default().join(": ");
    let reason = if below.is_empty() {
        messages.first().cloned().unwrap_or_default()
    } else {
        below
    };
    let lower = reason.to_ascii_lowercase();
    if !refused
        && ["certificate", "tls", "handshake", "corrupt message"]
            .iter()
            .any(|needle| lower.contains(needle))
    {
        return Error::Tls { url: url_s, reason };
    }
    Error::Connect { url: url_s, reason }
}

/// A provider message fit for an error: one line, cut to [`MAX_REASON`] characters.
pub(crate) fn clip(message: &str) -> String {
    let one_line: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let one_line = one_line.trim();
    match one_line.char_indices().nth(MAX_REASON) {
        Some((at, _)) => format!("{}…", &one_line[..at]),
        None => one_line.to_owned(),
    }
}

/// A JSON parse failure, described by position only: serde's messages can quote values.
pub(crate) fn json_error(url: &Url, what: &str, e: &serde_json::Error) -> Error {
    Error::protocol(
        url,
        format!(
            "{what} is not the expected JSON (line {}, column {})",
            e.line(),
            e.column()
        ),
    )
}

/// The `exp` claim of a JWT, if the token is one; the signature is not checked (the token
/// is only ever presented back to its issuer, this only decides when to renew it).
pub(crate) fn jwt_expiry(token: &str) -> Option<SystemTime> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&payload).ok()?;
    let exp = claims.get("exp")?.as_f64()?;
    (exp.is_finite() && exp > 0.0)
        .then(|| SystemTime::UNIX_EPOCH + Duration::from_secs_f64(exp.min(4.0e11)))
}

/// When a provider stops handing out credentials that expire at `expires_at`: a third of
/// their remaining lifetime early, at most 20 minutes, which is more than the client's
/// margin (a quarter, at most 15 minutes).
pub(crate) fn renew_at(expires_at: SystemTime, now: SystemTime) -> SystemTime {
    let lifetime = expires_at.duration_since(now).unwrap_or_default();
    expires_at - (lifetime / 3).min(Duration::from_secs(20 * 60))
}

/// What a [`CredentialCache`] keeps: anything with an expiry (registry credentials, the
/// temporary cloud credentials a workload identity is exchanged for).
pub(crate) trait Expiring: Clone {
    fn expires_at(&self) -> Option<SystemTime>;
}

impl Expiring for ProvidedCredentials {
    fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }
}

/// The last credentials of a provider, behind an async lock held across the exchange so that
/// concurrent callers share one.
pub(crate) struct CredentialCache<T = ProvidedCredentials> {
    slot: tokio::sync::Mutex<Option<Cached<T>>>,
}

impl<T> Default for CredentialCache<T> {
    fn default() -> Self {
        CredentialCache {
            slot: tokio::sync::Mutex::new(None),
        }
    }
}

struct Cached<T> {
    provided: T,
    renew_at: SystemTime,
}

impl<T: Expiring> CredentialCache<T> {
    /// Forgets the cached credentials: the next call exchanges again.
    pub(crate) async fn clear(&self) {
        *self.slot.lock().await = None;
    }

    pub(crate) async fn get_or_exchange<F, Fut>(&self, exchange: F) -> Result<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut slot = self.slot.lock().await;
        if let Some(cached) = slot.as_ref()
            && SystemTime::now() < cached.renew_at
        {
            return Ok(cached.provided.clone());
        }
        let provided = exchange().await?;
        *slot = provided.expires_at().map(|expires_at| Cached {
            provided: provided.clone(),
            renew_at: renew_at(expires_at, SystemTime::now()),
        });
        Ok(provided)
    }
}

impl<T> fmt::Debug for CredentialCache<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.slot.try_lock() {
            Ok(slot) => match slot.as_ref() {
                Some(cached) => format!("cached until {:?}", cached.renew_at),
                None => "empty".to_owned(),
            },
            Err(_) => "exchanging".to_owned(),
        };
        write!(f, "CredentialCache({state})")
    }
}

/// `Basic` credentials with an expiry, as every provider hands them out.
pub(crate) fn basic_until(
    username: &str,
    password: String,
    expires_at: SystemTime,
) -> ProvidedCredentials {
    ProvidedCredentials {
        credentials: Credentials::Basic {
            username: username.to_owned(),
            password: password.into(),
        },
        expires_at: Some(expires_at),
    }
}

// Every provider is a `CredentialProvider`; checked here so a signature change fails loudly.
const _: fn() = || {
    fn provider<T: CredentialProvider>() {}
    provider::<EcrProvider>();
    provider::<AcrProvider>();
    provider::<GcpServiceAccountProvider>();
    provider::<GcpMetadataProvider>();
    provider::<GitHubAppProvider>();
};

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", b64(r#"{"alg":"none"}"#), b64(claims))
    }

    #[test]
    fn jwt_expiry_reads_exp_or_nothing() {
        let at = jwt_expiry(&jwt(r#"{"exp":1700000000,"sub":"x"}"#)).unwrap();
        assert_eq!(
            at,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
        );
        assert_eq!(jwt_expiry(&jwt(r#"{"sub":"x"}"#)), None);
        assert_eq!(jwt_expiry(&jwt(r#"{"exp":"soon"}"#)), None);
        assert_eq!(jwt_expiry("opaque-refresh-token"), None);
        assert_eq!(jwt_expiry("a.b.c.d"), None);
        assert_eq!(jwt_expiry("a.!!!.c"), None);
    }

    #[test]
    fn renewal_margin_is_wider_than_the_clients() {
        let now = SystemTime::now();
        let twelve_hours = now + Duration::from_secs(12 * 3600);
        assert_eq!(
            renew_at(twelve_hours, now),
            twelve_hours - Duration::from_secs(20 * 60)
        );
        let short = now + Duration::from_secs(6);
        assert_eq!(renew_at(short, now), now + Duration::from_secs(4));
        let past = now - Duration::from_secs(1);
        assert_eq!(renew_at(past, now), past);
        // the client renews at expiry minus min(lifetime / 4, 15 min): always later
        for secs in [4u64, 60, 3600, 3 * 3600, 12 * 3600] {
            let lifetime = Duration::from_secs(secs);
            let client = now + lifetime - (lifetime / 4).min(Duration::from_secs(15 * 60));
            assert!(renew_at(now + lifetime, now) < client, "{secs}");
        }
    }

    #[test]
    fn endpoints_https_or_loopback_http() {
        let ok = |s: &str| check_endpoint(&s.parse().unwrap());
        assert!(!ok("https://api.ecr.eu-west-1.amazonaws.com/").unwrap());
        assert!(ok("http://127.0.0.1:8080/").unwrap());
        assert!(ok("http://[::1]:8080/").unwrap());
        assert!(ok("http://localhost:8080/").unwrap());
        for bad in [
            "http://10.0.0.1/",
            "http://login.microsoftonline.com/",
            "ftp://127.0.0.1/",
            "https://user:pw@example.com/",
            "https://example.com/token?x=1",
        ] {
            let err = ok(bad).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Config, "{bad}");
            assert!(!err.to_string().contains("pw@"), "{err}");
        }
    }

    #[test]
    fn clip_keeps_one_short_line() {
        assert_eq!(clip(" a\nb "), "a b");
        let long = "x".repeat(1000);
        assert_eq!(clip(&long).chars().count(), MAX_REASON + 1);
    }
}
