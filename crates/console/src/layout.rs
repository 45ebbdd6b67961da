//! The page frame every console page shares, and the small pieces pages repeat: short
//! digests, times, field errors, page links.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use imagelib_platform::auth::Role;
use maud::{DOCTYPE, Markup, html};

use crate::assets;
use crate::session::{Viewer, role_name};

/// Which entry of the navigation a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Images,
    Models,
    Registries,
    Deployments,
    Activity,
    None,
}

const ENTRIES: &[(Nav, &str, &str)] = &[
    (Nav::Images, "/", "Image Library"),
    (Nav::Models, "/models", "Model Library"),
    (Nav::Registries, "/registries", "Manage Repositories"),
    (Nav::Deployments, "/deployments", "Deployments"),
    (Nav::Activity, "/activity", "Activity"),
];

/// The whole document: head, skip link, navigation, who is signed in, `body` as `<main>`.
pub fn layout(v: &Viewer, nav: Nav, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) " · imagelib" }
                link rel="stylesheet" href=(assets::css_href());
                // No icon of our own: without this the browser asks for /favicon.ico, gets
                // a 404 and logs it as an error on every page (the browser tests fail on it).
                link rel="icon" href="data:,";
                script src=(assets::js_href()) defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" { "imagelib" }
                    nav aria-label="Main" {
                        ul {
                            @for (entry, href, label) in ENTRIES {
                                li {
                                    @if *entry == nav {
                                        a href=(href) aria-current="page" { (label) }
                                    } @else {
                                        a href=(href) { (label) }
                                    }
                                }
                            }
                        }
                    }
                    div.who {
                        @if v.signed_in {
                            span { (v.caller.subject) " " span.role { (role_name(v.caller.role)) } }
                            form method="post" action="/logout" {
                                (csrf_field(v))
                                button.link type="submit" { "Sign out" }
                            }
                        } @else {
                            a href="/login" { "Sign in" }
                        }
                    }
                }
                main #main tabindex="-1" {
                    (body)
                }
            }
        }
    }
}

/// A page with the console's headers (`200`).
pub fn page(v: &Viewer, nav: Nav, title: &str, body: Markup) -> Response {
    page_with_status(StatusCode::OK, v, nav, title, body)
}

/// A page with the console's headers and `status` (a form shown again with its errors is
/// a `422`).
pub fn page_with_status(
    status: StatusCode,
    v: &Viewer,
    nav: Nav,
    title: &str,
    body: Markup,
) -> Response {
    let mut res = (status, layout(v, nav, title, body)).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// A page that says what went wrong, and nothing it should not.
pub fn error_page(v: &Viewer, status: StatusCode, title: &str, detail: &str) -> Response {
    page_with_status(
        status,
        v,
        Nav::None,
        title,
        html! {
            h1 { (title) }
            p.error role="alert" { (detail) }
            p { a href="/" { "Back to the Image Library" } }
        },
    )
}

/// The hidden CSRF field of a form.
pub fn csrf_field(v: &Viewer) -> Markup {
    html! { input type="hidden" name="_csrf" value=(v.csrf()); }
}

/// `sha256:0123456789ab` and a button that copies the whole digest.
pub fn digest(d: &str) -> Markup {
    let short = match d.split_once(':') {
        Some((alg, hex)) => format!("{alg}:{}", hex.get(..12).unwrap_or(hex)),
        None => d.get(..19).unwrap_or(d).to_owned(),
    };
    html! {
        span.digest {
            code title=(d) { (short) }
            button.copy type="button" data-copy=(d) aria-label={ "Copy digest " (d) } { "Copy" }
        }
    }
}

/// A time as `<time>`: the machine-readable instant and a readable UTC form.
pub fn time(t: &DateTime<Utc>) -> Markup {
    html! { time datetime=(t.to_rfc3339()) { (t.format("%Y-%m-%d %H:%M UTC")) } }
}

/// An optional time, or a dash.
pub fn time_or_dash(t: Option<&DateTime<Utc>>) -> Markup {
    match t {
        Some(t) => time(t),
        None => html! { span.muted { "—" } },
    }
}

/// Bytes as KB/MB/GB (decimal, as registries show sizes).
pub fn bytes(n: i64) -> String {
    let n = n.max(0) as f64;
    match n {
        n if n >= 1e9 => format!("{:.1} GB", n / 1e9),
        n if n >= 1e6 => format!("{:.1} MB", n / 1e6),
        n if n >= 1e3 => format!("{:.1} kB", n / 1e3),
        n => format!("{n} B"),
    }
}

/// The message for field `name` among a problem's field errors (`errors[].pointer` is
/// the field name, or a JSON pointer ending in it).
pub fn field_error<'a>(errors: &'a [(String, String)], name: &str) -> Option<&'a str> {
    errors
        .iter()
        .find(|(p, _)| {
            p == name || p.trim_start_matches('/') == name || p.ends_with(&format!("/{name}"))
        })
        .map(|(_, d)| d.as_str())
}

