//! `POST /v1/webhooks/{registry_id}`: registry notifications become scoped sync requests
//! and, for a registry that reports pulls, pull counts ([`crate::pulls`]).
//!
//! A notification authenticates with the registry's webhook secret as
//! `Authorization: Bearer <secret>` (distribution's `headers`, Harbor's "auth header"; a
//! bare `Authorization: <secret>` is accepted too). Docker Hub cannot send a header: a
//! `dockerhub` registry's notifications carry the secret as `?token=<secret>` instead (the
//! query is not part of the request's logged `url.path`), which no other type accepts, so a
//! secret in a URL is never a habit. Unknown and removed registries and wrong secrets get
//! the same 401, so the endpoint tells nothing to a prober.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use imagelib_events::model::{RegistryType, SyncReason};
use imagelib_platform::Problem;
use imagelib_platform::auth::{Caller, Role};
use imagelib_platform::problem::ApiPath;
use secrecy::ExposeSecret;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::Registries;
use crate::domain::webhook;
use crate::pulls::{self, PullCounter};

/// When a notification refused for a pull backlog may be delivered again.
const BACKLOG_RETRY_AFTER_SECS: &str = "30";

pub fn router() -> OpenApiRouter<Arc<Registries>> {
    Sender::default().zero("unauthorized");
    OpenApiRouter::new()
        .routes(routes!(receive))
        .routes(routes!(webhook_settings))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Received {
    /// Repositories a sync was requested for.
    repositories: Vec<String>,
    /// Manifest pulls counted (0 unless the registry reports pulls).
    pulls: usize,
}

fn unauthorized() -> Problem {
    Problem::unauthorized(
        "send the registry's webhook secret as `Authorization: Bearer <secret>` (Docker Hub: the URL from `GET /v1/registries/{id}/webhook`, with `?token=`)",
    )
}

/// Receive a registry notification (CNCF distribution envelope, Azure Container Registry
/// event, Harbor Default or CloudEvents payload, Docker Hub push). Pushes and deletes request a scan of their repository; manifest
/// pulls are counted when the registry reports pulls (and accepted and ignored when it
/// does not). A `503` with `Retry-After` asks the registry to deliver again later (pull
/// counts waiting for the event stream).
#[utoipa::path(post, path = "/v1/webhooks/{registry_id}", tag = "webhooks", request_body = Object,
    params(("registry_id" = String, Path, description = "registry id")),
    responses((status = 202, body = Received), (status = 401, body = Problem), (status = 400, body = Problem),
        (status = 503, body = Problem)))]
#[tracing::instrument(skip_all, fields(registry.id = %registry_id))]
async fn receive(
    State(app): State<Arc<Registries>>,
    axum::Extension(counter): axum::Extension<Arc<PullCounter>>,
    headers: HeaderMap,
    ApiPath(registry_id): ApiPath<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    body: axum::body::Bytes,
) -> Response {
    let mut sender = Sender::default();
    // Docker Hub's secret: `token` in the query string.
    let token = query.and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
    });
    let result = accept(
        &app,
        &counter,
        &headers,
        token.as_deref(),
        &registry_id,
        &body,
        &mut sender,
    )
    .await;
    let outcome = match &result {
        Ok(_) => "accepted",
        Err(p) if p.status == 401 => "unauthorized",
        Err(p) if p.status < 500 => "rejected",
        Err(_) => "failed",
    };
    sender.record(outcome);
    match result {
        Ok(ok) => ok.into_response(),
        Err(p) if p.code.as_deref() == Some("pull-backlog") => {
            let mut res = p.into_response();
            res.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(BACKLOG_RETRY_AFTER_SECS),
            );
            res
        }
        Err(p) => p.into_response(),
    }
}

/// What is known of a delivery's sender once it authenticated: the registry type and
/// the payload format. Before that, nothing (an unauthenticated body is not looked at).
#[derive(Debug, Default)]
struct Sender {
    registry_type: Option<String>,
    format: Option<&'static str>,
}

impl Sender {
    /// `imagelib.webhook.deliveries`, recorded by the route that received it.
    fn record(&self, outcome: &'static str) {
        self.add(1, outcome);
    }

    /// Starts the series of `outcome` at zero when the route is built, so "no delivery"
    /// is a value a dashboard can read rather than a missing series (OpenTelemetry
    /// exports a series only once something was recorded on it). Built with no sender
    /// known, the series is the one every refused delivery (registry type and format
    /// `unknown`) counts on. Adding zero counts nothing.
    fn zero(&self, outcome: &'static str) {
        self.add(0, outcome);
    }

    fn add(&self, n: u64, outcome: &'static str) {
        static C: std::sync::OnceLock<opentelemetry::metrics::Counter<u64>> =
            std::sync::OnceLock::new();
        let counter = C.get_or_init(|| {
            imagelib_platform::telemetry::meter()
                .u64_counter("imagelib.webhook.deliveries")
                .with_unit("{delivery}")
                .with_description(
                    "Registry notifications received, by registry type, payload format and outcome",
                )
                .build()
        });
        counter.add(
            n,
            &[
                opentelemetry::KeyValue::new(
                    "imagelib.registry.type",
                    self.registry_type
                        .clone()
                        .unwrap_or_else(|| "unknown".into()),
                ),
                opentelemetry::KeyValue::new("format", self.format.unwrap_or("unknown")),
                opentelemetry::KeyValue::new("outcome", outcome),
            ],
        );
    }
}

