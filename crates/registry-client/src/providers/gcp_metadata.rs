//! Google Artifact Registry with GKE workload identity (or a GCE VM's service account): the
//! access token of the pod's (or VM's) service account, from the metadata server.
//!
//! `GET http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token`
//! with `Metadata-Flavor: Google` (the server refuses requests without it, and answers with it:
//! an answer without the header is not the metadata server's), answered
//! `{"access_token","expires_in","token_type"}`. The token is handed out as
//! `oauth2accesstoken` / token, like the service account key's.
//!
//! The metadata server is refused by the network guard for everything else (registry
//! requests, token realms, redirects); this provider's client is exempted for exactly its
//! configured endpoint, never through a proxy.

use std::fmt;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use serde::Deserialize;
use url::Url;

use super::{
    Answer, CredentialCache, ExchangeHttp, ExchangeTimeouts, GCP_ACCESS_TOKEN_USERNAME,
    basic_until, clip, json_error,
};
use crate::auth::{CredentialProvider, ProvidedCredentials};
use crate::error::{Error, Result};
use crate::guard::NetworkGuard;

/// The metadata server's address, as Google's client libraries use it.
pub const DEFAULT_GCE_METADATA: &str = "http://metadata.google.internal/";

/// The default service account's access token, below the metadata server's address.
pub const METADATA_TOKEN_PATH: &str = "computeMetadata/v1/instance/service-accounts/default/token";

/// The longest a metadata token is trusted for; the server hands out about an hour.
const MAX_LIFETIME: Duration = Duration::from_secs(3600);

/// The metadata server to ask.
#[derive(Debug, Clone)]
pub struct GcpMetadataConfig {
    /// Defaults to [`DEFAULT_GCE_METADATA`]; `IMAGELIB_PROVIDERS__GCE_METADATA`, or
    /// `GCE_METADATA_HOST` (host and port) as Google's libraries honour it.
    pub endpoint: Url,
    pub guard: NetworkGuard,
    pub timeouts: ExchangeTimeouts,
}

impl GcpMetadataConfig {
    pub fn new(endpoint: Option<Url>) -> Result<Self> {
        let endpoint = match endpoint {
            Some(endpoint) => endpoint,
            None => Url::parse(DEFAULT_GCE_METADATA)
                .map_err(|e| Error::Config(format!("the default metadata server: {e}")))?,
        };
        Ok(GcpMetadataConfig {
            endpoint,
            guard: NetworkGuard::default(),
            timeouts: ExchangeTimeouts {
                connect: Duration::from_secs(3),
                request: Duration::from_secs(10),
            },
        })
    }

    /// `GCE_METADATA_HOST`'s form: `host[:port]`, no scheme.
    pub fn endpoint_from_host(host: &str) -> Result<Url> {
        let host = host.trim().trim_end_matches('/');
        if host.is_empty() || host.contains("://") || host.contains(['/', '@', '?', '#']) {
            return Err(Error::Config(
                "GCE_METADATA_HOST must be host[:port], without a scheme or a path".into(),
            ));
        }
        Url::parse(&format!("http://{host}/"))
            .map_err(|e| Error::Config(format!("GCE_METADATA_HOST: {e}")))
    }
}

/// The metadata server's access token provider.
pub struct GcpMetadataProvider {
    token_url: Url,
    http: ExchangeHttp,
    cache: CredentialCache,
}

impl fmt::Debug for GcpMetadataProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcpMetadataProvider")
            .field("token_url", &self.token_url.as_str())
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl GcpMetadataProvider {
    pub fn new(config: GcpMetadataConfig) -> Result<Self> {
        let mut base = config.endpoint;
        if base.query().is_some() {
            return Err(Error::Config(
                "the metadata server's address must not hold a query".into(),
            ));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let token_url = base
            .join(METADATA_TOKEN_PATH)
            .map_err(|e| Error::Config(format!("cannot build the metadata token URL: {e}")))?;
        let http = ExchangeHttp::metadata(&token_url, &config.guard, config.timeouts)?;
        Ok(GcpMetadataProvider {
            token_url,
            http,
            cache: CredentialCache::default(),
        })
    }

    pub fn token_url(&self) -> &Url {
        &self.token_url
    }

    async fn exchange(&self) -> Result<ProvidedCredentials> {
        #[derive(Deserialize)]
        struct Token {
            access_token: Option<String>,
            expires_in: Option<f64>,
            token_type: Option<String>,
        }
        let url = &self.token_url;
        let now = SystemTime::now();
        tracing::debug!(endpoint = %url, "GCE metadata server access token");
        let request = self
            .http
            .get(url)
            .header("metadata-flavor", "Google")
            .header("accept", "application/json");
        let answer = self.http.send(url, request).await?;
        if !answer.status.is_success() {
            return Err(metadata_error(url, &answer));
        }
        let flavor = answer
            .headers
            .get("metadata-flavor")
            .and_then(|v| v.to_str().ok());
        if flavor != Some("Google") {
            return Err(Error::protocol(
                url,
                "the answer has no `Metadata-Flavor: Google`: not a GCE metadata server",
            ));
        }
        let token: Token = serde_json::from_slice(&answer.body)
            .map_err(|e| json_error(url, "the metadata token answer", &e))?;
        let access_token = token
            .access_token
            .filter(|t| !t.is_empty() && t.len() <= 8 * 1024)
            .ok_or_else(|| Error::protocol(url, "the metadata answer holds no access_token"))?;
        if let Some(kind) = token.token_type.as_deref()
            && !kind.eq_ignore_ascii_case("bearer")
        {
            return Err(Error::protocol(
                url,
                format!("the metadata token is of type `{}`, not Bearer", clip(kind)),
            ));
        }
        let lifetime = token
            .expires_in
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(|s| Duration::from_secs_f64(s.min(MAX_LIFETIME.as_secs_f64())))
            .ok_or_else(|| Error::protocol(url, "the metadata answer holds no expires_in"))?;
        Ok(basic_until(
            GCP_ACCESS_TOKEN_USERNAME,
            access_token,
            now + lifetime,
        ))
    }
}

impl CredentialProvider for GcpMetadataProvider {
    fn credentials(&self) -> BoxFuture<'_, Result<ProvidedCredentials, Error>> {
        Box::pin(self.cache.get_or_exchange(|| self.exchange()))
    }

    fn invalidate(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.cache.clear())
    }
}

/// The metadata server answers errors as short text (`403` without the flavor header, `404`
/// without a service account).
fn metadata_error(url: &Url, answer: &Answer) -> Error {
    let url_s = url.to_string();
    match answer.status.as_u16() {
        404 => Error::Unauthorized {
            url: url_s,
            reason: "the metadata server has no default service account for this workload \
                     (is workload identity enabled for its Kubernetes service account?)"
                .into(),
        },
        401 | 403 => Error::Unauthorized {
            url: url_s,
            reason: format!("the metadata server answered {}", answer.status),
        },
        _ => answer.generic_error(
            url,
            format!("the metadata server answered {}", answer.status),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let p = GcpMetadataProvider::new(GcpMetadataConfig::new(None).unwrap()).unwrap();
        assert_eq!(
            p.token_url().as_str(),
            "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token"
        );
        let host = GcpMetadataConfig::endpoint_from_host("127.0.0.2:8080").unwrap();
        assert_eq!(host.as_str(), "http://127.0.0.2:8080/");
        for bad in ["", "http://x", "a/b", "u@h"] {
            assert!(GcpMetadataConfig::endpoint_from_host(bad).is_err(), "{bad}");
        }
    }
}
