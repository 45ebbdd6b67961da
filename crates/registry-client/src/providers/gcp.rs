//! Google Artifact Registry with a service account key: the OAuth 2.0 JWT bearer grant
//! (RFC 7523), the way Google's client libraries do it.
//!
//! An RS256 JWT (`iss` = the key's `client_email`, `scope` = cloud-platform, `aud` = the key's
//! `token_uri`, one hour) signed with the key's `private_key` is posted to `token_uri` as
//! `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<jwt>`; the access token
//! in the answer is handed out as `oauth2accesstoken` / token, which Artifact Registry
//! accepts as Basic credentials.
//!
//! The key's `token_uri` is only followed to Google's own token hosts
//! ([`GOOGLE_TOKEN_HOSTS`]) or a loopback test endpoint, unless the operator configures the
//! endpoint (`IMAGELIB_PROVIDERS__GOOGLE_TOKEN`): a key JSON cannot send its signed assertion
//! elsewhere. The access token is only handed to Artifact Registry and Container Registry
//! hosts ([`check_gcr_host`]).
//!
//! See the [module docs](super) for the `_json_key` and `oauth2accesstoken` forms, which need
//! no exchange.

use std::fmt;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use url::Url;

use super::jwt::RsaSigner;
use super::{
    Answer, CredentialCache, ExchangeHttp, ExchangeTimeouts, basic_until, clip, json_error,
};
use crate::auth::{CredentialProvider, ProvidedCredentials};
use crate::error::{Error, Result};
use crate::guard::NetworkGuard;

/// The username that goes with a Google OAuth access token.
pub const GCP_ACCESS_TOKEN_USERNAME: &str = "oauth2accesstoken";

/// The scope asked for; Artifact Registry reads need no narrower one.
pub const GCP_CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// The hosts of Google's OAuth token endpoints that a key's `token_uri` may name.
pub const GOOGLE_TOKEN_HOSTS: &[&str] = &[
    "oauth2.googleapis.com",
    "accounts.google.com",
    "www.googleapis.com",
];

/// Google registry hosts: `gcr.io` and `<region>.gcr.io` (Container Registry, now served by
/// Artifact Registry), `<location>-docker.pkg.dev` (Artifact Registry).
pub const GCR_HOST_SUFFIXES: &[&str] = &[".gcr.io", "-docker.pkg.dev"];

/// Refuses a registry host that is not a Google registry: a Google access token goes only to
/// `<suffix without its dot>` or `<one label><suffix>`, for one of `suffixes` (default
/// [`GCR_HOST_SUFFIXES`]).
pub fn check_gcr_host(host: &str, suffixes: &[String]) -> Result<()> {
    let host_l = host.trim_end_matches('.').to_ascii_lowercase();
    let host_l = host_l.split(':').next().unwrap_or_default();
    let ok = suffixes.iter().any(|suffix| {
        let suffix = suffix.trim().to_ascii_lowercase();
        if suffix.is_empty() {
            return false;
        }
        if let Some(bare) = suffix.strip_prefix('.')
            && host_l == bare
        {
            return true;
        }
        host_l.strip_suffix(suffix.as_str()).is_some_and(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
    });
    if ok {
        Ok(())
    } else {
        Err(Error::HostNotAllowed {
            host: host.to_owned(),
            reason: format!(
                "Google credentials are only used for Google registries (gcr.io, <region>.gcr.io, \
                 <location>-docker.pkg.dev; configured: {}); configure \
                 IMAGELIB_PROVIDERS__GCR_SUFFIXES for another",
                suffixes.join(", ")
            ),
        })
    }
}

const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
const ASSERTION_LIFETIME: Duration = Duration::from_secs(3600);

/// A service account key, as downloaded from the console (`type: service_account`).
#[derive(Debug, Clone)]
pub struct GcpServiceAccountConfig {
    /// The whole key JSON. Its `token_uri` is where the exchange goes (a loopback `http://`
    /// one is accepted, for tests).
    pub key_json: SecretString,
    /// The token endpoint instead of the key's `token_uri` (`IMAGELIB_PROVIDERS__GOOGLE_TOKEN`).
    pub token_uri: Option<Url>,
    pub guard: NetworkGuard,
    /// A custom CA (PEM) added to the system roots.
    pub ca_pem: Option<String>,
    pub timeouts: ExchangeTimeouts,
}

impl GcpServiceAccountConfig {
    /// Default guard and timeouts, no custom CA.
    pub fn new(key_json: SecretString) -> Self {
        GcpServiceAccountConfig {
            key_json,
            token_uri: None,
            guard: NetworkGuard::default(),
            ca_pem: None,
            timeouts: ExchangeTimeouts::default(),
        }
    }
}

/// The service account key → access token exchanger.
pub struct GcpServiceAccountProvider {
    client_email: String,
    private_key_id: Option<String>,
    key: RsaSigner,
    token_uri: Url,
    http: ExchangeHttp,
    cache: CredentialCache,
}

impl fmt::Debug for GcpServiceAccountProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcpServiceAccountProvider")
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri.as_str())
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct ServiceAccountKey {
    #[serde(rename = "type")]
    kind: Option<String>,
    client_email: Option<String>,
    private_key_id: Option<String>,
    private_key: Option<String>,
    token_uri: Option<String>,
}

