//! Azure Container Registry with a service principal: an AAD access token (OAuth 2.0 client
//! credentials grant), exchanged at the registry's `/oauth2/exchange` for an ACR refresh
//! token.
//!
//! The refresh token is handed out the way `docker login` / `az acr login` use it: as the
//! password of the all-zero GUID user, which the registry's token endpoint accepts as Basic
//! credentials for the scope token flow. ACR refresh tokens last about 3 hours; the expiry is
//! the token's JWT `exp` claim, or 1 hour when it does not decode.
//!
//! The AAD token comes from a client secret (a service principal) or, with Azure workload
//! identity, from the pod's federated token file (`AZURE_FEDERATED_TOKEN_FILE`) presented as a
//! client assertion (`client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`);
//! the file is read again for every exchange, as the kubelet rotates it.
//!
//! (An ACR admin user needs none of this: pass `Credentials::basic(name, password)`.)

use std::fmt;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use url::Url;

use super::token_file::TokenFile;
use super::{
    Answer, CredentialCache, ExchangeHttp, ExchangeTimeouts, basic_until, clip, json_error,
    jwt_expiry,
};
use crate::auth::{CredentialProvider, ProvidedCredentials};
use crate::error::{Error, Result};
use crate::guard::NetworkGuard;

/// The username that goes with an ACR refresh token.
pub const ACR_REFRESH_TOKEN_USERNAME: &str = "00000000-0000-0000-0000-000000000000";

/// The AAD scope asked for by default: the ACR audience, a token good for container
/// registries only (not an Azure Resource Manager token, which could manage the whole
/// subscription wherever it leaks). `/oauth2/exchange` takes it, including on registries
/// that refuse ARM-audience tokens (`az acr config authentication-as-arm`).
pub const ACR_AAD_SCOPE: &str = "https://containerregistry.azure.net/.default";

/// The registry host suffixes of the Azure clouds: public, China (21Vianet), US Government.
/// (Azure Germany's `azurecr.de` was retired in 2021.)
pub const ACR_HOST_SUFFIXES: &[&str] = &[".azurecr.io", ".azurecr.cn", ".azurecr.us"];

/// Refuses a registry host that is not `<name>` under one of `suffixes`: a service
/// principal's token is only exchanged with Azure Container Registry itself.
pub fn check_acr_host(host: &str, suffixes: &[String]) -> Result<()> {
    let host_l = host.trim_end_matches('.').to_ascii_lowercase();
    let ok = suffixes.iter().any(|suffix| {
        let suffix = format!(".{}", suffix.trim_start_matches('.').to_ascii_lowercase());
        host_l
            .strip_suffix(suffix.as_str())
            .is_some_and(|name| !name.is_empty() && !name.contains('.'))
    });
    if ok {
        Ok(())
    } else {
        Err(Error::HostNotAllowed {
            host: host.to_owned(),
            reason: format!(
                "azure_service_principal credentials are only exchanged with Azure Container \
                 Registry hosts (<name>{}); configure IMAGELIB_PROVIDERS__ACR_SUFFIXES for \
                 another Azure cloud",
                suffixes.join(", <name>")
            ),
        })
    }
}

/// The public cloud's AAD authority.
pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com/";

/// When the refresh token is not a JWT with an `exp`.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// The variable that names the federated token file of Azure workload identity.
pub const AZURE_FEDERATED_TOKEN_FILE: &str = "AZURE_FEDERATED_TOKEN_FILE";

const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How the application proves itself to AAD.
#[derive(Debug, Clone)]
pub enum AadClientCredential {
    /// A service principal's client secret.
    Secret(SecretString),
    /// Azure workload identity: the projected, federated service account token, read for
    /// every exchange.
    FederatedTokenFile(TokenFile),
}

