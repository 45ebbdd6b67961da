//! Manage Repositories in the console, over HTTP as a browser without script sends it,
//! against a real NATS JetStream, PostgreSQL and real `docker-registry` processes: sign in,
//! add a registry through the form, refusals at their field, rename, rotate, validate and
//! remove, the rules editor, Sync now's live progress, roles, CSRF, escaping.

mod common;

use std::time::Duration;

use common::{ADMIN, Env, VIEWER_ML};
use imagelib_events::bus::{EventBus, StreamSettings};
use imagelib_events::event::{SyncCompleted, SyncStarted, TagDiscovered, TagRemoved};
use imagelib_events::ids::SyncId;
use imagelib_events::model::SyncReason;
use imagelib_events::{Envelope, RegistryId};
use imagelib_testkit::registry::TestRegistry;
use reqwest::header;
use serde_json::json;

/// A browser without script: a session cookie, no redirects followed, every body kept.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookie: String,
    bodies: std::sync::Mutex<String>,
}

struct Page {
    status: u16,
    headers: header::HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The `_csrf` value of the page's forms.
    fn csrf(&self) -> String {
        let marker = r#"name="_csrf" value=""#;
        let at = self.body.find(marker).expect("a form with a CSRF token") + marker.len();
        self.body[at..].split('"').next().unwrap().to_owned()
    }
}

impl Browser {
    async fn sign_in(svc: &common::Service, token: &str) -> Browser {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let base = format!("http://{}", svc.addr);
        let res = http
            .post(format!("{base}/login"))
            .form(&[("token", token), ("next", "/registries")])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 303, "sign-in");
        let cookie = res
            .headers()
            .get(header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .and_then(|c| c.split(';').next())
            .expect("a session cookie")
            .to_owned();
        Browser {
            http,
            base,
            cookie,
            bodies: Default::default(),
        }
    }

