//! Amazon ECR: `GetAuthorizationToken`, signed with AWS Signature Version 4 by the official
//! `aws-sigv4` crate.
//!
//! The call is the AWS JSON 1.1 protocol: `POST /` to `api.ecr.<region>.amazonaws.com` with
//! `X-Amz-Target: AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken`, content type
//! `application/x-amz-json-1.1` and body `{}`. The answer's `authorizationToken` is
//! `base64("AWS:<password>")`, valid for 12 hours (`expiresAt`, epoch seconds); it is
//! handed out as Basic credentials, which ECR's `/v2/` accepts directly.
//!
//! The signing credentials are a static access key, or come from a workload identity
//! ([`super::AwsIdentity`]: IRSA or EKS Pod Identity) that is refreshed on its own schedule;
//! an ECR token never outlives the temporary credentials that obtained it.

use std::fmt;
use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use base64::Engine as _;
use futures::future::BoxFuture;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use url::Url;

use super::aws::{AwsCredentials, AwsIdentity, AwsSource};
use super::{
    Answer, CredentialCache, ExchangeHttp, ExchangeTimeouts, basic_until, clip, json_error,
};
use crate::auth::{CredentialProvider, ProvidedCredentials};
use crate::error::{Error, Result};
use crate::guard::NetworkGuard;

const TARGET: &str = "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken";
const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
const SIGNING_NAME: &str = "ecr";

/// An IAM access key (optionally with an STS session token) and the registry's region.
#[derive(Debug, Clone)]
pub struct EcrConfig {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
    /// For temporary (STS) credentials.
    pub session_token: Option<SecretString>,
    /// `eu-west-1`, …: the registry's region, which also signs the request.
    pub region: String,
    /// Defaults to `https://api.ecr.<region>.amazonaws.com/` (`.amazonaws.com.cn` for
    /// `cn-*` regions). Set for a VPC endpoint, or a loopback `http://` fake in tests.
    pub endpoint: Option<Url>,
    pub guard: NetworkGuard,
    /// A custom CA (PEM) added to the system roots, for a TLS-inspecting proxy.
    pub ca_pem: Option<String>,
    pub timeouts: ExchangeTimeouts,
    /// A workload identity instead of the access key (then `access_key_id`,
    /// `secret_access_key` and `session_token` are unused).
    pub identity: Option<AwsIdentity>,
}

impl EcrConfig {
    /// ECR with the credentials of a workload identity; default endpoint, guard and timeouts.
    pub fn with_identity(identity: AwsIdentity, region: impl Into<String>) -> Self {
        let mut config = Self::new(String::new(), SecretString::from(String::new()), region);
        config.identity = Some(identity);
        config
    }

    /// Default endpoint, guard and timeouts, no session token, no custom CA.
    pub fn new(
        access_key_id: impl Into<String>,
        secret_access_key: SecretString,
        region: impl Into<String>,
    ) -> Self {
        EcrConfig {
            access_key_id: access_key_id.into(),
            secret_access_key,
            session_token: None,
            region: region.into(),
            endpoint: None,
            guard: NetworkGuard::default(),
            ca_pem: None,
            timeouts: ExchangeTimeouts::default(),
            identity: None,
        }
    }
}

/// The ECR `GetAuthorizationToken` exchanger.
pub struct EcrProvider {
    source: AwsSource,
    region: String,
    endpoint: Url,
    http: ExchangeHttp,
    cache: CredentialCache,
}

