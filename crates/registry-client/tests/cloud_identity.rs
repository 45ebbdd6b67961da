//! The credential kinds without static keys (and the Google service account kind), against
//! the cloud fakes of `imagelib_testkit::cloud` and real token-auth `docker-registry`s: IRSA
//! and EKS Pod Identity in front of ECR, Azure workload identity in front of ACR's exchange,
//! the GKE metadata server, the service account key's JWT bearer grant. Refresh across expiry,
//! token-file rotation, error bodies, garbage answers, and the network guard's metadata block
//! with its one exception per provider.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use imagelib_testkit::cloud::{
    FakeAws, FakeAzure, FakeGoogle, METADATA_STAND_IN, service_account_key,
    service_account_key_json,
};
use imagelib_testkit::registry::{ImageSpec, TestRegistry, TokenAuth};
use registry_client::providers::{
    ACR_REFRESH_TOKEN_USERNAME, AWS_WEB_IDENTITY_TOKEN_FILE, AZURE_FEDERATED_TOKEN_FILE, AcrConfig,
    AcrProvider, AwsIdentity, AwsWebIdentityConfig, EcrConfig, EcrProvider,
    GCP_ACCESS_TOKEN_USERNAME, GcpMetadataConfig, GcpMetadataProvider, GcpServiceAccountConfig,
    GcpServiceAccountProvider, PodIdentityConfig, TokenFile,
};
use registry_client::{
    CredentialProvider, Credentials, ErrorKind, NetworkGuard, ProvidedCredentials,
    ProviderEndpoints, RegistryClient, RegistryConfig, RegistryUrl, StoredCredentials,
};
use secrecy::{ExposeSecret as _, SecretString};

const ROLE: &str = "arn:aws:iam::123456789012:role/imagelib-scanner";
const ECR_HOST: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT: &str = "8c2a1e7d-0d2f-4a51-9a3c-4b5f6e7d8c9a";
const SA_EMAIL: &str = "scanner@imagelib-test.iam.gserviceaccount.com";

/// Loopback allowed (registries and fakes listen there), the metadata stand-in address
/// marked as a metadata address: refused like 169.254.169.254 is.
fn guard() -> NetworkGuard {
    NetworkGuard::from_lists(None, Some(imagelib_testkit::LOOPBACK_NETWORKS))
        .expect("parses")
        .metadata(format!("{METADATA_STAND_IN}/32").parse().expect("net"))
}

fn endpoints() -> ProviderEndpoints {
    ProviderEndpoints {
        ignore_ambient: true,
        ..Default::default()
    }
}

/// A token file in its own directory.
struct TokenDir(PathBuf);

impl TokenDir {
    fn new(contents: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("imagelib-cloud-{}", imagelib_testkit::unique_id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let t = TokenDir(dir);
        t.write(contents);
        t
    }

    fn path(&self) -> PathBuf {
        self.0.join("token")
    }

    /// As the kubelet rotates it: a new file renamed over the old one.
    fn write(&self, contents: &str) {
        let tmp = self.0.join("token.tmp");
        std::fs::write(&tmp, contents).expect("write token");
        std::fs::rename(&tmp, self.path()).expect("rotate token");
    }
}

impl Drop for TokenDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A real registry behind token auth whose token server takes `username` / `password`.
async fn token_registry(username: &str, password: &str) -> anyhow::Result<TestRegistry> {
    let registry = TestRegistry::builder()
        .token_auth(TokenAuth {
            credentials: Some((username.to_owned(), password.to_owned())),
            ..Default::default()
        })
        .start()
        .await?;
    registry
        .push_image("team/app", "v1", &ImageSpec::linux_amd64())
        .await?;
    Ok(registry)
}

fn registry_config(host: &str) -> RegistryConfig {
    imagelib_testkit::init_tracing();
    let mut c = RegistryConfig::new(host, true).expect("registry URL");
    c.guard = guard();
    c.request_timeout = Duration::from_secs(10);
    c.connect_timeout = Duration::from_secs(5);
    c
}

fn basic(provided: &ProvidedCredentials) -> (String, String) {
    match &provided.credentials {
        Credentials::Basic { username, password } => {
            (username.clone(), password.expose_secret().to_owned())
        }
        other => panic!("expected Basic credentials, got {other:?}"),
    }
}

fn secs_left(provided: &ProvidedCredentials) -> f64 {
    provided
        .expires_at
        .expect("an expiry")
        .duration_since(SystemTime::now())
        .map(|d| d.as_secs_f64())
        .unwrap_or(-1.0)
}

fn assert_secret_free(text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!text.contains(secret), "`{text}` holds a secret");
    }
}

