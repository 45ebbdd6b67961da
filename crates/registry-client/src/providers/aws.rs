//! Where the AWS credentials that sign ECR's `GetAuthorizationToken` come from: a static
//! access key, or a workload identity that needs none.
//!
//! - **IRSA** (IAM roles for service accounts): the pod's projected service account token
//!   (`AWS_WEB_IDENTITY_TOKEN_FILE`) is exchanged with STS `AssumeRoleWithWebIdentity` for
//!   the role (`AWS_ROLE_ARN`). The call is unsigned (the token is the proof): a form POST of
//!   `Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=…&RoleSessionName=…&WebIdentityToken=…`
//!   to `https://sts.<region>.amazonaws.com/`, answered in XML
//!   (`AssumeRoleWithWebIdentityResponse/AssumeRoleWithWebIdentityResult/Credentials`, errors
//!   as `ErrorResponse/Error/{Code,Message}`).
//! - **EKS Pod Identity**: `GET AWS_CONTAINER_CREDENTIALS_FULL_URI` (the node's agent,
//!   `http://169.254.170.23/v1/credentials`) with `Authorization: <contents of
//!   AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE>`, answered in JSON
//!   (`{AccessKeyId, SecretAccessKey, Token, Expiration}`). The agent's address is a metadata
//!   address the network guard refuses everywhere else; this provider's client alone is
//!   exempted, for exactly the configured URI.
//!
//! The temporary credentials are cached until shortly before their `Expiration`; the token
//! files are read again for every exchange (the kubelet rotates them).

use std::fmt;
use std::time::SystemTime;

use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use url::{Host, Url};

use super::token_file::TokenFile;
use super::{Answer, CredentialCache, ExchangeHttp, ExchangeTimeouts, Expiring, clip, json_error};
use crate::error::{Error, Result};
use crate::guard::NetworkGuard;

/// The projected service account token of IRSA.
pub const AWS_WEB_IDENTITY_TOKEN_FILE: &str = "AWS_WEB_IDENTITY_TOKEN_FILE";
/// The role IRSA assumes.
pub const AWS_ROLE_ARN: &str = "AWS_ROLE_ARN";
/// The EKS Pod Identity agent's credentials URI.
pub const AWS_CONTAINER_CREDENTIALS_FULL_URI: &str = "AWS_CONTAINER_CREDENTIALS_FULL_URI";
/// The file holding the token the Pod Identity agent expects as `Authorization`.
pub const AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE: &str = "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE";

const STS_VERSION: &str = "2011-06-15";

/// The longest temporary credentials are trusted for (STS's maximum session duration).
const MAX_SESSION: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

/// SigV4 credentials, static or temporary.
#[derive(Clone)]
pub(crate) struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
    pub session_token: Option<SecretString>,
    pub expires_at: Option<SystemTime>,
}

impl Expiring for AwsCredentials {
    fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }
}

impl fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// IRSA: a role assumed with the pod's projected web identity token.
#[derive(Debug, Clone)]
pub struct AwsWebIdentityConfig {
    /// `arn:aws:iam::<account>:role/<name>`.
    pub role_arn: String,
    /// Read for every exchange.
    pub token_file: TokenFile,
    /// STS's regional endpoint region.
    pub region: String,
    /// Defaults to `https://sts.<region>.amazonaws.com/` (`.amazonaws.com.cn` for `cn-*`).
    pub sts_endpoint: Option<Url>,
    /// `RoleSessionName` (default `imagelib-<random>`), as CloudTrail shows it.
    pub session_name: Option<String>,
    pub guard: NetworkGuard,
    pub ca_pem: Option<String>,
    pub timeouts: ExchangeTimeouts,
}

impl AwsWebIdentityConfig {
    pub fn new(
        role_arn: impl Into<String>,
        token_file: TokenFile,
        region: impl Into<String>,
    ) -> Self {
        AwsWebIdentityConfig {
            role_arn: role_arn.into(),
            token_file,
            region: region.into(),
            sts_endpoint: None,
            session_name: None,
            guard: NetworkGuard::default(),
            ca_pem: None,
            timeouts: ExchangeTimeouts::default(),
        }
    }
}

