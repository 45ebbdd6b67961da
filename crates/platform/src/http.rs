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
    let openapi = serde_json::to_value(&api).unwrap_or_default();
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
    if shell.readiness.is_ready() {
        axum::Json(json!({"status": "ready", "checks": checks})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "not_ready", "checks": checks})),
        )
            .into_response()
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