impl fmt::Debug for EcrProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EcrProvider")
            .field("region", &self.region)
            .field("source", &self.source)
            .field("endpoint", &self.endpoint.as_str())
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl EcrProvider {
    pub fn new(config: EcrConfig) -> Result<Self> {
        let region = config.region.trim().to_owned();
        if region.is_empty()
            || !region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(Error::Config(format!(
                "`{region}` is not an AWS region (like eu-west-1)"
            )));
        }
        let source = match config.identity {
            Some(identity) => AwsSource::new(identity)?,
            None => {
                let access_key_id = config.access_key_id.trim().to_owned();
                if access_key_id.is_empty()
                    || !access_key_id.bytes().all(|b| b.is_ascii_alphanumeric())
                {
                    return Err(Error::Config(
                        "the AWS access key ID must be letters and digits (like AKIA…)".into(),
                    ));
                }
                if config.secret_access_key.expose_secret().is_empty() {
                    return Err(Error::Config("the AWS secret access key is empty".into()));
                }
                AwsSource::Static(AwsCredentials {
                    access_key_id,
                    secret_access_key: config.secret_access_key,
                    session_token: config.session_token,
                    expires_at: None,
                })
            }
        };
        let endpoint = match config.endpoint {
            Some(endpoint) => endpoint,
            None => default_endpoint(&region)?,
        };
        let http = ExchangeHttp::new(
            &[&endpoint],
            config.guard,
            config.ca_pem.as_deref(),
            config.timeouts,
        )?;
        Ok(EcrProvider {
            source,
            region,
            endpoint,
            http,
            cache: CredentialCache::default(),
        })
    }

    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// One `GetAuthorizationToken` call, without the cache.
    async fn exchange(&self) -> Result<ProvidedCredentials> {
        let aws = self.source.credentials().await?;
        let url = &self.endpoint;
        let body: &[u8] = b"{}";
        let identity: Identity = aws_credential_types::Credentials::new(
            aws.access_key_id.clone(),
            aws.secret_access_key.expose_secret().to_owned(),
            aws.session_token
                .as_ref()
                .map(|t| t.expose_secret().to_owned()),
            None,
            "imagelib",
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(SIGNING_NAME)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| Error::Config(format!("cannot sign the ECR request: {e}")))?
            .into();
        // Signed: host (from the URL), content-type, x-amz-target, and the x-amz-date and
        // x-amz-security-token headers the signer adds.
        let signable = SignableRequest::new(
            "POST",
            url.as_str(),
            [("content-type", CONTENT_TYPE), ("x-amz-target", TARGET)].into_iter(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| Error::Config(format!("cannot sign the ECR request: {e}")))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| Error::Config(format!("cannot sign the ECR request: {e}")))?
            .into_parts();
        let mut request = self
            .http
            .post(url)
            .header("content-type", CONTENT_TYPE)
            .header("x-amz-target", TARGET)
            .header("accept", "application/json");
        let (headers, _params) = instructions.into_parts();
        for header in headers {
            let mut value =
                reqwest::header::HeaderValue::from_str(header.value()).map_err(|_| {
                    Error::Config(
                        "the AWS credentials hold characters not allowed in a header".into(),
                    )
                })?;
            value.set_sensitive(header.sensitive() || header.name() == "authorization");
            request = request.header(header.name(), value);
        }
        tracing::debug!(endpoint = %url, region = %self.region, "ECR GetAuthorizationToken");
        let answer = self.http.send(url, request.body(body)).await?;
        if !answer.status.is_success() {
            let err = aws_error(url, &answer);
            if err.kind() == crate::ErrorKind::Unauthorized {
                // Temporary credentials revoked or expired early: fetch new ones next time.
                self.source.invalidate().await;
            }
            return Err(err);
        }
        let mut provided = parse_authorization(url, &answer.body)?;
        if let (Some(token), Some(creds)) = (provided.expires_at, aws.expires_at) {
            provided.expires_at = Some(token.min(creds));
        }
        Ok(provided)
    }
}

impl CredentialProvider for EcrProvider {
    fn credentials(&self) -> BoxFuture<'_, Result<ProvidedCredentials, Error>> {
        Box::pin(self.cache.get_or_exchange(|| self.exchange()))
    }

    fn invalidate(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.cache.clear().await;
            self.source.invalidate().await;
        })
    }
}

/// The domain suffixes of ECR registry hosts: `<account>.dkr.ecr.<region>.amazonaws.com`,
/// and `….amazonaws.com.cn` in the China regions.
pub const ECR_HOST_SUFFIXES: &[&str] = &[".amazonaws.com", ".amazonaws.com.cn"];

/// Refuses a registry host that is not an ECR registry of `region`: AWS credentials are
/// only exchanged for, and the token only sent to, `<12-digit account>.dkr.ecr.<region>`
/// under one of `suffixes` (default [`ECR_HOST_SUFFIXES`]). Nothing is requested before.
pub fn check_ecr_host(host: &str, region: &str, suffixes: &[String]) -> Result<()> {
    let host_l = host.trim_end_matches('.').to_ascii_lowercase();
    let refuse = || Error::HostNotAllowed {
        host: host.to_owned(),
        reason: format!(
            "aws_ecr credentials are only used for ECR registries of their region \
             (<account>.dkr.ecr.{region}{}), never exchanged for another host",
            suffixes
                .first()
                .map(String::as_str)
                .unwrap_or(".amazonaws.com")
        ),
    };
    let rest = suffixes
        .iter()
        .map(|s| format!(".{}", s.trim_start_matches('.').to_ascii_lowercase()))
        .find_map(|suffix| host_l.strip_suffix(suffix.as_str()).map(str::to_owned))
        .ok_or_else(refuse)?;
    let mut labels = rest.splitn(4, '.');
    let (account, dkr, ecr, host_region) = (
        labels.next().unwrap_or_default(),
        labels.next().unwrap_or_default(),
        labels.next().unwrap_or_default(),
        labels.next().unwrap_or_default(),
    );
    let account_ok = account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit());
    let ecr_ok = ecr == "ecr" || ecr == "ecr-fips";
    if account_ok && dkr == "dkr" && ecr_ok && host_region == region {
        Ok(())
    } else {
        Err(refuse())
    }
}

