//! A Google Artifact Registry scan of a registry reached at another address (a mirror, a
//! private endpoint) whose registration names the repository (`artifact_registry`),
//! against the fake Artifact Registry (imagelib-testkit) in front of a real
//! `docker-registry`: `_catalog` is refused, the repositories come from the Artifact
//! Registry API's packages, their tags become `image.tag_discovered`, and the access
//! token goes to the registry (its login) and, as a bearer, to the API's origin only.

use imagelib_events::EventPayload;
use imagelib_events::event::RegistryUpdated;
use imagelib_events::model::{RegistryType, RuleKind};
use imagelib_testkit::artifact_registry::FakeArtifactRegistry;
use imagelib_testkit::registry::{ImageSpec, TestRegistry};

use sync_scanner::scan::Outcome;

use crate::common::{Env, pairs, summary};

const TOKEN: &str = "ya29.a0AfB_canaryScannerAccessToken";
const IMAGES: &str = "projects/my-project/locations/us-central1/repositories/images";

fn image(n: &str) -> ImageSpec {
    ImageSpec::linux_amd64().layer(n.as_bytes())
}

/// A scan that lists nothing (the refused `_catalog`, no exact names in the rules).
async fn nothing_found(env: &Env, id: imagelib_events::RegistryId) {
    let (outcome, events) = env.scan(id, None).await;
    assert!(summary(&events).is_empty(), "{:?}", summary(&events));
    if let Outcome::Completed(c) = outcome {
        assert_eq!(c.repositories, 0, "{c:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_named_repository_is_listed_through_the_api_and_the_token_goes_nowhere_else()
-> anyhow::Result<()> {
    let registry = TestRegistry::builder()
        .htpasswd("oauth2accesstoken", TOKEN)
        .start()
        .await?;
    for r in [
        "my-project/images/app",
        "my-project/images/team/tool",
        "my-project/other/x",
    ] {
        registry.push_image(r, "1.0", &image(r)).await?;
    }
    // The registry side (the mirror's address) and the API on two servers.
    let mirror = FakeArtifactRegistry::start(&registry).await;
    let api = FakeArtifactRegistry::start(&registry).await;
    api.repository(
        "my-project",
        "us-central1",
        "images",
        "my-project/images",
        &[TOKEN],
    );
    let env = Env::new().await;
    let mut config = env.config();
    config.providers.artifact_registry_api = Some(api.api_url().parse()?);
    let scanner = env.start_with(config).await;
    let id = env
        .register_with(
            &mirror.host(),
            Some(serde_json::json!({"kind": "basic", "username": "oauth2accesstoken", "password": TOKEN})),
            |r| r.registry_type = RegistryType::Gcr,
        )
        .await;
    env.rule(id, "all", &["**"], RuleKind::Auto).await;

    // Without the repository named, the address says nothing of Google: `_catalog` only,
    // and it is refused, so nothing is found.
    nothing_found(&env, id).await;
    assert_eq!(api.api_requests(), 0);

    set_artifact_registry(&env, id, Some(IMAGES)).await;
    let (done, events) = env.scan_ok(id, None).await;
    assert!(!done.partial, "{done:?}");
    assert_eq!(done.repositories, 2);
    assert_eq!(
        summary(&events),
        pairs(&[
            ("discovered", "my-project/images/app:1.0"),
            ("discovered", "my-project/images/team/tool:1.0"),
        ])
    );
    assert!(
        events
            .iter()
            .all(|e| matches!(e.payload, EventPayload::TagDiscovered(_))),
        "only discoveries"
    );

    let bearer = format!("Bearer {TOKEN}");
    let to_api = api.seen();
    assert!(!to_api.is_empty());
    for q in &to_api {
        assert_eq!(q.path(), format!("/v1/{IMAGES}/packages"), "only the API");
        assert_eq!(q.header("authorization"), Some(bearer.as_str()));
    }
    let to_registry = mirror.seen();
    let paths: Vec<&str> = to_registry.iter().map(|q| q.path()).collect();
    assert!(paths.contains(&"/v2/_catalog"), "asked first: {paths:?}");
    assert!(!paths.iter().any(|p| p.starts_with("/v1/")), "{paths:?}");
    assert!(
        !paths.iter().any(|p| p.starts_with("/v2/my-project/other/")),
        "{paths:?}"
    );
    for q in &to_registry {
        assert_ne!(
            q.header("authorization"),
            Some(bearer.as_str()),
            "the access token is the registry's login, not a bearer there"
        );
    }
    assert!(
        to_registry.iter().any(|q| {
            q.path().starts_with("/v2/my-project/images/") && q.header("authorization").is_some()
        }),
        "the registry itself got the credentials"
    );

    // Cleared again: back to the address's (no) location.
    set_artifact_registry(&env, id, None).await;
    let before = api.api_requests();
    nothing_found(&env, id).await;
    assert_eq!(api.api_requests(), before);
    scanner.stop().await;
    Ok(())
}

/// `registry.updated` setting (or clearing) the registry's Artifact Registry repository.
async fn set_artifact_registry(env: &Env, id: imagelib_events::RegistryId, resource: Option<&str>) {
    env.publish(RegistryUpdated {
        registry_id: id,
        label: None,
        url: None,
        insecure: None,
        visibility: None,
        ca_pem: None,
        scan_interval_secs: None,
        repositories: None,
        auth_hosts: None,
        registry_type: None,
        report_pulls: None,
        auth_kind: None,
        credential: None,
        proxy_url: None,
        no_proxy: None,
        artifact_registry: Some(resource.map(str::to_owned)),
    })
    .await;
}
