//! The HTTP shell around every service's routes: `/healthz`, `/readyz`, `/openapi.json`,
//! problem-details fallbacks, body limits, timeouts, panics as 500 problems, and request
//! tracing.

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::problem::Problem;
use crate::service::CombinedReadiness;

#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub title: String,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            max_body_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            title: "imagelib".into(),
        }
    }
}

#[derive(Clone)]
struct Shell {
    readiness: CombinedReadiness,
    openapi: std::sync::Arc<serde_json::Value>,
}

/// Combine service routers into one application.
pub fn app(
    routers: Vec<OpenApiRouter>,
    readiness: CombinedReadiness,
    options: HttpOptions,
) -> Router {
    let mut merged = OpenApiRouter::new();
    for r in routers {
        merged = merged.merge(r);
    }
    let (router, mut api): (Router, OpenApi) = merged.split_for_parts();
    api.info.title = options.title.clone();
    api.info.version = env!("CARGO_PKG_VERSION").into();
    let mut openapi = serde_json::to_value(&api).unwrap_or_default();
    declare_bearer(&mut openapi);
    let shell = Shell {
        readiness,
        openapi: std::sync::Arc::new(openapi),
    };
    let infra = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi_json))
        .with_state(shell);
    router
        .merge(infra)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(options.max_body_bytes))
        .layer(CatchPanicLayer::custom(|_| {
            Problem::internal(&"a handler panicked").into_response()
        }))
        .layer(axum::middleware::map_response(trace_response))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            options.request_timeout,
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(on_response),
        )
}

/// Routes under `/v1/` that do not take the bearer token: a registry's notifications
/// authenticate with that registry's own webhook secret.
const WITHOUT_BEARER: &[&str] = &["/v1/webhooks/"];

/// Declares the bearer scheme every `/v1` operation needs (RFC 6750 tokens from
/// `IMAGELIB_TOKENS`), so generated clients send `Authorization: Bearer`.
fn declare_bearer(doc: &mut serde_json::Value) {
    let Some(obj) = doc.as_object_mut() else {
        return;
    };
    let components = obj
        .entry("components")
        .or_insert_with(|| json!({}))
        .as_object_mut();
    if let Some(components) = components {
        let schemes = components
            .entry("securitySchemes")
            .or_insert_with(|| json!({}));
        if let Some(schemes) = schemes.as_object_mut() {
            schemes.insert(
                "bearer".into(),
                json!({
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API token (`IMAGELIB_TOKENS`); reads work without one only when `IMAGELIB_ANONYMOUS_READ` is on.",
                }),
            );
        }
    }
    let Some(paths) = obj.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        if !path.starts_with("/v1/") || WITHOUT_BEARER.iter().any(|p| path.starts_with(p)) {
            continue;
        }
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in item.iter_mut() {
            let is_operation = matches!(
                method.as_str(),
                "get" | "put" | "post" | "delete" | "options" | "head" | "patch" | "trace"
            );
            if let (true, Some(op)) = (is_operation, op.as_object_mut()) {
                op.insert("security".into(), json!([{"bearer": []}]));
            }
        }
    }
}

/// The server span of a request: OpenTelemetry HTTP semantic conventions, continuing the
/// caller's trace when it sent a `traceparent`.
fn request_span(req: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| req.uri().path().to_owned());
    let span = tracing::info_span!(
        "request",
        otel.name = %format!("{} {route}", req.method()),
        otel.kind = "server",
        http.request.method = %req.method(),
        http.route = %route,
        url.path = %req.uri().path(),
        http.response.status_code = tracing::field::Empty,
    );
    if let Some(tp) = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<imagelib_events::TraceParent>().ok())
    {
        imagelib_events::trace::set_parent(&span, &tp);
    }
    span
}

