//! A scanner of the test's own: its stream, database and master key; registries and rules
//! published as registry-registry would, and the stream read back.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use imagelib_events::bus::{EventBus, StreamSettings};
use imagelib_events::event::{
    RegistryRegistered, RegistryRemoved, RuleSet, SyncCompleted, SyncRequested,
};
use imagelib_events::model::{
    AuthKind, RegistryType, RepositoryPattern, RuleKind, SyncReason, TagSelector,
};
use imagelib_events::{Envelope, EventPayload, RegistryId, RepositoryName};
use imagelib_platform::config::CommonConfig;
use imagelib_secrets::{MasterKeyring, Vault};
use imagelib_testkit::{TestDb, TestStream};
use sync_scanner::config::{Config, ScannerConfig};
use sync_scanner::scan::Outcome;
use tokio::sync::oneshot;

pub const ADMIN: &str = "admin-token-for-scanner-tests";

pub struct Env {
    pub stream: TestStream,
    pub db: TestDb,
    pub dir: tempfile::TempDir,
    pub bus: EventBus,
}

/// A running scanner.
pub struct Running {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Env {
    pub async fn new() -> Self {
        imagelib_testkit::init_tracing();
        let stream = TestStream::new();
        let client = stream.client().await.expect("nats");
        let bus = EventBus::from_client(client, StreamSettings::new(&stream.name, &stream.prefix));
        bus.ensure_stream().await.expect("stream");
        Env {
            stream,
            db: TestDb::new(),
            dir: tempfile::tempdir().expect("tempdir"),
            bus,
        }
    }

    /// Requests only (no schedule), short timeouts, `Retry-After` beyond 2 s defers.
    pub fn config(&self) -> Config {
        self.config_for(&self.db)
    }

    pub fn config_for(&self, db: &TestDb) -> Config {
        Config {
            common: CommonConfig {
                nats_url: self.stream.nats_url.clone(),
                database_url: db.url.clone(),
                stream: self.stream.name.clone(),
                subject_prefix: self.stream.prefix.clone(),
                http_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
                master_key_file: self.dir.path().join("master.key"),
                admin_token: Some(ADMIN.into()),
                // Test registries listen on loopback, which the guard denies by default.
                allow_networks: Some(imagelib_testkit::LOOPBACK_NETWORKS.into()),
                ..Default::default()
            },
            keys_bucket: None,
            providers: Default::default(),
            scanner: ScannerConfig {
                schedule: false,
                request_timeout_secs: 5,
                max_retry_after_secs: 2,
                scan_timeout_secs: 60,
                lease_ttl_secs: 6,
                ..Default::default()
            },
        }
    }

    pub async fn start(&self) -> Running {
        self.start_with(self.config()).await
    }

