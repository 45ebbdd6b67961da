//! Provider credential exchangers against fakes of the cloud token endpoints that speak their
//! real protocols (an ECR that verifies SigV4 signatures, AAD and ACR `/oauth2/exchange`
//! that check their forms, a Google token endpoint that verifies the RS256 JWT assertion),
//! and end to end against real `docker-registry` processes with htpasswd auth.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine as _;
use imagelib_testkit::registry::{ImageSpec, TestRegistry};
use registry_client::providers::{
    ACR_REFRESH_TOKEN_USERNAME, GCP_ACCESS_TOKEN_USERNAME, GCP_CLOUD_PLATFORM_SCOPE,
};
use registry_client::{
    AcrConfig, AcrProvider, CredentialProvider, Credentials, EcrConfig, EcrProvider, ErrorKind,
    ExchangeTimeouts, GcpServiceAccountConfig, GcpServiceAccountProvider, NetworkGuard,
    ProvidedCredentials, RegistryClient, RegistryConfig,
};
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::{Value, json};
use url::Url;

// ---------------------------------------------------------------------------------------
// shared helpers

/// An in-test HTTP server on loopback; stopped on drop.
struct Server {
    base: Url,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds first so the router can know its own URL (a JWT audience, say).
async fn serve(router: impl FnOnce(&Url) -> Router) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let base: Url = format!("http://{addr}/").parse().expect("URL");
    let app = router(&base);
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    Server { base, task }
}

fn timeouts() -> ExchangeTimeouts {
    ExchangeTimeouts {
        connect: Duration::from_secs(5),
        request: Duration::from_secs(10),
    }
}

fn basic_parts(provided: &ProvidedCredentials) -> (String, String) {
    match &provided.credentials {
        Credentials::Basic { username, password } => {
            (username.clone(), password.expose_secret().to_owned())
        }
        other => panic!("expected Basic credentials, got {other:?}"),
    }
}

fn secs_until(at: SystemTime) -> f64 {
    at.duration_since(SystemTime::now())
        .map(|d| d.as_secs_f64())
        .unwrap_or(-1.0)
}

fn epoch_secs(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

fn form(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

/// The default guard with loopback, where the fakes and registries listen, allowed.
fn loopback_allowed() -> NetworkGuard {
    NetworkGuard::from_lists(None, Some(imagelib_testkit::LOOPBACK_NETWORKS)).expect("parses")
}

fn registry_config(registry: &TestRegistry) -> RegistryConfig {
    imagelib_testkit::init_tracing();
    let mut c = RegistryConfig::new(&registry.host(), true).expect("registry URL");
    c.guard = loopback_allowed();
    c.request_timeout = Duration::from_secs(10);
    c.connect_timeout = Duration::from_secs(5);
    c
}

/// A real registry with one htpasswd user and one image in it.
async fn htpasswd_registry(username: &str, password: &str) -> anyhow::Result<TestRegistry> {
    let registry = TestRegistry::builder()
        .htpasswd(username, password)
        .start()
        .await?;
    registry
        .push_image("team/app", "v1", &ImageSpec::linux_amd64())
        .await?;
    Ok(registry)
}

fn assert_secret_free(text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!text.contains(secret), "`{text}` holds a secret");
    }
}

// ---------------------------------------------------------------------------------------
// ECR: GetAuthorizationToken with a SigV4 verifier

const AKID: &str = "AKIAIOSFODNN7EXAMPLE";
const AWS_SECRET: &str = "canary-aws-secret/K7MDENG+bPxRfiCYEXAMPLEKEY";
const ECR_TARGET: &str = "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken";

#[derive(Clone, Copy)]
enum EcrBehaviour {
    Answer,
    /// After a good signature: an AWS error (status, `__type`, message).
    Fail(u16, &'static str, &'static str),
    /// Never answers in time.
    Stall,
}

struct EcrFake {
    region: &'static str,
    secret: &'static str,
    session_token: Option<&'static str>,
    /// The password inside `authorizationToken`.
    password: String,
    lifetime: Duration,
    delay: Duration,
    behaviour: EcrBehaviour,
    requests: AtomicU64,
    exchanges: AtomicU64,
    signed_headers: Mutex<Vec<String>>,
}

impl EcrFake {
    fn new(password: &str) -> Self {
        EcrFake {
            region: "eu-west-1",
            secret: AWS_SECRET,
            session_token: None,
            password: password.to_owned(),
            lifetime: Duration::from_secs(12 * 3600),
            delay: Duration::ZERO,
            behaviour: EcrBehaviour::Answer,
            requests: AtomicU64::new(0),
            exchanges: AtomicU64::new(0),
            signed_headers: Mutex::new(Vec::new()),
        }
    }

    async fn start(self) -> (Server, Arc<EcrFake>) {
        let fake = Arc::new(self);
        let state = fake.clone();
        let server = serve(|_| {
            Router::new()
                .route("/", post(ecr_handler))
                .with_state(state)
        })
        .await;
        (server, fake)
    }

