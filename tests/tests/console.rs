//! The web console in a real headless Chromium (`imagelib_testkit::browser`: Debian's
//! `chromium` driven through its `chromedriver` over W3C WebDriver), against `imagelib
//! serve` and a real registry: what a person does with the console, with the page's
//! Content-Security-Policy and script in force. After every page load the browser's console
//! log must hold no `SEVERE` entry (a script error, a failed load, a CSP violation) and no
//! alert may be open.
//!
//! With `IMAGELIB_SCREENSHOTS_DIR` set (relative paths from the workspace root), the flow
//! also writes `image-library.png`, `model-library.png` and `manage-repositories.png`
//! (1280×800) there: `IMAGELIB_SCREENSHOTS_DIR=docs/console cargo nextest run -p
//! imagelib-e2e --test console`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use imagelib_e2e::TestServer;
use imagelib_testkit::browser::Browser;
use imagelib_testkit::registry::{ArtifactSpec, ImageSpec, TestRegistry};
use serde_json::json;

const ADMIN: &str = "test-admin-token";

/// What a page answering with an error status logs: the status of a form sent with
/// errors (422) or a refused sign-in (401) is the page working as designed.
const STATUS_422: &str = "status of 422";
const STATUS_401: &str = "status of 401";

/// Script and markup where a registry puts text: registry labels, rule descriptions,
/// image annotations, READMEs. A registry refuses `<` in a repository name (the
/// distribution spec's grammar), so hostile names come through every other field.
const HOSTILE: &str =
    r#"<img src=x onerror=alert(1)><script>window.__imagelib_injected=true;alert(2)</script>"#;

/// `IMAGELIB_SCREENSHOTS_DIR`, relative to the workspace root.
fn screenshots_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("IMAGELIB_SCREENSHOTS_DIR").filter(|d| !d.is_empty())?;
    let dir = PathBuf::from(dir);
    Some(if dir.is_absolute() {
        dir
    } else {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(dir)
    })
}

/// Opens `path`, asserts a clean log.
async fn open(b: &Browser, server: &TestServer, path: &str) {
    b.goto(&server.url(path)).await.unwrap();
    b.assert_clean(path).await.unwrap();
}

