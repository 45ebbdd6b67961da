//! The catalog's HTTP API (DESIGN section 4): the Image and Model Library, repositories,
//! counters, the catalog view of registries, the curator commands, and the audit trail.

pub(crate) mod audit;
pub(crate) mod cache;
pub(crate) mod images;
mod lifecycle;
pub(crate) mod params;
mod registries;
pub(crate) mod repositories;
pub(crate) mod rows;
pub(crate) mod stats;
pub(crate) mod views;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use imagelib_events::TraceParent;
use imagelib_platform::Problem;
use imagelib_platform::auth::{Caller, Tokens};
use sha2::{Digest, Sha256};
use utoipa_axum::router::OpenApiRouter;

use crate::curate::Catalog;

pub use views::{ImagePage, ImageView, RepositoryDetail, RepositoryView};

/// Every route of the service. `serve_registries` adds `GET /v1/registries` and
/// `GET /v1/registries/{id}` (left out in `imagelib serve`, where registry-registry serves
/// those paths).
pub fn router(catalog: Arc<Catalog>, serve_registries: bool) -> OpenApiRouter {
    let tokens: Tokens = catalog.tokens().clone();
    let mut r = OpenApiRouter::new()
        .merge(images::router())
        .merge(repositories::router())
        .merge(stats::router())
        .merge(lifecycle::router())
        .merge(audit::router());
    if serve_registries {
        r = r.merge(registries::router());
    }
    r.with_state(catalog)
        .layer(axum::middleware::from_fn(conditional_get))
        .layer(axum::Extension(tokens))
}

/// `ETag` and `If-None-Match` (RFC 9110 sections 8.8.3 and 13.1.2) on every catalog read.
///
/// The tag is a hash of the representation itself and of the teams the caller sees, not of
/// the stream sequence: it changes exactly when the body does (an upgrade that changes a
/// view with no new event changes it too, an unrelated event does not), and two callers
/// whose visibility differs never share a tag, so a tag seen by one team says nothing about
/// what another sees. A kept page ([`cache`]) carries the tag it was given when read; for
/// the rest the query still runs, and a `304` saves the body, not the work.
async fn conditional_get(req: Request, next: Next) -> Response {
    if req.method() != Method::GET {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let mut probe = parts.clone();
    let res = next.run(Request::from_parts(parts, body)).await;
    if res.status() != StatusCode::OK {
        return res;
    }
    let if_none_match = probe.headers.get(header::IF_NONE_MATCH).cloned();
    let (mut parts, body) = res.into_parts();
    // A kept page comes with its tag, computed once the same way.
    let (etag, body) = match parts.headers.get(header::ETAG).cloned() {
        Some(etag) => (etag, body),
        None => {
            // Only after the handler accepted the caller: a refused token is audited once,
            // by it.
            let Ok(caller) = Caller::from_request_parts(&mut probe, &()).await else {
                return Response::from_parts(parts, body);
            };
            let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
                return Problem::internal(&"a catalog response body could not be read")
                    .into_response();
            };
            // Hex in quotes is always a valid header value; should that ever not hold, the
            // body goes out untagged rather than the request failing.
            let Some(etag) = entity_tag(caller.team_filter(), &bytes) else {
                return Response::from_parts(parts, Body::from(bytes));
            };
            (etag, Body::from(bytes))
        }
    };
    parts.headers.insert(header::ETAG, etag.clone());
    parts
        .headers
        .insert(header::VARY, HeaderValue::from_static("authorization"));
    parts.headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    if if_none_match.is_some_and(|v| none_match_hits(&v, &etag)) {
        parts.status = StatusCode::NOT_MODIFIED;
        parts.headers.remove(header::CONTENT_TYPE);
        parts.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(parts, Body::empty());
    }
    Response::from_parts(parts, body)
}

/// A strong tag: the first 128 bits of SHA-256 over the caller's visibility (the teams it
/// sees, or all) and the body.
pub(crate) fn entity_tag(teams: Option<&[String]>, body: &[u8]) -> Option<HeaderValue> {
    entity_tag_of(teams, |h| {
        h.update(b"\0body\0");
        h.update(body);
    })
}

/// The tag of a body made of parts whose own hashes are known: what `hash` feeds after the
/// teams must determine the body exactly (and start with a label of its own, so that no
/// two ways of tagging can give one tag for different bodies).
pub(crate) fn entity_tag_of(
    teams: Option<&[String]>,
    hash: impl FnOnce(&mut Sha256),
) -> Option<HeaderValue> {
    let mut h = Sha256::new();
    match teams {
        None => h.update(b"all\0"),
        Some(teams) => {
            let mut teams = teams.to_vec();
            teams.sort_unstable();
            teams.dedup();
            h.update(b"teams\0");
            for t in &teams {
                h.update(t.as_bytes());
                h.update(b"\0");
            }
        }
    }
    hash(&mut h);
    let digest = h.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    HeaderValue::from_str(&format!("\"{hex}\"")).ok()
}

/// `If-None-Match` compares weakly: `*`, or any listed tag with or without `W/`.
fn none_match_hits(header: &HeaderValue, etag: &HeaderValue) -> bool {
    let Ok(list) = header.to_str() else {
        return false;
    };
    let ours = etag.to_str().unwrap_or_default();
    list.split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == ours)
}

/// The W3C trace context of the request, or a new root.
pub(crate) fn traceparent(headers: &HeaderMap) -> Option<TraceParent> {
    headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .or_else(|| Some(TraceParent::new_root()))
}