    fn exchanges(&self) -> u64 {
        self.exchanges.load(Ordering::SeqCst)
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

fn aws_error(status: u16, kind: &str, message: &str) -> Response {
    (
        StatusCode::from_u16(status).expect("status"),
        [
            (header::CONTENT_TYPE.as_str(), "application/x-amz-json-1.1"),
            ("x-amzn-requestid", "4b2f0a5c-0000-4000-8000-000000000000"),
        ],
        json!({ "__type": kind, "message": message }).to_string(),
    )
        .into_response()
}

async fn ecr_handler(
    State(fake): State<Arc<EcrFake>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    fake.requests.fetch_add(1, Ordering::SeqCst);
    if let Err(refusal) = verify_ecr_request(&fake, &method, &uri, &headers, &body) {
        return refusal;
    }
    match fake.behaviour {
        EcrBehaviour::Answer => {}
        EcrBehaviour::Fail(status, kind, message) => return aws_error(status, kind, message),
        EcrBehaviour::Stall => {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
    }
    tokio::time::sleep(fake.delay).await;
    fake.exchanges.fetch_add(1, Ordering::SeqCst);
    let token = base64::engine::general_purpose::STANDARD.encode(format!("AWS:{}", fake.password));
    let expires_at = epoch_secs(SystemTime::now() + fake.lifetime);
    (
        [(header::CONTENT_TYPE, "application/x-amz-json-1.1")],
        json!({
            "authorizationData": [{
                "authorizationToken": token,
                "expiresAt": expires_at,
                "proxyEndpoint": format!("https://123456789012.dkr.ecr.{}.amazonaws.com", fake.region),
            }]
        })
        .to_string(),
    )
        .into_response()
}

/// What ECR checks before answering: the operation, the content type, the access key and
/// session token, the credential scope, the clock, and the SigV4 signature, recomputed with
/// `aws-sigv4` from the request as received and the secret the fake knows.
fn verify_ecr_request(
    fake: &EcrFake,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Response> {
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if method != Method::POST || uri.path() != "/" {
        return Err(aws_error(
            404,
            "UnknownOperationException",
            "no such operation",
        ));
    }
    if h("x-amz-target") != Some(ECR_TARGET) {
        return Err(aws_error(
            400,
            "UnknownOperationException",
            "unknown X-Amz-Target",
        ));
    }
    if h("content-type") != Some("application/x-amz-json-1.1") {
        return Err(aws_error(
            400,
            "SerializationException",
            "unexpected content type",
        ));
    }
    if serde_json::from_slice::<serde_json::Map<String, Value>>(body).is_err() {
        return Err(aws_error(
            400,
            "SerializationException",
            "the body is not a JSON object",
        ));
    }
    let missing = || {
        aws_error(
            400,
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        )
    };
    let authorization = h("authorization").ok_or_else(missing)?;
    let fields = authorization
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or_else(|| aws_error(400, "IncompleteSignatureException", "not AWS4-HMAC-SHA256"))?;
    let fields: HashMap<&str, &str> = fields
        .split(',')
        .filter_map(|f| f.trim().split_once('='))
        .collect();
    let (Some(credential), Some(signed_headers), Some(signature)) = (
        fields.get("Credential"),
        fields.get("SignedHeaders"),
        fields.get("Signature"),
    ) else {
        return Err(aws_error(
            400,
            "IncompleteSignatureException",
            "Authorization header incomplete",
        ));
    };
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key, date, region, service, "aws4_request"] = scope[..] else {
        return Err(aws_error(
            400,
            "IncompleteSignatureException",
            "bad credential scope",
        ));
    };
    if access_key != AKID {
        return Err(aws_error(
            400,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ));
    }
    if h("x-amz-security-token") != fake.session_token {
        return Err(aws_error(
            400,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ));
    }
    if region != fake.region || service != "ecr" {
        return Err(aws_error(
            403,
            "InvalidSignatureException",
            &format!(
                "Credential should be scoped to a valid region and service ('{}', 'ecr')",
                fake.region
            ),
        ));
    }
    let amz_date = h("x-amz-date").ok_or_else(missing)?;
    let time = chrono::NaiveDateTime::parse_from_str(amz_date, "%Y%m%dT%H%M%SZ")
        .map_err(|_| aws_error(400, "IncompleteSignatureException", "bad X-Amz-Date"))?
        .and_utc();
    let skew = (chrono::Utc::now() - time).num_seconds().abs();
    if skew > 300 || !amz_date.starts_with(date) {
        return Err(aws_error(
            403,
            "InvalidSignatureException",
            "Signature expired",
        ));
    }
    let signed: Vec<&str> = signed_headers.split(';').collect();
    for required in ["content-type", "host", "x-amz-date", "x-amz-target"] {
        if !signed.contains(&required) {
            return Err(aws_error(
                403,
                "InvalidSignatureException",
                &format!("'{required}' must be a signed header"),
            ));
        }
    }
    *fake.signed_headers.lock().unwrap() = signed.iter().map(|s| s.to_string()).collect();

    let values: Vec<(&str, String)> = signed
        .iter()
        .map(|name| {
            let joined = headers
                .get_all(*name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect::<Vec<_>>()
                .join(",");
            (*name, joined)
        })
        .collect();
    let host = h("host").ok_or_else(missing)?;
    let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let identity: Identity = aws_credential_types::Credentials::new(
        AKID,
        fake.secret,
        fake.session_token.map(str::to_owned),
        None,
        "ecr-fake",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(fake.region)
        .name("ecr")
        .time(SystemTime::from(time))
        .settings(SigningSettings::default())
        .build()
        .expect("signing params")
        .into();
    let signable = SignableRequest::new(
        method.as_str(),
        format!("http://{host}{path_and_query}"),
        values.iter().map(|(k, v)| (*k, v.as_str())),
        SignableBody::Bytes(body),
    )
    .expect("signable request");
    let expected = sign(signable, &params).expect("sign");
    if expected.signature() != *signature {
        return Err(aws_error(
            403,
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. \
             Check your AWS Secret Access Key and signing method. Consult the service \
             documentation for details.",
        ));
    }
    Ok(())
}

fn ecr_config(endpoint: &Url, secret: &str) -> EcrConfig {
    let mut config = EcrConfig::new(AKID, SecretString::from(secret.to_owned()), "eu-west-1");
    config.endpoint = Some(endpoint.clone());
    config.timeouts = timeouts();
    config.guard = loopback_allowed();
    config
}

#[tokio::test]
async fn ecr_get_authorization_token_is_sigv4_signed() -> anyhow::Result<()> {
    let (server, fake) = EcrFake::new("canary-ecr-password").start().await;
    let provider = EcrProvider::new(ecr_config(&server.base, AWS_SECRET))?;
    let provided = provider.credentials().await?;
    let (username, password) = basic_parts(&provided);
    assert_eq!(username, "AWS");
    assert_eq!(password, "canary-ecr-password");
    let left = secs_until(provided.expires_at.expect("an expiry"));
    assert!(
        (12.0 * 3600.0 - 30.0..=12.0 * 3600.0).contains(&left),
        "{left}"
    );
    assert_eq!((fake.requests(), fake.exchanges()), (1, 1));
    assert_eq!(
        *fake.signed_headers.lock().unwrap(),
        ["content-type", "host", "x-amz-date", "x-amz-target"]
    );
    assert_secret_free(
        &format!("{provider:?}"),
        &[AWS_SECRET, "canary-ecr-password"],
    );
    let mut config = ecr_config(&server.base, AWS_SECRET);
    config.session_token = Some(SecretString::from("canary-session"));
    assert_secret_free(&format!("{config:?}"), &[AWS_SECRET, "canary-session"]);
    Ok(())
}

#[tokio::test]
async fn ecr_session_token_is_sent_and_signed() -> anyhow::Result<()> {
    let mut fake = EcrFake::new("pw-with-session");
    fake.session_token = Some("canary-session-token");
    let (server, fake) = fake.start().await;

    let mut config = ecr_config(&server.base, AWS_SECRET);
    config.session_token = Some(SecretString::from("canary-session-token"));
    let provided = EcrProvider::new(config)?.credentials().await?;
    assert_eq!(basic_parts(&provided).1, "pw-with-session");
    assert!(
        fake.signed_headers
            .lock()
            .unwrap()
            .contains(&"x-amz-security-token".to_owned())
    );

    // the same key without its session token is not recognised
    let err = EcrProvider::new(ecr_config(&server.base, AWS_SECRET))?
        .credentials()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(
        err.to_string().contains("UnrecognizedClientException"),
        "{err}"
    );
    assert_eq!(fake.exchanges(), 1);
    Ok(())
}

#[tokio::test]
async fn ecr_wrong_secret_is_unauthorized_with_the_aws_reason() -> anyhow::Result<()> {
    let (server, fake) = EcrFake::new("never-handed-out").start().await;
    let wrong = "canary-wrong-secret-0123456789";
    let provider = EcrProvider::new(ecr_config(&server.base, wrong))?;
    let err = provider.credentials().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert_eq!(
        err.validation_reason(),
        Some(imagelib_events::model::ValidationReason::Unauthorized)
    );
    let text = err.to_string();
    assert!(text.contains("InvalidSignatureException"), "{text}");
    assert!(
        text.contains("signature we calculated does not match"),
        "{text}"
    );
    assert_secret_free(&text, &[wrong, AWS_SECRET, "never-handed-out"]);
    assert_secret_free(&format!("{err:?}"), &[wrong]);
    assert_eq!((fake.requests(), fake.exchanges()), (1, 0));
    // failures are not cached: the next call asks again
    assert!(provider.credentials().await.is_err());
    assert_eq!(fake.requests(), 2);
    Ok(())
}

#[tokio::test]
async fn ecr_wrong_region_or_unknown_key_is_unauthorized() -> anyhow::Result<()> {
    let (server, fake) = EcrFake::new("pw").start().await;
    let mut config = ecr_config(&server.base, AWS_SECRET);
    config.region = "us-east-1".into();
    let err = EcrProvider::new(config)?.credentials().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(
        err.to_string().contains("scoped to a valid region"),
        "{err}"
    );

    let mut config = ecr_config(&server.base, AWS_SECRET);
    config.access_key_id = "AKIAUNKNOWNKEY000000".into();
    let err = EcrProvider::new(config)?.credentials().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(
        err.to_string().contains(
            "UnrecognizedClientException: The security token included in the request is invalid."
        ),
        "{err}"
    );
    assert_eq!(fake.exchanges(), 0);
    Ok(())
}

#[tokio::test]
async fn ecr_aws_errors_are_classified() -> anyhow::Result<()> {
    let cases = [
        (
            EcrBehaviour::Fail(
                400,
                "AccessDeniedException",
                "User: arn:aws:iam::123456789012:user/scanner is not authorized to perform: ecr:GetAuthorizationToken",
            ),
            ErrorKind::Forbidden,
            "AccessDeniedException: User: arn:aws:iam::123456789012:user/scanner",
        ),
        (
            EcrBehaviour::Fail(400, "ThrottlingException", "Rate exceeded"),
            ErrorKind::RateLimited,
            "rate_limited",
        ),
        (
            EcrBehaviour::Fail(500, "ServerException", "internal error"),
            ErrorKind::Server,
            "answered 500",
        ),
        (
            EcrBehaviour::Fail(
                400,
                "com.amazonaws.ecr#ExpiredTokenException",
                "The security token included in the request is expired",
            ),
            ErrorKind::Unauthorized,
            "ExpiredTokenException: The security token included in the request is expired",
        ),
        (
            EcrBehaviour::Fail(400, "InvalidParameterException", "bad"),
            ErrorKind::Protocol,
            "InvalidParameterException: bad",
        ),
    ];
    for (behaviour, kind, text) in cases {
        let mut fake = EcrFake::new("pw");
        fake.behaviour = behaviour;
        let (server, _fake) = fake.start().await;
        let err = EcrProvider::new(ecr_config(&server.base, AWS_SECRET))?
            .credentials()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), kind, "{err}");
        assert!(err.to_string().contains(text), "{err}");
    }
    Ok(())
}

#[tokio::test]
async fn ecr_network_failures_timeout_connect_blocked() -> anyhow::Result<()> {
    // a token endpoint that never answers
    let mut fake = EcrFake::new("pw");
    fake.behaviour = EcrBehaviour::Stall;
    let (server, _fake) = fake.start().await;
    let mut config = ecr_config(&server.base, AWS_SECRET);
    config.timeouts.request = Duration::from_millis(500);
    let started = std::time::Instant::now();
    let err = EcrProvider::new(config)?.credentials().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // nothing listening
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = closed.local_addr()?.port();
    drop(closed);
    let endpoint: Url = format!("http://127.0.0.1:{port}/").parse()?;
    let err = EcrProvider::new(ecr_config(&endpoint, AWS_SECRET))?
        .credentials()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect, "{err}");

    // the metadata address, as an IP literal: refused before any request
    let err = EcrProvider::new(ecr_config(&"https://169.254.169.254/".parse()?, AWS_SECRET))?
        .credentials()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Blocked, "{err}");

    // a name resolving to loopback, denied by default: refused by the guarded resolver
    let mut config = ecr_config(
        &format!("http://localhost:{}/", server.base.port().unwrap()).parse()?,
        AWS_SECRET,
    );
    config.guard = NetworkGuard::default();
    let err = EcrProvider::new(config)?.credentials().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Blocked, "{err}");
    assert!(err.to_string().contains("localhost"), "{err}");

