//! `/v1/registries`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use imagelib_events::RegistryId;
use imagelib_events::model::{AuthKind, RegistryType, SyncReason};
use imagelib_platform::Problem;
use imagelib_platform::auth::{Caller, Role};
use imagelib_platform::problem::{ApiJson, ApiPath, ApiQuery};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::IfMatch;
use crate::app::{Registries, ValidationReport, reason_str};
use crate::domain::registry::{RegisterRequest, RotateRequest, UpdateRequest};
use crate::store::{Registry, Status};

pub fn router() -> OpenApiRouter<Arc<Registries>> {
    OpenApiRouter::new()
        .routes(routes!(list_registries, register_registry))
        .routes(routes!(get_registry, update_registry, remove_registry))
        .routes(routes!(rotate_credentials))
        .routes(routes!(validate_registry))
        .routes(routes!(sync_registry))
        .routes(routes!(registry_types))
}

/// What each registry type asks a registering user for (the form's fields per type,
/// the credential kinds it accepts, its default address and settings): the CLI's
/// `imagelib registry types` and the console's Add Registry form read the same.
#[utoipa::path(get, path = "/v1/registry-types", tag = "registries",
    responses((status = 200, body = [crate::domain::profiles::Profile]), (status = 401, body = Problem)))]
#[tracing::instrument(skip_all)]
async fn registry_types(
    _caller: Caller,
) -> axum::Json<&'static [crate::domain::profiles::Profile]> {
    axum::Json(&crate::domain::profiles::PROFILES)
}

/// A registry as the API shows it: never a secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegistryView {
    #[schema(value_type = String, format = Uuid)]
    pub id: RegistryId,
    pub label: String,
    pub url: String,
    #[schema(value_type = String)]
    pub registry_type: RegistryType,
    pub insecure: bool,
    #[schema(value_type = String)]
    pub auth_kind: AuthKind,
    pub visibility: Vec<String>,
    pub has_custom_ca: bool,
    pub scan_interval_secs: Option<u64>,
    pub repositories: Vec<String>,
    /// Hosts besides the registry's whose token realm may receive its credentials.
    pub auth_hosts: Vec<String>,
    /// Whether the registry's pull notifications are counted (`image.pulls_counted`,
    /// aggregated per window); off unless asked for.
    pub report_pulls: bool,
    /// The registry's own forward proxy (`http[s]://host:port`); absent: the scanner's
    /// proxy environment decides.
    pub proxy_url: Option<String>,
    /// Hosts reached directly despite `proxy_url`.
    pub no_proxy: Vec<String>,
    /// `gcr` only: the Artifact Registry repository listed through the Artifact Registry
    /// API (`projects/{project}/locations/{location}/repositories/{repository}`); absent:
    /// the location the URL names, if any.
    pub artifact_registry: Option<String>,
    /// `pending`, `validated`, `validation_failed`, or `credentials_unavailable` (the
    /// sealed credentials cannot be opened with the master key file at hand: enter them
    /// again with `PUT …/credentials`, or restore the key file).
    pub status: Status,
    /// Why the last validation failed (`dns`, `tls`, `connect`, `timeout`, `not_a_registry`,
    /// `unauthorized`, `forbidden`, `rate_limited`, `blocked`, `realm_not_allowed`,
    /// `host_not_allowed`), or `credentials_unavailable`.
    pub status_reason: Option<String>,
    pub status_detail: Option<String>,
    pub auth_scheme: Option<String>,
    pub catalog_access: Option<bool>,
    pub validated_at: Option<DateTime<Utc>>,
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Where the registry's notifications go (`Authorization: Bearer <webhook secret>`).
    pub webhook_url: String,
    /// The aggregate version; send it back as `If-Match` to update safely.
    pub version: u64,
    pub last_sync: Option<LastSync>,
}

