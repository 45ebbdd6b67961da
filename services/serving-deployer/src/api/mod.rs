//! The HTTP API (DESIGN section 4): deployments and Postgres provisioning.
//!
//! A deployment's `env` holds what its workload is configured with — often an API key or a
//! connection string — so its values are shown only to the roles that may deploy
//! (`deployer`, `admin`). Everyone else who sees the deployment sees the variable names
//! with every value replaced by [`REDACTED`].
//!
//! The deploy gate answers in problems too: `403` `policy-violation` carries the verdict's
//! `reasons` and `findings` as extension members (RFC 9457 §3.2) so a client can act on
//! each one; `409` `policy-pending` says the image has no verdict yet; `409` `tag-mutated`
//! says the digest came into an immutable tag by a re-push and names both digests, the
//! command that approves the new one and the reference that keeps the old one.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use imagelib_events::model::{ManifestRef, WorkloadKind};
use imagelib_events::{DeploymentId, TraceParent};
use imagelib_platform::Problem;
use imagelib_platform::auth::{Caller, Role, Tokens};
use imagelib_platform::problem::{ApiJson, ApiPath, ApiQuery};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::{CommandError, DeployRequest, Deployer, MutationRefusal, PolicyRefusal};
use crate::store::{DeploymentFlag, DeploymentRow, HistoryEntry, PolicyViolation};

pub fn router(app: Arc<Deployer>, tokens: Tokens) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(list_deployments, create_deployment))
        .routes(routes!(get_deployment, delete_deployment))
        .routes(routes!(provision_postgres))
        .routes(routes!(image_catalog))
        .with_state(app)
        .layer(axum::Extension(tokens))
}

fn traceparent(headers: &HeaderMap) -> Option<TraceParent> {
    imagelib_events::trace::current()
        .or_else(|| {
            headers
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
        })
        .or_else(|| Some(TraceParent::new_root()))
}

impl From<CommandError> for Problem {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Invalid { pointer, message } => Problem::validation(pointer, message),
            CommandError::NotFound(m) => Problem::not_found(m),
            CommandError::Refused(m) => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "refused", m)
            }
            CommandError::Forbidden(m) => Problem::forbidden(m).with_code("not-approved"),
            CommandError::Conflict(m) => Problem::conflict(m),
            CommandError::PolicyViolation(r) => PolicyProblem::from(*r).problem,
            CommandError::PolicyPending(m) => Problem::conflict(m).with_code("policy-pending"),
            CommandError::TagMutated(r) => MutationProblem::from(*r).problem,
            CommandError::Unavailable(m) => {
                tracing::warn!(error = %m, "dependency unavailable");
                Problem::unavailable(m)
            }
            CommandError::Store(e) => Problem::internal(&e),
        }
    }
}

/// A `403` refusal by an `enforce` trust policy: a problem with the verdict's reasons.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct PolicyProblem {
    #[serde(flatten)]
    pub problem: Problem,
    /// Each reason once: `unsigned`, `signature_invalid`, `signer_not_trusted`,
    /// `severity_above_limit`, `cve_not_allowed`, `no_sbom`, `no_vulnerability_report`.
    #[schema(value_type = Vec<String>)]
    pub reasons: Vec<imagelib_events::model::PolicyReason>,
    /// Each reason with what the scanner saw: `{"reason": …, "detail": …}`.
    #[schema(value_type = Vec<Object>)]
    pub findings: Vec<imagelib_events::model::PolicyFinding>,
    /// The rule whose trust policy refused the image.
    pub policy: String,
    /// The digest the tag resolved to.
    pub digest: String,
}

impl From<PolicyRefusal> for PolicyProblem {
    fn from(r: PolicyRefusal) -> Self {
        PolicyProblem {
            problem: Problem::forbidden(r.detail()).with_code("policy-violation"),
            reasons: r.reasons,
            findings: r.findings,
            policy: r.policy,
            digest: r.digest,
        }
    }
}

impl IntoResponse for PolicyProblem {
    fn into_response(self) -> Response {
        let mut res = (StatusCode::FORBIDDEN, axum::Json(self)).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(imagelib_platform::problem::PROBLEM_CONTENT_TYPE),
        );
        res
    }
}

