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