    // plain HTTP off loopback is refused outright
    let err =
        EcrProvider::new(ecr_config(&"http://ecr.example.com/".parse()?, AWS_SECRET)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    Ok(())
}

#[tokio::test]
async fn ecr_concurrent_callers_share_one_exchange_and_reuse_it() -> anyhow::Result<()> {
    let mut fake = EcrFake::new("shared-pw");
    fake.delay = Duration::from_millis(300);
    let (server, fake) = fake.start().await;
    let provider = EcrProvider::new(ecr_config(&server.base, AWS_SECRET))?;
    let (a, b, c) = tokio::join!(
        provider.credentials(),
        provider.credentials(),
        provider.credentials()
    );
    for provided in [a?, b?, c?] {
        assert_eq!(basic_parts(&provided).1, "shared-pw");
    }
    assert_eq!(
        fake.exchanges(),
        1,
        "three concurrent callers, one exchange"
    );
    provider.credentials().await?;
    assert_eq!(fake.exchanges(), 1, "cached until shortly before expiry");
    Ok(())
}

#[tokio::test]
async fn ecr_short_lived_token_is_exchanged_again_before_expiry() -> anyhow::Result<()> {
    let mut fake = EcrFake::new("short-pw");
    fake.lifetime = Duration::from_secs(3);
    let (server, fake) = fake.start().await;
    let provider = EcrProvider::new(ecr_config(&server.base, AWS_SECRET))?;
    let first = provider.credentials().await?;
    provider.credentials().await?;
    assert_eq!(fake.exchanges(), 1);
    // renewed a third of the lifetime early: after 2 s, before the 3 s expiry
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let second = provider.credentials().await?;
    assert_eq!(fake.exchanges(), 2);
    assert!(second.expires_at > first.expires_at);
    Ok(())
}

#[tokio::test]
async fn ecr_end_to_end_with_a_real_registry() -> anyhow::Result<()> {
    let password = "canary-ecr-registry-pw";
    let registry = htpasswd_registry("AWS", password).await?;
    let (server, fake) = EcrFake::new(password).start().await;
    let provider = Arc::new(EcrProvider::new(ecr_config(&server.base, AWS_SECRET))?);
    let client = RegistryClient::with_provider(registry_config(&registry), provider.clone())?;
    let ping = client.ping().await?;
    assert!(ping.authenticated);
    let repos = client.catalog().await?.into_complete()?;
    assert_eq!(
        repos.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        ["team/app"]
    );
    assert_eq!(fake.exchanges(), 1);

    // two clients sharing the provider, pinging at once: still one exchange
    let other = RegistryClient::with_provider(registry_config(&registry), provider.clone())?;
    let again = RegistryClient::with_provider(registry_config(&registry), provider)?;
    let (a, b) = tokio::join!(other.ping(), again.ping());
    assert!(a?.authenticated && b?.authenticated);
    assert_eq!(fake.exchanges(), 1);

    // a wrong AWS secret: the client reports the exchange's reason
    let wrong = EcrProvider::new(ecr_config(&server.base, "canary-not-the-secret"))?;
    let client = RegistryClient::with_provider(registry_config(&registry), Arc::new(wrong))?;
    let err = client.ping().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(
        err.to_string().contains("InvalidSignatureException"),
        "{err}"
    );
    assert_secret_free(&err.to_string(), &["canary-not-the-secret", password]);
    Ok(())
}

#[tokio::test]
async fn ecr_expiring_token_is_refreshed_by_the_client() -> anyhow::Result<()> {
    let password = "canary-refresh-pw";
    let registry = htpasswd_registry("AWS", password).await?;
    let mut fake = EcrFake::new(password);
    fake.lifetime = Duration::from_secs(4);
    let (server, fake) = fake.start().await;
    let provider = EcrProvider::new(ecr_config(&server.base, AWS_SECRET))?;
    let client = RegistryClient::with_provider(registry_config(&registry), Arc::new(provider))?;
    client.ping().await?;
    client.catalog().await?.into_complete()?;
    assert_eq!(fake.exchanges(), 1, "used until near expiry");
    // the client asks again a quarter of the lifetime early (after 3 s of 4)
    tokio::time::sleep(Duration::from_millis(3300)).await;
    let repos = client.catalog().await?.into_complete()?;
    assert_eq!(repos.len(), 1);
    assert_eq!(
        fake.exchanges(),
        2,
        "a new token before the old one expired"
    );
    client.tags(&repos[0]).await?.into_complete()?;
    assert_eq!(fake.exchanges(), 2);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// ACR: AAD client credentials, then /oauth2/exchange

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT_ID: &str = "8c2a1e7d-0d2f-4a51-9a3c-4b5f6e7d8c9a";
const CLIENT_SECRET: &str = "canary-aad-client-secret~Q8";
const ACR_HOST: &str = "contoso.azurecr.io";

struct AadFake {
    requests: AtomicU64,
    issued: Mutex<HashSet<String>>,
}

struct AcrFake {
    aad: Arc<AadFake>,
    /// `None`: hand out a JWT refresh token valid for 3 hours.
    refresh_token: Option<String>,
    exchanges: AtomicU64,
    issued_exp: Mutex<Option<u64>>,
}

fn aad_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        json!({
            "error": error,
            "error_description": format!("{description}\r\nTrace ID: 0b3e5c1a-0000-0000-0000-000000000000\r\nTimestamp: 2025-01-01 00:00:00Z"),
            "error_codes": [7000215],
            "trace_id": "0b3e5c1a-0000-0000-0000-000000000000",
        })
        .to_string(),
    )
        .into_response()
}

