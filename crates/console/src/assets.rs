//! The stylesheet and the script, embedded in the binary and served under names that carry
//! a hash of their content, so a browser may keep them for a year and still never runs an
//! old script against a new page.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

const CSS: &str = include_str!("../assets/console.css");
const JS: &str = include_str!("../assets/console.js");

struct Asset {
    name: String,
    body: &'static str,
    content_type: &'static str,
}

fn hashed(stem: &str, ext: &str, body: &'static str, content_type: &'static str) -> Asset {
    let h = Sha256::digest(body.as_bytes());
    let short: String = h[..5].iter().map(|b| format!("{b:02x}")).collect();
    Asset {
        name: format!("{stem}.{short}.{ext}"),
        body,
        content_type,
    }
}

fn all() -> &'static [Asset; 2] {
    static ALL: OnceLock<[Asset; 2]> = OnceLock::new();
    ALL.get_or_init(|| {
        [
            hashed("console", "css", CSS, "text/css; charset=utf-8"),
            hashed("console", "js", JS, "text/javascript; charset=utf-8"),
        ]
    })
}

/// `/assets/console.<hash>.css`
pub fn css_href() -> String {
    format!("/assets/{}", all()[0].name)
}

/// `/assets/console.<hash>.js`
pub fn js_href() -> String {
    format!("/assets/{}", all()[1].name)
}

/// `GET /assets/{name}`: an asset of this build, cached for a year; any other name is a
/// `404` (an old name after an upgrade too: the page that asked for it is stale).
pub(crate) async fn serve(Path(name): Path<String>) -> Response {
    match all().iter().find(|a| a.name == name) {
        Some(a) => {
            let mut res = a.body.into_response();
            let h = res.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(a.content_type),
            );
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            );
            res
        }
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}