/// How the registry's last scan went.
#[derive(Debug, Serialize, ToSchema)]
pub struct LastSync {
    /// `running`, `completed`, `partial` or `failed`.
    pub state: String,
    pub at: Option<DateTime<Utc>>,
    /// The counts of a completed scan (`repositories`, `tags_seen`, `added`, `moved`,
    /// `removed`, `requests`, `duration_ms`, `rate_limited`) or a failure's `reason`.
    #[schema(value_type = Option<Object>)]
    pub summary: Option<serde_json::Value>,
    /// The stream sequence of this scan's `sync.started`: a scan answers a sync request
    /// (`POST …/sync` returns its `sequence`) when it started after it.
    pub started_sequence: Option<u64>,
}

impl From<&Registry> for RegistryView {
    fn from(r: &Registry) -> Self {
        RegistryView {
            id: r.id,
            label: r.label.clone(),
            url: r.url.clone(),
            registry_type: r.registry_type,
            insecure: r.insecure,
            auth_kind: r.auth_kind,
            visibility: r.visibility.clone(),
            has_custom_ca: r.ca_pem.is_some(),
            scan_interval_secs: r.scan_interval_secs,
            repositories: r.repositories.clone(),
            auth_hosts: r.auth_hosts.clone(),
            report_pulls: r.report_pulls,
            proxy_url: r.proxy_url.clone(),
            no_proxy: r.no_proxy.clone(),
            artifact_registry: r.artifact_registry.clone(),
            status: r.status,
            status_reason: r.status_reason.clone(),
            status_detail: r.status_detail.clone(),
            auth_scheme: r.auth_scheme.clone(),
            catalog_access: r.catalog_access,
            validated_at: r.validated_at,
            created_by: r.created_by.clone(),
            created_at: r.created_at,
            updated_at: r.updated_at,
            webhook_url: format!("/v1/webhooks/{}", r.id),
            version: r.last_sequence,
            last_sync: r.last_sync_state.as_ref().map(|state| LastSync {
                state: state.clone(),
                at: r.last_sync_at,
                summary: r.last_sync_summary.clone(),
                started_sequence: r.last_sync_started_sequence,
            }),
        }
    }
}

fn with_etag(status: StatusCode, r: &Registry, extra: Option<serde_json::Value>) -> Response {
    let mut body = serde_json::to_value(RegistryView::from(r)).unwrap_or_default();
    if let (Some(extra), Some(obj)) = (extra, body.as_object_mut())
        && let Some(e) = extra.as_object()
    {
        obj.extend(e.clone());
    }
    (
        status,
        [(header::ETAG, format!("\"{}\"", r.last_sequence))],
        axum::Json(body),
    )
        .into_response()
}

fn report_json(report: &ValidationReport) -> serde_json::Value {
    match &report.result {
        Ok(p) => {
            serde_json::json!({"validation": {"ok": true, "auth_scheme": p.auth_scheme, "catalog_access": p.catalog_access}})
        }
        Err(f) => {
            serde_json::json!({"validation": {"ok": false, "reason": reason_str(f.reason), "detail": f.detail}})
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size, 1 to 500 (default 100).
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RegistryPage {
    items: Vec<RegistryView>,
    next_cursor: Option<String>,
}

/// The registries the caller may see.
#[utoipa::path(get, path = "/v1/registries", tag = "registries", params(ListQuery),
    responses((status = 200, body = RegistryPage), (status = 400, body = Problem)))]
#[tracing::instrument(skip_all)]
async fn list_registries(
    State(app): State<Arc<Registries>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<axum::Json<RegistryPage>, Problem> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(Problem::validation("limit", "between 1 and 500"));
    }
    let after: Option<RegistryId> = match &q.cursor {
        Some(c) => Some(
            c.parse()
                .map_err(|_| Problem::validation("cursor", "not a cursor from this API"))?,
        ),
        None => None,
    };
    let mut all: Vec<Registry> = app
        .list()
        .await?
        .into_iter()
        .filter(|r| caller.sees(&r.visibility))
        .collect();
    all.sort_by_key(|r| r.id);
    let items: Vec<Registry> = all
        .into_iter()
        .filter(|r| after.is_none_or(|a| r.id > a))
        .take(limit as usize + 1)
        .collect();
    let more = items.len() > limit as usize;
    let page: Vec<RegistryView> = items
        .iter()
        .take(limit as usize)
        .map(RegistryView::from)
        .collect();
    let next_cursor = more
        .then(|| page.last().map(|r| r.id.to_string()))
        .flatten();
    Ok(axum::Json(RegistryPage {
        items: page,
        next_cursor,
    }))
}