    async fn page(&self, res: reqwest::Response) -> Page {
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let body = res.text().await.unwrap();
        self.bodies.lock().unwrap().push_str(&body);
        Page {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, path: &str) -> Page {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .header(header::COOKIE, &self.cookie)
            .send()
            .await
            .unwrap();
        self.page(res).await
    }

    /// A form as the browser sends it, with `csrf` as its `_csrf` field (when given).
    async fn post(&self, path: &str, csrf: Option<&str>, fields: &[(&str, &str)]) -> Page {
        let mut form: Vec<(&str, &str)> = fields.to_vec();
        if let Some(c) = csrf {
            form.push(("_csrf", c));
        }
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .header(header::COOKIE, &self.cookie)
            .header(header::ORIGIN, &self.base)
            .form(&form)
            .send()
            .await
            .unwrap();
        self.page(res).await
    }

    /// Every body this browser was sent.
    fn everything(&self) -> String {
        self.bodies.lock().unwrap().clone()
    }
}

fn canary() -> String {
    format!("canary-{}", imagelib_testkit::unique_id())
}

async fn bus(env: &Env) -> EventBus {
    EventBus::from_client(
        env.stream.client().await.unwrap(),
        StreamSettings::new(&env.stream.name, &env.stream.prefix),
    )
}

async fn add_open(b: &Browser, registry: &TestRegistry, label: &str) -> String {
    let form = b.get("/registries/new?type=generic").await;
    let url = format!("127.0.0.1:{}", registry.port());
    let res = b
        .post(
            "/registries",
            Some(&form.csrf()),
            &[
                ("registry_type", "generic"),
                ("label", label),
                ("url", &url),
                ("insecure", "true"),
            ],
        )
        .await;
    assert_eq!(res.status, 303, "{}", res.body);
    res.location()
        .strip_prefix("/registries/")
        .and_then(|l| l.strip_suffix("?done=added"))
        .unwrap_or_else(|| panic!("redirect to the registry: {}", res.location()))
        .to_owned()
}

#[tokio::test]
async fn an_admin_adds_a_registry_through_the_form() {
    let env = Env::new();
    let svc = env.start().await;
    let registry = TestRegistry::start().await.unwrap();
    let b = Browser::sign_in(&svc, ADMIN).await;

    let list = b.get("/registries").await;
    assert_eq!(list.status, 200);
    let csp = list.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(
        list.body.contains(r#"href="/registries/new""#),
        "{}",
        list.body
    );
    assert!(list.body.contains("No registries yet"));

    // One form per type, chosen without script.
    let generic = b.get("/registries/new").await;
    assert_eq!(generic.status, 200);
    for needle in [
        r#"<select id="f-registry_type" name="registry_type""#,
        r#"name="label""#,
        r#"name="url""#,
        r#"name="username""#,
        r#"name="password" type="password""#,
        "Password / Token",
        "Add registry",
    ] {
        assert!(generic.body.contains(needle), "{needle}: {}", generic.body);
    }
    let hub = b.get("/registries/new?registry_type=dockerhub").await;
    for needle in [
        "Docker Hub Username",
        "Access Token",
        r#"value="registry-1.docker.io""#,
    ] {
        assert!(hub.body.contains(needle), "{needle}");
    }
    // Docker Hub has one address, filled in and optional; its namespace is asked for.
    assert!(
        hub.body
            .contains(r#"name="url" type="text" value="registry-1.docker.io""#),
        "{}",
        hub.body
    );
    assert!(
        !hub.body
            .contains(r#"name="url" type="text" value="registry-1.docker.io" required"#)
    );
    assert!(hub.body.contains("Namespace"));
    assert!(hub.body.contains(r#"data-profile="#));
    // Another type's fields are in the form for the script, hidden and never sent.
    assert!(
        generic
            .body
            .contains(r#"name="namespace" type="text" value="" placeholder="acme" disabled"#),
        "{}",
        generic.body
    );
    assert!(
        generic
            .body
            .contains(r#"data-field="namespace" data-profile="#)
    );
    let gh = b.get("/registries/new?type=ghcr").await;
    assert!(gh.body.contains("GitHub Username") && gh.body.contains("Personal Access Token"));
    let ecr = b.get("/registries/new?type=ecr").await;
    assert!(ecr.body.contains(r#"name="access_key_id""#) && ecr.body.contains(r#"name="region""#));
    let acr = b.get("/registries/new?type=acr").await;
    assert!(
        acr.body.contains(r#"name="tenant_id""#) && acr.body.contains(r#"name="client_secret""#)
    );
    let harbor = b.get("/registries/new?type=harbor").await;
    assert!(harbor.body.contains("Robot account"));
    let gar = b.get("/registries/new?type=gcr").await;
    assert!(gar.body.contains("_json_key"));

    // A hostile label is stored as given and shown as text.
    let hostile = r#"<script>alert("x")</script><img src=x onerror=alert(1)>"#;
    let id = add_open(&b, &registry, hostile).await;
    let types = env.event_types().await;
    assert_eq!(
        types,
        [
            "io.imagelib.registry.registered.v1",
            "io.imagelib.registry.validated.v1"
        ]
    );
    let events = env.events().await;
    assert_eq!(events[0].actor.as_deref(), Some("admin"));

    let detail = b.get(&format!("/registries/{id}?done=added")).await;
    assert_eq!(detail.status, 200);
    assert!(detail.body.contains("The registry was added."));
    assert!(detail.body.contains("validated"));
    let list = b.get("/registries").await;
    for page in [&detail, &list] {
        assert!(!page.body.contains("<script>alert"), "{}", page.body);
        assert!(!page.body.contains("<img src=x"), "{}", page.body);
        assert!(
            page.body
                .contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;")
        );
    }
    assert!(list.body.contains(&format!(r#"href="/registries/{id}""#)));
    assert!(list.body.contains("Docker Registry"));
    assert!(list.body.contains("never scanned"));
    assert!(list.body.contains("not scheduled: no enabled rule"));
}

/// A type with one address is registered from the form without a URL: the profile's
/// default and the namespace make it.
#[tokio::test]
async fn the_form_fills_in_a_types_default_address() {
    let env = Env::new();
    let svc = env.start().await;
    let b = Browser::sign_in(&svc, ADMIN).await;
    let form = b.get("/registries/new?type=dockerhub").await;
    let res = b
        .post(
            "/registries",
            Some(&form.csrf()),
            &[
                ("registry_type", "dockerhub"),
                ("label", "Hub"),
                ("namespace", "acme"),
                ("skip_validation", "true"),
            ],
        )
        .await;
    assert_eq!(res.status, 303, "{}", res.body);
    let id = res
        .location()
        .strip_prefix("/registries/")
        .and_then(|l| l.strip_suffix("?done=added"))
        .unwrap()
        .to_owned();
    let (_, r) = svc.get(&format!("/v1/registries/{id}")).await;
    assert_eq!(r["url"], "registry-1.docker.io/acme");
    // A type without a default still needs its URL, refused at the field.
    let res = b
        .post(
            "/registries",
            Some(&form.csrf()),
            &[("registry_type", "harbor"), ("label", "H")],
        )
        .await;
    assert_eq!(res.status, 422);
    assert!(res.body.contains(r#"id="f-url-error""#), "{}", res.body);
}

/// The types that take several credential kinds offer them in a select; the chosen kind
/// decides which fields are read (the others are ignored), so a keyless kind is
/// registered from the form without a key, and a registry's own proxy too.
#[tokio::test]
async fn keyless_credentials_and_a_proxy_are_chosen_in_the_form() {
    let env = Env::new();
    let svc = env.start().await;
    let b = Browser::sign_in(&svc, ADMIN).await;
    let ecr = b.get("/registries/new?type=ecr").await;
    for needle in [
        r#"<select id="f-credential_kind-ecr" name="credential_kind""#,
        r#"<option value="aws_web_identity">"#,
        r#"data-field="role_arn""#,
        r#"data-kinds="aws_ecr aws_web_identity""#,
        r#"name="proxy_url""#,
        r#"name="no_proxy""#,
    ] {
        assert!(ecr.body.contains(needle), "{needle}: {}", ecr.body);
    }
    // Another type's choice is in the form for the script, hidden and never sent.
    assert!(
        ecr.body
            .contains(r#"<select id="f-credential_kind-gcr" name="credential_kind" disabled"#),
        "{}",
        ecr.body
    );
    let csrf = ecr.csrf();
    let secret = canary();
    let add = |fields: Vec<(&'static str, String)>| {
        let b = &b;
        let csrf = csrf.clone();
        async move {
            let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            b.post("/registries", Some(&csrf), &fields).await
        }
    };
    let registered = |res: &Page| {
        assert_eq!(res.status, 303, "{}", res.body);
        res.location()
            .strip_prefix("/registries/")
            .and_then(|l| l.strip_suffix("?done=added"))
            .unwrap()
            .to_owned()
    };

    // The pod's IAM role: the access key typed by mistake is not read.
    let res = add(vec![
        ("registry_type", "ecr".into()),
        ("label", "ECR".into()),
        ("url", "123456789012.dkr.ecr.eu-west-1.amazonaws.com".into()),
        ("credential_kind", "aws_web_identity".into()),
        ("access_key_id", "AKIAIOSFODNN7EXAMPLE".into()),
        ("secret_access_key", secret.clone()),
        ("region", "eu-west-1".into()),
        ("role_arn", "arn:aws:iam::123456789012:role/imagelib".into()),
        ("proxy_url", "http://proxy.internal:3128".into()),
        ("no_proxy", "registry.internal, 10.0.0.0/8".into()),
        ("skip_validation", "true".into()),
    ])
    .await;
    let id = registered(&res);
    let (_, r) = svc.get(&format!("/v1/registries/{id}")).await;
    assert_eq!(r["auth_kind"], "aws_web_identity", "{r}");
    assert_eq!(r["proxy_url"], "http://proxy.internal:3128", "{r}");
    assert_eq!(
        r["no_proxy"],
        json!(["registry.internal", "10.0.0.0/8"]),
        "{r}"
    );
    let detail = b.get(&format!("/registries/{id}")).await;
    assert!(
        detail.body.contains("http://proxy.internal:3128"),
        "{}",
        detail.body
    );
    // Rotation starts at the kind the registry has.
    assert!(
        detail
            .body
            .contains(r#"<option value="aws_web_identity" selected>"#),
        "{}",
        detail.body
    );

    for (t, url, kind, extra) in [
        (
            "gcr",
            "europe-west1-docker.pkg.dev/project/repo",
            "gcp_workload_identity",
            vec![],
        ),
        (
            "acr",
            "acme.azurecr.io",
            "azure_workload_identity",
            vec![(
                "tenant_id",
                "11111111-2222-3333-4444-555555555555".to_owned(),
            )],
        ),
    ] {
        let mut fields = vec![
            ("registry_type", t.to_owned()),
            ("label", t.to_owned()),
            ("url", url.to_owned()),
            ("credential_kind", kind.to_owned()),
            ("username", "ignored".to_owned()),
            ("password", secret.clone()),
            ("skip_validation", "true".to_owned()),
        ];
        fields.extend(extra);
        let id = registered(&add(fields).await);
        let (_, r) = svc.get(&format!("/v1/registries/{id}")).await;
        assert_eq!(r["auth_kind"], kind, "{r}");
    }

    // The Artifact Registry repository: a field of the gcr form only, stored and shown;
    // a malformed one refused at its field.
    let field_tag = |body: &str| {
        let at = body
            .find(r#"data-field="artifact_registry""#)
            .expect("the field is in the form");
        body[at..].split('>').next().unwrap_or_default().to_owned()
    };
    assert!(field_tag(&ecr.body).contains("hidden"), "{}", ecr.body);
    let gar = b.get("/registries/new?type=gcr").await;
    assert!(!field_tag(&gar.body).contains("hidden"), "{}", gar.body);
    assert!(gar.body.contains("Artifact Registry repository"));
    let images = "projects/my-project/locations/us-central1/repositories/images";
    let id = registered(
        &add(vec![
            ("registry_type", "gcr".into()),
            ("label", "GAR mirror".into()),
            ("url", "gar-mirror.corp.example".into()),
            ("credential_kind", "basic".into()),
            ("username", "oauth2accesstoken".into()),
            ("password", "ya29.form-access-token".into()),
            ("artifact_registry", images.into()),
            ("skip_validation", "true".into()),
        ])
        .await,
    );
    let (_, r) = svc.get(&format!("/v1/registries/{id}")).await;
    assert_eq!(r["artifact_registry"], images, "{r}");
    let detail = b.get(&format!("/registries/{id}")).await;
    assert!(detail.body.contains(images), "{}", detail.body);
    let res = add(vec![
        ("registry_type", "gcr".into()),
        ("label", "GAR mirror".into()),
        ("url", "gar-mirror.corp.example".into()),
        (
            "artifact_registry",
            "us-central1-docker.pkg.dev/my-project/images".into(),
        ),
        ("skip_validation", "true".into()),
    ])
    .await;
    assert_eq!(res.status, 422, "{}", res.body);
    assert!(
        res.body.contains(r#"id="f-artifact_registry-error""#),
        "{}",
        res.body
    );

    // A service account key that is not one is refused at its field, and not shown back.
    let res = add(vec![
        ("registry_type", "gcr".into()),
        ("label", "GAR".into()),
        ("url", "europe-west1-docker.pkg.dev/project/repo".into()),
        ("credential_kind", "gcp_service_account".into()),
        ("key_json", format!("{{\"type\": \"{secret}\"}}")),
        ("skip_validation", "true".into()),
    ])
    .await;
    assert_eq!(res.status, 422, "{}", res.body);
    assert!(
        res.body.contains(r#"id="f-key_json-error""#),
        "{}",
        res.body
    );
    assert!(!res.body.contains(&secret), "{}", res.body);
    // A kind the type does not take.
    let res = add(vec![
        ("registry_type", "gcr".into()),
        ("label", "GAR".into()),
        ("url", "europe-west1-docker.pkg.dev/project/repo".into()),
        ("credential_kind", "aws_ecr".into()),
        ("skip_validation", "true".into()),
    ])
    .await;
    assert_eq!(res.status, 422, "{}", res.body);
    assert!(
        res.body.contains("choose one of the credentials listed"),
        "{}",
        res.body
    );
    assert!(!b.everything().contains(&secret), "a secret came back");
    let types = env.event_types().await;
    assert_eq!(
        types
            .iter()
            .filter(|t| *t == "io.imagelib.registry.registered.v1")
            .count(),
        4,
        "{types:?}"
    );
}

#[tokio::test]
async fn refusals_are_shown_at_their_field_and_secrets_never_come_back() {
    let env = Env::new();
    let svc = env.start().await;
    let secret = canary();
    let registry = TestRegistry::builder()
        .htpasswd("scanner", &secret)
        .start()
        .await
        .unwrap();
    let b = Browser::sign_in(&svc, ADMIN).await;
    let csrf = b.get("/registries/new").await.csrf();
    let url = format!("127.0.0.1:{}", registry.port());
    let wrong = canary();

    // A URL the API refuses: 422, the error at the url field, the fields kept, the
    // password not.
    let bad = b
        .post(
            "/registries",
            Some(&csrf),
            &[
                ("registry_type", "generic"),
                ("label", "Bad"),
                ("url", "https://user:pw@registry.example.com"),
                ("username", "scanner"),
                ("password", &wrong),
            ],
        )
        .await;
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert!(bad.body.contains(r#"id="f-url-error""#), "{}", bad.body);
    assert!(bad.body.contains(r#"aria-invalid="true""#));
    assert!(bad.body.contains(r#"value="Bad""#), "the label is kept");
    assert!(
        bad.body.contains(r#"value="scanner""#),
        "the username is kept"
    );

    // A host that does not resolve: the validation reason lands at the url field.
    let dns = b
        .post(
            "/registries",
            Some(&csrf),
            &[
                ("registry_type", "generic"),
                ("label", "Nowhere"),
                ("url", "no-such-registry.invalid"),
            ],
        )
        .await;
    assert_eq!(dns.status, 422);
    assert!(dns.body.contains(r#"id="f-url-error""#), "{}", dns.body);

    // A password without a username: at the username field.
    let half = b
        .post(
            "/registries",
            Some(&csrf),
            &[
                ("registry_type", "generic"),
                ("label", "Half"),
                ("url", &url),
                ("insecure", "true"),
                ("password", &wrong),
            ],
        )
        .await;
    assert_eq!(half.status, 422);
    assert!(
        half.body.contains(r#"id="f-username-error""#),
        "{}",
        half.body
    );

    // Wrong credentials: refused by the registry, shown at the password field.
    let unauthorized = b
        .post(
            "/registries",
            Some(&csrf),
            &[
                ("registry_type", "generic"),
                ("label", "Locked"),
                ("url", &url),
                ("insecure", "true"),
                ("username", "scanner"),
                ("password", &wrong),
            ],
        )
        .await;
    assert_eq!(unauthorized.status, 422, "{}", unauthorized.body);
    assert!(
        unauthorized.body.contains(r#"id="f-password-error""#),
        "{}",
        unauthorized.body
    );
    // An unknown type is refused at the type.
    let odd = b
        .post(
            "/registries",
            Some(&csrf),
            &[("registry_type", "quay"), ("label", "x"), ("url", &url)],
        )
        .await;
    assert_eq!(odd.status, 422);
    assert!(odd.body.contains("choose one of the listed registry types"));
    assert!(env.event_types().await.is_empty(), "nothing was registered");

    // The right credentials: added, and never shown again.
    let ok = b
        .post(
            "/registries",
            Some(&csrf),
            &[
                ("registry_type", "generic"),
                ("label", "Locked"),
                ("url", &url),
                ("insecure", "true"),
                ("username", "scanner"),
                ("password", &secret),
            ],
        )
        .await;
    assert_eq!(ok.status, 303, "{}", ok.body);
    let detail = b.get(ok.location()).await;
    assert!(detail.body.contains("basic"));
    b.get("/registries").await;
    // Rotation refused by the registry: 422 at the password field.
    let id = ok.location().split(['/', '?']).nth(2).unwrap().to_owned();
    let refused = b
        .post(
            &format!("/registries/{id}/credentials"),
            Some(&csrf),
            &[("username", "scanner"), ("password", &wrong)],
        )
        .await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert!(refused.body.contains(r#"id="f-password-error""#));

    let everything = b.everything();
    assert!(!everything.contains(&secret), "a secret was sent back");
    assert!(
        !everything.contains(&wrong),
        "a refused secret was sent back"
    );
}

#[tokio::test]
async fn rename_rotate_validate_and_remove_through_forms() {
    let env = Env::new();
    let svc = env.start().await;
    let registry = TestRegistry::start().await.unwrap();
    let b = Browser::sign_in(&svc, ADMIN).await;
    let id = add_open(&b, &registry, "Before").await;
    let detail = b.get(&format!("/registries/{id}")).await;
    let csrf = detail.csrf();
    // What removal stops is said on the page and in the confirmation.
    assert!(detail.body.contains("data-confirm=\"Removing this registry stops its scans and its webhooks, its images leave the library"));
    assert!(
        detail
            .body
            .contains("<p>Removing this registry stops its scans")
    );
    for action in [
        "rename",
        "credentials",
        "validate",
        "remove",
        "rules",
        "sync",
    ] {
        assert!(
            detail
                .body
                .contains(&format!(r#"action="/registries/{id}/{action}""#)),
            "{action}"
        );
    }

    let renamed = b
        .post(
            &format!("/registries/{id}/rename"),
            Some(&csrf),
            &[("label", "After")],
        )
        .await;
    assert_eq!(renamed.status, 303);
    assert_eq!(renamed.location(), format!("/registries/{id}?done=renamed"));
    let (_, api) = svc.get(&format!("/v1/registries/{id}")).await;
    assert_eq!(api["label"], "After");
    let empty = b
        .post(
            &format!("/registries/{id}/rename"),
            Some(&csrf),
            &[("label", "  ")],
        )
        .await;
    assert_eq!(empty.status, 422);
    assert!(
        empty.body.contains(r#"id="f-label-error""#),
        "{}",
        empty.body
    );

    let secret = canary();
    let rotated = b
        .post(
            &format!("/registries/{id}/credentials"),
            Some(&csrf),
            &[("username", "reader"), ("password", &secret)],
        )
        .await;
    assert_eq!(rotated.status, 303, "{}", rotated.body);
    let (_, api) = svc.get(&format!("/v1/registries/{id}")).await;
    assert_eq!(api["auth_kind"], "basic");

    let validated = b
        .post(&format!("/registries/{id}/validate"), Some(&csrf), &[])
        .await;
    assert_eq!(validated.status, 303);
    assert_eq!(
        validated.location(),
        format!("/registries/{id}?done=validated")
    );
    let page = b.get(validated.location()).await;
    assert!(page.body.contains("The connection was checked: it works."));

    let removed = b
        .post(&format!("/registries/{id}/remove"), Some(&csrf), &[])
        .await;
    assert_eq!(removed.status, 303);
    assert_eq!(removed.location(), "/registries?done=removed");
    assert!(
        b.get("/registries?done=removed")
            .await
            .body
            .contains("was removed")
    );
    assert_eq!(b.get(&format!("/registries/{id}")).await.status, 404);

    let types = env.event_types().await;
    for t in [
        "io.imagelib.registry.updated.v1",
        "io.imagelib.registry.credentials_rotated.v1",
        "io.imagelib.registry.removed.v1",
    ] {
        assert!(types.iter().any(|x| x == t), "{t}: {types:?}");
    }
    assert!(
        env.events()
            .await
            .iter()
            .all(|e| e.actor.as_deref() == Some("admin"))
    );
    assert!(!b.everything().contains(&secret));
}

const AGENT: &str = r#"
dispatcher:
  capabilities:
    provisioning:
      images:
        discovery:
          registry:
            postgres_repositories:
              - name: postgresql
                tags: {include: ['^1[67]\.']}
            model_repositories:
              - name: "nvidia/*"
                hm_tags: [gpu]
"#;

#[tokio::test]
async fn rules_are_edited_as_agent_yaml_and_bad_yaml_is_refused_at_the_field() {
    let env = Env::new();
    let svc = env.start().await;
    let registry = TestRegistry::start().await.unwrap();
    let b = Browser::sign_in(&svc, ADMIN).await;
    let id = add_open(&b, &registry, "Rules").await;
    let detail = b.get(&format!("/registries/{id}")).await;
    assert!(
        detail
            .body
            .contains(r#"<textarea id="f-rules" name="rules""#)
    );
    assert!(detail.body.contains("Save rules"));
    let csrf = detail.csrf();

    let saved = b
        .post(
            &format!("/registries/{id}/rules"),
            Some(&csrf),
            &[("rules", AGENT)],
        )
        .await;
    assert_eq!(saved.status, 303, "{}", saved.body);
    let (_, rules) = svc.get(&format!("/v1/registries/{id}/rules")).await;
    let ids: Vec<&str> = rules["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{rules}");
    assert!(
        ids.contains(&"db-postgresql") && ids.contains(&"model-nvidia-x"),
        "{ids:?}"
    );

    // Shown again in the editor, and the table.
    let page = b.get(&format!("/registries/{id}?done=rules-saved")).await;
    assert!(page.body.contains("Rules saved."));
    assert!(
        page.body.contains("postgres_repositories:"),
        "{}",
        page.body
    );
    assert!(page.body.contains("model_repositories:"));
    assert!(page.body.contains("<code>db-postgresql</code>"));
    let list = b.get("/registries").await;
    assert!(
        list.body.contains("on the scanner's interval"),
        "{}",
        list.body
    );

    // Not YAML: refused at the field with the parser's line and column, the text kept.
    let broken = "dispatcher:\n  capabilities: [unclosed\n";
    let bad = b
        .post(
            &format!("/registries/{id}/rules"),
            Some(&csrf),
            &[("rules", broken)],
        )
        .await;
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert!(bad.body.contains(r#"id="f-rules-error""#));
    assert!(bad.body.contains("line"), "{}", bad.body);
    assert!(
        bad.body.contains("capabilities: [unclosed"),
        "the text is kept"
    );
    // A bad regex: refused with the field's pointer, nothing written.
    let bad_regex = AGENT.replace(r"^1[67]\.", "^(");
    let before = env.event_types().await.len();
    let bad = b
        .post(
            &format!("/registries/{id}/rules"),
            Some(&csrf),
            &[("rules", &bad_regex)],
        )
        .await;
    assert_eq!(bad.status, 422);
    assert!(
        bad.body.contains("postgres_repositories/0/tags/include/0"),
        "{}",
        bad.body
    );
    assert_eq!(env.event_types().await.len(), before);

    // Taking an entry out of the text removes its rule; saving it unchanged writes nothing.
    let only_db = AGENT
        .split("            model_repositories:")
        .next()
        .unwrap()
        .to_owned();
    let saved = b
        .post(
            &format!("/registries/{id}/rules"),
            Some(&csrf),
            &[("rules", &only_db)],
        )
        .await;
    assert_eq!(saved.status, 303);
    let (_, rules) = svc.get(&format!("/v1/registries/{id}/rules")).await;
    assert_eq!(rules["items"].as_array().unwrap().len(), 1, "{rules}");
    let types = env.event_types().await;
    assert_eq!(types.last().unwrap(), "io.imagelib.rule.removed.v1");
    let n = types.len();
    b.post(
        &format!("/registries/{id}/rules"),
        Some(&csrf),
        &[("rules", &only_db)],
    )
    .await;
    assert_eq!(env.event_types().await.len(), n);
}

#[tokio::test]
async fn sync_now_streams_progress_until_the_scan_completes() {
    let env = Env::new();
    let svc = env.start().await;
    let registry = TestRegistry::start().await.unwrap();
    let b = Browser::sign_in(&svc, ADMIN).await;
    let id = add_open(&b, &registry, "Synced").await;
    let csrf = b.get(&format!("/registries/{id}")).await.csrf();
    let sync = b
        .post(&format!("/registries/{id}/sync"), Some(&csrf), &[])
        .await;
    assert_eq!(sync.status, 303);
    let seq: u64 = sync
        .location()
        .strip_prefix(&format!("/registries/{id}?sync="))
        .expect("to the progress page")
        .parse()
        .unwrap();
    assert_eq!(
        env.event_types().await.last().unwrap(),
        "io.imagelib.sync.requested.v1"
    );
    let progress = b.get(sync.location()).await;
    assert_eq!(progress.status, 200);
    let sse = format!("/registries/{id}/sync/{seq}/events");
    assert!(
        progress.body.contains(&format!(r#"data-sse="{sse}""#)),
        "{}",
        progress.body
    );
    assert!(progress.body.contains("data-sse-state"));
    assert!(progress.body.contains("<ol"));

    let mut res = b
        .http
        .get(format!("{}{sse}", b.base))
        .header(header::COOKIE, &b.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );

    // The scanner's side, as sync-scanner publishes it.
    let registry_id: RegistryId = id.parse().unwrap();
    let bus = bus(&env).await;
    let sync_id = SyncId::new();
    let digest = format!("sha256:{}", "ab".repeat(32));
    let discovered: TagDiscovered = serde_json::from_value(json!({
        "registry_id": registry_id, "repository": "ml/llama", "tag": "1.0", "digest": digest,
        "media_type": "application/vnd.oci.image.manifest.v1+json", "size": 1024, "kind": "model",
    }))
    .unwrap();
    let other = RegistryId::new();
    let events = [
        Envelope::new(
            "sync-scanner",
            SyncStarted {
                registry_id,
                sync_id,
                repository: None,
                reason: SyncReason::Manual,
            },
        ),
        // Another registry's scan is not this page's.
        Envelope::new(
            "sync-scanner",
            TagRemoved {
                registry_id: other,
                repository: "other/thing".parse().unwrap(),
                tag: "1".parse().unwrap(),
                digest: digest.parse().unwrap(),
            },
        ),
        Envelope::new("sync-scanner", discovered),
        Envelope::new(
            "sync-scanner",
            TagRemoved {
                registry_id,
                repository: "ml/llama".parse().unwrap(),
                tag: "0.9".parse().unwrap(),
                digest: digest.parse().unwrap(),
            },
        ),
        Envelope::new(
            "sync-scanner",
            SyncCompleted {
                registry_id,
                sync_id,
                repositories: 1,
                tags_seen: 1,
                added: 1,
                moved: 0,
                removed: 1,
                requests: 4,
                duration_ms: 1234,
                partial: false,
                rate_limited: vec![],
                incomplete: vec![],
                incomplete_more: 0,
            },
        ),
    ];
    for e in &events {
        bus.publish(e).await.unwrap();
    }

    // Read the stream to its end.
    let mut text = String::new();
    let read = async {
        while let Some(chunk) = res.chunk().await.unwrap() {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the stream ends once the scan completed");
    // Each SSE message: its id (if any) and its JSON data.
    let blocks: Vec<(Option<String>, serde_json::Value)> = text
        .split("\n\n")
        .filter_map(|block| {
            let mut id = None;
            let mut data = None;
            for l in block.lines() {
                if let Some(v) = l.strip_prefix("id:") {
                    id = Some(v.trim().to_owned());
                }
                if let Some(v) = l.strip_prefix("data:") {
                    data = Some(serde_json::from_str(v.trim()).unwrap());
                }
            }
            data.map(|d| (id, d))
        })
        .collect();
    let messages: Vec<&serde_json::Value> = blocks.iter().map(|(_, d)| d).collect();
    let lines: Vec<&str> = messages
        .iter()
        .filter_map(|m| m["line"].as_str())
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert!(lines[0].starts_with("Sync requested"), "{lines:?}");
    assert_eq!(lines[1], "Scan started");
    assert!(
        lines[2].starts_with("Discovered ml/llama:1.0 (sha256:abab"),
        "{lines:?}"
    );
    assert_eq!(lines[3], "Removed ml/llama:0.9");
    assert!(lines[4].starts_with("Scan completed: 1 repositories, 1 tags seen, 1 added"));
    assert!(
        messages[..messages.len() - 1]
            .iter()
            .all(|m| m["state"] == "running")
    );
    assert_eq!(messages.last().unwrap()["state"], "completed");
    // Ids name the log position and, once started, the scan followed.
    let ids: Vec<&str> = blocks.iter().filter_map(|(id, _)| id.as_deref()).collect();
    assert_eq!(ids.len(), 5, "{text}");
    assert_eq!(ids[0], seq.to_string());
    assert!(
        ids[1..].iter().all(|i| i.ends_with(&format!(".{sync_id}"))),
        "{ids:?}"
    );
    let after_discovered = ids[2].to_owned();

    // Without script: the reload shows the last scan's result.
    let mut shown = false;
    for _ in 0..50 {
        let page = b.get(&format!("/registries/{id}")).await;
        if page
            .body
            .contains("1 repositories, 1 tags: 1 added, 0 moved, 1 removed")
        {
            shown = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(shown, "the last scan on the registry's page");

    // A browser that reconnects resumes after the last line it got.
    let res = b
        .http
        .get(format!("{}{sse}", b.base))
        .header(header::COOKIE, &b.cookie)
        .header("last-event-id", &after_discovered)
        .send()
        .await
        .unwrap();
    let text = tokio::time::timeout(Duration::from_secs(30), res.text())
        .await
        .unwrap()
        .unwrap();
    assert!(
        !text.contains("Scan started") && !text.contains("Discovered"),
        "{text}"
    );
    assert!(
        text.contains("Removed ml/llama:0.9") && text.contains("Scan completed"),
        "{text}"
    );
}

#[tokio::test]
async fn a_viewer_reads_without_admin_actions_and_forged_forms_are_refused() {
    let env = Env::new();
    let svc = env.start().await;
    let registry = TestRegistry::start().await.unwrap();
    let r = svc.register_open(&registry, "Shared").await;
    let id = r["id"].as_str().unwrap().to_owned();
    let (s, hidden) = svc
        .post(
            "/v1/registries",
            json!({"label": "DB only", "url": format!("127.0.0.1:{}", registry.port()), "registry_type": "generic", "insecure": true, "visibility": ["db"]}),
        )
        .await;
    assert_eq!(s, 201, "{hidden}");
    let hidden_id = hidden["id"].as_str().unwrap();
    let before = env.event_types().await.len();

    let b = Browser::sign_in(&svc, VIEWER_ML).await;
    let list = b.get("/registries").await;
    assert_eq!(list.status, 200);
    assert!(list.body.contains("Shared"));
    assert!(!list.body.contains("DB only"), "not visible to the ml team");
    assert!(!list.body.contains("/registries/new"));
    assert_eq!(b.get("/registries/new").await.status, 403);
    assert_eq!(b.get(&format!("/registries/{hidden_id}")).await.status, 404);

    let detail = b.get(&format!("/registries/{id}")).await;
    assert_eq!(detail.status, 200);
    for admin_only in [
        "Sync now",
        "Save rules",
        "Rotate credentials",
        "/remove",
        "/rename",
    ] {
        assert!(!detail.body.contains(admin_only), "{admin_only}");
    }
    // The sign-out form gives the viewer a valid CSRF token: the refusals are the role's.
    let csrf = detail.csrf();
    for (path, fields) in [
        (format!("/registries/{id}/remove"), vec![]),
        (format!("/registries/{id}/sync"), vec![]),
        (format!("/registries/{id}/rename"), vec![("label", "Mine")]),
        (format!("/registries/{id}/rules"), vec![("rules", AGENT)]),
        (format!("/registries/{id}/validate"), vec![]),
        (
            format!("/registries/{id}/credentials"),
            vec![("username", "u"), ("password", "p")],
        ),
        (
            "/registries".to_owned(),
            vec![
                ("registry_type", "generic"),
                ("label", "x"),
                ("url", "127.0.0.1:1"),
            ],
        ),
    ] {
        let res = b.post(&path, Some(&csrf), &fields).await;
        assert_eq!(res.status, 403, "{path}");
    }
    assert_eq!(env.event_types().await.len(), before, "nothing changed");
}

#[tokio::test]
async fn forms_without_a_valid_csrf_token_are_refused() {
    let env = Env::new();
    let svc = env.start().await;
    let registry = TestRegistry::start().await.unwrap();
    let r = svc.register_open(&registry, "Kept").await;
    let id = r["id"].as_str().unwrap().to_owned();
    let b = Browser::sign_in(&svc, ADMIN).await;
    let before = env.event_types().await.len();
    let missing = b.post(&format!("/registries/{id}/remove"), None, &[]).await;
    assert_eq!(missing.status, 403);
    let forged = b
        .post(&format!("/registries/{id}/remove"), Some("forged"), &[])
        .await;
    assert_eq!(forged.status, 403);
    let sync = b.post(&format!("/registries/{id}/sync"), None, &[]).await;
    assert_eq!(sync.status, 403);
    assert_eq!(env.event_types().await.len(), before);
    assert_eq!(b.get(&format!("/registries/{id}")).await.status, 200);

    // Not signed in: to the sign-in page, which comes back here.
    let anonymous = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/registries", b.base))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 303);
    assert_eq!(
        anonymous.headers()[header::LOCATION],
        "/login?next=%2Fregistries"
    );
}

/// The ordered consumer behind a progress stream goes when the browser leaves: the
/// server stops pulling as soon as the response is dropped, and NATS removes the idle
/// ephemeral consumer (after its 30 s inactivity threshold).
#[tokio::test]
async fn a_progress_stream_ends_its_consumer_when_the_browser_leaves() {
    let env = Env::new();
    let svc = env.start().await;
    let registry = TestRegistry::start().await.unwrap();
    let r = svc.register_open(&registry, "Left").await;
    let id = r["id"].as_str().unwrap().to_owned();
    let (s, body) = svc
        .post(&format!("/v1/registries/{id}/sync"), json!({}))
        .await;
    assert_eq!(s, 202, "{body}");
    let seq = body["sequence"].as_u64().unwrap();
    let b = Browser::sign_in(&svc, ADMIN).await;

    let js = async_nats::jetstream::new(env.stream.client().await.unwrap());
    // Consumers by name: the service's own come and go independently of this page.
    let names = || {
        let js = js.clone();
        let name = env.stream.name.clone();
        async move {
            use futures::TryStreamExt;
            let stream = js.get_stream(&name).await.unwrap();
            stream
                .consumer_names()
                .try_collect::<std::collections::HashSet<String>>()
                .await
                .unwrap()
        }
    };
    let before = names().await;

    let mut res = b
        .http
        .get(format!("{}/registries/{id}/sync/{seq}/events", b.base))
        .header(header::COOKIE, &b.cookie)
        .send()
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), res.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&first).contains("running"));
    let mut ours = std::collections::HashSet::new();
    for _ in 0..50 {
        ours = names().await.difference(&before).cloned().collect();
        if !ours.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!ours.is_empty(), "an ordered consumer follows the log");

    drop(res);
    let mut gone = false;
    for _ in 0..90 {
        if names().await.is_disjoint(&ours) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(gone, "the consumer is gone once the browser left");
}

#[tokio::test]
async fn a_github_app_is_chosen_in_the_ghcr_form_and_its_key_never_comes_back() {
    let env = Env::new();
    let svc = env.start().await;
    let b = Browser::sign_in(&svc, ADMIN).await;
    let form = b.get("/registries/new?type=ghcr").await;
    for needle in [
        r#"<select id="f-credential_kind-ghcr" name="credential_kind""#,
        r#"<option value="github_app">"#,
        r#"name="app_id""#,
        r#"name="installation_id""#,
        r#"<textarea"#,
        r#"name="private_key""#,
    ] {
        assert!(form.body.contains(needle), "{needle}: {}", form.body);
    }
    let csrf = form.csrf();
    let (private_key, _) = imagelib_testkit::github::app_key();
    let key_line = private_key.lines().nth(1).unwrap().to_owned();
    let post = |key: String| {
        let b = &b;
        let csrf = csrf.clone();
        async move {
            b.post(
                "/registries",
                Some(&csrf),
                &[
                    ("registry_type", "ghcr"),
                    ("label", "Acme"),
                    ("namespace", "acme"),
                    ("credential_kind", "github_app"),
                    ("app_id", "123456"),
                    ("installation_id", "7890"),
                    ("private_key", key.as_str()),
                    ("skip_validation", "true"),
                ],
            )
            .await
        }
    };
    // Not a key: refused at its field, not shown back.
    let secret = canary();
    let res = post(format!(
        "-----BEGIN RSA PRIVATE KEY-----\n{secret}\n-----END RSA PRIVATE KEY-----\n"
    ))
    .await;
    assert_eq!(res.status, 422, "{}", res.body);
    assert!(
        res.body.contains(r#"id="f-private_key-error""#),
        "{}",
        res.body
    );
    assert!(!res.body.contains(&secret), "{}", res.body);

    let res = post(private_key.clone()).await;
    assert_eq!(res.status, 303, "{}", res.body);
    let id = res
        .location()
        .strip_prefix("/registries/")
        .and_then(|l| l.strip_suffix("?done=added"))
        .unwrap()
        .to_owned();
    let (_, r) = svc.get(&format!("/v1/registries/{id}")).await;
    assert_eq!(r["auth_kind"], "github_app", "{r}");
    assert_eq!(r["url"], "ghcr.io/acme", "{r}");
    let detail = b.get(&format!("/registries/{id}")).await;
    assert!(
        detail
            .body
            .contains(r#"<option value="github_app" selected>"#),
        "{}",
        detail.body
    );
    assert!(!b.everything().contains(&key_line), "the key came back");
}
