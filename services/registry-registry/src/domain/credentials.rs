//! Credentials as an admin gives them, and as they are sealed.
//!
//! The plaintext exists only in memory, in `secrecy` types whose `Debug` redacts; what is
//! stored and published is the sealed JSON of [`Credentials`], bound to its registry.

use imagelib_events::model::{AuthKind, RegistryType};
use secrecy::ExposeSecret;

/// Credentials in a request body, tagged by `kind` (`none`, `basic`, `token`, `aws_ecr`,
/// `azure_service_principal`, `gcp_service_account`, `github_app`, and the workload identities that store
/// no secret: `gcp_workload_identity`, `aws_web_identity`, `azure_workload_identity`): the
/// stored form shared with sync-scanner.
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
            Credentials::GcpServiceAccount { .. } => AuthKind::GcpServiceAccount,
            Credentials::GcpWorkloadIdentity {} => AuthKind::GcpWorkloadIdentity,
            Credentials::AwsWebIdentity { .. } => AuthKind::AwsWebIdentity,
            Credentials::AzureWorkloadIdentity { .. } => AuthKind::AzureWorkloadIdentity,
            Credentials::GithubApp { .. } => AuthKind::GithubApp,
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
            Credentials::GcpServiceAccount { key_json } => {
                only_for(registry_type, RegistryType::Gcr, "gcp_service_account")?;
                check_key_json(key_json.expose_secret())?;
            }
            Credentials::GcpWorkloadIdentity {} => {
                only_for(registry_type, RegistryType::Gcr, "gcp_workload_identity")?;
            }
            Credentials::AwsWebIdentity { region, role_arn } => {
                only_for(registry_type, RegistryType::Ecr, "aws_web_identity")?;
                if !is_region(region) {
                    return Err(field_err(
                        "/credentials/region",
                        "an AWS region such as `eu-west-1`",
                    ));
                }
                if let Some(arn) = role_arn
                    && !is_role_arn(arn)
                {
                    return Err(field_err(
                        "/credentials/role_arn",
                        "an IAM role ARN such as `arn:aws:iam::123456789012:role/imagelib`",
                    ));
                }
            }
            Credentials::GithubApp {
                app_id,
                installation_id,
                private_key,
            } => {
                only_for(registry_type, RegistryType::Ghcr, "github_app")?;
                if !registry_client::providers::is_github_id(app_id) {
                    return Err(field_err(
                        "/credentials/app_id",
                        "the GitHub App's numeric App ID (the app's settings page, \"App ID\")",
                    ));
                }
                if !registry_client::providers::is_github_id(installation_id) {
                    return Err(field_err(
                        "/credentials/installation_id",
                        "the installation's numeric ID (the last segment of its URL, \
                         …/settings/installations/<id>)",
                    ));
                }
                check_app_key(private_key.expose_secret())?;
            }
            Credentials::AzureWorkloadIdentity {
                tenant_id,
                client_id,
            } => {
                only_for(registry_type, RegistryType::Acr, "azure_workload_identity")?;
                for (pointer, value) in [
                    ("/credentials/tenant_id", tenant_id),
                    ("/credentials/client_id", client_id),
                ] {
                    if let Some(v) = value
                        && (v.trim().is_empty()
                            || v.len() > 128
                            || !v.bytes().all(|b| {
                                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')
                            }))
                    {
                        return Err(field_err(
                            pointer,
                            "a directory (tenant) or application (client) ID, or absent for the \
                             service's AZURE_TENANT_ID / AZURE_CLIENT_ID",
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

fn only_for(
    registry_type: RegistryType,
    wanted: RegistryType,
    kind: &str,
) -> Result<(), CredentialsError> {
    if registry_type == wanted {
        Ok(())
    } else {
        let name = serde_json::to_value(wanted)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        Err(field_err(
            "/credentials/kind",
            format!("{kind} credentials are for registry_type `{name}`"),
        ))
    }
}

fn is_region(region: &str) -> bool {
    !region.is_empty()
        && region.len() <= 32
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// `arn:<partition>:iam::<12 digits>:role/<name>`.
fn is_role_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    matches!(parts.as_slice(), ["arn", partition, "iam", "", account, resource]
        if partition.starts_with("aws")
            && account.len() == 12
            && account.bytes().all(|b| b.is_ascii_digit())
            && resource.len() > 5
            && resource.len() <= 600
            && resource.starts_with("role/")
            && resource.bytes().all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-/".contains(&b)))
}

/// The shape of a service account key JSON; the errors never quote it.
fn check_key_json(key: &str) -> Result<(), CredentialsError> {
    const POINTER: &str = "/credentials/key_json";
    if key.trim().is_empty() {
        return Err(field_err(POINTER, "must not be empty"));
    }
    if key.len() > 64 * 1024 {
        return Err(field_err(
            POINTER,
            "a service account key is a few KiB, not this much",
        ));
    }
    let Ok(serde_json::Value::Object(key)) = serde_json::from_str::<serde_json::Value>(key) else {
        return Err(field_err(
            POINTER,
            "the service account key JSON, as downloaded from the console (an object)",
        ));
    };
    if let Some(kind) = key.get("type")
        && kind != "service_account"
    {
        return Err(field_err(
            POINTER,
            "the key's `type` must be `service_account`",
        ));
    }
    let text = |name: &str| key.get(name).and_then(|v| v.as_str()).unwrap_or_default();
    if !text("client_email").contains('@') {
        return Err(field_err(POINTER, "the key has no `client_email`"));
    }
    if !text("private_key").contains("PRIVATE KEY-----") {
        return Err(field_err(POINTER, "the key has no PEM `private_key`"));
    }
    Ok(())
}

/// A GitHub App's private key: an RSA private key PEM; the errors never quote it.
fn check_app_key(pem: &str) -> Result<(), CredentialsError> {
    const POINTER: &str = "/credentials/private_key";
    if pem.trim().is_empty() {
        return Err(field_err(POINTER, "must not be empty"));
    }
    registry_client::providers::check_github_app_key(pem).map_err(|_| {
        field_err(
            POINTER,
            "the app's private key as downloaded from its settings (a PEM `RSA PRIVATE KEY`)",
        )
    })
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

    #[test]
    fn keyless_kinds_fit_their_registry_types() {
        let parse = |json: &str| serde_json::from_str::<Credentials>(json).unwrap();
        let key = serde_json::json!({
            "type": "service_account",
            "client_email": "scanner@p.iam.gserviceaccount.com",
            "private_key": "-----BEGIN PRIVATE KEY-----\ncanary\n-----END PRIVATE KEY-----\n",
        })
        .to_string();
        let sa =
            parse(&serde_json::json!({"kind": "gcp_service_account", "key_json": key}).to_string());
        assert_eq!(sa.kind(), AuthKind::GcpServiceAccount);
        assert!(sa.validate(RegistryType::Gcr).is_ok());
        assert_eq!(
            sa.validate(RegistryType::Ecr).unwrap_err().pointer,
            "/credentials/kind"
        );
        assert!(!format!("{sa:?}").contains("canary"));
        for bad in [
            "",
            "not json canary",
            "[1]",
            r#"{"type":"authorized_user"}"#,
            r#"{"client_email":"a@b"}"#,
        ] {
            let c = parse(
                &serde_json::json!({"kind": "gcp_service_account", "key_json": bad}).to_string(),
            );
            let err = c.validate(RegistryType::Gcr).unwrap_err();
            assert_eq!(err.pointer, "/credentials/key_json", "{bad}");
            assert!(!err.message.contains("canary"), "{err}");
        }

        let gke = parse(r#"{"kind":"gcp_workload_identity"}"#);
        assert_eq!(gke.kind(), AuthKind::GcpWorkloadIdentity);
        assert!(gke.validate(RegistryType::Gcr).is_ok());
        assert!(gke.validate(RegistryType::Generic).is_err());
        assert!(
            serde_json::from_str::<Credentials>(r#"{"kind":"gcp_workload_identity","x":1}"#)
                .is_err()
        );

        let irsa = parse(r#"{"kind":"aws_web_identity","region":"eu-west-1"}"#);
        assert_eq!(irsa.kind(), AuthKind::AwsWebIdentity);
        assert!(irsa.validate(RegistryType::Ecr).is_ok());
        assert!(irsa.validate(RegistryType::Acr).is_err());
        let role = parse(
            r#"{"kind":"aws_web_identity","region":"eu-west-1","role_arn":"arn:aws:iam::123456789012:role/imagelib"}"#,
        );
        assert!(role.validate(RegistryType::Ecr).is_ok());
        let bad_role =
            parse(r#"{"kind":"aws_web_identity","region":"eu-west-1","role_arn":"imagelib"}"#);
        assert_eq!(
            bad_role.validate(RegistryType::Ecr).unwrap_err().pointer,
            "/credentials/role_arn"
        );
        let bad_region = parse(r#"{"kind":"aws_web_identity","region":"EU WEST"}"#);
        assert_eq!(
            bad_region.validate(RegistryType::Ecr).unwrap_err().pointer,
            "/credentials/region"
        );

        let azure = parse(r#"{"kind":"azure_workload_identity"}"#);
        assert_eq!(azure.kind(), AuthKind::AzureWorkloadIdentity);
        assert!(azure.validate(RegistryType::Acr).is_ok());
        assert!(azure.validate(RegistryType::Gcr).is_err());
        let bad = parse(r#"{"kind":"azure_workload_identity","tenant_id":"../common"}"#);
        assert_eq!(
            bad.validate(RegistryType::Acr).unwrap_err().pointer,
            "/credentials/tenant_id"
        );
        let back = Credentials::from_plaintext(&role.to_plaintext()).unwrap();
        assert_eq!(back.kind(), AuthKind::AwsWebIdentity);
    }
}
