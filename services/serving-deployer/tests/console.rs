//! The deployments console over HTTP, as a browser uses it: sign in with a token (a session
//! cookie), read pages, send forms with the `_csrf` token scraped from them. Real NATS and
//! PostgreSQL, the gitops target in a temporary git repository.

mod common;

use common::{ADMIN, CURATOR, DEPLOYER, Env, Service, VIEWER};
use imagelib_events::model::{ImageKind, PolicyMode, PolicyReason, PolicyVerdict};
use imagelib_events::{EventPayload, RegistryId};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_SECURITY_POLICY, LOCATION, SET_COOKIE};

/// A signed-in browser: its session cookie, no redirects followed.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookie: String,
}

struct Page {
    status: StatusCode,
    location: Option<String>,
    csp: Option<String>,
    body: String,
}

impl Page {
    /// The `_csrf` value of the page's forms.
    fn csrf(&self) -> String {
        let at = self
            .body
            .find(r#"name="_csrf" value=""#)
            .unwrap_or_else(|| panic!("no _csrf field in {}", self.body));
        let rest = &self.body[at + r#"name="_csrf" value=""#.len()..];
        rest[..rest.find('"').unwrap()].to_owned()
    }

    /// The text of the field error shown at `field`.
    fn field_error(&self, field: &str) -> Option<String> {
        let marker = format!(r#"id="f-{field}-error">"#);
        let at = self.body.find(&marker)?;
        let rest = &self.body[at + marker.len()..];
        Some(rest[..rest.find("</p>")?].to_owned())
    }
}

async fn read(res: reqwest::Response) -> Page {
    let status = res.status();
    let header = |n| {
        res.headers()
            .get(n)
            .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let location = header(LOCATION);
    let csp = header(CONTENT_SECURITY_POLICY);
    let body = res.text().await.unwrap();
    Page {
        status,
        location,
        csp,
        body,
    }
}

impl Browser {
    async fn sign_in(svc: &Service, token: &str) -> Browser {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let base = svc.url("");
        let res = http
            .post(format!("{base}/login"))
            .form(&[("token", token), ("next", "/deployments")])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        assert_eq!(res.headers()[LOCATION], "/deployments");
        let cookie = res.headers()[SET_COOKIE]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        Browser { http, base, cookie }
    }

    async fn get(&self, path: &str) -> Page {
        read(
            self.http
                .get(format!("{}{path}", self.base))
                .header("cookie", &self.cookie)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        read(
            self.http
                .post(format!("{}{path}", self.base))
                .header("cookie", &self.cookie)
                .form(fields)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// GET `form_page`, then POST `fields` with its CSRF token to `action`.
    async fn submit(&self, form_page: &str, action: &str, fields: &[(&str, &str)]) -> Page {
        let page = self.get(form_page).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let csrf = page.csrf();
        let mut all = vec![("_csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        self.post(action, &all).await
    }
}

/// A registry everyone sees with a model tag, in the deployer's view.
async fn model(env: &Env, repo: &str) -> (RegistryId, String) {
    let reg = env.registry(&[]).await;
    let digest = env.tag(reg, repo, "1.2.0", ImageKind::Model, &[]).await;
    env.settled().await;
    (reg, digest.to_string())
}

fn id_from(location: &str) -> String {
    location
        .strip_prefix("/deployments/")
        .and_then(|r| r.split('?').next())
        .unwrap_or_else(|| panic!("not a deployment page: {location}"))
        .to_owned()
}

/// Deploy through the form; returns the deployment id.
async fn deploy_form(b: &Browser, image: &str, name: &str, env_lines: &str) -> String {
    let res = b
        .submit(
            &format!("/deployments/new?image={image}"),
            "/deployments",
            &[
                ("image", image),
                ("name", name),
                ("namespace", "models"),
                ("replicas", "2"),
                ("cpu_request", "4"),
                ("memory_limit", "32Gi"),
                ("gpu_limit", "1"),
                ("env", env_lines),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let location = res.location.unwrap();
    assert!(location.ends_with("?done=deployed"), "{location}");
    id_from(&location)
}

#[tokio::test]
async fn a_model_is_deployed_through_the_form_and_shows_in_the_list_with_its_manifest() {
    let env = Env::new();
    let svc = env.start().await;
    let (reg, digest) = model(&env, "acme/llm-server").await;
    let b = Browser::sign_in(&svc, DEPLOYER).await;

    // The Model Library's "Deploy to Model Serving" link lands on a prefilled form.
    let image = format!("{reg}/acme/llm-server:1.2.0");
    let form = b.get(&format!("/deployments/new?image={image}")).await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(
        form.csp
            .as_deref()
            .is_some_and(|c| c.contains("script-src 'self'") && !c.contains("unsafe-inline")),
        "{:?}",
        form.csp
    );
    assert!(
        form.body
            .contains(&format!(r#"name="image" type="text" value="{image}""#)),
        "{}",
        form.body
    );
    assert!(
        form.body.contains(r#"value="llm-server""#),
        "name suggested"
    );
    assert!(
        form.body.contains(&digest[..19]),
        "what the tag resolves to"
    );
    assert!(form.body.contains(r#"<label for="f-env">"#));

    let id = deploy_form(&b, &image, "llama", "LOG_LEVEL=debug\nAPI_KEY=s3cret\n").await;

    // The list has it, with its kind, status and short digest.
    let list = b.get("/deployments").await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(
        list.body.contains(r#"<table id="deployments">"#),
        "{}",
        list.body
    );
    assert!(
        list.body
            .contains(&format!(r#"href="/deployments/{id}">llama</a>"#))
    );
    assert!(list.body.contains("acme/llm-server:1.2.0"));
    assert!(list.body.contains("KServe model"));
    assert!(
        list.body
            .contains(r#"<span class="badge ok">applied</span>"#)
    );
    assert!(list.body.contains(&digest[..19]));
    assert!(list.body.contains(r#"href="/deployments/new""#));
    assert!(list.body.contains(r#"href="/provisioning/postgres/new""#));
    assert!(list.csp.is_some());

    // Its page: the timeline, the manifest as applied (pinned by digest), env values for a
    // deployer, the delete form.
    let page = b.get(&format!("/deployments/{id}?done=deployed")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Deployment requested"), "the notice");
    let timeline = &page.body[page.body.find(r#"<ol class="timeline">"#).unwrap()..];
    let timeline = &timeline[..timeline.find("</ol>").unwrap()];
    let states: Vec<&str> = ["requested", "rendered", "applied"]
        .into_iter()
        .filter(|s| timeline.contains(&format!(">{s}</span>")))
        .collect();
    assert_eq!(states, ["requested", "rendered", "applied"], "{timeline}");
    let manifest = &page.body[page.body.find(r#"<pre class="manifest">"#).unwrap()..];
    assert!(manifest.contains("kind: InferenceService"), "{manifest}");
    assert!(manifest.contains(&format!("acme/llm-server@{digest}")));
    assert!(manifest.contains("minReplicas: 2"));
    assert!(manifest.contains("s3cret"), "a deployer sees env values");
    assert!(!page.body.contains("labels changed since"), "as applied");
    assert!(
        page.body
            .contains(&format!(r#"action="/deployments/{id}/delete""#))
    );

    // What the form did is what the API does: the same file committed by the signed-in
    // subject, and the events carry that actor.
    let file = common::documents(&env.gitops().join("models/llama.yaml"));
    let container = &file[0]["spec"]["predictor"]["containers"][0];
    assert_eq!(container["resources"]["limits"]["nvidia.com/gpu"], 1);
    assert_eq!(container["resources"]["requests"]["cpu"], "4");
    assert!(env.git(&["log", "-1", "--format=%s%n%b"]).contains("dana"));
    let mut replay = env.bus().await.replay(1, None, None).await.unwrap();
    let mut requested_by = None;
    while let Some(item) = replay.next().await {
        if let Ok(e) = item.unwrap().event
            && matches!(e.payload, EventPayload::DeploymentRequested(_))
        {
            requested_by = e.actor.clone();
        }
    }
    assert_eq!(requested_by.as_deref(), Some("dana"));

    // The same form again: nothing new.
    let again = b
        .submit(
            "/deployments/new",
            "/deployments",
            &[
                ("image", &image),
                ("name", "llama"),
                ("namespace", "models"),
                ("replicas", "2"),
                ("cpu_request", "4"),
                ("memory_limit", "32Gi"),
                ("gpu_limit", "1"),
                ("env", "LOG_LEVEL=debug\nAPI_KEY=s3cret"),
            ],
        )
        .await;
    assert_eq!(again.status, StatusCode::SEE_OTHER, "{}", again.body);
    assert!(again.location.unwrap().ends_with("?done=unchanged"));

    // "Change and redeploy": the form filled with its spec; one change goes through.
    assert!(
        page.body
            .contains(&format!(r#"href="/deployments/new?from={id}""#))
    );
    let edit = b.get(&format!("/deployments/new?from={id}")).await;
    assert_eq!(edit.status, StatusCode::OK);
    for want in [
        format!(r#"name="image" type="text" value="{image}""#),
        r#"name="name" type="text" value="llama""#.to_owned(),
        r#"name="replicas" type="number" value="2""#.to_owned(),
        r#"name="cpu_request" type="text" value="4""#.to_owned(),
        r#"name="gpu_limit" type="text" value="1""#.to_owned(),
        "API_KEY=s3cret\nLOG_LEVEL=debug\n".to_owned(),
    ] {
        assert!(edit.body.contains(&want), "{want} not in {}", edit.body);
    }
    let res = b
        .post(
            "/deployments",
            &[
                ("_csrf", edit.csrf().as_str()),
                ("image", &image),
                ("name", "llama"),
                ("namespace", "models"),
                ("replicas", "3"),
                ("cpu_request", "4"),
                ("memory_limit", "32Gi"),
                ("gpu_limit", "1"),
                ("env", "API_KEY=s3cret\nLOG_LEVEL=debug\n"),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    assert_eq!(
        res.location.as_deref(),
        Some(format!("/deployments/{id}?done=deployed").as_str())
    );
    let file = common::documents(&env.gitops().join("models/llama.yaml"));
    assert_eq!(file[0]["spec"]["predictor"]["maxReplicas"], 3);
    // Not a model deployment's form for another kind, nor for an unknown id.
    assert_eq!(
        b.get(&format!("/provisioning/postgres/new?from={id}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        b.get("/deployments/new?from=nope").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn postgres_is_provisioned_through_its_form() {
    let env = Env::new();
    let svc = env.start().await;
    let reg = env.registry(&[]).await;
    let digest = env
        .tag(reg, "pg/postgres", "16.4", ImageKind::Database, &[])
        .await;
    env.settled().await;
    let b = Browser::sign_in(&svc, ADMIN).await;
    let image = format!("{reg}/pg/postgres:16.4");
    let res = b
        .submit(
            &format!("/provisioning/postgres/new?image={image}"),
            "/provisioning/postgres",
            &[
                ("image", &image),
                ("name", "orders-db"),
                ("namespace", "data"),
                ("instances", "3"),
                ("storage", "20Gi"),
                ("parameters", "max_connections=200"),
                ("shared_preload_libraries", "pg_stat_statements"),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let id = id_from(&res.location.unwrap());
    let page = b.get(&format!("/deployments/{id}")).await;
    assert!(page.body.contains("CloudNativePG"));
    let manifest = &page.body[page.body.find(r#"<pre class="manifest">"#).unwrap()..];
    let edit = b
        .get(&format!("/provisioning/postgres/new?from={id}"))
        .await;
    assert_eq!(edit.status, StatusCode::OK);
    for want in [
        r#"name="instances" type="number" value="3""#,
        r#"name="storage" type="text" value="20Gi""#,
        "max_connections=200\n",
        r#"value="pg_stat_statements""#,
    ] {
        assert!(edit.body.contains(want), "{want} not in {}", edit.body);
    }
    for want in [
        "kind: Cluster",
        "instances: 3",
        "size: 20Gi",
        "max_connections: '200'",
        &format!("pg/postgres@{digest}"),
    ] {
        assert!(manifest.contains(want), "{want} not in {manifest}");
    }

    // A model image is not a database image: refused at the image field.
    let m = env.tag(reg, "acme/llm", "1.0", ImageKind::Model, &[]).await;
    env.settled().await;
    let wrong = b
        .submit(
            "/provisioning/postgres/new",
            "/provisioning/postgres",
            &[
                ("image", &format!("{reg}/acme/llm:1.0")),
                ("name", "x"),
                ("namespace", "data"),
            ],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNPROCESSABLE_ENTITY);
    let err = wrong.field_error("image").unwrap();
    assert!(err.contains("not a database image"), "{err}");
    assert!(wrong.body.contains(&m.as_str()[..19]), "the preview");
}

#[tokio::test]
async fn bad_fields_are_refused_at_the_field_and_nothing_is_requested() {
    let env = Env::new();
    let svc = env.start().await;
    let (reg, _) = model(&env, "acme/llm").await;
    let b = Browser::sign_in(&svc, DEPLOYER).await;
    let image = format!("{reg}/acme/llm:1.2.0");
    let events = env.event_types().await.len();

    let res = b
        .submit(
            "/deployments/new",
            "/deployments",
            &[
                ("image", &image),
                ("name", "Bad_Name"),
                ("namespace", "models"),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.body);
    let err = res.field_error("name").unwrap();
    assert!(err.contains("not a valid Kubernetes name"), "{err}");
    assert!(res.body.contains(r#"aria-invalid="true""#));
    // The form comes back as it was typed.
    assert!(res.body.contains(r#"value="Bad_Name""#));
    assert!(res.body.contains(&format!(r#"value="{image}""#)));

    // The form's own checks: a number that is not one, an env line without `=`.
    let res = b
        .submit(
            "/deployments/new",
            "/deployments",
            &[
                ("image", &image),
                ("name", "ok"),
                ("namespace", "models"),
                ("replicas", "two"),
                ("env", "JUSTANAME"),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(res.field_error("replicas").is_some(), "{}", res.body);
    assert!(res.field_error("env").unwrap().contains("KEY=value"));

    // The deployer's checks behind the form: an env name, too many replicas, an image not
    // in the catalog.
    for (fields, field, words) in [
        (
            vec![("env", "1BAD=x")],
            "env",
            "not a valid environment variable name",
        ),
        (vec![("replicas", "500")], "replicas", "at most 100"),
    ] {
        let mut all = vec![
            ("image", image.as_str()),
            ("name", "ok"),
            ("namespace", "models"),
        ];
        all.extend(fields);
        let res = b.submit("/deployments/new", "/deployments", &all).await;
        assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.body);
        let err = res
            .field_error(field)
            .unwrap_or_else(|| panic!("no error at {field}: {}", res.body));
        assert!(err.contains(words), "{err}");
    }
    let missing = format!("{reg}/acme/nothing:1.0");
    let res = b
        .submit(
            "/deployments/new",
            "/deployments",
            &[("image", &missing), ("name", "ok"), ("namespace", "models")],
        )
        .await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    assert!(
        res.field_error("image")
            .unwrap()
            .contains("not in the catalog")
    );

    assert_eq!(env.event_types().await.len(), events, "nothing requested");
}

#[tokio::test]
async fn a_policy_violating_image_is_refused_with_its_reasons_shown() {
    let env = Env::new();
    let svc = env.start().await;
    let reg = env.registry(&[]).await;
    env.rule(reg, "prod", "acme/**", Some(PolicyMode::Enforce))
        .await;
    let digest = env.tag(reg, "acme/llm", "1.0", ImageKind::Model, &[]).await;
    env.verdict(
        reg,
        "acme/llm",
        &digest,
        PolicyVerdict::Fail,
        "prod",
        &[
            (PolicyReason::Unsigned, "no signature referrer"),
            (
                PolicyReason::SeverityAboveLimit,
                "CVE-2024-1234 (critical) <img src=x onerror=alert(1)>",
            ),
        ],
    )
    .await;
    env.settled().await;
    let commits = env.commit_count();
    let b = Browser::sign_in(&svc, DEPLOYER).await;
    let res = b
        .submit(
            "/deployments/new",
            "/deployments",
            &[
                ("image", &format!("{reg}/acme/llm:1.0")),
                ("name", "llm"),
                ("namespace", "models"),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN, "{}", res.body);
    assert!(res.body.contains(r#"role="alert""#));
    for words in [
        "Refused by trust policy <code>prod</code>",
        "unsigned: no signature is attached to the image",
        "no signature referrer",
        "severity above the limit",
        "CVE-2024-1234 (critical) &lt;img src=x onerror=alert(1)&gt;",
    ] {
        assert!(res.body.contains(words), "{words} not in {}", res.body);
    }
    assert!(!res.body.contains("<img src=x"), "findings are escaped");
    // The form is still there to correct, and nothing was deployed.
    assert!(res.body.contains(r#"value="llm""#));
    assert_eq!(env.commit_count(), commits);
    let list = b.get("/deployments").await;
    assert!(!list.body.contains(r#"<table id="deployments">"#));
}

#[tokio::test]
async fn a_deployment_is_deleted_through_its_form() {
    let env = Env::new();
    let svc = env.start().await;
    let (reg, _) = model(&env, "acme/llm").await;
    let b = Browser::sign_in(&svc, DEPLOYER).await;
    let id = deploy_form(&b, &format!("{reg}/acme/llm:1.2.0"), "llm", "").await;
    let file = env.gitops().join("models/llm.yaml");
    assert!(file.exists());

    let page = b.get(&format!("/deployments/{id}")).await;
    let form_at = page
        .body
        .find("<form method=\"post\" action=\"/deployments/")
        .unwrap();
    let form = &page.body[form_at..form_at + page.body[form_at..].find('>').unwrap()];
    assert!(
        form.contains(&format!("/deployments/{id}/delete")),
        "{form}"
    );
    assert!(form.contains("data-confirm=\"Delete models/llm?"), "{form}");

    let res = b
        .post(
            &format!("/deployments/{id}/delete"),
            &[("_csrf", &page.csrf())],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    assert_eq!(
        res.location.as_deref(),
        Some(format!("/deployments/{id}?done=deleted").as_str())
    );
    assert!(!file.exists());
    assert_eq!(
        env.event_types().await.last().unwrap(),
        "io.imagelib.deployment.deleted.v1"
    );
    let page = b.get(&format!("/deployments/{id}?done=deleted")).await;
    assert!(page.body.contains("Deleted: its manifests were removed"));
    assert!(page.body.contains(">deleted</span>"));
    assert!(
        !page.body.contains("/delete\""),
        "no delete form once deleted"
    );

    // Again (a stale page): a 404 page, not an error.
    let res = b
        .post(
            &format!("/deployments/{id}/delete"),
            &[("_csrf", &page.csrf())],
        )
        .await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    // An id that is no id, and one that does not exist.
    assert_eq!(
        b.get("/deployments/not-a-uuid").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        b.get(&format!("/deployments/{}", uuid::Uuid::new_v4()))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        b.get("/deployments?cursor=garbage").await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

#[tokio::test]
async fn viewers_and_curators_read_but_see_no_forms_and_their_posts_are_refused() {
    let env = Env::new();
    let svc = env.start().await;
    let (reg, _) = model(&env, "acme/llm").await;
    let deployer = Browser::sign_in(&svc, DEPLOYER).await;
    let image = format!("{reg}/acme/llm:1.2.0");
    let id = deploy_form(&deployer, &image, "llm", "API_KEY=s3cret").await;
    let file = env.gitops().join("models/llm.yaml");

    for token in [VIEWER, CURATOR] {
        let b = Browser::sign_in(&svc, token).await;
        let list = b.get("/deployments").await;
        assert_eq!(list.status, StatusCode::OK);
        assert!(list.body.contains(&format!("/deployments/{id}")));
        assert!(!list.body.contains("/deployments/new"), "{}", list.body);
        assert!(!list.body.contains("/provisioning/postgres/new"));

        let page = b.get(&format!("/deployments/{id}")).await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(!page.body.contains("/delete\""), "no delete form");
        assert!(!page.body.contains("s3cret"), "env values masked");
        assert!(page.body.contains("***"));
        assert!(page.body.contains("kind: InferenceService"));

        assert_eq!(
            b.get(&format!("/deployments/new?image={image}"))
                .await
                .status,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            b.get("/provisioning/postgres/new").await.status,
            StatusCode::FORBIDDEN
        );
        // Forged forms, with this viewer's own valid CSRF token (from the sign-out form).
        let csrf = list.csrf();
        let res = b
            .post(
                "/deployments",
                &[
                    ("_csrf", csrf.as_str()),
                    ("image", &image),
                    ("name", "forged"),
                    ("namespace", "models"),
                ],
            )
            .await;
        assert_eq!(res.status, StatusCode::FORBIDDEN, "{}", res.body);
        let res = b
            .post(
                "/provisioning/postgres",
                &[("_csrf", csrf.as_str()), ("image", &image)],
            )
            .await;
        assert_eq!(res.status, StatusCode::FORBIDDEN);
        let res = b
            .post(&format!("/deployments/{id}/delete"), &[("_csrf", &csrf)])
            .await;
        assert_eq!(res.status, StatusCode::FORBIDDEN);
    }
    assert!(file.exists(), "still deployed");
    assert!(!env.gitops().join("models/forged.yaml").exists());
}

#[tokio::test]
async fn forms_without_a_valid_csrf_token_or_from_another_site_are_refused() {
    let env = Env::new();
    let svc = env.start().await;
    let (reg, _) = model(&env, "acme/llm").await;
    let b = Browser::sign_in(&svc, DEPLOYER).await;
    let image = format!("{reg}/acme/llm:1.2.0");
    let fields = [
        ("image", image.as_str()),
        ("name", "llm"),
        ("namespace", "models"),
    ];
    let res = b.post("/deployments", &fields).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN, "no token");
    assert!(res.csp.is_some());
    let mut stale = vec![("_csrf", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")];
    stale.extend_from_slice(&fields);
    assert_eq!(
        b.post("/deployments", &stale).await.status,
        StatusCode::FORBIDDEN,
        "a token of no session"
    );
    // The right token, but sent by a page of another origin.
    let csrf = b.get("/deployments/new").await.csrf();
    let mut ok = vec![("_csrf", csrf.as_str())];
    ok.extend_from_slice(&fields);
    let res = read(
        b.http
            .post(format!("{}/deployments", b.base))
            .header("cookie", &b.cookie)
            .header("origin", "http://evil.example")
            .form(&ok)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    // No session at all: sent to sign in.
    let res = read(
        b.http
            .post(format!("{}/deployments", b.base))
            .form(&ok)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(res.status.is_redirection(), "{}", res.status);
    assert!(res.location.unwrap().starts_with("/login"));
    assert!(!env.gitops().join("models/llm.yaml").exists());
    // And with everything right it goes through.
    assert_eq!(
        b.post("/deployments", &ok).await.status,
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn untrusted_text_is_escaped_on_every_page() {
    let env = Env::new();
    let svc = env.start().await;
    // A registry label, an address and env values crafted to inject script.
    let reg = RegistryId::new();
    env.publish(imagelib_events::event::RegistryRegistered {
        report_pulls: false,
        registry_id: reg,
        label: "<script>alert('label')</script>".into(),
        url: "registry.acme.internal:5000/ai".into(),
        registry_type: imagelib_events::model::RegistryType::Generic,
        insecure: false,
        auth_kind: imagelib_events::model::AuthKind::None,
        credential: None,
        visibility: vec![],
        ca_pem: None,
        scan_interval_secs: None,
        repositories: vec![],
        webhook_secret: None,
        auth_hosts: vec![],
        proxy_url: None,
        no_proxy: Vec::new(),
        artifact_registry: None,
    })
    .await;
    env.tag(reg, "acme/llm", "1.0", ImageKind::Model, &[]).await;
    env.settled().await;
    let b = Browser::sign_in(&svc, DEPLOYER).await;

    let hostile = "\"><script>alert('image')</script>";
    let form = b
        .get(&format!("/deployments/new?image={}", url_encode(hostile)))
        .await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(!form.body.contains("<script>alert"), "{}", form.body);
    assert!(form.body.contains("&quot;&gt;&lt;script&gt;alert('image')"));

    let image = format!("{reg}/acme/llm:1.0");
    let preview = b
        .get(&format!("/deployments/new?image={}", url_encode(&image)))
        .await;
    assert!(preview.body.contains("&lt;script&gt;alert('label')"));
    assert!(!preview.body.contains("<script>alert"));

    let id = deploy_form(
        &b,
        &image,
        "llm",
        "GREETING=</code></pre><script>alert('env')</script>",
    )
    .await;
    for path in ["/deployments".to_owned(), format!("/deployments/{id}")] {
        let page = b.get(&path).await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(
            !page.body.contains("<script>alert"),
            "{path}: {}",
            page.body
        );
        assert!(page.body.contains("&lt;script&gt;alert("), "{path}");
        assert!(!page.body.contains(" style="), "no inline style");
        assert!(
            !page.body.contains("<script>") && !page.body.contains("onerror"),
            "no inline script"
        );
    }
    // A refusal's text is escaped too: the bad name is echoed back.
    let res = b
        .submit(
            "/deployments/new",
            "/deployments",
            &[
                ("image", &image),
                ("name", "<b>x</b>"),
                ("namespace", "models"),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(!res.body.contains("<b>x</b>"));
    assert!(
        res.field_error("name")
            .unwrap()
            .contains("&lt;b&gt;x&lt;/b&gt;")
    );
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn the_list_pages_by_keyset_and_hides_deployments_of_registries_not_seen() {
    let env = Env::new();
    let svc = env.start().await;
    let (reg, _) = model(&env, "acme/llm").await;
    // A registry only the team `ml` sees: the viewer (team `other`) sees none of its
    // deployments, the admin does.
    let hidden = env.registry(&["ml"]).await;
    env.tag(hidden, "acme/secret", "1.0", ImageKind::Model, &[])
        .await;
    env.settled().await;
    let admin = Browser::sign_in(&svc, ADMIN).await;
    let mut ids = Vec::new();
    for name in ["a1", "a2", "a3"] {
        ids.push(deploy_form(&admin, &format!("{reg}/acme/llm:1.2.0"), name, "").await);
    }
    let secret = deploy_form(&admin, &format!("{hidden}/acme/secret:1.0"), "secret", "").await;

    let viewer = Browser::sign_in(&svc, VIEWER).await;
    let mut seen = Vec::new();
    let mut path = "/deployments?limit=2".to_owned();
    for _ in 0..5 {
        let page = viewer.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let rows = page.body.matches("<tr><th scope=\"row\">").count();
        assert!((1..=2).contains(&rows), "{rows} rows on a page of 2");
        for id in ids.iter().chain([&secret]) {
            if page.body.contains(&format!("href=\"/deployments/{id}\"")) {
                seen.push(id.clone());
            }
        }
        match page.body.find("rel=\"next\" href=\"") {
            Some(at) => {
                let rest = &page.body[at + "rel=\"next\" href=\"".len()..];
                path = rest[..rest.find('"').unwrap()].replace("&amp;", "&");
                assert!(path.contains("limit=2"), "{path}");
            }
            None => break,
        }
    }
    seen.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(
        seen, want,
        "each visible deployment once, the hidden one never"
    );
    assert_eq!(
        viewer.get(&format!("/deployments/{secret}")).await.status,
        StatusCode::NOT_FOUND
    );
    let all = admin.get("/deployments").await;
    assert!(
        all.body
            .contains(&format!("href=\"/deployments/{secret}\""))
    );
    assert_eq!(
        admin.get("/deployments?limit=0").await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

#[tokio::test]
async fn a_mutated_tag_is_refused_with_both_digests_and_the_running_deployment_is_flagged() {
    use imagelib_events::event::{TagMoved, TagMutated};
    use imagelib_events::model::{ImageDetails, MutationFoundBy};
    let env = Env::new();
    let svc = env.start().await;
    let (reg, old) = model(&env, "acme/llm").await;
    let b = Browser::sign_in(&svc, DEPLOYER).await;
    let image = format!("{reg}/acme/llm:1.2.0");
    let id = deploy_form(&b, &image, "llm", "").await;

    let new: imagelib_events::Digest = format!("sha256:{:064x}", 2).parse().unwrap();
    let details = ImageDetails {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        artifact_type: None,
        platforms: vec![],
        size: 1000,
        created: None,
        labels: Default::default(),
        annotations: Default::default(),
        kind: ImageKind::Model,
        model_type: None,
        extensions: vec![],
        referrers: vec![],
    };
    env.publish(TagMoved {
        registry_id: reg,
        repository: "acme/llm".parse().unwrap(),
        tag: "1.2.0".parse().unwrap(),
        old_digest: old.parse().unwrap(),
        new_digest: new.clone(),
        details,
    })
    .await;
    env.publish(TagMutated {
        registry_id: reg,
        repository: "acme/llm".parse().unwrap(),
        tag: "1.2.0".parse().unwrap(),
        old_digest: old.parse().unwrap(),
        new_digest: new.clone(),
        found_by: MutationFoundBy::Webhook,
        seen_at: None,
    })
    .await;
    env.settled().await;

    // Flagged in the list and on its page; still applied.
    let list = b.get("/deployments").await;
    assert!(list.body.contains(">tag mutated</span>"), "{}", list.body);
    let page = b.get(&format!("/deployments/{id}")).await;
    assert!(page.body.contains(">applied</span>"));
    assert!(page.body.contains("was re-pushed"));
    assert!(page.body.contains(&new.as_str()[..19]));

    // The tag now points at the mutated digest: a 409 naming both and the way out.
    let f = [
        ("image", image.as_str()),
        ("name", "llm-new"),
        ("namespace", "models"),
    ];
    let res = b.submit("/deployments/new", "/deployments", &f).await;
    assert_eq!(res.status, StatusCode::CONFLICT, "{}", res.body);
    let pin_old = format!("{image}@{old}");
    for want in [
        "was re-pushed although policy calls it immutable",
        &old[..19],
        &new.as_str()[..19],
        "imagelib images approve",
        &pin_old,
    ] {
        assert!(res.body.contains(want), "{want} not in {}", res.body);
    }
    // Keeping the old content deploys.
    let f = [
        ("image", pin_old.as_str()),
        ("name", "llm-old"),
        ("namespace", "models"),
    ];
    let res = b.submit("/deployments/new", "/deployments", &f).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
}