/// An AAD application (tenant, client ID and its credential) and the registry it logs in to.
#[derive(Debug, Clone)]
pub struct AcrConfig {
    /// `myregistry.azurecr.io`: the `service` of the exchange.
    pub registry_host: String,
    pub tenant_id: String,
    pub client_id: String,
    pub credential: AadClientCredential,
    /// Defaults to `https://login.microsoftonline.com/` (set it for a sovereign cloud).
    pub authority: Option<Url>,
    /// Where `/oauth2/exchange` is; defaults to `https://<registry_host>/`.
    pub registry_base: Option<Url>,
    pub guard: NetworkGuard,
    /// A custom CA (PEM) added to the system roots.
    pub ca_pem: Option<String>,
    pub timeouts: ExchangeTimeouts,
    /// The registry host suffixes exchanged with (default [`ACR_HOST_SUFFIXES`]).
    pub allowed_suffixes: Vec<String>,
    /// The AAD scope of the token exchanged (default [`ACR_AAD_SCOPE`]).
    pub scope: String,
}

impl AcrConfig {
    /// Default authority, registry base, guard and timeouts, no custom CA.
    pub fn new(
        registry_host: impl Into<String>,
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: SecretString,
    ) -> Self {
        AcrConfig {
            registry_host: registry_host.into(),
            tenant_id: tenant_id.into(),
            client_id: client_id.into(),
            credential: AadClientCredential::Secret(client_secret),
            authority: None,
            registry_base: None,
            guard: NetworkGuard::default(),
            ca_pem: None,
            timeouts: ExchangeTimeouts::default(),
            allowed_suffixes: ACR_HOST_SUFFIXES.iter().map(|s| s.to_string()).collect(),
            scope: ACR_AAD_SCOPE.to_owned(),
        }
    }
}

impl AcrConfig {
    /// Azure workload identity: the federated token in `token_file` as the client assertion.
    pub fn workload_identity(
        registry_host: impl Into<String>,
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        token_file: TokenFile,
    ) -> Self {
        let mut config = Self::new(
            registry_host,
            tenant_id,
            client_id,
            SecretString::from(String::new()),
        );
        config.credential = AadClientCredential::FederatedTokenFile(token_file);
        config
    }
}

/// The AAD → ACR refresh token exchanger.
pub struct AcrProvider {
    registry_host: String,
    scope: String,
    tenant_id: String,
    client_id: String,
    credential: AadClientCredential,
    token_url: Url,
    exchange_url: Url,
    http: ExchangeHttp,
    cache: CredentialCache,
}

