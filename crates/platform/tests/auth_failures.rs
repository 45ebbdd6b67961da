//! A refused credential is counted by `imagelib.auth.failures` (by route and reason), a
//! missing one is not, and a route served by the platform's HTTP shell answers 401 with a
//! `WWW-Authenticate` challenge. A test binary of its own: the global meter provider must
//! be set before the counter is first used, and only one test may set it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::get;
use imagelib_platform::auth::{Caller, Tokens};
use imagelib_platform::http::HttpOptions;
use imagelib_platform::service::{Readiness, Service};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use utoipa_axum::router::OpenApiRouter;

/// `(name, unit, attributes, value)` of every `u64` sum exported.
type Points = Arc<Mutex<Vec<(String, String, Vec<(String, String)>, u64)>>>;

/// An exporter that keeps what it is given, so the test reads the SDK's own output.
#[derive(Clone, Default)]
struct Capture(Points);

impl PushMetricExporter for Capture {
    fn export(
        &self,
        metrics: &ResourceMetrics,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let mut out = self.0.lock().unwrap();
        out.clear();
        for scope in metrics.scope_metrics() {
            for m in scope.metrics() {
                if let AggregatedMetrics::U64(MetricData::Sum(sum)) = m.data() {
                    for p in sum.data_points() {
                        let attrs = p
                            .attributes()
                            .map(|kv| (kv.key.to_string(), kv.value.to_string()))
                            .collect();
                        out.push((m.name().to_owned(), m.unit().to_owned(), attrs, p.value()));
                    }
                }
            }
        }
        std::future::ready(Ok(()))
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
        Ok(())
    }

    fn temporality(&self) -> Temporality {
        Temporality::Cumulative
    }
}

async fn whoami(caller: Caller) -> String {
    caller.subject
}

#[tokio::test]
async fn refused_credentials_are_counted_by_route_and_reason() {
    let capture = Capture::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(capture.clone()).build())
        .build();
    opentelemetry::global::set_meter_provider(provider.clone());

    let tokens = Tokens::load(Some("the-admin-token"), None).unwrap();
    let router = OpenApiRouter::new()
        .route("/v1/things/{id}", get(whoami))
        .layer(axum::Extension(tokens));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(imagelib_platform::service::serve(
        listener,
        vec![Service {
            name: "test",
            router,
            readiness: Readiness::new(),
            workers: vec![],
        }],
        HttpOptions::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    let http = reqwest::Client::new();
    let get = |auth: Option<&'static str>| {
        let mut req = http.get(format!("http://{addr}/v1/things/7"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.send()
    };

    let ok = get(Some("Bearer the-admin-token")).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "admin");
    for auth in [
        None,
        Some("Bearer wrong-1"),
        Some("Bearer wrong-2"),
        Some("Basic YTpi"),
    ] {
        let res = get(auth).await.unwrap();
        assert_eq!(res.status(), 401, "{auth:?}");
        assert_eq!(
            res.headers()["www-authenticate"],
            "Bearer realm=\"imagelib\""
        );
        assert_eq!(res.headers()["content-type"], "application/problem+json");
    }

    provider.force_flush().unwrap();
    let points = capture.0.lock().unwrap().clone();
    let failures: Vec<_> = points
        .iter()
        .filter(|(name, ..)| name == "imagelib.auth.failures")
        .collect();
    let count = |reason: &str| {
        failures
            .iter()
            .filter(|(_, _, attrs, _)| {
                attrs.contains(&("reason".into(), reason.into()))
                    && attrs.contains(&("http.route".into(), "/v1/things/{id}".into()))
            })
            .map(|(.., v)| *v)
            .sum::<u64>()
    };
    assert_eq!(count("unknown_token"), 2, "{points:?}");
    assert_eq!(count("malformed"), 1, "{points:?}");
    assert_eq!(
        failures.iter().map(|(.., v)| *v).sum::<u64>(),
        3,
        "a missing token is not a failure: {points:?}"
    );
    assert!(failures.iter().all(|(_, unit, ..)| unit == "{failure}"));
    // Nothing but the route and the reason: no token, no hash, no address as an attribute.
    for (_, _, attrs, _) in &failures {
        let keys: Vec<&str> = attrs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys.len(), 2, "{attrs:?}");
        assert!(
            attrs
                .iter()
                .all(|(_, v)| !v.contains("wrong") && !v.contains("YTpi"))
        );
    }
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