async fn aad_token(
    State(fake): State<Arc<AadFake>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    fake.requests.fetch_add(1, Ordering::SeqCst);
    if !is_form(&headers) {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "AADSTS900144: not a form",
        );
    }
    let f = form(&body);
    let get = |k: &str| f.get(k).map(String::as_str);
    if tenant != TENANT {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("AADSTS90002: Tenant '{tenant}' not found."),
        );
    }
    if get("grant_type") != Some("client_credentials") {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "AADSTS70003",
        );
    }
    if get("scope") != Some("https://containerregistry.azure.net/.default") {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "AADSTS70011: bad scope",
        );
    }
    if get("client_id") != Some(CLIENT_ID) {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "AADSTS700016: Application not found in the directory.",
        );
    }
    if get("client_secret") != Some(CLIENT_SECRET) {
        return aad_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
        );
    }
    let token = format!("aad-access-{}", uuid_like());
    fake.issued.lock().unwrap().insert(token.clone());
    Json(json!({
        "token_type": "Bearer",
        "expires_in": 3599,
        "ext_expires_in": 3599,
        "access_token": token,
    }))
    .into_response()
}

fn uuid_like() -> String {
    static N: AtomicU64 = AtomicU64::new(1);
    format!(
        "{:016x}",
        N.fetch_add(1, Ordering::SeqCst) ^ 0x5eed_0000_0000
    )
}

