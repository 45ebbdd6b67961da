//! A catalog-projector of the test's own: its stream, database and tokens, and builders of
//! realistic events.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use catalog_projector::config::{CatalogSettings, Config};
use catalog_projector::startup::Application;
use chrono::{DateTime, Utc};
use imagelib_events::bus::{EventBus, StreamSettings};
use imagelib_events::event::*;
use imagelib_events::model::*;
use imagelib_events::{DeploymentId, Envelope, EventPayload, RegistryId, RuleId, SyncId};
use imagelib_platform::config::CommonConfig;
use imagelib_testkit::{TestDb, TestStream};
use serde_json::Value;
use tokio::sync::oneshot;

pub const ADMIN: &str = "admin-token-for-tests";
pub const VIEWER_ML: &str = "viewer-ml-token";
pub const VIEWER_DB: &str = "viewer-db-token";
pub const CURATOR_ML: &str = "curator-ml-token";
pub const DEPLOYER: &str = "deployer-token";

pub struct Env {
    pub stream: TestStream,
    pub db: TestDb,
    pub dir: tempfile::TempDir,
    pub bus: EventBus,
}

pub struct Service {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Env {
    pub async fn new() -> Self {
        imagelib_testkit::init_tracing();
        let stream = TestStream::new();
        let client = stream.client().await.unwrap();
        let bus = EventBus::from_client(client, StreamSettings::new(&stream.name, &stream.prefix));
        bus.ensure_stream().await.unwrap();
        Env {
            stream,
            db: TestDb::new(),
            dir: tempfile::tempdir().unwrap(),
            bus,
        }
    }

    pub fn config(&self) -> Config {
        let tokens: PathBuf = self.dir.path().join("tokens.yaml");
        std::fs::write(
            &tokens,
            format!(
                "tokens:\n  - {{subject: alice, role: viewer, teams: [ml], token: {VIEWER_ML}}}\n  - {{subject: bob, role: viewer, teams: [db], token: {VIEWER_DB}}}\n  - {{subject: carol, role: curator, teams: [ml], token: {CURATOR_ML}}}\n  - {{subject: dave, role: deployer, teams: [ml], token: {DEPLOYER}}}\n"
            ),
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
                admin_token: Some(ADMIN.into()),
                tokens_file: Some(tokens),
                ..Default::default()
            },
            catalog: CatalogSettings {
                retry_backoff_ms: 20,
                ..Default::default()
            },
        }
    }

    pub async fn start(&self) -> Service {
        self.start_with(self.config()).await
    }