fn url(s: &str) -> RegistryUrl {
    RegistryUrl::parse(s, false).expect("registry URL")
}

// ---------------------------------------------------------------------------------------
// AWS: IRSA

fn irsa_ecr(aws: &FakeAws, file: &TokenDir) -> EcrProvider {
    let mut web = AwsWebIdentityConfig::new(
        ROLE,
        TokenFile::new(file.path(), AWS_WEB_IDENTITY_TOKEN_FILE),
        "eu-west-1",
    );
    web.sts_endpoint = Some(aws.sts_url());
    web.guard = guard();
    let mut c = EcrConfig::with_identity(AwsIdentity::WebIdentity(web), "eu-west-1");
    c.endpoint = Some(aws.ecr_url());
    c.guard = guard();
    EcrProvider::new(c).expect("provider")
}

#[tokio::test]
async fn irsa_end_to_end_with_a_token_auth_registry() -> anyhow::Result<()> {
    let password = "canary-ecr-irsa-pw";
    let registry = token_registry("AWS", password).await?;
    let aws = FakeAws::start(ROLE, password).await;
    aws.accept_web_identity_token("canary-projected-sa-token-1");
    let file = TokenDir::new("canary-projected-sa-token-1\n");
    let provider = Arc::new(irsa_ecr(&aws, &file));
    let client =
        RegistryClient::with_provider(registry_config(&registry.host()), provider.clone())?;
    assert!(client.ping().await?.authenticated);
    let repos = client.catalog().await?.into_complete()?;
    assert_eq!(repos.len(), 1);
    client.tags(&repos[0]).await?.into_complete()?;
    assert_eq!(aws.sts_requests(), 1);
    assert_eq!(aws.ecr_requests(), 1);
    let seen = aws.sts_seen();
    assert_eq!(seen[0].0, ROLE);
    assert!(seen[0].1.starts_with("imagelib-"), "{}", seen[0].1);
    assert_eq!(seen[0].2, "canary-projected-sa-token-1");
    assert!(
        aws.ecr_seen()[0].starts_with("ASIASTS"),
        "signed with STS's key"
    );
    let tokens = registry.token_server().expect("token auth").requests();
    assert!(
        tokens.iter().any(|t| t.authenticated && t.granted),
        "{tokens:?}"
    );
    // the STS request is a form POST; the token is in the body, never in the URL
    let sts = &aws.api_requests()[0];
    assert_eq!((sts.method.as_str(), sts.target.as_str()), ("POST", "/"));
    assert_secret_free(
        &format!("{provider:?}"),
        &[
            "canary-projected",
            "canary-aws-temp",
            "canary-aws-session",
            password,
        ],
    );

    // through the stored kind: only for ECR hosts of the region, then the same exchange
    let stored: StoredCredentials = serde_json::from_str(&format!(
        r#"{{"kind":"aws_web_identity","region":"eu-west-1","role_arn":"{ROLE}"}}"#
    ))?;
    let mut e = endpoints();
    e.sts = Some(aws.sts_url());
    e.ecr = Some(aws.ecr_url());
    e.aws_web_identity_token_file = Some(file.path());
    let from_stored = stored.provider(&url(ECR_HOST), &guard(), &e, None)?;
    let provided = from_stored.credentials().await?;
    assert_eq!(basic(&provided), ("AWS".to_owned(), password.to_owned()));
    assert_eq!(aws.sts_requests(), 2);
    for bad in [
        "registry.evil.example",
        "123456789012.dkr.ecr.us-east-1.amazonaws.com",
    ] {
        let err = stored.provider(&url(bad), &guard(), &e, None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::HostNotAllowed, "{bad}: {err}");
    }
    assert_eq!(aws.sts_requests(), 2, "nothing exchanged for another host");

    // no role given: AWS_ROLE_ARN's setting; neither: a clear error naming the variable
    let no_role: StoredCredentials =
        serde_json::from_str(r#"{"kind":"aws_web_identity","region":"eu-west-1"}"#)?;
    let err = no_role
        .provider(&url(ECR_HOST), &guard(), &e, None)
        .unwrap_err();
    assert!(err.to_string().contains("AWS_ROLE_ARN"), "{err}");
    e.aws_role_arn = Some(ROLE.into());
    no_role.provider(&url(ECR_HOST), &guard(), &e, None)?;
    let err = no_role
        .provider(&url(ECR_HOST), &guard(), &endpoints(), None)
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("AWS_WEB_IDENTITY_TOKEN_FILE")
            && text.contains("AWS_CONTAINER_CREDENTIALS_FULL_URI"),
        "{text}"
    );
    Ok(())
}