fn fake_jwt(claims: &Value) -> String {
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.c2lnbmF0dXJl",
        b64(&json!({"alg":"RS256","typ":"JWT","kid":"ACR"})),
        b64(claims)
    )
}

async fn acr_exchange(
    State(fake): State<Arc<AcrFake>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let unauthorized = |message: &str| {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({"errors":[{"code":"UNAUTHORIZED","message":message}]})),
        )
            .into_response()
    };
    if !is_form(&headers) {
        return (StatusCode::BAD_REQUEST, "not a form").into_response();
    }
    let f = form(&body);
    let get = |k: &str| f.get(k).map(String::as_str);
    if get("grant_type") != Some("access_token") {
        return unauthorized("grant_type must be access_token");
    }
    if get("service") != Some(ACR_HOST) || get("tenant") != Some(TENANT) {
        return unauthorized("the service or tenant does not match this registry");
    }
    let known = get("access_token").is_some_and(|t| fake.aad.issued.lock().unwrap().contains(t));
    if !known {
        return unauthorized("the access token is not valid");
    }
    fake.exchanges.fetch_add(1, Ordering::SeqCst);
    let refresh_token = match &fake.refresh_token {
        Some(token) => token.clone(),
        None => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let exp = now + 3 * 3600;
            *fake.issued_exp.lock().unwrap() = Some(exp);
            fake_jwt(&json!({
                "jti": uuid_like(), "sub": CLIENT_ID, "nbf": now, "iat": now, "exp": exp,
                "iss": "Azure Container Registry", "aud": ACR_HOST, "version": "1.0",
                "grant_type": "refresh_token", "tenant": TENANT,
            }))
        }
    };
    Json(json!({ "refresh_token": refresh_token })).into_response()
}

