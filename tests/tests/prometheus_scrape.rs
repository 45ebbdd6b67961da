//! A real Prometheus (Debian's `prometheus`) scrapes `/metrics` of a test `imagelib serve`
//! through `scripts/prometheus-check`, which evaluates every panel query of the shipped
//! dashboard: the queries on what this test exercised (HTTP requests, event consumers)
//! return data, and every query is reported. Skipped, saying so, only when `prometheus` or
//! `python3` is not installed (`deploy/local/up.sh` installs prometheus).

use std::time::Duration;

use imagelib_e2e::TestServer;

fn which(bin: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(bin))
            .find(|p| p.is_file())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_evaluates_the_dashboard_against_metrics() {
    let (Some(prometheus), Some(python)) = (which("prometheus"), which("python3")) else {
        println!(
            "SKIPPED: prometheus or python3 is not installed (apt-get install prometheus); the dashboard was not evaluated"
        );
        return;
    };
    let telemetry = imagelib_platform::telemetry::init_with(
        imagelib_platform::telemetry::OtelSettings {
            service_name: "imagelib".into(),
            metrics_addr: Some(([127, 0, 0, 1], 0).into()),
            ..Default::default()
        },
        imagelib_platform::config::LogFormat::Json,
    )
    .unwrap();
    let metrics_addr = telemetry.metrics_addr().unwrap();
    let server = TestServer::start().await.unwrap();
    server.wait_ready().await.unwrap();
    let res = server
        .http
        .post(server.url("/v1/registries"))
        .bearer_auth("test-admin-token")
        .json(&serde_json::json!({"label": "prom", "url": "127.0.0.1:1", "registry_type": "generic", "insecure": true, "validate": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);

    // Requests keep coming while Prometheus scrapes, so rates and quantiles have data.
    let http = server.http.clone();
    let api = server.url("/v1/registries");
    let traffic = tokio::spawn(async move {
        loop {
            let _ = http.get(&api).bearer_auth("test-admin-token").send().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = tokio::process::Command::new(python)
        .arg(root.join("scripts/prometheus-check"))
        .arg("--metrics-addr")
        .arg(metrics_addr.to_string())
        .arg("--prometheus")
        .arg(prometheus)
        .output()
        .await
        .unwrap();
    traffic.abort();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}{stderr}");
    // 0: every query had data; 1: some had none (metrics this test did not cause).
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{:?}\n{stdout}{stderr}",
        out.status
    );
    assert!(stdout.contains("the target is up"), "{stdout}");

    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("deploy/grafana/dashboards/imagelib.json")).unwrap(),
    )
    .unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect();
    assert!(!exprs.is_empty());
    let line_of = |expr: &str| {
        stdout
            .lines()
            .find(|l| l.ends_with(expr) && (l.starts_with("DATA") || l.starts_with("EMPTY")))
            .unwrap_or_else(|| panic!("{expr} not evaluated:\n{stdout}"))
            .to_owned()
    };
    for expr in &exprs {
        let line = line_of(expr);
        if expr.contains("http_server_request_duration_seconds")
            || expr.contains("imagelib_events_processed_total")
        {
            assert!(line.starts_with("DATA"), "{line}\n{stdout}");
        }
    }
    // Loopback requests take milliseconds: the median must say so (seconds buckets, not
    // the SDK's default millisecond-sized ones).
    let lines: Vec<&str> = stdout.lines().collect();
    for expr in exprs.iter().filter(|e| {
        e.contains("histogram_quantile(0.5,") && e.contains("http_server_request_duration")
    }) {
        let i = lines
            .iter()
            .position(|l| l.ends_with(expr.as_str()))
            .unwrap();
        let value: f64 = lines[i + 1]
            .split("e.g. ")
            .nth(1)
            .and_then(|v| v.split(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no value for {expr}:\n{stdout}"));
        assert!(value < 0.5, "median API latency {value} s:\n{stdout}");
    }
    let summary = format!("of {} panel queries returned data", exprs.len());
    assert!(stdout.contains(&summary), "{stdout}");
    server.stop().await.unwrap();
}
