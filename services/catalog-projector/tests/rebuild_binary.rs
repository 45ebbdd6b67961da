//! `catalog-projector rebuild`, the binary, beside a serving process: the `/metrics`
//! port named by `IMAGELIB_METRICS_ADDR` is the server's, and a rebuild must not need it.

use imagelib_testkit::{TestDb, TestStream};

#[tokio::test]
async fn rebuild_runs_while_the_metrics_port_is_taken() {
    let stream = TestStream::new();
    let db = TestDb::new();
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics = taken.local_addr().unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_catalog-projector"))
        .arg("rebuild")
        .current_dir(dir.path())
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env("IMAGELIB_NATS_URL", &stream.nats_url)
        .env("IMAGELIB_STREAM", &stream.name)
        .env("IMAGELIB_SUBJECT_PREFIX", &stream.prefix)
        .env(
            "IMAGELIB_STREAM_MAX_BYTES",
            imagelib_events::bus::DEFAULT_TEST_MAX_BYTES.to_string(),
        )
        .env("IMAGELIB_DATABASE_URL", &db.url)
        .env("IMAGELIB_METRICS_ADDR", metrics.to_string())
        .output()
        .await
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{report}");
    assert!(report.contains("rebuilt"), "{report}");
    drop(taken);
}
