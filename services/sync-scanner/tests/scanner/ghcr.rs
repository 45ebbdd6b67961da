//! A GitHub Container Registry scan against the fake GitHub (imagelib-testkit) in front of
//! a real registry: the owner's packages come from the GitHub REST API (ghcr.io has no
//! `_catalog`), the PAT goes to the registry and, as a bearer token, to the API only.

use imagelib_events::model::{RegistryType, RuleKind};
use imagelib_testkit::github::FakeGitHub;
use imagelib_testkit::registry::{ImageSpec, TestRegistry};

use crate::common::Env;

const PAT: &str = "ghp_s3cretTokenValue";

fn image(n: &str) -> ImageSpec {
    ImageSpec::linux_amd64().layer(n.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ghcr_owner_is_listed_through_the_github_api_and_the_pat_goes_nowhere_else()
-> anyhow::Result<()> {
    let registry = TestRegistry::builder()
        .htpasswd("octocat", PAT)
        .start()
        .await?;
    for r in ["acme/web", "acme/tools/builder", "other/x"] {
        registry.push_image(r, "1.0", &image(r)).await?;
    }
    let ghcr = FakeGitHub::start(&registry).await;
    // The API on another server: nothing but the packages endpoints goes there.
    let other = TestRegistry::start().await?;
    let api = FakeGitHub::start(&other).await;
    api.org("acme", &[("web", "public"), ("tools/builder", "private")]);
    api.token(PAT);
    let env = Env::new().await;
    let mut config = env.config();
    config.providers.github_api = Some(api.api_url().parse()?);
    let scanner = env.start_with(config).await;
    let id = env
        .register_with(
            &format!("{}/acme", ghcr.host()),
            Some(serde_json::json!({"kind": "basic", "username": "octocat", "password": PAT})),
            |r| r.registry_type = RegistryType::Ghcr,
        )
        .await;
    env.rule(id, "all", &["**"], RuleKind::Auto).await;
    let (done, events) = env.scan_ok(id, None).await;
    assert!(!done.partial, "{done:?}");
    assert_eq!(done.added, 2, "{:?}", crate::common::summary(&events));
    assert_eq!(done.repositories, 2);

    let to_api = api.seen();
    assert!(!to_api.is_empty());
    let bearer = format!("Bearer {PAT}");
    for q in &to_api {
        assert_eq!(q.path(), "/orgs/acme/packages", "only the packages API");
        assert_eq!(q.header("authorization"), Some(bearer.as_str()));
    }
    let to_registry = ghcr.seen();
    let paths: Vec<&str> = to_registry.iter().map(|q| q.path()).collect();
    assert!(!paths.contains(&"/v2/_catalog"), "{paths:?}");
    assert!(!paths.iter().any(|p| p.ends_with("/packages")), "{paths:?}");
    assert!(
        !paths.iter().any(|p| p.starts_with("/v2/other/")),
        "{paths:?}"
    );
    for q in &to_registry {
        assert_ne!(
            q.header("authorization"),
            Some(bearer.as_str()),
            "the PAT is not a bearer token at the registry"
        );
    }
    assert!(
        to_registry
            .iter()
            .any(|q| q.path().starts_with("/v2/acme/") && q.header("authorization").is_some()),
        "the registry itself got the credentials"
    );
    scanner.stop().await;
    Ok(())
}
