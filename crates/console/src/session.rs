//! Sessions and CSRF.
//!
//! A session is a cookie, `imagelib_session`, holding the SHA-256 of the API token signed in
//! with, a random nonce and an expiry, signed with HMAC-SHA256 under the console key. The
//! token itself never leaves the sign-in request: the cookie is useless against the API,
//! and the caller is looked up in the token store on every request, so removing a token
//! ends its sessions at once. The cookie is `HttpOnly`, `SameSite=Strict`, `Path=/`, and
//! `Secure` when configured or when the request came over TLS.
//!
//! Every state-changing form carries `_csrf`, an HMAC of the session's nonce: a page of
//! another origin can neither read it nor (with `SameSite=Strict`) send the cookie. Forms
//! are also refused when the browser says the request is cross-site (`Origin`,
//! `Sec-Fetch-Site`), which covers the sign-in form, made before any session exists.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use imagelib_platform::auth::{Caller, Role};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::Console;
use crate::layout;

pub const COOKIE: &str = "imagelib_session";
/// Largest form body a console page accepts (agent YAML and CA certificates included).
pub const MAX_FORM_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Claims {
    /// Hex SHA-256 of the token.
    h: String,
    /// Nonce, base64url.
    n: String,
    /// Expiry, Unix seconds.
    e: i64,
}

/// HMAC-SHA256 over `purpose`, a NUL and `data` (HMAC takes a key of any length, so the
/// `None` arm is never taken; it keeps a panic off the request path all the same).
fn keyed(key: &[u8; 32], purpose: &[u8], data: &[u8]) -> Option<Hmac<Sha256>> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).ok()?;
    m.update(purpose);
    m.update(b"\0");
    m.update(data);
    Some(m)
}

fn mac(key: &[u8; 32], purpose: &[u8], data: &[u8]) -> Vec<u8> {
    keyed(key, purpose, data)
        .map(|m| m.finalize().into_bytes().to_vec())
        .unwrap_or_default()
}

fn verify_mac(key: &[u8; 32], purpose: &[u8], data: &[u8], tag: &[u8]) -> bool {
    keyed(key, purpose, data).is_some_and(|m| m.verify_slice(tag).is_ok())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Console {
    /// A new session for a token that authenticated: the `Set-Cookie` value.
    pub(crate) fn issue(&self, token: &str, secure: bool) -> String {
        let nonce: [u8; 16] = rand::random();
        let claims = Claims {
            h: hex(&imagelib_platform::auth::sha256(token)),
            n: URL_SAFE_NO_PAD.encode(nonce),
            e: chrono::Utc::now().timestamp() + self.ttl_secs as i64,
        };
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap_or_default());
        let tag = URL_SAFE_NO_PAD.encode(mac(&self.key, b"session", body.as_bytes()));
        format!(
            "{COOKIE}=v1.{body}.{tag}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
            self.ttl_secs,
            if secure { "; Secure" } else { "" }
        )
    }

    /// The `Set-Cookie` value that ends a session.
    pub(crate) fn clear(&self, secure: bool) -> String {
        format!(
            "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
            if secure { "; Secure" } else { "" }
        )
    }

    /// The claims of a cookie value this console signed and that has not expired.
    fn open(&self, value: &str) -> Option<Claims> {
        let rest = value.strip_prefix("v1.")?;
        let (body, tag) = rest.split_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        if !verify_mac(&self.key, b"session", body.as_bytes(), &tag) {
            return None;
        }
        let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()?;
        (claims.e > chrono::Utc::now().timestamp()).then_some(claims)
    }

    fn csrf_for(&self, nonce: &str) -> String {
        URL_SAFE_NO_PAD.encode(mac(&self.key, b"csrf", nonce.as_bytes()))
    }

    fn csrf_ok(&self, nonce: &str, presented: &str) -> bool {
        match URL_SAFE_NO_PAD.decode(presented) {
            Ok(tag) => verify_mac(&self.key, b"csrf", nonce.as_bytes(), &tag),
            Err(_) => false,
        }
    }

    /// Whether the session cookie should be `Secure` for this request.
    pub(crate) fn secure_for(&self, headers: &HeaderMap) -> bool {
        self.secure_cookie
            || headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.eq_ignore_ascii_case("https"))
    }
}

/// The session cookie's value among the request's cookies.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

