//! Credentials as an admin gives them, and as they are sealed.
//!
//! The plaintext exists only in memory, in `secrecy` types whose `Debug` redacts; what is
//! stored and published is the sealed JSON of [`Credentials`], bound to its registry.

use imagelib_events::model::{AuthKind, RegistryType};
use secrecy::ExposeSecret;

/// Credentials in a request body, tagged by `kind` (`none`, `basic`, `token`, `aws_ecr`,
/// `azure_service_principal`): the stored form shared with sync-scanner.
pub use registry_client::StoredCredentials as Credentials;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pointer}: {message}")]
pub struct CredentialsError {
    pub pointer: String,
    pub message: String,
}

fn field_err(pointer: &str, message: impl Into<String>) -> CredentialsError {
    CredentialsError {
        pointer: pointer.into(),
        message: message.into(),
    }
}

/// What registry-registry checks about credentials before sealing them.
pub trait CredentialsExt {
    fn kind(&self) -> AuthKind;
    fn validate(&self, registry_type: RegistryType) -> Result<(), CredentialsError>;
}

impl CredentialsExt for Credentials {
    fn kind(&self) -> AuthKind {
        match self {
            Credentials::None => AuthKind::None,
            Credentials::Basic { .. } => AuthKind::Basic,
            Credentials::Token { .. } => AuthKind::Token,
            Credentials::AwsEcr { .. } => AuthKind::AwsEcr,
            Credentials::AzureServicePrincipal { .. } => AuthKind::AzureServicePrincipal,
        }
    }

    /// Check the credentials fit the registry type and have every field they need.
    fn validate(&self, registry_type: RegistryType) -> Result<(), CredentialsError> {
        let non_empty = |pointer: &str, v: &str| {
            if v.trim().is_empty() {
                Err(field_err(pointer, "must not be empty"))
            } else {
                Ok(())
            }
        };
        match self {
            Credentials::None => {}
            Credentials::Basic { username, password } => {
                non_empty("/credentials/username", username)?;
                non_empty("/credentials/password", password.expose_secret())?;
                if registry_type == RegistryType::Harbor
                    && username.contains('$')
                    && !username.starts_with("robot$")
                {
                    return Err(field_err(
                        "/credentials/username",
                        "Harbor robot accounts are named `robot$<project>+<name>` or `robot$<name>`",
                    ));
                }
            }
            Credentials::Token { token } => non_empty("/credentials/token", token.expose_secret())?,
            Credentials::AwsEcr {
                access_key_id,
                secret_access_key,
                region,
                ..
            } => {
                if registry_type != RegistryType::Ecr {
                    return Err(field_err(
                        "/credentials/kind",
                        "aws_ecr credentials are for registry_type `ecr`",
                    ));
                }
                non_empty("/credentials/access_key_id", access_key_id)?;
                non_empty(
                    "/credentials/secret_access_key",
                    secret_access_key.expose_secret(),
                )?;
                if !region
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    || region.is_empty()
                {
                    return Err(field_err(
                        "/credentials/region",
                        "an AWS region such as `eu-west-1`",
                    ));
                }
            }
            Credentials::AzureServicePrincipal {
                tenant_id,
                client_id,
                client_secret,
            } => {
                if registry_type != RegistryType::Acr {
                    return Err(field_err(
                        "/credentials/kind",
                        "azure_service_principal credentials are for registry_type `acr`",
                    ));
                }
                non_empty("/credentials/tenant_id", tenant_id)?;
                non_empty("/credentials/client_id", client_id)?;
                non_empty("/credentials/client_secret", client_secret.expose_secret())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_secrets() {
        let c: Credentials = serde_json::from_str(
            r#"{"kind":"basic","username":"robot$ai+scanner","password":"canary-3f9a"}"#,
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("canary-3f9a"));
        let back = Credentials::from_plaintext(&c.to_plaintext()).unwrap();
        match back {
            Credentials::Basic { password, .. } => {
                assert_eq!(password.expose_secret(), "canary-3f9a")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn validation() {
        let c: Credentials =
            serde_json::from_str(r#"{"kind":"basic","username":"x","password":""}"#).unwrap();
        assert_eq!(
            c.validate(RegistryType::Generic).unwrap_err().pointer,
            "/credentials/password"
        );
        let c: Credentials = serde_json::from_str(
            r#"{"kind":"aws_ecr","access_key_id":"AKIA","secret_access_key":"s","region":"eu-west-1"}"#,
        )
        .unwrap();
        assert!(c.validate(RegistryType::Ecr).is_ok());
        assert!(c.validate(RegistryType::Harbor).is_err());
        assert!(
            serde_json::from_str::<Credentials>(
                r#"{"kind":"basic","username":"x","password":"y","extra":1}"#
            )
            .is_err()
        );
        assert!(serde_json::from_str::<Credentials>(r#"{"kind":"nope"}"#).is_err());
    }
}
