//! The HTTP API (DESIGN section 4): registries, rules, sync requests and webhooks.

mod registries;
mod rules;
mod webhooks;

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode, header};
use imagelib_events::TraceParent;
use imagelib_platform::Problem;
use imagelib_platform::auth::Tokens;
use utoipa_axum::router::OpenApiRouter;

use crate::app::{CommandError, Registries, reason_str};

pub fn router(app: Arc<Registries>, tokens: Tokens) -> OpenApiRouter {
    OpenApiRouter::new()
        .merge(registries::router())
        .merge(rules::router())
        .merge(webhooks::router())
        .with_state(app)
        .layer(axum::Extension(tokens))
}

/// An `If-Match` header (RFC 9110 section 13.1.1): `*`, or a list of entity tags compared
/// strongly, so a weak tag never matches.
#[derive(Debug, PartialEq)]
pub(crate) enum IfMatch {
    Any,
    Versions(Vec<u64>),
}

impl IfMatch {
    pub(crate) fn parse(headers: &HeaderMap) -> Result<Option<IfMatch>, Problem> {
        let bad = || {
            Problem::bad_request(
                "If-Match must be `*` or a list of entity tags, such as the registry's ETag",
            )
            .with_code("bad-if-match")
        };
        let mut versions = Vec::new();
        let mut any = false;
        let mut seen = false;
        for value in headers.get_all(header::IF_MATCH) {
            let value = value.to_str().map_err(|_| bad())?;
            for tag in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                seen = true;
                if tag == "*" {
                    any = true;
                    continue;
                }
                let (weak, quoted) = match tag.strip_prefix("W/") {
                    Some(rest) => (true, rest),
                    None => (false, tag),
                };
                let opaque = quoted
                    .strip_prefix('"')
                    .and_then(|t| t.strip_suffix('"'))
                    .filter(|t| !t.contains('"'))
                    .ok_or_else(bad)?;
                if !weak && let Ok(v) = opaque.parse() {
                    versions.push(v);
                }
            }
        }
        Ok(match (seen, any) {
            (false, _) => None,
            (true, true) => Some(IfMatch::Any),
            (true, false) => Some(IfMatch::Versions(versions)),
        })
    }

    fn matches(&self, version: u64) -> bool {
        match self {
            IfMatch::Any => true,
            IfMatch::Versions(v) => v.contains(&version),
        }
    }

    /// `412` (code `precondition-failed`) unless the condition holds for `what` at
    /// `version`.
    pub(crate) fn check(&self, what: &str, version: u64) -> Result<(), Problem> {
        if self.matches(version) {
            return Ok(());
        }
        let mut p = Problem::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition-failed",
            format!(
                "{what} changed since you read it (its ETag is now \"{version}\"); read it again and retry"
            ),
        );
        p.title = "Precondition Failed".into();
        Err(p)
    }
}

/// The W3C trace context of the request, or a new root.
pub(crate) fn traceparent(headers: &HeaderMap) -> Option<TraceParent> {
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
            CommandError::Invalid(f) => Problem::validation(f.pointer, f.message),
            CommandError::NotFound(_) | CommandError::RuleNotFound(..) => {
                Problem::not_found(e.to_string())
            }
            CommandError::Validation(f) => {
                let mut p = Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    reason_str(f.reason),
                    format!(
                        "the registry could not be validated ({}): {}. Fix it, or save without validating (\"validate\": false).",
                        reason_str(f.reason),
                        f.detail
                    ),
                );
                p.title = "Registry validation failed".into();
                p
            }
            CommandError::ChangeValidation(f) => {
                let mut p = Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    reason_str(f.reason),
                    format!(
                        "the registry could not be validated with the change ({}): {}. Nothing was changed.",
                        reason_str(f.reason),
                        f.detail
                    ),
                );
                p.title = "Registry validation failed".into();
                p
            }
            CommandError::CredentialsRequired { field } => {
                let mut p = Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "credentials-required",
                    e.to_string(),
                );
                p.title = "New credentials required".into();
                p.errors.push(imagelib_platform::problem::FieldError {
                    pointer: "/credentials".into(),
                    detail: format!("required when `{field}` changes"),
                });
                p
            }
            CommandError::CredentialsUnavailable(m) => {
                let mut p = Problem::new(StatusCode::CONFLICT, "credentials-unavailable", m);
                p.title = "Registry credentials unavailable".into();
                p
            }
            CommandError::Conflict(m) => Problem::conflict(m),
            CommandError::Unavailable(m) => {
                tracing::warn!(error = %m, "dependency unavailable");
                Problem::unavailable("a dependency is unavailable; retry shortly")
            }
            CommandError::Rule(r) => Problem::validation(r.pointer().to_owned(), r.to_string()),
            CommandError::Store(e) => Problem::internal(&e),
            CommandError::Secrets(e) => Problem::internal(&e),
        }
    }
}