#[tokio::test]
async fn irsa_refreshes_across_expiry_and_rereads_the_rotated_token() -> anyhow::Result<()> {
    let aws = FakeAws::start(ROLE, "canary-ecr-pw").await;
    aws.set_credentials_lifetime(Duration::from_secs(6));
    aws.accept_web_identity_token("canary-sa-token-a");
    aws.accept_web_identity_token("canary-sa-token-b");
    let file = TokenDir::new("canary-sa-token-a");
    let provider = irsa_ecr(&aws, &file);
    let (a, b) = tokio::join!(provider.credentials(), provider.credentials());
    let first = a?;
    b?;
    assert_eq!(
        (aws.sts_requests(), aws.ecr_requests()),
        (1, 1),
        "single flight"
    );
    let left = secs_left(&first);
    assert!(
        (4.0..=6.0).contains(&left),
        "the ECR token never outlives the STS credentials: {left}"
    );
    provider.credentials().await?;
    assert_eq!(aws.sts_requests(), 1, "cached");

    file.write("canary-sa-token-b\n");
    tokio::time::sleep(Duration::from_millis(4300)).await;
    provider.credentials().await?;
    assert_eq!((aws.sts_requests(), aws.ecr_requests()), (2, 2));
    let tokens: Vec<String> = aws.sts_seen().into_iter().map(|s| s.2).collect();
    assert_eq!(tokens, ["canary-sa-token-a", "canary-sa-token-b"]);
    let keys = aws.ecr_seen();
    assert_ne!(
        keys[0], keys[1],
        "new temporary credentials signed the second call"
    );
    Ok(())
}

