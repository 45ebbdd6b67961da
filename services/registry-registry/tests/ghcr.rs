//! The GitHub Container Registry profile in registration, against the fake GitHub
//! (imagelib-testkit) in front of a real `docker-registry`: an owner validates through the
//! GitHub REST API (ghcr.io has no `_catalog`), with the PAT as its bearer token.

mod common;

use common::Env;
use imagelib_testkit::github::FakeGitHub;
use imagelib_testkit::registry::TestRegistry;
use serde_json::json;

const PAT: &str = "ghp_s3cretTokenValue";

#[tokio::test]
async fn a_ghcr_owner_validates_through_the_github_api_and_a_refused_pat_is_unauthorized() {
    let registry = TestRegistry::start().await.unwrap();
    let gh = FakeGitHub::start(&registry).await;
    gh.user(
        "octocat",
        &[("hello", "public"), ("tools/secret", "private")],
    );
    gh.token(PAT);
    let env = Env::new();
    let mut config = env.config();
    config.providers.github_api = Some(gh.api_url().parse().unwrap());
    let svc = env.start_with(config).await;
    let body = |password: &str| {
        json!({"label": "Octocat", "url": format!("{}/octocat", gh.host()), "registry_type": "ghcr",
               "insecure": true,
               "credentials": {"kind": "basic", "username": "octocat", "password": password}})
    };
    let (s, p) = svc.post("/v1/registries", body("ghp_wrong")).await;
    assert_eq!(s, 422, "{p}");
    assert_eq!(p["code"], "unauthorized", "{p}");
    assert!(!p.to_string().contains("ghp_wrong"), "{p}");

    let (s, r) = svc.post("/v1/registries", body(PAT)).await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["status"], "validated", "{r}");
    assert_eq!(r["catalog_access"], false, "{r}");
    let seen = gh.seen();
    let paths: Vec<&str> = seen.iter().map(|q| q.path()).collect();
    assert!(paths.contains(&"/orgs/octocat/packages"), "{paths:?}");
    assert!(paths.contains(&"/users/octocat/packages"), "{paths:?}");
    assert!(!paths.contains(&"/v2/_catalog"), "{paths:?}");
    let bearer = format!("Bearer {PAT}");
    assert!(
        seen.iter()
            .filter(|q| q.path().ends_with("/packages"))
            .any(|q| q.header("authorization") == Some(bearer.as_str())),
        "the PAT is the API's bearer token"
    );

    // An owner GitHub does not know is refused, saying what to do.
    let (s, p) = svc
        .post(
            "/v1/registries",
            json!({"label": "Nobody", "url": format!("{}/nobody", gh.host()),
                   "registry_type": "ghcr", "insecure": true,
                   "credentials": {"kind": "basic", "username": "octocat", "password": PAT}}),
        )
        .await;
    assert_eq!(s, 422, "{p}");
    assert!(
        p["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("packages of `nobody`"),
        "{p}"
    );
}

fn pointers(p: &serde_json::Value) -> Vec<String> {
    p["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .filter_map(|e| e["pointer"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_github_app_registers_through_the_api_with_field_errors_and_only_for_ghcr() {
    let registry = TestRegistry::start().await.unwrap();
    let gh = FakeGitHub::start(&registry).await;
    gh.org("acme", &[("app", "public"), ("secret", "private")]);
    let (private_key, public_key) = imagelib_testkit::github::app_key();
    gh.app("123456", &public_key, "7890", "acme");
    let env = Env::new();
    let mut config = env.config();
    config.providers.github_api = Some(gh.api_url().parse().unwrap());
    let svc = env.start_with(config).await;
    let key_line = private_key.lines().nth(1).unwrap().to_owned();
    let body = |registry_type: &str, app_id: &str, installation_id: &str, key: &str| {
        json!({"label": "Acme", "url": format!("{}/acme", gh.host()), "registry_type": registry_type,
               "insecure": true,
               "credentials": {"kind": "github_app", "app_id": app_id,
                               "installation_id": installation_id, "private_key": key}})
    };

    // The type's form offers it, with its three fields.
    let (s, types) = svc.get("/v1/registry-types").await;
    assert_eq!(s, 200, "{types}");
    let ghcr = types
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["key"] == "ghcr")
        .unwrap()
        .clone();
    assert!(
        ghcr["credential_kinds"]
            .as_array()
            .unwrap()
            .contains(&json!("github_app")),
        "{ghcr}"
    );
    assert!(
        ghcr["credential_choices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["kind"] == "github_app"),
        "{ghcr}"
    );
    let app_fields: Vec<(String, String)> = ghcr["fields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["credential_kind"] == "github_app")
        .map(|f| {
            (
                f["pointer"].as_str().unwrap().to_owned(),
                f["input"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        app_fields,
        [
            ("/credentials/app_id".to_owned(), "text".to_owned()),
            ("/credentials/installation_id".to_owned(), "text".to_owned()),
            ("/credentials/private_key".to_owned(), "textarea".to_owned()),
        ]
    );

    // Field errors, each at its pointer, never quoting the key.
    let not_a_key = "-----BEGIN RSA PRIVATE KEY-----\nY2FuYXJ5\n-----END RSA PRIVATE KEY-----\n";
    for (b, pointer) in [
        (
            body("ghcr", "app", "7890", &private_key),
            "/credentials/app_id",
        ),
        (
            body("ghcr", "123456", "", &private_key),
            "/credentials/installation_id",
        ),
        (
            body("ghcr", "123456", "78/90", &private_key),
            "/credentials/installation_id",
        ),
        (
            body("ghcr", "123456", "7890", not_a_key),
            "/credentials/private_key",
        ),
        (
            body("ghcr", "123456", "7890", ""),
            "/credentials/private_key",
        ),
        (
            body("generic", "123456", "7890", &private_key),
            "/credentials/kind",
        ),
        (
            body("gcr", "123456", "7890", &private_key),
            "/credentials/kind",
        ),
    ] {
        let (s, p) = svc.post("/v1/registries", b).await;
        assert_eq!(s, 422, "{pointer}: {p}");
        assert_eq!(pointers(&p), [pointer], "{p}");
        let text = p.to_string();
        assert!(
            !text.contains("Y2FuYXJ5") && !text.contains(&key_line),
            "{text}"
        );
    }

    // An installation GitHub does not know: validation fails as unauthorized.
    let (s, p) = svc
        .post(
            "/v1/registries",
            body("ghcr", "123456", "999", &private_key),
        )
        .await;
    assert_eq!(s, 422, "{p}");
    assert_eq!(p["code"], "unauthorized", "{p}");
    assert!(p.to_string().contains("installation 999"), "{p}");
    assert!(!p.to_string().contains(&key_line), "{p}");

    // The app: validated through the GitHub API with an installation token, the registry
    // side answering that token.
    let (s, r) = svc
        .post(
            "/v1/registries",
            body("ghcr", "123456", "7890", &private_key),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["status"], "validated", "{r}");
    assert_eq!(r["auth_kind"], "github_app", "{r}");
    let text = r.to_string();
    assert!(
        !text.contains(&key_line) && !text.contains("ghs_"),
        "{text}"
    );
    let issued = gh.installation_tokens();
    assert!(!issued.is_empty());
    let seen = gh.seen();
    assert!(
        seen.iter()
            .any(|q| q.path() == "/app/installations/7890/access_tokens"),
        "exchanged"
    );
    assert!(
        seen.iter().any(|q| q.path() == "/orgs/acme/packages"
            && q.header("authorization")
                == Some(format!("Bearer {}", issued[issued.len() - 1]).as_str())),
        "the installation token lists the packages"
    );
}
