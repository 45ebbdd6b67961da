//! Referrers discovery against a real `docker-registry` holding artefacts pushed as the
//! tools push them (the test kit's publisher): the tag schema and cosign tags on the plain
//! registry, the OCI 1.1 API through the test kit's referrers proxy; and against hostile
//! answers, which are bounded and never panic.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use imagelib_events::model::ReferrerKind;
use imagelib_testkit::proxy::{Action, FaultProxy, Response};
use imagelib_testkit::publish::{self, CosignSignature, Layout, Publisher, media, predicate};
use imagelib_testkit::referrers::ReferrersProxy;
use imagelib_testkit::registry::{ImageSpec, OCI_INDEX, PushedManifest, TestRegistry};
use imagelib_testkit::signing::TestKey;
use registry_client::{
    Cap, Credentials, ErrorKind, FoundBy, InspectOptions, NoCache, Reference, ReferrersOptions,
    RegistryClient,
};

use crate::common::{client, config, digest, repo, tag, upstream};

const REPO: &str = "team/app";

struct Setup {
    registry: TestRegistry,
    proxy: ReferrersProxy,
    image: PushedManifest,
}

impl Setup {
    async fn start(page_size: usize) -> anyhow::Result<Self> {
        let registry = TestRegistry::start().await?;
        let proxy = ReferrersProxy::start(upstream(&registry), page_size).await;
        let image = registry
            .push_image(REPO, "1.0", &ImageSpec::linux_amd64())
            .await?;
        Ok(Setup {
            registry,
            proxy,
            image,
        })
    }

    fn publisher(&self, layout: Layout) -> Publisher<'_> {
        Publisher::new(&self.registry, &self.proxy, REPO, layout)
    }

    /// The client a scanner would have: the registry itself, or the proxy that gives it the
    /// referrers API.
    fn client(&self, layout: Layout) -> RegistryClient {
        match layout {
            Layout::TagSchema => client(&self.registry, Credentials::Anonymous),
            Layout::Referrers => {
                RegistryClient::new(config(&self.proxy.host(), true), Credentials::Anonymous)
                    .expect("client")
            }
        }
    }
}

/// What was published, and how the client must describe it.
struct Expected {
    what: &'static str,
    digest: String,
    kind: ReferrerKind,
}

async fn publish_every_kind(setup: &Setup, layout: Layout) -> anyhow::Result<Vec<Expected>> {
    let p = setup.publisher(layout);
    let image = &setup.image;
    let (a, b) = (TestKey::generate(), TestKey::generate());
    let mut out = Vec::new();
    let mut add = |what, m: &PushedManifest, kind| {
        out.push(Expected {
            what,
            digest: m.digest.clone(),
            kind,
        })
    };

    let sig = p.cosign_sign(image, &[&a, &b]).await?;
    add("cosign signatures", &sig, ReferrerKind::Signature);

    let report = publish::trivy_report(
        &format!("{}:1.0", p.docker_reference()),
        &image.digest,
        &[
            ("CVE-2024-0001", "HIGH", Some("1.2.3")),
            ("CVE-2024-0002", "LOW", None),
        ],
    );
    let vuln = publish::cosign_vuln_predicate(report.clone(), "0.57.0", "2026-01-15T10:00:00Z");
    let att = p
        .cosign_attest(image, &a, predicate::COSIGN_VULN, vuln)
        .await?;
    let in_toto = publish::in_toto_vulns_predicate(
        "pkg:github/anchore/grype@v0.80.0",
        &[("CVE-2024-0003", "critical", None)],
        "2026-01-15T11:00:00Z",
    );
    let att2 = p
        .cosign_attest(image, &a, predicate::IN_TOTO_VULNS, in_toto)
        .await?;
    match layout {
        // cosign appends: one `.att` manifest holds both attestations.
        Layout::TagSchema => add("cosign attestations", &att2, ReferrerKind::Attestation),
        Layout::Referrers => {
            add("cosign vuln attestation", &att, ReferrerKind::Attestation);
            add(
                "in-toto vulns attestation",
                &att2,
                ReferrerKind::Attestation,
            );
        }
    }

    let spdx = publish::spdx_sbom("team/app:1.0", &[("musl", "1.2.5-r0")]);
    let cdx = publish::cyclonedx_sbom("team/app:1.0", &[("busybox", "1.36.1-r29")]);
    let s = p.sbom(image, media::SPDX_JSON, &spdx).await?;
    add("SPDX artifact", &s, ReferrerKind::Sbom);
    let c = p.sbom(image, media::CYCLONEDX_JSON, &cdx).await?;
    add("CycloneDX artifact", &c, ReferrerKind::Sbom);
    let t = p.trivy_report(image, &report).await?;
    add("Trivy report artifact", &t, ReferrerKind::Other);
    if layout == Layout::TagSchema {
        let s = p
            .cosign_attach_sbom(image, media::COSIGN_SBOM_SPDX_JSON, &spdx)
            .await?;
        add("cosign .sbom", &s, ReferrerKind::Sbom);
    }
    Ok(out)
}

