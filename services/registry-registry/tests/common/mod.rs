//! A registry-registry of the test's own: its stream, database, master key and tokens.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;

use imagelib_platform::config::CommonConfig;
use imagelib_testkit::{TestDb, TestStream};
use registry_registry::config::Config;
use registry_registry::startup::Application;
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub const ADMIN: &str = "admin-token-for-tests";
pub const VIEWER_ML: &str = "viewer-ml-token";
pub const VIEWER_DB: &str = "viewer-db-token";

pub struct Service {
    pub addr: SocketAddr,
    pub config: Config,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

pub struct Env {
    pub stream: TestStream,
    pub db: TestDb,
    pub dir: tempfile::TempDir,
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

    pub fn config(&self) -> Config {
        let tokens: PathBuf = self.dir.path().join("tokens.yaml");
        std::fs::write(
            &tokens,
            format!(
                "tokens:\n  - {{subject: alice, role: viewer, teams: [ml], token: {VIEWER_ML}}}\n  - {{subject: bob, role: viewer, teams: [db], token: {VIEWER_DB}}}\n"
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
                // Test registries listen on loopback, which the guard denies by default.
                allow_networks: Some(imagelib_testkit::LOOPBACK_NETWORKS.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    pub async fn start(&self) -> Service {
        self.start_with(self.config()).await
    }

    pub async fn start_with(&self, config: Config) -> Service {
        let app = Application::build(config.clone()).await.unwrap();
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
            config,
            http: reqwest::Client::new(),
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Every message in the stream, raw bytes of headers and payload.
    pub async fn raw_stream(&self) -> Vec<u8> {
        let client = self.stream.client().await.unwrap();
        let js = async_nats::jetstream::new(client);
        let mut s = js.get_stream(&self.stream.name).await.unwrap();
        let last = s.info().await.unwrap().state.last_sequence;
        let mut out = Vec::new();
        for seq in 1..=last {
            if let Ok(m) = s.get_raw_message(seq).await {
                out.extend_from_slice(m.subject.as_bytes());
                for (k, vs) in m.headers.iter() {
                    out.extend_from_slice(k.to_string().as_bytes());
                    for v in vs {
                        out.extend_from_slice(v.as_str().as_bytes());
                    }
                }
                out.extend_from_slice(&m.payload);
            }
        }
        out
    }

    /// The event types in the stream, in order.
    pub async fn event_types(&self) -> Vec<String> {
        let client = self.stream.client().await.unwrap();
        let bus = imagelib_events::bus::EventBus::from_client(
            client,
            imagelib_events::bus::StreamSettings::new(&self.stream.name, &self.stream.prefix),
        );
        let mut replay = bus.replay(1, None, None).await.unwrap();
        let mut out = Vec::new();
        while let Some(item) = replay.next().await {
            if let Ok(e) = item.unwrap().event {
                out.push(e.event_type().to_owned());
            }
        }
        out
    }

    pub async fn events(&self) -> Vec<imagelib_events::Envelope> {
        let client = self.stream.client().await.unwrap();
        let bus = imagelib_events::bus::EventBus::from_client(
            client,
            imagelib_events::bus::StreamSettings::new(&self.stream.name, &self.stream.prefix),
        );
        let mut replay = bus.replay(1, None, None).await.unwrap();
        let mut out = Vec::new();
        while let Some(item) = replay.next().await {
            if let Ok(e) = item.unwrap().event {
                out.push(e);
            }
        }
        out
    }

    /// Every row of every table of the service's schema, as text.
    pub async fn db_dump(&self) -> String {
        let pool = sqlx::PgPool::connect(&self.db.url).await.unwrap();
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog','information_schema')",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        let mut out = String::new();
        for t in tables {
            let rows: Vec<String> =
                sqlx::query_scalar(&format!("SELECT row_to_json(x)::text FROM {t} x"))
                    .fetch_all(&pool)
                    .await
                    .unwrap();
            out.push_str(&rows.join("\n"));
        }
        pool.close().await;
        out
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
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, body, headers)
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let (s, b, _) = self
            .call(reqwest::Method::POST, path, Some(ADMIN), Some(body))
            .await;
        (s, b)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let (s, b, _) = self
            .call(reqwest::Method::GET, path, Some(ADMIN), None)
            .await;
        (s, b)
    }

    /// Register the open registry at `host:port` (plain HTTP).
    pub async fn register_open(
        &self,
        registry: &imagelib_testkit::registry::TestRegistry,
        label: &str,
    ) -> Value {
        let (s, b) = self
            .post(
                "/v1/registries",
                json!({"label": label, "url": format!("127.0.0.1:{}", registry.port()), "registry_type": "generic", "insecure": true}),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        b
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

pub fn json_body(v: Value) -> Option<Value> {
    Some(v)
}
