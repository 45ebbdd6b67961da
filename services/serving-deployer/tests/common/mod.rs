//! A serving-deployer of the test's own, and helpers to seed its view through the stream.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use imagelib_events::bus::{EventBus, StreamSettings};
use imagelib_events::event::{
    CatalogApproved, DeploymentPolicyViolated, PolicyEvaluated, RegistryRegistered,
    RegistryRemoved, RuleSet, TagDiscovered,
};
use imagelib_events::model::*;
use imagelib_events::{Digest, Envelope, EventPayload, RegistryId};
use imagelib_platform::config::CommonConfig;
use imagelib_testkit::{TestDb, TestStream};
use serde_json::Value;
use serving_deployer::config::Config;
use serving_deployer::startup::Application;
use tokio::sync::oneshot;

pub const DEPLOYER: &str = "deployer-token";
pub const ADMIN: &str = "admin-token";
/// A viewer of the team `other` (sees what is visible to everyone, like an anonymous reader).
pub const VIEWER: &str = "viewer";
pub const CURATOR: &str = "curator-token";

pub struct Env {
    pub stream: TestStream,
    pub db: TestDb,
    pub dir: tempfile::TempDir,
}

pub struct Service {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    _stop: oneshot::Sender<()>,
}

impl Env {
    pub fn new() -> Self {
        imagelib_testkit::init_tracing();
        Env {
            stream: TestStream::new(),
            db: TestDb::new(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn gitops(&self) -> PathBuf {
        self.dir.path().join("gitops")
    }

    pub fn config(&self) -> Config {
        let tokens = self.dir.path().join("tokens.yaml");
        std::fs::write(
            &tokens,
            format!("tokens:\n  - {{subject: dana, role: deployer, token: {DEPLOYER}}}\n  - {{subject: vic, role: viewer, teams: [other], token: {VIEWER}}}\n  - {{subject: cora, role: curator, token: {CURATOR}}}\n"),
        )
        .unwrap();
        Config {
            common: CommonConfig {
                nats_url: self.stream.nats_url.clone(),
                database_url: self.db.url.clone(),
                stream: self.stream.name.clone(),
                subject_prefix: self.stream.prefix.clone(),
                http_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
                master_key_file: self.dir.path().join("master.key"),
                gitops_dir: self.gitops(),
                admin_token: Some(ADMIN.into()),
                tokens_file: Some(tokens),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    pub async fn start_with(&self, config: Config) -> Service {
        let app = Application::build(config).await.unwrap();
        let addr = app.local_addr();
        let (tx, rx) = oneshot::channel();
        tokio::spawn(app.run_until_stopped(async move {
            let _ = rx.await;
        }));
        let svc = Service {
            addr,
            http: reqwest::Client::new(),
            _stop: tx,
        };
        svc.wait_ready().await;
        svc
    }

    pub async fn start(&self) -> Service {
        self.start_with(self.config()).await
    }

    pub async fn bus(&self) -> EventBus {
        let bus = EventBus::from_client(
            self.stream.client().await.unwrap(),
            StreamSettings::new(&self.stream.name, &self.stream.prefix),
        );
        bus.ensure_stream().await.unwrap();
        bus
    }

    pub async fn publish(&self, payload: impl Into<EventPayload>) {
        self.bus()
            .await
            .publish(&Envelope::new("test", payload))
            .await
            .unwrap();
    }

    pub async fn registry(&self, visibility: &[&str]) -> RegistryId {
        let id = RegistryId::new();
        self.publish(RegistryRegistered {
            report_pulls: false,
            registry_id: id,
            label: "Acme".into(),
            url: "registry.acme.internal:5000/ai".into(),
            registry_type: RegistryType::Generic,
            insecure: false,
            auth_kind: AuthKind::None,
            credential: None,
            visibility: visibility.iter().map(|s| s.to_string()).collect(),
            ca_pem: None,
            scan_interval_secs: None,
            repositories: vec![],
            webhook_secret: None,
            auth_hosts: vec![],
            proxy_url: None,
            no_proxy: Vec::new(),
            artifact_registry: None,
        })
        .await;
        id
    }

    pub async fn remove_registry(&self, id: RegistryId) {
        self.publish(RegistryRemoved { registry_id: id }).await;
    }

    pub async fn tag(
        &self,
        registry: RegistryId,
        repo: &str,
        tag: &str,
        kind: ImageKind,
        labels: &[(&str, &str)],
    ) -> Digest {
        let digest: Digest = format!(
            "sha256:{}",
            sha(&format!("{registry}{repo}{tag}{}", uuid::Uuid::new_v4()))
        )
        .parse()
        .unwrap();
        self.publish(TagDiscovered {
            registry_id: registry,
            repository: repo.parse().unwrap(),
            tag: tag.parse().unwrap(),
            digest: digest.clone(),
            details: ImageDetails {
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                artifact_type: None,
                platforms: vec![],
                size: 1000,
                created: None,
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                annotations: Default::default(),
                kind,
                model_type: (kind == ImageKind::Model).then_some(ModelType::TextCompletion),
                extensions: vec![],
                referrers: vec![],
            },
        })
        .await;
        digest
    }

    pub async fn approve(&self, registry: RegistryId, repo: &str, tag: &str, digest: &Digest) {
        self.publish(CatalogApproved {
            target: CatalogTarget {
                registry_id: registry,
                repository: repo.parse().unwrap(),
                tag: Some(tag.parse().unwrap()),
            },
            digest: Some(digest.clone()),
            reason: "reviewed".into(),
        })
        .await;
    }

    /// A rule of `registry` over the repositories matching `glob`, with a trust policy in
    /// `mode` (or none).
    pub async fn rule(&self, registry: RegistryId, id: &str, glob: &str, mode: Option<PolicyMode>) {
        self.publish(RuleSet {
            retention: None,
            registry_id: registry,
            rule_id: id.parse().unwrap(),
            repositories: vec![RepositoryPattern::Glob(glob.into())],
            tags: Default::default(),
            kind: RuleKind::Auto,
            description: String::new(),
            hm_tags: vec![],
            enabled: true,
            trust: mode.map(|mode| TrustPolicy {
                mode,
                keys: vec![],
                identities: vec![],
                max_severity: Some(SeverityLimit::High),
                allow_cves: vec![],
                require_sbom: true,
            }),
        })
        .await;
    }

    /// The scanner's verdict for `digest`: each reason with a finding.
    pub async fn verdict(
        &self,
        registry: RegistryId,
        repo: &str,
        digest: &Digest,
        verdict: PolicyVerdict,
        policy: &str,
        reasons: &[(PolicyReason, &str)],
    ) {
        self.publish(PolicyEvaluated {
            registry_id: registry,
            repository: repo.parse().unwrap(),
            digest: digest.clone(),
            verdict,
            reasons: reasons.iter().map(|(r, _)| *r).collect(),
            policy: Some(policy.parse().unwrap()),
            findings: reasons
                .iter()
                .map(|(reason, detail)| PolicyFinding {
                    reason: *reason,
                    detail: detail.to_string(),
                })
                .collect(),
        })
        .await;
    }

    /// Wait until each of the deployer's projectors has applied the last event of its
    /// aggregate now in the stream (rules, images and deployments are separate consumers,
    /// so one being caught up says nothing of the others).
    pub async fn settled(&self) {
        self.settled_in(&self.db.url).await
    }

    pub async fn settled_in(&self, database_url: &str) {
        let bus = self.bus().await;
        let pool = sqlx::PgPool::connect(database_url).await.unwrap();
        for aggregate in serving_deployer::bus::AGGREGATES {
            let filter = bus.settings().aggregate_type_filter(aggregate);
            let Some(last) = bus.last_sequence_of(&filter).await.unwrap() else {
                continue;
            };
            let consumer = format!("{}-{}", serving_deployer::NAME, aggregate.as_str());
            let mut at = 0;
            for _ in 0..400 {
                at = sqlx::query_scalar::<_, i64>(&format!(
                    "SELECT sequence FROM {}.stream_position WHERE consumer = $1",
                    serving_deployer::SCHEMA
                ))
                .bind(&consumer)
                .fetch_optional(&pool)
                .await
                .ok()
                .flatten()
                .unwrap_or(0);
                if at as u64 >= last {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            }
            assert!(
                at as u64 >= last,
                "{consumer} stuck at {at}, stream at {last}"
            );
        }
        pool.close().await;
    }

    /// The `deployment.policy_violated` events in the stream, in order.
    pub async fn violations(&self) -> Vec<DeploymentPolicyViolated> {
        let mut replay = self.bus().await.replay(1, None, None).await.unwrap();
        let mut out = Vec::new();
        while let Some(item) = replay.next().await {
            if let Ok(e) = item.unwrap().event
                && let EventPayload::DeploymentPolicyViolated(v) = e.payload
            {
                out.push(v);
            }
        }
        out
    }

    /// The payloads on the dead-letter subject of `consumer`, with their headers.
    pub async fn dead_letters(&self, consumer: &str) -> Vec<(async_nats::HeaderMap, bytes::Bytes)> {
        let js = async_nats::jetstream::new(self.stream.client().await.unwrap());
        let mut s = js.get_stream(&self.stream.name).await.unwrap();
        let last = s.info().await.unwrap().state.last_sequence;
        let dlq = format!("{}.dlq.{consumer}", self.stream.prefix);
        let mut out = Vec::new();
        for seq in 1..=last {
            if let Ok(m) = s.get_raw_message(seq).await
                && m.subject.as_str() == dlq
            {
                out.push((m.headers, m.payload));
            }
        }
        out
    }

    pub async fn event_types(&self) -> Vec<String> {
        let mut replay = self.bus().await.replay(1, None, None).await.unwrap();
        let mut out = Vec::new();
        while let Some(item) = replay.next().await {
            if let Ok(e) = item.unwrap().event {
                out.push(e.event_type().to_owned());
            }
        }
        out
    }

    pub fn git(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(self.gitops())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn commit_count(&self) -> usize {
        self.git(&["rev-list", "--count", "HEAD"])
            .trim()
            .parse()
            .unwrap()
    }
}

pub fn sha(s: &str) -> String {
    use sha2::{Digest as _, Sha256};
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Service {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn wait_ready(&self) {
        for _ in 0..200 {
            if let Ok(r) = self.http.get(self.url("/readyz")).send().await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("not ready");
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn deploy(&self, body: Value) -> (u16, Value) {
        self.call(
            reqwest::Method::POST,
            "/v1/deployments",
            Some(DEPLOYER),
            Some(body),
        )
        .await
    }

    /// Wait until the deployer's view has the tag (its projection is asynchronous).
    pub async fn wait_for<F: Fn(u16, &Value) -> bool>(&self, body: Value, ok: F) -> (u16, Value) {
        let mut last = (0, Value::Null);
        for _ in 0..100 {
            last = self.deploy(body.clone()).await;
            if ok(last.0, &last.1) {
                return last;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        last
    }
}

/// A validator for the object's apiVersion from a CRD file in `shared/schemas/`.
pub fn crd_validator(file: &str, version: &str) -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/schemas")
        .join(file);
    let crd: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let crd: Value = serde_json::to_value(crd).unwrap();
    let schema = crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == version)
        .unwrap()["schema"]["openAPIV3Schema"]
        .clone();
    jsonschema::validator_for(&schema).unwrap()
}

pub fn assert_valid(v: &jsonschema::Validator, object: &Value) {
    let errors: Vec<String> = v
        .iter_errors(object)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}\n{object:#}");
}

/// The YAML documents of a file in the gitops repository, as JSON.
pub fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|d| serde_json::to_value(serde_norway::Value::deserialize(d).unwrap()).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

use serde::Deserialize;

/// What the fake API server received: method, path, query, content type.
pub type Seen = Arc<Mutex<Vec<(String, String, String, String)>>>;

/// The bearer token the fake API server accepts (a rotation changes it).
pub type Accepted = Arc<Mutex<String>>;

/// A fake Kubernetes API server: checks the server-side apply request shape, records it,
/// and answers like the API server does.
pub async fn fake_api_server(seen: Seen) -> std::net::SocketAddr {
    fake_api_server_accepting(seen, Arc::new(Mutex::new("k8s-token".into()))).await
}

pub async fn fake_api_server_accepting(seen: Seen, accepted: Accepted) -> std::net::SocketAddr {
    use axum::extract::{Path, RawQuery, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::any;
    async fn handle(
        State((seen, accepted)): State<(Seen, Accepted)>,
        method: axum::http::Method,
        Path(path): Path<String>,
        RawQuery(q): RawQuery,
        headers: HeaderMap,
        body: String,
    ) -> (StatusCode, axum::Json<serde_json::Value>) {
        let expected = format!("Bearer {}", accepted.lock().unwrap());
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
            return (
                StatusCode::UNAUTHORIZED,
                axum::Json(serde_json::json!({"kind": "Status", "message": "Unauthorized"})),
            );
        }
        let ct = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        seen.lock().unwrap().push((
            method.to_string(),
            format!("/{path}"),
            q.unwrap_or_default(),
            ct.clone(),
        ));
        if method == axum::http::Method::PATCH {
            if ct != "application/apply-patch+yaml" {
                return (
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    axum::Json(serde_json::json!({"message": "wrong content type"})),
                );
            }
            let mut obj: serde_json::Value =
                serde_json::to_value(serde_norway::from_str::<serde_norway::Value>(&body).unwrap())
                    .unwrap();
            obj["metadata"]["resourceVersion"] = serde_json::json!("4242");
            return (StatusCode::OK, axum::Json(obj));
        }
        (
            StatusCode::OK,
            axum::Json(serde_json::json!({"kind": "Status", "status": "Success"})),
        )
    }
    let app = axum::Router::new()
        .route("/{*path}", any(handle))
        .with_state((seen, accepted));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}
