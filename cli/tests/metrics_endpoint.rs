//! The `imagelib serve` binary with `IMAGELIB_METRICS_ADDR`: configuration from the
//! environment to a `/metrics` listener of its own; a listener that cannot be bound stops
//! the program at start, naming the variable.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use imagelib_testkit::{TestDb, TestStream};

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn serve(
    stream: &TestStream,
    db: &TestDb,
    dir: &std::path::Path,
    http: u16,
    metrics: u16,
) -> Child {
    Command::new(env!("CARGO_BIN_EXE_imagelib"))
        .arg("serve")
        .current_dir(dir)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env("IMAGELIB_NATS_URL", &stream.nats_url)
        .env("IMAGELIB_STREAM", &stream.name)
        .env("IMAGELIB_SUBJECT_PREFIX", &stream.prefix)
        .env(
            "IMAGELIB_STREAM_MAX_BYTES",
            imagelib_events::bus::DEFAULT_TEST_MAX_BYTES.to_string(),
        )
        .env("IMAGELIB_DATABASE_URL", &db.url)
        .env("IMAGELIB_HTTP_ADDR", format!("127.0.0.1:{http}"))
        .env("IMAGELIB_METRICS_ADDR", format!("127.0.0.1:{metrics}"))
        .env("IMAGELIB_MASTER_KEY_FILE", dir.join("master.key"))
        .env("IMAGELIB_GITOPS_DIR", dir.join("gitops"))
        .env("IMAGELIB_ADMIN_TOKEN", "metrics-admin-token")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imagelib_serve_exports_metrics_on_imagelib_metrics_addr() {
    let stream = TestStream::new();
    let db = TestDb::new();
    let dir = tempfile::tempdir().unwrap();
    let (http_port, metrics_port) = (free_port(), free_port());
    let _server = Running(serve(&stream, &db, dir.path(), http_port, metrics_port));
    let http = reqwest::Client::new();
    let api = format!("http://127.0.0.1:{http_port}");
    let mut ready = false;
    for _ in 0..300 {
        if let Ok(res) = http.get(format!("{api}/readyz")).send().await
            && res.status().is_success()
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "imagelib serve did not become ready");
    let res = http
        .get(format!("{api}/v1/registries"))
        .bearer_auth("metrics-admin-token")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    let text = http
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.lines().any(
            |l| l.starts_with("http_server_request_duration_seconds_bucket{")
                && l.contains("http_response_status_code=\"200\"")
                && l.contains("service_name=\"imagelib\"")
                && l.contains("le=\"+Inf\"")
        ),
        "{text}"
    );
    assert!(
        text.contains("# TYPE http_server_request_duration_seconds histogram"),
        "{text}"
    );
}

#[tokio::test]
async fn an_unusable_metrics_address_stops_the_program_at_start() {
    let stream = TestStream::new();
    let db = TestDb::new();
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let child = serve(&stream, &db, dir.path(), free_port(), port);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("IMAGELIB_METRICS_ADDR 127.0.0.1:{port}")),
        "{stderr}"
    );
    drop(taken);
}