async fn finds_every_kind(layout: Layout) -> anyhow::Result<()> {
    let setup = Setup::start(2).await?;
    let expected = publish_every_kind(&setup, layout).await?;
    let client = setup.client(layout);
    let tags = client.tags(&repo(REPO)).await?.items;
    let subject = digest(&setup.image.digest);
    let found = client
        .list_referrers(
            &repo(REPO),
            &subject,
            &ReferrersOptions {
                known_tags: Some(&tags),
                ..ReferrersOptions::default()
            },
        )
        .await?;
    assert!(found.complete, "{:?}", found.error);
    assert_eq!(found.via_api, layout == Layout::Referrers);
    assert_eq!(found.skipped, 0);
    assert_eq!(
        found.items.len(),
        expected.len(),
        "{:#?}",
        found.items.iter().map(|r| &r.digest).collect::<Vec<_>>()
    );
    for e in &expected {
        let r = found
            .items
            .iter()
            .find(|r| r.digest.as_str() == e.digest)
            .unwrap_or_else(|| panic!("{} ({}) not found", e.what, e.digest));
        assert_eq!(r.kind, e.kind, "{}", e.what);
        let cosign_tag = r.tag.is_some();
        match layout {
            Layout::Referrers => assert_eq!(r.found_by, FoundBy::Api, "{}", e.what),
            Layout::TagSchema if cosign_tag => {
                assert_eq!(r.found_by, FoundBy::CosignTag, "{}", e.what)
            }
            Layout::TagSchema => assert_eq!(r.found_by, FoundBy::TagSchema, "{}", e.what),
        }
        // Every referrer can be read back: its manifest, and its layers within a bound.
        let m = client
            .get_manifest(&repo(REPO), &Reference::Digest(r.digest.clone()))
            .await?;
        let registry_client::Manifest::Image(m) = m.manifest else {
            panic!("{} is not an image manifest", e.what);
        };
        assert_eq!(
            m.subject.as_ref().map(|s| s.digest.as_str()),
            (!cosign_tag).then_some(setup.image.digest.as_str()),
            "{}: only OCI 1.1 referrers name their subject",
            e.what
        );
        for layer in &m.layers {
            let bytes = client
                .get_blob_bounded(&repo(REPO), &layer.digest, 1 << 20)
                .await?;
            assert_eq!(bytes.len() as u64, layer.size);
        }
    }
    // The cosign signature manifest holds one simple-signing layer per key.
    let sig = &expected[0];
    let m = client
        .get_manifest(&repo(REPO), &Reference::Digest(digest(&sig.digest)))
        .await?;
    let registry_client::Manifest::Image(m) = m.manifest else {
        panic!("signature manifest");
    };
    assert_eq!(m.layers.len(), 2);
    for l in &m.layers {
        assert_eq!(l.media_type, media::COSIGN_SIMPLE_SIGNING);
        assert!(l.annotations.contains_key(publish::annotation::SIGNATURE));
    }
    Ok(())
}

#[tokio::test]
async fn finds_every_kind_through_the_tag_schema_and_cosign_tags() -> anyhow::Result<()> {
    finds_every_kind(Layout::TagSchema).await
}

#[tokio::test]
async fn finds_every_kind_through_the_referrers_api() -> anyhow::Result<()> {
    finds_every_kind(Layout::Referrers).await
}