fn default_endpoint(region: &str) -> Result<Url> {
    let suffix = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    Url::parse(&format!("https://api.ecr.{region}.{suffix}/"))
        .map_err(|e| Error::Config(format!("no ECR endpoint for region `{region}`: {e}")))
}

/// AWS JSON protocol errors: `{"__type": "…#Code" | "Code", "message" | "Message": "…"}`,
/// the code sometimes only in `x-amzn-ErrorType`.
fn aws_error(url: &Url, answer: &Answer) -> Error {
    #[derive(Deserialize, Default)]
    struct AwsError {
        #[serde(rename = "__type")]
        kind: Option<String>,
        #[serde(alias = "Message")]
        message: Option<String>,
    }
    let parsed: AwsError = serde_json::from_slice(&answer.body).unwrap_or_default();
    let code = parsed
        .kind
        .or_else(|| {
            answer
                .headers
                .get("x-amzn-errortype")
                .and_then(|v| v.to_str().ok())
                .map(|v| v.split(':').next().unwrap_or_default().to_owned())
        })
        .map(|c| c.rsplit('#').next().unwrap_or_default().to_owned())
        .filter(|c| !c.is_empty());
    let reason = match (&code, &parsed.message) {
        (Some(code), Some(message)) => format!("{}: {}", clip(code), clip(message)),
        (Some(code), None) => clip(code),
        (None, Some(message)) => clip(message),
        (None, None) => format!("answered {}", answer.status),
    };
    let url_s = url.to_string();
    match code.as_deref() {
        Some(
            "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "IncompleteSignatureException"
            | "MissingAuthenticationTokenException"
            | "InvalidClientTokenId"
            | "SignatureDoesNotMatch"
            | "ExpiredTokenException"
            | "ExpiredToken"
            | "InvalidAccessKeyId",
        ) => Error::Unauthorized { url: url_s, reason },
        // Valid credentials whose IAM policy lacks ecr:GetAuthorizationToken.
        Some("AccessDeniedException" | "AccessDenied") => Error::Forbidden { url: url_s, reason },
        Some("ThrottlingException" | "TooManyRequestsException" | "RequestLimitExceeded") => {
            Error::RateLimited {
                url: url_s,
                retry_after: None,
            }
        }
        _ => match answer.status.as_u16() {
            401 | 403 => Error::Unauthorized { url: url_s, reason },
            _ => answer.generic_error(url, reason),
        },
    }
}

