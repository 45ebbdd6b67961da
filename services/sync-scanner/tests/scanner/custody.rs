//! Credentials bound to their host, seen from the scanner: a token realm on another host
//! never gets the password (`realm_not_allowed`), and a credential no master key of this
//! process opens fails the scan at once (`credentials_unavailable`) until it is entered
//! again.

use std::sync::Arc;

use imagelib_events::event::{RegistryCredentialsRotated, RegistryUpdated};
use imagelib_events::model::{AuthKind, RuleKind};
use imagelib_secrets::{MasterKeyring, Vault};
use imagelib_testkit::registry::{ImageSpec, TestRegistry, TokenAuth};
use serde_json::json;
use sync_scanner::scan::Outcome;

use crate::common::{Env, pairs, summary};

fn updated(id: imagelib_events::RegistryId) -> RegistryUpdated {
    RegistryUpdated {
        report_pulls: None,
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
        auth_kind: None,
        credential: None,
        proxy_url: None,
        no_proxy: None,
        artifact_registry: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_realm_on_another_host_fails_the_scan_without_the_password() -> anyhow::Result<()> {
    let canary = format!("canary-{}", imagelib_testkit::unique_id());
    let registry = TestRegistry::builder()
        .token_auth(TokenAuth {
            credentials: Some(("scanner".into(), canary.clone())),
            realm_host: Some("localhost".into()),
            ..TokenAuth::default()
        })
        .start()
        .await?;
    registry
        .push_image("private/app", "1.0", &ImageSpec::linux_amd64())
        .await?;
    let env = Env::new().await;
    let _scanner = env.start().await;
    let id = env
        .register(
            &registry.host(),
            Some(json!({"kind": "basic", "username": "scanner", "password": canary})),
        )
        .await;
    env.rule(id, "all", &["private/*"], RuleKind::Auto).await;
    match env.scan(id, None).await {
        (Outcome::Failed(f), events) => {
            assert!(events.is_empty());
            assert!(f.reason.contains("realm_not_allowed"), "{}", f.reason);
            assert!(!f.reason.contains(&canary));
        }
        other => panic!("{other:?}"),
    }
    let server = registry.token_server().unwrap();
    assert!(
        server.requests().is_empty(),
        "nothing went to the other host"
    );

    // The registry's configuration lists the realm's host: it is trusted.
    let mut listed = updated(id);
    listed.auth_hosts = Some(vec!["localhost".into()]);
    env.publish(listed).await;
    let (done, events) = env.scan_ok(id, None).await;
    assert_eq!(
        summary(&events),
        pairs(&[("discovered", "private/app:1.0")])
    );
    assert!(!done.partial);
    assert!(server.requests().iter().all(|r| r.authenticated));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_credential_sealed_under_a_lost_master_key_fails_the_scan_until_entered_again()
-> anyhow::Result<()> {
    let registry = TestRegistry::builder()
        .htpasswd("scanner", "s3cret-pass")
        .start()
        .await?;
    registry
        .push_image("private/app", "1.0", &ImageSpec::linux_amd64())
        .await?;
    let env = Env::new().await;
    let _scanner = env.start().await;
    let id = imagelib_events::RegistryId::new();
    // Sealed by a master key this scanner's key file does not hold.
    let lost = Arc::new(MasterKeyring::generate());
    let scanner_vault = env.vault().await;
    let foreign = Vault::new(lost.clone(), scanner_vault.store().clone());
    let sealed = foreign
        .seal_for(
            id,
            &serde_json::to_vec(
                &json!({"kind": "basic", "username": "scanner", "password": "s3cret-pass"}),
            )?,
        )
        .await?;
    env.register_as(id, &registry.host(), None, |e| {
        e.auth_kind = AuthKind::Basic;
        e.credential = Some(sealed);
    })
    .await;
    env.rule(id, "all", &["private/*"], RuleKind::Auto).await;
    for _ in 0..2 {
        match env.scan(id, None).await {
            (Outcome::Failed(f), events) => {
                assert!(events.is_empty());
                assert!(
                    f.reason.starts_with("credentials_unavailable"),
                    "{}",
                    f.reason
                );
                assert!(f.reason.contains(lost.primary_id()), "{}", f.reason);
            }
            other => panic!("{other:?}"),
        }
    }

    // Entered again (as registry-registry does): a new data key, sealed anew.
    assert!(scanner_vault.replace_unopenable(id).await?);
    let resealed = scanner_vault
        .seal_for(
            id,
            &serde_json::to_vec(
                &json!({"kind": "basic", "username": "scanner", "password": "s3cret-pass"}),
            )?,
        )
        .await?;
    env.publish(RegistryCredentialsRotated {
        registry_id: id,
        auth_kind: AuthKind::Basic,
        credential: Some(resealed),
        webhook_secret: None,
    })
    .await;
    let (_, events) = env.scan_ok(id, None).await;
    assert_eq!(
        summary(&events),
        pairs(&[("discovered", "private/app:1.0")])
    );
    Ok(())
}