/// EKS Pod Identity: the node agent's credentials endpoint.
#[derive(Debug, Clone)]
pub struct PodIdentityConfig {
    /// `AWS_CONTAINER_CREDENTIALS_FULL_URI`: HTTPS anywhere, or plain HTTP on loopback or the
    /// agents' link-local addresses (`169.254.170.2`, `169.254.170.23`, `fd00:ec2::23`), as
    /// the AWS SDKs accept it.
    pub endpoint: Url,
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`, read for every exchange.
    pub token_file: TokenFile,
    pub guard: NetworkGuard,
    pub timeouts: ExchangeTimeouts,
}

impl PodIdentityConfig {
    pub fn new(endpoint: Url, token_file: TokenFile) -> Self {
        PodIdentityConfig {
            endpoint,
            token_file,
            guard: NetworkGuard::default(),
            timeouts: ExchangeTimeouts::default(),
        }
    }
}

/// Where the SigV4 credentials of an ECR exchange come from, when not a static key.
#[derive(Debug, Clone)]
pub enum AwsIdentity {
    WebIdentity(AwsWebIdentityConfig),
    PodIdentity(PodIdentityConfig),
}

/// The credential source of an [`super::EcrProvider`].
pub(crate) enum AwsSource {
    Static(AwsCredentials),
    WebIdentity(WebIdentitySource),
    PodIdentity(PodIdentitySource),
}

impl fmt::Debug for AwsSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AwsSource::Static(c) => f.debug_tuple("Static").field(c).finish(),
            AwsSource::WebIdentity(s) => f
                .debug_struct("WebIdentity")
                .field("role_arn", &s.role_arn)
                .field("sts", &s.url.as_str())
                .field("token_file", &s.token_file.path)
                .field("cache", &s.cache)
                .finish(),
            AwsSource::PodIdentity(s) => f
                .debug_struct("PodIdentity")
                .field("endpoint", &s.url.as_str())
                .field("token_file", &s.token_file.path)
                .field("cache", &s.cache)
                .finish(),
        }
    }
}

impl AwsSource {
    pub(crate) fn new(identity: AwsIdentity) -> Result<Self> {
        Ok(match identity {
            AwsIdentity::WebIdentity(c) => AwsSource::WebIdentity(WebIdentitySource::new(c)?),
            AwsIdentity::PodIdentity(c) => AwsSource::PodIdentity(PodIdentitySource::new(c)?),
        })
    }

    pub(crate) async fn credentials(&self) -> Result<AwsCredentials> {
        match self {
            AwsSource::Static(c) => Ok(c.clone()),
            AwsSource::WebIdentity(s) => s.cache.get_or_exchange(|| s.exchange()).await,
            AwsSource::PodIdentity(s) => s.cache.get_or_exchange(|| s.exchange()).await,
        }
    }

    pub(crate) async fn invalidate(&self) {
        match self {
            AwsSource::Static(_) => {}
            AwsSource::WebIdentity(s) => s.cache.clear().await,
            AwsSource::PodIdentity(s) => s.cache.clear().await,
        }
    }
}

pub(crate) struct WebIdentitySource {
    role_arn: String,
    session_name: String,
    token_file: TokenFile,
    url: Url,
    http: ExchangeHttp,
    cache: CredentialCache<AwsCredentials>,
}

fn check_region(region: &str) -> Result<()> {
    if region.is_empty()
        || !region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(Error::Config(format!(
            "`{}` is not an AWS region (like eu-west-1)",
            clip(region)
        )));
    }
    Ok(())
}

/// `arn:<partition>:iam::<12 digits>:role/<path/name>`.
pub(crate) fn check_role_arn(arn: &str) -> Result<()> {
    let refuse = || {
        Error::Config(format!(
            "`{}` is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)",
            clip(arn)
        ))
    };
    let rest = arn.strip_prefix("arn:").ok_or_else(refuse)?;
    let mut parts = rest.splitn(5, ':');
    let (partition, service, region, account, resource) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let ok = partition.starts_with("aws")
        && service == "iam"
        && region.is_empty()
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && resource.len() > "role/".len()
        && resource.starts_with("role/")
        && resource.len() <= 600
        && resource
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-/".contains(&b));
    if ok { Ok(()) } else { Err(refuse()) }
}

impl WebIdentitySource {
    fn new(config: AwsWebIdentityConfig) -> Result<Self> {
        let region = config.region.trim().to_owned();
        check_region(&region)?;
        let role_arn = config.role_arn.trim().to_owned();
        check_role_arn(&role_arn)?;
        let url = match config.sts_endpoint {
            Some(url) => url,
            None => {
                let suffix = if region.starts_with("cn-") {
                    "amazonaws.com.cn"
                } else {
                    "amazonaws.com"
                };
                Url::parse(&format!("https://sts.{region}.{suffix}/")).map_err(|e| {
                    Error::Config(format!("no STS endpoint for region `{region}`: {e}"))
                })?
            }
        };
        let session_name = match config.session_name {
            Some(name) => name,
            None => format!("imagelib-{:016x}", rand::random::<u64>()),
        };
        if session_name.len() < 2
            || session_name.len() > 64
            || !session_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+=,.@-_".contains(&b))
        {
            return Err(Error::Config(
                "the role session name must be 2 to 64 of [A-Za-z0-9+=,.@_-]".into(),
            ));
        }
        let http = ExchangeHttp::new(
            &[&url],
            config.guard,
            config.ca_pem.as_deref(),
            config.timeouts,
        )?;
        Ok(WebIdentitySource {
            role_arn,
            session_name,
            token_file: config.token_file,
            url,
            http,
            cache: CredentialCache::default(),
        })
    }

    async fn exchange(&self) -> Result<AwsCredentials> {
        let token = self.token_file.read().await?;
        let url = &self.url;
        let form = [
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", STS_VERSION),
            ("RoleArn", self.role_arn.as_str()),
            ("RoleSessionName", self.session_name.as_str()),
            ("WebIdentityToken", token.expose_secret()),
        ];
        tracing::debug!(sts = %url, role_arn = %self.role_arn, "STS AssumeRoleWithWebIdentity");
        let request = self.http.post(url).header("accept", "text/xml").form(&form);
        let answer = self.http.send(url, request).await?;
        drop(token);
        if !answer.status.is_success() {
            return Err(sts_error(url, &answer));
        }
        parse_sts_credentials(url, &answer.body)
    }
}

pub(crate) struct PodIdentitySource {
    token_file: TokenFile,
    url: Url,
    http: ExchangeHttp,
    cache: CredentialCache<AwsCredentials>,
}

/// Plain-HTTP hosts the AWS SDKs accept for a container credentials URI.
fn pod_identity_http_host_ok(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => {
            ip.is_loopback()
                || ip == std::net::Ipv4Addr::new(169, 254, 170, 2)
                || ip == std::net::Ipv4Addr::new(169, 254, 170, 23)
        }
        Some(Host::Ipv6(ip)) => {
            ip.is_loopback() || ip == std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23)
        }
        Some(Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

impl PodIdentitySource {
    fn new(config: PodIdentityConfig) -> Result<Self> {
        let url = config.endpoint;
        if url.scheme() == "http" && !pod_identity_http_host_ok(&url) {
            return Err(Error::Config(format!(
                "{AWS_CONTAINER_CREDENTIALS_FULL_URI} {url}: plain HTTP only to the Pod Identity \
                 agent (169.254.170.23, fd00:ec2::23, 169.254.170.2) or loopback"
            )));
        }
        let http = ExchangeHttp::metadata(&url, &config.guard, config.timeouts)?;
        Ok(PodIdentitySource {
            token_file: config.token_file,
            url,
            http,
            cache: CredentialCache::default(),
        })
    }

    async fn exchange(&self) -> Result<AwsCredentials> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Answered {
            access_key_id: Option<String>,
            secret_access_key: Option<String>,
            token: Option<String>,
            expiration: Option<String>,
        }
        let token = self.token_file.read().await?;
        let url = &self.url;
        let mut value = reqwest::header::HeaderValue::from_str(token.expose_secret()).map_err(|_| {
            Error::Config(format!(
                "the token in {AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE} is not a valid header value"
            ))
        })?;
        value.set_sensitive(true);
        tracing::debug!(endpoint = %url, "EKS Pod Identity credentials");
        let request = self
            .http
            .get(url)
            .header("accept", "application/json")
            .header("authorization", value);
        let answer = self.http.send(url, request).await?;
        drop(token);
        if !answer.status.is_success() {
            return Err(agent_error(url, &answer));
        }
        let answered: Answered = serde_json::from_slice(&answer.body)
            .map_err(|e| json_error(url, "the Pod Identity answer", &e))?;
        credentials_from(
            url,
            "the Pod Identity answer",
            answered.access_key_id,
            answered.secret_access_key,
            answered.token,
            answered.expiration,
        )
    }
}

fn credentials_from(
    url: &Url,
    what: &str,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    session_token: Option<String>,
    expiration: Option<String>,
) -> Result<AwsCredentials> {
    let access_key_id = access_key_id
        .map(|k| k.trim().to_owned())
        .filter(|k| !k.is_empty() && k.len() <= 128 && k.bytes().all(|b| b.is_ascii_alphanumeric()))
        .ok_or_else(|| Error::protocol(url, format!("{what} holds no usable AccessKeyId")))?;
    let secret_access_key = secret_access_key
        .filter(|k| !k.is_empty())
        .map(SecretString::from)
        .ok_or_else(|| Error::protocol(url, format!("{what} holds no SecretAccessKey")))?;
    let session_token = session_token
        .filter(|k| !k.is_empty())
        .map(SecretString::from)
        .ok_or_else(|| Error::protocol(url, format!("{what} holds no session token")))?;
    let expires_at = expiration
        .as_deref()
        .and_then(|e| chrono::DateTime::parse_from_rfc3339(e.trim()).ok())
        .and_then(|at| {
            let secs = at.timestamp();
            (secs > 0).then(|| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64))
        })
        .ok_or_else(|| Error::protocol(url, format!("{what} holds no Expiration (RFC 3339)")))?;
    let now = SystemTime::now();
    if expires_at <= now {
        return Err(Error::protocol(
            url,
            format!("{what}: the credentials are already expired (is the clock right?)"),
        ));
    }
    // STS sessions last at most 12 hours; a later Expiration is not believed.
    let expires_at = expires_at.min(now + MAX_SESSION);
    Ok(AwsCredentials {
        access_key_id,
        secret_access_key,
        session_token: Some(session_token),
        expires_at: Some(expires_at),
    })
}

/// The text of the first element `name` inside `xml` (attributes allowed on the opening
/// tag), entities decoded. Enough for STS's flat answers; anything else is `None`.
fn xml_element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}");
    let close = format!("</{name}>");
    let mut from = 0;
    loop {
        let at = from + xml.get(from..)?.find(&open)?;
        let after = at + open.len();
        let next = xml.get(after..)?.chars().next()?;
        if next == '>' || next == '/' || next.is_whitespace() {
            let body_start = after + xml.get(after..)?.find('>')? + 1;
            if xml.get(after..body_start - 1)?.ends_with('/') {
                return Some("");
            }
            let end = body_start + xml.get(body_start..)?.find(&close)?;
            return xml.get(body_start..end);
        }
        from = after;
    }
}

fn xml_text(xml: &str, path: &[&str]) -> Option<String> {
    let mut scope = xml;
    for name in path {
        scope = xml_element(scope, name)?;
    }
    let text = scope.trim();
    if text.contains('<') {
        return None;
    }
    Some(
        text.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

fn parse_sts_credentials(url: &Url, body: &[u8]) -> Result<AwsCredentials> {
    let xml = std::str::from_utf8(body)
        .map_err(|_| Error::protocol(url, "the STS answer is not UTF-8 XML"))?;
    let credentials = xml_element(xml, "AssumeRoleWithWebIdentityResponse")
        .and_then(|r| xml_element(r, "AssumeRoleWithWebIdentityResult"))
        .and_then(|r| xml_element(r, "Credentials"))
        .ok_or_else(|| {
            Error::protocol(
                url,
                "the STS answer holds no AssumeRoleWithWebIdentityResult/Credentials",
            )
        })?;
    let field = |name: &str| xml_text(credentials, &[name]);
    credentials_from(
        url,
        "the STS answer",
        field("AccessKeyId"),
        field("SecretAccessKey"),
        field("SessionToken"),
        field("Expiration"),
    )
}

/// STS's XML errors: `<ErrorResponse><Error><Type/><Code/><Message/></Error></ErrorResponse>`.
fn sts_error(url: &Url, answer: &Answer) -> Error {
    let xml = std::str::from_utf8(&answer.body).unwrap_or_default();
    let code = xml_text(xml, &["ErrorResponse", "Error", "Code"]).filter(|c| !c.is_empty());
    let message = xml_text(xml, &["ErrorResponse", "Error", "Message"]).filter(|m| !m.is_empty());
    let reason = match (&code, &message) {
        (Some(code), Some(message)) => format!("STS: {}: {}", clip(code), clip(message)),
        (Some(text), None) | (None, Some(text)) => format!("STS: {}", clip(text)),
        (None, None) => format!("STS answered {}", answer.status),
    };
    let url_s = url.to_string();
    match code.as_deref() {
        Some(
            "InvalidIdentityToken"
            | "ExpiredTokenException"
            | "IDPRejectedClaim"
            | "InvalidClientTokenId",
        ) => Error::Unauthorized { url: url_s, reason },
        Some("AccessDenied" | "AccessDeniedException") => Error::Forbidden { url: url_s, reason },
        Some("Throttling" | "ThrottlingException" | "RequestLimitExceeded") => Error::RateLimited {
            url: url_s,
            retry_after: None,
        },
        _ => match answer.status.as_u16() {
            401 => Error::Unauthorized { url: url_s, reason },
            403 => Error::Forbidden { url: url_s, reason },
            _ => answer.generic_error(url, reason),
        },
    }
}

/// The Pod Identity agent's errors: a status, with a JSON `{"code","message"}` body at best.
fn agent_error(url: &Url, answer: &Answer) -> Error {
    #[derive(Deserialize, Default)]
    struct AgentError {
        #[serde(alias = "Code")]
        code: Option<String>,
        #[serde(alias = "Message")]
        message: Option<String>,
    }
    let parsed: AgentError = serde_json::from_slice(&answer.body).unwrap_or_default();
    let reason = match (parsed.code, parsed.message) {
        (Some(code), Some(message)) => {
            format!("Pod Identity agent: {}: {}", clip(&code), clip(&message))
        }
        (Some(text), None) | (None, Some(text)) => format!("Pod Identity agent: {}", clip(&text)),
        (None, None) => format!("the Pod Identity agent answered {}", answer.status),
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
    fn sts_xml_is_read_and_garbage_refused() {
        let url: Url = "https://sts.eu-west-1.amazonaws.com/".parse().unwrap();
        let good = r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>system:serviceaccount:ns:sa</SubjectFromWebIdentityToken>
    <AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/r/s</Arn><AssumedRoleId>AROA:s</AssumedRoleId></AssumedRoleUser>
    <Credentials>
      <SessionToken>canary&amp;token</SessionToken>
      <SecretAccessKey>canary-secret</SecretAccessKey>
      <Expiration>2099-01-01T00:00:00Z</Expiration>
      <AccessKeyId>ASIAEXAMPLE</AccessKeyId>
    </Credentials>
  </AssumeRoleWithWebIdentityResult>
</AssumeRoleWithWebIdentityResponse>"#;
        let c = parse_sts_credentials(&url, good.as_bytes()).unwrap();
        assert_eq!(c.access_key_id, "ASIAEXAMPLE");
        assert_eq!(
            c.session_token.as_ref().unwrap().expose_secret(),
            "canary&token"
        );
        assert!(!format!("{c:?}").contains("canary"));
        let left = c
            .expires_at
            .unwrap()
            .duration_since(SystemTime::now())
            .unwrap();
        assert!(left <= MAX_SESSION, "a far Expiration is capped: {left:?}");
        for bad in [
            "",
            "not xml",
            "<AssumeRoleWithWebIdentityResponse>",
            "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>A</AccessKeyId></Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>",
            &good.replace("2099-01-01T00:00:00Z", "yesterday"),
            &good.replace("2099-01-01T00:00:00Z", "2001-01-01T00:00:00Z"),
            &good.replace("ASIAEXAMPLE", "<b>x</b>"),
        ] {
            let err = parse_sts_credentials(&url, bad.as_bytes()).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Protocol, "{bad}");
            assert!(!err.to_string().contains("canary"), "{err}");
        }
        assert_eq!(xml_element("<a/>", "a"), Some(""));
        assert_eq!(xml_element("<ab>1</ab><a>2</a>", "a"), Some("2"));
    }

    #[test]
    fn role_arns() {
        assert!(check_role_arn("arn:aws:iam::123456789012:role/imagelib-scanner").is_ok());
        assert!(check_role_arn("arn:aws-cn:iam::123456789012:role/path/to/r").is_ok());
        for bad in [
            "",
            "imagelib",
            "arn:aws:iam::12345:role/x",
            "arn:aws:s3:::bucket",
            "arn:aws:iam::123456789012:user/x",
            "arn:aws:iam::123456789012:role/",
            "arn:aws:iam::123456789012:role/a b",
        ] {
            assert!(check_role_arn(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pod_identity_plain_http_only_to_the_agent() {
        let ok = |s: &str| {
            PodIdentitySource::new(PodIdentityConfig::new(
                s.parse().unwrap(),
                TokenFile::new("/nonexistent", AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE),
            ))
            .is_ok()
        };
        assert!(ok("http://169.254.170.23/v1/credentials"));
        assert!(ok("http://[fd00:ec2::23]/v1/credentials"));
        assert!(ok("http://127.0.0.1:1234/v1/credentials"));
        assert!(ok("https://agent.example/v1/credentials"));
        assert!(!ok("http://10.0.0.1/v1/credentials"));
        assert!(!ok("http://evil.example/v1/credentials"));
        assert!(!ok("file:///etc/passwd"));
    }
}
