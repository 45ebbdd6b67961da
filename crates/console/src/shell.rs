//! The routes of the console that belong to no service (sign-in, sign-out, assets, CSP
//! reports) and the wrapper every service's page router goes through: the console's
//! extension, its security headers and compression.

use axum::extract::{Form, Query};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use imagelib_platform::{Readiness, Service};
use maud::html;
use serde::Deserialize;
use tower_http::compression::CompressionLayer;

use crate::layout::{self, FieldAttrs, Nav};
use crate::session::{self, CsrfForm, Viewer};
use crate::{Console, assets};

/// The Content-Security-Policy of every console response: nothing inline, nothing from
/// another origin, no framing; violations reported to `/console/csp-report`.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
    base-uri 'none'; report-uri /console/csp-report";

/// A service's console pages, ready to merge: they find the [`Console`] in their
/// extensions, answer with the console's security headers, and are compressed.
pub fn pages(router: Router, console: Console) -> Router {
    router
        .layer(axum::middleware::map_response(security_headers))
        .layer(CompressionLayer::new().gzip(true))
        .layer(Extension(console))
}

async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    res
}

/// The console's own routes as a service of `imagelib serve` (and of each service's own
/// binary): `GET/POST /login`, `POST /logout`, `GET /assets/{name}`,
/// `POST /console/csp-report`.
pub fn service(console: Console) -> Service {
    let router = Router::new()
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/assets/{name}", get(assets::serve))
        .route("/console/csp-report", post(csp_report));
    Service {
        name: "console",
        router: pages(router, console).into(),
        readiness: Readiness::new(),
        workers: vec![],
    }
}

#[derive(Debug, Default, Deserialize)]
struct NextQuery {
    next: Option<String>,
}

/// Only a path of this site: never `//host`, `/\host` or a scheme.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.chars().any(char::is_control)
                && !n.starts_with("/login")
                && n.len() <= 2048 =>
        {
            n.to_owned()
        }
        _ => "/".into(),
    }
}

fn login_form(next: &str, errors: &[(String, String)]) -> maud::Markup {
    html! {
        section.narrow {
            h1 { "Sign in" }
            p { "Sign in with an imagelib API token. The console keeps a signed session cookie; the token itself is not stored in your browser." }
            form method="post" action="/login" {
                input type="hidden" name="next" value=(next);
                (layout::text_field("token", "API token", "", errors, FieldAttrs {
                    kind: "password",
                    required: true,
                    hint: Some("The bearer token you use with the API and the CLI."),
                    multiline: false,
                }))
                button type="submit" { "Sign in" }
            }
        }
    }
}

async fn login_page(viewer: Result<Viewer, Response>, Query(q): Query<NextQuery>) -> Response {
    let next = safe_next(q.next.as_deref());
    let v = viewer.unwrap_or_else(|_| Viewer::anonymous());
    if v.signed_in {
        return Redirect::to(&next).into_response();
    }
    layout::page(&v, Nav::None, "Sign in", login_form(&next, &[]))
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    token: String,
    next: Option<String>,
}

async fn login(
    Extension(console): Extension<Console>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let v = Viewer::anonymous();
    let next = safe_next(form.next.as_deref());
    if !session::same_origin(&headers) {
        return layout::error_page(
            &v,
            StatusCode::FORBIDDEN,
            "Form refused",
            "The form came from another site.",
        );
    }
    let token = form.token.trim();
    if token.is_empty() || token.len() > 1024 || console.tokens().caller(token).is_none() {
        tracing::warn!(
            target: "imagelib::security",
            credential_sha256_prefix = %imagelib_platform::auth::hash_prefix(token.as_bytes()),
            route = "/login",
            "console sign-in refused: unknown token"
        );
        let errors = vec![(
            "token".to_owned(),
            "This token is not known to imagelib.".to_owned(),
        )];
        return layout::page_with_status(
            StatusCode::UNAUTHORIZED,
            &v,
            Nav::None,
            "Sign in",
            login_form(&next, &errors),
        );
    }
    let cookie = console.issue(token, console.secure_for(&headers));
    let mut res = Redirect::to(&next).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

async fn logout(
    Extension(console): Extension<Console>,
    headers: HeaderMap,
    _form: CsrfForm<serde::de::IgnoredAny>,
) -> Response {
    let mut res = Redirect::to("/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&console.clear(console.secure_for(&headers))) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

fn violations() -> &'static opentelemetry::metrics::Counter<u64> {
    static C: std::sync::OnceLock<opentelemetry::metrics::Counter<u64>> =
        std::sync::OnceLock::new();
    C.get_or_init(|| {
        imagelib_platform::telemetry::meter()
            .u64_counter("imagelib.console.csp_violations")
            .with_unit("{violation}")
            .with_description(
                "Content-Security-Policy violations browsers reported on console pages",
            )
            .build()
    })
}

/// A browser's CSP violation report: logged (bounded) and counted; whatever the body.
async fn csp_report(body: axum::body::Bytes) -> StatusCode {
    let report: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let field = |k: &str| {
        report["csp-report"][k]
            .as_str()
            .map(|s| s.chars().take(200).collect::<String>())
            .unwrap_or_default()
    };
    tracing::warn!(
        target: "imagelib::security",
        directive = %field("violated-directive"),
        blocked = %field("blocked-uri"),
        page = %field("document-uri"),
        "console Content-Security-Policy violation"
    );
    violations().add(1, &[]);
    StatusCode::NO_CONTENT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        assert_eq!(safe_next(Some("/models?kind=x")), "/models?kind=x");
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "https://evil.example",
            "javascript:alert(1)",
            "/login?next=/",
            "/a\nb",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_next(None), "/");
    }
}
