//! OTLP over TLS: `imagelib serve` exports to an OTLP/HTTP receiver inside the test that
//! speaks HTTPS with a certificate from a private CA (the testkit's). Given that CA in
//! `OTEL_EXPORTER_OTLP_CERTIFICATE` (here through `OtelSettings`, which `from_env` fills
//! from it) traces and metrics arrive; without it every handshake fails and the server
//! runs on regardless. Each test is its own process (nextest), so each installs its own
//! telemetry.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use imagelib_e2e::TestServer;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tokio_rustls::rustls;

/// What reached the receiver's TLS layer and its HTTP handlers.
#[derive(Default)]
struct Counters {
    handshakes_failed: AtomicUsize,
    requests: AtomicUsize,
}

type Shared = Arc<Counters>;
type Names = Arc<Mutex<BTreeSet<String>>>;

/// An HTTPS listener for `axum::serve`: TLS handshakes that fail are counted and dropped.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    received: Shared,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            match self.acceptor.accept(tcp).await {
                Ok(tls) => return (tls, addr),
                Err(_) => {
                    self.received
                        .handshakes_failed
                        .fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

struct Receiver {
    endpoint: String,
    ca_file: std::path::PathBuf,
    received: Shared,
    spans: Names,
    metrics: Names,
    _dir: tempfile::TempDir,
}

async fn https_receiver() -> Receiver {
    let dir = tempfile::tempdir().unwrap();
    let ca = imagelib_testkit::registry::make_ca(dir.path())
        .await
        .unwrap();
    let ca_file = dir.path().join("otlp-ca.pem");
    std::fs::write(&ca_file, &ca.ca_pem).unwrap();
    use rustls::pki_types::pem::PemObject;
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(&ca.server_cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&ca.server_key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let received: Shared = Arc::default();
    let spans: Names = Arc::default();
    let metrics: Names = Arc::default();
    let app = axum::Router::new()
        .route(
            "/v1/traces",
            axum::routing::post(
                |State((r, spans, _)): State<(Shared, Names, Names)>, body: Bytes| async move {
                    r.requests.fetch_add(1, Ordering::SeqCst);
                    let req =
                        ExportTraceServiceRequest::decode(body).expect("OTLP traces protobuf");
                    let mut s = spans
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    for rs in req.resource_spans {
                        for ss in rs.scope_spans {
                            s.extend(ss.spans.into_iter().map(|sp| sp.name));
                        }
                    }
                    "{}"
                },
            ),
        )
        .route(
            "/v1/metrics",
            axum::routing::post(
                |State((r, _, metrics)): State<(Shared, Names, Names)>, body: Bytes| async move {
                    r.requests.fetch_add(1, Ordering::SeqCst);
                    let req =
                        ExportMetricsServiceRequest::decode(body).expect("OTLP metrics protobuf");
                    let mut m = metrics
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    for rm in req.resource_metrics {
                        for sm in rm.scope_metrics {
                            m.extend(sm.metrics.into_iter().map(|m| m.name));
                        }
                    }
                    "{}"
                },
            ),
        )
        .with_state((received.clone(), spans.clone(), metrics.clone()));
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("https://{}", tcp.local_addr().unwrap());
    let listener = TlsListener {
        tcp,
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        received: received.clone(),
    };
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver {
        endpoint,
        ca_file,
        received,
        spans,
        metrics,
        _dir: dir,
    }
}

async fn register(server: &TestServer, label: &str) {
    let res = server
        .http
        .post(server.url("/v1/registries"))
        .bearer_auth("test-admin-token")
        .json(&serde_json::json!({"label": label, "url": "127.0.0.1:1", "registry_type": "generic", "insecure": true, "validate": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_collector_with_a_private_ca_receives_traces_and_metrics() {
    let receiver = https_receiver().await;
    let telemetry = imagelib_platform::telemetry::init_with(
        imagelib_platform::telemetry::OtelSettings {
            service_name: "imagelib".into(),
            endpoint: Some(receiver.endpoint.clone()),
            metric_interval: Some(Duration::from_millis(300)),
            certificate: Some(receiver.ca_file.clone()),
            ..Default::default()
        },
        imagelib_platform::config::LogFormat::Json,
    )
    .unwrap();
    let server = TestServer::start().await.unwrap();
    server.wait_ready().await.unwrap();
    register(&server, "over-tls").await;

    let done = || {
        let spans = receiver.spans.lock().unwrap().clone();
        let metrics = receiver.metrics.lock().unwrap().clone();
        (spans, metrics)
    };
    let mut seen = done();
    for _ in 0..300 {
        if seen.0.contains("POST /v1/registries") && seen.1.contains("http.server.request.duration")
        {
            break;
        }
        telemetry.flush();
        tokio::time::sleep(Duration::from_millis(100)).await;
        seen = done();
    }
    assert!(seen.0.contains("POST /v1/registries"), "{:?}", seen.0);
    assert!(
        seen.1.contains("http.server.request.duration"),
        "{:?}",
        seen.1
    );
    assert_eq!(
        receiver.received.handshakes_failed.load(Ordering::SeqCst),
        0
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_ca_the_export_fails_and_the_server_runs_on() {
    let receiver = https_receiver().await;
    let telemetry = imagelib_platform::telemetry::init_with(
        imagelib_platform::telemetry::OtelSettings {
            service_name: "imagelib".into(),
            endpoint: Some(receiver.endpoint.clone()),
            metric_interval: Some(Duration::from_millis(300)),
            ..Default::default()
        },
        imagelib_platform::config::LogFormat::Json,
    )
    .unwrap();
    let server = TestServer::start().await.unwrap();
    server.wait_ready().await.unwrap();
    register(&server, "untrusted-collector").await;
    // Both exporters try (and fail) at least once.
    for _ in 0..300 {
        if receiver.received.handshakes_failed.load(Ordering::SeqCst) >= 2 {
            break;
        }
        telemetry.flush();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        receiver.received.handshakes_failed.load(Ordering::SeqCst) >= 2,
        "the exporters never tried the collector"
    );
    assert_eq!(receiver.received.requests.load(Ordering::SeqCst), 0);
    assert!(receiver.spans.lock().unwrap().is_empty());
    assert!(receiver.metrics.lock().unwrap().is_empty());
    // The server is unaffected.
    register(&server, "still-serving").await;
    let res = server
        .http
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    server.stop().await.unwrap();
}