    pub async fn start_with(&self, config: Config) -> Service {
        let app = Application::build(config).await.unwrap();
        let addr = app.local_addr();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            app.run_until_stopped(async move {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Service {
            addr,
            http: reqwest::Client::new(),
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Publish events in order; returns their stream sequences.
    pub async fn publish(&self, events: impl IntoIterator<Item = Envelope>) -> Vec<u64> {
        let mut out = Vec::new();
        for e in events {
            out.push(self.bus.publish(&e).await.unwrap().sequence);
        }
        out
    }

    /// A pool on the catalog schema of the test database.
    pub async fn catalog_pool(&self) -> sqlx::PgPool {
        imagelib_platform::db::connect(&self.db.url, catalog_projector::SCHEMA, 4)
            .await
            .unwrap()
    }

    /// The position the projection recorded.
    pub async fn position(&self) -> u64 {
        let pool = sqlx::PgPool::connect(&self.db.url).await.unwrap();
        let v: Option<i64> = sqlx::query_scalar(
            "SELECT sequence FROM catalog.stream_position WHERE consumer = 'catalog-projector'",
        )
        .fetch_optional(&pool)
        .await
        .unwrap_or(None);
        pool.close().await;
        v.unwrap_or(0) as u64
    }

    /// Wait until the projection has applied everything in the stream now.
    pub async fn caught_up(&self) {
        let last = self.bus.last_sequence().await.unwrap();
        eventually(
            &format!("the projection reaches sequence {last}"),
            || async { self.position().await >= last },
        )
        .await;
    }

    /// Every row of the catalog tables of `schema`, as sorted text (the stream position
    /// included, bookkeeping columns excluded): equal dumps mean equal catalogs.
    pub async fn dump(&self, schema: &str) -> String {
        let pool = sqlx::PgPool::connect(&self.db.url).await.unwrap();
        let out = dump_schema(&pool, schema).await;
        pool.close().await;
        out
    }

    /// Replay the whole stream the way a rebuild loads it (in memory, indexes built after
    /// the load, the audit trail on its own connection), but one event per batch, into a
    /// fresh schema `schema`, and dump it: what the rebuild's memory carries from batch to
    /// batch must give the rows a live consumer writes.
    pub async fn bulk_replay_by_one(&self, schema: &str) -> String {
        self.bulk_replay_in_batches(schema, 1).await
    }

    /// The stream loaded the rebuild's way in batches of `batch`, then the schema dumped.
    pub async fn bulk_replay_in_batches(&self, schema: &str, batch: usize) -> String {
        use catalog_projector::rebuild::{DeferIndexes, RebuildReport, bulk_replay};
        let pool = imagelib_platform::db::connect(&self.db.url, schema, 4)
            .await
            .unwrap();
        catalog_projector::startup::migrate(&pool).await.unwrap();
        let settings = CatalogSettings {
            batch_size: batch,
            ..Default::default()
        };
        let mut report = RebuildReport {
            position: 0,
            events: 0,
            skipped: 0,
            old_schema: None,
            elapsed: Duration::ZERO,
            indexes_built_after: Vec::new(),
        };
        let last = self.bus.last_sequence().await.unwrap();
        let projection = catalog_projector::projection::Projection::in_memory(pool.clone());
        bulk_replay(
            &self.bus,
            &projection,
            &settings,
            last,
            DeferIndexes::default(),
            &mut report,
        )
        .await
        .unwrap();
        assert_eq!(report.position, last);
        pool.close().await;
        self.dump(schema).await
    }

    /// The messages on the dead-letter subject, with their headers.
    pub async fn dead_letters(&self) -> Vec<(async_nats::HeaderMap, bytes::Bytes)> {
        let client = self.stream.client().await.unwrap();
        let js = async_nats::jetstream::new(client);
        let mut s = js.get_stream(&self.stream.name).await.unwrap();
        let last = s.info().await.unwrap().state.last_sequence;
        let dlq = format!("{}.dlq.catalog-projector", self.stream.prefix);
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

    /// The event types in the stream, in order.
    pub async fn event_types(&self) -> Vec<String> {
        let mut replay = self.bus.replay(1, None, None).await.unwrap();
        let mut out = Vec::new();
        while let Some(item) = replay.next().await {
            if let Ok(e) = item.unwrap().event {
                out.push(e.event_type().to_owned());
            }
        }
        out
    }
}

/// Equal dumps, or the lines that differ.
pub fn same(got: &str, want: &str) {
    if got == want {
        return;
    }
    let g: std::collections::BTreeSet<&str> = got.lines().collect();
    let w: std::collections::BTreeSet<&str> = want.lines().collect();
    let only_got: Vec<&&str> = g.difference(&w).collect();
    let only_want: Vec<&&str> = w.difference(&g).collect();
    panic!("dumps differ\nonly in the replay:\n{only_got:#?}\nonly live:\n{only_want:#?}");
}

pub async fn dump_schema(pool: &sqlx::PgPool, schema: &str) -> String {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = $1 AND table_name <> '_sqlx_migrations' ORDER BY 1",
    )
    .bind(schema)
    .fetch_all(pool)
    .await
    .unwrap();
    let mut out = String::new();
    for t in tables {
        let mut rows: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT (to_jsonb(x) - 'updated_at_db' - 'search')::text FROM \"{schema}\".\"{t}\" x"
        ))
        .fetch_all(pool)
        .await
        .unwrap();
        if t == "stream_position" {
            rows = sqlx::query_scalar(&format!(
                "SELECT consumer || '=' || sequence FROM \"{schema}\".stream_position"
            ))
            .fetch_all(pool)
            .await
            .unwrap();
        }
        rows.sort();
        out.push_str(&format!("== {t} ({})\n", rows.len()));
        for r in rows {
            out.push_str(&r);
            out.push('\n');
        }
    }
    out
}

/// Poll `check` until it holds (fails the test after 30 s).
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

impl Service {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
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
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, body)
    }

