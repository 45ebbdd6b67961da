//! `imagelib serve` after its master key file is lost (a second clone of the quickstart on
//! the same NATS, a deleted `.imagelib/`): it starts, the registry sealed under the lost key
//! shows `credentials_unavailable` and its scans fail at once, everything else runs, and
//! entering the credentials again makes it validated and scannable.

use std::net::SocketAddr;
use std::time::Duration;

use imagelib_e2e::TestServer;
use imagelib_platform::config::CommonConfig;
use imagelib_testkit::registry::{ImageSpec, TestRegistry};
use imagelib_testkit::{TestDb, TestStream};
use serde_json::{Value, json};
use tokio::sync::oneshot;

const ADMIN: &str = "test-admin-token";

struct Serve {
    addr: SocketAddr,
    http: reqwest::Client,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), imagelib_platform::StartupError>>,
}

impl Serve {
    async fn start(config: &CommonConfig) -> Serve {
        let app = imagelib::serve::build(imagelib::serve::Configs::from_common(config.clone()))
            .await
            .expect("imagelib serve starts");
        let addr = app.local_addr();
        let (stop, rx) = oneshot::channel();
        let task = tokio::spawn(app.run_until_stopped(async move {
            let _ = rx.await;
        }));
        let http = reqwest::Client::new();
        imagelib_e2e::wait_ready(&http, addr).await.unwrap();
        Serve {
            addr,
            http,
            stop,
            task,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("http://{}{path}", self.addr))
            .bearer_auth(ADMIN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Requests a scan and waits for the one that answers it.
    async fn sync(&self, id: &str) -> Value {
        let (s, r) = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/registries/{id}/sync"),
                None,
            )
            .await;
        assert_eq!(s, 202, "{r}");
        let requested = r["sequence"].as_u64().unwrap();
        for _ in 0..300 {
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
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no scan answered the request");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replaced_master_key_file_leaves_serve_running_and_new_credentials_recover() {
    imagelib_testkit::init_tracing();
    let stream = TestStream::new();
    let db = TestDb::new();
    let state = std::env::temp_dir().join(format!(
        "imagelib-custody-{}",
        imagelib_testkit::unique_id()
    ));
    std::fs::create_dir_all(&state).unwrap();
    let config = TestServer::config(&stream, &db, &state);
    let canary = format!("canary-{}", imagelib_testkit::unique_id());
    let registry = TestRegistry::builder()
        .htpasswd("scanner", &canary)
        .start()
        .await
        .unwrap();
    registry
        .push_image("private/app", "1.0", &ImageSpec::linux_amd64())
        .await
        .unwrap();
    let open = TestRegistry::start().await.unwrap();
    open.push_image("public/app", "1.0", &ImageSpec::linux_amd64())
        .await
        .unwrap();

    let serve = Serve::start(&config).await;
    let mut ids = Vec::new();
    for (label, reg, creds) in [
        (
            "private",
            &registry,
            json!({"kind": "basic", "username": "scanner", "password": canary}),
        ),
        ("open", &open, json!({"kind": "none"})),
    ] {
        let (s, r) = serve
            .call(
                reqwest::Method::POST,
                "/v1/registries",
                Some(
                    json!({"label": label, "url": reg.host(), "registry_type": "generic",
                            "insecure": true, "credentials": creds}),
                ),
            )
            .await;
        assert_eq!(s, 201, "{r}");
        let id = r["id"].as_str().unwrap().to_owned();
        let (s, r) = serve
            .call(
                reqwest::Method::PUT,
                &format!("/v1/registries/{id}/rules/all"),
                Some(json!({"repositories": "**", "kind": "auto", "enabled": true})),
            )
            .await;
        assert_eq!(s, 200, "{r}");
        assert_eq!(serve.sync(&id).await["state"], "completed");
        ids.push(id);
    }
    serve.stop().await;

    // Key file A is gone; `imagelib serve` creates key file B and starts anyway.
    std::fs::remove_file(&config.master_key_file).unwrap();
    let serve = Serve::start(&config).await;
    let (s, v) = serve
        .call(
            reqwest::Method::GET,
            &format!("/v1/registries/{}", ids[0]),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["status"], "credentials_unavailable", "{v}");
    let failed = serve.sync(&ids[0]).await;
    assert_eq!(failed["state"], "failed", "{failed}");
    let reason = failed["summary"]["reason"].as_str().unwrap();
    assert!(reason.starts_with("credentials_unavailable"), "{reason}");
    assert!(!reason.contains(&canary));
    // Everything else runs.
    assert_eq!(serve.sync(&ids[1]).await["state"], "completed");

    // Entering the credentials again: validated and scannable.
    let (s, v) = serve
        .call(
            reqwest::Method::PUT,
            &format!("/v1/registries/{}/credentials", ids[0]),
            Some(json!({"credentials": {"kind": "basic", "username": "scanner", "password": canary}})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "validated", "{v}");
    assert_eq!(serve.sync(&ids[0]).await["state"], "completed");
    serve.stop().await;
    let _ = std::fs::remove_dir_all(&state);
}
