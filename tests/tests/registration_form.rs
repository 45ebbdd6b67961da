//! The Add Registry form in a real headless Chromium with the console's CSP and
//! `console.js` in force: the type select shows the chosen type's fields in place, with
//! its labels and defaults (Docker Hub's address filled in, a namespace asked for), and a
//! registration without a typed URL goes to the type's default address; a type's
//! credential kinds show the fields each one reads.

use imagelib_e2e::TestServer;
use imagelib_testkit::browser::Browser;

const ADMIN: &str = "test-admin-token";

async fn visible(b: &Browser, css: &str) -> bool {
    b.find(css).await.unwrap().is_displayed().await.unwrap()
}

async fn value(b: &Browser, css: &str) -> String {
    b.find(css)
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_type_select_shows_each_types_fields_in_place() {
    let b = Browser::start().await.unwrap();
    let server = TestServer::start().await.unwrap();
    server.wait_ready().await.unwrap();
    b.goto(&server.url("/registries/new")).await.unwrap();
    b.wait_url("the sign-in page", |u| u.path() == "/login")
        .await
        .unwrap();
    b.fill("input[name=token]", ADMIN).await.unwrap();
    b.click("form[action='/login'] button[type=submit]")
        .await
        .unwrap();
    b.wait_url("the form", |u| u.path() == "/registries/new")
        .await
        .unwrap();
    b.assert_clean("/registries/new").await.unwrap();

    // Docker Registry first: its URL is typed, no namespace, plain HTTP offered.
    assert!(visible(&b, "input[name=url]").await);
    assert!(!visible(&b, "input[name=namespace]").await);
    assert!(visible(&b, "input[name=insecure]").await);
    assert_eq!(value(&b, "input[name=url]").await, "");
    // The chooser's button is for browsers without script.
    assert!(!visible(&b, "form[data-registry-types] button[type=submit]").await);

    b.select(
        "form[data-registry-types] select[name=registry_type]",
        "dockerhub",
    )
    .await
    .unwrap();
    b.wait_url("the type in the address", |u| {
        u.query().is_some_and(|q| q.contains("type=dockerhub"))
    })
    .await
    .unwrap();
    assert!(visible(&b, "input[name=namespace]").await);
    assert!(!visible(&b, "input[name=insecure]").await);
    assert!(!visible(&b, "input[name=access_key_id]").await);
    assert_eq!(value(&b, "input[name=url]").await, "registry-1.docker.io");
    assert_eq!(
        value(&b, "form[data-registry-form] input[name=registry_type]").await,
        "dockerhub"
    );
    let user = b.text("[data-field=username] [data-label]").await.unwrap();
    assert_eq!(user.trim(), "Docker Hub Username");
    let secret = b.text("[data-field=password] [data-label]").await.unwrap();
    assert_eq!(secret.trim(), "Access Token");
    assert_eq!(
        b.text("[data-type-title]").await.unwrap().trim(),
        "Docker Hub"
    );

    // Amazon ECR: the key fields replace username and password; the default address goes.
    b.select(
        "form[data-registry-types] select[name=registry_type]",
        "ecr",
    )
    .await
    .unwrap();
    assert!(visible(&b, "input[name=access_key_id]").await);
    assert!(!visible(&b, "input[name=username]").await);
    assert_eq!(value(&b, "input[name=url]").await, "");
    // Its credential kinds: the key by default; the pod's IAM role needs no key.
    assert!(visible(&b, "#f-credential_kind-ecr").await);
    assert!(!visible(&b, "#f-credential_kind-gcr").await);
    assert!(!visible(&b, "input[name=role_arn]").await);
    b.select("#f-credential_kind-ecr", "aws_web_identity")
        .await
        .unwrap();
    assert!(!visible(&b, "input[name=access_key_id]").await);
    assert!(!visible(&b, "input[name=secret_access_key]").await);
    assert!(visible(&b, "input[name=region]").await);
    assert!(visible(&b, "input[name=role_arn]").await);
    // Artifact Registry: the key JSON for a service account, nothing for GKE's identity.
    b.select(
        "form[data-registry-types] select[name=registry_type]",
        "gcr",
    )
    .await
    .unwrap();
    assert!(!visible(&b, "input[name=role_arn]").await);
    assert!(!visible(&b, "input[name=region]").await);
    assert!(visible(&b, "input[name=username]").await);
    assert!(!visible(&b, "textarea[name=key_json]").await);
    b.select("#f-credential_kind-gcr", "gcp_service_account")
        .await
        .unwrap();
    assert!(visible(&b, "textarea[name=key_json]").await);
    assert!(!visible(&b, "input[name=password]").await);
    b.select("#f-credential_kind-gcr", "gcp_workload_identity")
        .await
        .unwrap();
    assert!(!visible(&b, "textarea[name=key_json]").await);
    assert!(!visible(&b, "input[name=username]").await);

    // Back to Docker Hub, registered without typing an address.
    b.select(
        "form[data-registry-types] select[name=registry_type]",
        "dockerhub",
    )
    .await
    .unwrap();
    b.fill("input[name=label]", "Hub").await.unwrap();
    b.fill("input[name=namespace]", "acme").await.unwrap();
    b.click("input[name=skip_validation]").await.unwrap();
    b.click_text("button[type=submit]", "Add registry")
        .await
        .unwrap();
    b.wait_url("the new registry's page", |u| {
        u.path().starts_with("/registries/") && u.path() != "/registries/new"
    })
    .await
    .unwrap();
    b.assert_clean("the new registry's page").await.unwrap();
    let page = b.text("main").await.unwrap();
    assert!(page.contains("registry-1.docker.io/acme"), "{page}");
    b.close().await.unwrap();
}