    /// GET as `token` (anonymous when `None`), expecting 200.
    pub async fn get_as(&self, token: Option<&str>, path: &str) -> Value {
        let (s, b) = self.call(reqwest::Method::GET, path, token, None).await;
        assert_eq!(s, 200, "GET {path}: {b}");
        b
    }

    pub async fn get(&self, path: &str) -> Value {
        self.get_as(Some(ADMIN), path).await
    }

    pub async fn readyz(&self) -> (u16, Value) {
        self.call(reqwest::Method::GET, "/readyz", None, None).await
    }

    /// `(repository:tag, digest)` of every image listed at `path` (admin), all pages.
    pub async fn image_refs(&self, path: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for item in self.all_pages(Some(ADMIN), path).await {
            out.push((
                format!(
                    "{}:{}",
                    item["repository"].as_str().unwrap(),
                    item["tag"].as_str().unwrap()
                ),
                item["digest"].as_str().unwrap().to_owned(),
            ));
        }
        out
    }

    /// Every item of a paginated list.
    pub async fn all_pages(&self, token: Option<&str>, path: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        let sep = if path.contains('?') { '&' } else { '?' };
        for _ in 0..10_000 {
            let p = match &cursor {
                Some(c) => format!("{path}{sep}cursor={c}"),
                None => path.to_owned(),
            };
            let page = self.get_as(token, &p).await;
            out.extend(page["items"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return out,
            }
        }
        panic!("pagination does not end");
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

// ---------------------------------------------------------------- event builders

pub fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

pub fn digest(n: u64) -> imagelib_events::Digest {
    format!("sha256:{n:064x}").parse().unwrap()
}

pub fn envelope(source: &str, payload: impl Into<EventPayload>) -> Envelope {
    Envelope::new(source, payload).with_actor(format!("system:{source}"))
}

pub fn registered(id: RegistryId, label: &str, visibility: &[&str]) -> Envelope {
    envelope(
        "registry-registry",
        RegistryRegistered {
            report_pulls: false,
            registry_id: id,
            label: label.into(),
            url: format!(
                "{}.registry.example:5000",
                label.to_lowercase().replace(' ', "-")
            ),
            registry_type: RegistryType::Harbor,
            insecure: false,
            auth_kind: AuthKind::Basic,
            credential: Some(SealedCredential {
                key_id: "k1".into(),
                algorithm: "AES-256-GCM".into(),
                nonce: "bm9uY2U=".into(),
                ciphertext: "c2VjcmV0LXBhc3N3b3Jk".into(),
            }),
            visibility: visibility.iter().map(|s| s.to_string()).collect(),
            ca_pem: None,
            scan_interval_secs: Some(300),
            repositories: vec![],
            webhook_secret: None,
            auth_hosts: vec![],
            proxy_url: None,
            no_proxy: Vec::new(),
            artifact_registry: None,
        },
    )
}

/// What the scanner reports for an image: `kind` with labels and annotations that say so.
pub fn details(
    kind: ImageKind,
    model_type: Option<ModelType>,
    archs: &[&str],
    size: u64,
) -> ImageDetails {
    let mut labels = BTreeMap::new();
    let mut annotations = BTreeMap::new();
    annotations.insert(
        "org.opencontainers.image.source".to_owned(),
        "https://github.com/example/images".to_owned(),
    );
    match kind {
        ImageKind::Model => {
            labels.insert("com.nvidia.nim.model".into(), "true".into());
            if let Some(m) = model_type {
                annotations.insert("io.imagelib.model.type".into(), m.as_str().into());
            }
        }
        ImageKind::Database => {
            labels.insert("io.imagelib.postgres.major".into(), "16".into());
        }
        ImageKind::Other => {}
    }
    ImageDetails {
        media_type: if archs.len() > 1 {
            "application/vnd.oci.image.index.v1+json".into()
        } else {
            "application/vnd.oci.image.manifest.v1+json".into()
        },
        artifact_type: None,
        platforms: archs
            .iter()
            .map(|a| Platform {
                os: "linux".into(),
                architecture: (*a).into(),
                variant: None,
                digest: None,
                size: Some(size / archs.len().max(1) as u64),
            })
            .collect(),
        size,
        created: Some(at("2025-01-15T10:00:00Z")),
        labels,
        annotations,
        kind,
        model_type,
        extensions: if kind == ImageKind::Database {
            vec![PostgresExtension {
                name: "pgvector".into(),
                version: Some("0.8.0".into()),
                description: None,
            }]
        } else {
            vec![]
        },
        referrers: vec![],
    }
}

pub fn discovered(
    registry: RegistryId,
    repository: &str,
    tag: &str,
    d: u64,
    details: ImageDetails,
) -> Envelope {
    envelope(
        "sync-scanner",
        TagDiscovered {
            registry_id: registry,
            repository: repository.parse().unwrap(),
            tag: tag.parse().unwrap(),
            digest: digest(d),
            details,
        },
    )
}

pub fn moved(
    registry: RegistryId,
    repository: &str,
    tag: &str,
    old: u64,
    new: u64,
    details: ImageDetails,
) -> Envelope {
    envelope(
        "sync-scanner",
        TagMoved {
            registry_id: registry,
            repository: repository.parse().unwrap(),
            tag: tag.parse().unwrap(),
            old_digest: digest(old),
            new_digest: digest(new),
            details,
        },
    )
}

pub fn removed(registry: RegistryId, repository: &str, tag: &str, d: u64) -> Envelope {
    envelope(
        "sync-scanner",
        TagRemoved {
            registry_id: registry,
            repository: repository.parse().unwrap(),
            tag: tag.parse().unwrap(),
            digest: digest(d),
        },
    )
}

pub fn model(m: ModelType) -> ImageDetails {
    details(ImageKind::Model, Some(m), &["amd64"], 4_000_000_000)
}

pub fn database() -> ImageDetails {
    details(ImageKind::Database, None, &["amd64", "arm64"], 150_000_000)
}

pub fn rule(
    registry: RegistryId,
    id: &str,
    glob: &str,
    description: &str,
    hm: &[&str],
) -> Envelope {
    envelope(
        "registry-registry",
        RuleSet {
            retention: None,
            registry_id: registry,
            rule_id: id.parse::<RuleId>().unwrap(),
            repositories: vec![RepositoryPattern::Glob(glob.into())],
            tags: TagSelector::default(),
            kind: RuleKind::Auto,
            description: description.into(),
            hm_tags: hm.iter().map(|h| h.parse().unwrap()).collect(),
            enabled: true,
            trust: None,
        },
    )
}

pub fn sync_completed(registry: RegistryId, added: u64) -> (Envelope, Envelope) {
    let sync_id = SyncId::new();
    (
        envelope(
            "sync-scanner",
            SyncStarted {
                registry_id: registry,
                sync_id,
                repository: None,
                reason: SyncReason::Schedule,
            },
        ),
        envelope(
            "sync-scanner",
            SyncCompleted {
                registry_id: registry,
                sync_id,
                repositories: 2,
                tags_seen: added,
                added,
                moved: 0,
                removed: 0,
                requests: 12,
                duration_ms: 840,
                partial: false,
                rate_limited: vec![],
                incomplete: vec![],
                incomplete_more: 0,
            },
        ),
    )
}

pub fn deployment_requested(
    id: DeploymentId,
    registry: RegistryId,
    repository: &str,
    tag: &str,
    d: u64,
) -> Envelope {
    envelope(
        "serving-deployer",
        DeploymentRequested {
            deployment_id: id,
            image: ImageRef {
                registry_id: registry,
                repository: repository.parse().unwrap(),
                tag: tag.parse().unwrap(),
            },
            digest: digest(d),
            workload: WorkloadKind::InferenceService,
            name: "llama".parse().unwrap(),
            namespace: "models".parse().unwrap(),
            replicas: 1,
            resources: Resources::default(),
            env: BTreeMap::new(),
            target: DeploymentTarget::Gitops,
            options: serde_json::Map::new(),
        },
    )
    .with_actor("dave")
}

/// `envelope` with an explicit event time.
pub fn timed(mut e: Envelope, t: &str) -> Envelope {
    e.time = at(t);
    e
}

// ---------------------------------------------------------------- trust event builders

pub fn repo(s: &str) -> imagelib_events::RepositoryName {
    s.parse().unwrap()
}

/// An index of `archs` whose platform manifests are digests `first`, `first + 1`, ….
pub fn multi_arch(archs: &[&str], first: u64) -> ImageDetails {
    let mut d = details(ImageKind::Other, None, archs, 1000);
    for (i, p) in d.platforms.iter_mut().enumerate() {
        p.digest = Some(digest(first + i as u64));
    }
    d
}

pub fn sig_verified(
    reg: RegistryId,
    repository: &str,
    d: u64,
    source: u64,
    signer: &str,
) -> Envelope {
    envelope(
        "sync-scanner",
        SignatureVerified {
            registry_id: reg,
            repository: repo(repository),
            digest: digest(d),
            signer: signer.into(),
            issuer: None,
            kind: SignatureKind::Cosign,
            policy: Some("apps".parse().unwrap()),
            source: digest(source),
        },
    )
}

pub fn sig_failed(
    reg: RegistryId,
    repository: &str,
    d: u64,
    source: u64,
    reason: &str,
) -> Envelope {
    envelope(
        "sync-scanner",
        SignatureFailed {
            registry_id: reg,
            repository: repo(repository),
            digest: digest(d),
            signer: "https://github.com/evil/ci".into(),
            issuer: Some("https://token.actions.githubusercontent.com".into()),
            kind: SignatureKind::Cosign,
            policy: Some("apps".parse().unwrap()),
            reason: reason.into(),
            source: digest(source),
        },
    )
}

pub fn vulns(
    reg: RegistryId,
    repository: &str,
    d: u64,
    source: u64,
    scanner: &str,
    scanned_at: &str,
    counts: [u64; 5],
) -> Envelope {
    let [critical, high, medium, low, unknown] = counts;
    envelope(
        "sync-scanner",
        VulnerabilitiesReported {
            registry_id: reg,
            repository: repo(repository),
            digest: digest(d),
            scanner: ScannerInfo {
                name: scanner.into(),
                version: "0.58.1".into(),
            },
            db: "2025-01-14T06:00:00Z".into(),
            scanned_at: at(scanned_at),
            counts: SeverityCounts {
                critical,
                high,
                medium,
                low,
                unknown,
            },
            fixable: high,
            source: digest(source),
            origin: None,
        },
    )
}

pub fn sbom(
    reg: RegistryId,
    repository: &str,
    d: u64,
    source: u64,
    format: SbomFormat,
) -> Envelope {
    envelope(
        "sync-scanner",
        SbomFound {
            registry_id: reg,
            repository: repo(repository),
            digest: digest(d),
            format,
            source: digest(source),
        },
    )
}

pub fn evaluated(
    reg: RegistryId,
    repository: &str,
    d: u64,
    verdict: PolicyVerdict,
    reasons: &[PolicyReason],
) -> Envelope {
    envelope(
        "sync-scanner",
        PolicyEvaluated {
            registry_id: reg,
            repository: repo(repository),
            digest: digest(d),
            verdict,
            reasons: reasons.to_vec(),
            policy: Some("apps".parse().unwrap()),
            findings: reasons
                .iter()
                .map(|r| PolicyFinding {
                    reason: *r,
                    detail: format!("{r:?} seen"),
                })
                .collect(),
        },
    )
}

pub fn referrer(d: u64, kind: ReferrerKind, artifact_type: &str) -> Referrer {
    Referrer {
        digest: digest(d),
        kind,
        artifact_type: Some(artifact_type.into()),
    }
}

pub fn referrers_changed(
    reg: RegistryId,
    repository: &str,
    d: u64,
    list: Vec<Referrer>,
) -> Envelope {
    envelope(
        "sync-scanner",
        ReferrersChanged {
            registry_id: reg,
            repository: repo(repository),
            digest: digest(d),
            referrers: list,
        },
    )
}