#[tokio::test]
async fn irsa_sts_errors_and_garbage_are_classified_without_secrets() -> anyhow::Result<()> {
    let aws = FakeAws::start(ROLE, "canary-ecr-pw").await;
    let file = TokenDir::new("canary-unknown-token");
    let err = irsa_ecr(&aws, &file).credentials().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(err.to_string().contains("InvalidIdentityToken"), "{err}");
    assert_secret_free(&err.to_string(), &["canary-unknown-token"]);
    assert_eq!(aws.ecr_requests(), 0);

    aws.accept_web_identity_token("canary-unknown-token");
    let mut web = AwsWebIdentityConfig::new(
        "arn:aws:iam::123456789012:role/someone-else",
        TokenFile::new(file.path(), AWS_WEB_IDENTITY_TOKEN_FILE),
        "eu-west-1",
    );
    web.sts_endpoint = Some(aws.sts_url());
    web.guard = guard();
    let mut c = EcrConfig::with_identity(AwsIdentity::WebIdentity(web), "eu-west-1");
    c.endpoint = Some(aws.ecr_url());
    c.guard = guard();
    let err = EcrProvider::new(c)?.credentials().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Forbidden, "{err}");
    assert!(err.to_string().contains("AccessDenied"), "{err}");

    for (status, body, kind) in [
        (200, "this is not XML", ErrorKind::Protocol),
        (
            200,
            "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>",
            ErrorKind::Protocol,
        ),
        (500, "<html>oops</html>", ErrorKind::Server),
        (
            400,
            "<ErrorResponse><Error><Code>ExpiredTokenException</Code><Message>Token expired</Message></Error></ErrorResponse>",
            ErrorKind::Unauthorized,
        ),
    ] {
        aws.sts_answers(status, body);
        let err = irsa_ecr(&aws, &file).credentials().await.unwrap_err();
        assert_eq!(err.kind(), kind, "{body}: {err}");
        assert_secret_free(&err.to_string(), &["canary-unknown-token"]);
    }
    let huge = format!("<x>{}</x>", "a".repeat(200 * 1024));
    aws.sts_answers(200, &huge);
    let err = irsa_ecr(&aws, &file).credentials().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge, "{err}");

    let missing = TokenDir::new("x");
    std::fs::remove_file(missing.path())?;
    let err = irsa_ecr(&aws, &missing).credentials().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(
        err.to_string().contains(AWS_WEB_IDENTITY_TOKEN_FILE),
        "{err}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// AWS: EKS Pod Identity

#[tokio::test]
async fn pod_identity_end_to_end_and_its_agent_is_no_registry() -> anyhow::Result<()> {
    let password = "canary-ecr-pod-pw";
    let registry = token_registry("AWS", password).await?;
    let aws = FakeAws::start(ROLE, password).await;
    aws.accept_agent_token("canary-agent-token-1");
    aws.accept_agent_token("canary-agent-token-2");
    let file = TokenDir::new("canary-agent-token-1");
    let mut e = endpoints();
    e.ecr = Some(aws.ecr_url());
    e.aws_container_credentials_full_uri = Some(aws.pod_identity_url());
    e.aws_container_authorization_token_file = Some(file.path());
    let stored: StoredCredentials =
        serde_json::from_str(r#"{"kind":"aws_web_identity","region":"eu-west-1"}"#)?;
    let provided = stored
        .provider(&url(ECR_HOST), &guard(), &e, None)?
        .credentials()
        .await?;
    assert_eq!(basic(&provided), ("AWS".to_owned(), password.to_owned()));
    assert_eq!(aws.agent_seen(), ["canary-agent-token-1"]);
    assert!(aws.ecr_seen()[0].starts_with("ASIAPOD"));

    // the same source in front of a real registry, and the token file rotated
    let mut pod = PodIdentityConfig::new(
        aws.pod_identity_url(),
        TokenFile::new(file.path(), "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
    );
    pod.guard = guard();
    let mut c = EcrConfig::with_identity(AwsIdentity::PodIdentity(pod), "eu-west-1");
    c.endpoint = Some(aws.ecr_url());
    c.guard = guard();
    let provider = Arc::new(EcrProvider::new(c)?);
    file.write("canary-agent-token-2");
    let client =
        RegistryClient::with_provider(registry_config(&registry.host()), provider.clone())?;
    assert!(client.ping().await?.authenticated);
    assert_eq!(client.catalog().await?.into_complete()?.len(), 1);
    assert_eq!(
        aws.agent_seen(),
        ["canary-agent-token-1", "canary-agent-token-2"]
    );

    // the agent's address is refused to registry requests under the same guard
    let agent = aws.pod_identity_url();
    let agent_host = format!(
        "{}:{}",
        agent.host_str().unwrap_or_default(),
        agent.port().unwrap_or(80)
    );
    let before = aws.agent_requests();
    let as_registry = RegistryClient::new(
        registry_config(&agent_host),
        Credentials::basic("u", "canary-pw"),
    )?;
    let err = as_registry.ping().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Blocked, "{err}");
    // and so is the real agent address, whatever the allow list says
    let everything = NetworkGuard::from_lists(None, Some("0.0.0.0/0,::/0"))?;
    for host in ["169.254.170.23", "[fd00:ec2::23]", "169.254.169.254"] {
        let mut c = registry_config(host);
        c.guard = everything.clone();
        let err = RegistryClient::new(c, Credentials::Anonymous)?
            .ping()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Blocked, "{host}: {err}");
    }
    assert_eq!(
        aws.agent_requests(),
        before,
        "the agent saw no registry request"
    );

    // an agent answer that is garbage
    let bad = TokenDir::new("canary-not-accepted");
    let mut pod = PodIdentityConfig::new(
        aws.pod_identity_url(),
        TokenFile::new(bad.path(), "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
    );
    pod.guard = guard();
    let mut c = EcrConfig::with_identity(AwsIdentity::PodIdentity(pod), "eu-west-1");
    c.endpoint = Some(aws.ecr_url());
    c.guard = guard();
    let err = EcrProvider::new(c)?.credentials().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert_secret_free(&err.to_string(), &["canary-not-accepted"]);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Azure workload identity

fn azure_config(azure: &FakeAzure, file: &TokenDir) -> AcrConfig {
    let mut c = AcrConfig::workload_identity(
        "contoso.azurecr.io",
        TENANT,
        CLIENT,
        TokenFile::new(file.path(), AZURE_FEDERATED_TOKEN_FILE),
    );
    c.authority = Some(azure.url());
    c.registry_base = Some(azure.url());
    c.guard = guard();
    c
}

#[tokio::test]
async fn azure_workload_identity_end_to_end_with_rotation() -> anyhow::Result<()> {
    let refresh = "canary-acr-refresh-token";
    let registry = token_registry(ACR_REFRESH_TOKEN_USERNAME, refresh).await?;
    let azure = FakeAzure::start(TENANT, CLIENT, refresh).await;
    azure.accept_assertion("canary-federated-1");
    azure.accept_assertion("canary-federated-2");
    let file = TokenDir::new("canary-federated-1\n");
    let provider = Arc::new(AcrProvider::new(azure_config(&azure, &file))?);
    let client =
        RegistryClient::with_provider(registry_config(&registry.host()), provider.clone())?;
    assert!(client.ping().await?.authenticated);
    assert_eq!(client.catalog().await?.into_complete()?.len(), 1);
    assert_eq!((azure.aad_requests(), azure.exchanges()), (1, 1));
    let aad = &azure.requests()[0];
    assert_eq!(aad.target, format!("/{TENANT}/oauth2/v2.0/token"));
    let form: std::collections::HashMap<String, String> = url::form_urlencoded::parse(&aad.body)
        .into_owned()
        .collect();
    assert_eq!(
        form.get("client_assertion_type").map(String::as_str),
        Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    );
    assert_eq!(
        form.get("scope").map(String::as_str),
        Some("https://containerregistry.azure.net/.default")
    );
    assert!(!form.contains_key("client_secret"));

    file.write("canary-federated-2");
    provider.invalidate().await;
    provider.credentials().await?;
    assert_eq!(
        azure.assertions_seen(),
        ["canary-federated-1", "canary-federated-2"]
    );
    assert_secret_free(&format!("{provider:?}"), &["canary-federated", refresh]);

    // an assertion AAD refuses: its AADSTS error, never the assertion
    file.write("canary-federated-stale");
    provider.invalidate().await;
    let err = provider.credentials().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(err.to_string().contains("AADSTS700024"), "{err}");
    assert_secret_free(&err.to_string(), &["canary-federated-stale"]);

    // the stored kind: tenant and client from the configuration, only for ACR hosts
    let stored: StoredCredentials = serde_json::from_str(r#"{"kind":"azure_workload_identity"}"#)?;
    let mut e = endpoints();
    let err = stored
        .provider(&url("contoso.azurecr.io"), &guard(), &e, None)
        .unwrap_err();
    assert!(err.to_string().contains("AZURE_TENANT_ID"), "{err}");
    e.azure_tenant_id = Some(TENANT.into());
    e.azure_client_id = Some(CLIENT.into());
    let err = stored
        .provider(&url("contoso.azurecr.io"), &guard(), &e, None)
        .unwrap_err();
    assert!(
        err.to_string().contains(AZURE_FEDERATED_TOKEN_FILE),
        "{err}"
    );
    e.azure_federated_token_file = Some(file.path());
    stored.provider(&url("contoso.azurecr.io"), &guard(), &e, None)?;
    let err = stored
        .provider(&url("contoso.azurecr.io.evil.example"), &guard(), &e, None)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::HostNotAllowed, "{err}");
    Ok(())
}

#[tokio::test]
async fn azure_refresh_token_is_renewed_before_it_expires() -> anyhow::Result<()> {
    let azure = FakeAzure::start(TENANT, CLIENT, "").await;
    azure.set_refresh_lifetime(Duration::from_secs(6));
    azure.accept_assertion("canary-federated");
    let file = TokenDir::new("canary-federated");
    let provider = AcrProvider::new(azure_config(&azure, &file))?;
    let first = provider.credentials().await?;
    assert!((4.0..=6.0).contains(&secs_left(&first)), "the JWT's exp");
    provider.credentials().await?;
    assert_eq!(azure.exchanges(), 1);
    tokio::time::sleep(Duration::from_millis(4300)).await;
    provider.credentials().await?;
    assert_eq!((azure.aad_requests(), azure.exchanges()), (2, 2));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Google: GKE metadata server

fn metadata_provider(google: &FakeGoogle) -> GcpMetadataProvider {
    let mut c = GcpMetadataConfig::new(Some(google.metadata_url())).expect("config");
    c.guard = guard();
    GcpMetadataProvider::new(c).expect("provider")
}

#[tokio::test]
async fn gke_metadata_end_to_end_and_the_metadata_server_is_no_registry() -> anyhow::Result<()> {
    let token = "ya29.canary-metadata-token";
    let registry = token_registry(GCP_ACCESS_TOKEN_USERNAME, token).await?;
    let google = FakeGoogle::start(SA_EMAIL, None, token).await;
    let provider = Arc::new(metadata_provider(&google));
    let client =
        RegistryClient::with_provider(registry_config(&registry.host()), provider.clone())?;
    assert!(client.ping().await?.authenticated);
    assert_eq!(client.catalog().await?.into_complete()?.len(), 1);
    assert_eq!(google.metadata_requests(), 1);
    assert_eq!(google.flavors_seen(), ["Google"]);

    // without the header the server refuses, as the real one does
    let raw = reqwest::Client::new()
        .get(provider.token_url().clone())
        .send()
        .await?;
    assert_eq!(raw.status(), 403);

    // the metadata server as a registry, a token realm, or a redirect target: refused
    let meta = google.metadata_url();
    let meta_host = format!(
        "{}:{}",
        meta.host_str().unwrap_or_default(),
        meta.port().unwrap_or(80)
    );
    let before = google.metadata_requests();
    let err = RegistryClient::new(registry_config(&meta_host), Credentials::Anonymous)?
        .ping()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Blocked, "{err}");
    let realm_front = imagelib_testkit::proxy::FaultProxy::respond_always(
        imagelib_testkit::proxy::Response::new(
            401,
            &[
                ("Docker-Distribution-API-Version", "registry/2.0"),
                (
                    "WWW-Authenticate",
                    &format!("Bearer realm=\"{}\",service=\"x\"", provider.token_url()),
                ),
            ],
            "{}",
        ),
    )
    .await;
    // with credentials the realm is refused for being on another host; anonymously, the
    // guard refuses it
    let err =
        RegistryClient::with_provider(registry_config(&realm_front.host()), provider.clone())?
            .catalog()
            .await
            .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RealmNotAllowed, "{err}");
    let err = RegistryClient::new(registry_config(&realm_front.host()), Credentials::Anonymous)?
        .catalog()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Blocked, "{err}");
    let redirect_front = imagelib_testkit::proxy::FaultProxy::respond_always(
        imagelib_testkit::proxy::Response::new(
            307,
            &[
                ("Docker-Distribution-API-Version", "registry/2.0"),
                ("Location", provider.token_url().as_str()),
            ],
            "",
        ),
    )
    .await;
    let err = RegistryClient::new(
        registry_config(&redirect_front.host()),
        Credentials::Anonymous,
    )?
    .ping()
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Blocked, "{err}");
    let mut c = registry_config("metadata.google.internal");
    c.guard = NetworkGuard::from_lists(None, Some("0.0.0.0/0,::/0"))?;
    let err = RegistryClient::new(c, Credentials::Anonymous)?
        .ping()
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::HostNotAllowed | ErrorKind::Dns),
        "{err}"
    );
    assert_eq!(
        google.metadata_requests(),
        before,
        "no registry request reached it"
    );

    // the provider still works, and renews before expiry
    google.set_lifetime(Duration::from_secs(6));
    provider.invalidate().await;
    let provided = provider.credentials().await?;
    assert_eq!(
        basic(&provided),
        (GCP_ACCESS_TOKEN_USERNAME.to_owned(), token.to_owned())
    );
    let n = google.metadata_requests();
    provider.credentials().await?;
    assert_eq!(google.metadata_requests(), n, "cached");
    tokio::time::sleep(Duration::from_millis(4300)).await;
    provider.credentials().await?;
    assert_eq!(google.metadata_requests(), n + 1, "renewed");
    Ok(())
}