/// A `409` refusal of a digest that came into an immutable tag by a re-push.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct MutationProblem {
    #[serde(flatten)]
    pub problem: Problem,
    /// `<registry-id>/<repository>:<tag>`
    pub image: String,
    pub tag: String,
    /// What the tag pointed at before the mutation.
    pub old_digest: String,
    /// What it points at now: the digest refused.
    pub new_digest: String,
    /// `scan`, `webhook`, `deploy` or `sweep`.
    pub found_by: String,
    pub seen_at: Option<DateTime<Utc>>,
    /// The CLI command a curator runs to approve the new digest.
    pub approve_command: String,
    /// The same as a `curl` request.
    pub approve_curl: String,
    /// The image pinned to the old digest, which deploys without an approval.
    pub pin_old: String,
}

impl From<MutationRefusal> for MutationProblem {
    fn from(r: MutationRefusal) -> Self {
        MutationProblem {
            problem: Problem::conflict(r.detail()).with_code("tag-mutated"),
            approve_command: r.approve_command(),
            approve_curl: r.approve_curl(),
            pin_old: r.pin_old(),
            image: r.image,
            tag: r.tag,
            old_digest: r.old_digest,
            new_digest: r.new_digest,
            found_by: r.found_by,
            seen_at: r.seen_at,
        }
    }
}

impl IntoResponse for MutationProblem {
    fn into_response(self) -> Response {
        let mut res = (StatusCode::CONFLICT, axum::Json(self)).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(imagelib_platform::problem::PROBLEM_CONTENT_TYPE),
        );
        res
    }
}

/// A deployment, its status and history.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeploymentView {
    #[schema(value_type = String, format = Uuid)]
    pub id: DeploymentId,
    pub name: String,
    pub namespace: String,
    /// `inference_service` or `postgres_cluster`.
    pub workload: String,
    /// `gitops` or `kubernetes`.
    pub target: String,
    /// `<registry-id>/<repository>:<tag>`
    pub image: String,
    /// The digest the manifests pin.
    pub digest: String,
    pub replicas: u32,
    #[schema(value_type = Object)]
    pub resources: imagelib_events::model::Resources,
    /// The workload's environment variables; the values are `"***"` unless the caller is a
    /// `deployer` or an `admin`.
    pub env: std::collections::BTreeMap<String, String>,
    /// `requested`, `rendered`, `applied`, `failed` or `deleted`.
    pub state: String,
    pub reason: Option<String>,
    #[schema(value_type = Vec<Object>)]
    pub manifests: Vec<ManifestRef>,
    /// The git commit (gitops) or resource version (kubernetes) of the last apply.
    pub revision: Option<String>,
    pub history: Vec<HistoryEntry>,
    /// Trust policy violations recorded on it (the most recent 100, oldest first): at deploy
    /// time under an `audit` policy, or later when a new verdict made its running image fail.
    pub policy_violations: Vec<PolicyViolation>,
    /// Conditions worth a look, read from the view (never an event): `tag_mutated` when
    /// the deployment pins a digest its tag was re-pushed away from. It keeps running.
    pub flags: Vec<DeploymentFlag>,
    /// The image's registry was removed: this deployment can no longer be updated.
    pub registry_removed: bool,
    pub requested_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a caller without the `deployer` role sees instead of an `env` value.
pub const REDACTED: &str = "***";

impl DeploymentView {
    /// The deployment as `caller` may see it: `env` values only for deployers and admins.
    pub fn for_caller(row: DeploymentRow, caller: &Caller) -> Self {
        let mut view = Self::unredacted(row);
        if !caller.role.allows(Role::Deployer) {
            for value in view.env.values_mut() {
                REDACTED.clone_into(value);
            }
        }
        view
    }
}