/// Five referrers, pages of one and of two: every one found, in as many pages as the
/// registry made, each a request.
#[tokio::test]
async fn pages_through_the_referrers_api() -> anyhow::Result<()> {
    for (page_size, pages) in [(1usize, 5u32), (2, 3)] {
        let setup = Setup::start(page_size).await?;
        let p = setup.publisher(Layout::Referrers);
        let mut pushed = Vec::new();
        for i in 0..5 {
            let key = TestKey::generate();
            let sig = CosignSignature::with_key(&key, &p.docker_reference(), &setup.image.digest);
            pushed.push(p.cosign_signatures(&setup.image, &[sig]).await?.digest);
            assert_eq!(pushed.len(), i + 1);
        }
        let client = setup.client(Layout::Referrers);
        let found = client
            .list_referrers(
                &repo(REPO),
                &digest(&setup.image.digest),
                &ReferrersOptions {
                    known_tags: Some(&[]),
                    ..ReferrersOptions::default()
                },
            )
            .await?;
        assert!(found.complete, "{:?}", found.error);
        assert_eq!(found.pages, pages, "page size {page_size}");
        let got: Vec<&str> = found.items.iter().map(|r| r.digest.as_str()).collect();
        assert_eq!(got, pushed, "all five, in push order");
        assert_eq!(client.requests(), u64::from(pages));
        let api_requests = setup
            .proxy
            .seen()
            .iter()
            .filter(|r| r.path().contains("/referrers/"))
            .count();
        assert_eq!(api_requests, pages as usize);
    }
    Ok(())
}

/// `?artifactType=` is sent; a registry that applies it says so, one that does not is
/// filtered by the client — same answer either way.
#[tokio::test]
async fn the_artifact_type_filter_applies_on_either_side() -> anyhow::Result<()> {
    for registry_filters in [true, false] {
        let registry = TestRegistry::start().await?;
        let proxy = if registry_filters {
            ReferrersProxy::start(upstream(&registry), 2).await
        } else {
            ReferrersProxy::start_unfiltered(upstream(&registry), 2).await
        };
        let image = registry
            .push_image(REPO, "1.0", &ImageSpec::linux_amd64())
            .await?;
        let p = Publisher::referrers(&registry, &proxy, REPO);
        let key = TestKey::generate();
        p.cosign_sign(&image, &[&key]).await?;
        let spdx = p
            .sbom(&image, media::SPDX_JSON, &publish::spdx_sbom("a", &[]))
            .await?;
        p.sbom(
            &image,
            media::CYCLONEDX_JSON,
            &publish::cyclonedx_sbom("a", &[]),
        )
        .await?;
        let spdx2 = p
            .sbom(&image, media::SPDX_JSON, &publish::spdx_sbom("b", &[]))
            .await?;

        let client = RegistryClient::new(config(&proxy.host(), true), Credentials::Anonymous)?;
        let found = client
            .list_referrers(
                &repo(REPO),
                &digest(&image.digest),
                &ReferrersOptions {
                    artifact_type: Some(media::SPDX_JSON),
                    ..ReferrersOptions::default()
                },
            )
            .await?;
        assert!(found.complete, "{:?}", found.error);
        assert_eq!(found.filtered_by_registry, registry_filters);
        let got: Vec<&str> = found.items.iter().map(|r| r.digest.as_str()).collect();
        assert_eq!(got, [spdx.digest.as_str(), spdx2.digest.as_str()]);
        assert!(found.items.iter().all(|r| r.kind == ReferrerKind::Sbom));
        let first = proxy
            .seen()
            .into_iter()
            .find(|r| r.path().contains("/referrers/"))
            .expect("a referrers request");
        assert!(
            first
                .target
                .ends_with("?artifactType=application%2Fspdx%2Bjson"),
            "{}",
            first.target
        );
        // Unfiltered, the four referrers come in two pages; filtered, one.
        assert_eq!(found.pages, if registry_filters { 1 } else { 2 });
    }
    Ok(())
}

fn referrers_page(digests: &[String]) -> String {
    let manifests: Vec<serde_json::Value> = digests
        .iter()
        .map(|d| {
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": d,
                "size": 100,
                "artifactType": media::SPDX_JSON,
            })
        })
        .collect();
    serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})
        .to_string()
}

fn fake_digest(n: usize) -> String {
    format!("sha256:{n:064x}")
}

fn no_tags() -> ReferrersOptions<'static> {
    ReferrersOptions {
        known_tags: Some(&[]),
        ..ReferrersOptions::default()
    }
}

