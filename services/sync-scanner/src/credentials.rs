//! Opening a registry's sealed credential.
//!
//! registry-registry seals the JSON of `registry_client::StoredCredentials` with the
//! registry's data key; the scanner opens it with the same key bucket and master key and
//! turns it into the registry client's credential provider (static credentials, the
//! ECR/ACR/Google/GitHub App exchangers, or the workload identities, which take what they present from
//! this process's environment: projected token files, the metadata server, the Pod Identity
//! agent), exactly as registry-registry's validation does. The plaintext lives only in
//! `secrecy` types.

use std::sync::Arc;

use imagelib_events::RegistryId;
use imagelib_events::model::SealedCredential;
use imagelib_secrets::{ExposeSecret, Vault};
use registry_client::{
    CredentialProvider, Credentials, NetworkGuard, ProviderEndpoints, RegistryUrl,
    StoredCredentials,
};

/// Why a registry's credentials cannot be used. The messages start with the reason word
/// (`credentials_unavailable`, `host_not_allowed`, …) that ends up in `sync.failed`.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The data key is wrapped by a master key this process does not have (the key file
    /// was lost or replaced), or does not unwrap: the scan fails at once, without retries,
    /// until the credentials are entered again or the key file is restored.
    #[error("credentials_unavailable: {0}")]
    Unavailable(imagelib_secrets::SecretsError),
    #[error("the registry's credential cannot be opened: {0}")]
    Open(imagelib_secrets::SecretsError),
    #[error("{0}")]
    Unusable(#[from] registry_client::Error),
}

impl From<imagelib_secrets::SecretsError> for CredentialError {
    fn from(e: imagelib_secrets::SecretsError) -> Self {
        match e {
            imagelib_secrets::SecretsError::UnknownMasterKey(_)
            | imagelib_secrets::SecretsError::Decrypt => CredentialError::Unavailable(e),
            other => CredentialError::Open(other),
        }
    }
}

/// The registry client's credential provider for a registry of `registry_type`. A GitHub
/// App is refused for a registry that is not `ghcr` (registry-registry checks it at
/// registration; this keeps its installation tokens off any other registry). The cloud
/// kinds are not checked by type here: registries registered before types were recorded
/// are `generic`, and their providers check the registry's host themselves.
#[allow(clippy::too_many_arguments)]
pub async fn provider(
    vault: &Vault,
    registry_id: RegistryId,
    registry_type: &str,
    sealed: Option<&SealedCredential>,
    url: &RegistryUrl,
    guard: &NetworkGuard,
    endpoints: &ProviderEndpoints,
    ca_pem: Option<&str>,
) -> Result<Arc<dyn CredentialProvider>, CredentialError> {
    let Some(sealed) = sealed else {
        return Ok(Arc::new(Credentials::Anonymous));
    };
    let plain = vault.open_for(registry_id, sealed).await?;
    let stored = StoredCredentials::from_plaintext(plain.expose_secret())?;
    if let Some(only @ "ghcr") = stored.only_for_registry_type()
        && only != registry_type
    {
        return Err(CredentialError::Unusable(
            registry_client::Error::HostNotAllowed {
                host: url.host().to_owned(),
                reason: format!(
                    "these credentials are for `{only}` registries, and this one is `{registry_type}`"
                ),
            },
        ));
    }
    Ok(stored.provider(url, guard, endpoints, ca_pem)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_registry_registry_shapes() {
        for json in [
            r#"{"kind":"basic","username":"u","password":"p"}"#,
            r#"{"kind":"token","token":"t"}"#,
            r#"{"kind":"none"}"#,
            r#"{"kind":"aws_ecr","access_key_id":"AKIA","secret_access_key":"s","region":"eu-west-1"}"#,
            r#"{"kind":"gcp_service_account","key_json":"{}"}"#,
            r#"{"kind":"gcp_workload_identity"}"#,
            r#"{"kind":"aws_web_identity","region":"eu-west-1"}"#,
            r#"{"kind":"aws_web_identity","region":"eu-west-1","role_arn":"arn:aws:iam::123456789012:role/r"}"#,
            r#"{"kind":"azure_workload_identity"}"#,
            r#"{"kind":"azure_workload_identity","tenant_id":"t","client_id":"c"}"#,
        ] {
            assert!(
                StoredCredentials::from_plaintext(json.as_bytes()).is_ok(),
                "{json}"
            );
        }
        assert!(StoredCredentials::from_plaintext(b"{\"kind\":\"nope\"}").is_err());
    }
}
