//! GitHub App → installation token, for GitHub Container Registry and GitHub's REST API.
//!
//! A personal access token belongs to a person; an installation token (`ghs_…`) belongs
//! to an app installed on an organisation, but expires after an hour. Storing the App
//! itself (its ID, the installation's ID and the app's private key) lets the token be
//! renewed here, the way GitHub documents it:
//!
//! 1. a JWT signed RS256 with the app's private key: `iat` 60 s in the past (clock drift),
//!    `exp` ten minutes after `iat` (GitHub's maximum), `iss` the App ID;
//! 2. `POST {api}/app/installations/{installation_id}/access_tokens` with
//!    `Authorization: Bearer <jwt>`, answered `201` with `{"token": "ghs_…",
//!    "expires_at": "…Z", "permissions": {…}}`.
//!
//! The token is handed out as `x-access-token` / token
//! ([`INSTALLATION_TOKEN_USERNAME`]): Basic at ghcr.io's token realm, and the bearer of the
//! package listing ([`crate::vendor::ghcr::owner_packages`]), which sends it to the API's
//! origin only. The JWT goes nowhere but the configured API origin
//! (`IMAGELIB_PROVIDERS__GITHUB_API`, default `https://api.github.com`). Caching, renewal
//! and single flight are the shared providers' ([`super`]).

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
use crate::vendor::ghcr::{
    API_VERSION, ApiRateLimit, DEFAULT_API, INSTALLATION_TOKEN_USERNAME, MAX_RATE_LIMIT_WAIT,
};

/// How far `iat` is set in the past, as GitHub recommends against clock drift.
const CLOCK_DRIFT: Duration = Duration::from_secs(60);
/// `exp - iat`: GitHub refuses a JWT valid for more than ten minutes.
const JWT_LIFETIME: Duration = Duration::from_secs(600);
/// An installation token lives an hour; an answer without `expires_at` is taken as that,
/// and one claiming longer is not believed.
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// App and installation IDs are positive integers; 19 digits fit a `u64`.
const MAX_ID_DIGITS: usize = 19;
/// A PEM RSA key of 4096 bits is about 3.3 KiB; GitHub's are 2048 bits.
pub const MAX_GITHUB_APP_KEY_BYTES: usize = 16 * 1024;

/// Whether `id` can be a GitHub App ID or installation ID: 1 to 19 ASCII digits, not 0.
pub fn is_github_id(id: &str) -> bool {
    (1..=MAX_ID_DIGITS).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_digit())
        && id.parse::<u64>().is_ok_and(|n| n > 0)
}

/// Checks that `pem` is a usable RSA private key (PKCS#1 `RSA PRIVATE KEY`, as GitHub
/// issues it, or PKCS#8) of bounded size; the error never quotes it.
pub fn check_github_app_key(pem: &str) -> Result<()> {
    if pem.len() > MAX_GITHUB_APP_KEY_BYTES {
        return Err(Error::Config(
            "the GitHub App private_key is larger than any RSA key GitHub issues".into(),
        ));
    }
    RsaSigner::from_pem(pem, "the GitHub App private_key").map(|_| ())
}

/// A GitHub App installation.
#[derive(Debug, Clone)]
pub struct GitHubAppConfig {
    /// The App ID (the app's settings page, "App ID").
    pub app_id: String,
    /// The installation's ID (the last segment of the installation's settings URL).
    pub installation_id: String,
    /// The app's private key (PEM), as downloaded from the app's settings.
    pub private_key: SecretString,
    /// GitHub's REST API: `https://api.github.com`, or a GitHub Enterprise Server's
    /// `https://<host>/api/v3` (a loopback `http://` one is accepted, for tests).
    pub api: Url,
    pub guard: NetworkGuard,
    /// A custom CA (PEM) added to the system roots.
    pub ca_pem: Option<String>,
    pub timeouts: ExchangeTimeouts,
}

