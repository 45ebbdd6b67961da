//! Fakes of the cloud identity endpoints behind the workload identity credential kinds,
//! speaking their real wire protocols:
//!
//! - [`FakeAws`]: STS `AssumeRoleWithWebIdentity` (form POST, XML answers and
//!   `ErrorResponse` errors), the EKS Pod Identity agent (`GET /v1/credentials` with the
//!   token as `Authorization`, JSON answer) on a second loopback address standing in for
//!   `169.254.170.23`, and ECR `GetAuthorizationToken` (AWS JSON 1.1), which only accepts
//!   SigV4 requests made with credentials STS or the agent issued (the `Credential=` key id
//!   and `X-Amz-Security-Token` must match; the signature itself is `aws-sigv4`'s business
//!   and tested against a verifier elsewhere).
//! - [`FakeAzure`]: the AAD v2 token endpoint (`/{tenant}/oauth2/v2.0/token`, client
//!   credentials with a secret or a `jwt-bearer` client assertion; AADSTS errors as
//!   `{"error","error_description"}`) and ACR's `/oauth2/exchange`.
//! - [`FakeGoogle`]: Google's OAuth token endpoint (JWT bearer grant, RS256 verified against
//!   the service account's public key) and the GCE metadata server (`Metadata-Flavor: Google`
//!   required, else `403`) on the second loopback address, standing in for
//!   `metadata.google.internal`.
//!
//! Each counts requests and records what it received, so tests can prove refresh across a
//! short expiry and token-file rotation.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;

use crate::proxy::{Action, FaultProxy, Request, Response};

/// The loopback address metadata stand-ins listen on: a test's guard marks it as a metadata
/// address, while the registries and the other fakes stay on `127.0.0.1`.
pub const METADATA_STAND_IN: &str = "127.0.0.2";