/// Whether the browser says this request came from a page of this origin (or says
/// nothing: a non-browser client, which has no ambient cookie to abuse).
pub(crate) fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    match origin.to_str().ok().and_then(|o| url::Url::parse(o).ok()) {
        Some(o) => {
            let port = o.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!("{}{port}", o.host_str().unwrap_or_default()).eq_ignore_ascii_case(host)
        }
        None => false,
    }
}

/// Who is looking at a console page: a signed-in caller, or an anonymous reader when
/// `IMAGELIB_ANONYMOUS_READ` is on. A page that takes a `Viewer` redirects to the sign-in
/// page otherwise.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub caller: Caller,
    pub signed_in: bool,
    csrf: Option<String>,
    nonce: Option<String>,
}

impl Viewer {
    /// The anonymous reader (for tests and pages rendered outside a request).
    pub fn anonymous() -> Self {
        Viewer {
            caller: Caller::anonymous(),
            signed_in: false,
            csrf: None,
            nonce: None,
        }
    }

    /// The CSRF token every form of this viewer's pages carries (`_csrf`).
    pub fn csrf(&self) -> &str {
        self.csrf.as_deref().unwrap_or_default()
    }

    /// Whether this viewer's role allows `role`'s actions: pages show an action only then.
    pub fn may(&self, role: Role) -> bool {
        self.signed_in && self.caller.role.allows(role)
    }

    /// A `403` page unless the viewer may take `role`'s actions (a forged form).
    pub fn require(&self, role: Role) -> Result<(), Response> {
        if self.may(role) {
            Ok(())
        } else {
            Err(layout::error_page(
                self,
                StatusCode::FORBIDDEN,
                "Not allowed",
                &format!("This needs the {} role.", role_name(role)),
            ))
        }
    }
}

pub(crate) fn role_name(role: Role) -> &'static str {
    match role {
        Role::Admin => "admin",
        Role::Curator => "curator",
        Role::Deployer => "deployer",
        Role::Viewer => "viewer",
    }
}

/// Where to send someone who must sign in first, coming back to `path` after.
fn to_sign_in(path_and_query: &str) -> Response {
    let next = url::form_urlencoded::byte_serialize(path_and_query.as_bytes()).collect::<String>();
    Redirect::to(&format!("/login?next={next}")).into_response()
}

impl<S: Send + Sync> FromRequestParts<S> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        let Some(console) = parts.extensions.get::<Console>().cloned() else {
            return Err(
                imagelib_platform::Problem::internal(&"no console on this route").into_response(),
            );
        };
        let here = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into());
        let cookie = session_cookie(&parts.headers);
        if let Some(value) = cookie {
            if let Some(claims) = console.open(value)
                && let Some(caller) =
                    unhex32(&claims.h).and_then(|h| console.tokens.caller_by_hash(&h))
            {
                return Ok(Viewer {
                    caller,
                    signed_in: true,
                    csrf: Some(console.csrf_for(&claims.n)),
                    nonce: Some(claims.n),
                });
            }
            // A cookie that no longer opens (expired, another key, a removed token):
            // end it and ask for a sign-in again.
            let secure = console.secure_for(&parts.headers);
            let mut res = to_sign_in(&here);
            if let Ok(v) = HeaderValue::from_str(&console.clear(secure)) {
                res.headers_mut().insert(header::SET_COOKIE, v);
            }
            return Err(res);
        }
        if console.tokens.anonymous_read() && parts.method == axum::http::Method::GET {
            return Ok(Viewer::anonymous());
        }
        Err(to_sign_in(&here))
    }
}

/// A console form: the signed-in viewer who sent it and its fields, once the CSRF token
/// and the request's origin are checked. `T` is read with `serde_urlencoded` (fields it
/// does not name are ignored, `_csrf` among them).
#[derive(Debug)]
pub struct CsrfForm<T> {
    pub viewer: Viewer,
    pub form: T,
}

