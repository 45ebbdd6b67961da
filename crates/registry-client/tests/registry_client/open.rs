//! An open registry: listing, manifests, configs, inspection, referrers, the cache.

use futures::{StreamExt, TryStreamExt};
use imagelib_events::model::ReferrerKind;
use imagelib_testkit::registry::{
    ArtifactSpec, DOCKER_MANIFEST, ImageSpec, MODELPACK_ARTIFACT, MODELPACK_CONFIG, OCI_INDEX,
    OCI_MANIFEST, TestRegistry,
};
use registry_client::{
    Credentials, ErrorKind, InspectOptions, Manifest, MemoryCache, NoCache, Reference,
};

use crate::common::{client, client_via, config, digest, repo, tag, upstream};
use crate::proxy::{Action, FaultProxy, Request};

#[tokio::test]
async fn ping_recognises_an_open_registry() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    let client = client(&registry, Credentials::Anonymous);
    let ping = client.ping().await?;
    assert_eq!(ping.api_version.as_deref(), Some("registry/2.0"));
    assert_eq!(ping.auth, registry_client::AuthScheme::None);
    assert!(!ping.authenticated);
    assert_eq!(client.requests(), 1);
    Ok(())
}

#[tokio::test]
async fn catalog_follows_relative_links_over_250_repositories() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    let names: Vec<String> = (0..240)
        .map(|i| format!("app{i:03}"))
        .chain((0..10).map(|i| format!("team/svc{i}")))
        .collect();
    futures::stream::iter(names.iter())
        .map(|name| registry.push_blob(name, b"shared layer"))
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;

    let client = client(&registry, Credentials::Anonymous);
    let listing = client.catalog().await?;
    assert!(listing.complete, "{:?}", listing.error);
    assert_eq!(listing.pages, 3, "250 repositories at n=100");
    assert_eq!(client.requests(), 3);
    let mut got: Vec<String> = listing.items.iter().map(|r| r.to_string()).collect();
    got.sort();
    let mut want = names.clone();
    want.sort();
    assert_eq!(got, want);

    let mut cfg = config(&format!("{}/team", registry.host()), true);
    cfg.page_size = 4;
    let scoped = registry_client::RegistryClient::new(cfg, Credentials::Anonymous)?;
    let listing = scoped.catalog().await?;
    assert!(listing.complete);
    assert_eq!(listing.items.len(), 10);
    assert!(
        listing
            .items
            .iter()
            .all(|r| r.as_str().starts_with("team/"))
    );
    assert!(
        listing.pages > 60,
        "n=4 means many pages: {}",
        listing.pages
    );
    Ok(())
}

