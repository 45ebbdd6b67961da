//! The credential forms an admin registers, as they are sealed and stored.
//!
//! registry-registry seals the JSON of [`StoredCredentials`]; sync-scanner opens it. Both
//! turn it into a [`CredentialProvider`] here, so the two never disagree on what a form
//! means, and the provider exchanges (ECR, ACR) live in one place.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::auth::{CredentialProvider, Credentials};
use crate::config::RegistryUrl;
use crate::error::Error;
use crate::guard::NetworkGuard;
use crate::providers::{AcrConfig, AcrProvider, EcrConfig, EcrProvider};

/// Credentials as stored, tagged by `kind`.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StoredCredentials {
    /// Anonymous access.
    #[default]
    None,
    /// Username and password: Harbor robot accounts (`robot$…`), ACR admin user, Docker
    /// Hub and GHCR tokens as passwords, GAR `_json_key` (password = the key JSON) and
    /// `oauth2accesstoken` (password = an access token).
    Basic {
        username: String,
        #[serde(serialize_with = "expose")]
        password: SecretString,
    },
    /// A bearer token sent as is.
    Token {
        #[serde(serialize_with = "expose")]
        token: SecretString,
    },
    /// An AWS access key, exchanged for 12-hour ECR tokens.
    AwsEcr {
        access_key_id: String,
        #[serde(serialize_with = "expose")]
        secret_access_key: SecretString,
        region: String,
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            serialize_with = "expose_opt"
        )]
        session_token: Option<SecretString>,
    },
    /// An Azure service principal, exchanged at the registry's `/oauth2/exchange`.
    AzureServicePrincipal {
        tenant_id: String,
        client_id: String,
        #[serde(serialize_with = "expose")]
        client_secret: SecretString,
    },
}

// Serialising exposes the secret: it is only ever done to produce the sealed plaintext.
fn expose<S: serde::Serializer>(s: &SecretString, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.expose_secret())
}

fn expose_opt<S: serde::Serializer>(s: &Option<SecretString>, ser: S) -> Result<S::Ok, S::Error> {
    match s {
        Some(s) => ser.serialize_str(s.expose_secret()),
        None => ser.serialize_none(),
    }
}

/// Where provider token endpoints are, and which registry hosts a cloud exchange serves,
/// when not the public clouds' defaults (sovereign clouds, private endpoints, tests).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProviderEndpoints {
    /// The ECR API endpoint (default `https://api.ecr.<region>.amazonaws.com`).
    pub ecr: Option<Url>,
    /// The Azure AD authority (default `https://login.microsoftonline.com`).
    pub aad: Option<Url>,
    /// `IMAGELIB_PROVIDERS__ACR_SUFFIXES`: the host suffixes an Azure service principal is
    /// exchanged for (default `.azurecr.io,.azurecr.cn,.azurecr.us`); a comma-separated
    /// string or a list.
    #[serde(deserialize_with = "string_or_list")]
    pub acr_suffixes: Option<Vec<String>>,
    /// `IMAGELIB_PROVIDERS__ACR_SCOPE`: the AAD scope of the token exchanged at
    /// `/oauth2/exchange` (default the ACR audience,
    /// `https://containerregistry.azure.net/.default`).
    pub acr_scope: Option<String>,
    /// `IMAGELIB_PROVIDERS__ECR_SUFFIXES`: the domain suffixes of ECR registry hosts
    /// `<account>.dkr.ecr.<region><suffix>` (default `.amazonaws.com,.amazonaws.com.cn`).
    #[serde(deserialize_with = "string_or_list")]
    pub ecr_suffixes: Option<Vec<String>>,
    /// `IMAGELIB_PROVIDERS__DOCKERHUB_API`: Docker Hub's web API, where a namespace's
    /// repositories are listed (default `https://hub.docker.com`).
    pub dockerhub_api: Option<Url>,
    /// `IMAGELIB_PROVIDERS__GITHUB_API`: GitHub's REST API, where a `ghcr.io` owner's
    /// container packages are listed (default `https://api.github.com`).
    pub github_api: Option<Url>,
    /// `IMAGELIB_PROVIDERS__ARTIFACT_REGISTRY_API`: the Artifact Registry REST API, where a
    /// `gcr` registry's repositories are listed when `_catalog` is refused (default
    /// `https://artifactregistry.googleapis.com`).
    pub artifact_registry_api: Option<Url>,
}