struct AcrFakes {
    aad_server: Server,
    acr_server: Server,
    aad: Arc<AadFake>,
    acr: Arc<AcrFake>,
}

async fn acr_fakes(refresh_token: Option<&str>) -> AcrFakes {
    let aad = Arc::new(AadFake {
        requests: AtomicU64::new(0),
        issued: Mutex::new(HashSet::new()),
    });
    let acr = Arc::new(AcrFake {
        aad: aad.clone(),
        refresh_token: refresh_token.map(str::to_owned),
        exchanges: AtomicU64::new(0),
        issued_exp: Mutex::new(None),
    });
    let state = aad.clone();
    let aad_server = serve(|_| {
        Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(aad_token))
            .with_state(state)
    })
    .await;
    let state = acr.clone();
    let acr_server = serve(|_| {
        Router::new()
            .route("/oauth2/exchange", post(acr_exchange))
            .with_state(state)
    })
    .await;
    AcrFakes {
        aad_server,
        acr_server,
        aad,
        acr,
    }
}

fn acr_config(fakes: &AcrFakes, secret: &str) -> AcrConfig {
    let mut config = AcrConfig::new(
        ACR_HOST,
        TENANT,
        CLIENT_ID,
        SecretString::from(secret.to_owned()),
    );
    config.authority = Some(fakes.aad_server.base.clone());
    config.registry_base = Some(fakes.acr_server.base.clone());
    config.timeouts = timeouts();
    config.guard = loopback_allowed();
    config
}

#[tokio::test]
async fn acr_service_principal_exchanged_for_a_refresh_token() -> anyhow::Result<()> {
    let fakes = acr_fakes(None).await;
    let provider = AcrProvider::new(acr_config(&fakes, CLIENT_SECRET))?;
    let (a, b) = tokio::join!(provider.credentials(), provider.credentials());
    let provided = a?;
    assert_eq!(basic_parts(&provided), basic_parts(&b?));
    let (username, refresh_token) = basic_parts(&provided);
    assert_eq!(username, ACR_REFRESH_TOKEN_USERNAME);
    assert_eq!(refresh_token.split('.').count(), 3, "the fake's JWT");
    let exp = fakes
        .acr
        .issued_exp
        .lock()
        .unwrap()
        .expect("a JWT was issued");
    assert_eq!(
        provided.expires_at,
        Some(UNIX_EPOCH + Duration::from_secs(exp)),
        "the refresh token's exp claim"
    );
    assert_eq!(fakes.aad.requests.load(Ordering::SeqCst), 1);
    assert_eq!(fakes.acr.exchanges.load(Ordering::SeqCst), 1);
    assert_secret_free(&format!("{provider:?}"), &[CLIENT_SECRET, &refresh_token]);
    Ok(())
}

#[tokio::test]
async fn acr_opaque_refresh_token_lasts_an_hour() -> anyhow::Result<()> {
    let fakes = acr_fakes(Some("opaque-refresh-token")).await;
    let provided = AcrProvider::new(acr_config(&fakes, CLIENT_SECRET))?
        .credentials()
        .await?;
    assert_eq!(basic_parts(&provided).1, "opaque-refresh-token");
    let left = secs_until(provided.expires_at.expect("an expiry"));
    assert!((3590.0..=3600.0).contains(&left), "{left}");
    Ok(())
}

#[tokio::test]
async fn acr_wrong_client_secret_is_unauthorized() -> anyhow::Result<()> {
    let fakes = acr_fakes(None).await;
    let wrong = "canary-wrong-aad-secret";
    let err = AcrProvider::new(acr_config(&fakes, wrong))?
        .credentials()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    let text = err.to_string();
    assert!(text.contains("invalid_client"), "{text}");
    assert!(text.contains("AADSTS7000215"), "{text}");
    assert!(!text.contains('\n') && !text.contains('\r'), "{text}");
    assert_secret_free(&text, &[wrong, CLIENT_SECRET]);
    assert_eq!(fakes.acr.exchanges.load(Ordering::SeqCst), 0);

    let mut config = acr_config(&fakes, CLIENT_SECRET);
    config.tenant_id = "00000000-1111-2222-3333-444444444444".into();
    let err = AcrProvider::new(config)?.credentials().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(err.to_string().contains("AADSTS90002"), "{err}");
    Ok(())
}

#[tokio::test]
async fn acr_refused_exchange_is_unauthorized() -> anyhow::Result<()> {
    let fakes = acr_fakes(None).await;
    let mut config = acr_config(&fakes, CLIENT_SECRET);
    config.registry_host = "other.azurecr.io".into();
    let err = AcrProvider::new(config)?.credentials().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    let text = err.to_string();
    assert!(text.contains("oauth2/exchange"), "{text}");
    assert!(
        text.contains("UNAUTHORIZED: the service or tenant does not match"),
        "{text}"
    );
    assert_eq!(fakes.aad.requests.load(Ordering::SeqCst), 1);
    assert_secret_free(&text, &["aad-access-"]);
    Ok(())
}

