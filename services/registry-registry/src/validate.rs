//! Checking a registry before it is saved: the connection, the credentials, and the scope
//! scanning needs. Every failure becomes one of the contract's precise reasons.

use imagelib_events::RepositoryName;
use imagelib_events::model::{RegistryType, ValidationReason};
use registry_client::vendor::{dockerhub, gar, ghcr, harbor};
use registry_client::{
    AuthScheme, ErrorKind, NetworkGuard, ProviderEndpoints, RegistryClient, RegistryConfig,
    RegistryUrl,
};

use crate::domain::credentials::Credentials;

/// What is checked.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub url: &'a RegistryUrl,
    /// A `dockerhub` registry with a namespace is listed through the Hub API instead of
    /// `_catalog`.
    pub registry_type: RegistryType,
    pub ca_pem: Option<&'a str>,
    pub repositories: &'a [RepositoryName],
    /// Hosts besides the registry's whose token realm may receive the credentials.
    pub auth_hosts: &'a [String],
    /// The registry's own proxy (checked by the guard like the registry), and the hosts
    /// reached directly despite it.
    pub proxy_url: Option<&'a str>,
    pub no_proxy: &'a [String],
    /// `gcr`: the Artifact Registry repository (its resource name) listed through the
    /// Artifact Registry API when `_catalog` is refused; absent, the location the URL
    /// names, if any.
    pub artifact_registry: Option<&'a str>,
    /// The timeout of each request to the registry.
    pub timeout: std::time::Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passed {
    pub auth_scheme: Option<String>,
    pub catalog_access: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    pub reason: ValidationReason,
    pub detail: String,
}

/// What the registry's credentials log in to a vendor's web API with (Docker Hub's,
/// GitHub's): none for an anonymous registry.
async fn api_login(
    credentials: &Credentials,
    provider: &std::sync::Arc<dyn registry_client::CredentialProvider>,
) -> Result<Option<registry_client::Credentials>, Failed> {
    if matches!(credentials, Credentials::None) {
        return Ok(None);
    }
    Ok(Some(
        provider
            .credentials()
            .await
            .map_err(|e| failed(&e))?
            .credentials,
    ))
}

/// A listing through a vendor's API as the validation's answer: passed (without catalog
/// access), or the listing's failure with its detail put in context by `explain`.
fn api_listing<T>(
    listed: Result<T, registry_client::Error>,
    auth_scheme: Option<String>,
    explain: impl FnOnce(&str) -> String,
) -> Result<Passed, Failed> {
    match listed {
        Ok(_) => Ok(Passed {
            auth_scheme,
            catalog_access: false,
        }),
        Err(e) => {
            let mut f = failed(&e);
            f.detail = explain(&f.detail);
            Err(f)
        }
    }
}

fn failed(e: &registry_client::Error) -> Failed {
    Failed {
        // Server errors and protocol violations after retries: the registry is not usable.
        reason: e
            .validation_reason()
            .unwrap_or(ValidationReason::NotARegistry),
        detail: e.to_string(),
    }
}