fn form(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn json(status: u16, value: serde_json::Value) -> Response {
    Response::new(
        status,
        &[("Content-Type", "application/json; charset=utf-8")],
        value.to_string(),
    )
}

fn rfc3339(at: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(at).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn epoch(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// A lifetime in seconds that a test can shorten.
#[derive(Debug)]
struct Lifetime(AtomicU64);

impl Lifetime {
    fn get(&self) -> Duration {
        Duration::from_secs(self.0.load(Ordering::SeqCst))
    }
}

// ---------------------------------------------------------------------------------------
// AWS

#[derive(Debug, Clone)]
struct Issued {
    secret: String,
    session_token: String,
}

#[derive(Debug)]
struct AwsState {
    role_arn: String,
    /// Web identity tokens STS accepts.
    web_identity_tokens: Mutex<Vec<String>>,
    /// Authorization tokens the Pod Identity agent accepts.
    agent_tokens: Mutex<Vec<String>>,
    lifetime: Lifetime,
    ecr_password: String,
    ecr_lifetime: Lifetime,
    issued: Mutex<HashMap<String, Issued>>,
    counter: AtomicU64,
    sts_requests: AtomicU64,
    agent_requests: AtomicU64,
    ecr_requests: AtomicU64,
    /// What STS received: (RoleArn, RoleSessionName, WebIdentityToken).
    sts_seen: Mutex<Vec<(String, String, String)>>,
    /// The `Authorization` headers the agent received.
    agent_seen: Mutex<Vec<String>>,
    /// The access key ids ECR requests were signed with.
    ecr_seen: Mutex<Vec<String>>,
    /// An STS answer to give instead of credentials: (status, raw body).
    sts_override: Mutex<Option<(u16, String)>>,
}

/// STS, the Pod Identity agent and ECR; see the module docs.
#[derive(Debug)]
pub struct FakeAws {
    state: Arc<AwsState>,
    api: FaultProxy,
    agent: FaultProxy,
}

fn sts_error(status: u16, code: &str, message: &str) -> Response {
    Response::new(
        status,
        &[("Content-Type", "text/xml")],
        format!(
            "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  <Error>\n    \
             <Type>Sender</Type>\n    <Code>{code}</Code>\n    <Message>{message}</Message>\n  \
             </Error>\n  <RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId>\n</ErrorResponse>\n"
        ),
    )
}

fn ecr_error(status: u16, kind: &str, message: &str) -> Response {
    Response::new(
        status,
        &[
            ("Content-Type", "application/x-amz-json-1.1"),
            ("x-amzn-ErrorType", kind),
        ],
        serde_json::json!({ "__type": kind, "message": message }).to_string(),
    )
}

impl AwsState {
    fn issue(&self, prefix: &str) -> (String, Issued, SystemTime) {
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let key_id = format!("ASIA{prefix}{n:012}");
        let issued = Issued {
            secret: format!("canary-aws-temp-secret-{n}"),
            session_token: format!("canary-aws-session-token-{n}"),
        };
        self.issued
            .lock()
            .unwrap()
            .insert(key_id.clone(), issued.clone());
        (key_id, issued, SystemTime::now() + self.lifetime.get())
    }

    fn sts(&self, req: &Request) -> Response {
        self.sts_requests.fetch_add(1, Ordering::SeqCst);
        let f = form(&req.body);
        let get = |k: &str| f.get(k).cloned().unwrap_or_default();
        self.sts_seen.lock().unwrap().push((
            get("RoleArn"),
            get("RoleSessionName"),
            get("WebIdentityToken"),
        ));
        if let Some((status, body)) = self.sts_override.lock().unwrap().clone() {
            return Response::new(status, &[("Content-Type", "text/xml")], body);
        }
        if get("Action") != "AssumeRoleWithWebIdentity" || get("Version") != "2011-06-15" {
            return sts_error(
                400,
                "InvalidAction",
                "Could not find operation for this version",
            );
        }
        if get("RoleSessionName").is_empty() {
            return sts_error(
                400,
                "ValidationError",
                "1 validation error detected: Value null at 'roleSessionName'",
            );
        }
        if !self
            .web_identity_tokens
            .lock()
            .unwrap()
            .contains(&get("WebIdentityToken"))
        {
            return sts_error(
                400,
                "InvalidIdentityToken",
                "Incorrect token audience or the token is not valid",
            );
        }
        if get("RoleArn") != self.role_arn {
            return sts_error(
                403,
                "AccessDenied",
                "Not authorized to perform sts:AssumeRoleWithWebIdentity",
            );
        }
        let (key_id, issued, expires) = self.issue("STS");
        Response::new(
            200,
            &[("Content-Type", "text/xml")],
            format!(
                "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  \
                 <AssumeRoleWithWebIdentityResult>\n    \
                 <SubjectFromWebIdentityToken>system:serviceaccount:imagelib:scanner</SubjectFromWebIdentityToken>\n    \
                 <Audience>sts.amazonaws.com</Audience>\n    \
                 <AssumedRoleUser>\n      <Arn>arn:aws:sts::123456789012:assumed-role/imagelib/{session}</Arn>\n      \
                 <AssumedRoleId>AROACLKWSDQRAOEXAMPLE:{session}</AssumedRoleId>\n    </AssumedRoleUser>\n    \
                 <Credentials>\n      <SessionToken>{token}</SessionToken>\n      \
                 <SecretAccessKey>{secret}</SecretAccessKey>\n      \
                 <Expiration>{expiration}</Expiration>\n      <AccessKeyId>{key_id}</AccessKeyId>\n    \
                 </Credentials>\n    <Provider>arn:aws:iam::123456789012:oidc-provider/oidc.eks.example</Provider>\n  \
                 </AssumeRoleWithWebIdentityResult>\n  <ResponseMetadata>\n    \
                 <RequestId>ad4156e9-bce1-11e2-82e6-6b6efEXAMPLE</RequestId>\n  </ResponseMetadata>\n\
                 </AssumeRoleWithWebIdentityResponse>\n",
                session = get("RoleSessionName"),
                token = issued.session_token,
                secret = issued.secret,
                expiration = rfc3339(expires),
            ),
        )
    }

    fn agent(&self, req: &Request) -> Response {
        self.agent_requests.fetch_add(1, Ordering::SeqCst);
        let auth = req.header("authorization").unwrap_or_default().to_owned();
        self.agent_seen.lock().unwrap().push(auth.clone());
        if req.method != "GET" || req.path() != "/v1/credentials" {
            return json(
                404,
                serde_json::json!({"code": "NotFound", "message": "not found"}),
            );
        }
        if auth.is_empty() {
            return json(
                400,
                serde_json::json!({"code": "MissingAuthorization", "message": "Service account token cannot be empty"}),
            );
        }
        if !self.agent_tokens.lock().unwrap().contains(&auth) {
            return json(
                401,
                serde_json::json!({"code": "AccessDeniedException", "message": "Service account token is not valid"}),
            );
        }
        let (key_id, issued, expires) = self.issue("POD");
        json(
            200,
            serde_json::json!({
                "AccessKeyId": key_id,
                "SecretAccessKey": issued.secret,
                "Token": issued.session_token,
                "AccountId": "123456789012",
                "Expiration": rfc3339(expires),
            }),
        )
    }

    fn ecr(&self, req: &Request) -> Response {
        self.ecr_requests.fetch_add(1, Ordering::SeqCst);
        if req.header("x-amz-target")
            != Some("AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken")
        {
            return ecr_error(400, "UnknownOperationException", "unknown operation");
        }
        let auth = req.header("authorization").unwrap_or_default();
        let key_id = auth
            .split("Credential=")
            .nth(1)
            .and_then(|c| c.split('/').next())
            .unwrap_or_default()
            .to_owned();
        let scope_ok = auth.starts_with("AWS4-HMAC-SHA256 ")
            && auth.contains("/ecr/aws4_request")
            && auth.contains("Signature=");
        self.ecr_seen.lock().unwrap().push(key_id.clone());
        let issued = self.issued.lock().unwrap().get(&key_id).cloned();
        let Some(issued) = issued.filter(|_| scope_ok) else {
            return ecr_error(
                400,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            );
        };
        if req.header("x-amz-security-token") != Some(issued.session_token.as_str()) {
            return ecr_error(
                400,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            );
        }
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("AWS:{}", self.ecr_password));
        let expires = SystemTime::now() + self.ecr_lifetime.get();
        Response::new(
            200,
            &[("Content-Type", "application/x-amz-json-1.1")],
            serde_json::json!({
                "authorizationData": [{
                    "authorizationToken": token,
                    "expiresAt": epoch(expires),
                    "proxyEndpoint": "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com",
                }]
            })
            .to_string(),
        )
    }
}

impl FakeAws {
    /// `role_arn` is the only role STS lets the web identity assume; `ecr_password` is the
    /// registry password inside every ECR token.
    pub async fn start(role_arn: &str, ecr_password: &str) -> Self {
        let state = Arc::new(AwsState {
            role_arn: role_arn.to_owned(),
            web_identity_tokens: Mutex::new(Vec::new()),
            agent_tokens: Mutex::new(Vec::new()),
            lifetime: Lifetime(AtomicU64::new(3600)),
            ecr_password: ecr_password.to_owned(),
            ecr_lifetime: Lifetime(AtomicU64::new(12 * 3600)),
            issued: Mutex::new(HashMap::new()),
            counter: AtomicU64::new(0),
            sts_requests: AtomicU64::new(0),
            agent_requests: AtomicU64::new(0),
            ecr_requests: AtomicU64::new(0),
            sts_seen: Mutex::new(Vec::new()),
            agent_seen: Mutex::new(Vec::new()),
            ecr_seen: Mutex::new(Vec::new()),
            sts_override: Mutex::new(None),
        });
        let s = state.clone();
        let api = FaultProxy::start(None, move |req, _| {
            Action::Respond(if req.method != "POST" || req.path() != "/" {
                ecr_error(404, "UnknownOperationException", "not found")
            } else if req.header("x-amz-target").is_some() {
                s.ecr(req)
            } else {
                s.sts(req)
            })
        })
        .await;
        let s = state.clone();
        let agent = FaultProxy::start_at(&format!("{METADATA_STAND_IN}:0"), None, move |req, _| {
            Action::Respond(s.agent(req))
        })
        .await;
        FakeAws { state, api, agent }
    }

    /// STS's endpoint (`http://127.0.0.1:<port>/`).
    pub fn sts_url(&self) -> url::Url {
        format!("http://{}/", self.api.addr).parse().expect("URL")
    }

    /// ECR's API endpoint (the same server).
    pub fn ecr_url(&self) -> url::Url {
        self.sts_url()
    }

    /// The Pod Identity agent, `http://127.0.0.2:<port>/v1/credentials`.
    pub fn pod_identity_url(&self) -> url::Url {
        format!("http://{}/v1/credentials", self.agent.addr)
            .parse()
            .expect("URL")
    }

    pub fn accept_web_identity_token(&self, token: &str) {
        self.state
            .web_identity_tokens
            .lock()
            .unwrap()
            .push(token.to_owned());
    }

    pub fn accept_agent_token(&self, token: &str) {
        self.state
            .agent_tokens
            .lock()
            .unwrap()
            .push(token.to_owned());
    }

    /// The lifetime of the temporary credentials STS and the agent issue from now on.
    pub fn set_credentials_lifetime(&self, lifetime: Duration) {
        self.state
            .lifetime
            .0
            .store(lifetime.as_secs(), Ordering::SeqCst);
    }

    /// Answer STS requests with this status and raw body from now on (garbage, an error).
    pub fn sts_answers(&self, status: u16, body: &str) {
        *self.state.sts_override.lock().unwrap() = Some((status, body.to_owned()));
    }

    pub fn sts_requests(&self) -> u64 {
        self.state.sts_requests.load(Ordering::SeqCst)
    }

    pub fn agent_requests(&self) -> u64 {
        self.state.agent_requests.load(Ordering::SeqCst)
    }

    pub fn ecr_requests(&self) -> u64 {
        self.state.ecr_requests.load(Ordering::SeqCst)
    }

    /// (RoleArn, RoleSessionName, WebIdentityToken) of every STS request.
    pub fn sts_seen(&self) -> Vec<(String, String, String)> {
        self.state.sts_seen.lock().unwrap().clone()
    }

    /// The `Authorization` of every agent request.
    pub fn agent_seen(&self) -> Vec<String> {
        self.state.agent_seen.lock().unwrap().clone()
    }

    /// The access key id of every ECR request.
    pub fn ecr_seen(&self) -> Vec<String> {
        self.state.ecr_seen.lock().unwrap().clone()
    }

    /// Every request the STS/ECR server received.
    pub fn api_requests(&self) -> Vec<Request> {
        self.api.seen()
    }
}

// ---------------------------------------------------------------------------------------
// Azure

#[derive(Debug)]
struct AzureState {
    tenant: String,
    client_id: String,
    assertions: Mutex<Vec<String>>,
    secrets: Mutex<Vec<String>>,
    refresh_token: String,
    issued: Mutex<Vec<String>>,
    aad_requests: AtomicU64,
    exchanges: AtomicU64,
    /// The client assertions received.
    assertions_seen: Mutex<Vec<String>>,
    lifetime: Lifetime,
}

fn aadsts(status: u16, error: &str, description: &str) -> Response {
    json(
        status,
        serde_json::json!({
            "error": error,
            "error_description": description,
            "error_codes": [description.trim_start_matches("AADSTS").split(':').next().unwrap_or_default().parse::<u64>().unwrap_or(0)],
            "timestamp": rfc3339(SystemTime::now()),
            "trace_id": "0b2a5d0f-1c9e-4b7e-9a55-7f7b5f9a1f00",
            "correlation_id": "8d1c6a3e-2f4b-4c5d-9e6f-7a8b9c0d1e2f",
        }),
    )
}

impl AzureState {
    fn token(&self, req: &Request) -> Response {
        self.aad_requests.fetch_add(1, Ordering::SeqCst);
        let f = form(&req.body);
        let get = |k: &str| f.get(k).cloned().unwrap_or_default();
        if req.path() != format!("/{}/oauth2/v2.0/token", self.tenant) {
            return aadsts(
                400,
                "invalid_request",
                "AADSTS90002: Tenant not found. Check to make sure you have the correct tenant ID.",
            );
        }
        if get("grant_type") != "client_credentials" {
            return aadsts(
                400,
                "unsupported_grant_type",
                "AADSTS70003: The app requested an unsupported grant type.",
            );
        }
        if get("client_id") != self.client_id {
            return aadsts(
                400,
                "unauthorized_client",
                "AADSTS700016: Application with identifier was not found in the directory.",
            );
        }
        if get("scope") != "https://containerregistry.azure.net/.default" {
            return aadsts(
                400,
                "invalid_scope",
                "AADSTS70011: The provided value for the input parameter 'scope' is not valid.",
            );
        }
        let authenticated = if f.contains_key("client_assertion") {
            let assertion = get("client_assertion");
            self.assertions_seen.lock().unwrap().push(assertion.clone());
            get("client_assertion_type") == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
                && self.assertions.lock().unwrap().contains(&assertion)
        } else {
            self.secrets.lock().unwrap().contains(&get("client_secret"))
        };
        if !authenticated {
            return aadsts(
                401,
                "invalid_client",
                "AADSTS700024: Client assertion is not within its valid time range.",
            );
        }
        let n = self.aad_requests.load(Ordering::SeqCst);
        let token = format!("canary-aad-access-token-{n}");
        self.issued.lock().unwrap().push(token.clone());
        json(
            200,
            serde_json::json!({
                "token_type": "Bearer",
                "expires_in": 3599,
                "ext_expires_in": 3599,
                "access_token": token,
            }),
        )
    }

    fn exchange(&self, req: &Request) -> Response {
        let f = form(&req.body);
        let get = |k: &str| f.get(k).cloned().unwrap_or_default();
        if get("grant_type") != "access_token"
            || !self.issued.lock().unwrap().contains(&get("access_token"))
        {
            return json(
                401,
                serde_json::json!({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}),
            );
        }
        self.exchanges.fetch_add(1, Ordering::SeqCst);
        let exp = epoch(SystemTime::now() + self.lifetime.get());
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let refresh_token = if self.refresh_token.is_empty() {
            format!(
                "{}.{}.sig",
                b64(r#"{"alg":"RS256","typ":"JWT"}"#),
                b64(&serde_json::json!({"exp": exp, "grant_type": "refresh_token", "service": get("service"), "tenant": get("tenant")}).to_string())
            )
        } else {
            self.refresh_token.clone()
        };
        json(200, serde_json::json!({ "refresh_token": refresh_token }))
    }
}

/// AAD's token endpoint and ACR's `/oauth2/exchange`; see the module docs.
#[derive(Debug)]
pub struct FakeAzure {
    state: Arc<AzureState>,
    server: FaultProxy,
}

impl FakeAzure {
    /// `refresh_token` is what the exchange hands out (empty: a JWT whose `exp` is the
    /// lifetime set with [`Self::set_refresh_lifetime`], 3 hours by default).
    pub async fn start(tenant: &str, client_id: &str, refresh_token: &str) -> Self {
        let state = Arc::new(AzureState {
            tenant: tenant.to_owned(),
            client_id: client_id.to_owned(),
            assertions: Mutex::new(Vec::new()),
            secrets: Mutex::new(Vec::new()),
            refresh_token: refresh_token.to_owned(),
            issued: Mutex::new(Vec::new()),
            aad_requests: AtomicU64::new(0),
            exchanges: AtomicU64::new(0),
            assertions_seen: Mutex::new(Vec::new()),
            lifetime: Lifetime(AtomicU64::new(3 * 3600)),
        });
        let s = state.clone();
        let server = FaultProxy::start(None, move |req, _| {
            Action::Respond(if req.method != "POST" {
                aadsts(
                    405,
                    "invalid_request",
                    "AADSTS900561: The endpoint only accepts POST requests.",
                )
            } else if req.path() == "/oauth2/exchange" {
                s.exchange(req)
            } else {
                s.token(req)
            })
        })
        .await;
        FakeAzure { state, server }
    }

    /// The authority (`http://127.0.0.1:<port>/`) and the registry base of the exchange.
    pub fn url(&self) -> url::Url {
        format!("http://{}/", self.server.addr)
            .parse()
            .expect("URL")
    }

    pub fn accept_assertion(&self, assertion: &str) {
        self.state
            .assertions
            .lock()
            .unwrap()
            .push(assertion.to_owned());
    }

    pub fn accept_secret(&self, secret: &str) {
        self.state.secrets.lock().unwrap().push(secret.to_owned());
    }

    pub fn set_refresh_lifetime(&self, lifetime: Duration) {
        self.state
            .lifetime
            .0
            .store(lifetime.as_secs(), Ordering::SeqCst);
    }

    pub fn aad_requests(&self) -> u64 {
        self.state.aad_requests.load(Ordering::SeqCst)
    }

    pub fn exchanges(&self) -> u64 {
        self.state.exchanges.load(Ordering::SeqCst)
    }

    pub fn assertions_seen(&self) -> Vec<String> {
        self.state.assertions_seen.lock().unwrap().clone()
    }

    pub fn requests(&self) -> Vec<Request> {
        self.server.seen()
    }
}

// ---------------------------------------------------------------------------------------
// Google

#[derive(Debug)]
struct GoogleState {
    client_email: String,
    public_key: Option<rsa::RsaPublicKey>,
    access_token: String,
    lifetime: Lifetime,
    token_requests: AtomicU64,
    metadata_requests: AtomicU64,
    /// The `Metadata-Flavor` of every metadata request (empty when absent).
    flavors_seen: Mutex<Vec<String>>,
    token_uri: Mutex<String>,
}

fn invalid_grant(description: &str) -> Response {
    json(
        400,
        serde_json::json!({"error": "invalid_grant", "error_description": description}),
    )
}

impl GoogleState {
    fn token(&self, req: &Request) -> Response {
        use rsa::signature::Verifier as _;
        self.token_requests.fetch_add(1, Ordering::SeqCst);
        let f = form(&req.body);
        if f.get("grant_type").map(String::as_str)
            != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
        {
            return json(
                400,
                serde_json::json!({"error": "unsupported_grant_type", "error_description": "Invalid grant_type"}),
            );
        }
        let assertion = f.get("assertion").cloned().unwrap_or_default();
        let parts: Vec<&str> = assertion.split('.').collect();
        let [header_b64, claims_b64, signature_b64] = parts[..] else {
            return invalid_grant(
                "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe",
            );
        };
        let decode = |s: &str| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(s)
                .ok()
        };
        if let Some(key) = &self.public_key {
            let verifying = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key.clone());
            let ok = decode(signature_b64)
                .and_then(|sig| rsa::pkcs1v15::Signature::try_from(sig.as_slice()).ok())
                .is_some_and(|sig| {
                    verifying
                        .verify(format!("{header_b64}.{claims_b64}").as_bytes(), &sig)
                        .is_ok()
                });
            if !ok {
                return invalid_grant("Invalid JWT Signature.");
            }
        }
        let Some(claims) =
            decode(claims_b64).and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        else {
            return invalid_grant("Invalid JWT: not JSON");
        };
        if claims["iss"] != self.client_email.as_str()
            || claims["aud"] != self.token_uri.lock().unwrap().as_str()
        {
            return invalid_grant("Invalid JWT: Failed audience check.");
        }
        json(
            200,
            serde_json::json!({
                "access_token": self.access_token,
                "expires_in": self.lifetime.get().as_secs(),
                "token_type": "Bearer",
            }),
        )
    }

    fn metadata(&self, req: &Request) -> Response {
        self.metadata_requests.fetch_add(1, Ordering::SeqCst);
        let flavor = req.header("metadata-flavor").unwrap_or_default().to_owned();
        self.flavors_seen.lock().unwrap().push(flavor.clone());
        let html = |status: u16, text: &str| {
            Response::new(
                status,
                &[
                    ("Content-Type", "text/html; charset=UTF-8"),
                    ("Metadata-Flavor", "Google"),
                ],
                text.to_owned(),
            )
        };
        if flavor != "Google" {
            return html(
                403,
                "Your client does not have permission to get URL from this server. Missing Metadata-Flavor:Google header.",
            );
        }
        if req.method != "GET"
            || req.path() != "/computeMetadata/v1/instance/service-accounts/default/token"
        {
            return html(404, "Not Found");
        }
        let mut resp = json(
            200,
            serde_json::json!({
                "access_token": self.access_token,
                "expires_in": self.lifetime.get().as_secs(),
                "token_type": "Bearer",
            }),
        );
        resp.set_header("Metadata-Flavor", "Google");
        resp
    }
}

/// Google's OAuth token endpoint and the GCE metadata server; see the module docs.
#[derive(Debug)]
pub struct FakeGoogle {
    state: Arc<GoogleState>,
    oauth: FaultProxy,
    metadata: FaultProxy,
}

impl FakeGoogle {
    /// Both endpoints hand out `access_token`. With `public_key_pem` (SPKI PEM), the JWT
    /// bearer grant's signature is verified against it.
    pub async fn start(
        client_email: &str,
        public_key_pem: Option<&str>,
        access_token: &str,
    ) -> Self {
        use rsa::pkcs8::DecodePublicKey as _;
        let state = Arc::new(GoogleState {
            client_email: client_email.to_owned(),
            public_key: public_key_pem.map(|pem| {
                rsa::RsaPublicKey::from_public_key_pem(pem).expect("an SPKI PEM RSA key")
            }),
            access_token: access_token.to_owned(),
            lifetime: Lifetime(AtomicU64::new(3599)),
            token_requests: AtomicU64::new(0),
            metadata_requests: AtomicU64::new(0),
            flavors_seen: Mutex::new(Vec::new()),
            token_uri: Mutex::new(String::new()),
        });
        let s = state.clone();
        let oauth = FaultProxy::start(None, move |req, _| {
            Action::Respond(if req.method == "POST" && req.path() == "/token" {
                s.token(req)
            } else {
                json(404, serde_json::json!({"error": "not_found"}))
            })
        })
        .await;
        *state.token_uri.lock().unwrap() = format!("http://{}/token", oauth.addr);
        let s = state.clone();
        let metadata =
            FaultProxy::start_at(&format!("{METADATA_STAND_IN}:0"), None, move |req, _| {
                Action::Respond(s.metadata(req))
            })
            .await;
        FakeGoogle {
            state,
            oauth,
            metadata,
        }
    }

    /// The OAuth token endpoint, `http://127.0.0.1:<port>/token`.
    pub fn token_uri(&self) -> url::Url {
        self.state.token_uri.lock().unwrap().parse().expect("URL")
    }

    /// The metadata server, `http://127.0.0.2:<port>/`.
    pub fn metadata_url(&self) -> url::Url {
        format!("http://{}/", self.metadata.addr)
            .parse()
            .expect("URL")
    }

    /// The `expires_in` of tokens handed out from now on.
    pub fn set_lifetime(&self, lifetime: Duration) {
        self.state
            .lifetime
            .0
            .store(lifetime.as_secs(), Ordering::SeqCst);
    }

    pub fn token_requests(&self) -> u64 {
        self.state.token_requests.load(Ordering::SeqCst)
    }

    pub fn metadata_requests(&self) -> u64 {
        self.state.metadata_requests.load(Ordering::SeqCst)
    }

    pub fn flavors_seen(&self) -> Vec<String> {
        self.state.flavors_seen.lock().unwrap().clone()
    }

    pub fn oauth_requests(&self) -> Vec<Request> {
        self.oauth.seen()
    }
}

/// A fresh RSA service account key from `openssl`: (PKCS#8 private PEM, SPKI public PEM).
pub fn service_account_key() -> (String, String) {
    let run = |args: &[&str], input: &[u8]| {
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
        assert!(out.status.success(), "openssl {args:?}");
        String::from_utf8(out.stdout).expect("PEM")
    };
    let private = run(
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ],
        b"",
    );
    let public = run(&["pkey", "-pubout"], private.as_bytes());
    (private, public)
}

/// The key JSON of a service account, as the console downloads it.
pub fn service_account_key_json(client_email: &str, private_pem: &str, token_uri: &str) -> String {
    serde_json::json!({
        "type": "service_account",
        "project_id": "imagelib-test",
        "private_key_id": "0123456789abcdef0123456789abcdef01234567",
        "private_key": private_pem,
        "client_email": client_email,
        "client_id": "112233445566778899000",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "universe_domain": "googleapis.com",
    })
    .to_string()
}
