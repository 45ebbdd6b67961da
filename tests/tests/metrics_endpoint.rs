//! `IMAGELIB_METRICS_ADDR`: `imagelib serve` with the Prometheus endpoint on a listener
//! of its own; after real requests, `/metrics` shows the series the shipped dashboard
//! queries, named as the collector's Prometheus exporter names them, in a format
//! `promtool check metrics` accepts (when promtool is installed).

use std::time::Duration;

use imagelib_e2e::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_scraped_from_their_own_listener() {
    let telemetry = imagelib_platform::telemetry::init_with(
        imagelib_platform::telemetry::OtelSettings {
            service_name: "imagelib".into(),
            metrics_addr: Some(([127, 0, 0, 1], 0).into()),
            ..Default::default()
        },
        imagelib_platform::config::LogFormat::Json,
    )
    .unwrap();
    let metrics_addr = telemetry.metrics_addr().expect("a /metrics listener");

    let server = TestServer::start().await.unwrap();
    server.wait_ready().await.unwrap();
    assert_ne!(metrics_addr.port(), server.addr.port());
    // The API's listener does not serve /metrics: it is on its own port only.
    let res = server
        .http
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);

    let res = server
        .http
        .post(server.url("/v1/registries"))
        .bearer_auth("test-admin-token")
        .json(&serde_json::json!({"label": "scraped", "url": "127.0.0.1:1", "registry_type": "generic", "insecure": true, "validate": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let res = server
        .http
        .get(server.url("/v1/registries"))
        .bearer_auth("test-admin-token")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // The registration event reaches its consumers asynchronously.
    let url = format!("http://{metrics_addr}/metrics");
    let mut text = String::new();
    for _ in 0..200 {
        let res = server.http.get(&url).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        text = res.text().await.unwrap();
        if text.contains("imagelib_events_processed_total{") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lines: Vec<&str> = text.lines().collect();
    let has = |prefix: &str| lines.iter().any(|l| l.starts_with(prefix));
    assert!(
        has("# TYPE http_server_request_duration_seconds histogram"),
        "{text}"
    );
    // The POST's series, as the dashboard's rate(…_bucket) and by-status panels read it.
    let post_bucket = lines
        .iter()
        .find(|l| {
            l.starts_with("http_server_request_duration_seconds_bucket{")
                && l.contains("http_response_status_code=\"201\"")
                && l.contains("le=\"+Inf\"")
        })
        .unwrap_or_else(|| panic!("no +Inf bucket of the 201 in\n{text}"));
    assert!(
        post_bucket.contains("service_name=\"imagelib\""),
        "{post_bucket}"
    );
    assert!(post_bucket.ends_with(" 1"), "{post_bucket}");
    assert!(has("http_server_request_duration_seconds_sum{"), "{text}");
    assert!(has("http_server_request_duration_seconds_count{"), "{text}");
    assert!(
        has("# TYPE imagelib_events_processed_total counter"),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("imagelib_events_processed_total{")
                && l.contains("messaging_consumer_group_name=")
                && l.contains("outcome=")),
        "{text}"
    );
    // No OTLP dotted names or doubled suffixes leak through.
    assert!(!text.contains("http.server"), "{text}");
    assert!(!text.contains("_seconds_seconds"), "{text}");

    match which("promtool") {
        Some(promtool) => {
            let mut child = std::process::Command::new(promtool)
                .args(["check", "metrics"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write as _;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            let report = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                out.status.success(),
                "promtool check metrics: {report}\n{text}"
            );
        }
        None => eprintln!("promtool not installed: the exposition format is not linted"),
    }
    server.stop().await.unwrap();
}

fn which(bin: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(bin))
            .find(|p| p.is_file())
    })
}
