//! `/v1/subscriptions` (admins only): create, list, show, remove, the dead-letter list and
//! replays. The secret is never shown again after the `201` that generated it.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use imagelib_events::SubscriptionId;
use imagelib_platform::Problem;
use imagelib_platform::auth::{Caller, Role, Tokens};
use imagelib_platform::problem::{ApiJson, ApiPath, ApiQuery};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::commands::{NewSubscription, SubscriptionError, Subscriptions};
use super::store::{Counts, DeadLetter, Subscription};
use crate::api::IfMatch;

/// The routes, with their own state and the tokens layer (merged into the service's
/// router at startup).
pub fn router(app: Arc<Subscriptions>, tokens: Tokens) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(list_subscriptions, create_subscription))
        .routes(routes!(get_subscription, remove_subscription))
        .routes(routes!(dead_letters))
        .routes(routes!(replay))
        .with_state(app)
        .layer(axum::Extension(tokens))
}

impl From<SubscriptionError> for Problem {
    fn from(e: SubscriptionError) -> Self {
        match e {
            SubscriptionError::Invalid(pointer, message) => Problem::validation(pointer, message),
            SubscriptionError::Blocked(m) => {
                let mut p = Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "blocked", m);
                p.errors.push(imagelib_platform::problem::FieldError {
                    pointer: "/url".into(),
                    detail: "the network guard denies this address".into(),
                });
                p
            }
            SubscriptionError::NotFound(_) => Problem::not_found(e.to_string()),
            SubscriptionError::Conflict(m) => Problem::conflict(m),
            SubscriptionError::Unavailable(m) => {
                tracing::warn!(error = %m, "dependency unavailable");
                Problem::unavailable("a dependency is unavailable; retry shortly")
            }
            SubscriptionError::Store(e) => Problem::internal(&e),
            SubscriptionError::Secrets(e) => Problem::internal(&e),
        }
    }
}

/// Create a subscription.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// Where deliveries are POSTed: `https://…` (`http://` only where the deployment
    /// allows it). No user-info: the URL is stored in the event log in the clear.
    url: String,
    /// CloudEvent type patterns, `*` matching any run of characters: `*`,
    /// `io.imagelib.image.*`, `*.tag_mutated.v1`. Each must match a type of the contract.
    types: Vec<String>,
    /// The signing secret: `whsec_<base64 of 24 to 64 bytes>` (Standard Webhooks) or 32 to
    /// 256 characters. Generated when absent, and returned once in the `201`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    secret: Option<SecretString>,
    #[serde(default)]
    description: String,
}

/// How deliveries to a subscription are going.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryState {
    /// Events waiting to be delivered (retrying ones included).
    pub pending: u64,
    /// Events in the dead-letter list.
    pub dead_letters: u64,
    pub last_delivered_at: Option<DateTime<Utc>>,
    pub last_failed_at: Option<DateTime<Utc>>,
    /// The last failure: `status 503: …`, `timeout`, `connect: …`, `blocked: …`.
    pub last_failure: Option<String>,
}

/// A subscription as the API shows it: never the secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionView {
    #[schema(value_type = String, format = Uuid)]
    pub id: SubscriptionId,
    pub url: String,
    pub types: Vec<String>,
    pub description: String,
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The aggregate version (`ETag`); send it back as `If-Match` to remove safely.
    pub version: u64,
    pub delivery: DeliveryState,
}

impl SubscriptionView {
    fn new(s: &Subscription, counts: Counts) -> Self {
        SubscriptionView {
            id: s.id,
            url: s.url.clone(),
            types: s.types.clone(),
            description: s.description.clone(),
            created_by: s.created_by.clone(),
            created_at: s.created_at,
            version: s.last_sequence,
            delivery: DeliveryState {
                pending: counts.pending,
                dead_letters: counts.dead_letters,
                last_delivered_at: s.last_delivered_at,
                last_failed_at: s.last_failed_at,
                last_failure: s.last_failure.clone(),
            },
        }
    }
}

/// The `201` of a create: the view, and the generated secret (only when it was generated;
/// it is never shown again).
#[derive(Debug, Serialize, ToSchema)]
pub struct Created {
    #[serde(flatten)]
    subscription: SubscriptionView,
    /// The generated signing secret (`whsec_…`): store it now, it is never shown again.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

fn with_etag(status: StatusCode, version: u64, body: impl Serialize) -> Response {
    let mut res = (status, axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{version}\"")) {
        res.headers_mut().insert(header::ETAG, v);
    }
    res
}