/// Register a registry; it is validated first unless `validate` is false.
#[utoipa::path(post, path = "/v1/registries", tag = "registries", request_body = RegisterRequest,
    responses((status = 201, body = RegistryView), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 422, body = Problem, description = "invalid input, or validation failed with a reason")))]
#[tracing::instrument(skip_all, fields(registry.label))]
async fn register_registry(
    State(app): State<Arc<Registries>>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<Response, Problem> {
    caller.require(Role::Admin)?;
    tracing::Span::current().record("registry.label", req.label.as_deref().unwrap_or_default());
    let (r, report) = app
        .register(&caller, req, super::traceparent(&headers))
        .await?;
    let mut res = with_etag(StatusCode::CREATED, &r, report.as_ref().map(report_json));
    if let Ok(v) = format!("/v1/registries/{}", r.id).parse() {
        res.headers_mut().insert(header::LOCATION, v);
    }
    Ok(res)
}

fn parse_id(s: &str) -> Result<RegistryId, Problem> {
    s.parse().map_err(|_| {
        Problem::bad_request(format!("`{s}` is not a registry id (a UUID)")).with_code("bad-path")
    })
}

async fn visible(app: &Registries, caller: &Caller, id: RegistryId) -> Result<Registry, Problem> {
    let r = app.live(id).await?;
    if !caller.sees(&r.visibility) {
        // Not visible is indistinguishable from not existing.
        return Err(Problem::not_found(format!("registry {id} not found")));
    }
    Ok(r)
}

/// One registry.
#[utoipa::path(get, path = "/v1/registries/{id}", tag = "registries",
    params(("id" = String, Path, description = "registry id")),
    responses((status = 200, body = RegistryView), (status = 404, body = Problem)))]
#[tracing::instrument(skip_all, fields(registry.id = %id))]
async fn get_registry(
    State(app): State<Arc<Registries>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, Problem> {
    let r = visible(&app, &caller, parse_id(&id)?).await?;
    Ok(with_etag(StatusCode::OK, &r, None))
}

/// Relabel, move or reconfigure a registry. `If-Match` with the ETag guards lost updates:
/// `412` (code `precondition-failed`) when it no longer matches, `409` when another change
/// lands while this one is appended.
/// A change of `url`, `insecure`, `registry_type` or a new `auth_hosts` entry needs
/// `credentials` in the same request (`422`, code `credentials-required`, otherwise) and is
/// validated with them before it is saved (`422` with the validation reason).
#[utoipa::path(patch, path = "/v1/registries/{id}", tag = "registries", request_body = UpdateRequest,
    params(("id" = String, Path, description = "registry id"),
        ("If-Match" = Option<String>, Header, description = "the ETag of the registry as read (`*`, or a list of entity tags, compared strongly)")),
    responses((status = 200, body = RegistryView), (status = 400, body = Problem, description = "malformed `If-Match`"),
        (status = 404, body = Problem), (status = 409, body = Problem, description = "another change landed while this one was appended"),
        (status = 412, body = Problem, description = "`If-Match` does not match the registry's ETag (`precondition-failed`)"),
        (status = 422, body = Problem, description = "invalid input, `credentials-required`, or validation failed with a reason")))]