#[tokio::test]
async fn gke_workload_identity_as_a_stored_kind() -> anyhow::Result<()> {
    let google = FakeGoogle::start(SA_EMAIL, None, "ya29.canary-stored").await;
    let stored: StoredCredentials = serde_json::from_str(r#"{"kind":"gcp_workload_identity"}"#)?;
    let mut e = endpoints();
    e.gce_metadata = Some(google.metadata_url());
    for host in ["us-docker.pkg.dev", "gcr.io", "eu.gcr.io"] {
        let provided = stored
            .provider(&url(host), &guard(), &e, None)?
            .credentials()
            .await?;
        assert_eq!(basic(&provided).1, "ya29.canary-stored", "{host}");
    }
    for host in [
        "registry.evil.example",
        "gcr.io.evil.example",
        "docker.pkg.dev",
    ] {
        let err = stored.provider(&url(host), &guard(), &e, None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::HostNotAllowed, "{host}: {err}");
    }
    // the metadata server itself answering garbage
    let front = imagelib_testkit::proxy::FaultProxy::respond_always(
        imagelib_testkit::proxy::Response::new(
            200,
            &[("Content-Type", "application/json")],
            "{\"access_token\":",
        ),
    )
    .await;
    let mut c = GcpMetadataConfig::new(Some(format!("http://{}/", front.host()).parse()?))?;
    c.guard = guard();
    let err = GcpMetadataProvider::new(c)?
        .credentials()
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Protocol,
        "not the metadata server's flavor: {err}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Google: service account key as a stored kind

#[tokio::test]
async fn gcp_service_account_kind_end_to_end() -> anyhow::Result<()> {
    let token = "ya29.canary-sa-access-token";
    let registry = token_registry(GCP_ACCESS_TOKEN_USERNAME, token).await?;
    let (private_pem, public_pem) = service_account_key();
    let google = FakeGoogle::start(SA_EMAIL, Some(&public_pem), token).await;
    let key_json = service_account_key_json(SA_EMAIL, &private_pem, google.token_uri().as_str());
    let stored = StoredCredentials::GcpServiceAccount {
        key_json: SecretString::from(key_json.clone()),
    };
    let back = StoredCredentials::from_plaintext(&stored.to_plaintext())?;
    assert!(matches!(back, StoredCredentials::GcpServiceAccount { .. }));
    assert_secret_free(&format!("{stored:?}"), &["PRIVATE KEY"]);
    let provider = stored.provider(
        &url("europe-west1-docker.pkg.dev"),
        &guard(),
        &endpoints(),
        None,
    )?;
    let provided = provider.credentials().await?;
    assert_eq!(
        basic(&provided),
        (GCP_ACCESS_TOKEN_USERNAME.to_owned(), token.to_owned())
    );
    assert_eq!(google.token_requests(), 1);
    let err = stored
        .provider(&url("registry.evil.example"), &guard(), &endpoints(), None)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::HostNotAllowed, "{err}");

    // in front of a real registry, and renewed before expiry
    google.set_lifetime(Duration::from_secs(6));
    let mut c = GcpServiceAccountConfig::new(SecretString::from(key_json));
    c.guard = guard();
    let provider = Arc::new(GcpServiceAccountProvider::new(c)?);
    let client =
        RegistryClient::with_provider(registry_config(&registry.host()), provider.clone())?;
    assert!(client.ping().await?.authenticated);
    assert_eq!(client.catalog().await?.into_complete()?.len(), 1);
    assert_eq!(google.token_requests(), 2);
    tokio::time::sleep(Duration::from_millis(4300)).await;
    provider.credentials().await?;
    assert_eq!(google.token_requests(), 3, "renewed");

    // a key whose token_uri is not Google's: its assertion goes nowhere
    let evil = service_account_key_json(SA_EMAIL, &private_pem, "https://token.evil.example/token");
    let err = StoredCredentials::GcpServiceAccount {
        key_json: SecretString::from(evil.clone()),
    }
    .provider(&url("gcr.io"), &guard(), &endpoints(), None)
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::HostNotAllowed, "{err}");
    // unless the operator names the endpoint
    let mut e = endpoints();
    e.google_token = Some(google.token_uri());
    StoredCredentials::GcpServiceAccount {
        key_json: SecretString::from(evil),
    }
    .provider(&url("gcr.io"), &guard(), &e, None)?
    .credentials()
    .await?;
    Ok(())
}