impl GitHubAppConfig {
    /// The public API, default guard and timeouts, no custom CA.
    pub fn new(app_id: String, installation_id: String, private_key: SecretString) -> Self {
        GitHubAppConfig {
            app_id,
            installation_id,
            private_key,
            api: DEFAULT_API.parse().expect("a constant URL"),
            guard: NetworkGuard::default(),
            ca_pem: None,
            timeouts: ExchangeTimeouts::default(),
        }
    }
}

/// The GitHub App → installation token exchanger.
pub struct GitHubAppProvider {
    app_id: u64,
    installation_id: String,
    key: RsaSigner,
    url: Url,
    http: ExchangeHttp,
    cache: CredentialCache,
}

impl fmt::Debug for GitHubAppProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitHubAppProvider")
            .field("app_id", &self.app_id)
            .field("installation_id", &self.installation_id)
            .field("url", &self.url.as_str())
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl GitHubAppProvider {
    /// Checks the IDs and parses the key (errors never quote it).
    pub fn new(config: GitHubAppConfig) -> Result<Self> {
        let app_id = config.app_id.trim();
        if !is_github_id(app_id) {
            return Err(Error::Config(
                "the GitHub App's app_id is a number (the app's settings, \"App ID\")".into(),
            ));
        }
        let installation_id = config.installation_id.trim();
        if !is_github_id(installation_id) {
            return Err(Error::Config(
                "the GitHub App's installation_id is a number (the last segment of the \
                 installation's URL)"
                    .into(),
            ));
        }
        if config.private_key.expose_secret().len() > MAX_GITHUB_APP_KEY_BYTES {
            return Err(Error::Config(
                "the GitHub App private_key is larger than any RSA key GitHub issues".into(),
            ));
        }
        let key = RsaSigner::from_pem(
            config.private_key.expose_secret(),
            "the GitHub App private_key",
        )?;
        let mut base = config.api.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let url = base
            .join(&format!(
                "app/installations/{installation_id}/access_tokens"
            ))
            .map_err(|e| Error::Config(format!("the GitHub API `{}`: {e}", config.api)))?;
        let http = ExchangeHttp::new(
            &[&url],
            config.guard,
            config.ca_pem.as_deref(),
            config.timeouts,
        )?;
        Ok(GitHubAppProvider {
            app_id: app_id.parse().unwrap_or_default(),
            installation_id: installation_id.to_owned(),
            key,
            url,
            http,
            cache: CredentialCache::default(),
        })
    }

    /// Where installation tokens are asked for.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The app's JWT for `now`.
    fn jwt(&self, now: SystemTime) -> Result<SecretString> {
        let iat = now
            .checked_sub(CLOCK_DRIFT)
            .unwrap_or(now)
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let header = serde_json::json!({ "alg": "RS256", "typ": "JWT" });
        let claims = serde_json::json!({
            "iat": iat,
            "exp": iat + JWT_LIFETIME.as_secs(),
            "iss": self.app_id,
        });
        self.key.sign(&header, &claims)
    }

    async fn exchange(&self) -> Result<ProvidedCredentials> {
        #[derive(Deserialize)]
        struct Token {
            token: Option<String>,
            expires_at: Option<String>,
        }
        let now = SystemTime::now();
        let jwt = self.jwt(now)?;
        let url = &self.url;
        tracing::debug!(%url, app_id = self.app_id, "GitHub App installation token");
        let request = self
            .http
            .post(url)
            .bearer_auth(jwt.expose_secret())
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", API_VERSION);
        let answer = self.http.send(url, request).await?;
        if !answer.status.is_success() {
            return Err(self.github_error(url, &answer));
        }
        let token: Token = serde_json::from_slice(&answer.body)
            .map_err(|e| json_error(url, "the installation token answer", &e))?;
        let access = token
            .token
            .filter(|t| !t.is_empty() && t.len() <= 4096)
            .ok_or_else(|| Error::protocol(url, "the answer holds no installation token"))?;
        let latest = now + TOKEN_LIFETIME;
        let expires_at = match token.expires_at {
            None => latest,
            Some(at) => chrono::DateTime::parse_from_rfc3339(at.trim())
                .map(SystemTime::from)
                .map_err(|_| Error::protocol(url, "the answer's expires_at is not a date"))?
                .min(latest),
        };
        if expires_at <= now {
            return Err(Error::protocol(
                url,
                "GitHub handed out an installation token that has already expired (is this \
                 machine's clock right?)",
            ));
        }
        Ok(basic_until(INSTALLATION_TOKEN_USERNAME, access, expires_at))
    }

    /// GitHub's errors (`{"message": "…", "documentation_url": "…"}`) in words that say
    /// which of the three inputs is wrong.
    fn github_error(&self, url: &Url, answer: &Answer) -> Error {
        #[derive(Deserialize, Default)]
        struct Message {
            message: Option<String>,
        }
        let said = serde_json::from_slice::<Message>(&answer.body)
            .unwrap_or_default()
            .message
            .map(|m| clip(&m))
            .unwrap_or_else(|| format!("answered {}", answer.status));
        let url_s = url.to_string();
        let budget = ApiRateLimit::from_headers(&answer.headers);
        let retry_after = answer
            .headers
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| crate::transport::parse_retry_after(v, SystemTime::now()))
            .map(|d| d.min(MAX_RATE_LIMIT_WAIT));
        let rate_limited =
            budget.as_ref().is_some_and(|b| b.remaining == 0) || retry_after.is_some();
        match answer.status.as_u16() {
            401 => Error::Unauthorized {
                url: url_s,
                reason: format!(
                    "GitHub refused the JWT of the app {} ({said}); check the App ID and that \
                     the private key is one of the app's",
                    self.app_id
                ),
            },
            404 => Error::Unauthorized {
                url: url_s,
                reason: format!(
                    "GitHub knows no installation {} of the app {} ({said}); check the \
                     installation ID (the last segment of the installation's URL) and that the \
                     app is still installed",
                    self.installation_id, self.app_id
                ),
            },
            403 if rate_limited => Error::RateLimited {
                url: url_s,
                retry_after: retry_after.or_else(|| budget.and_then(|b| b.wait(SystemTime::now()))),
            },
            403 => Error::Forbidden {
                url: url_s,
                reason: format!(
                    "GitHub refused an installation token of the app {} ({said})",
                    self.app_id
                ),
            },
            _ => answer.generic_error(url, said),
        }
    }
}

