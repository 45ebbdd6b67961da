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

/// Counters whose label sets are known start at zero when the labelled thing comes into
/// being, so the dashboard's and alerts' queries read "none seen" instead of nothing:
/// before any 429, dead letter, webhook or refused token, `/metrics` already holds those
/// series at 0 — and a real refused token then counts on top of the zeroed series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zeroed_series_exist_before_anything_happens() {
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
    let registry = imagelib_testkit::registry::TestRegistry::start()
        .await
        .unwrap();
    registry
        .push_image(
            "team/app",
            "latest",
            &imagelib_testkit::registry::ImageSpec::linux_amd64(),
        )
        .await
        .unwrap();
    let server = TestServer::start().await.unwrap();
    server.wait_ready().await.unwrap();

    let res = server
        .http
        .post(server.url("/v1/registries"))
        .bearer_auth("test-admin-token")
        .json(&serde_json::json!({"label": "zeroed", "url": registry.host(), "registry_type": "generic", "insecure": true, "validate": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let id = res.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = server
        .http
        .post(server.url(&format!("/v1/registries/{id}/sync")))
        .bearer_auth("test-admin-token")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);

    let url = format!("http://{metrics_addr}/metrics");
    let scrape = || async {
        let res = server.http.get(&url).send().await.unwrap();
        assert_eq!(res.status(), 200);
        res.text().await.unwrap()
    };
    let value_of = |text: &str, name: &str, labels: &[(&str, &str)]| -> Option<String> {
        text.lines()
            .find(|l| {
                l.starts_with(&format!("{name}{{"))
                    && labels
                        .iter()
                        .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
            })
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_owned)
    };
    let rate_limited = [
        ("imagelib_registry_id", id.as_str()),
        ("http_response_status_code", "429"),
    ];
    let mut text = String::new();
    for _ in 0..400 {
        text = scrape().await;
        if value_of(&text, "imagelib_registry_rate_limited_total", &rate_limited).is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The scan built the registry's client: no 429 yet, and the series says so.
    assert_eq!(
        value_of(&text, "imagelib_registry_rate_limited_total", &rate_limited).as_deref(),
        Some("0"),
        "{text}"
    );
    assert_eq!(
        value_of(
            &text,
            "imagelib_registry_rate_limited_total",
            &[
                ("imagelib_registry_id", id.as_str()),
                ("http_response_status_code", "503")
            ]
        )
        .as_deref(),
        Some("0"),
        "{text}"
    );
    // Every consumer that started has its dead-letter series, at zero.
    for consumer in ["catalog-projector", "sync-scanner-jobs"] {
        let line = text
            .lines()
            .find(|l| {
                l.starts_with("imagelib_events_dead_lettered_total{")
                    && l.contains(&format!("messaging_consumer_group_name=\"{consumer}"))
            })
            .unwrap_or_else(|| panic!("no dead-letter series of {consumer} in\n{text}"));
        assert!(line.ends_with(" 0"), "{line}");
    }
    // No webhook arrived: the refused-delivery series is there, at zero.
    assert_eq!(
        value_of(
            &text,
            "imagelib_webhook_deliveries_total",
            &[
                ("imagelib_registry_type", "unknown"),
                ("format", "unknown"),
                ("outcome", "unauthorized")
            ]
        )
        .as_deref(),
        Some("0"),
        "{text}"
    );
    // No token refused yet: a zero per reason.
    for reason in ["malformed", "unknown_token"] {
        assert_eq!(
            value_of(
                &text,
                "imagelib_auth_failures_total",
                &[("http_route", "unmatched"), ("reason", reason)]
            )
            .as_deref(),
            Some("0"),
            "{text}"
        );
    }
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("imagelib_auth_failures_total{") && !l.ends_with(" 0")),
        "{text}"
    );

    // A refused token counts for real, next to the zeroes.
    let res = server
        .http
        .get(server.url("/v1/registries"))
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let mut counted = None;
    for _ in 0..100 {
        let text = scrape().await;
        counted = value_of(
            &text,
            "imagelib_auth_failures_total",
            &[
                ("http_route", "/v1/registries"),
                ("reason", "unknown_token"),
            ],
        );
        if counted.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(counted.as_deref(), Some("1"));
    server.stop().await.unwrap();
}

fn which(bin: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(bin))
            .find(|p| p.is_file())
    })
}