fn parse_id(s: &str) -> Result<SubscriptionId, Problem> {
    s.parse().map_err(|_| {
        Problem::bad_request(format!("`{s}` is not a subscription id (a UUID)"))
            .with_code("bad-path")
    })
}

async fn counts_of(app: &Subscriptions, ids: &[SubscriptionId]) -> Result<Vec<Counts>, Problem> {
    let all = app
        .store()
        .counts(Some(ids))
        .await
        .map_err(|e| Problem::internal(&e))?;
    Ok(ids
        .iter()
        .map(|id| {
            all.iter()
                .find(|(i, _)| i == id)
                .map(|(_, c)| *c)
                .unwrap_or_default()
        })
        .collect())
}

/// Subscribe an endpoint to events: `subscription.created` with the secret sealed. The
/// secret is returned here once when it was generated.
#[utoipa::path(post, path = "/v1/subscriptions", tag = "subscriptions", request_body = CreateRequest,
    responses((status = 201, body = Created), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 422, body = Problem, description = "invalid input (`validation`, with the field), or an address the network guard denies (`blocked`)")))]
#[tracing::instrument(skip_all, fields(subscription.id))]
async fn create_subscription(
    State(app): State<Arc<Subscriptions>>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CreateRequest>,
) -> Result<Response, Problem> {
    caller.require(Role::Admin)?;
    let url = app.check_url(&req.url)?;
    let types =
        super::check_types(&req.types).map_err(|(pointer, m)| Problem::validation(pointer, m))?;
    let description = req.description.trim().to_owned();
    if description.chars().count() > 1000 {
        return Err(Problem::validation(
            "/description",
            "at most 1000 characters",
        ));
    }
    let new = NewSubscription {
        url: url.to_string(),
        types,
        description,
        secret: req.secret,
    };
    let (s, secret) = app
        .create(&caller, new, crate::api::traceparent(&headers))
        .await?;
    tracing::Span::current().record("subscription.id", tracing::field::display(s.id));
    tracing::info!(subscription.id = %s.id, url = %s.url, types = ?s.types, "subscription created");
    let body = Created {
        subscription: SubscriptionView::new(&s, Counts::default()),
        secret: secret.map(|s| s.expose_secret().to_owned()),
    };
    let mut res = with_etag(StatusCode::CREATED, s.last_sequence, body);
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/subscriptions/{}", s.id)) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size, 1 to 500 (default 100).
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

fn limit_of(q: &PageQuery) -> Result<u32, Problem> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(Problem::validation("limit", "between 1 and 500"));
    }
    Ok(limit)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionPage {
    items: Vec<SubscriptionView>,
    next_cursor: Option<String>,
}

/// The subscriptions (keyset pages by id).
#[utoipa::path(get, path = "/v1/subscriptions", tag = "subscriptions", params(PageQuery),
    responses((status = 200, body = SubscriptionPage), (status = 400, body = Problem), (status = 403, body = Problem)))]
#[tracing::instrument(skip_all)]
async fn list_subscriptions(
    State(app): State<Arc<Subscriptions>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<axum::Json<SubscriptionPage>, Problem> {
    caller.require(Role::Admin)?;
    let limit = limit_of(&q)?;
    let after = q
        .cursor
        .as_deref()
        .map(|c| {
            c.parse::<SubscriptionId>()
                .map_err(|_| Problem::validation("cursor", "not a cursor from this API"))
        })
        .transpose()?;
    let mut rows = app
        .store()
        .page(after, i64::from(limit) + 1)
        .await
        .map_err(|e| Problem::internal(&e))?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let ids: Vec<SubscriptionId> = rows.iter().map(|s| s.id).collect();
    let counts = counts_of(&app, &ids).await?;
    let items: Vec<SubscriptionView> = rows
        .iter()
        .zip(counts)
        .map(|(s, c)| SubscriptionView::new(s, c))
        .collect();
    let next_cursor = more
        .then(|| items.last().map(|s| s.id.to_string()))
        .flatten();
    Ok(axum::Json(SubscriptionPage { items, next_cursor }))
}

/// One subscription, with how its deliveries are going.
#[utoipa::path(get, path = "/v1/subscriptions/{id}", tag = "subscriptions",
    params(("id" = String, Path, description = "subscription id")),
    responses((status = 200, body = SubscriptionView), (status = 403, body = Problem), (status = 404, body = Problem)))]