impl ProviderEndpoints {
    pub fn acr_suffixes(&self) -> Vec<String> {
        self.acr_suffixes.clone().unwrap_or_else(|| {
            crate::providers::ACR_HOST_SUFFIXES
                .iter()
                .map(|s| s.to_string())
                .collect()
        })
    }

    /// Docker Hub's web API: `IMAGELIB_PROVIDERS__DOCKERHUB_API`, else the public one.
    pub fn dockerhub_api(&self) -> Result<Url, url::ParseError> {
        match &self.dockerhub_api {
            Some(api) => Ok(api.clone()),
            None => crate::vendor::dockerhub::DEFAULT_API.parse(),
        }
    }

    /// GitHub's REST API: `IMAGELIB_PROVIDERS__GITHUB_API`, else the public one.
    pub fn github_api(&self) -> Result<Url, url::ParseError> {
        match &self.github_api {
            Some(api) => Ok(api.clone()),
            None => crate::vendor::ghcr::DEFAULT_API.parse(),
        }
    }

    /// The Artifact Registry REST API: `IMAGELIB_PROVIDERS__ARTIFACT_REGISTRY_API`, else
    /// the public one.
    pub fn artifact_registry_api(&self) -> Result<Url, url::ParseError> {
        match &self.artifact_registry_api {
            Some(api) => Ok(api.clone()),
            None => crate::vendor::gar::DEFAULT_API.parse(),
        }
    }

    pub fn ecr_suffixes(&self) -> Vec<String> {
        self.ecr_suffixes.clone().unwrap_or_else(|| {
            crate::providers::ECR_HOST_SUFFIXES
                .iter()
                .map(|s| s.to_string())
                .collect()
        })
    }
}

/// `"a, b"` or `["a", "b"]` (environment variables are strings; config files may use lists).
fn string_or_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        One(String),
        Many(Vec<String>),
    }
    let items = match Option::<Form>::deserialize(d)? {
        None => return Ok(None),
        Some(Form::One(s)) => s.split(',').map(str::to_owned).collect::<Vec<_>>(),
        Some(Form::Many(v)) => v,
    };
    let items: Vec<String> = items
        .into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    Ok((!items.is_empty()).then_some(items))
}

