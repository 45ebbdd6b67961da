//! What the test kit publishes is what imagelib reads: each artefact, pushed as the tools
//! push it, is discovered by the client through either path, fetched within the trust
//! crate's bounds, read into evidence, and every signature checks out as it must.

use std::collections::BTreeMap;

use chrono::{Duration, Utc};
use imagelib_events::Digest;
use imagelib_testkit::publish::{self, CosignSignature, Layout, Publisher, media, predicate};
use imagelib_testkit::referrers::ReferrersProxy;
use imagelib_testkit::registry::{ImageSpec, PushedManifest, TestRegistry};
use imagelib_testkit::signing::{
    self, NOTATION_LEAF_SUBJECT, San, TestFulcio, TestKey, TestNotation, TestRekor,
};
use imagelib_trust::cosign::PublicKey;
use imagelib_trust::evidence::{
    Evidence, Identity, Outcome, Scheme, SignatureCheck, Verifier, check_signature,
};
use imagelib_trust::notation::NotationTrustStore;
use imagelib_trust::referrer;
use imagelib_trust::sbom::SbomFormat;
use imagelib_trust::trust_root::TrustRoot;
use registry_client::{Credentials, Reference, ReferrersOptions, RegistryClient};

use crate::common::{client, config, digest, repo, upstream};

const REPO: &str = "acme/app";
const ISSUER: &str = "https://token.actions.githubusercontent.com";
const SAN: &str = "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main";

/// Every piece of evidence of `subject`: listed, planned, fetched within bounds, read.
async fn evidence_of(client: &RegistryClient, subject: &Digest) -> anyhow::Result<Vec<Evidence>> {
    let tags = client.tags(&repo(REPO)).await?.items;
    let found = client
        .list_referrers(
            &repo(REPO),
            subject,
            &ReferrersOptions {
                known_tags: Some(&tags),
                ..ReferrersOptions::default()
            },
        )
        .await?;
    assert!(found.complete, "{:?}", found.error);
    let mut evidence = Vec::new();
    for r in &found.items {
        let m = client
            .get_manifest(&repo(REPO), &Reference::Digest(r.digest.clone()))
            .await?;
        let plan = referrer::plan(&m.raw)?;
        assert!(plan.skipped.is_empty(), "{}: {:?}", r.digest, plan.skipped);
        let mut blobs = BTreeMap::new();
        for blob in &plan.fetch {
            let bytes = client
                .get_blob_bounded(&repo(REPO), &digest(&blob.digest), blob.limit)
                .await?;
            blobs.insert(blob.digest.clone(), bytes.to_vec());
        }
        let read = referrer::interpret(subject.as_str(), &m.raw, &blobs);
        assert!(read.skipped.is_empty(), "{}: {:?}", r.digest, read.skipped);
        assert!(!read.evidence.is_empty(), "{} says nothing", r.digest);
        evidence.extend(read.evidence);
    }
    Ok(evidence)
}

struct Signers {
    trusted: TestKey,
    stranger: TestKey,
    fulcio: TestFulcio,
    rekor: TestRekor,
    notation: TestNotation,
}

async fn publish_signed_and_scanned(
    p: &Publisher<'_>,
    image: &PushedManifest,
    s: &Signers,
) -> anyhow::Result<()> {
    let reference = p.docker_reference();
    let logged = Utc::now() - Duration::days(2);
    let leaf = s.fulcio.issue(
        San::Uri(SAN.into()),
        ISSUER,
        logged - Duration::minutes(1),
        logged + Duration::minutes(9),
    );
    // Expired before it was logged.
    let stale = s.fulcio.issue(
        San::Uri(SAN.into()),
        ISSUER,
        logged - Duration::minutes(30),
        logged - Duration::minutes(20),
    );
    p.cosign_signatures(
        image,
        &[
            CosignSignature::with_key(&s.trusted, &reference, &image.digest),
            CosignSignature::with_key(&s.stranger, &reference, &image.digest),
            CosignSignature::with_key(&s.trusted, &reference, &image.digest).tampered(),
        ],
    )
    .await?;
    p.cosign_sign_keyless(image, &leaf, &s.rekor, logged.timestamp())
        .await?;
    p.cosign_signatures(
        image,
        &[CosignSignature::keyless(
            &stale,
            Some(&s.rekor),
            logged.timestamp(),
            &reference,
            &image.digest,
        )],
    )
    .await?;
    p.notation_sign(image, &s.notation).await?;
    p.sigstore_sign(image, &leaf, &s.rekor, logged.timestamp())
        .await?;

    let report = publish::trivy_report(
        &format!("{reference}:1.0"),
        &image.digest,
        &[
            ("CVE-2024-0001", "CRITICAL", Some("1.2.3")),
            ("CVE-2024-0002", "HIGH", None),
        ],
    );
    p.cosign_attest(
        image,
        &s.trusted,
        predicate::COSIGN_VULN,
        publish::cosign_vuln_predicate(report.clone(), "0.57.0", "2026-01-15T10:00:00Z"),
    )
    .await?;
    p.cosign_attest(
        image,
        &s.trusted,
        predicate::IN_TOTO_VULNS,
        publish::in_toto_vulns_predicate(
            "pkg:github/anchore/grype@v0.80.0",
            &[("CVE-2024-0003", "medium", Some("2.0"))],
            "2026-01-15T11:00:00Z",
        ),
    )
    .await?;
    let spdx: serde_json::Value =
        serde_json::from_slice(&publish::spdx_sbom("acme/app:1.0", &[("zlib", "1.3.1-r1")]))?;
    p.cosign_attest(image, &s.trusted, predicate::SPDX, spdx)
        .await?;
    if p.layout() == Layout::TagSchema {
        p.cosign_attach_sbom(
            image,
            media::COSIGN_SBOM_SPDX_JSON,
            &publish::spdx_sbom("acme/app:1.0", &[("musl", "1.2.5-r0")]),
        )
        .await?;
    }
    p.trivy_report(image, &report).await?;
    p.sbom(
        image,
        media::SPDX_JSON,
        &publish::spdx_sbom("acme/app:1.0", &[("musl", "1.2.5-r0")]),
    )
    .await?;
    p.sbom(
        image,
        media::CYCLONEDX_JSON,
        &publish::cyclonedx_sbom("acme/app:1.0", &[("busybox", "1.36.1-r29")]),
    )
    .await?;
    Ok(())
}

