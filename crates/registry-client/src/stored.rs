//! The credential forms an admin registers, as they are sealed and stored.
//!
//! registry-registry seals the JSON of [`StoredCredentials`]; sync-scanner opens it. Both
//! turn it into a [`CredentialProvider`] here, so the two never disagree on what a form
//! means, and the provider exchanges (ECR, ACR, Google, GitHub Apps) live in one place.
//!
//! The workload identity kinds (`gcp_workload_identity`, `aws_web_identity`,
//! `azure_workload_identity`) store no secret at all: what they present comes from the pod's
//! environment (projected token files, the metadata server, the Pod Identity agent), named
//! by the cloud SDKs' standard variables. Those are read once per process ([`Ambient`]) and
//! can each be overridden in [`ProviderEndpoints`], which is how tests inject them.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::auth::{CredentialProvider, Credentials};
use crate::config::RegistryUrl;
use crate::error::Error;
use crate::guard::NetworkGuard;
use crate::providers::{
    AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE, AWS_CONTAINER_CREDENTIALS_FULL_URI, AWS_ROLE_ARN,
    AWS_WEB_IDENTITY_TOKEN_FILE, AZURE_FEDERATED_TOKEN_FILE, AcrConfig, AcrProvider, AwsIdentity,
    AwsWebIdentityConfig, EcrConfig, EcrProvider, GcpMetadataConfig, GcpMetadataProvider,
    GcpServiceAccountConfig, GcpServiceAccountProvider, GitHubAppConfig, GitHubAppProvider,
    PodIdentityConfig, TokenFile,
};

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
    /// A Google service account key (the JSON downloaded from the console), exchanged for
    /// one-hour access tokens (JWT bearer grant); `gcr` registries only.
    GcpServiceAccount {
        #[serde(serialize_with = "expose")]
        key_json: SecretString,
    },
    /// GKE workload identity (or the VM's service account): access tokens from the metadata
    /// server; `gcr` registries only. Nothing is stored.
    GcpWorkloadIdentity {},
    /// AWS without a static key: IRSA (the projected token exchanged with STS
    /// `AssumeRoleWithWebIdentity` for `role_arn`, default `AWS_ROLE_ARN`) or, when no web
    /// identity token file is configured, EKS Pod Identity; then ECR `GetAuthorizationToken`.
    AwsWebIdentity {
        region: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role_arn: Option<String>,
    },
    /// A GitHub App installation: the app's JWT (RS256 with `private_key`, a PEM RSA key)
    /// exchanged for one-hour installation tokens at the GitHub API
    /// (`IMAGELIB_PROVIDERS__GITHUB_API`); `ghcr` registries only. The token is
    /// `x-access-token` / token at the registry and the API's bearer for the listing.
    GithubApp {
        app_id: String,
        installation_id: String,
        #[serde(serialize_with = "expose")]
        private_key: SecretString,
    },
    /// Azure workload identity: the federated token file as an AAD client assertion, then
    /// the registry's `/oauth2/exchange`. Tenant and client default to `AZURE_TENANT_ID` and
    /// `AZURE_CLIENT_ID`.
    AzureWorkloadIdentity {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tenant_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
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
    /// `IMAGELIB_PROVIDERS__STS`: the STS endpoint of `aws_web_identity` (default
    /// `https://sts.<region>.amazonaws.com`).
    pub sts: Option<Url>,
    /// `IMAGELIB_PROVIDERS__GCE_METADATA`: the metadata server of `gcp_workload_identity`
    /// (default `GCE_METADATA_HOST`, else `http://metadata.google.internal`).
    pub gce_metadata: Option<Url>,
    /// `IMAGELIB_PROVIDERS__GOOGLE_TOKEN`: the OAuth token endpoint of
    /// `gcp_service_account`, instead of the key's `token_uri` (which must otherwise be one
    /// of Google's).
    pub google_token: Option<Url>,
    /// `IMAGELIB_PROVIDERS__GCR_SUFFIXES`: the Google registry host suffixes Google
    /// credentials are used for (default `.gcr.io,-docker.pkg.dev`; `.x` also allows `x`).
    #[serde(deserialize_with = "string_or_list")]
    pub gcr_suffixes: Option<Vec<String>>,
    /// `IMAGELIB_PROVIDERS__AWS_WEB_IDENTITY_TOKEN_FILE` (default `AWS_WEB_IDENTITY_TOKEN_FILE`).
    pub aws_web_identity_token_file: Option<PathBuf>,
    /// `IMAGELIB_PROVIDERS__AWS_ROLE_ARN` (default `AWS_ROLE_ARN`).
    pub aws_role_arn: Option<String>,
    /// `IMAGELIB_PROVIDERS__AWS_CONTAINER_CREDENTIALS_FULL_URI` (default
    /// `AWS_CONTAINER_CREDENTIALS_FULL_URI`): the EKS Pod Identity agent.
    pub aws_container_credentials_full_uri: Option<Url>,
    /// `IMAGELIB_PROVIDERS__AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` (default
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`).
    pub aws_container_authorization_token_file: Option<PathBuf>,
    /// `IMAGELIB_PROVIDERS__AZURE_FEDERATED_TOKEN_FILE` (default `AZURE_FEDERATED_TOKEN_FILE`).
    pub azure_federated_token_file: Option<PathBuf>,
    /// `IMAGELIB_PROVIDERS__AZURE_TENANT_ID` (default `AZURE_TENANT_ID`).
    pub azure_tenant_id: Option<String>,
    /// `IMAGELIB_PROVIDERS__AZURE_CLIENT_ID` (default `AZURE_CLIENT_ID`).
    pub azure_client_id: Option<String>,
    /// Ignore the cloud SDKs' standard variables ([`Ambient`]); tests set it so the
    /// machine's environment cannot change what they see.
    #[serde(skip)]
    pub ignore_ambient: bool,
}

/// The cloud SDKs' standard variables, read once per process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ambient {
    pub aws_web_identity_token_file: Option<PathBuf>,
    pub aws_role_arn: Option<String>,
    pub aws_container_credentials_full_uri: Option<String>,
    pub aws_container_authorization_token_file: Option<PathBuf>,
    pub azure_federated_token_file: Option<PathBuf>,
    pub azure_tenant_id: Option<String>,
    pub azure_client_id: Option<String>,
    pub azure_authority_host: Option<String>,
    pub gce_metadata_host: Option<String>,
}

impl Ambient {
    /// The process's variables, read the first time and kept.
    pub fn get() -> &'static Ambient {
        static AMBIENT: OnceLock<Ambient> = OnceLock::new();
        AMBIENT.get_or_init(|| {
            let var = |name: &str| {
                std::env::var(name)
                    .ok()
                    .map(|v| v.trim().to_owned())
                    .filter(|v| !v.is_empty())
            };
            Ambient {
                aws_web_identity_token_file: var(AWS_WEB_IDENTITY_TOKEN_FILE).map(PathBuf::from),
                aws_role_arn: var(AWS_ROLE_ARN),
                aws_container_credentials_full_uri: var(AWS_CONTAINER_CREDENTIALS_FULL_URI),
                aws_container_authorization_token_file: var(AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE)
                    .map(PathBuf::from),
                azure_federated_token_file: var(AZURE_FEDERATED_TOKEN_FILE).map(PathBuf::from),
                azure_tenant_id: var("AZURE_TENANT_ID"),
                azure_client_id: var("AZURE_CLIENT_ID"),
                azure_authority_host: var("AZURE_AUTHORITY_HOST"),
                gce_metadata_host: var("GCE_METADATA_HOST"),
            }
        })
    }
}

impl ProviderEndpoints {
    fn ambient(&self) -> Ambient {
        if self.ignore_ambient {
            Ambient::default()
        } else {
            Ambient::get().clone()
        }
    }

    pub fn gcr_suffixes(&self) -> Vec<String> {
        self.gcr_suffixes.clone().unwrap_or_else(|| {
            crate::providers::GCR_HOST_SUFFIXES
                .iter()
                .map(|s| s.to_string())
                .collect()
        })
    }

    /// The metadata server: `IMAGELIB_PROVIDERS__GCE_METADATA`, else `GCE_METADATA_HOST`,
    /// else `None` (the default, `metadata.google.internal`).
    pub fn gce_metadata(&self) -> Result<Option<Url>, Error> {
        if let Some(url) = &self.gce_metadata {
            return Ok(Some(url.clone()));
        }
        self.ambient()
            .gce_metadata_host
            .as_deref()
            .map(GcpMetadataConfig::endpoint_from_host)
            .transpose()
    }

    /// The EKS Pod Identity agent, if configured.
    pub fn pod_identity_uri(&self) -> Result<Option<Url>, Error> {
        if let Some(url) = &self.aws_container_credentials_full_uri {
            return Ok(Some(url.clone()));
        }
        self.ambient()
            .aws_container_credentials_full_uri
            .map(|u| {
                u.parse::<Url>().map_err(|e| {
                    Error::Config(format!("{AWS_CONTAINER_CREDENTIALS_FULL_URI}: {e}"))
                })
            })
            .transpose()
    }

    /// The AAD authority: `IMAGELIB_PROVIDERS__AAD`, else `AZURE_AUTHORITY_HOST`.
    pub fn aad_authority(&self) -> Result<Option<Url>, Error> {
        if let Some(url) = &self.aad {
            return Ok(Some(url.clone()));
        }
        self.ambient()
            .azure_authority_host
            .map(|u| {
                u.parse::<Url>()
                    .map_err(|e| Error::Config(format!("AZURE_AUTHORITY_HOST: {e}")))
            })
            .transpose()
    }

    /// The registry guard with this configuration's metadata endpoints (the GKE metadata
    /// server, the Pod Identity agent) marked as such: refused for every registry request
    /// even where an allow list holds their network. The built-in ones always are.
    pub fn harden(&self, guard: NetworkGuard) -> NetworkGuard {
        let mut guard = guard;
        if let Ok(Some(url)) = self.gce_metadata() {
            guard = guard.metadata_endpoint(&url);
        }
        if let Ok(Some(url)) = self.pod_identity_uri() {
            guard = guard.metadata_endpoint(&url);
        }
        guard
    }

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

    /// The registry type these credentials are bound to, when only one can take them (the
    /// kinds whose exchange serves one vendor's registries; checked by registry-registry
    /// at registration and by sync-scanner before use).
    pub fn only_for_registry_type(&self) -> Option<&'static str> {
        match self {
            StoredCredentials::AwsEcr { .. } | StoredCredentials::AwsWebIdentity { .. } => {
                Some("ecr")
            }
            StoredCredentials::AzureServicePrincipal { .. }
            | StoredCredentials::AzureWorkloadIdentity { .. } => Some("acr"),
            StoredCredentials::GcpServiceAccount { .. }
            | StoredCredentials::GcpWorkloadIdentity {} => Some("gcr"),
            StoredCredentials::GithubApp { .. } => Some("ghcr"),
            StoredCredentials::None
            | StoredCredentials::Basic { .. }
            | StoredCredentials::Token { .. } => None,
        }
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
            StoredCredentials::GcpServiceAccount { key_json } => {
                crate::providers::check_gcr_host(registry.host(), &endpoints.gcr_suffixes())?;
                let mut c = GcpServiceAccountConfig::new(key_json.clone());
                c.token_uri = endpoints.google_token.clone();
                c.guard = guard.clone();
                c.ca_pem = ca_pem.map(str::to_owned);
                Arc::new(GcpServiceAccountProvider::new(c)?)
            }
            StoredCredentials::GithubApp {
                app_id,
                installation_id,
                private_key,
            } => {
                let mut c = GitHubAppConfig::new(
                    app_id.clone(),
                    installation_id.clone(),
                    private_key.clone(),
                );
                c.api = endpoints.github_api().map_err(|e| {
                    Error::Config(format!("IMAGELIB_PROVIDERS__GITHUB_API is not a URL: {e}"))
                })?;
                c.guard = guard.clone();
                c.ca_pem = ca_pem.map(str::to_owned);
                Arc::new(GitHubAppProvider::new(c)?)
            }
            StoredCredentials::GcpWorkloadIdentity {} => {
                crate::providers::check_gcr_host(registry.host(), &endpoints.gcr_suffixes())?;
                let mut c = GcpMetadataConfig::new(endpoints.gce_metadata()?)?;
                c.guard = guard.clone();
                Arc::new(GcpMetadataProvider::new(c)?)
            }
            StoredCredentials::AwsWebIdentity { region, role_arn } => {
                let region = region.trim();
                crate::providers::check_ecr_host(
                    registry.host(),
                    region,
                    &endpoints.ecr_suffixes(),
                )?;
                let ambient = endpoints.ambient();
                let web_identity_file = endpoints
                    .aws_web_identity_token_file
                    .clone()
                    .or(ambient.aws_web_identity_token_file.clone());
                let identity = match (web_identity_file, endpoints.pod_identity_uri()?) {
                    (Some(file), _) => {
                        let role_arn = role_arn
                            .clone()
                            .filter(|r| !r.trim().is_empty())
                            .or_else(|| endpoints.aws_role_arn.clone())
                            .or(ambient.aws_role_arn.clone())
                            .ok_or_else(|| {
                                Error::Config(format!(
                                    "aws_web_identity: no role_arn given and {AWS_ROLE_ARN} is \
                                     not set"
                                ))
                            })?;
                        let mut c = AwsWebIdentityConfig::new(
                            role_arn,
                            TokenFile::new(file, AWS_WEB_IDENTITY_TOKEN_FILE),
                            region,
                        );
                        c.sts_endpoint = endpoints.sts.clone();
                        c.guard = guard.clone();
                        c.ca_pem = ca_pem.map(str::to_owned);
                        AwsIdentity::WebIdentity(c)
                    }
                    (None, Some(uri)) => {
                        let file = endpoints
                            .aws_container_authorization_token_file
                            .clone()
                            .or(ambient.aws_container_authorization_token_file.clone());
                        let token_file = TokenFile::required(
                            file.as_deref(),
                            AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE,
                            "EKS Pod Identity",
                        )?;
                        let mut c = PodIdentityConfig::new(uri, token_file);
                        c.guard = guard.clone();
                        AwsIdentity::PodIdentity(c)
                    }
                    (None, None) => {
                        return Err(Error::Config(format!(
                            "aws_web_identity needs IRSA ({AWS_WEB_IDENTITY_TOKEN_FILE}) or EKS \
                             Pod Identity ({AWS_CONTAINER_CREDENTIALS_FULL_URI}) in the \
                             service's environment; neither is set"
                        )));
                    }
                };
                let mut c = EcrConfig::with_identity(identity, region);
                c.endpoint = endpoints.ecr.clone();
                c.guard = guard.clone();
                c.ca_pem = ca_pem.map(str::to_owned);
                Arc::new(EcrProvider::new(c)?)
            }
            StoredCredentials::AzureWorkloadIdentity {
                tenant_id,
                client_id,
            } => {
                let ambient = endpoints.ambient();
                let pick = |given: &Option<String>,
                            configured: &Option<String>,
                            env: &Option<String>,
                            variable: &str| {
                    given
                        .clone()
                        .filter(|v| !v.trim().is_empty())
                        .or_else(|| configured.clone())
                        .or_else(|| env.clone())
                        .ok_or_else(|| {
                            Error::Config(format!(
                                "azure_workload_identity: no {} given and {variable} is not set",
                                variable.trim_start_matches("AZURE_").to_ascii_lowercase()
                            ))
                        })
                };
                let tenant = pick(
                    tenant_id,
                    &endpoints.azure_tenant_id,
                    &ambient.azure_tenant_id,
                    "AZURE_TENANT_ID",
                )?;
                let client = pick(
                    client_id,
                    &endpoints.azure_client_id,
                    &ambient.azure_client_id,
                    "AZURE_CLIENT_ID",
                )?;
                let file = endpoints
                    .azure_federated_token_file
                    .clone()
                    .or(ambient.azure_federated_token_file.clone());
                let token_file = TokenFile::required(
                    file.as_deref(),
                    AZURE_FEDERATED_TOKEN_FILE,
                    "Azure workload identity",
                )?;
                let mut c = AcrConfig::workload_identity(
                    registry.host().to_owned(),
                    tenant,
                    client,
                    token_file,
                );
                c.authority = endpoints.aad_authority()?;
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
    fn keyless_kinds_parse_strictly_and_round_trip() {
        for json in [
            r#"{"kind":"gcp_workload_identity"}"#,
            r#"{"kind":"aws_web_identity","region":"eu-west-1"}"#,
            r#"{"kind":"aws_web_identity","region":"eu-west-1","role_arn":"arn:aws:iam::123456789012:role/r"}"#,
            r#"{"kind":"azure_workload_identity"}"#,
            r#"{"kind":"azure_workload_identity","tenant_id":"t","client_id":"c"}"#,
            r#"{"kind":"gcp_service_account","key_json":"{}"}"#,
            r#"{"kind":"github_app","app_id":"1","installation_id":"2","private_key":"k"}"#,
        ] {
            let c = StoredCredentials::from_plaintext(json.as_bytes()).unwrap();
            let again = StoredCredentials::from_plaintext(&c.to_plaintext()).unwrap();
            assert_eq!(
                serde_json::to_value(&c).unwrap(),
                serde_json::to_value(&again).unwrap(),
                "{json}"
            );
        }
        for json in [
            r#"{"kind":"gcp_workload_identity","key_json":"x"}"#,
            r#"{"kind":"aws_web_identity"}"#,
            r#"{"kind":"aws_web_identity","region":"eu-west-1","secret":"x"}"#,
            r#"{"kind":"azure_workload_identity","client_secret":"canary"}"#,
            r#"{"kind":"github_app","app_id":"1","private_key":"canary"}"#,
            r#"{"kind":"github_app","app_id":"1","installation_id":"2","private_key":"k","x":1}"#,
        ] {
            assert!(
                StoredCredentials::from_plaintext(json.as_bytes()).is_err(),
                "{json}"
            );
        }
        let key: StoredCredentials =
            serde_json::from_str(r#"{"kind":"gcp_service_account","key_json":"canary-key"}"#)
                .unwrap();
        assert!(!format!("{key:?}").contains("canary"));
    }

    #[test]
    fn configured_metadata_endpoints_harden_the_registry_guard() {
        let endpoints = ProviderEndpoints {
            gce_metadata: Some("http://127.0.0.2:8080/".parse().unwrap()),
            aws_container_credentials_full_uri: Some(
                "http://127.0.0.3:80/v1/credentials".parse().unwrap(),
            ),
            ignore_ambient: true,
            ..Default::default()
        };
        let guard = endpoints.harden(NetworkGuard::from_lists(None, Some("127.0.0.0/8")).unwrap());
        for addr in ["127.0.0.2", "127.0.0.3"] {
            assert!(guard.is_denied(addr.parse().unwrap()), "{addr}");
        }
        assert!(!guard.is_denied("127.0.0.1".parse().unwrap()));
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
