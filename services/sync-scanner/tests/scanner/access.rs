//! Registries that need credentials, and registries that cannot be reached.

use imagelib_events::model::RuleKind;
use imagelib_testkit::registry::{ImageSpec, TestRegistry};
use serde_json::json;
use sync_scanner::scan::Outcome;

use crate::common::{Env, pairs, summary};

/// The credential is sealed by a Vault on the shared key bucket, as registry-registry
/// does; the scanner opens it and authenticates (htpasswd, Basic).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scans_a_registry_with_sealed_basic_credentials() -> anyhow::Result<()> {
    let registry = TestRegistry::builder()
        .htpasswd("scanner", "s3cret-pass")
        .start()
        .await?;
    registry
        .push_image("private/app", "1.0", &ImageSpec::linux_amd64())
        .await?;
    let env = Env::new().await;
    let _scanner = env.start().await;
    let good = env
        .register(
            &registry.host(),
            Some(json!({"kind": "basic", "username": "scanner", "password": "s3cret-pass"})),
        )
        .await;
    env.rule(good, "all", &["private/*"], RuleKind::Auto).await;
    let (done, events) = env.scan_ok(good, None).await;
    assert_eq!(
        summary(&events),
        pairs(&[("discovered", "private/app:1.0")])
    );
    assert!(!done.partial);

    // A wrong password: the scan fails and says why, never with the secret.
    let bad = env
        .register(
            &registry.host(),
            Some(json!({"kind": "basic", "username": "scanner", "password": "wrong-canary"})),
        )
        .await;
    env.rule(bad, "all", &["private/*"], RuleKind::Auto).await;
    match env.scan(bad, None).await {
        (Outcome::Failed(f), events) => {
            assert!(events.is_empty());
            assert!(f.reason.contains("unauthorized"), "{}", f.reason);
            assert!(!f.reason.contains("wrong-canary"));
        }
        other => panic!("{other:?}"),
    }
    // No credential at all: the same.
    let anonymous = env.register(&registry.host(), None).await;
    env.rule(anonymous, "all", &["private/*"], RuleKind::Auto)
        .await;
    assert!(matches!(
        env.scan(anonymous, None).await.0,
        Outcome::Failed(_)
    ));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreachable_registry_fails_its_scan() -> anyhow::Result<()> {
    let port = imagelib_testkit::registry::free_port()?;
    let env = Env::new().await;
    let _scanner = env.start().await;
    let id = env.register(&format!("127.0.0.1:{port}"), None).await;
    env.rule(id, "all", &["**"], RuleKind::Auto).await;
    match env.scan(id, None).await {
        (Outcome::Failed(f), _) => assert!(f.reason.starts_with("connect"), "{}", f.reason),
        other => panic!("{other:?}"),
    }
    Ok(())
}

/// Without a usable `_catalog` (forbidden, as on Docker Hub or ECR without the
/// permission), the rules' exact repositories and the registry's explicit list are
/// scanned, and nothing else is removed for not being listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_catalog_exact_and_explicit_repositories_are_scanned() -> anyhow::Result<()> {
    use crate::proxy::{Action, FaultProxy, Response};
    let registry = TestRegistry::start().await?;
    for r in ["team/exact", "team/listed", "team/globbed"] {
        registry
            .push_image(r, "1.0", &ImageSpec::linux_amd64())
            .await?;
    }
    let proxy = FaultProxy::start(Some(crate::upstream(&registry)), |req, _| {
        if req.path() == "/v2/_catalog" {
            Action::Respond(Response::new(
                403,
                &[("Content-Type", "application/json")],
                r#"{"errors":[{"code":"DENIED","message":"catalog not allowed"}]}"#,
            ))
        } else {
            Action::Forward
        }
    })
    .await;
    let env = Env::new().await;
    let _scanner = env.start().await;
    let id = env.register(&proxy.host(), None).await;
    env.rule(id, "exact", &["team/exact"], RuleKind::Auto).await;
    env.rule(id, "glob", &["team/*"], RuleKind::Auto).await;
    let (done, events) = env.scan_ok(id, None).await;
    assert_eq!(summary(&events), pairs(&[("discovered", "team/exact:1.0")]));
    assert!(
        !done.partial,
        "a forbidden catalog is expected, not a failure"
    );

    // The registry's explicit list (registry-registry's `repositories`) adds to it.
    let listed = env
        .register_with(&proxy.host(), None, |r| {
            r.repositories = vec!["team/listed".parse().unwrap()];
        })
        .await;
    env.rule(listed, "glob", &["team/*"], RuleKind::Auto).await;
    let (_, events) = env.scan_ok(listed, None).await;
    assert_eq!(
        summary(&events),
        pairs(&[("discovered", "team/listed:1.0")])
    );
    Ok(())
}