async fn reads_back(layout: Layout) -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    let proxy = ReferrersProxy::start(upstream(&registry), 3).await;
    let image = registry
        .push_image(REPO, "1.0", &ImageSpec::linux_amd64())
        .await?;
    let signers = Signers {
        trusted: TestKey::generate(),
        stranger: TestKey::generate(),
        fulcio: TestFulcio::new(),
        rekor: TestRekor::new(),
        notation: TestNotation::new(),
    };
    let p = Publisher::new(&registry, &proxy, REPO, layout);
    publish_signed_and_scanned(&p, &image, &signers).await?;

    let client = match layout {
        Layout::TagSchema => client(&registry, Credentials::Anonymous),
        Layout::Referrers => {
            RegistryClient::new(config(&proxy.host(), true), Credentials::Anonymous)?
        }
    };
    let subject = digest(&image.digest);
    let evidence = evidence_of(&client, &subject).await?;

    let keys = [PublicKey::from_pem(&signers.trusted.public_pem())?];
    let root = TrustRoot::from_json(
        signing::trusted_root_json(&signers.fulcio, &signers.rekor).as_bytes(),
    )?;
    let store = NotationTrustStore::from_pem(&signers.notation.ca_pem())?;
    let identities = [
        Identity::Keyless {
            issuer: ISSUER.into(),
            subject: regex::Regex::new("^https://github.com/acme/")?,
        },
        Identity::X509 {
            subject: regex::Regex::new(&format!("^{}$", regex::escape(NOTATION_LEAF_SUBJECT)))?,
        },
    ];
    let verifier = Verifier::new(Utc::now())
        .keys(&keys)
        .identities(&identities)
        .trust_root(&root)
        .notation_roots(&store);
    let checks: Vec<SignatureCheck> = evidence
        .iter()
        .filter_map(|e| match e {
            Evidence::Signature(s) => Some(check_signature(s, subject.as_str(), &verifier)),
            _ => None,
        })
        .collect();
    let count = |f: &dyn Fn(&SignatureCheck) -> bool| checks.iter().filter(|c| f(c)).count();
    assert_eq!(checks.len(), 7, "{checks:#?}");
    // The trusted key's signature, the keyless one with a fresh certificate, the Notation
    // JWS and the Sigstore bundle.
    assert_eq!(count(&|c| c.outcome == Outcome::Trusted), 4, "{checks:#?}");
    assert_eq!(
        count(&|c| c.outcome == Outcome::Trusted && c.signer == SAN),
        2
    );
    assert_eq!(
        count(&|c| c.outcome == Outcome::Trusted && c.scheme == Scheme::Notation),
        1
    );
    // Another key, and the trusted key's signature over an altered payload.
    assert_eq!(
        count(&|c| matches!(c.outcome, Outcome::Untrusted(_))),
        2,
        "{checks:#?}"
    );
    // The certificate that expired before the signature was logged.
    assert_eq!(
        count(&|c| matches!(c.outcome, Outcome::Invalid(_))),
        1,
        "{checks:#?}"
    );

    let reports: Vec<_> = evidence
        .iter()
        .filter_map(|e| match e {
            Evidence::Vulnerabilities { summary, .. } => Some(summary),
            _ => None,
        })
        .collect();
    assert_eq!(
        reports.len(),
        3,
        "cosign vuln, in-toto vulns, Trivy artifact"
    );
    let trivy: Vec<_> = reports
        .iter()
        .filter(|r| r.counts.critical == 1 && r.counts.high == 1)
        .collect();
    assert_eq!(trivy.len(), 2, "{reports:#?}");
    assert!(
        reports
            .iter()
            .any(|r| r.counts.medium == 1 && r.counts.critical == 0)
    );
    let mut sboms: Vec<SbomFormat> = evidence
        .iter()
        .filter_map(|e| match e {
            Evidence::Sbom { format, .. } => Some(*format),
            _ => None,
        })
        .collect();
    sboms.sort_by_key(|f| format!("{f:?}"));
    // The SPDX and CycloneDX artifacts, the SPDX attestation, and cosign's `.sbom` tag.
    let mut expected = vec![SbomFormat::CycloneDx, SbomFormat::Spdx, SbomFormat::Spdx];
    if layout == Layout::TagSchema {
        expected.push(SbomFormat::Spdx);
    }
    assert_eq!(sboms, expected);
    Ok(())
}

#[tokio::test]
async fn what_is_published_as_cosign_and_oras_store_it_reads_back_from_the_tag_schema()
-> anyhow::Result<()> {
    reads_back(Layout::TagSchema).await
}

#[tokio::test]
async fn what_is_published_as_oci_1_1_referrers_reads_back_through_the_api() -> anyhow::Result<()> {
    reads_back(Layout::Referrers).await
}