fn parse_authorization(url: &Url, body: &[u8]) -> Result<ProvidedCredentials> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Output {
        #[serde(default)]
        authorization_data: Vec<AuthorizationData>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct AuthorizationData {
        authorization_token: Option<String>,
        expires_at: Option<f64>,
    }
    let output: Output =
        serde_json::from_slice(body).map_err(|e| json_error(url, "the ECR answer", &e))?;
    let data = output
        .authorization_data
        .into_iter()
        .next()
        .ok_or_else(|| Error::protocol(url, "the ECR answer holds no authorizationData"))?;
    let token = data
        .authorization_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Error::protocol(url, "the ECR answer holds no authorizationToken"))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| Error::protocol(url, "the ECR authorizationToken is not base64 text"))?;
    let (username, password) = decoded
        .split_once(':')
        .filter(|(u, p)| !u.is_empty() && !p.is_empty())
        .ok_or_else(|| Error::protocol(url, "the ECR authorizationToken is not `user:password`"))?;
    let expires_at = data
        .expires_at
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs_f64(s.min(4.0e11)))
        .ok_or_else(|| Error::protocol(url, "the ECR answer holds no expiresAt"))?;
    if expires_at <= SystemTime::now() {
        return Err(Error::protocol(
            url,
            "the ECR token is already expired (is the clock right?)",
        ));
    }
    Ok(basic_until(username, password.to_owned(), expires_at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecr_hosts_are_the_regions_registries_only() {
        let d: Vec<String> = ECR_HOST_SUFFIXES.iter().map(|s| s.to_string()).collect();
        assert!(
            check_ecr_host(
                "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
                "eu-west-1",
                &d
            )
            .is_ok()
        );
        assert!(
            check_ecr_host(
                "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn",
                "cn-north-1",
                &d
            )
            .is_ok()
        );
        assert!(
            check_ecr_host(
                "123456789012.dkr.ecr-fips.us-east-1.amazonaws.com",
                "us-east-1",
                &d
            )
            .is_ok()
        );
        for (host, region) in [
            ("123456789012.dkr.ecr.eu-west-1.amazonaws.com", "us-east-1"),
            (
                "123456789012.dkr.ecr.eu-west-1.amazonaws.com.evil.example",
                "eu-west-1",
            ),
            ("evil.example", "eu-west-1"),
            ("12345.dkr.ecr.eu-west-1.amazonaws.com", "eu-west-1"),
            (
                "123456789012.dkr.ecr.eu-west-1.x.amazonaws.com",
                "eu-west-1",
            ),
            ("s3.amazonaws.com", "eu-west-1"),
        ] {
            let err = check_ecr_host(host, region, &d).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::HostNotAllowed, "{host}");
            assert!(err.to_string().contains("dkr.ecr"), "{err}");
        }
    }
    use crate::auth::Credentials;

    fn url() -> Url {
        "https://api.ecr.eu-west-1.amazonaws.com/".parse().unwrap()
    }

    #[test]
    fn parses_authorization_data() {
        let token = base64::engine::general_purpose::STANDARD.encode("AWS:canary-pw");
        let exp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
            + 43200.5;
        let body = format!(
            r#"{{"authorizationData":[{{"authorizationToken":"{token}","expiresAt":{exp},"proxyEndpoint":"https://1.dkr.ecr.eu-west-1.amazonaws.com"}}]}}"#
        );
        let p = parse_authorization(&url(), body.as_bytes()).unwrap();
        match &p.credentials {
            Credentials::Basic { username, password } => {
                assert_eq!(username, "AWS");
                assert_eq!(password.expose_secret(), "canary-pw");
            }
            other => panic!("{other:?}"),
        }
        let left = p
            .expires_at
            .unwrap()
            .duration_since(SystemTime::now())
            .unwrap();
        assert!(left > Duration::from_secs(43190), "{left:?}");
    }

    #[test]
    fn bad_answers_are_protocol_errors_without_the_token() {
        let canary = base64::engine::general_purpose::STANDARD.encode("no-colon-canary");
        for body in [
            r#"{"authorizationData":[]}"#.to_owned(),
            format!(
                r#"{{"authorizationData":[{{"authorizationToken":"{canary}","expiresAt":4e9}}]}}"#
            ),
            r#"{"authorizationData":[{"authorizationToken":"%%%","expiresAt":4e9}]}"#.to_owned(),
            r#"{"authorizationData":[{"authorizationToken":"QVdTOnB3","expiresAt":1}]}"#.to_owned(),
            r#"{"authorizationData":[{"authorizationToken":"QVdTOnB3"}]}"#.to_owned(),
            r#"{"authorizationData":[{"authorizationToken":12,"expiresAt":"canary"}]}"#.to_owned(),
        ] {
            let err = parse_authorization(&url(), body.as_bytes()).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Protocol, "{body}: {err}");
            assert!(!err.to_string().contains("canary"), "{err}");
            assert!(!err.to_string().contains(&canary), "{err}");
        }
    }

    #[test]
    fn regions_and_default_endpoints() {
        assert_eq!(
            default_endpoint("us-east-1").unwrap().as_str(),
            "https://api.ecr.us-east-1.amazonaws.com/"
        );
        assert_eq!(
            default_endpoint("cn-north-1").unwrap().as_str(),
            "https://api.ecr.cn-north-1.amazonaws.com.cn/"
        );
        let config =
            |region: &str| EcrConfig::new("AKIDEXAMPLE", SecretString::from("s3cr3t"), region);
        assert!(EcrProvider::new(config("eu-west-1")).is_ok());
        for bad in ["", "eu-west-1.evil.example/", "EU WEST"] {
            let err = EcrProvider::new(config(bad)).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Config, "{bad}");
        }
        let mut bad_key = config("eu-west-1");
        bad_key.access_key_id = "AKID/../x".into();
        assert!(EcrProvider::new(bad_key).is_err());
    }
}