impl fmt::Debug for AcrProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcrProvider")
            .field("registry_host", &self.registry_host)
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("token_url", &self.token_url.as_str())
            .field("exchange_url", &self.exchange_url.as_str())
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl AcrProvider {
    pub fn new(config: AcrConfig) -> Result<Self> {
        let registry_host = config.registry_host.trim().to_ascii_lowercase();
        let parsed = Url::parse(&format!("https://{registry_host}/")).ok();
        if registry_host.is_empty()
            || parsed.as_ref().is_none_or(|u| {
                u.path() != "/"
                    || !u.username().is_empty()
                    || u.query().is_some()
                    || u.fragment().is_some()
                    || u.host_str().is_none()
            })
        {
            return Err(Error::Config(format!(
                "`{registry_host}` is not a registry host (like myregistry.azurecr.io)"
            )));
        }
        check_acr_host(&registry_host, &config.allowed_suffixes)?;
        let tenant_id = config.tenant_id.trim().to_owned();
        if tenant_id.is_empty()
            || !tenant_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        {
            return Err(Error::Config(
                "the tenant must be a directory ID (GUID) or domain".into(),
            ));
        }
        let client_id = config.client_id.trim().to_owned();
        if client_id.is_empty() {
            return Err(Error::Config("the client ID is empty".into()));
        }
        if let AadClientCredential::Secret(secret) = &config.credential
            && secret.expose_secret().is_empty()
        {
            return Err(Error::Config("the client secret is empty".into()));
        }
        let authority = match config.authority {
            Some(authority) => authority,
            None => Url::parse(DEFAULT_AUTHORITY)
                .map_err(|e| Error::Config(format!("the default AAD authority: {e}")))?,
        };
        let registry_base = match config.registry_base {
            // The exchange goes to the registry itself (a loopback endpoint only in tests).
            Some(base)
                if base
                    .host_str()
                    .is_some_and(|h| h.eq_ignore_ascii_case(&registry_host))
                    || super::is_loopback(&base) =>
            {
                base
            }
            Some(base) => {
                return Err(Error::HostNotAllowed {
                    host: base.host_str().unwrap_or_default().to_owned(),
                    reason: format!(
                        "the ACR exchange goes to the registry {registry_host} itself, not another host"
                    ),
                });
            }
            None => parsed.ok_or_else(|| Error::Config("no registry URL".into()))?,
        };
        let scope = if config.scope.trim().is_empty() {
            ACR_AAD_SCOPE.to_owned()
        } else {
            config.scope.trim().to_owned()
        };
        let token_url = join(&authority, &format!("{tenant_id}/oauth2/v2.0/token"))?;
        let exchange_url = join(&registry_base, "oauth2/exchange")?;
        let http = ExchangeHttp::new(
            &[&authority, &registry_base],
            config.guard,
            config.ca_pem.as_deref(),
            config.timeouts,
        )?;
        Ok(AcrProvider {
            registry_host,
            scope,
            tenant_id,
            client_id,
            credential: config.credential,
            token_url,
            exchange_url,
            http,
            cache: CredentialCache::default(),
        })
    }

    /// The AAD token endpoint: `<authority>/<tenant>/oauth2/v2.0/token`.
    pub fn token_url(&self) -> &Url {
        &self.token_url
    }

    /// The registry's `/oauth2/exchange`.
    pub fn exchange_url(&self) -> &Url {
        &self.exchange_url
    }

    async fn aad_token(&self) -> Result<SecretString> {
        #[derive(Deserialize)]
        struct Token {
            access_token: Option<String>,
        }
        let url = &self.token_url;
        let (credential, assertion) = match &self.credential {
            AadClientCredential::Secret(secret) => (secret.clone(), false),
            AadClientCredential::FederatedTokenFile(file) => (file.read().await?, true),
        };
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("scope", self.scope.as_str()),
        ];
        if assertion {
            form.push(("client_assertion_type", JWT_BEARER_ASSERTION));
            form.push(("client_assertion", credential.expose_secret()));
        } else {
            form.push(("client_secret", credential.expose_secret()));
        }
        tracing::debug!(token_url = %url, workload_identity = assertion, "AAD client credentials grant");
        let request = self
            .http
            .post(url)
            .header("accept", "application/json")
            .form(&form);
        let answer = self.http.send(url, request).await?;
        if !answer.status.is_success() {
            return Err(oauth_error(url, &answer, "AAD"));
        }
        let token: Token = serde_json::from_slice(&answer.body)
            .map_err(|e| json_error(url, "the AAD answer", &e))?;
        token
            .access_token
            .filter(|t| !t.is_empty())
            .map(SecretString::from)
            .ok_or_else(|| Error::protocol(url, "the AAD answer holds no access_token"))
    }

    async fn exchange(&self) -> Result<ProvidedCredentials> {
        #[derive(Deserialize)]
        struct Exchanged {
            refresh_token: Option<String>,
        }
        let aad_token = self.aad_token().await?;
        let url = &self.exchange_url;
        let form = [
            ("grant_type", "access_token"),
            ("service", self.registry_host.as_str()),
            ("tenant", self.tenant_id.as_str()),
            ("access_token", aad_token.expose_secret()),
        ];
        tracing::debug!(exchange_url = %url, "ACR refresh token exchange");
        let request = self
            .http
            .post(url)
            .header("accept", "application/json")
            .form(&form);
        let answer = self.http.send(url, request).await?;
        if !answer.status.is_success() {
            return Err(oauth_error(url, &answer, "ACR"));
        }
        let exchanged: Exchanged = serde_json::from_slice(&answer.body)
            .map_err(|e| json_error(url, "the ACR exchange answer", &e))?;
        let refresh_token = exchanged
            .refresh_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Error::protocol(url, "the ACR exchange answer holds no refresh_token")
            })?;
        let now = SystemTime::now();
        let expires_at = jwt_expiry(&refresh_token)
            .filter(|at| *at > now)
            .unwrap_or(now + DEFAULT_LIFETIME);
        Ok(basic_until(
            ACR_REFRESH_TOKEN_USERNAME,
            refresh_token,
            expires_at,
        ))
    }
}

