//! The end-to-end harness: `imagelib serve` in-process on port 0, with a stream, subject
//! prefix and database of its own, stopped and cleaned up when the handle drops.

pub mod cluster;
pub mod otlp;

use std::net::SocketAddr;

use imagelib_platform::config::CommonConfig;
use imagelib_testkit::{TestDb, TestStream};
use tokio::sync::oneshot;

/// A running all-in-one server.
#[derive(Debug)]
pub struct TestServer {
    pub addr: SocketAddr,
    pub config: CommonConfig,
    pub stream: TestStream,
    pub db: TestDb,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), imagelib_platform::StartupError>>>,
    _state: tempfile_dir::TempState,
}

mod tempfile_dir {
    /// A per-test state directory (master key, gitops repository).
    #[derive(Debug)]
    pub struct TempState(pub std::path::PathBuf);

    impl TempState {
        pub fn new() -> Self {
            let p = std::env::temp_dir()
                .join(format!("imagelib-e2e-{}", imagelib_testkit::unique_id()));
            let _ = std::fs::create_dir_all(&p);
            TempState(p)
        }
    }

    impl Drop for TempState {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl TestServer {
    /// The configuration a test server runs with: everything isolated, port 0.
    pub fn config(stream: &TestStream, db: &TestDb, state: &std::path::Path) -> CommonConfig {
        CommonConfig {
            nats_url: stream.nats_url.clone(),
            database_url: db.url.clone(),
            stream: stream.name.clone(),
            subject_prefix: stream.prefix.clone(),
            http_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            master_key_file: state.join("master.key"),
            gitops_dir: state.join("gitops"),
            admin_token: Some("test-admin-token".into()),
            // Test registries listen on loopback, which the guard denies by default.
            allow_networks: Some(imagelib_testkit::LOOPBACK_NETWORKS.into()),
            // NATS reserves a stream's byte limit on disk; many test streams share a server.
            stream_max_bytes: imagelib_events::bus::DEFAULT_TEST_MAX_BYTES,
            ..Default::default()
        }
    }

    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(|_| {}).await
    }

    /// Start with the test configuration changed by `edit` (e.g. another NATS server and
    /// its credentials).
    pub async fn start_with(edit: impl FnOnce(&mut CommonConfig)) -> anyhow::Result<Self> {
        imagelib_testkit::init_tracing();
        let stream = TestStream::new();
        let db = TestDb::new();
        let state = tempfile_dir::TempState::new();
        let mut config = Self::config(&stream, &db, &state.0);
        edit(&mut config);
        let app =
            imagelib::serve::build(imagelib::serve::Configs::from_common(config.clone())).await?;
        let addr = app.local_addr();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(app.run_until_stopped(async move {
            let _ = rx.await;
        }));
        Ok(TestServer {
            addr,
            config,
            stream,
            db,
            http: reqwest::Client::new(),
            stop: Some(tx),
            task: Some(task),
            _state: state,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A request with the admin token; the status and the JSON body (`Null` if none).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut req = self.http.request(method, self.url(path));
        if let Some(token) = &self.config.admin_token {
            req = req.bearer_auth(token);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("the test server answers");
        let status = res.status().as_u16();
        let text = res.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or_default())
    }

    /// Requests a scan of registry `id` and waits (at most 30 s) for the one that answers
    /// it: its `last_sync`.
    pub async fn sync(&self, id: &str) -> serde_json::Value {
        let (s, r) = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/registries/{id}/sync"),
                None,
            )
            .await;
        assert_eq!(s, 202, "{r}");
        let requested = r["sequence"].as_u64().expect("a sync request's sequence");
        for _ in 0..600 {
            let (_, v) = self
                .call(reqwest::Method::GET, &format!("/v1/registries/{id}"), None)
                .await;
            let last = &v["last_sync"];
            if last["started_sequence"]
                .as_u64()
                .is_some_and(|s| s > requested)
                && last["state"] != "running"
            {
                return last.clone();
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("no scan answered the request");
    }

    /// Wait until `/readyz` says ready (projections caught up), at most 10 s.
    pub async fn wait_ready(&self) -> anyhow::Result<serde_json::Value> {
        wait_ready(&self.http, self.addr).await
    }
}

/// Poll `http://addr/readyz` until it answers 200, at most 10 s; the last report.
pub async fn wait_ready(
    http: &reqwest::Client,
    addr: SocketAddr,
) -> anyhow::Result<serde_json::Value> {
    let mut last = serde_json::Value::Null;
    for _ in 0..200 {
        let res = http.get(format!("http://{addr}/readyz")).send().await?;
        let ok = res.status().is_success();
        last = res.json().await?;
        if ok {
            return Ok(last);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    anyhow::bail!("not ready after 10 s: {last}")
}

impl TestServer {
    /// Stop gracefully and wait: the result of `run_until_stopped`.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await??;
        }
        Ok(())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