#[tracing::instrument(skip_all, fields(registry.id = %id))]
async fn update_registry(
    State(app): State<Arc<Registries>>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateRequest>,
) -> Result<Response, Problem> {
    caller.require(Role::Admin)?;
    let id = parse_id(&id)?;
    // A stale precondition is a 412; a change that lands between this check and the
    // append is still caught by the stream's expected sequence (409).
    let expected = match IfMatch::parse(&headers)? {
        None => None,
        Some(condition) => {
            let current = app.live(id).await?.last_sequence;
            condition.check(&format!("registry {id}"), current)?;
            Some(current)
        }
    };
    let r = app
        .update(&caller, id, req, expected, super::traceparent(&headers))
        .await?;
    Ok(with_etag(StatusCode::OK, &r, None))
}

/// Remove a registry: scans stop, deployments of its images are refused, its
/// credentials become unrecoverable.
#[utoipa::path(delete, path = "/v1/registries/{id}", tag = "registries",
    params(("id" = String, Path, description = "registry id")),
    responses((status = 204), (status = 404, body = Problem)))]
#[tracing::instrument(skip_all, fields(registry.id = %id))]
async fn remove_registry(
    State(app): State<Arc<Registries>>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, Problem> {
    caller.require(Role::Admin)?;
    app.remove(&caller, parse_id(&id)?, super::traceparent(&headers))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Rotate credentials (validated first unless `validate` is false).
#[utoipa::path(put, path = "/v1/registries/{id}/credentials", tag = "registries", request_body = RotateRequest,
    params(("id" = String, Path, description = "registry id")),
    responses((status = 200, body = RegistryView), (status = 404, body = Problem), (status = 422, body = Problem)))]
#[tracing::instrument(skip_all, fields(registry.id = %id))]
async fn rotate_credentials(
    State(app): State<Arc<Registries>>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<RotateRequest>,
) -> Result<Response, Problem> {
    caller.require(Role::Admin)?;
    let (r, report) = app
        .rotate(&caller, parse_id(&id)?, req, super::traceparent(&headers))
        .await?;
    Ok(with_etag(
        StatusCode::OK,
        &r,
        report.as_ref().map(report_json),
    ))
}

/// Re-check the connection and credentials now; the outcome is recorded either way.
#[utoipa::path(post, path = "/v1/registries/{id}/validate", tag = "registries",
    params(("id" = String, Path, description = "registry id")),
    responses((status = 200, body = RegistryView), (status = 404, body = Problem)))]
#[tracing::instrument(skip_all, fields(registry.id = %id))]
async fn validate_registry(
    State(app): State<Arc<Registries>>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, Problem> {
    caller.require(Role::Admin)?;
    let (r, report) = app
        .revalidate(&caller, parse_id(&id)?, super::traceparent(&headers))
        .await?;
    Ok(with_etag(StatusCode::OK, &r, Some(report_json(&report))))
}

#[derive(Debug, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    /// Only this repository; the whole registry when absent.
    repository: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SyncAccepted {
    /// The stream sequence of the `sync.requested` event.
    sequence: u64,
}

/// Sync now: emits `sync.requested` (reason `manual`).
#[utoipa::path(post, path = "/v1/registries/{id}/sync", tag = "registries", request_body(content = SyncRequest, description = "optional"),
    params(("id" = String, Path, description = "registry id")),
    responses((status = 202, body = SyncAccepted), (status = 404, body = Problem)))]
#[tracing::instrument(skip_all, fields(registry.id = %id))]
async fn sync_registry(
    State(app): State<Arc<Registries>>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, axum::Json<SyncAccepted>), Problem> {
    caller.require(Role::Admin)?;
    let req: SyncRequest = if body.iter().all(u8::is_ascii_whitespace) {
        SyncRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| Problem::validation("/", format!("not a sync request: {e}")))?
    };
    let repository = req
        .repository
        .map(|r| {
            r.parse().map_err(|e: imagelib_events::OciParseError| {
                Problem::validation("/repository", e.to_string())
            })
        })
        .transpose()?;
    let id = parse_id(&id)?;
    visible(&app, &caller, id).await?;
    let sequence = app
        .request_sync(
            &caller,
            id,
            repository,
            SyncReason::Manual,
            super::traceparent(&headers),
        )
        .await?;
    Ok((StatusCode::ACCEPTED, axum::Json(SyncAccepted { sequence })))
}