/// Tells the caller which trace its request joined (`traceresponse`, W3C Trace Context
/// level 2), so a trace can be looked up from any response. Runs inside the request span;
/// absent when tracing is not exported.
async fn trace_response(mut res: Response) -> Response {
    if let Some(tp) = imagelib_events::trace::current()
        && let Ok(v) = axum::http::HeaderValue::from_str(&tp.to_string())
    {
        res.headers_mut().insert("traceresponse", v);
    }
    res
}

fn on_response(
    res: &axum::http::Response<axum::body::Body>,
    latency: Duration,
    span: &tracing::Span,
) {
    span.record("http.response.status_code", res.status().as_u16());
    static HISTOGRAM: std::sync::OnceLock<opentelemetry::metrics::Histogram<f64>> =
        std::sync::OnceLock::new();
    let h = HISTOGRAM.get_or_init(|| {
        crate::telemetry::meter()
            .f64_histogram("http.server.request.duration")
            .with_unit("s")
            .with_description("Duration of HTTP server requests")
            // The semantic conventions' advice: the SDK's default buckets are for ms.
            .with_boundaries(vec![
                0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
            ])
            .build()
    });
    h.record(
        latency.as_secs_f64(),
        &[opentelemetry::KeyValue::new(
            "http.response.status_code",
            i64::from(res.status().as_u16()),
        )],
    );
}

async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn readyz(State(shell): State<Shell>) -> Response {
    let checks = shell.readiness.report();
    // What works but is short of what it should have (a NATS replica down), by check.
    let degraded: serde_json::Map<String, serde_json::Value> = checks
        .iter()
        .filter(|(_, c)| c.degraded)
        .map(|(k, c)| (k.clone(), json!(c.detail.clone().unwrap_or_default())))
        .collect();
    let mut body = if shell.readiness.is_ready() {
        json!({"status": "ready", "checks": checks})
    } else {
        json!({"status": "not_ready", "checks": checks})
    };
    if !degraded.is_empty() {
        body["degraded"] = serde_json::Value::Object(degraded);
    }
    if shell.readiness.is_ready() {
        axum::Json(body).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
    }
}

async fn openapi_json(State(shell): State<Shell>) -> Response {
    let mut doc = (*shell.openapi).clone();
    // utoipa emits 3.1.0; keep the document self-describing.
    if let Some(obj) = doc.as_object_mut() {
        obj.entry("openapi").or_insert(json!("3.1.0"));
    }
    axum::Json(doc).into_response()
}

async fn not_found(uri: axum::http::Uri) -> Problem {
    Problem::not_found(format!("no route for `{}`", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        format!("`{method}` is not allowed on `{}`", uri.path()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_v1_operation_but_the_webhook_declares_the_bearer_scheme() {
        let mut doc = json!({
            "openapi": "3.1.0",
            "paths": {
                "/v1/images": {"get": {"responses": {}}, "parameters": []},
                "/v1/registries/{id}": {"get": {}, "patch": {}},
                "/v1/webhooks/{registry_id}": {"post": {}},
                "/healthz": {"get": {}}
            },
            "components": {"schemas": {"Problem": {}}}
        });
        declare_bearer(&mut doc);
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["type"],
            "http"
        );
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        assert!(doc["components"]["schemas"]["Problem"].is_object());
        let bearer = json!([{"bearer": []}]);
        assert_eq!(doc["paths"]["/v1/images"]["get"]["security"], bearer);
        assert_eq!(
            doc["paths"]["/v1/registries/{id}"]["patch"]["security"],
            bearer
        );
        assert_eq!(doc["paths"]["/v1/images"]["parameters"], json!([]));
        assert!(doc["paths"]["/v1/webhooks/{registry_id}"]["post"]["security"].is_null());
        assert!(doc["paths"]["/healthz"]["get"]["security"].is_null());
    }

    #[test]
    fn a_document_without_components_gets_them() {
        let mut doc = json!({"paths": {"/v1/stats": {"get": {}}}});
        declare_bearer(&mut doc);
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        assert_eq!(
            doc["paths"]["/v1/stats"]["get"]["security"][0]["bearer"],
            json!([])
        );
    }
}