/// The notification format, as [`webhook::repositories`] tells them apart.
fn format_of(headers: &HeaderMap, body: &[u8]) -> &'static str {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return "unknown";
    };
    if value.get("events").is_some() {
        "distribution"
    } else if value.get("action").is_some() && value.get("target").is_some() {
        "acr"
    } else if value.get("push_data").is_some() {
        "dockerhub"
    } else if value.get("specversion").is_some() || headers.contains_key("ce-type") {
        "cloudevents"
    } else if value.get("type").is_some() {
        "harbor"
    } else {
        "unknown"
    }
}

async fn accept(
    app: &Registries,
    counter: &PullCounter,
    headers: &HeaderMap,
    query_token: Option<&str>,
    registry_id: &str,
    body: &[u8],
    sender: &mut Sender,
) -> Result<(StatusCode, axum::Json<Received>), Problem> {
    let id = registry_id.parse().map_err(|_| unauthorized())?;
    let registry = app.live(id).await.map_err(|_| unauthorized())?;
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim().to_owned());
    let presented = match (from_header, query_token) {
        (Some(h), _) => h,
        (None, Some(t)) if registry.registry_type == RegistryType::Dockerhub => t.to_owned(),
        _ => return Err(unauthorized()),
    };
    // A secret that cannot be opened (lost master key) is logged and marked by the app;
    // the sender only learns that it was not let in.
    let secret = app
        .webhook_secret(&registry)
        .await
        .map_err(|_| unauthorized())?
        .ok_or_else(unauthorized)?;
    if !imagelib_secrets::constant_time_eq(presented.as_bytes(), secret.expose_secret().as_bytes())
    {
        return Err(unauthorized());
    }
    sender.registry_type = serde_json::to_value(registry.registry_type)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned));
    sender.format = Some(format_of(headers, body));
    let bad = |e: webhook::WebhookError| {
        Problem::bad_request(e.to_string()).with_code("bad-notification")
    };
    let notification = webhook::parse(headers, body).map_err(bad)?;
    for reason in &notification.not_pulls {
        pulls::received(1, reason);
    }
    // Pulls are checked before anything happens, so a bad one refuses the whole
    // notification; a registry that does not report them has them ignored, whatever
    // they look like.
    let pulled = if registry.report_pulls {
        notification.pulls.map_err(bad)?
    } else {
        let n = notification.pulls.as_ref().map_or(1, Vec::len);
        if n > 0 {
            pulls::received(n as u64, "not_reported");
        }
        Vec::new()
    };
    let repos = notification.repositories;
    let caller = Caller {
        subject: format!("webhook:{id}"),
        role: Role::Viewer,
        teams: vec![],
        authenticated: true,
    };
    let tp = super::traceparent(headers);
    for repo in &repos {
        app.request_sync(&caller, id, Some(repo.clone()), SyncReason::Webhook, tp)
            .await?;
    }
    // Counted last: a notification refused after its scans were requested is delivered
    // again and asks for them twice (harmless), never counts its pulls twice.
    counter.record(id, &pulled).map_err(|e| {
        let mut p = Problem::unavailable(e.to_string()).with_code("pull-backlog");
        p.title = "Pull counts backlog".into();
        p
    })?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(Received {
            repositories: repos.iter().map(|r| r.to_string()).collect(),
            pulls: pulled.len(),
        }),
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookSettings {
    /// The path notifications are posted to. For a `dockerhub` registry, which cannot send
    /// a header, it carries the secret as `?token=<secret>`: give Hub this URL as is.
    url: String,
    /// The value to send as `Authorization: Bearer <secret>`.
    secret: String,
}

/// The webhook URL and secret to configure in the registry (admins only).
#[utoipa::path(get, path = "/v1/registries/{registry_id}/webhook", tag = "webhooks",
    params(("registry_id" = String, Path, description = "registry id")),
    responses((status = 200, body = WebhookSettings), (status = 403, body = Problem), (status = 404, body = Problem)))]
#[tracing::instrument(skip_all, fields(registry.id = %registry_id))]
async fn webhook_settings(
    State(app): State<Arc<Registries>>,
    caller: Caller,
    ApiPath(registry_id): ApiPath<String>,
) -> Result<axum::Json<WebhookSettings>, Problem> {
    caller.require(Role::Admin)?;
    let id = registry_id.parse().map_err(|_| {
        Problem::bad_request(format!("`{registry_id}` is not a registry id")).with_code("bad-path")
    })?;
    let r = app.live(id).await?;
    let secret = app
        .webhook_secret(&r)
        .await?
        .ok_or_else(|| Problem::not_found("this registry has no webhook secret"))?;
    let url = if r.registry_type == RegistryType::Dockerhub {
        let token: String =
            url::form_urlencoded::byte_serialize(secret.expose_secret().as_bytes()).collect();
        format!("/v1/webhooks/{id}?token={token}")
    } else {
        format!("/v1/webhooks/{id}")
    };
    Ok(axum::Json(WebhookSettings {
        url,
        secret: secret.expose_secret().to_owned(),
    }))
}