#[tokio::test]
async fn tags_lists_all_250_tags() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    let image = registry
        .push_image("big", "t000", &ImageSpec::linux_amd64())
        .await?;
    futures::stream::iter(1..250)
        .map(|i| {
            let (registry, raw) = (&registry, image.raw.as_bytes());
            async move {
                registry
                    .push_manifest("big", &format!("t{i:03}"), OCI_MANIFEST, raw)
                    .await
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    let proxy = FaultProxy::start(Some(upstream(&registry)), |_, _| Action::Forward).await;
    let client = client_via(&proxy, Credentials::Anonymous);
    let listing = client.tags(&repo("big")).await?;
    assert!(listing.complete);
    assert_eq!(listing.items.len(), 250);
    assert!(listing.items.contains(&tag("t249")));
    assert_eq!(
        proxy.seen()[0].target,
        "/v2/big/tags/list?n=100",
        "page size is sent"
    );
    Ok(())
}

/// distribution 2.8 does not paginate `tags/list`; the proxy does, the way registries that
/// do it differ: an opaque `last` cursor, an absolute link, then a relative one.
#[tokio::test]
async fn tags_follow_opaque_cursors_absolute_and_relative_links() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    let image = registry
        .push_image("paged", "t000", &ImageSpec::linux_amd64())
        .await?;
    futures::stream::iter(1..250)
        .map(|i| {
            let (registry, raw) = (&registry, image.raw.as_bytes());
            async move {
                registry
                    .push_manifest("paged", &format!("t{i:03}"), OCI_MANIFEST, raw)
                    .await
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    let proxy = FaultProxy::start(Some(upstream(&registry)), |req: &Request, _| {
        if !req.path().ends_with("/tags/list") {
            return Action::Forward;
        }
        let page: usize = match req.target.split("last=").nth(1) {
            None => 0,
            Some("pg%2F1%3D") => 1,
            Some("pg%2F2%3D") => 2,
            Some(_) => 99,
        };
        let host = req.header("host").unwrap_or_default().to_owned();
        let all = Request {
            target: req.path().to_owned(),
            ..req.clone()
        };
        Action::ForwardAs(
            all,
            Box::new(move |mut resp| {
                let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
                let mut tags: Vec<String> = serde_json::from_value(v["tags"].clone()).unwrap();
                tags.sort();
                let slice: Vec<String> = tags.into_iter().skip(page * 100).take(100).collect();
                resp.body =
                    serde_json::to_vec(&serde_json::json!({"name": "paged", "tags": slice}))
                        .unwrap();
                match page {
                    0 => resp.set_header(
                        "Link",
                        &format!(
                            "<http://{host}/v2/paged/tags/list?n=100&last=pg%2F1%3D>; rel=\"next\""
                        ),
                    ),
                    1 => resp.set_header(
                        "Link",
                        "</v2/paged/tags/list?n=100&last=pg%2F2%3D>; rel=\"next\"",
                    ),
                    _ => {}
                }
                resp
            }),
        )
    })
    .await;
    let client = client_via(&proxy, Credentials::Anonymous);
    let listing = client.tags(&repo("paged")).await?;
    assert!(listing.complete, "{:?}", listing.error);
    assert_eq!(listing.pages, 3);
    assert_eq!(listing.items.len(), 250);
    let targets: Vec<String> = proxy.seen().into_iter().map(|r| r.target).collect();
    assert_eq!(
        targets,
        [
            "/v2/paged/tags/list?n=100",
            "/v2/paged/tags/list?n=100&last=pg%2F1%3D",
            "/v2/paged/tags/list?n=100&last=pg%2F2%3D"
        ],
        "the cursor is sent back exactly as the Link gave it"
    );
    Ok(())
}

#[tokio::test]
async fn head_and_get_a_single_arch_manifest_and_its_config() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    let spec = ImageSpec::linux_amd64()
        .label("org.opencontainers.image.title", "postgres")
        .label(
            "io.imagelib.postgres.extensions",
            r#"[{"name":"vector","version":"0.7"}]"#,
        )
        .annotation(
            "org.opencontainers.image.description",
            "Postgres with pgvector",
        )
        .created("2024-06-02T03:04:05Z")
        .layer(b"layer one")
        .layer(b"layer two");
    let pushed = registry.push_image("db/postgres", "16", &spec).await?;
    let client = client(&registry, Credentials::Anonymous);
    let name = repo("db/postgres");

    let head = client
        .head_manifest(&name, &Reference::Tag(tag("16")))
        .await?;
    assert_eq!(head.digest, digest(&pushed.digest));
    assert_eq!(head.media_type.as_deref(), Some(OCI_MANIFEST));
    assert_eq!(head.size, Some(pushed.raw.len() as u64));
    assert_eq!(client.requests(), 1, "a HEAD is enough");

    let fetched = client
        .get_manifest(&name, &Reference::Digest(head.digest.clone()))
        .await?;
    assert_eq!(fetched.digest, head.digest);
    assert_eq!(fetched.raw.as_ref(), pushed.raw.as_bytes());
    let Manifest::Image(manifest) = &fetched.manifest else {
        panic!("expected an image manifest");
    };
    assert_eq!(manifest.layers.len(), 2);
    assert_eq!(manifest.config.digest, digest(&pushed.config_digest));
    assert_eq!(
        manifest.annotations["org.opencontainers.image.description"],
        "Postgres with pgvector"
    );
    assert_eq!(manifest.content_size(), pushed.size);

    let config = client.get_config(&name, &manifest.config.digest).await?;
    assert_eq!(config.os.as_deref(), Some("linux"));
    assert_eq!(config.architecture.as_deref(), Some("amd64"));
    assert_eq!(config.labels["org.opencontainers.image.title"], "postgres");
    assert_eq!(
        config.created.unwrap().to_rfc3339(),
        "2024-06-02T03:04:05+00:00"
    );

    let raw: serde_json::Value = client.get_blob_json(&name, &manifest.config.digest).await?;
    assert_eq!(
        raw["config"]["Labels"]["io.imagelib.postgres.extensions"],
        r#"[{"name":"vector","version":"0.7"}]"#
    );

    let err = client
        .head_manifest(&name, &Reference::Tag(tag("17")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    Ok(())
}

#[tokio::test]
async fn docker_schema2_images_and_manifest_lists_are_read() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    let amd = ImageSpec::linux_amd64().docker().label("vendor", "acme");
    let arm = ImageSpec::new("linux", "arm").variant("v7").docker();
    let single = registry.push_image("legacy", "one", &amd).await?;
    let list = registry
        .push_index("legacy", "multi", &[amd.clone(), arm], &[])
        .await?;
    let client = client(&registry, Credentials::Anonymous);

    let one = client
        .inspect(
            &repo("legacy"),
            &tag("one"),
            &NoCache,
            &InspectOptions {
                referrers: false,
                known_tags: None,
            },
        )
        .await?;
    assert_eq!(one.media_type, DOCKER_MANIFEST);
    assert_eq!(one.digest, digest(&single.digest));
    assert_eq!(one.labels["vendor"], "acme");

    let multi = client
        .inspect(
            &repo("legacy"),
            &tag("multi"),
            &NoCache,
            &InspectOptions {
                referrers: false,
                known_tags: None,
            },
        )
        .await?;
    assert_eq!(
        multi.media_type,
        imagelib_testkit::registry::DOCKER_MANIFEST_LIST
    );
    assert_eq!(multi.digest, digest(&list.digest));
    let archs: Vec<_> = multi
        .platforms
        .iter()
        .map(|p| (p.architecture.as_str(), p.variant.as_deref()))
        .collect();
    assert_eq!(archs, [("amd64", None), ("arm", Some("v7"))]);
    assert_eq!(
        multi.labels["vendor"], "acme",
        "labels of the linux/amd64 image"
    );
    Ok(())
}

#[tokio::test]
async fn an_index_is_inspected_platform_by_platform() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    let amd = ImageSpec::linux_amd64()
        .label("com.nvidia.nim.model", "llama-3.1-8b")
        .created("2024-07-01T00:00:00Z")
        .layer(&vec![1u8; 3000]);
    let arm = ImageSpec::new("linux", "arm64")
        .variant("v8")
        .layer(&vec![2u8; 5000]);
    let index = registry
        .push_index(
            "nim/llama",
            "1.0",
            &[arm.clone(), amd.clone()],
            &[("org.opencontainers.image.version", "1.0")],
        )
        .await?;
    let client = client(&registry, Credentials::Anonymous);
    let got = client
        .inspect(
            &repo("nim/llama"),
            &tag("1.0"),
            &NoCache,
            &InspectOptions::default(),
        )
        .await?;
    assert_eq!(got.digest, digest(&index.digest));
    assert_eq!(got.media_type, OCI_INDEX);
    assert_eq!(got.platforms.len(), 2);
    assert_eq!(got.platforms[0].architecture, "arm64");
    assert_eq!(got.platforms[0].variant.as_deref(), Some("v8"));
    assert_eq!(
        got.platforms[0].digest,
        Some(digest(&index.manifests[0].digest))
    );
    assert_eq!(
        got.platforms[0].size,
        Some(index.manifests[0].raw.len() as u64)
    );
    assert_eq!(got.platforms[1].architecture, "amd64");
    assert_eq!(got.size, index.size());
    assert!(got.size > 8000);
    assert_eq!(
        got.labels["com.nvidia.nim.model"], "llama-3.1-8b",
        "from the amd64 config"
    );
    assert_eq!(
        got.created.unwrap().to_rfc3339(),
        "2024-07-01T00:00:00+00:00"
    );
    assert_eq!(got.annotations["org.opencontainers.image.version"], "1.0");
    assert!(got.referrers.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_modelpack_artifact_reports_its_artifact_type() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    let pushed = registry
        .push_artifact(
            "models/embed",
            Some("v1"),
            &ArtifactSpec::modelpack("bge-small"),
        )
        .await?;
    let client = client(&registry, Credentials::Anonymous);
    let got = client
        .inspect(
            &repo("models/embed"),
            &tag("v1"),
            &NoCache,
            &InspectOptions::default(),
        )
        .await?;
    assert_eq!(got.digest, digest(&pushed.digest));
    assert_eq!(got.media_type, OCI_MANIFEST);
    assert_eq!(got.artifact_type.as_deref(), Some(MODELPACK_ARTIFACT));
    assert_eq!(got.config_media_type.as_deref(), Some(MODELPACK_CONFIG));
    assert!(got.platforms.is_empty(), "a model has no OS/architecture");
    assert_eq!(got.size, pushed.size);
    assert_eq!(
        got.annotations["org.opencontainers.image.title"],
        "bge-small"
    );
    Ok(())
}

#[tokio::test]
async fn referrers_fall_back_to_the_tag_schema_and_cosign_tags() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    let image = registry
        .push_image("signed", "v1", &ImageSpec::linux_amd64())
        .await?;
    let sbom = registry
        .push_artifact(
            "signed",
            None,
            &ArtifactSpec::referrer(
                "application/spdx+json",
                &image,
                b"{\"spdxVersion\":\"SPDX-2.3\"}",
            ),
        )
        .await?;
    registry
        .push_referrers_tag("signed", &image.digest, &[&sbom])
        .await?;
    let signature = registry
        .push_cosign_signature("signed", &image.digest)
        .await?;
    let subject = digest(&image.digest);

    let client = client(&registry, Credentials::Anonymous);
    let mut found = client.referrers(&repo("signed"), &subject, None).await?;
    found.sort_by_key(|r| r.kind as u8);
    assert_eq!(found.len(), 2, "{found:?}");
    let by_kind = |k| found.iter().find(|r| r.kind == k).cloned();
    let s = by_kind(ReferrerKind::Sbom).expect("the SBOM");
    assert_eq!(s.digest, digest(&sbom.digest));
    assert_eq!(s.artifact_type.as_deref(), Some("application/spdx+json"));
    assert_eq!(
        by_kind(ReferrerKind::Signature)
            .expect("the signature")
            .digest,
        digest(&signature.digest)
    );
    // referrers API (404) + tag schema GET + .sig/.att/.sbom HEADs
    assert_eq!(client.requests(), 5);

    let tags = client.tags(&repo("signed")).await?.items;
    let before = client.requests();
    let again = client
        .referrers(&repo("signed"), &subject, Some(&tags))
        .await?;
    assert_eq!(again.len(), 2);
    assert_eq!(
        client.requests() - before,
        2,
        "API known missing; only existing fallback tags"
    );
    Ok(())
}

#[tokio::test]
async fn a_known_digest_is_never_fetched_again() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    let index = registry
        .push_index(
            "cached",
            "a",
            &[ImageSpec::linux_amd64(), ImageSpec::new("linux", "arm64")],
            &[],
        )
        .await?;
    registry.tag("cached", "a", "b").await?;
    let client = client(&registry, Credentials::Anonymous);
    let cache = MemoryCache::default();
    let options = InspectOptions {
        referrers: false,
        known_tags: None,
    };

    let first = client
        .inspect(&repo("cached"), &tag("a"), &cache, &options)
        .await?;
    // HEAD, index, two platform manifests, one config
    assert_eq!(client.requests(), 5);
    assert_eq!(cache.len(), 4);
    let second = client
        .inspect(&repo("cached"), &tag("b"), &cache, &options)
        .await?;
    assert_eq!(client.requests(), 6, "only the HEAD of the new tag");
    assert_eq!(first, second);
    assert_eq!(second.digest, digest(&index.digest));
    Ok(())
}

#[tokio::test]
async fn a_deleted_tag_is_not_found() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    registry
        .push_image("gone", "v1", &ImageSpec::linux_amd64())
        .await?;
    let client = client(&registry, Credentials::Anonymous);
    client
        .head_manifest(&repo("gone"), &Reference::Tag(tag("v1")))
        .await?;
    registry.delete_tag("gone", "v1").await?;
    let err = client
        .head_manifest(&repo("gone"), &Reference::Tag(tag("v1")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let listing = client.tags(&repo("gone")).await?;
    assert!(listing.items.is_empty());
    Ok(())
}

#[tokio::test]
async fn the_request_budget_is_enforced() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    registry
        .push_image("b", "v1", &ImageSpec::linux_amd64())
        .await?;
    let mut cfg = config(&registry.host(), true);
    cfg.request_budget = Some(2);
    let client = registry_client::RegistryClient::new(cfg, Credentials::Anonymous)?;
    client.ping().await?;
    client.tags(&repo("b")).await?;
    let err = client.tags(&repo("b")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BudgetExhausted);
    assert_eq!(client.requests(), 2);
    Ok(())
}

/// The harness's `notifications` endpoint works (sync-scanner's webhook tests rely on it).
#[tokio::test]
async fn the_test_registry_sends_push_notifications() -> anyhow::Result<()> {
    let sink = FaultProxy::respond_always(crate::proxy::Response::new(200, &[], "")).await;
    let registry = TestRegistry::builder()
        .notify(
            &format!("http://{}/v1/webhooks/r1", sink.host()),
            &[("Authorization", "Bearer hook-secret")],
        )
        .start()
        .await?;
    let pushed = registry
        .push_image("hooked", "v1", &ImageSpec::linux_amd64())
        .await?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let seen = sink.seen();
        let push = seen.iter().find(|r| {
            let Ok(envelope) = serde_json::from_slice::<serde_json::Value>(&r.body) else {
                return false;
            };
            envelope["events"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| {
                    e["action"] == "push"
                        && e["target"]["digest"] == pushed.digest.as_str()
                        && e["target"]["tag"] == "v1"
                })
        });
        if let Some(push) = push {
            assert_eq!(push.method, "POST");
            assert_eq!(push.path(), "/v1/webhooks/r1");
            assert_eq!(push.header("authorization"), Some("Bearer hook-secret"));
            return Ok(());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no push notification: {seen:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
