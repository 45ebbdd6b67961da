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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_github_app_scan_lists_and_scans_and_the_status_shows_the_budget_and_visibility()
-> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    for r in ["acme/web", "acme/secret"] {
        registry.push_image(r, "1.0", &image(r)).await?;
    }
    let ghcr = FakeGitHub::start(&registry).await;
    ghcr.org("acme", &[("web", "public"), ("secret", "private")]);
    let (private_key, public_key) = imagelib_testkit::github::app_key();
    ghcr.app("123456", &public_key, "7890", "acme");
    let env = Env::new().await;
    let mut config = env.config();
    config.providers.github_api = Some(ghcr.api_url().parse()?);
    let scanner = env.start_with(config).await;
    let app = serde_json::json!({"kind": "github_app", "app_id": "123456",
                                 "installation_id": "7890", "private_key": private_key});
    let id = env
        .register_with(&format!("{}/acme", ghcr.host()), Some(app.clone()), |r| {
            r.registry_type = RegistryType::Ghcr
        })
        .await;
    env.rule(id, "all", &["**"], RuleKind::Auto).await;
    let (done, events) = env.scan_ok(id, None).await;
    assert!(!done.partial, "{done:?}");
    assert_eq!(done.repositories, 2, "the private package is listed too");
    assert_eq!(done.added, 2, "{:?}", crate::common::summary(&events));

    // The installation token: exchanged with the app's JWT, then the API's bearer and the
    // registry's Basic login at its token realm; never the key anywhere.
    let issued = ghcr.installation_tokens();
    assert_eq!(
        issued.len(),
        1,
        "the listing and the registry share one exchange"
    );
    let seen = ghcr.seen();
    assert!(
        seen.iter()
            .any(|q| q.path() == "/app/installations/7890/access_tokens")
    );
    let bearers: Vec<String> = issued.iter().map(|t| format!("Bearer {t}")).collect();
    assert!(
        seen.iter()
            .filter(|q| q.path() == "/orgs/acme/packages")
            .all(|q| q
                .header("authorization")
                .is_some_and(|a| bearers.iter().any(|b| b == a))),
        "the packages are listed with an installation token"
    );
    assert!(
        seen.iter().any(|q| q.path() == "/token"),
        "the registry asked for a token"
    );

    // The status API: GitHub's budget as the listing left it, and the visibility.
    let (status, body) = scanner.get("/v1/scanner/status").await;
    assert_eq!(status, 200, "{body}");
    let r = &body["registries"][0];
    let budget = &r["api_rate_limit"];
    assert_eq!(budget["limit"], 5000, "{body}");
    assert_eq!(budget["remaining"], ghcr.remaining(), "{body}");
    assert_eq!(budget["resource"], "core", "{body}");
    assert!(budget["reset_at"].is_string(), "{body}");
    assert!(budget["observed_at"].is_string(), "{body}");
    let visibility = &r["package_visibility"];
    assert_eq!(
        visibility["counts"],
        serde_json::json!({"public": 1, "private": 1}),
        "{body}"
    );
    assert_eq!(
        visibility["repositories"],
        serde_json::json!({"acme/web": "public", "acme/secret": "private"}),
        "{body}"
    );
    assert_eq!(visibility["complete"], true, "{body}");
    let text = body.to_string();
    assert!(
        !text.contains("PRIVATE KEY") && !text.contains("ghs_"),
        "{text}"
    );

    // The same app on a registry that is not `ghcr`: refused, nothing exchanged.
    let exchanges = |gh: &FakeGitHub| {
        gh.seen()
            .iter()
            .filter(|q| q.path().ends_with("/access_tokens"))
            .count()
    };
    let before = exchanges(&ghcr);
    let generic = env
        .register_with(&ghcr.host(), Some(app), |r| {
            r.registry_type = RegistryType::Generic
        })
        .await;
    env.rule(generic, "all", &["acme/web"], RuleKind::Auto)
        .await;
    match env.scan(generic, None).await {
        (sync_scanner::scan::Outcome::Failed(f), _) => {
            assert!(f.reason.contains("`ghcr`"), "{}", f.reason)
        }
        (other, _) => panic!("a github_app on a generic registry scanned: {other:?}"),
    }
    assert_eq!(exchanges(&ghcr), before);
    scanner.stop().await;
    Ok(())
}