impl DeploymentView {
    /// Every value in the clear; only [`DeploymentView::for_caller`] decides who gets it.
    fn unredacted(r: DeploymentRow) -> Self {
        let workload = match r.request.workload {
            WorkloadKind::InferenceService => "inference_service",
            WorkloadKind::PostgresCluster => "postgres_cluster",
        };
        let target = match r.request.target {
            imagelib_events::model::DeploymentTarget::Gitops => "gitops",
            imagelib_events::model::DeploymentTarget::Kubernetes => "kubernetes",
        };
        DeploymentView {
            id: r.id,
            name: r.name,
            namespace: r.namespace,
            workload: workload.into(),
            target: target.into(),
            image: r.request.image.to_string(),
            digest: r.request.digest.to_string(),
            replicas: r.request.replicas,
            resources: r.request.resources,
            env: r.request.env,
            state: r.state,
            reason: r.reason,
            manifests: r.manifests,
            revision: r.revision,
            history: r.history,
            policy_violations: r.policy_violations,
            flags: r.flags,
            registry_removed: r.registry_removed,
            requested_by: r.requested_by,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

async fn deploy(
    app: &Deployer,
    caller: &Caller,
    headers: &HeaderMap,
    req: DeployRequest,
    workload: WorkloadKind,
) -> Result<Response, Problem> {
    caller.require(Role::Deployer)?;
    let (row, new) = match app
        .deploy(caller, req, workload, traceparent(headers))
        .await
    {
        Ok(done) => done,
        Err(CommandError::PolicyViolation(refusal)) => {
            return Ok(PolicyProblem::from(*refusal).into_response());
        }
        Err(CommandError::TagMutated(refusal)) => {
            return Ok(MutationProblem::from(*refusal).into_response());
        }
        Err(e) => return Err(e.into()),
    };
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let location = format!("/v1/deployments/{}", row.id);
    Ok((
        status,
        [(header::LOCATION, location)],
        axum::Json(DeploymentView::for_caller(row, caller)),
    )
        .into_response())
}

/// Deploy a model image as a KServe InferenceService, pinned by digest.
#[utoipa::path(post, path = "/v1/deployments", tag = "deployments", request_body = DeployRequest,
    responses((status = 201, body = DeploymentView), (status = 200, body = DeploymentView, description = "the same spec was already deployed"),
        (status = 403, body = PolicyProblem, description = "`policy-violation`: the image fails an enforce trust policy (reasons and findings); `not-approved`: not approved while governance is on (no reasons)"),
        (status = 404, body = Problem),
        (status = 409, body = MutationProblem, description = "`tag-mutated`: the digest came into an immutable tag by a re-push and is not approved (both digests, how to approve, how to keep the old one); `policy-pending`: an enforce trust policy covers the image but it is not evaluated yet; `conflict`"),
        (status = 422, body = Problem)))]
#[tracing::instrument(skip_all)]
async fn create_deployment(
    State(app): State<Arc<Deployer>>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(req): ApiJson<DeployRequest>,
) -> Result<Response, Problem> {
    deploy(&app, &caller, &headers, req, WorkloadKind::InferenceService).await
}

/// Provision PostgreSQL from a database image: a CloudNativePG Cluster, pinned by digest.
#[utoipa::path(post, path = "/v1/provisioning/postgres", tag = "provisioning", request_body = DeployRequest,
    responses((status = 201, body = DeploymentView),
        (status = 403, body = PolicyProblem, description = "`policy-violation`: the image fails an enforce trust policy; `not-approved`"),
        (status = 404, body = Problem),
        (status = 409, body = MutationProblem, description = "`tag-mutated`: the digest came into an immutable tag by a re-push and is not approved; `policy-pending`: not evaluated yet under an enforce trust policy; `conflict`"),
        (status = 422, body = Problem)))]
#[tracing::instrument(skip_all)]
async fn provision_postgres(
    State(app): State<Arc<Deployer>>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(req): ApiJson<DeployRequest>,
) -> Result<Response, Problem> {
    deploy(&app, &caller, &headers, req, WorkloadKind::PostgresCluster).await
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// 1 to 500 (default 100).
    limit: Option<u32>,
    cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeploymentPage {
    items: Vec<DeploymentView>,
    next_cursor: Option<String>,
}

/// Deployments of the registries the caller sees.
#[utoipa::path(get, path = "/v1/deployments", tag = "deployments", params(ListQuery),
    responses((status = 200, body = DeploymentPage), (status = 422, body = Problem)))]
