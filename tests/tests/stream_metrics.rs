//! The stream's usage gauges reach an OTLP receiver with their units and the stream's name,
//! and the Prometheus alert on them is valid and behaves (`promtool`, when installed).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use imagelib_events::bus::{EventBus, StreamSettings};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
use prost::Message;

/// metric name → (unit, destination → last value)
type Seen = Arc<Mutex<BTreeMap<String, (String, BTreeMap<String, i64>)>>>;

async fn metrics(State(seen): State<Seen>, body: Bytes) -> &'static str {
    let req = ExportMetricsServiceRequest::decode(body).expect("OTLP metrics protobuf");
    let mut seen = seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for m in req
        .resource_metrics
        .into_iter()
        .flat_map(|r| r.scope_metrics)
        .flat_map(|s| s.metrics)
    {
        let Some(Data::Gauge(g)) = m.data else {
            continue;
        };
        let entry = seen
            .entry(m.name)
            .or_insert_with(|| (m.unit, BTreeMap::new()));
        for p in g.data_points {
            let destination = p
                .attributes
                .iter()
                .find(|kv| kv.key == "messaging.destination.name")
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                .and_then(|v| match v {
                    AnyValue::StringValue(s) => Some(s.clone()),
                    _ => None,
                });
            let value = match p.value {
                Some(Value::AsInt(i)) => i,
                Some(Value::AsDouble(d)) => d as i64,
                None => continue,
            };
            if let Some(d) = destination {
                entry.1.insert(d, value);
            }
        }
    }
    "{}"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_usage_gauges_are_exported() {
    let seen: Seen = Arc::default();
    let app = axum::Router::new()
        .route("/v1/metrics", axum::routing::post(metrics))
        .route("/v1/traces", axum::routing::post(|| async { "{}" }))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let _telemetry = imagelib_platform::telemetry::init_with(
        imagelib_platform::telemetry::OtelSettings {
            service_name: "imagelib".into(),
            endpoint: Some(endpoint),
            metric_interval: Some(Duration::from_millis(300)),
            ..Default::default()
        },
        imagelib_platform::config::LogFormat::Json,
    )
    .unwrap();

    let ts = imagelib_testkit::TestStream::new();
    let max_bytes = 32 * 1024 * 1024;
    let settings = StreamSettings {
        max_bytes,
        ..StreamSettings::new(&ts.name, &ts.prefix)
    };
    let bus = EventBus::from_client(ts.client().await.unwrap(), settings);
    bus.ensure_stream().await.unwrap();
    let js = bus.jetstream();
    for _ in 0..3 {
        let subject = format!("{}.registry.{}.registered", ts.prefix, uuid::Uuid::new_v4());
        js.publish(subject, Bytes::from(vec![b'x'; 1000]))
            .await
            .unwrap()
            .await
            .unwrap();
    }
    bus.watch_stream_usage(Duration::from_millis(100));
    // Watching twice is a no-op, not a second series.
    bus.watch_stream_usage(Duration::from_millis(100));

    let value = |name: &str| {
        let seen = seen.lock().unwrap();
        seen.get(name)
            .map(|(unit, v)| (unit.clone(), v.get(&ts.name).copied()))
    };
    let mut last = None;
    for _ in 0..100 {
        let bytes = value("imagelib.stream.bytes");
        let messages = value("imagelib.stream.messages");
        let max = value("imagelib.stream.max_bytes");
        if let (Some((bu, Some(b))), Some((mu, Some(3))), Some((xu, Some(x)))) =
            (&bytes, &messages, &max)
        {
            assert_eq!(bu, "By");
            assert_eq!(mu, "{message}");
            assert_eq!(xu, "By");
            assert!(*b >= 3000, "three 1000-byte messages: {b}");
            assert_eq!(*x, max_bytes);
            return;
        }
        last = Some((bytes, messages, max));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("stream gauges not exported: {last:?}");
}

/// `promtool check rules` and the rules' unit tests (deploy/prometheus/alerts_test.yml). The
/// only skip in the suite: without promtool (`apt-get install prometheus`) it says so.
#[test]
fn the_alert_rules_are_valid_and_fire_at_80_percent() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus");
    let Ok(out) = std::process::Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(root.join("alerts.yml"))
        .output()
    else {
        println!(
            "SKIPPED: promtool is not installed (apt-get install prometheus); alert rules not checked"
        );
        return;
    };
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new("promtool")
        .arg("test")
        .arg("rules")
        .arg("alerts_test.yml")
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