impl CredentialProvider for AcrProvider {
    fn credentials(&self) -> BoxFuture<'_, Result<ProvidedCredentials, Error>> {
        Box::pin(self.cache.get_or_exchange(|| self.exchange()))
    }

    fn invalidate(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.cache.clear())
    }
}

fn join(base: &Url, path: &str) -> Result<Url> {
    let mut base = base.clone();
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    base.join(path)
        .map_err(|e| Error::Config(format!("cannot build an endpoint from {base}: {e}")))
}

/// OAuth 2.0 errors (`{"error","error_description"}`, AAD) and registry errors
/// (`{"errors":[{"code","message"}]}`, ACR). 400 and 401 mean the credentials were refused.
fn oauth_error(url: &Url, answer: &Answer, who: &str) -> Error {
    #[derive(Deserialize, Default)]
    struct OAuthError {
        error: Option<String>,
        error_description: Option<String>,
        #[serde(default)]
        errors: Vec<RegistryError>,
    }
    #[derive(Deserialize)]
    struct RegistryError {
        code: Option<String>,
        message: Option<String>,
    }
    let parsed: OAuthError = serde_json::from_slice(&answer.body).unwrap_or_default();
    let first = parsed.errors.into_iter().next();
    let code = parsed
        .error
        .or_else(|| first.as_ref().and_then(|e| e.code.clone()));
    let message = parsed
        .error_description
        .or_else(|| first.and_then(|e| e.message));
    let reason = match (code, message) {
        (Some(code), Some(message)) => format!("{who}: {}: {}", clip(&code), clip(&message)),
        (Some(text), None) | (None, Some(text)) => format!("{who}: {}", clip(&text)),
        (None, None) => format!("{who} answered {}", answer.status),
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

    fn config() -> AcrConfig {
        AcrConfig::new(
            "MyRegistry.azurecr.io",
            "72f988bf-86f1-41af-91ab-2d7cd011db47",
            "app-id",
            SecretString::from("canary-secret"),
        )
    }

    #[test]
    fn default_endpoints() {
        let p = AcrProvider::new(config()).unwrap();
        assert_eq!(
            p.token_url().as_str(),
            "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token"
        );
        assert_eq!(
            p.exchange_url().as_str(),
            "https://myregistry.azurecr.io/oauth2/exchange"
        );
        let mut c = config();
        c.authority = Some("https://login.microsoftonline.us/prefix".parse().unwrap());
        let p = AcrProvider::new(c).unwrap();
        assert_eq!(
            p.token_url().as_str(),
            "https://login.microsoftonline.us/prefix/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token"
        );
        assert!(!format!("{p:?}").contains("canary"));
    }

    #[test]
    fn refuses_bad_hosts_tenants_and_endpoints() {
        for host in [
            "",
            "a/b",
            "user@host",
            "host?x",
            "evil.example",
            "azurecr.io",
            "a.b.azurecr.io",
            "myregistry.azurecr.io.evil.example",
        ] {
            let mut c = config();
            c.registry_host = host.into();
            assert!(AcrProvider::new(c).is_err(), "{host}");
        }
        let mut c = config();
        c.registry_host = "evil.example".into();
        let err = AcrProvider::new(c).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::HostNotAllowed, "{err}");
        for host in ["r.azurecr.cn", "r.azurecr.us"] {
            let mut c = config();
            c.registry_host = host.into();
            assert!(AcrProvider::new(c).is_ok(), "{host}");
        }
        let mut c = config();
        c.registry_host = "r.azurecr.de".into();
        assert!(AcrProvider::new(c.clone()).is_err(), "retired cloud");
        c.allowed_suffixes = vec!["azurecr.de".into()];
        assert!(AcrProvider::new(c).is_ok(), "configured suffix");
        let mut c = config();
        c.registry_base = Some("https://evil.example/".parse().unwrap());
        let err = AcrProvider::new(c).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::HostNotAllowed, "{err}");
        let mut c = config();
        c.tenant_id = "../common".into();
        assert!(AcrProvider::new(c).is_err());
        let mut c = config();
        c.registry_base = Some("http://myregistry.azurecr.io/".parse().unwrap());
        let err = AcrProvider::new(c).unwrap_err();
        assert!(err.to_string().contains("HTTPS"), "{err}");
    }
}