#[tracing::instrument(skip_all, fields(subscription.id = %id))]
async fn get_subscription(
    State(app): State<Arc<Subscriptions>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, Problem> {
    caller.require(Role::Admin)?;
    let s = app.live(parse_id(&id)?).await?;
    let counts = counts_of(&app, &[s.id]).await?;
    let c = counts.first().copied().unwrap_or_default();
    Ok(with_etag(
        StatusCode::OK,
        s.last_sequence,
        SubscriptionView::new(&s, c),
    ))
}

/// Remove a subscription: deliveries stop, its queue and dead letters are dropped, its
/// secret becomes unrecoverable. `If-Match` guards against removing a changed one.
#[utoipa::path(delete, path = "/v1/subscriptions/{id}", tag = "subscriptions",
    params(("id" = String, Path, description = "subscription id"),
        ("If-Match" = Option<String>, Header, description = "the subscription's ETag as read")),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 412, body = Problem)))]
#[tracing::instrument(skip_all, fields(subscription.id = %id))]
async fn remove_subscription(
    State(app): State<Arc<Subscriptions>>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, Problem> {
    caller.require(Role::Admin)?;
    let id = parse_id(&id)?;
    let expected = match IfMatch::parse(&headers)? {
        None => None,
        Some(condition) => {
            let current = app.live(id).await?.last_sequence;
            condition.check(&format!("subscription {id}"), current)?;
            Some(current)
        }
    };
    app.remove(&caller, id, expected, crate::api::traceparent(&headers))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterPage {
    items: Vec<DeadLetter>,
    next_cursor: Option<String>,
}

/// The events given up on after the whole retry schedule, newest first (keyset pages).
/// `POST …/replay` over their time range delivers them again.
#[utoipa::path(get, path = "/v1/subscriptions/{id}/dead-letters", tag = "subscriptions",
    params(("id" = String, Path, description = "subscription id"), PageQuery),
    responses((status = 200, body = DeadLetterPage), (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
#[tracing::instrument(skip_all, fields(subscription.id = %id))]
async fn dead_letters(
    State(app): State<Arc<Subscriptions>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<axum::Json<DeadLetterPage>, Problem> {
    caller.require(Role::Admin)?;
    let limit = limit_of(&q)?;
    let before = q
        .cursor
        .as_deref()
        .map(|c| {
            c.parse::<i64>()
                .ok()
                .filter(|c| *c > 0)
                .ok_or_else(|| Problem::validation("cursor", "not a cursor from this API"))
        })
        .transpose()?;
    let s = app.live(parse_id(&id)?).await?;
    let mut items = app
        .store()
        .dead_letters(s.id, before, i64::from(limit) + 1)
        .await
        .map_err(|e| Problem::internal(&e))?;
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    let next_cursor = more
        .then(|| items.last().map(|d| d.id.to_string()))
        .flatten();
    Ok(axum::Json(DeadLetterPage { items, next_cursor }))
}

/// A time range of the stream to deliver again.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// Events appended at or after this time (RFC 3339)…
    from: DateTime<Utc>,
    /// …and before this one (default: now).
    #[serde(default)]
    to: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayAccepted {
    /// The stream sequence of the `subscription.replay_requested` event.
    sequence: u64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

/// Deliver again the subscription's matching events appended in [`from`, `to`):
/// `subscription.replay_requested`, carried out in the background (same `webhook-id` as
/// the first delivery, so a receiver can tell a repeat).
#[utoipa::path(post, path = "/v1/subscriptions/{id}/replay", tag = "subscriptions", request_body = ReplayRequest,
    params(("id" = String, Path, description = "subscription id")),
    responses((status = 202, body = ReplayAccepted), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
#[tracing::instrument(skip_all, fields(subscription.id = %id))]
async fn replay(
    State(app): State<Arc<Subscriptions>>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<ReplayRequest>,
) -> Result<(StatusCode, axum::Json<ReplayAccepted>), Problem> {
    caller.require(Role::Admin)?;
    let id = parse_id(&id)?;
    let to = req.to.unwrap_or_else(Utc::now);
    let sequence = app
        .replay(&caller, id, req.from, to, crate::api::traceparent(&headers))
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(ReplayAccepted {
            sequence,
            from: req.from,
            to,
        }),
    ))
}
