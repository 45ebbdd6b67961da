//! Docker Hub's pull budget in a scan, against the fake Hub (imagelib-testkit) in front of
//! a real registry: the budget is read and shown on the status API, and a low budget
//! defers repositories before Hub has to answer `429`.

use imagelib_events::model::{RegistryType, RuleKind};
use imagelib_testkit::dockerhub::FakeHub;
use imagelib_testkit::registry::{ImageSpec, TestRegistry};

use crate::common::{Env, repo};

fn image(n: &str) -> ImageSpec {
    ImageSpec::linux_amd64().layer(n.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_docker_hub_scan_shows_the_pull_budget_on_the_status() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    registry
        .push_image("library/postgres", "16", &image("pg 16"))
        .await?;
    let hub = FakeHub::start(&registry, 100, 21600).await;
    let env = Env::new().await;
    let scanner = env.start().await;
    let id = env
        .register_with(&hub.host(), None, |r| {
            r.registry_type = RegistryType::Dockerhub;
            r.repositories = vec![repo("library/postgres")];
        })
        .await;
    env.rule(id, "pg", &["library/postgres"], RuleKind::Auto)
        .await;
    let (done, _) = env.scan_ok(id, None).await;
    assert_eq!(done.added, 1, "listed without `_catalog`: {done:?}");
    assert!(hub.counted_pulls() >= 1);

    let (status, body) = scanner.get("/v1/scanner/status").await;
    assert_eq!(status, 200, "{body}");
    let rl = &body["registries"][0]["rate_limit"];
    assert_eq!(rl["limit"], 100, "{body}");
    assert_eq!(rl["remaining"], hub.remaining(), "{body}");
    assert_eq!(rl["window_secs"], 21600);
    assert!(rl["observed_at"].is_string());
    scanner.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_low_pull_budget_defers_repositories_before_hub_refuses() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    let names = ["acme/a", "acme/b", "acme/c"];
    for r in names {
        registry.push_image(r, "1.0", &image(r)).await?;
    }
    // 100 pulls per six hours and 5 left: within the 20 % reserve, one GET per 216 s,
    // beyond the 2 s the test scanner waits in place.
    let hub = FakeHub::start(&registry, 100, 21600).await;
    hub.set_remaining(5);
    let env = Env::new().await;
    let mut config = env.config();
    config.scanner.referrers = false;
    config.scanner.max_concurrency = 1;
    config.scanner.repository_concurrency = 1;
    let scanner = env.start_with(config).await;
    let id = env
        .register_with(&hub.host(), None, |r| {
            r.registry_type = RegistryType::Dockerhub;
            r.repositories = names.iter().map(|n| repo(n)).collect();
        })
        .await;
    env.rule(id, "acme", &["acme/*"], RuleKind::Auto).await;
    let (done, _) = env.scan_ok(id, None).await;
    assert!(done.partial, "{done:?}");
    assert_eq!(done.added + done.rate_limited.len() as u64, 3, "{done:?}");
    assert!(done.rate_limited.len() >= 2, "{done:?}");
    assert_eq!(hub.refused_pulls(), 0, "Hub never had to answer 429");
    assert_eq!(hub.counted_pulls(), 1, "one paced GET, the rest held back");
    // HEADs went on: every repository's tag was looked at.
    let heads = hub
        .seen()
        .iter()
        .filter(|q| q.method == "HEAD" && q.path().contains("/manifests/"))
        .count();
    assert!(heads >= 3, "{heads}");

    let (_, body) = scanner.get("/v1/scanner/status").await;
    let rl = &body["registries"][0]["rate_limit"];
    assert_eq!(rl["limit"], 100, "{body}");
    assert_eq!(rl["remaining"], 4, "{body}");
    scanner.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_docker_hub_namespace_is_listed_through_the_hub_api() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    for r in ["acme/web", "acme/api", "other/x"] {
        registry.push_image(r, "1.0", &image(r)).await?;
    }
    let hub = FakeHub::start(&registry, 100, 21600).await;
    hub.namespace("acme", &["web", "api"]);
    let env = Env::new().await;
    let mut config = env.config();
    config.providers.dockerhub_api = Some(hub.api_url().parse()?);
    let scanner = env.start_with(config).await;
    let id = env
        .register_with(&format!("{}/acme", hub.host()), None, |r| {
            r.registry_type = RegistryType::Dockerhub;
        })
        .await;
    env.rule(id, "all", &["*/*"], RuleKind::Auto).await;
    let (done, events) = env.scan_ok(id, None).await;
    assert!(!done.partial, "{done:?}");
    assert_eq!(done.added, 2, "{:?}", crate::common::summary(&events));
    assert_eq!(done.repositories, 2);
    let paths: Vec<String> = hub.seen().iter().map(|q| q.path().to_owned()).collect();
    assert!(
        paths
            .iter()
            .any(|p| p == "/v2/namespaces/acme/repositories"),
        "{paths:?}"
    );
    assert!(!paths.iter().any(|p| p == "/v2/_catalog"), "{paths:?}");
    assert!(
        !paths.iter().any(|p| p.starts_with("/v2/other/")),
        "{paths:?}"
    );
    scanner.stop().await;
    Ok(())
}

/// A dockerhub registry's credentials (a Docker ID and token) go to the registry and to
/// the Hub API's login only; the listing then carries the API's session token, and the
/// namespace's private repositories are scanned too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hub_credentials_log_in_to_the_hub_api_and_go_nowhere_else() -> anyhow::Result<()> {
    let registry = TestRegistry::builder()
        .htpasswd("acme-bot", "dckr_pat_s3cret")
        .start()
        .await?;
    registry
        .push_image("acme/private", "1.0", &image("private"))
        .await?;
    let hub = FakeHub::start(&registry, 100, 21600).await;
    let other = TestRegistry::start().await?;
    let api = FakeHub::start(&other, 100, 21600).await;
    api.namespace("acme", &[]);
    api.private("acme", &["private"]);
    api.user("acme-bot", "dckr_pat_s3cret");
    let env = Env::new().await;
    let mut config = env.config();
    config.providers.dockerhub_api = Some(api.api_url().parse()?);
    let scanner = env.start_with(config).await;
    let id = env
        .register_with(
            &format!("{}/acme", hub.host()),
            Some(serde_json::json!({"kind": "basic", "username": "acme-bot", "password": "dckr_pat_s3cret"})),
            |r| r.registry_type = RegistryType::Dockerhub,
        )
        .await;
    env.rule(id, "all", &["acme/*"], RuleKind::Auto).await;
    let (done, _) = env.scan_ok(id, None).await;
    assert_eq!(
        done.added, 1,
        "the private repository, listed after the login: {done:?}"
    );
    let to_api = api.seen();
    let logins = to_api
        .iter()
        .filter(|q| q.method == "POST" && q.path() == "/v2/users/login")
        .count();
    assert_eq!(logins, 1);
    for q in &to_api {
        for (_, v) in &q.headers {
            assert!(!v.contains("dckr_pat_s3cret"), "{} {}", q.method, q.target);
        }
        if q.path() == "/v2/namespaces/acme/repositories" {
            let auth = q.header("authorization").unwrap_or_default();
            assert!(auth.starts_with("Bearer "), "{auth}");
        } else {
            assert_eq!(
                q.path(),
                "/v2/users/login",
                "nothing else goes to the Hub API"
            );
        }
    }
    assert!(
        hub.seen()
            .iter()
            .any(|q| q.path().starts_with("/v2/acme/") && q.header("authorization").is_some()),
        "the registry itself got the credentials"
    );
    assert!(
        !hub.seen().iter().any(|q| q.path() == "/v2/users/login"),
        "no login at the registry"
    );
    scanner.stop().await;
    Ok(())
}