/// An absolute `Link` on the registry is followed; one to another host is not: what the registry's own pages said is kept,
/// the list says it is incomplete, and the other host never hears from the client.
#[tokio::test]
async fn a_link_to_another_host_is_refused() -> anyhow::Result<()> {
    let elsewhere = FaultProxy::start(None, |_, _| {
        Action::Respond(Response::new(
            200,
            &[("Content-Type", OCI_INDEX)],
            referrers_page(&[fake_digest(99)]),
        ))
    })
    .await;
    let other = elsewhere.host().replace("127.0.0.1", "localhost");
    let own: Arc<std::sync::Mutex<String>> = Arc::default();
    let own_host = own.clone();
    let registry = FaultProxy::start(None, move |req, _| {
        if !req.path().contains("/referrers/") {
            return Action::Respond(Response::new(404, &[], ""));
        }
        // Page 1 links to page 2 by an absolute URL on the registry itself (followed);
        // page 2 links to another host (refused).
        let (digest, next) = if req.target.contains("page=2") {
            (2, format!("http://{other}{}?page=3", req.path()))
        } else {
            let own = own_host.lock().unwrap().clone();
            (1, format!("http://{own}{}?page=2", req.path()))
        };
        let mut r = Response::new(
            200,
            &[("Content-Type", OCI_INDEX)],
            referrers_page(&[fake_digest(digest)]),
        );
        r.set_header("Link", &format!("<{next}>; rel=\"next\""));
        Action::Respond(r)
    })
    .await;
    *own.lock().unwrap() = registry.host();
    let client = RegistryClient::new(config(&registry.host(), true), Credentials::Anonymous)?;
    let found = client
        .list_referrers(&repo("a"), &digest(&fake_digest(7)), &no_tags())
        .await?;
    let got: Vec<&str> = found.items.iter().map(|r| r.digest.as_str()).collect();
    assert_eq!(got, [fake_digest(1), fake_digest(2)]);
    assert_eq!(found.pages, 2);
    assert!(!found.complete);
    let error = found.error.expect("why the list is cut");
    assert_eq!(error.kind(), ErrorKind::Protocol);
    assert!(error.to_string().contains("not on the registry"), "{error}");
    assert!(elsewhere.seen().is_empty(), "the other host got a request");
    Ok(())
}

/// Garbage, endless pages, a loop, too many referrers, an oversized page: each ends
/// bounded, with what was read and why it stopped — never a panic.
#[tokio::test]
async fn a_hostile_referrers_answer_is_bounded() -> anyhow::Result<()> {
    let mode = Arc::new(AtomicUsize::new(0));
    let m = mode.clone();
    let registry = FaultProxy::start(None, move |req, _| {
        if !req.path().contains("/referrers/") {
            return Action::Respond(Response::new(404, &[], ""));
        }
        let page: usize = req
            .target
            .split_once("page=")
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or(0);
        let index = |body: String| Response::new(200, &[("Content-Type", OCI_INDEX)], body);
        match m.load(Ordering::SeqCst) {
            // Not JSON at all.
            0 => Action::Respond(index("\u{0}<html>garbage".into())),
            // Endless distinct pages, one referrer each.
            1 => {
                let mut r = index(referrers_page(&[fake_digest(page + 1)]));
                r.set_header(
                    "Link",
                    &format!("<{}?page={}>; rel=\"next\"", req.path(), page + 1),
                );
                Action::Respond(r)
            }
            // A page that links to itself.
            2 => {
                let mut r = index(referrers_page(&[fake_digest(1)]));
                r.set_header("Link", &format!("<{}>; rel=\"next\"", req.target));
                Action::Respond(r)
            }
            // Far more referrers than the cap.
            3 => Action::Respond(index(referrers_page(
                &(0..1000).map(fake_digest).collect::<Vec<_>>(),
            ))),
            // A page larger than a manifest may be.
            4 => Action::Respond(index(format!(
                r#"{{"manifests":[],"padding":"{}"}}"#,
                "x".repeat(512 * 1024)
            ))),
            // Well-formed JSON, wrong shapes inside.
            _ => Action::Respond(index(
                r#"{"manifests":[1,"x",null,{"digest":"sha256:nothex"},{"mediaType":"a","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000001","size":-1}]}"#.into(),
            )),
        }
    })
    .await;
    let mut c = config(&registry.host(), true);
    c.max_pages = 7;
    c.max_index_children = 10;
    c.max_manifest_bytes = 256 * 1024;
    let client = RegistryClient::new(c, Credentials::Anonymous)?;
    let list = |n: usize| {
        mode.store(n, Ordering::SeqCst);
        let client = client.clone();
        async move {
            client
                .list_referrers(&repo("a"), &digest(&fake_digest(7)), &no_tags())
                .await
        }
    };

    let garbage = list(0).await.expect("garbage: a partial list");
    assert!(!garbage.complete && garbage.items.is_empty());
    assert_eq!(garbage.error.unwrap().kind(), ErrorKind::Protocol);

    let endless = list(1).await.expect("endless: a partial list");
    assert_eq!(endless.pages, 7);
    assert_eq!(endless.items.len(), 7);
    assert_eq!(endless.error.unwrap().cap(), Some(Cap::ListingPages));

    let looped = list(2).await.expect("looped: a partial list");
    assert_eq!(looped.pages, 1);
    assert_eq!(looped.items.len(), 1);
    assert!(looped.error.unwrap().to_string().contains("loop"));

    let many = list(3).await.expect("many: a partial list");
    assert_eq!(many.items.len(), 10);
    assert_eq!(many.error.unwrap().cap(), Some(Cap::IndexChildren));

    let huge = list(4)
        .await
        .expect_err("nothing readable on the first page");
    assert_eq!(huge.cap(), Some(Cap::ManifestBytes));

    let shapes = list(5).await.expect("shapes: a partial list");
    assert!(shapes.complete && shapes.items.is_empty());
    assert_eq!(shapes.skipped, 5);
    Ok(())
}