#[tracing::instrument(skip_all)]
async fn list_deployments(
    State(app): State<Arc<Deployer>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<axum::Json<DeploymentPage>, Problem> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(Problem::validation("limit", "between 1 and 500"));
    }
    let mut after: Option<DeploymentId> = match &q.cursor {
        Some(c) => Some(
            c.parse()
                .map_err(|_| Problem::validation("cursor", "not a cursor from this API"))?,
        ),
        None => None,
    };
    let mut items = Vec::new();
    let mut more = false;
    'pages: loop {
        let rows = app
            .store()
            .deployments(after, 200)
            .await
            .map_err(|e| Problem::internal(&e))?;
        let exhausted = rows.len() < 200;
        for row in rows {
            after = Some(row.id);
            if app.visible(&caller, &row).await.is_err() {
                continue;
            }
            if items.len() == limit as usize {
                more = true;
                break 'pages;
            }
            items.push(DeploymentView::for_caller(row, &caller));
        }
        if exhausted {
            break;
        }
    }
    let next_cursor = more
        .then(|| items.last().map(|d: &DeploymentView| d.id.to_string()))
        .flatten();
    Ok(axum::Json(DeploymentPage { items, next_cursor }))
}

fn parse_id(s: &str) -> Result<DeploymentId, Problem> {
    s.parse().map_err(|_| {
        Problem::bad_request(format!("`{s}` is not a deployment id (a UUID)")).with_code("bad-path")
    })
}

/// One deployment with its status and history.
#[utoipa::path(get, path = "/v1/deployments/{id}", tag = "deployments",
    params(("id" = String, Path, description = "deployment id")),
    responses((status = 200, body = DeploymentView), (status = 404, body = Problem)))]
#[tracing::instrument(skip_all, fields(deployment.id = %id))]
async fn get_deployment(
    State(app): State<Arc<Deployer>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<axum::Json<DeploymentView>, Problem> {
    let id = parse_id(&id)?;
    let row = app
        .store()
        .deployment(id)
        .await
        .map_err(|e| Problem::internal(&e))?
        .ok_or_else(|| Problem::not_found(format!("deployment {id} not found")))?;
    app.visible(&caller, &row).await?;
    Ok(axum::Json(DeploymentView::for_caller(row, &caller)))
}

/// Remove a deployment's manifests from its target.
#[utoipa::path(delete, path = "/v1/deployments/{id}", tag = "deployments",
    params(("id" = String, Path, description = "deployment id")),
    responses((status = 204), (status = 404, body = Problem)))]
#[tracing::instrument(skip_all, fields(deployment.id = %id))]
async fn delete_deployment(
    State(app): State<Arc<Deployer>>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, Problem> {
    caller.require(Role::Deployer)?;
    app.delete(&caller, parse_id(&id)?, traceparent(&headers))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CatalogQuery {
    /// `<registry-id>/<repository>` of a database repository.
    repository: String,
    /// The catalog's name (default: the repository's last path component).
    name: Option<String>,
}

/// A CloudNativePG ClusterImageCatalog: each PostgreSQL major → the newest (approved) digest.
/// JSON by default; YAML with `Accept: application/yaml`.
#[utoipa::path(get, path = "/v1/provisioning/cnpg/image-catalog", tag = "provisioning", params(CatalogQuery),
    responses((status = 200, body = Object), (status = 404, body = Problem), (status = 422, body = Problem)))]
#[tracing::instrument(skip_all)]
async fn image_catalog(
    State(app): State<Arc<Deployer>>,
    caller: Caller,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<CatalogQuery>,
) -> Result<Response, Problem> {
    let m = app
        .image_catalog(&caller, &q.repository, q.name.as_deref())
        .await?;
    let wants_yaml = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("yaml"));
    if wants_yaml {
        Ok(([(header::CONTENT_TYPE, "application/yaml")], m.yaml()).into_response())
    } else {
        Ok(axum::Json(m.object).into_response())
    }
}
