//! Discovery against a real registry: what a first scan finds, that a second costs only
//! listings and HEADs of mutable tags, and that moves and removals are the only events.

use imagelib_events::EventPayload;
use imagelib_events::model::{ImageKind, RuleKind};
use imagelib_testkit::registry::{
    ArtifactSpec, ImageSpec, MODELPACK_ARTIFACT, OCI_INDEX, TestRegistry,
};

use crate::common::{Env, pairs, summary};
use crate::proxy::{Action, FaultProxy};

const EXTENSIONS: &str = r#"[{"name":"pgvector","version":"0.7.0","description":"vector search"}]"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn discovers_then_emits_only_changes() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    let single = registry
        .push_image(
            "library/postgres",
            "16.1",
            &ImageSpec::linux_amd64().label("io.imagelib.postgres.extensions", EXTENSIONS),
        )
        .await?;
    let index = registry
        .push_index(
            "library/postgres",
            "latest",
            &[
                ImageSpec::linux_amd64(),
                ImageSpec::new("linux", "arm64").variant("v8"),
            ],
            &[],
        )
        .await?;
    let model = registry
        .push_artifact(
            "models/llama",
            Some("1.0"),
            &ArtifactSpec::modelpack("llama-3-8b-instruct"),
        )
        .await?;
    registry
        .push_image("other/skip", "1.0", &ImageSpec::linux_amd64())
        .await?;
    // Every request the scanner makes goes through a recording proxy.
    let proxy = FaultProxy::start(Some(crate::upstream(&registry)), |_, _| Action::Forward).await;

    let env = Env::new().await;
    let scanner = env.start().await;
    let id = env.register(&proxy.host(), None).await;
    env.rule(id, "db", &["library/postgres"], RuleKind::Database)
        .await;
    env.rule(id, "models", &["models/*"], RuleKind::Auto).await;

    // First scan: three tags discovered, the out-of-scope repository never listed.
    let (done, events) = env.scan_ok(id, None).await;
    assert_eq!(
        summary(&events),
        pairs(&[
            ("discovered", "library/postgres:16.1"),
            ("discovered", "library/postgres:latest"),
            ("discovered", "models/llama:1.0"),
        ])
    );
    assert_eq!((done.added, done.moved, done.removed), (3, 0, 0));
    assert_eq!((done.repositories, done.tags_seen), (2, 3));
    assert!(!done.partial);
    assert!(
        proxy
            .seen()
            .iter()
            .all(|r| !r.target.contains("other/skip")),
        "out of scope: never asked"
    );
    for e in &events {
        assert_eq!(e.source, "/imagelib/sync-scanner");
        assert_eq!(e.actor.as_deref(), Some("system:sync-scanner"));
        let EventPayload::TagDiscovered(d) = &e.payload else {
            panic!("{e:?}")
        };
        match (d.repository.as_str(), d.tag.as_str()) {
            ("library/postgres", "16.1") => {
                assert_eq!(d.digest.as_str(), single.digest);
                assert_eq!(d.details.kind, ImageKind::Database);
                assert_eq!(d.details.extensions.len(), 1);
                assert_eq!(d.details.extensions[0].name, "pgvector");
                assert_eq!(d.details.extensions[0].version.as_deref(), Some("0.7.0"));
                assert_eq!(d.details.platforms.len(), 1);
                assert_eq!(d.details.platforms[0].architecture, "amd64");
                assert_eq!(d.details.size, single.size);
                assert!(d.details.created.is_some());
            }
            ("library/postgres", "latest") => {
                assert_eq!(d.digest.as_str(), index.digest);
                assert_eq!(d.details.media_type, OCI_INDEX);
                let platforms: Vec<(String, String)> = d
                    .details
                    .platforms
                    .iter()
                    .map(|p| {
                        (
                            p.architecture.clone(),
                            p.digest.as_ref().map(|d| d.to_string()).unwrap_or_default(),
                        )
                    })
                    .collect();
                assert_eq!(
                    platforms,
                    vec![
                        ("amd64".to_owned(), index.manifests[0].digest.clone()),
                        ("arm64".to_owned(), index.manifests[1].digest.clone()),
                    ],
                    "the index digest and every platform's"
                );
                assert_eq!(d.details.size, index.size());
            }
            ("models/llama", "1.0") => {
                assert_eq!(d.digest.as_str(), model.digest);
                assert_eq!(d.details.kind, ImageKind::Model);
                assert_eq!(d.details.artifact_type.as_deref(), Some(MODELPACK_ARTIFACT));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    // Nothing changed: no image event, and only the listings plus a HEAD of the one
    // mutable tag (`latest`) go to the registry.
    let mark = proxy.seen().len();
    let (done, events) = env.scan_ok(id, None).await;
    assert!(events.is_empty(), "{:?}", summary(&events));
    let mut asked: Vec<String> = proxy.seen()[mark..]
        .iter()
        .map(|r| format!("{} {}", r.method, r.target))
        .collect();
    asked.sort();
    assert_eq!(
        asked,
        vec![
            "GET /v2/_catalog?n=100",
            "GET /v2/library/postgres/tags/list?n=100",
            "GET /v2/models/llama/tags/list?n=100",
            "HEAD /v2/library/postgres/manifests/latest",
        ]
    );
    assert_eq!(done.requests, 4);
    assert_eq!((done.added, done.moved, done.removed), (0, 0, 0));

    // `latest` re-pushed: exactly one move, from the old index to the new one.
    let repushed = registry
        .push_index(
            "library/postgres",
            "latest",
            &[ImageSpec::linux_amd64().layer(b"a new layer")],
            &[],
        )
        .await?;
    let (done, events) = env.scan_ok(id, None).await;
    assert_eq!(
        summary(&events),
        pairs(&[("moved", "library/postgres:latest")])
    );
    let EventPayload::TagMoved(m) = &events[0].payload else {
        panic!()
    };
    assert_eq!(m.old_digest.as_str(), index.digest);
    assert_eq!(m.new_digest.as_str(), repushed.digest);
    assert_eq!(m.details.platforms.len(), 1);
    assert_eq!(m.details.kind, ImageKind::Database);
    assert_eq!(done.moved, 1);

    // A deleted tag: removed, with the digest it had.
    registry.delete_tag("library/postgres", "16.1").await?;
    let (done, events) = env.scan_ok(id, None).await;
    assert_eq!(
        summary(&events),
        pairs(&[("removed", "library/postgres:16.1")])
    );
    let EventPayload::TagRemoved(r) = &events[0].payload else {
        panic!()
    };
    assert_eq!(r.digest.as_str(), single.digest);
    assert_eq!(done.removed, 1);

    // The status API tells how it went.
    let (status, body) = scanner.get("/v1/scanner/status").await;
    assert_eq!(status, 200, "{body}");
    let entry = &body["registries"][0];
    assert_eq!(entry["registry_id"], id.to_string());
    assert_eq!(entry["last_scan"]["state"], "completed");
    assert_eq!(entry["last_scan"]["summary"]["removed"], 1);
    assert_eq!(entry["known_tags"], 2);
    assert_eq!(entry["running"], false);
    let (status, _) = scanner.get("/openapi.json").await;
    assert_eq!(status, 200);
    scanner.stop().await;
    Ok(())
}

/// A request for one repository lists that repository only, not the catalog.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_scoped_to_a_repository_scans_only_it() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    registry
        .push_image("team/a", "1.0", &ImageSpec::linux_amd64())
        .await?;
    registry
        .push_image("team/b", "1.0", &ImageSpec::linux_amd64())
        .await?;
    let proxy = FaultProxy::start(Some(crate::upstream(&registry)), |_, _| Action::Forward).await;
    let env = Env::new().await;
    let _scanner = env.start().await;
    let id = env.register(&proxy.host(), None).await;
    env.rule(id, "team", &["team/*"], RuleKind::Auto).await;
    let (_, events) = env.scan_ok(id, None).await;
    assert_eq!(events.len(), 2);

    let b = ImageSpec::linux_amd64().layer(b"b 2");
    registry.push_image("team/a", "2.0", &b).await?;
    registry.push_image("team/b", "2.0", &b).await?;
    let mark = proxy.seen().len();
    let (done, events) = env.scan_ok(id, Some("team/a")).await;
    assert_eq!(summary(&events), pairs(&[("discovered", "team/a:2.0")]));
    assert_eq!(done.repositories, 1);
    let seen = proxy.seen()[mark..].to_vec();
    assert!(
        seen.iter().all(|r| !r.target.contains("_catalog")),
        "no catalog"
    );
    assert!(
        seen.iter().all(|r| !r.target.contains("team/b")),
        "not the other repository"
    );
    let started = env
        .events()
        .await
        .into_iter()
        .rev()
        .find_map(|e| match e.payload {
            EventPayload::SyncStarted(s) => Some(s),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        started.repository.as_ref().map(|r| r.as_str()),
        Some("team/a")
    );
    assert_eq!(started.reason, imagelib_events::model::SyncReason::Webhook);

    // The whole registry then finds team/b's new tag.
    let (_, events) = env.scan_ok(id, None).await;
    assert_eq!(summary(&events), pairs(&[("discovered", "team/b:2.0")]));
    Ok(())
}

/// 5,000 tags in one repository, listed 100 at a time through `Link` pagination.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_thousand_tags_in_pages_of_a_hundred() -> anyhow::Result<()> {
    use futures::{StreamExt, TryStreamExt};
    const TAGS: usize = 5000;
    let registry = TestRegistry::start().await?;
    let image = registry
        .push_image("big/repo", "v0", &ImageSpec::linux_amd64())
        .await?;
    futures::stream::iter(1..TAGS)
        .map(|i| {
            let (registry, raw, mt) = (&registry, image.raw.as_bytes(), image.media_type.clone());
            async move {
                registry
                    .push_manifest("big/repo", &format!("v{i}"), &mt, raw)
                    .await
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    let proxy = FaultProxy::start(Some(crate::upstream(&registry)), |req, _| {
        if req.path().ends_with("/tags/list") {
            crate::proxy::paginate_tags(req, None)
        } else {
            Action::Forward
        }
    })
    .await;
    let env = Env::new().await;
    let _scanner = env.start().await;
    let id = env.register(&proxy.host(), None).await;
    env.rule(id, "big", &["big/repo"], RuleKind::Auto).await;
    let (done, events) = env.scan_ok(id, None).await;
    assert_eq!(done.tags_seen, TAGS as u64);
    assert_eq!(done.added, TAGS as u64);
    assert_eq!(events.len(), TAGS);
    let pages = proxy
        .seen()
        .iter()
        .filter(|r| r.path().ends_with("/tags/list"))
        .count();
    assert_eq!(
        pages,
        TAGS / 100 + 1,
        "n=100 pages, and the last one (full, without a Link) confirmed once"
    );
    // Each new tag is one GET (no HEAD first); the one config is fetched once, and the
    // manifest the tags share never again by digest.
    let by_digest = proxy
        .seen()
        .iter()
        .filter(|r| {
            r.method == "GET"
                && (r.path().contains("/manifests/sha256:") || r.path().contains("/blobs/"))
        })
        .count();
    assert_eq!(
        by_digest, 1,
        "a digest already known is never fetched again"
    );
    assert!(proxy.seen().iter().all(|r| r.method == "GET"), "no HEAD");

    // Versioned tags are immutable: a rescan is the listing pages and the catalog.
    let (done, events) = env.scan_ok(id, None).await;
    assert!(events.is_empty());
    assert_eq!(
        done.requests,
        (TAGS / 100) as u64 + 2,
        "and the confirmation"
    );
    Ok(())
}