/// A registry without the API answers 404 once; from then on neither the API nor
/// fallback tags that the tag list does not have cost a request, for any digest.
#[tokio::test]
async fn the_api_missing_memo_costs_one_request() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    let index = registry
        .push_index(
            REPO,
            "multi",
            &[ImageSpec::linux_amd64(), ImageSpec::new("linux", "arm64")],
            &[],
        )
        .await?;
    let signed = &index.manifests[0];
    let key = TestKey::generate();
    let sig = Publisher::tag_schema(&registry, REPO)
        .cosign_sign(signed, &[&key])
        .await?;
    let client = client(&registry, Credentials::Anonymous);
    let tags = client.tags(&repo(REPO)).await?.items;
    let inspection = client
        .inspect(
            &repo(REPO),
            &tag("multi"),
            &NoCache,
            &InspectOptions {
                referrers: false,
                known_tags: None,
            },
        )
        .await?;
    let subjects = inspection.subjects();
    let expected_subjects: Vec<_> = std::iter::once(&index.digest)
        .chain(index.manifests.iter().map(|m| &m.digest))
        .map(|d| digest(d))
        .collect();
    assert_eq!(subjects, expected_subjects, "the index, then each platform");
    let before = client.requests();
    let options = ReferrersOptions {
        known_tags: Some(&tags),
        ..ReferrersOptions::default()
    };
    let results = client
        .list_referrers_many(&repo(REPO), &subjects, &options)
        .await;
    assert_eq!(client.referrers_api(), Some(false));
    // One API request (404), one HEAD of the only existing `.sig` tag.
    assert_eq!(client.requests() - before, 2);
    assert_eq!(results.len(), 3);
    for (subject, result) in &results {
        let found = result.as_ref().expect("listed");
        let expected: Vec<&str> = if subject.as_str() == signed.digest {
            vec![sig.digest.as_str()]
        } else {
            vec![]
        };
        let got: Vec<&str> = found.items.iter().map(|r| r.digest.as_str()).collect();
        assert_eq!(got, expected, "{subject}");
    }
    let before = client.requests();
    client
        .list_referrers_many(&repo(REPO), &subjects, &options)
        .await;
    assert_eq!(client.requests() - before, 1, "only the .sig HEAD");

    // A new client told what the last one learnt does not ask the API at all.
    let seeded = crate::common::client(&registry, Credentials::Anonymous);
    seeded.assume_referrers_api(false);
    seeded
        .list_referrers_many(&repo(REPO), &subjects, &options)
        .await;
    assert_eq!(seeded.requests(), 1, "only the .sig HEAD");
    seeded.assume_referrers_api(true);
    assert_eq!(
        seeded.referrers_api(),
        Some(false),
        "what a client knows wins"
    );
    Ok(())
}

/// A referrer layer is read within the caller's bound, and verified against its digest.
#[tokio::test]
async fn a_blob_is_read_within_the_callers_bound() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    let content = vec![b'r'; 4096];
    let blob = registry.push_blob(REPO, &content).await?;
    let client = client(&registry, Credentials::Anonymous);
    let got = client
        .get_blob_bounded(&repo(REPO), &digest(&blob), 4096)
        .await?;
    assert_eq!(got.as_ref(), content.as_slice());
    let err = client
        .get_blob_bounded(&repo(REPO), &digest(&blob), 4095)
        .await
        .expect_err("over the bound");
    assert_eq!(err.kind(), ErrorKind::TooLarge, "{err}");
    Ok(())
}