/// A host outside the ACR suffixes is refused before any request: the AAD token is never
/// even asked for, let alone posted to that host's `/oauth2/exchange`.
#[tokio::test]
async fn acr_exchange_only_with_acr_hosts_and_the_acr_audience() -> anyhow::Result<()> {
    let fakes = acr_fakes(None).await;
    let mut config = acr_config(&fakes, CLIENT_SECRET);
    config.registry_host = "registry.evil.example".into();
    let err = AcrProvider::new(config).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::HostNotAllowed, "{err}");
    assert!(err.to_string().contains(".azurecr.io"), "{err}");
    assert_secret_free(&err.to_string(), &[CLIENT_SECRET]);
    assert_eq!(fakes.aad.requests.load(Ordering::SeqCst), 0);
    assert_eq!(fakes.acr.exchanges.load(Ordering::SeqCst), 0);

    // The fake AAD only issues tokens for the ACR audience: an exchange that works proves
    // the scope asked for was `https://containerregistry.azure.net/.default`.
    let provider = AcrProvider::new(acr_config(&fakes, CLIENT_SECRET))?;
    provider.credentials().await?;
    assert_eq!(fakes.aad.requests.load(Ordering::SeqCst), 1);
    let mut arm = acr_config(&fakes, CLIENT_SECRET);
    arm.scope = "https://management.azure.com/.default".into();
    let err = AcrProvider::new(arm)?.credentials().await.unwrap_err();
    assert!(err.to_string().contains("invalid_scope"), "{err}");
    Ok(())
}

#[tokio::test]
async fn acr_end_to_end_with_a_real_registry() -> anyhow::Result<()> {
    let refresh_token = "canary-acr-refresh-token";
    let registry = htpasswd_registry(ACR_REFRESH_TOKEN_USERNAME, refresh_token).await?;
    let fakes = acr_fakes(Some(refresh_token)).await;
    let provider = AcrProvider::new(acr_config(&fakes, CLIENT_SECRET))?;
    let client = RegistryClient::with_provider(registry_config(&registry), Arc::new(provider))?;
    assert!(client.ping().await?.authenticated);
    let repos = client.catalog().await?.into_complete()?;
    assert_eq!(repos.len(), 1);
    assert_eq!(fakes.acr.exchanges.load(Ordering::SeqCst), 1);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Google: service account key, JWT bearer grant

const SA_EMAIL: &str = "scanner@imagelib-test.iam.gserviceaccount.com";
const SA_KEY_ID: &str = "0123456789abcdef0123456789abcdef01234567";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// An RSA key pair from openssl: PKCS#8 PEM private key, PKCS#1 DER public key.
struct KeyPair {
    private_pem: String,
    public_der: Vec<u8>,
}

fn openssl(args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut child = std::process::Command::new("openssl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("openssl is installed");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write to openssl");
    let out = child.wait_with_output().expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn generate_key_pair() -> KeyPair {
    let private_pem = openssl(
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ],
        b"",
    );
    let public_der = openssl(
        &[
            "rsa",
            "-in",
            "/dev/stdin",
            "-RSAPublicKey_out",
            "-outform",
            "DER",
        ],
        &private_pem,
    );
    KeyPair {
        private_pem: String::from_utf8(private_pem).expect("PEM is text"),
        public_der,
    }
}

fn trusted_key() -> &'static KeyPair {
    static KEY: OnceLock<KeyPair> = OnceLock::new();
    KEY.get_or_init(generate_key_pair)
}

fn untrusted_key() -> &'static KeyPair {
    static KEY: OnceLock<KeyPair> = OnceLock::new();
    KEY.get_or_init(generate_key_pair)
}

fn key_json(private_pem: &str, token_uri: &Url) -> SecretString {
    SecretString::from(
        json!({
            "type": "service_account",
            "project_id": "imagelib-test",
            "private_key_id": SA_KEY_ID,
            "private_key": private_pem,
            "client_email": SA_EMAIL,
            "client_id": "112233445566778899000",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri.as_str(),
            "universe_domain": "googleapis.com",
        })
        .to_string(),
    )
}

struct GoogleFake {
    token_uri: String,
    access_token: String,
    exchanges: AtomicU64,
    claims: Mutex<Option<Value>>,
}

fn invalid_grant(description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": "invalid_grant", "error_description": description })),
    )
        .into_response()
}

