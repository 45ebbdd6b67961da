//! A cold scan asks only what it must: one `GET` per new tag (no `HEAD` first), each
//! digest-addressed manifest and config once, one referrers-API question per registry,
//! and a cosign tag only when the tag list just fetched holds it.

use std::collections::HashMap;

use imagelib_events::model::RuleKind;
use imagelib_testkit::registry::{ImageSpec, TestRegistry};

use crate::common::Env;
use crate::proxy::{Action, FaultProxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cold_scan_makes_only_the_minimal_requests() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    let first = registry
        .push_image("app/one", "1.0", &ImageSpec::linux_amd64())
        .await?;
    registry
        .push_manifest("app/one", "1.1", &first.media_type, first.raw.as_bytes())
        .await?;
    let second = registry
        .push_image("app/one", "2.0", &ImageSpec::linux_amd64().layer(b"two"))
        .await?;
    registry
        .push_cosign_signature("app/one", &second.digest)
        .await?;
    let index = registry
        .push_index(
            "app/multi",
            "1.0",
            &[
                ImageSpec::linux_amd64().layer(b"multi"),
                ImageSpec::new("linux", "arm64").layer(b"multi"),
            ],
            &[],
        )
        .await?;
    registry
        .push_manifest(
            "app/multi",
            "latest",
            &index.media_type,
            index.raw.as_bytes(),
        )
        .await?;
    let proxy = FaultProxy::start(Some(crate::upstream(&registry)), |_, _| Action::Forward).await;

    let env = Env::new().await;
    let scanner = env.start().await;
    let id = env.register(&proxy.host(), None).await;
    env.rule_with(id, "app", &["app/*"], RuleKind::Auto, |r| {
        r.tags.exclude_artifact_tags = true;
    })
    .await;
    let (done, events) = env.scan_ok(id, None).await;
    assert_eq!(done.added, 5, "{done:?}");
    assert_eq!(events.len(), 5);
    let seen = proxy.seen();
    assert_eq!(
        done.requests,
        seen.len() as u64,
        "sync.completed counts every request"
    );
    let asked: Vec<String> = seen
        .iter()
        .map(|r| format!("{} {}", r.method, r.path()))
        .collect();

    // Nothing asked twice.
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for a in &asked {
        *counts.entry(a.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "asked more than once: {twice:?}");

    // Every new tag: one GET by tag, and no HEAD of it.
    let mut by_tag: Vec<&str> = asked
        .iter()
        .filter(|a| a.contains("/manifests/") && !a.contains("/manifests/sha256:"))
        .map(String::as_str)
        .collect();
    by_tag.sort();
    let stem = second.digest.replacen(':', "-", 1);
    let sig_probe = format!("HEAD /v2/app/one/manifests/{stem}.sig");
    let mut expected = vec![
        "GET /v2/app/multi/manifests/1.0".to_owned(),
        "GET /v2/app/multi/manifests/latest".to_owned(),
        "GET /v2/app/one/manifests/1.0".to_owned(),
        "GET /v2/app/one/manifests/1.1".to_owned(),
        "GET /v2/app/one/manifests/2.0".to_owned(),
        sig_probe.clone(),
    ];
    expected.sort();
    assert_eq!(
        by_tag, expected,
        "one GET per tag, the one cosign tag listed"
    );

    // A HEAD only for the cosign tag the listing shows; the absent `.att`/`.sbom` and the
    // referrers tag schema's `sha256-<hex>` cost nothing.
    let heads: Vec<&String> = asked.iter().filter(|a| a.starts_with("HEAD ")).collect();
    assert_eq!(heads, vec![&sig_probe], "{asked:#?}");
    // distribution 2.8 has no referrers API: asked once for the whole scan.
    let api = asked.iter().filter(|a| a.contains("/referrers/")).count();
    assert_eq!(api, 1, "{asked:#?}");

    // Digest-addressed: the index's platform manifests, the configs, and what trust reads
    // of the signature; never the manifest a tag GET already brought.
    for digest in [&first.digest, &second.digest, &index.digest] {
        assert!(
            !asked
                .iter()
                .any(|a| a.ends_with(&format!("/manifests/{digest}"))),
            "{digest} fetched again: {asked:#?}"
        );
    }
    for child in &index.manifests {
        assert!(asked.contains(&format!("GET /v2/app/multi/manifests/{}", child.digest)));
    }
    assert!(asked.contains(&format!("GET /v2/app/one/blobs/{}", first.config_digest)));
    assert!(asked.contains(&format!("GET /v2/app/one/blobs/{}", second.config_digest)));
    let catalog = asked.iter().filter(|a| a.contains("/_catalog")).count();
    let lists = asked.iter().filter(|a| a.ends_with("/tags/list")).count();
    assert_eq!((catalog, lists), (1, 2));

    // The same tags again: only the listings and the one mutable tag's HEAD (a manual
    // scan also lists the signed digest's referrers again: the API question, once, and
    // its cosign tag).
    let mark = proxy.seen().len();
    let (done, events) = env.scan_ok(id, None).await;
    assert!(events.is_empty());
    let referrers: Vec<String> = proxy.seen()[mark..]
        .iter()
        .filter(|r| r.path().contains("sha256-") || r.path().contains("/referrers/"))
        .map(|r| format!("{} {}", r.method, r.path()))
        .collect();
    assert!(referrers.len() <= 2, "{referrers:#?}");
    assert!(
        referrers
            .iter()
            .all(|r| r.contains(&second.digest[second.digest.len() - 64..])),
        "only the signed digest: {referrers:#?}"
    );
    let mut warm: Vec<String> = proxy.seen()[mark..]
        .iter()
        .filter(|r| !r.path().contains("sha256-") && !r.path().contains("/referrers/"))
        .map(|r| format!("{} {}", r.method, r.path()))
        .collect();
    warm.sort();
    assert_eq!(
        warm,
        vec![
            "GET /v2/_catalog",
            "GET /v2/app/multi/tags/list",
            "GET /v2/app/one/tags/list",
            "HEAD /v2/app/multi/manifests/latest",
        ],
        "{done:?}"
    );
    scanner.stop().await;
    Ok(())
}