    pub async fn start_with(&self, config: Config) -> Running {
        let app = sync_scanner::startup::Application::build(config)
            .await
            .expect("scanner starts");
        let addr = app.local_addr();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            app.run_until_stopped(async move {
                let _ = rx.await;
            })
            .await
            .expect("scanner runs");
        });
        let running = Running {
            addr,
            stop: Some(tx),
            task: Some(task),
        };
        running.wait_ready().await;
        running
    }

    pub async fn vault(&self) -> Vault {
        let keyring = MasterKeyring::load_or_create(self.dir.path().join("master.key")).unwrap();
        Vault::connect(
            self.bus.jetstream(),
            &imagelib_secrets::bucket_for_stream(&self.stream.name),
            1,
            std::sync::Arc::new(keyring),
        )
        .await
        .unwrap()
    }

    pub async fn publish(&self, payload: impl Into<EventPayload>) -> u64 {
        let env = Envelope::new("registry-registry", payload).with_actor("admin");
        self.bus.publish(&env).await.expect("publish").sequence
    }

    /// Registers `host` (plain HTTP) as registry-registry would, sealing `credentials`
    /// (the JSON of its `Credentials`) with the registry's data key.
    pub async fn register(&self, host: &str, credentials: Option<serde_json::Value>) -> RegistryId {
        self.register_with(host, credentials, |_| {}).await
    }

    pub async fn register_with(
        &self,
        host: &str,
        credentials: Option<serde_json::Value>,
        f: impl FnOnce(&mut RegistryRegistered),
    ) -> RegistryId {
        let id = RegistryId::new();
        self.register_as(id, host, credentials, f).await
    }

    /// Registers under a given id.
    pub async fn register_as(
        &self,
        id: RegistryId,
        host: &str,
        credentials: Option<serde_json::Value>,
        f: impl FnOnce(&mut RegistryRegistered),
    ) -> RegistryId {
        let (auth_kind, credential) = match credentials {
            None => (AuthKind::None, None),
            Some(c) => {
                let vault = self.vault().await;
                let sealed = vault
                    .seal_for(id, &serde_json::to_vec(&c).unwrap())
                    .await
                    .unwrap();
                (AuthKind::Basic, Some(sealed))
            }
        };
        let mut e = RegistryRegistered {
            report_pulls: false,
            registry_id: id,
            label: format!("test {host}"),
            url: host.to_owned(),
            registry_type: RegistryType::Generic,
            insecure: true,
            auth_kind,
            credential,
            visibility: vec![],
            ca_pem: None,
            scan_interval_secs: None,
            repositories: vec![],
            webhook_secret: None,
            auth_hosts: vec![],
            proxy_url: None,
            no_proxy: Vec::new(),
            artifact_registry: None,
        };
        f(&mut e);
        self.publish(e).await;
        id
    }

    pub async fn remove(&self, id: RegistryId) -> u64 {
        self.publish(RegistryRemoved { registry_id: id }).await
    }

    pub async fn rule(&self, id: RegistryId, rule_id: &str, patterns: &[&str], kind: RuleKind) {
        self.rule_with(id, rule_id, patterns, kind, |_| {}).await
    }

    /// A rule over `patterns` (a `/`-free-ish pattern with `*` is a glob, else exact).
    pub async fn rule_with(
        &self,
        id: RegistryId,
        rule_id: &str,
        patterns: &[&str],
        kind: RuleKind,
        f: impl FnOnce(&mut RuleSet),
    ) {
        let mut rule = RuleSet {
            retention: None,
            registry_id: id,
            rule_id: rule_id.parse().unwrap(),
            repositories: patterns
                .iter()
                .map(|p| {
                    if p.contains('*') {
                        RepositoryPattern::Glob((*p).to_owned())
                    } else {
                        RepositoryPattern::Exact(p.parse().unwrap())
                    }
                })
                .collect(),
            tags: TagSelector::default(),
            kind,
            description: String::new(),
            hm_tags: vec![],
            enabled: true,
            trust: None,
        };
        f(&mut rule);
        self.publish(rule).await;
    }

    pub async fn request(&self, id: RegistryId, repository: Option<&str>) -> u64 {
        self.publish(SyncRequested {
            registry_id: id,
            repository: repository.map(|r| r.parse().unwrap()),
            reason: if repository.is_some() {
                SyncReason::Webhook
            } else {
                SyncReason::Manual
            },
        })
        .await
    }

    /// Every event after `seq`, read back from the stream.
    pub async fn events_after(&self, seq: u64) -> Vec<(u64, Envelope)> {
        let mut replay = self.bus.replay(seq + 1, None, None).await.expect("replay");
        let mut out = Vec::new();
        while let Some(item) = replay.next().await {
            let item = item.expect("replay item");
            if let Ok(e) = item.event {
                out.push((item.sequence, e));
            }
        }
        out
    }

    pub async fn events(&self) -> Vec<Envelope> {
        self.events_after(0)
            .await
            .into_iter()
            .map(|(_, e)| e)
            .collect()
    }

    /// Polls the stream until a scan of `id` that started after `seq` ended.
    pub async fn outcome_after(&self, id: RegistryId, seq: u64) -> (Outcome, Vec<Envelope>) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        loop {
            let events = self.events_after(seq).await;
            let mut started = false;
            for (_, e) in &events {
                match &e.payload {
                    EventPayload::SyncStarted(s) if s.registry_id == id => started = true,
                    EventPayload::SyncCompleted(c) if c.registry_id == id && started => {
                        return (Outcome::Completed(c.clone()), between(&events, c.sync_id));
                    }
                    EventPayload::SyncFailed(f) if f.registry_id == id && started => {
                        return (Outcome::Failed(f.clone()), between(&events, f.sync_id));
                    }
                    _ => {}
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no scan of {id} ended after sequence {seq}: {:?}",
                events
                    .iter()
                    .map(|(_, e)| e.event_type())
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Requests a scan and waits for it: its outcome and the image events it emitted.
    pub async fn scan(&self, id: RegistryId, repository: Option<&str>) -> (Outcome, Vec<Envelope>) {
        let seq = self.request(id, repository).await;
        self.outcome_after(id, seq).await
    }

    /// Like [`Self::scan`], for a scan that must complete.
    pub async fn scan_ok(
        &self,
        id: RegistryId,
        repository: Option<&str>,
    ) -> (SyncCompleted, Vec<Envelope>) {
        match self.scan(id, repository).await {
            (Outcome::Completed(c), events) => (c, events),
            (Outcome::Failed(f), _) => panic!("scan failed: {}", f.reason),
        }
    }
}

/// The image events of the scan `sync_id` (between its start and its end).
fn between(events: &[(u64, Envelope)], sync_id: imagelib_events::SyncId) -> Vec<Envelope> {
    let start = events.iter().position(
        |(_, e)| matches!(&e.payload, EventPayload::SyncStarted(s) if s.sync_id == sync_id),
    );
    let Some(start) = start else { return vec![] };
    events[start..]
        .iter()
        .take_while(|(_, e)| match &e.payload {
            EventPayload::SyncCompleted(c) => c.sync_id != sync_id,
            EventPayload::SyncFailed(f) => f.sync_id != sync_id,
            _ => true,
        })
        .filter(|(_, e)| e.payload.aggregate() == imagelib_events::Aggregate::Image)
        .map(|(_, e)| e.clone())
        .collect()
}

impl Drop for Env {
    /// The scanner's companion streams (jobs, leases) and the key bucket go with the
    /// test's stream.
    fn drop(&mut self) {
        let js = self.bus.jetstream().clone();
        let name = self.stream.name.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                for s in [
                    format!("{name}_JOBS"),
                    format!("KV_{name}_LEASES"),
                    format!("KV_{name}_SCANNED"),
                    format!("KV_{name}_KEYS"),
                    format!("KV_{name}_INTEGRITY"),
                ] {
                    let _ =
                        tokio::time::timeout(Duration::from_secs(5), js.delete_stream(&s)).await;
                }
            });
        })
        .join();
    }
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    async fn wait_ready(&self) {
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let mut last = String::new();
            if let Ok(r) = http.get(self.url("/readyz")).send().await {
                if r.status() == 200 {
                    return;
                }
                last = r.text().await.unwrap_or_default();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the scanner did not become ready: {last}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let r = reqwest::Client::new()
            .get(self.url(path))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or_default())
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

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

pub fn repo(s: &str) -> RepositoryName {
    s.parse().unwrap()
}

/// The image events' `(type name, repository:tag)`, sorted.
pub fn summary(events: &[Envelope]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = events
        .iter()
        .filter_map(|e| {
            let (name, r, t) = match &e.payload {
                EventPayload::TagDiscovered(d) => ("discovered", &d.repository, &d.tag),
                EventPayload::TagMoved(d) => ("moved", &d.repository, &d.tag),
                EventPayload::TagRemoved(d) => ("removed", &d.repository, &d.tag),
                _ => return None,
            };
            Some((name.to_owned(), format!("{r}:{t}")))
        })
        .collect();
    out.sort();
    out
}

pub fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = items
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
    v.sort();
    v
}
