//! OpenTelemetry end to end: an OTLP/HTTP receiver inside the test collects what
//! `imagelib serve` exports; one trace spans the HTTP command and every consumer of the
//! events it caused, and the metrics of DESIGN section 9 are there with units.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use imagelib_e2e::TestServer;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

#[derive(Default)]
struct Received {
    /// span name → (trace id hex, attributes)
    spans: Vec<(String, String, BTreeMap<String, String>)>,
    /// metric name → unit
    metrics: BTreeMap<String, String>,
}

type Shared = Arc<Mutex<Received>>;

async fn traces(State(r): State<Shared>, body: Bytes) -> &'static str {
    let req = ExportTraceServiceRequest::decode(body).expect("OTLP traces protobuf");
    let mut r = r.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for rs in req.resource_spans {
        for ss in rs.scope_spans {
            for span in ss.spans {
                let trace: String = span.trace_id.iter().map(|b| format!("{b:02x}")).collect();
                let attrs = span
                    .attributes
                    .iter()
                    .map(|kv| {
                        let v = kv
                            .value
                            .as_ref()
                            .and_then(|v| v.value.as_ref())
                            .map(|v| format!("{v:?}"))
                            .unwrap_or_default();
                        (kv.key.clone(), v)
                    })
                    .collect();
                r.spans.push((span.name, trace, attrs));
            }
        }
    }
    "{}"
}

async fn metrics(State(r): State<Shared>, body: Bytes) -> &'static str {
    let req = ExportMetricsServiceRequest::decode(body).expect("OTLP metrics protobuf");
    let mut r = r.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for rm in req.resource_metrics {
        for sm in rm.scope_metrics {
            for m in sm.metrics {
                r.metrics.insert(m.name, m.unit);
            }
        }
    }
    "{}"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_spans_the_command_and_its_consumers() {
    let received: Shared = Arc::default();
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(traces))
        .route("/v1/metrics", axum::routing::post(metrics))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let telemetry = imagelib_platform::telemetry::init_with(
        imagelib_platform::telemetry::OtelSettings {
            service_name: "imagelib".into(),
            endpoint: Some(endpoint),
            metric_interval: Some(Duration::from_millis(500)),
            ..Default::default()
        },
        imagelib_platform::config::LogFormat::Json,
    )
    .unwrap();

    let server = TestServer::start().await.unwrap();
    server.wait_ready().await.unwrap();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let res = server
        .http
        .post(server.url("/v1/registries"))
        .bearer_auth("test-admin-token")
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&serde_json::json!({"label": "traced", "url": "127.0.0.1:1", "registry_type": "generic", "insecure": true, "validate": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    // The response names the trace the request joined.
    let traceresponse = res
        .headers()
        .get("traceresponse")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        traceresponse.starts_with(&format!("00-{trace_id}-")),
        "{traceresponse:?}"
    );

    // Wait (generously: CI runs every suite at once on two cores) until the consumers of
    // the event have exported their spans and the metrics have arrived; assertions run
    // on a snapshot so a failure never poisons the receiver's lock.
    let snapshot = || {
        let r = received
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let in_trace: BTreeSet<String> = r
            .spans
            .iter()
            .filter(|(_, t, _)| t == trace_id)
            .map(|(n, _, _)| n.clone())
            .collect();
        let consumers: BTreeSet<String> = r
            .spans
            .iter()
            .filter(|(name, t, _)| {
                t == trace_id && name.starts_with("process io.imagelib.registry.registered")
            })
            .filter_map(|(_, _, a)| a.get("messaging.consumer.group.name").cloned())
            .collect();
        (in_trace, consumers, r.metrics.clone())
    };
    let complete = |(in_trace, consumers, metrics): &(
        BTreeSet<String>,
        BTreeSet<String>,
        BTreeMap<String, String>,
    )| {
        let joined = consumers.iter().cloned().collect::<Vec<_>>().join(",");
        in_trace.contains("POST /v1/registries")
            && in_trace.contains("send io.imagelib.registry.registered.v1")
            && joined.contains("registry-registry-registry")
            && joined.contains("serving-deployer-registry")
            && metrics.contains_key("http.server.request.duration")
            && metrics.contains_key("imagelib.events.processed")
    };
    let mut seen = snapshot();
    for _ in 0..600 {
        if complete(&seen) {
            break;
        }
        telemetry.flush();
        tokio::time::sleep(Duration::from_millis(100)).await;
        seen = snapshot();
    }
    let (in_trace, consumers, metrics) = seen;
    assert!(in_trace.contains("POST /v1/registries"), "{in_trace:?}");
    assert!(
        in_trace.contains("send io.imagelib.registry.registered.v1"),
        "{in_trace:?}"
    );
    let joined = consumers.iter().cloned().collect::<Vec<_>>().join(",");
    assert!(joined.contains("registry-registry-registry"), "{joined}");
    assert!(joined.contains("serving-deployer-registry"), "{joined}");

    // Metrics with units.
    assert_eq!(
        metrics
            .get("http.server.request.duration")
            .map(String::as_str),
        Some("s"),
        "{metrics:?}"
    );
    assert_eq!(
        metrics.get("imagelib.events.processed").map(String::as_str),
        Some("{event}"),
        "{metrics:?}"
    );
}