impl CredentialProvider for GitHubAppProvider {
    fn credentials(&self) -> BoxFuture<'_, Result<ProvidedCredentials, Error>> {
        Box::pin(self.cache.get_or_exchange(|| self.exchange()))
    }

    fn invalidate(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.cache.clear())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_bounded_digits() {
        for ok in ["1", "123456", "7890", "9223372036854775807"] {
            assert!(is_github_id(ok), "{ok}");
        }
        for bad in [
            "",
            "0",
            "-1",
            "12a",
            " 1",
            "1.0",
            "99999999999999999999",
            "１",
        ] {
            assert!(!is_github_id(bad), "{bad}");
        }
    }

    #[test]
    fn bad_inputs_are_refused_without_quoting_the_key() {
        let config = |app: &str, inst: &str, key: &str| {
            GitHubAppConfig::new(app.into(), inst.into(), SecretString::from(key.to_owned()))
        };
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nY2FuYXJ5\n-----END RSA PRIVATE KEY-----\n";
        for c in [
            config("app", "1", pem),
            config("1", "../1", pem),
            config("1", "1", "canary"),
            config("1", "1", pem),
            config("1", "1", &"canary".repeat(4000)),
        ] {
            let err = GitHubAppProvider::new(c).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Config, "{err}");
            let text = err.to_string();
            assert!(
                !text.contains("canary") && !text.contains("Y2FuYXJ5"),
                "{text}"
            );
        }
        assert!(check_github_app_key(pem).is_err());
    }
}