impl<S, T> FromRequest<S> for CsrfForm<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let viewer = Viewer::from_request_parts(&mut parts, state).await?;
        let refuse = |detail: &str| {
            layout::error_page(&viewer, StatusCode::FORBIDDEN, "Form refused", detail)
        };
        if !viewer.signed_in {
            return Err(refuse("Sign in first."));
        }
        if !same_origin(&parts.headers) {
            return Err(refuse("The form came from another site."));
        }
        let bytes = match axum::body::to_bytes(body, MAX_FORM_BYTES).await {
            Ok(b) => b,
            Err(_) => {
                return Err(layout::error_page(
                    &viewer,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "Form too large",
                    &format!("A form may hold at most {} KiB.", MAX_FORM_BYTES / 1024),
                ));
            }
        };
        let presented = url::form_urlencoded::parse(&bytes)
            .find(|(k, _)| k == "_csrf")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        let nonce = viewer.nonce.clone().unwrap_or_default();
        let console = parts.extensions.get::<Console>().cloned();
        if !console.is_some_and(|c| c.csrf_ok(&nonce, &presented)) {
            return Err(refuse(
                "The form's security token is missing or stale: reload the page and try again.",
            ));
        }
        match serde_urlencoded::from_bytes::<T>(&bytes) {
            Ok(form) => Ok(CsrfForm { viewer, form }),
            Err(e) => Err(layout::error_page(
                &viewer,
                StatusCode::UNPROCESSABLE_ENTITY,
                "Form not understood",
                &e.to_string(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imagelib_platform::auth::Tokens;

    fn console() -> Console {
        Console::new(
            Tokens::load(Some("admin-token"), None).unwrap(),
            Some("a-test-session-key-of-at-least-32-chars"),
            3600,
            false,
        )
    }

    fn value(set_cookie: &str) -> &str {
        set_cookie
            .split(';')
            .next()
            .unwrap()
            .strip_prefix("imagelib_session=")
            .unwrap()
    }

    #[test]
    fn a_session_opens_only_unaltered_under_its_own_key() {
        let c = console();
        let set = c.issue("admin-token", false);
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"));
        assert!(!set.contains("Secure") && !set.contains("admin-token"));
        let v = value(&set);
        let claims = c.open(v).unwrap();
        assert_eq!(
            unhex32(&claims.h),
            Some(imagelib_platform::auth::sha256("admin-token"))
        );
        // Another key, a flipped byte, garbage: nothing.
        let other = Console::new(Tokens::default(), Some(&"k".repeat(40)), 3600, false);
        assert!(other.open(v).is_none());
        let mut tampered = v.to_owned();
        tampered.replace_range(5..6, if &v[5..6] == "A" { "B" } else { "A" });
        assert!(c.open(&tampered).is_none());
        for junk in ["", "v1.", "v1..", "v2.a.b", "v1.!!!.???", "v1.e30.AAAA"] {
            assert!(c.open(junk).is_none(), "{junk}");
        }
        assert!(c.issue("t", true).ends_with("; Secure"));
    }

    #[test]
    fn an_expired_session_does_not_open() {
        let c = console();
        let claims = Claims {
            h: hex(&imagelib_platform::auth::sha256("admin-token")),
            n: "n".into(),
            e: chrono::Utc::now().timestamp() - 1,
        };
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
        let tag = URL_SAFE_NO_PAD.encode(mac(&c.key, b"session", body.as_bytes()));
        assert!(c.open(&format!("v1.{body}.{tag}")).is_none());
    }

    #[test]
    fn csrf_tokens_belong_to_their_session() {
        let c = console();
        let t = c.csrf_for("nonce-a");
        assert!(c.csrf_ok("nonce-a", &t));
        assert!(!c.csrf_ok("nonce-b", &t));
        assert!(!c.csrf_ok("nonce-a", ""));
        assert!(!c.csrf_ok("nonce-a", "not base64 !"));
    }

    #[test]
    fn cross_site_requests_are_told_apart() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, HeaderValue::from_static(v));
            }
            m
        };
        assert!(same_origin(&h(&[("host", "localhost:8080")])));
        assert!(same_origin(&h(&[
            ("host", "localhost:8080"),
            ("origin", "http://localhost:8080"),
            ("sec-fetch-site", "same-origin"),
        ])));
        assert!(!same_origin(&h(&[
            ("host", "localhost:8080"),
            ("origin", "http://evil.example"),
        ])));
        assert!(!same_origin(&h(&[
            ("host", "localhost:8080"),
            ("sec-fetch-site", "cross-site"),
        ])));
        assert!(!same_origin(&h(&[
            ("host", "localhost:8080"),
            ("origin", "null"),
        ])));
    }
}