impl StoredCredentials {
    /// The sealed plaintext.
    pub fn to_plaintext(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parse an opened plaintext. The error never quotes the input (it holds secrets).
    pub fn from_plaintext(bytes: &[u8]) -> Result<Self, Error> {
        serde_json::from_slice(bytes).map_err(|_| {
            Error::Config("the stored credential is not a known credential form".into())
        })
    }

    /// What presents these credentials to `registry`.
    pub fn provider(
        &self,
        registry: &RegistryUrl,
        guard: &NetworkGuard,
        endpoints: &ProviderEndpoints,
        ca_pem: Option<&str>,
    ) -> Result<Arc<dyn CredentialProvider>, Error> {
        Ok(match self {
            StoredCredentials::None => Arc::new(Credentials::Anonymous),
            StoredCredentials::Basic { username, password } => Arc::new(Credentials::Basic {
                username: username.clone(),
                password: password.clone(),
            }),
            StoredCredentials::Token { token } => Arc::new(Credentials::Bearer(token.clone())),
            StoredCredentials::AwsEcr {
                access_key_id,
                secret_access_key,
                region,
                session_token,
            } => {
                crate::providers::check_ecr_host(
                    registry.host(),
                    region.trim(),
                    &endpoints.ecr_suffixes(),
                )?;
                let mut c = EcrConfig::new(
                    access_key_id.clone(),
                    secret_access_key.clone(),
                    region.clone(),
                );
                c.session_token = session_token.clone();
                c.endpoint = endpoints.ecr.clone();
                c.guard = guard.clone();
                Arc::new(EcrProvider::new(c)?)
            }
            StoredCredentials::AzureServicePrincipal {
                tenant_id,
                client_id,
                client_secret,
            } => {
                let mut c = AcrConfig::new(
                    registry.host().to_owned(),
                    tenant_id.clone(),
                    client_id.clone(),
                    client_secret.clone(),
                );
                c.authority = endpoints.aad.clone();
                c.allowed_suffixes = endpoints.acr_suffixes();
                if let Some(scope) = &endpoints.acr_scope {
                    c.scope = scope.clone();
                }
                c.registry_base = Some(registry.base());
                c.guard = guard.clone();
                c.ca_pem = ca_pem.map(str::to_owned);
                Arc::new(AcrProvider::new(c)?)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_exchanges_only_for_their_clouds_hosts() {
        let guard = NetworkGuard::default();
        let endpoints = ProviderEndpoints::default();
        let ecr: StoredCredentials = serde_json::from_str(
            r#"{"kind":"aws_ecr","access_key_id":"AKIA","secret_access_key":"canary","region":"eu-west-1"}"#,
        )
        .unwrap();
        let acr: StoredCredentials = serde_json::from_str(
            r#"{"kind":"azure_service_principal","tenant_id":"t","client_id":"c","client_secret":"canary"}"#,
        )
        .unwrap();
        let url = |s: &str| RegistryUrl::parse(s, false).unwrap();
        for (creds, good, bad) in [
            (
                &ecr,
                "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
                "registry.evil.example",
            ),
            (
                &acr,
                "contoso.azurecr.io",
                "contoso.azurecr.io.evil.example",
            ),
        ] {
            assert!(
                creds.provider(&url(good), &guard, &endpoints, None).is_ok(),
                "{good}"
            );
            let err = creds
                .provider(&url(bad), &guard, &endpoints, None)
                .unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::HostNotAllowed, "{bad}");
            assert_eq!(
                err.validation_reason(),
                Some(imagelib_events::model::ValidationReason::HostNotAllowed)
            );
        }
        let sovereign = ProviderEndpoints {
            acr_suffixes: Some(vec![".azurecr.example".into()]),
            ..Default::default()
        };
        assert!(
            acr.provider(&url("r.azurecr.example"), &guard, &sovereign, None)
                .is_ok()
        );
        assert!(
            acr.provider(&url("r.azurecr.io"), &guard, &sovereign, None)
                .is_err()
        );
        let parsed: ProviderEndpoints = serde_json::from_str(
            r#"{"acr_suffixes": " .azurecr.io, .azurecr.cn ", "ecr_suffixes": [".amazonaws.com"]}"#,
        )
        .unwrap();
        assert_eq!(parsed.acr_suffixes().len(), 2);
        assert_eq!(parsed.ecr_suffixes(), vec![".amazonaws.com".to_owned()]);
    }

    #[test]
    fn round_trips_and_never_debugs_secrets() {
        let c: StoredCredentials = serde_json::from_str(
            r#"{"kind":"aws_ecr","access_key_id":"AKIA","secret_access_key":"canary-secret","region":"eu-west-1"}"#,
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("canary-secret"));
        let back = StoredCredentials::from_plaintext(&c.to_plaintext()).unwrap();
        assert!(
            matches!(back, StoredCredentials::AwsEcr { ref region, .. } if region == "eu-west-1")
        );
        let err = StoredCredentials::from_plaintext(
            br#"{"kind":"basic","username":"u","password":"canary-secret","x":1}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(!err.contains("canary-secret"), "{err}");
    }
}