/// A labelled text input with its error, wired for assistive technology.
pub fn text_field(
    name: &str,
    label: &str,
    value: &str,
    errors: &[(String, String)],
    attrs: FieldAttrs<'_>,
) -> Markup {
    let id = format!("f-{name}");
    let err = field_error(errors, name);
    let err_id = format!("{id}-error");
    let hint_id = format!("{id}-hint");
    let described = match (err.is_some(), attrs.hint.is_some()) {
        (true, true) => Some(format!("{err_id} {hint_id}")),
        (true, false) => Some(err_id.clone()),
        (false, true) => Some(hint_id.clone()),
        (false, false) => None,
    };
    html! {
        div.field {
            label for=(id) { (label) @if attrs.required { " " span.req aria-hidden="true" { "*" } } }
            @if let Some(h) = attrs.hint { small.hint id=(hint_id) { (h) } }
            @if attrs.multiline {
                textarea id=(id) name=(name) rows="6" required[attrs.required]
                    aria-invalid=[err.map(|_| "true")] aria-describedby=[described.as_deref()]
                    autocomplete="off" spellcheck="false" { (value) }
            } @else {
                input id=(id) name=(name) type=(attrs.kind) value=(value) required[attrs.required]
                    aria-invalid=[err.map(|_| "true")] aria-describedby=[described.as_deref()]
                    autocomplete=(if attrs.kind == "password" { "new-password" } else { "off" });
            }
            @if let Some(e) = err { p.field-error id=(err_id) { (e) } }
        }
    }
}

/// Options of [`text_field`].
#[derive(Debug, Clone, Copy)]
pub struct FieldAttrs<'a> {
    pub kind: &'a str,
    pub required: bool,
    pub hint: Option<&'a str>,
    pub multiline: bool,
}

impl Default for FieldAttrs<'_> {
    fn default() -> Self {
        FieldAttrs {
            kind: "text",
            required: false,
            hint: None,
            multiline: false,
        }
    }
}

/// A notice after an action (Post/Redirect/Get passes a code in `?done=`; the page maps
/// it to text of its own, so no link can put words in the console's mouth).
pub fn notice(text: Option<&str>) -> Markup {
    html! {
        @if let Some(t) = text { p.notice role="status" { (t) } }
    }
}

/// Whether an action needing `role` is shown to this viewer.
pub fn shows(v: &Viewer, role: Role) -> bool {
    v.may(role)
}

/// A link to the next keyset page, keeping the other query parameters.
pub fn next_link(path: &str, params: &[(&str, &str)], cursor: Option<&str>) -> Markup {
    html! {
        @if let Some(c) = cursor {
            nav.pages aria-label="Pages" {
                a rel="next" href=(with_query(path, params, Some(("cursor", c)))) { "Next page →" }
            }
        }
    }
}

/// `path?k=v&…`, empty values left out, every value encoded.
pub fn with_query(path: &str, params: &[(&str, &str)], extra: Option<(&str, &str)>) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in params.iter().filter(|(_, v)| !v.is_empty()) {
        if extra.is_some_and(|(ek, _)| ek == *k) {
            continue;
        }
        q.append_pair(k, v);
    }
    if let Some((k, v)) = extra {
        q.append_pair(k, v);
    }
    let q = q.finish();
    if q.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{q}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untrusted_text_is_escaped_everywhere() {
        let v = Viewer::anonymous();
        let evil = "<script>alert(1)</script>\"'&";
        let out = layout(
            &v,
            Nav::Images,
            evil,
            html! { p { (evil) } a href=(evil) { "x" } (digest(evil)) },
        )
        .into_string();
        assert!(!out.contains("<script>alert"), "{out}");
        assert!(out.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!out.contains("href=\"<"), "{out}");
    }

    #[test]
    fn the_frame_marks_the_current_page_and_has_no_inline_script_or_style() {
        let out = layout(&Viewer::anonymous(), Nav::Models, "M", html! {}).into_string();
        assert!(
            out.contains(r#"<a href="/models" aria-current="page">"#),
            "{out}"
        );
        assert!(
            !out.contains("<script>") && !out.contains("style="),
            "{out}"
        );
        assert!(out.contains(&assets::js_href()) && out.contains(&assets::css_href()));
        assert!(
            out.contains(r#"href="/login""#),
            "anonymous: a sign-in link"
        );
    }

    #[test]
    fn small_pieces() {
        assert_eq!(bytes(1_500_000), "1.5 MB");
        assert_eq!(bytes(12), "12 B");
        assert_eq!(
            with_query(
                "/",
                &[("q", "a b&c"), ("kind", ""), ("cursor", "old")],
                Some(("cursor", "new"))
            ),
            "/?q=a+b%26c&cursor=new"
        );
        let errs = vec![("/url".to_owned(), "bad".to_owned())];
        assert_eq!(field_error(&errs, "url"), Some("bad"));
        assert_eq!(field_error(&errs, "label"), None);
        let d = digest("sha256:0123456789abcdef0123").into_string();
        assert!(d.contains(">sha256:0123456789ab<"), "{d}");
    }
}