/// The JWT bearer grant as Google runs it: the assertion's RS256 signature against the
/// service account's public key, then its header and claims.
async fn google_token(
    State(fake): State<Arc<GoogleFake>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !is_form(&headers) {
        return invalid_grant("not a form");
    }
    let f = form(&body);
    if f.get("grant_type").map(String::as_str) != Some(JWT_BEARER) {
        return (
            StatusCode::BAD_REQUEST,
            Json(
                json!({"error":"unsupported_grant_type","error_description":"Invalid grant_type"}),
            ),
        )
            .into_response();
    }
    let Some(assertion) = f.get("assertion") else {
        return invalid_grant("Missing required parameter: assertion");
    };
    let parts: Vec<&str> = assertion.split('.').collect();
    let [header_b64, claims_b64, signature_b64] = parts[..] else {
        return invalid_grant("Invalid JWT: not three parts");
    };
    let decode = |s: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .ok()
    };
    let Some(signature) = decode(signature_b64) else {
        return invalid_grant("Invalid JWT Signature.");
    };
    let signed = format!("{header_b64}.{claims_b64}");
    if UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &trusted_key().public_der)
        .verify(signed.as_bytes(), &signature)
        .is_err()
    {
        return invalid_grant("Invalid JWT Signature.");
    }
    let parse = |s: &str| decode(s).and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    let (Some(jwt_header), Some(claims)) = (parse(header_b64), parse(claims_b64)) else {
        return invalid_grant("Invalid JWT: not JSON");
    };
    if jwt_header["alg"] != "RS256" || jwt_header["kid"] != SA_KEY_ID {
        return invalid_grant("Invalid JWT: unexpected header");
    }
    if claims["iss"] != SA_EMAIL || claims["scope"] != GCP_CLOUD_PLATFORM_SCOPE {
        return invalid_grant("Invalid JWT: iss or scope");
    }
    if claims["aud"] != fake.token_uri.as_str() {
        return invalid_grant("Invalid JWT: Failed audience check.");
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let (Some(iat), Some(exp)) = (claims["iat"].as_i64(), claims["exp"].as_i64()) else {
        return invalid_grant("Invalid JWT: iat and exp are required");
    };
    if (iat - now).abs() > 60 || exp - iat != 3600 {
        return invalid_grant(
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.",
        );
    }
    *fake.claims.lock().unwrap() = Some(claims);
    fake.exchanges.fetch_add(1, Ordering::SeqCst);
    Json(json!({
        "access_token": fake.access_token,
        "expires_in": 3599,
        "token_type": "Bearer",
    }))
    .into_response()
}

async fn google_fake(access_token: &str) -> (Server, Arc<GoogleFake>) {
    let slot: Arc<OnceLock<Arc<GoogleFake>>> = Arc::new(OnceLock::new());
    let access_token = access_token.to_owned();
    let set = slot.clone();
    let server = serve(move |base| {
        let fake = Arc::new(GoogleFake {
            token_uri: base.join("token").expect("URL").to_string(),
            access_token,
            exchanges: AtomicU64::new(0),
            claims: Mutex::new(None),
        });
        let _ = set.set(fake.clone());
        Router::new()
            .route("/token", post(google_token))
            .with_state(fake)
    })
    .await;
    let fake = slot.get().expect("set by the router").clone();
    (server, fake)
}

fn gcp_config(key: &KeyPair, server: &Server) -> GcpServiceAccountConfig {
    let mut config = GcpServiceAccountConfig::new(key_json(
        &key.private_pem,
        &server.base.join("token").unwrap(),
    ));
    config.timeouts = timeouts();
    config.guard = loopback_allowed();
    config
}

#[tokio::test]
async fn gcp_jwt_bearer_grant_verified_by_the_token_endpoint() -> anyhow::Result<()> {
    let (server, fake) = google_fake("ya29.canary-access-token").await;
    let provider = GcpServiceAccountProvider::new(gcp_config(trusted_key(), &server))?;
    assert_eq!(provider.token_uri().as_str(), fake.token_uri);
    let (a, b) = tokio::join!(provider.credentials(), provider.credentials());
    let provided = a?;
    b?;
    assert_eq!(
        basic_parts(&provided),
        (
            GCP_ACCESS_TOKEN_USERNAME.to_owned(),
            "ya29.canary-access-token".to_owned()
        )
    );
    let left = secs_until(provided.expires_at.expect("an expiry"));
    assert!((3580.0..=3599.0).contains(&left), "{left}");
    assert_eq!(fake.exchanges.load(Ordering::SeqCst), 1);
    let claims = fake.claims.lock().unwrap().clone().expect("claims seen");
    assert_eq!(claims["iss"], SA_EMAIL);
    assert_eq!(
        claims["scope"],
        "https://www.googleapis.com/auth/cloud-platform"
    );
    assert_eq!(claims["aud"], fake.token_uri.as_str());
    assert_secret_free(
        &format!("{provider:?}"),
        &["PRIVATE KEY", "ya29.canary-access-token"],
    );
    Ok(())
}

#[tokio::test]
async fn gcp_key_the_endpoint_does_not_know_is_unauthorized() -> anyhow::Result<()> {
    let (server, fake) = google_fake("ya29.never").await;
    let provider = GcpServiceAccountProvider::new(gcp_config(untrusted_key(), &server))?;
    let err = provider.credentials().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("invalid_grant: Invalid JWT Signature."),
        "{text}"
    );
    let key_body = untrusted_key()
        .private_pem
        .lines()
        .nth(1)
        .expect("a PEM line");
    assert_secret_free(&text, &[key_body, "ya29.never"]);
    assert_eq!(fake.exchanges.load(Ordering::SeqCst), 0);

    Ok(())
}

#[tokio::test]
async fn gcp_end_to_end_with_a_real_registry() -> anyhow::Result<()> {
    let access_token = "ya29.canary-registry-token";
    let registry = htpasswd_registry(GCP_ACCESS_TOKEN_USERNAME, access_token).await?;
    let (server, fake) = google_fake(access_token).await;
    let provider = GcpServiceAccountProvider::new(gcp_config(trusted_key(), &server))?;
    let client = RegistryClient::with_provider(registry_config(&registry), Arc::new(provider))?;
    assert!(client.ping().await?.authenticated);
    assert_eq!(client.catalog().await?.into_complete()?.len(), 1);
    assert_eq!(fake.exchanges.load(Ordering::SeqCst), 1);
    Ok(())
}
