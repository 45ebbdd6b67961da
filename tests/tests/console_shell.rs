//! The web console's shell on `imagelib serve`, over HTTP: sign-in with a token, the session
//! cookie's attributes, CSRF and cross-site refusals, sign-out, the security headers on every
//! page, the hashed assets, and anonymous reading when it is on.

use imagelib_e2e::TestServer;
use reqwest::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;

const ADMIN: &str = "test-admin-token";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

/// The `name=value` part of the session cookie a response sets.
fn session_of(res: &reqwest::Response) -> Option<String> {
    res.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("imagelib_session="))
        .map(|v| v.split(';').next().unwrap().to_owned())
}

fn set_cookie(res: &reqwest::Response) -> String {
    res.headers()
        .get(SET_COOKIE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// The value of the first `name="_csrf"` field on a page.
fn csrf_in(page: &str) -> String {
    let at = page.find(r#"name="_csrf" value=""#).expect("a CSRF field") + 20;
    page[at..at + page[at..].find('"').unwrap()].to_owned()
}

async fn sign_in(s: &TestServer, c: &reqwest::Client, token: &str) -> reqwest::Response {
    c.post(s.url("/login"))
        .form(&[("token", token), ("next", "/models?kind=model")])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn sign_in_sessions_csrf_and_sign_out() {
    let s = TestServer::start().await.unwrap();
    let c = client();

    // Not signed in: every page sends to the sign-in page, coming back after.
    let res = c.get(s.url("/models?kind=model")).send().await.unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(
        res.headers()[LOCATION],
        "/login?next=%2Fmodels%3Fkind%3Dmodel"
    );

    // The sign-in page: the console's headers, the form, assets that exist.
    let res = c.get(s.url("/login")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let csp = res.headers()[CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(res.headers()["x-frame-options"], "DENY");
    assert_eq!(res.headers()[CACHE_CONTROL], "no-store");
    let page = res.text().await.unwrap();
    assert!(page.contains(r#"name="token""#) && page.contains(r#"type="password""#));
    assert!(
        !page.contains("<script>") && !page.contains("style="),
        "{page}"
    );
    for ext in ["css", "js"] {
        let href = page
            .match_indices("/assets/console.")
            .map(|(i, _)| page[i..].split('"').next().unwrap())
            .find(|h| h.ends_with(ext))
            .unwrap_or_else(|| panic!("no .{ext} asset on {page}"));
        let res = c
            .get(s.url(href))
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{href}");
        assert_eq!(
            res.headers()[CACHE_CONTROL],
            "public, max-age=31536000, immutable"
        );
        assert_eq!(res.headers()["content-encoding"], "gzip", "{href}");
    }
    let res = c
        .get(s.url("/assets/console.0000000000.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404, "an asset of another build");

    // A wrong token: 401, the error at the field, no cookie, the token not echoed.
    let res = sign_in(&s, &c, "guessed-token-value").await;
    assert_eq!(res.status(), 401);
    assert!(session_of(&res).is_none());
    let page = res.text().await.unwrap();
    assert!(
        page.contains("f-token-error") && page.contains("not known"),
        "{page}"
    );
    assert!(!page.contains("guessed-token-value"));

    // A sign-in form posted from another site: refused.
    let res = c
        .post(s.url("/login"))
        .header("origin", "http://evil.example")
        .form(&[("token", ADMIN)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert!(session_of(&res).is_none());

    // The right token: back to the page that asked, with a session cookie that holds no
    // token, cannot be read by script and is not sent cross-site.
    let res = sign_in(&s, &c, ADMIN).await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()[LOCATION], "/models?kind=model");
    let attrs = set_cookie(&res);
    assert!(
        attrs.contains("HttpOnly") && attrs.contains("SameSite=Strict"),
        "{attrs}"
    );
    assert!(
        attrs.contains("Max-Age=28800") && !attrs.contains("Secure"),
        "{attrs}"
    );
    assert!(!attrs.contains(ADMIN), "{attrs}");
    let cookie = session_of(&res).unwrap();
    // Behind TLS (as an ingress says), the cookie is Secure.
    let res = c
        .post(s.url("/login"))
        .header("x-forwarded-proto", "https")
        .form(&[("token", ADMIN)])
        .send()
        .await
        .unwrap();
    assert!(
        set_cookie(&res).contains("; Secure"),
        "{}",
        set_cookie(&res)
    );

    // Signed in: pages answer, naming who is signed in.
    let res = c
        .get(s.url("/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let page = res.text().await.unwrap();
    assert!(
        page.contains("admin") && page.contains("Sign out"),
        "{page}"
    );
    let csrf = csrf_in(&page);

    // A tampered cookie is no session: to the sign-in page, and the cookie is cleared.
    let mut tampered = cookie.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let res = c
        .get(s.url("/"))
        .header("cookie", &tampered)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert!(set_cookie(&res).contains("Max-Age=0"));

    // Sign-out needs the session's CSRF token.
    for bad in ["", "AAAA", "not-base64!"] {
        let res = c
            .post(s.url("/logout"))
            .header("cookie", &cookie)
            .form(&[("_csrf", bad)])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "{bad}");
    }
    let res = c
        .post(s.url("/logout"))
        .header("cookie", &cookie)
        .header("origin", "http://evil.example")
        .form(&[("_csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403, "cross-site, even with the token");
    let res = c
        .post(s.url("/logout"))
        .header("cookie", &cookie)
        .form(&[("_csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()[LOCATION], "/login");
    assert!(set_cookie(&res).contains("Max-Age=0"));

    // Browsers' CSP reports are taken whatever they hold.
    for body in [
        "",
        "garbage",
        r#"{"csp-report":{"violated-directive":"script-src"}}"#,
    ] {
        let res = c
            .post(s.url("/console/csp-report"))
            .header("content-type", "application/csp-report")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204, "{body}");
    }
    s.stop().await.unwrap();
}

#[tokio::test]
async fn anonymous_readers_read_when_it_is_on_and_only_then() {
    let s = TestServer::start_with(|c| c.anonymous_read = true)
        .await
        .unwrap();
    let c = client();
    let res = c.get(s.url("/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let page = res.text().await.unwrap();
    assert!(page.contains(r#"href="/login""#), "a sign-in link: {page}");
    assert!(!page.contains("_csrf"), "no form that changes anything");
    // Reading only: a form post without a session is refused.
    let res = c
        .post(s.url("/logout"))
        .form(&[("_csrf", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303, "to the sign-in page");
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csp_reports_are_counted_on_the_metrics_endpoint() {
    let telemetry = imagelib_platform::telemetry::init_with(
        imagelib_platform::telemetry::OtelSettings {
            service_name: "imagelib".into(),
            metrics_addr: Some(([127, 0, 0, 1], 0).into()),
            ..Default::default()
        },
        imagelib_platform::config::LogFormat::Json,
    )
    .unwrap();
    let metrics = format!(
        "http://{}/metrics",
        telemetry.metrics_addr().expect("a /metrics listener")
    );
    let s = TestServer::start().await.unwrap();
    let c = client();
    for body in [
        "garbage",
        r#"{"csp-report":{"violated-directive":"script-src"}}"#,
    ] {
        let res = c
            .post(s.url("/console/csp-report"))
            .header("content-type", "application/csp-report")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
    }
    let text = c.get(&metrics).send().await.unwrap().text().await.unwrap();
    let counted: f64 = text
        .lines()
        .filter(|l| l.starts_with("imagelib_console_csp_violations_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(counted, 2.0, "{text}");
    s.stop().await.unwrap();
}