/// Ping `/v2/`, answer the challenge, and check the scanning scope: `_catalog` access, or
/// pull access to each listed repository when the registry has no usable catalog.
pub async fn check(
    target: &Target<'_>,
    credentials: &Credentials,
    guard: &NetworkGuard,
    endpoints: &ProviderEndpoints,
) -> Result<Passed, Failed> {
    let mut config = RegistryConfig::from_url(target.url.clone());
    config.ca_pem = target.ca_pem.map(str::to_owned);
    config.guard = guard.clone();
    config.auth_hosts = target.auth_hosts.to_vec();
    if let Some(proxy) = target.proxy_url {
        config.proxy = Some(proxy.to_owned());
        config.no_proxy = target.no_proxy.to_vec();
        config.guard_proxy = true;
    }
    config.request_timeout = target.timeout;
    config.connect_timeout = target.timeout.min(std::time::Duration::from_secs(5));
    config.retry.max_retries = 1;
    config.retry.max_retry_after = std::time::Duration::from_secs(2);
    let provider = credentials
        .provider(target.url, guard, endpoints, target.ca_pem)
        .map_err(|e| failed(&e))?;
    let client = RegistryClient::with_provider(config, provider.clone()).map_err(|e| failed(&e))?;
    let ping = client.ping().await.map_err(|e| failed(&e))?;
    if matches!(ping.auth, AuthScheme::None) && !matches!(credentials, Credentials::None) {
        tracing::debug!("registry did not ask for credentials");
    }
    let auth_scheme = match ping.auth {
        AuthScheme::None => None,
        AuthScheme::Basic => Some("basic".to_owned()),
        AuthScheme::Bearer { .. } => Some("bearer".to_owned()),
    };
    if target.registry_type == RegistryType::Dockerhub
        && target.repositories.is_empty()
        && let Some(ns) = target.url.namespace()
    {
        // Hub has no `_catalog`: the namespace must be listable through the Hub API.
        let api = endpoints.dockerhub_api().map_err(|e| Failed {
            reason: ValidationReason::NotARegistry,
            detail: format!("the Hub API URL: {e}"),
        })?;
        let login = api_login(credentials, &provider).await?;
        let listed =
            dockerhub::namespace_repositories(client.config(), &api, ns, login.as_ref()).await;
        return api_listing(listed, auth_scheme, |detail| {
            format!(
                "the Hub API cannot list the namespace `{ns}` ({api}): {detail}; list the repositories to scan if it is private"
            )
        });
    }
    if target.registry_type == RegistryType::Ghcr
        && target.repositories.is_empty()
        && let Some(owner) = target.url.namespace()
    {
        // ghcr.io has no `_catalog`: the owner's container packages must be listable
        // through the GitHub REST API, with the PAT of the credentials.
        let api = endpoints.github_api().map_err(|e| Failed {
            reason: ValidationReason::NotARegistry,
            detail: format!("the GitHub API URL: {e}"),
        })?;
        let login = api_login(credentials, &provider).await?;
        let listed = ghcr::owner_packages(client.config(), &api, owner, login.as_ref()).await;
        if let Ok(packages) = &listed {
            tracing::debug!(
                owner,
                packages = packages.listing.items.len(),
                "ghcr owner listed through the GitHub API"
            );
        }
        return api_listing(listed, auth_scheme, |detail| {
            format!(
                "the GitHub API cannot list the packages of `{owner}` ({api}): {detail}; use a personal access token with read:packages, or list the repositories to scan"
            )
        });
    }
    if target.registry_type == RegistryType::Gcr
        && target.repositories.is_empty()
        && let Ok(location) = gar::GarLocation::for_registry(target.artifact_registry, target.url)
        && client.check_catalog_access().await.is_err()
    {
        // A credential scoped to one Artifact Registry repository is refused `_catalog`;
        // the Artifact Registry API then lists that repository's packages (access tokens
        // only: a `_json_key` login cannot call it).
        let api = endpoints.artifact_registry_api().map_err(|e| Failed {
            reason: ValidationReason::NotARegistry,
            detail: format!("the Artifact Registry API URL: {e}"),
        })?;
        let login = api_login(credentials, &provider).await?;
        let listed = gar::list_repositories(client.config(), &api, &location, login.as_ref()).await;
        return api_listing(listed, auth_scheme, |detail| {
            format!(
                "neither `_catalog` nor the Artifact Registry API ({api}) lists `{}`: {detail}; grant roles/artifactregistry.reader on the repository, or list the repositories to scan",
                location.resource()
            )
        });
    }
    if target.registry_type == RegistryType::Harbor && target.repositories.is_empty() {
        // Harbor refuses `_catalog` to robot accounts: a project-scoped registration must
        // be able to list its project through Harbor's API; another one, `_catalog` or the
        // projects the robot sees.
        let project = target
            .url
            .namespace()
            .map(|ns| ns.split('/').next().unwrap_or(ns));
        if project.is_none() && client.check_catalog_access().await.is_ok() {
            return Ok(Passed {
                auth_scheme,
                catalog_access: true,
            });
        }
        let login = api_login(credentials, &provider).await?;
        let api =
            harbor::HarborApi::new(client.config(), login.as_ref()).map_err(|e| failed(&e))?;
        return match project {
            Some(project) => match api.project_repositories(project).await {
                Ok(_) => Ok(Passed {
                    auth_scheme,
                    catalog_access: false,
                }),
                Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Forbidden) => {
                    Err(Failed {
                        reason: ValidationReason::Forbidden,
                        detail: format!(
                            "Harbor has no project `{project}` these credentials can list ({e}); check the project in the URL's path and give the robot account the project's `list repository` and `pull` permissions"
                        ),
                    })
                }
                Err(e) => {
                    let mut f = failed(&e);
                    f.detail = format!(
                        "Harbor's API cannot list the project `{project}`: {}",
                        f.detail
                    );
                    Err(f)
                }
            },
            None => match api.projects().await {
                Ok(projects) if projects.items.is_empty() => Err(Failed {
                    reason: ValidationReason::Forbidden,
                    detail: "the credentials cannot list the catalog and see no Harbor project; give the robot account a project's `list repository` and `pull` permissions, or register the project (host/project)".into(),
                }),
                Ok(projects) => {
                    tracing::debug!(
                        projects = projects.items.len(),
                        "Harbor projects listed through the API"
                    );
                    Ok(Passed {
                        auth_scheme,
                        catalog_access: false,
                    })
                }
                Err(e) => {
                    let mut f = failed(&e);
                    f.detail = format!(
                        "the credentials cannot list the catalog, and Harbor's API cannot list the projects: {}",
                        f.detail
                    );
                    Err(f)
                }
            },
        };
    }
    let catalog = client.check_catalog_access().await;
    match catalog {
        Ok(()) => Ok(Passed {
            auth_scheme,
            catalog_access: true,
        }),
        Err(e) if target.repositories.is_empty() => {
            let mut f = failed(&e);
            if matches!(
                f.reason,
                ValidationReason::Forbidden | ValidationReason::Unauthorized
            ) {
                f.reason = ValidationReason::Forbidden;
                f.detail = format!(
                    "the credentials cannot list the catalog (scope registry:catalog:*): {}; grant catalog access or list the repositories to scan",
                    e
                );
            }
            Err(f)
        }
        Err(_) => {
            for repo in target.repositories {
                match client.check_pull_access(repo).await {
                    // A listed repository may not exist yet; the access itself was granted.
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => {
                        let mut f = failed(&e);
                        f.detail = format!("pull access to `{repo}`: {}", f.detail);
                        return Err(f);
                    }
                }
            }
            Ok(Passed {
                auth_scheme,
                catalog_access: false,
            })
        }
    }
}
