//! The catalog's console pages over HTTP, on a real stream and database: sign-in, the
//! Image and Model Library with their filters, repository detail and its curator forms,
//! the activity and its live stream; escaping of hostile names, labels and READMEs; role
//! refusals, CSRF; the CSP header and no inline script or style on any page.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use imagelib_events::RegistryId;
use imagelib_events::model::{ImageKind, ModelType};
use reqwest::Method;
use reqwest::header::{CONTENT_SECURITY_POLICY, COOKIE, LOCATION, SET_COOKIE};

/// A browser without script: one session cookie, redirects not followed.
struct Browser {
    base: String,
    http: reqwest::Client,
    cookie: Option<String>,
}

struct Page {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The `_csrf` value of the page's forms.
    fn csrf(&self) -> String {
        let marker = r#"name="_csrf" value=""#;
        let i = self.body.find(marker).expect("a form with _csrf") + marker.len();
        self.body[i..].split('"').next().unwrap().to_owned()
    }

    /// The rows of the table with this id.
    fn rows(&self, table: &str) -> usize {
        let Some(start) = self.body.find(&format!(r#"<table id="{table}""#)) else {
            return 0;
        };
        let rest = &self.body[start..];
        let end = rest.find("</table>").unwrap();
        let body = &rest[..end];
        body.split("<tbody>")
            .nth(1)
            .map_or(0, |b| b.matches("<tr>").count())
    }
}

impl Browser {
    fn new(svc: &Service) -> Self {
        Browser {
            base: format!("http://{}", svc.addr),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookie: None,
        }
    }

    async fn signed_in(svc: &Service, token: &str) -> Self {
        let mut b = Browser::new(svc);
        let res = b
            .http
            .post(format!("{}/login", b.base))
            .form(&[("token", token), ("next", "/")])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 303, "sign-in");
        let set = res.headers()[SET_COOKIE].to_str().unwrap();
        b.cookie = Some(set.split(';').next().unwrap().to_owned());
        b
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Page {
        let req = match &self.cookie {
            Some(c) => req.header(COOKIE, c),
            None => req,
        };
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        Page {
            status,
            headers,
            body: res.text().await.unwrap(),
        }
    }