impl GcpServiceAccountProvider {
    /// Parses the key (errors never quote it) and prepares the signer.
    pub fn new(config: GcpServiceAccountConfig) -> Result<Self> {
        let key: ServiceAccountKey = serde_json::from_str(config.key_json.expose_secret())
            .map_err(|e| {
                Error::Config(format!(
                    "the service account key is not a key JSON object (line {}, column {})",
                    e.line(),
                    e.column()
                ))
            })?;
        if let Some(kind) = key.kind.as_deref()
            && kind != "service_account"
        {
            return Err(Error::Config(format!(
                "the key is of type `{}`, not `service_account`",
                clip(kind)
            )));
        }
        let client_email = key
            .client_email
            .filter(|e| !e.trim().is_empty())
            .ok_or_else(|| Error::Config("the service account key has no client_email".into()))?;
        let private_key = key
            .private_key
            .map(SecretString::from)
            .ok_or_else(|| Error::Config("the service account key has no private_key".into()))?;
        let key_pair = RsaSigner::from_pem(
            private_key.expose_secret(),
            "the service account private_key",
        )?;
        let token_uri = match config.token_uri {
            Some(configured) => configured,
            None => {
                let uri = key
                    .token_uri
                    .as_deref()
                    .unwrap_or(DEFAULT_TOKEN_URI)
                    .parse::<Url>()
                    .map_err(|e| Error::Config(format!("the key's token_uri is not a URL: {e}")))?;
                let google = uri.host_str().is_some_and(|h| {
                    GOOGLE_TOKEN_HOSTS
                        .iter()
                        .any(|g| h.trim_end_matches('.').eq_ignore_ascii_case(g))
                });
                if !google && !super::is_loopback(&uri) {
                    return Err(Error::HostNotAllowed {
                        host: uri.host_str().unwrap_or_default().to_owned(),
                        reason: "the key's token_uri is not one of Google's token endpoints \
                                 (set IMAGELIB_PROVIDERS__GOOGLE_TOKEN for a private one)"
                            .into(),
                    });
                }
                uri
            }
        };
        let http = ExchangeHttp::new(
            &[&token_uri],
            config.guard,
            config.ca_pem.as_deref(),
            config.timeouts,
        )?;
        Ok(GcpServiceAccountProvider {
            client_email,
            private_key_id: key.private_key_id.filter(|k| !k.is_empty()),
            key: key_pair,
            token_uri,
            http,
            cache: CredentialCache::default(),
        })
    }

    pub fn client_email(&self) -> &str {
        &self.client_email
    }

    pub fn token_uri(&self) -> &Url {
        &self.token_uri
    }

    /// The signed JWT assertion for `now`.
    fn assertion(&self, now: SystemTime) -> Result<SecretString> {
        let iat = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mut header = serde_json::json!({ "alg": "RS256", "typ": "JWT" });
        if let Some(kid) = &self.private_key_id {
            header["kid"] = kid.as_str().into();
        }
        let claims = serde_json::json!({
            "iss": self.client_email,
            "scope": GCP_CLOUD_PLATFORM_SCOPE,
            "aud": self.token_uri.as_str(),
            "iat": iat,
            "exp": iat + ASSERTION_LIFETIME.as_secs(),
        });
        self.key.sign(&header, &claims)
    }