/// Opens `path` again and again until the element `css` contains `needle` (what the
/// projection has not caught up with yet shows after a reload), 30 s at most.
async fn reload_until(b: &Browser, server: &TestServer, path: &str, css: &str, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        open(b, server, path).await;
        let text = match b.find_all(css).await.unwrap().first() {
            Some(e) => e.text().await.unwrap_or_default(),
            None => String::new(),
        };
        if text.contains(needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path}: `{css}` never showed {needle:?}; it reads {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Where the flow's time goes (shown with the test's output: on failure, or `--nocapture`).
fn step(started: Instant, name: &str) {
    eprintln!("{:>6.1} s  {name}", started.elapsed().as_secs_f64());
}

/// Signs in on the page the browser is on (the sign-in page).
async fn sign_in(b: &Browser, token: &str) {
    b.find("input[name=token]").await.unwrap();
    b.fill("input[name=token]", token).await.unwrap();
    b.click("form[action='/login'] button[type=submit]")
        .await
        .unwrap();
}

/// Database images (two versions of one), an LLM, an embedding and a reranker model
/// (ModelPack).
async fn fill_registry(registry: &TestRegistry) {
    for (tag, version) in [("16.4", "16.4"), ("17.0", "17.0")] {
        registry
            .push_image(
                "postgres/pgvector",
                tag,
                &ImageSpec::linux_amd64()
                    .annotation(
                        "org.opencontainers.image.title",
                        &format!("PostgreSQL {version} with pgvector"),
                    )
                    .annotation(
                        "io.imagelib.postgres.extensions",
                        r#"[{"name":"pgvector","version":"0.7.0","description":"vector similarity search"}]"#,
                    )
                    .layer(format!("postgres {version}").as_bytes()),
            )
            .await
            .unwrap();
    }
    registry
        .push_image(
            "postgres/postgis",
            "16-3.4",
            &ImageSpec::linux_amd64()
                .annotation(
                    "org.opencontainers.image.title",
                    "PostgreSQL 16 with PostGIS",
                )
                .annotation(
                    "io.imagelib.postgres.extensions",
                    r#"[{"name":"postgis","version":"3.4"}]"#,
                )
                .layer(b"postgis"),
        )
        .await
        .unwrap();
    registry
        .push_artifact(
            "models/rerank-small",
            Some("1.0"),
            &ArtifactSpec::modelpack("rerank-small"),
        )
        .await
        .unwrap();
    registry
        .push_artifact(
            "models/llama-chat",
            Some("3.1-8b"),
            &ArtifactSpec::modelpack("llama-chat 3.1 8B instruct"),
        )
        .await
        .unwrap();
    registry
        .push_artifact(
            "models/text-embed",
            Some("v2"),
            &ArtifactSpec::modelpack("text-embed v2"),
        )
        .await
        .unwrap();
}

const RULES_YAML: &str = "dispatcher:
  capabilities:
    provisioning:
      images:
        discovery:
          registry:
            postgres_repositories:
              - name: postgres/*
                description: PostgreSQL images with extensions
            model_repositories:
              - name: models/*
                description: Models for serving
";

/// The whole console flow: sign in, add a registry (a bad one refused at its field), set
/// its rules, sync now and follow the progress, find an image by search and by filter,
/// approve it on its page, deploy a model from the Model Library, see the deployment,
/// sign out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_curator_flow_in_a_real_browser() {
    let started = Instant::now();
    let b = Browser::start().await.unwrap();
    let server = TestServer::start().await.unwrap();
    let registry = TestRegistry::start().await.unwrap();
    fill_registry(&registry).await;
    server.wait_ready().await.unwrap();

    step(started, "sign-in");
    // A page that needs a session sends to sign-in, which comes back to it afterwards.
    b.goto(&server.url("/registries/new")).await.unwrap();
    b.wait_url("the sign-in page", |u| u.path() == "/login")
        .await
        .unwrap();
    b.assert_clean("/login").await.unwrap();
    sign_in(&b, "not-a-token").await;
    b.find("#f-token-error").await.unwrap();
    b.assert_clean_except("a refused sign-in", &[STATUS_401])
        .await
        .unwrap();
    sign_in(&b, ADMIN).await;
    b.wait_url("back at /registries/new", |u| u.path() == "/registries/new")
        .await
        .unwrap();
    b.assert_clean("/registries/new").await.unwrap();

    step(started, "refused registry");
    // A registry the API refuses: the error is shown at the URL field, the form keeps
    // what was typed.
    b.fill("input[name=label]", "Broken").await.unwrap();
    b.fill("input[name=url]", "https://user:secret@127.0.0.1:1/ns")
        .await
        .unwrap();
    b.click_text("button[type=submit]", "Add registry")
        .await
        .unwrap();
    let error = b.text("#f-url-error").await.unwrap();
    assert!(!error.trim().is_empty(), "an empty URL error");
    assert_eq!(
        b.find("input[name=label]")
            .await
            .unwrap()
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some("Broken")
    );
    b.assert_clean_except("the refused registry", &[STATUS_422])
        .await
        .unwrap();

    step(started, "add registry");
    // The real one (plain HTTP on loopback), checked before it is saved.
    b.fill("input[name=label]", "Lab registry").await.unwrap();
    b.fill("input[name=url]", &registry.host()).await.unwrap();
    let insecure = b.find("input[name=insecure]").await.unwrap();
    if !insecure.is_selected().await.unwrap() {
        insecure.click().await.unwrap();
    }
    b.click_text("button[type=submit]", "Add registry")
        .await
        .unwrap();
    let url = b
        .wait_url("the new registry's page", |u| {
            u.path().starts_with("/registries/") && u.path() != "/registries/new"
        })
        .await
        .unwrap();
    b.assert_clean("the new registry's page").await.unwrap();
    let registry_id = url
        .path()
        .trim_start_matches("/registries/")
        .trim_end_matches('/')
        .to_owned();
    assert!(
        registry_id.parse::<uuid::Uuid>().is_ok(),
        "not a registry page: {url}"
    );

    step(started, "rules");
    // Rules, as the agent YAML.
    b.fill("textarea[name=rules]", RULES_YAML).await.unwrap();
    b.click_text("button[type=submit]", "Save rules")
        .await
        .unwrap();
    b.wait_url("the saved rules", |u| {
        u.query().is_some_and(|q| q.contains("done="))
    })
    .await
    .unwrap();
    b.wait_text("main", "db-postgres").await.unwrap();
    b.assert_clean("the saved rules").await.unwrap();

    step(started, "sync now");
    // Sync now: the page follows the scan live (server-sent events, console.js) until
    // it reads completed.
    b.click("form[action$='/sync'] button[type=submit]")
        .await
        .unwrap();
    b.find("[data-sse] [data-sse-state]").await.unwrap();
    b.assert_clean("sync now").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state = b.text("[data-sse-state]").await.unwrap_or_default();
        if state.contains("completed") {
            break;
        }
        assert!(
            !state.contains("failed"),
            "the sync failed: {}",
            b.text("[data-sse]").await.unwrap_or_default()
        );
        assert!(
            Instant::now() < deadline,
            "the sync never completed; it reads {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The lines came over the event stream: the page renders the list empty.
    let lines = b.find_all("[data-sse] li").await.unwrap();
    assert!(!lines.is_empty(), "no progress line arrived");
    b.assert_clean("the completed sync").await.unwrap();

    step(started, "image library");
    // The Image Library: every discovered tag, once projected.
    reload_until(&b, &server, "/", "table#images", "postgres/pgvector").await;
    // Search.
    b.fill("form.filters input[name=q]", "pgvector")
        .await
        .unwrap();
    b.click("form.filters button[type=submit]").await.unwrap();
    b.wait_url("the search", |u| {
        u.query().is_some_and(|q| q.contains("q=pgvector"))
    })
    .await
    .unwrap();
    b.assert_clean("the search").await.unwrap();
    let rows = b.text("table#images").await.unwrap();
    assert!(rows.contains("postgres/pgvector"), "{rows}");
    assert!(!rows.contains("models/llama-chat"), "{rows}");
    step(started, "kind filter");
    // Filter by kind: a form marked `data-autosubmit` sends itself when a select
    // changes (console.js); otherwise Apply.
    open(&b, &server, "/").await;
    let autosubmit = b
        .find("form.filters")
        .await
        .unwrap()
        .attr("data-autosubmit")
        .await
        .unwrap()
        .is_some();
    b.select("form.filters select[name=kind]", "model")
        .await
        .unwrap();
    if !autosubmit {
        b.click("form.filters button[type=submit]").await.unwrap();
    }
    b.wait_url("the filter", |u| {
        u.query().is_some_and(|q| q.contains("kind=model"))
    })
    .await
    .unwrap();
    b.assert_clean("the kind filter").await.unwrap();
    let rows = b.text("table#images").await.unwrap();
    assert!(rows.contains("models/llama-chat"), "{rows}");
    assert!(!rows.contains("postgres/pgvector"), "{rows}");

    step(started, "approve");
    // Detail, and approval.
    open(&b, &server, "/?q=pgvector").await;
    b.click_text("table#images a", "postgres/pgvector")
        .await
        .unwrap();
    let expected = format!("/repositories/{registry_id}/postgres/pgvector");
    b.wait_url("the repository page", |u| u.path() == expected)
        .await
        .unwrap();
    b.assert_clean("the repository page").await.unwrap();
    b.wait_text("h1", "postgres/pgvector").await.unwrap();
    b.click(
        "form[action$='/approve'] button[type=submit], \
         form:has(input[name=action][value=approve]) button[type=submit]",
    )
    .await
    .unwrap();
    b.wait_url("the approval", |u| {
        u.query().is_some_and(|q| q.contains("done=approved"))
    })
    .await
    .unwrap();
    b.assert_clean("the approval").await.unwrap();
    b.wait_text("main", "approved").await.unwrap();
    let (s, repo) = server
        .call(
            reqwest::Method::GET,
            &format!("/v1/repositories/{registry_id}/postgres/pgvector"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{repo}");
    // The first Approve on the page is a tag's, at its digest.
    let approved: Vec<&str> = repo["tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["tag_approval"]["decision"] == "approved")
        .filter_map(|t| t["tag"].as_str())
        .collect();
    assert_eq!(approved.len(), 1, "{repo}");

    step(started, "deploy");
    // Deploy a model from the Model Library.
    reload_until(&b, &server, "/models", "main table", "models/llama-chat").await;
    let deploy = b
        .find_all("a.deploy")
        .await
        .unwrap()
        .into_iter()
        .next()
        .expect("a Deploy to Model Serving link");
    assert!(
        deploy
            .text()
            .await
            .unwrap()
            .contains("Deploy to Model Serving")
    );
    let mut chosen = None;
    for link in b.find_all("a.deploy").await.unwrap() {
        if link
            .attr("href")
            .await
            .unwrap()
            .is_some_and(|h| h.contains("llama-chat"))
        {
            chosen = Some(link);
            break;
        }
    }
    chosen
        .expect("a deploy link for models/llama-chat")
        .click()
        .await
        .unwrap();
    b.wait_url("the deploy form", |u| {
        u.path() == "/deployments/new" && u.query().is_some_and(|q| q.contains("image="))
    })
    .await
    .unwrap();
    b.assert_clean("the deploy form").await.unwrap();
    let image = b
        .find("[name=image]")
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(image.contains("models/llama-chat"), "{image}");
    b.fill("input[name=name]", "llama-chat").await.unwrap();
    b.fill("input[name=namespace]", "serving").await.unwrap();
    b.fill("input[name=replicas]", "1").await.unwrap();
    b.click_text("button[type=submit]", "Deploy").await.unwrap();
    b.wait_url("the deployment", |u| {
        u.path().starts_with("/deployments/") && u.path() != "/deployments/new"
    })
    .await
    .unwrap();
    b.assert_clean("the deployment").await.unwrap();
    reload_until(
        &b,
        &server,
        "/deployments",
        "table#deployments",
        "llama-chat",
    )
    .await;

    step(started, "screenshots");
    // Screenshots of the three main pages, as the flow left them.
    let shots = [
        ("/", "image-library.png"),
        ("/models", "model-library.png"),
        ("/registries", "manage-repositories.png"),
    ];
    for (path, file) in shots {
        open(&b, &server, path).await;
        let png = b.screenshot().await.unwrap();
        assert_eq!(&png[1..4], b"PNG", "{path}: not a PNG");
        // IHDR: width and height, big-endian, at bytes 16..24.
        let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
        let h = u32::from_be_bytes(png[20..24].try_into().unwrap());
        assert_eq!(
            (w, h),
            (
                imagelib_testkit::browser::WIDTH,
                imagelib_testkit::browser::HEIGHT
            ),
            "{path}"
        );
        if let Some(dir) = screenshots_dir() {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(file), &png).unwrap();
        }
    }

    step(started, "sign out");
    // Sign out: back at sign-in, and the pages need a session again.
    b.click("form[action='/logout'] button").await.unwrap();
    b.wait_url("the sign-in page", |u| u.path() == "/login")
        .await
        .unwrap();
    b.assert_clean("signed out").await.unwrap();
    b.goto(&server.url("/models")).await.unwrap();
    b.wait_url("sign-in again", |u| u.path() == "/login")
        .await
        .unwrap();
    b.assert_clean("after sign-out").await.unwrap();

    b.close().await.unwrap();
    eprintln!("console flow: {:.1} s", started.elapsed().as_secs_f64());
}

/// Hostile text from a registry (a registry label, a rule description, image
/// annotations, a README with raw HTML, a `javascript:` link and an `onerror` image) is
/// shown as text on every page that shows it: no element is injected, no script runs,
/// no alert opens, and the browser logs no error (a blocked inline script would be a CSP
/// violation, an injected `<img src=x>` a failed load).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_registry_content_is_shown_as_text() {
    let b = Browser::start().await.unwrap();
    let server = TestServer::start().await.unwrap();
    let registry = TestRegistry::start().await.unwrap();
    registry
        .push_image(
            "tools/inject",
            "1.0",
            &ImageSpec::linux_amd64()
                .annotation("org.opencontainers.image.title", HOSTILE)
                .annotation("org.opencontainers.image.description", HOSTILE)
                .label("io.imagelib.kind", "database")
                .layer(b"inject"),
        )
        .await
        .unwrap();
    server.wait_ready().await.unwrap();
    let label = format!("Lab {HOSTILE}");
    let (s, r) = server
        .call(
            reqwest::Method::POST,
            "/v1/registries",
            Some(
                json!({"label": label, "url": registry.host(), "registry_type": "generic",
                        "insecure": true}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    let id = r["id"].as_str().unwrap().to_owned();
    let (s, r) = server
        .call(
            reqwest::Method::PUT,
            &format!("/v1/registries/{id}/rules/tools"),
            Some(json!({"repositories": "tools/*", "kind": "database", "description": HOSTILE})),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let last = server.sync(&id).await;
    assert_eq!(last["state"], "completed", "{last}");
    let readme = format!(
        "# Inject {HOSTILE}\n\n<script>alert(3)</script>\n\n<img src=x onerror=alert(4)>\n\n\
         [a link](javascript:alert(5)) and `{HOSTILE}`\n"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (s, r) = server
            .call(
                reqwest::Method::PUT,
                &format!("/v1/repositories/{id}/tools/inject/readme"),
                Some(json!({ "readme": readme })),
            )
            .await;
        if s == 200 {
            break;
        }
        assert!(
            s == 404 && Instant::now() < deadline,
            "the README was refused: {s} {r}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    b.goto(&server.url("/login")).await.unwrap();
    sign_in(&b, ADMIN).await;
    b.wait_url("signed in", |u| u.path() == "/").await.unwrap();
    b.assert_clean("signed in").await.unwrap();

    let repo_page = format!("/repositories/{id}/tools/inject");
    reload_until(&b, &server, "/", "main", "tools/inject").await;
    for path in [
        "/",
        "/?q=inject",
        "/registries",
        &format!("/registries/{id}"),
        repo_page.as_str(),
        "/activity",
    ] {
        open(&b, &server, path).await;
        let main = b.text("main").await.unwrap();
        // The page names the hostile thing it is about, as text.
        if path == "/registries" || path.starts_with("/registries/") {
            assert!(
                main.contains(&label),
                "{path}: the label is not shown as text:\n{main}"
            );
        }
        if path == repo_page {
            // The README is Markdown: its raw HTML is sanitised away, its code is text.
            b.wait_text(".readme h2", "Inject").await.unwrap();
            let code = b.text(".readme code").await.unwrap();
            assert_eq!(code, HOSTILE, "{path}: the README's code is not text");
        }
        // Nothing was injected: no element of the hostile markup, no script running.
        assert!(
            b.find_all("main img[src=x], main img[onerror], main script")
                .await
                .unwrap()
                .is_empty(),
            "{path}: hostile markup became elements"
        );
        assert!(
            b.find_all("a[href^='javascript:']")
                .await
                .unwrap()
                .is_empty(),
            "{path}: a javascript: link"
        );
        assert!(!b.alert_open().await, "{path}: an alert is open");
        let ran = b
            .client()
            .execute("return window.__imagelib_injected === true;", Vec::new())
            .await
            .unwrap();
        assert_eq!(ran, json!(false), "{path}");
        b.assert_clean(path).await.unwrap();
    }
    b.close().await.unwrap();
}

/// The log check can fail: an inline script put into a console page is refused by its
/// Content-Security-Policy, does not run, and the refusal is a `SEVERE` entry that
/// [`Browser::assert_clean`] reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csp_violation_or_an_accessibility_fault_fails_the_page_check() {
    let b = Browser::start().await.unwrap();
    let server = TestServer::start().await.unwrap();
    open(&b, &server, "/login").await;
    let ran = b
        .client()
        .execute(
            "const s = document.createElement('script');
             s.textContent = 'window.__imagelib_inline = true;';
             document.body.appendChild(s);
             return window.__imagelib_inline === true;",
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(ran, json!(false), "the inline script ran");
    let deadline = Instant::now() + Duration::from_secs(10);
    let err = loop {
        // The entry may take a moment to reach the log.
        if let Err(e) = b.assert_clean("an inline script").await {
            break e.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the CSP violation was not logged"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(err.contains("Content Security Policy"), "{err}");

    // The accessibility rules can fail too: a clean page has none broken, then an
    // unlabelled field, a nameless button, a second h1 and a duplicate id each are named.
    open(&b, &server, "/login").await;
    assert_eq!(
        b.accessibility_problems().await.unwrap(),
        Vec::<String>::new()
    );
    b.client()
        .execute(
            "const m = document.querySelector('main');
             const i = document.createElement('input'); i.name = 'stray'; m.appendChild(i);
             m.appendChild(document.createElement('button'));
             m.appendChild(document.createElement('h1'));
             const d = document.createElement('p'); d.id = 'main'; m.appendChild(d);",
            Vec::new(),
        )
        .await
        .unwrap();
    let problems = b.accessibility_problems().await.unwrap().join("\n");
    for broken in [
        "unlabelled input name=stray",
        "nameless button",
        "2 h1 elements",
        "id main used 2 times",
    ] {
        assert!(
            problems.contains(broken),
            "{broken} not found in:\n{problems}"
        );
    }
    let err = b
        .assert_clean("a broken page")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("accessibility"), "{err}");
    b.close().await.unwrap();
}