    async fn get(&self, path: &str) -> Page {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Page {
        self.send(self.http.post(format!("{}{path}", self.base)).form(form))
            .await
    }
}

/// Every console page: the CSP, and no script or style but the console's own files.
fn assert_safe_page(p: &Page, what: &str) {
    let csp = p.headers[CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("style-src 'self'"),
        "{what}: {csp}"
    );
    for (i, _) in p.body.match_indices("<script") {
        assert!(
            p.body[i..].starts_with("<script src=\"/assets/"),
            "{what}: inline script at {i}: {}",
            &p.body[i..(i + 80).min(p.body.len())]
        );
    }
    assert!(!p.body.contains(" style="), "{what}: a style attribute");
    assert!(!p.body.contains("<style"), "{what}: a style element");
    assert_eq!(p.body.matches("<h1").count(), 1, "{what}: one h1");
}

/// No element the page did not mean: no script but the console's, no image, no event
/// handler or `javascript:` URL in any tag (escaped text may say what it likes).
fn assert_inert(body: &str, what: &str) {
    for (i, _) in body.match_indices('<') {
        let tag = &body[i..body[i..].find('>').map_or(body.len(), |e| i + e + 1)];
        let lower = tag.to_ascii_lowercase();
        assert!(
            !lower.starts_with("<img") && !lower.starts_with("<iframe"),
            "{what}: {tag}"
        );
        if lower.starts_with("<script") {
            assert!(lower.starts_with("<script src=\"/assets/"), "{what}: {tag}");
        }
        for bad in ["onerror", "onclick", "onload", "javascript:"] {
            assert!(!lower.contains(bad), "{what}: {bad} in {tag}");
        }
    }
}

/// Three registries: one for everyone, one for team `ml`, one for team `db`.
async fn three_teams(env: &Env) -> (RegistryId, RegistryId, RegistryId) {
    let (public, ml, db) = (RegistryId::new(), RegistryId::new(), RegistryId::new());
    env.publish([
        registered(public, "Docker Hub", &[]),
        registered(ml, "NGC", &["ml"]),
        registered(db, "DBA Harbor", &["db", "ops"]),
        discovered(
            public,
            "library/nginx",
            "1.27",
            1,
            details(ImageKind::Other, None, &["amd64", "arm64"], 70_000_000),
        ),
        discovered(
            ml,
            "nvidia/nim/llama",
            "1.0",
            2,
            model(ModelType::TextCompletion),
        ),
        discovered(
            ml,
            "nvidia/nim/embed",
            "1.0",
            3,
            model(ModelType::TextEmbedding),
        ),
        discovered(db, "postgresql", "16", 4, database()),
        discovered(db, "postgresql", "17", 5, database()),
    ])
    .await;
    (public, ml, db)
}

#[tokio::test]
async fn pages_need_a_sign_in_and_every_page_has_the_csp_and_no_inline_script() {
    let env = Env::new().await;
    let (_, ml, _) = three_teams(&env).await;
    let svc = env.start().await;
    env.caught_up().await;

    let anonymous = Browser::new(&svc);
    for path in [
        "/",
        "/models",
        "/activity",
        &format!("/repositories/{ml}/nvidia/nim/llama"),
    ] {
        let p = anonymous.get(path).await;
        assert_eq!(p.status, 303, "{path}");
        assert!(
            p.location().starts_with("/login?next=%2F"),
            "{path}: {}",
            p.location()
        );
    }
    // A form without a session is refused too.
    let p = anonymous
        .post(
            &format!("/repositories/{ml}/nvidia/nim/llama"),
            &[("action", "approve")],
        )
        .await;
    assert!(p.status == 303 || p.status == 403, "{}", p.status);

    let admin = Browser::signed_in(&svc, ADMIN).await;
    for path in [
        "/".to_owned(),
        "/models".to_owned(),
        "/activity".to_owned(),
        format!("/repositories/{ml}/nvidia/nim/llama"),
        format!("/repositories/{ml}/nvidia/nim/llama?as_of=2025-01-01T00:00:00Z"),
        "/?kind=nope".to_owned(),
        format!("/repositories/{ml}/no/such/repository"),
        "/login".to_owned(),
    ] {
        let p = admin.get(&path).await;
        assert!(
            [200, 303, 404, 422].contains(&p.status),
            "{path}: {}",
            p.status
        );
        if p.status != 303 {
            assert_safe_page(&p, &path);
        }
    }
    svc.stop().await;
}

#[tokio::test]
async fn the_libraries_list_filter_search_and_page_what_the_token_sees() {
    let env = Env::new().await;
    let (_, ml, db) = three_teams(&env).await;
    let svc = env.start().await;
    env.caught_up().await;
    let admin = Browser::signed_in(&svc, ADMIN).await;

    let all = admin.get("/").await;
    assert_eq!(all.status, 200);
    assert_eq!(all.rows("images"), 5, "{}", all.body);
    assert!(
        all.body
            .contains(r#"<form class="filters" method="get" action="/""#)
    );
    assert!(all.body.contains("<strong>5</strong>tags"), "counters");
    assert!(all.body.contains("<strong>2</strong>database images"));
    assert!(all.body.contains("<strong>2</strong>model images"));
    assert!(
        all.body
            .contains(&format!(r#"href="/repositories/{db}/postgresql""#))
    );
    assert!(all.body.contains("data-copy=\"sha256:"), "copyable digests");

    // Filters and search narrow the table.
    let p = admin.get("/?kind=database").await;
    assert_eq!((p.status, p.rows("images")), (200, 2));
    assert!(p.body.contains("postgresql") && !p.body.contains(">library/nginx<"));
    let p = admin.get("/?q=llama&kind=").await;
    assert_eq!(p.rows("images"), 1, "{}", p.body);
    assert!(p.body.contains(">nvidia/nim/llama<"));
    let p = admin.get(&format!("/?registry={ml}&arch=amd64")).await;
    assert_eq!(p.rows("images"), 2);
    let p = admin.get("/?repository=postgresql&sort=updated").await;
    assert_eq!(p.rows("images"), 2);
    // Keyset pages: the API's cursor in a next link keeping the filters.
    let p = admin.get("/?kind=database&signed=false").await;
    assert_eq!(p.rows("images"), 2);

    // A bad filter: 422, the form again, the error at its field.
    for (q, field) in [
        ("kind=nope", "kind"),
        ("registry=not-a-uuid", "registry"),
        ("max_severity=awful", "max_severity"),
        ("signed=maybe", "signed"),
        ("repository=Bad//Name", "repository"),
        ("cursor=garbage", "cursor"),
    ] {
        let p = admin.get(&format!("/?{q}")).await;
        assert_eq!(p.status, 422, "{q}");
        assert!(p.body.contains("<form class=\"filters\""), "{q}");
        assert!(
            p.body.contains(&format!(r#"id="f-{field}-error""#))
                || (field == "cursor" && p.body.contains("role=\"alert\"")),
            "{q}: {}",
            p.body
        );
        assert_eq!(p.rows("images"), 0);
    }

    // The Model Library: models only, and Deploy for deployers and admins.
    let p = admin.get("/models").await;
    assert_eq!((p.status, p.rows("models")), (200, 2));
    assert!(p.body.contains("text-completion"));
    assert_eq!(p.body.matches(r#"class="deploy button""#).count(), 2);
    assert!(p.body.contains(&format!(
        "/deployments/new?image={ml}%2Fnvidia%2Fnim%2Fllama%3A1.0"
    )));
    let p = admin.get("/models?model_type=text-embedding").await;
    assert_eq!(p.rows("models"), 1);
    let p = admin.get("/models?model_type=poetry").await;
    assert_eq!(p.status, 422);
    assert!(p.body.contains(r#"id="f-model_type-error""#));
    let deployer = Browser::signed_in(&svc, DEPLOYER).await;
    let p = deployer.get("/models").await;
    assert_eq!(p.body.matches(r#"class="deploy button""#).count(), 2);
    let viewer = Browser::signed_in(&svc, VIEWER_ML).await;
    let p = viewer.get("/models").await;
    assert_eq!(p.rows("models"), 2);
    assert!(!p.body.contains("Deploy to Model Serving"));

    // Team visibility is the API's: the db viewer sees nginx and postgresql only, and
    // an ml repository is not found for it.
    let dbv = Browser::signed_in(&svc, VIEWER_DB).await;
    let p = dbv.get("/").await;
    assert_eq!(p.rows("images"), 3);
    assert!(!p.body.contains("nvidia"));
    assert!(p.body.contains("<strong>3</strong>tags"));
    assert_eq!(
        dbv.get(&format!("/repositories/{ml}/nvidia/nim/llama"))
            .await
            .status,
        404
    );
    assert_eq!(dbv.get("/models").await.rows("models"), 0);
    svc.stop().await;
}

#[tokio::test]
async fn long_lists_get_next_links_that_keep_the_filters_and_big_repositories_a_first_part() {
    let env = Env::new().await;
    let g = RegistryId::new();
    let mut events = vec![registered(g, "Big", &[])];
    for i in 0..105u64 {
        events.push(discovered(
            g,
            "postgresql",
            &format!("16.{i}"),
            100 + i,
            database(),
        ));
    }
    env.publish(events).await;
    let svc = env.start().await;
    env.caught_up().await;
    let admin = Browser::signed_in(&svc, ADMIN).await;
    let first = admin.get("/?kind=database").await;
    assert_eq!(first.rows("images"), 50);
    let marker = r#"<a rel="next" href=""#;
    let i = first.body.find(marker).expect("a next link") + marker.len();
    let next = first.body[i..]
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&");
    assert!(next.starts_with("/?kind=database&cursor="), "{next}");
    let second = admin.get(&next).await;
    assert_eq!((second.status, second.rows("images")), (200, 50));
    let i = second.body.find(marker).expect("a next link") + marker.len();
    let next = second.body[i..]
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&");
    let third = admin.get(&next).await;
    assert_eq!((third.status, third.rows("images")), (200, 5));
    assert!(!third.body.contains(r#"rel="next""#));

    // A repository's page shows its first 100 tags and says where the others are.
    let href = format!("/repositories/{g}/postgresql");
    let p = admin.get(&href).await;
    assert_eq!((p.status, p.rows("tags")), (200, 100));
    assert!(p.body.contains("Showing the first 100 of 105 tags"));
    assert!(p.body.contains(&format!(
        r#"href="/?registry={g}&amp;repository=postgresql""#
    )));
    let p = admin.get(&format!("{href}?tags=all")).await;
    assert_eq!(p.rows("tags"), 105);
    assert!(!p.body.contains("Showing the first"));
    svc.stop().await;
}

#[tokio::test]
async fn hostile_names_labels_and_readmes_are_inert_text() {
    let env = Env::new().await;
    let g = RegistryId::new();
    let mut evil = database();
    evil.labels.insert(
        "<script>alert('label')</script>".into(),
        "<img src=x onerror=alert(1)>".into(),
    );
    evil.annotations.insert(
        "org.opencontainers.image.description".into(),
        "\"><script>alert(2)</script>".into(),
    );
    env.publish([
        registered(g, "<script>alert('registry')</script>", &[]),
        discovered(g, "team/app", "1.0", 7, evil),
    ])
    .await;
    let svc = env.start().await;
    env.caught_up().await;
    let admin = Browser::signed_in(&svc, ADMIN).await;
    let href = format!("/repositories/{g}/team/app");

    // A README with script and an event handler, set through the console's form.
    let page = admin.get(&href).await;
    let p = admin
        .post(
            &href,
            &[
                ("_csrf", &page.csrf()),
                ("action", "readme"),
                (
                    "readme",
                    "# Hello\n\n<script>alert('readme')</script>\n\n<img src=x onerror=alert(3)>\n\n<a href=\"javascript:alert(4)\" onclick=\"alert(5)\">x</a>\n\n**bold**",
                ),
            ],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert_eq!(p.location(), format!("{href}?done=readme"));

    for path in [
        href.clone(),
        "/".to_owned(),
        "/?q=app".to_owned(),
        "/activity".to_owned(),
    ] {
        let p = admin.get(&path).await;
        assert_eq!(p.status, 200, "{path}");
        assert_safe_page(&p, &path);
        assert_inert(&p.body, &path);
    }
    let p = admin.get(&format!("{href}?done=readme")).await;
    assert!(p.body.contains("README saved."));
    assert!(p.body.contains("<h2>Hello</h2>") && p.body.contains("<strong>bold</strong>"));
    assert!(
        p.body
            .contains("&lt;script&gt;alert('label')&lt;/script&gt;"),
        "labels are text"
    );
    assert!(
        p.body
            .contains("&lt;script&gt;alert('registry')&lt;/script&gt;"),
        "the registry label is text"
    );
    // The edit form shows the Markdown itself, escaped.
    assert!(
        p.body
            .contains("&lt;script&gt;alert('readme')&lt;/script&gt;")
    );

    // A hostile name in the path: a 404 page that shows it as text.
    let p = admin
        .get(&format!(
            "/repositories/{g}/%3Cscript%3Ealert(9)%3C%2Fscript%3E"
        ))
        .await;
    assert_eq!(p.status, 404);
    assert_safe_page(&p, "404");
    assert!(!p.body.contains("<script>alert(9)"));
    assert!(p.body.contains("&lt;script&gt;alert(9)"));
    let p = admin.get("/repositories/not-a-registry/x").await;
    assert_eq!(p.status, 404);
    svc.stop().await;
}

#[tokio::test]
async fn curators_act_through_forms_and_viewers_neither_see_nor_forge_them() {
    let env = Env::new().await;
    let (_, ml, _) = three_teams(&env).await;
    let svc = env.start().await;
    env.caught_up().await;
    let href = format!("/repositories/{ml}/nvidia/nim/llama");
    let api = format!("/v1/repositories/{ml}/nvidia/nim/llama");

    let curator = Browser::signed_in(&svc, CURATOR_ML).await;
    let page = curator.get(&href).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains(r#"name="action" value="approve""#));
    assert!(page.body.contains(r#"name="action" value="label""#));
    let csrf = page.csrf();
    let d2 = digest(2).to_string();
    let d99 = digest(99).to_string();

    // Approve the tag at the digest reviewed: 303 back, the event, the catalog changed.
    let p = curator
        .post(
            &href,
            &[
                ("_csrf", &csrf),
                ("action", "approve"),
                ("tag", "1.0"),
                ("digest", &d2),
                ("reason", "reviewed"),
            ],
        )
        .await;
    assert_eq!(
        (p.status, p.location()),
        (303, format!("{href}?done=approved").as_str())
    );
    assert!(
        env.event_types()
            .await
            .contains(&"io.imagelib.catalog.approved.v1".to_owned())
    );
    let detail = svc.get_as(Some(CURATOR_ML), &api).await;
    assert_eq!(detail["tags"][0]["approval"], "approved");
    assert_eq!(detail["tags"][0]["tag_approval"]["by"], "carol");
    let p = curator.get(&format!("{href}?done=approved")).await;
    assert!(p.body.contains("Approved.") && p.body.contains("badge ok"));

    // An HM tag on, and off again.
    let p = curator
        .post(
            &href,
            &[
                ("_csrf", &csrf),
                ("action", "label"),
                ("hm_tag", "approved-production"),
            ],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let detail = svc.get_as(Some(CURATOR_ML), &api).await;
    assert_eq!(
        detail["curator_hm_tags"],
        serde_json::json!(["approved-production"])
    );
    assert!(
        env.event_types()
            .await
            .contains(&"io.imagelib.catalog.labeled.v1".to_owned())
    );
    let p = curator.get(&href).await;
    assert!(p.body.contains(r#"name="action" value="unlabel""#));
    let p = curator
        .post(
            &href,
            &[
                ("_csrf", &csrf),
                ("action", "unlabel"),
                ("hm_tag", "approved-production"),
            ],
        )
        .await;
    assert_eq!(p.status, 303);
    let detail = svc.get_as(Some(CURATOR_ML), &api).await;
    assert_eq!(detail["curator_hm_tags"], serde_json::json!([]));

    // Errors at their fields, with 422; a moved digest is a 409.
    let p = curator
        .post(
            &href,
            &[
                ("_csrf", &csrf),
                ("action", "label"),
                ("hm_tag", "Not Valid!"),
            ],
        )
        .await;
    assert_eq!(p.status, 422);
    assert!(p.body.contains(r#"id="f-hm_tag-error""#), "{}", p.body);
    let p = curator
        .post(
            &href,
            &[
                ("_csrf", &csrf),
                ("action", "reject"),
                ("tag", "1.0"),
                ("reason", " "),
            ],
        )
        .await;
    assert_eq!(p.status, 422);
    assert!(p.body.contains("a rejection needs a reason"));
    assert!(p.body.contains(r#"aria-invalid="true""#));
    let p = curator
        .post(
            &href,
            &[
                ("_csrf", &csrf),
                ("action", "approve"),
                ("tag", "1.0"),
                ("digest", d99.as_str()),
            ],
        )
        .await;
    assert_eq!(p.status, 409);
    let p = curator
        .post(&href, &[("_csrf", &csrf), ("action", "launch-missiles")])
        .await;
    assert_eq!(p.status, 422);

    // CSRF: missing or another session's is refused, and nothing changes.
    let before = env.event_types().await.len();
    let p = curator
        .post(&href, &[("action", "reject"), ("reason", "no token")])
        .await;
    assert_eq!(p.status, 403);
    let other = Browser::signed_in(&svc, CURATOR_ML).await;
    let p = other
        .post(
            &href,
            &[
                ("_csrf", &csrf),
                ("action", "reject"),
                ("reason", "stale token"),
            ],
        )
        .await;
    assert_eq!(p.status, 403);

    // A viewer sees no curator form and cannot forge one.
    let viewer = Browser::signed_in(&svc, VIEWER_ML).await;
    let page = viewer.get(&href).await;
    assert_eq!(page.status, 200);
    for action in ["approve", "reject", "label", "readme"] {
        assert!(
            !page
                .body
                .contains(&format!(r#"name="action" value="{action}""#)),
            "{action} shown to a viewer"
        );
    }
    let p = viewer
        .post(
            &href,
            &[
                ("_csrf", &page.csrf()),
                ("action", "reject"),
                ("reason", "forged"),
            ],
        )
        .await;
    assert_eq!(p.status, 403);
    let deployer = Browser::signed_in(&svc, DEPLOYER).await;
    let page = deployer.get(&href).await;
    let p = deployer
        .post(&href, &[("_csrf", &page.csrf()), ("action", "approve")])
        .await;
    assert_eq!(p.status, 403);
    assert_eq!(
        env.event_types().await.len(),
        before,
        "no event from a refused form"
    );
    let detail = svc.get_as(Some(CURATOR_ML), &api).await;
    assert_eq!(detail["approval"], serde_json::Value::Null);

    // The repository decision and the history.
    let p = curator
        .post(
            &href,
            &[
                ("_csrf", &csrf),
                ("action", "reject"),
                ("reason", "licence unclear"),
            ],
        )
        .await;
    assert_eq!(p.status, 303);
    let detail = svc.get_as(Some(CURATOR_ML), &api).await;
    assert_eq!(detail["approval"]["decision"], "rejected");
    let p = curator.get(&format!("{href}?as_of=2000-01-01T00:00")).await;
    assert_eq!(p.status, 200);
    assert!(p.body.contains("No tag then."));
    let p = curator.get(&format!("{href}?as_of=yesterday")).await;
    assert_eq!(p.status, 422);
    assert!(p.body.contains(r#"id="f-as_of-error""#));
    assert!(p.rows("history") >= 1);
    svc.stop().await;
}

#[tokio::test]
async fn the_activity_lists_events_filters_them_and_streams_new_ones() {
    let env = Env::new().await;
    let (_, ml, _) = three_teams(&env).await;
    let svc = env.start().await;
    env.caught_up().await;
    let admin = Browser::signed_in(&svc, ADMIN).await;

    let p = admin.get("/activity").await;
    assert_eq!(p.status, 200);
    assert!(p.body.contains("registry.registered"), "{}", p.body);
    assert!(p.body.contains("data-sse=\"/activity/stream?after="));
    assert!(
        p.body
            .contains(&format!(r#"href="/repositories/{ml}/nvidia/nim/llama""#))
    );
    let p = admin
        .get("/activity?type=image.*&repository=postgresql")
        .await;
    assert_eq!(p.status, 200);
    assert!(p.body.contains("postgresql") && !p.body.contains("nvidia/nim"));
    assert!(
        p.body.contains(
            "data-sse=\"/activity/stream?type=image.*&amp;repository=postgresql&amp;after="
        )
    );
    let p = admin.get("/activity?type=nothing.like.this").await;
    assert_eq!(p.status, 422);
    assert!(p.body.contains(r#"id="f-type-error""#));
    // A viewer of team db sees no event of the ml registry.
    let dbv = Browser::signed_in(&svc, VIEWER_DB).await;
    let p = dbv.get("/activity").await;
    assert!(!p.body.contains("nvidia/nim"), "{}", p.body);

    // The stream sends an event that happens while it is open, in the agreed shape.
    let res = admin
        .http
        .get(format!("{}/activity/stream?type=catalog.*", admin.base))
        .header(COOKIE, admin.cookie.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, _) = svc
        .call(
            Method::POST,
            &format!("/v1/repositories/{ml}/nvidia/nim/llama/approve"),
            Some(CURATOR_ML),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let mut body = res.bytes_stream();
    let mut seen = String::new();
    let found = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(chunk) = body.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if seen.contains("catalog.approved") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(found, "no event on the stream: {seen}");
    let data = seen
        .lines()
        .find(|l| l.starts_with("data:") && l.contains("catalog.approved"))
        .unwrap();
    let msg: serde_json::Value =
        serde_json::from_str(data.trim_start_matches("data:").trim()).unwrap();
    assert!(
        msg["line"]
            .as_str()
            .unwrap()
            .contains(" carol catalog.approved "),
        "{msg}"
    );
    assert_eq!(msg["href"], format!("/repositories/{ml}/nvidia/nim/llama"));
    drop(body);

    // A bad stream filter is refused, not streamed.
    let p = admin.get("/activity/stream?after=-4").await;
    assert_eq!(p.status, 422);
    svc.stop().await;
}