    async fn exchange(&self) -> Result<ProvidedCredentials> {
        #[derive(Deserialize)]
        struct Token {
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let now = SystemTime::now();
        let assertion = self.assertion(now)?;
        let url = &self.token_uri;
        let form = [
            ("grant_type", JWT_BEARER_GRANT),
            ("assertion", assertion.expose_secret()),
        ];
        tracing::debug!(token_uri = %url, client_email = %self.client_email, "Google JWT bearer grant");
        let request = self
            .http
            .post(url)
            .header("accept", "application/json")
            .form(&form);
        let answer = self.http.send(url, request).await?;
        if !answer.status.is_success() {
            return Err(oauth_error(url, &answer));
        }
        let token: Token = serde_json::from_slice(&answer.body)
            .map_err(|e| json_error(url, "the token answer", &e))?;
        let access_token = token
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::protocol(url, "the token answer holds no access_token"))?;
        let lifetime = token
            .expires_in
            .filter(|s| *s > 0)
            .map(Duration::from_secs)
            .unwrap_or(ASSERTION_LIFETIME)
            .min(Duration::from_secs(24 * 3600));
        Ok(basic_until(
            GCP_ACCESS_TOKEN_USERNAME,
            access_token,
            now + lifetime,
        ))
    }
}

impl CredentialProvider for GcpServiceAccountProvider {
    fn credentials(&self) -> BoxFuture<'_, Result<ProvidedCredentials, Error>> {
        Box::pin(self.cache.get_or_exchange(|| self.exchange()))
    }

    fn invalidate(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.cache.clear())
    }
}

/// Google's OAuth errors: `{"error": "invalid_grant", "error_description": "…"}`.
fn oauth_error(url: &Url, answer: &Answer) -> Error {
    #[derive(Deserialize, Default)]
    struct OAuthError {
        error: Option<String>,
        error_description: Option<String>,
    }
    let parsed: OAuthError = serde_json::from_slice(&answer.body).unwrap_or_default();
    let reason = match (parsed.error, parsed.error_description) {
        (Some(code), Some(message)) => format!("{}: {}", clip(&code), clip(&message)),
        (Some(text), None) | (None, Some(text)) => clip(&text),
        (None, None) => format!("answered {}", answer.status),
    };
    let url_s = url.to_string();
    match answer.status.as_u16() {
        400 | 401 => Error::Unauthorized { url: url_s, reason },
        403 => Error::Forbidden { url: url_s, reason },
        _ => answer.generic_error(url, reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_keys_are_refused_without_quoting_them() {
        let cases = [
            "not json canary".to_owned(),
            r#"{"type":"service_account","client_email":["canary"]}"#.to_owned(),
            r#"{"type":"authorized_user","client_email":"a@b","private_key":"canary"}"#.to_owned(),
            r#"{"type":"service_account","private_key":"canary"}"#.to_owned(),
            r#"{"type":"service_account","client_email":"a@b"}"#.to_owned(),
            r#"{"type":"service_account","client_email":"a@b","private_key":"canary"}"#.to_owned(),
            r#"{"type":"service_account","client_email":"a@b","private_key":"-----BEGIN PRIVATE KEY-----\nY2FuYXJ5\n-----END PRIVATE KEY-----\n"}"#.to_owned(),
            r#"{"type":"service_account","client_email":"a@b","private_key":"-----BEGIN EC PRIVATE KEY-----\nY2FuYXJ5\n-----END EC PRIVATE KEY-----\n"}"#.to_owned(),
        ];
        for key in cases {
            let err = GcpServiceAccountProvider::new(GcpServiceAccountConfig::new(
                SecretString::from(key.clone()),
            ))
            .unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Config, "{key}: {err}");
            let text = err.to_string();
            assert!(
                !text.contains("canary") && !text.contains("Y2FuYXJ5"),
                "{text}"
            );
        }
    }

    #[test]
    fn gcr_hosts() {
        let d: Vec<String> = GCR_HOST_SUFFIXES.iter().map(|s| s.to_string()).collect();
        for ok in [
            "gcr.io",
            "eu.gcr.io",
            "us-docker.pkg.dev",
            "europe-west1-docker.pkg.dev",
            "GCR.IO.",
        ] {
            assert!(check_gcr_host(ok, &d).is_ok(), "{ok}");
        }
        for bad in [
            "evil.example",
            "gcr.io.evil.example",
            "a.b.gcr.io",
            "docker.pkg.dev",
            "-docker.pkg.dev",
            "evilgcr.io",
            "x.pkg.dev",
        ] {
            let err = check_gcr_host(bad, &d).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::HostNotAllowed, "{bad}");
        }
        assert!(check_gcr_host("r.gar.example", &[".gar.example".into()]).is_ok());
    }
}
