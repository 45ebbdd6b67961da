//! Every referrer form imagelib reads, from manifests laid out as the tools push them.

mod evidence_kit;

use evidence_kit::*;
use imagelib_trust::evidence::{Evidence, Scheme, SignatureMaterial};
use imagelib_trust::referrer::{
    BlobKind, MAX_SIGNATURE_BLOB_BYTES, ReferrerError, TRIVY_REPORT_MEDIA_TYPES, interpret, plan,
};
use imagelib_trust::sbom::SbomFormat;
use imagelib_trust::vuln::{Severity, SeverityCounts};
use proptest::prelude::*;
use serde_json::json;

const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";

fn trivy_counts() -> SeverityCounts {
    SeverityCounts {
        critical: 2,
        high: 1,
        medium: 1,
        low: 1,
        unknown: 0,
    }
}

fn only<T: std::fmt::Debug>(mut items: Vec<T>) -> T {
    assert_eq!(items.len(), 1, "{items:?}");
    items.remove(0)
}

#[test]
fn a_cosign_sig_tag_manifest_is_a_cosign_signature() {
    let key = Key::generate();
    let payload = cosign_payload(SUBJECT);
    let sig = key.sign(&payload);
    let mut blobs = Blobs::default();
    let layer = blobs.layer(
        SIMPLE_SIGNING,
        &payload,
        json!({"dev.cosignproject.cosign/signature": sig}),
    );
    let manifest = tag_manifest(vec![layer]);

    let p = plan(&manifest).unwrap();
    let req = only(p.fetch);
    assert_eq!(req.kind, BlobKind::CosignPayload);
    assert_eq!(req.digest, digest(&payload));
    assert_eq!(req.size, payload.len() as u64);
    assert_eq!(req.limit, MAX_SIGNATURE_BLOB_BYTES);
    assert!(p.skipped.is_empty());

    let i = interpret(SUBJECT, &manifest, &blobs.0);
    assert!(i.skipped.is_empty(), "{:?}", i.skipped);
    let Evidence::Signature(s) = only(i.evidence) else {
        panic!("not a signature")
    };
    assert_eq!(s.source, digest(&manifest));
    assert_eq!(
        s.material,
        SignatureMaterial::Cosign {
            payload,
            signature: sig,
            certificate: None,
            chain: None,
            bundle: None,
        }
    );
}

#[test]
fn a_keyless_cosign_signature_keeps_certificate_chain_and_rekor_bundle() {
    let payload = cosign_payload(SUBJECT);
    let mut blobs = Blobs::default();
    let layer = blobs.layer(
        SIMPLE_SIGNING,
        &payload,
        json!({
            "dev.cosignproject.cosign/signature": "MEUCIQDx",
            "dev.sigstore.cosign/certificate": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
            "dev.sigstore.cosign/chain": "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n",
            "dev.sigstore.cosign/bundle": r#"{"SignedEntryTimestamp":"MEQ=","Payload":{"body":"e30=","integratedTime":1764496800,"logIndex":1,"logID":"c0d2"}}"#,
        }),
    );
    // cosign's OCI 1.1 mode: the same layer in a referrer with the signature artifact type.
    let manifest = referrer_manifest(
        "application/vnd.dev.cosign.artifact.sig.v1+json",
        vec![layer],
        SUBJECT,
    );
    let Evidence::Signature(s) = only(interpret(SUBJECT, &manifest, &blobs.0).evidence) else {
        panic!("not a signature")
    };
    let SignatureMaterial::Cosign {
        certificate,
        chain,
        bundle,
        ..
    } = s.material
    else {
        panic!("not cosign")
    };
    assert!(certificate.unwrap().contains("MIIB"));
    assert!(chain.unwrap().contains("MIIC"));
    assert!(bundle.unwrap().contains("integratedTime"));
}

#[test]
fn a_referrer_of_another_subject_gives_nothing() {
    let payload = cosign_payload(OTHER);
    let mut blobs = Blobs::default();
    let layer = blobs.layer(
        SIMPLE_SIGNING,
        &payload,
        json!({"dev.cosignproject.cosign/signature": "MEUC"}),
    );
    let manifest = referrer_manifest(
        "application/vnd.dev.cosign.artifact.sig.v1+json",
        vec![layer],
        OTHER,
    );
    let i = interpret(SUBJECT, &manifest, &blobs.0);
    assert!(i.evidence.is_empty());
    assert!(i.skipped[0].contains("subject"), "{:?}", i.skipped);
}

#[test]
fn a_signature_layer_without_its_annotation_is_an_unreadable_signature() {
    let payload = cosign_payload(SUBJECT);
    let mut blobs = Blobs::default();
    let layer = blobs.layer(SIMPLE_SIGNING, &payload, json!({}));
    let manifest = tag_manifest(vec![layer]);
    let e = only(interpret(SUBJECT, &manifest, &blobs.0).evidence);
    assert!(
        matches!(&e, Evidence::UnreadableSignature { scheme: Scheme::Cosign, reason, .. } if reason.contains("dev.cosignproject.cosign/signature")),
        "{e:?}"
    );
}

fn bundle_layer(blobs: &mut Blobs, bundle: &serde_json::Value) -> (Vec<u8>, Vec<u8>) {
    let bytes = bundle.to_string().into_bytes();
    let layer = blobs.layer(
        "application/vnd.dev.sigstore.bundle.v0.3+json",
        &bytes,
        json!({"org.opencontainers.image.title": "sha256-cafe.sigstore.json"}),
    );
    let manifest = referrer_manifest(
        "application/vnd.dev.sigstore.bundle.v0.3+json",
        vec![layer],
        SUBJECT,
    );
    (bytes, manifest)
}

#[test]
fn sigstore_bundles_are_signatures_or_attestations_by_content() {
    let key = Key::generate();
    let material = json!({"publicKey": {"hint": "k"}, "tlogEntries": []});

    // A message-signature bundle (cosign sign with --new-bundle-format).
    let mut blobs = Blobs::default();
    let (bytes, manifest) = bundle_layer(
        &mut blobs,
        &json!({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": material,
            "messageSignature": {"messageDigest": {"algorithm": "SHA2_256", "digest": "T1PNoYwrqgw="}, "signature": "MEUC"},
        }),
    );
    assert_eq!(
        only(plan(&manifest).unwrap().fetch).kind,
        BlobKind::SigstoreBundle
    );
    let Evidence::Signature(s) = only(interpret(SUBJECT, &manifest, &blobs.0).evidence) else {
        panic!("not a signature")
    };
    assert_eq!(
        s.material,
        SignatureMaterial::SigstoreBundle { bundle: bytes }
    );

    // cosign 3: a DSSE bundle of the image-signature predicate.
    let sign = dsse(
        &statement("https://sigstore.dev/cosign/sign/v1", SUBJECT, json!({})),
        &key,
    );
    let env: serde_json::Value = serde_json::from_slice(&sign).unwrap();
    let mut blobs = Blobs::default();
    let (bytes, manifest) = bundle_layer(
        &mut blobs,
        &json!({"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", "verificationMaterial": material, "dsseEnvelope": env}),
    );
    let Evidence::Signature(s) = only(interpret(SUBJECT, &manifest, &blobs.0).evidence) else {
        panic!("not a signature")
    };
    assert_eq!(
        s.material,
        SignatureMaterial::SigstoreBundle { bundle: bytes }
    );

    // cosign 3 attest: a DSSE bundle of a vuln predicate is a report, not a signature.
    let att = dsse(
        &statement(
            "https://cosign.sigstore.dev/attestation/vuln/v1",
            SUBJECT,
            cosign_vuln_predicate(TRIVY, "2026-11-30T10:00:00Z"),
        ),
        &key,
    );
    let env: serde_json::Value = serde_json::from_slice(&att).unwrap();
    let mut blobs = Blobs::default();
    let (_, manifest) = bundle_layer(
        &mut blobs,
        &json!({"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", "verificationMaterial": material, "dsseEnvelope": env}),
    );
    let Evidence::Vulnerabilities { summary, .. } =
        only(interpret(SUBJECT, &manifest, &blobs.0).evidence)
    else {
        panic!("not a report")
    };
    assert_eq!(summary.counts, trivy_counts());

    // A message-signature bundle padded past the signature-bundle bound is not kept.
    let mut blobs = Blobs::default();
    let (_, manifest) = bundle_layer(
        &mut blobs,
        &json!({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": material,
            "messageSignature": {"messageDigest": {"algorithm": "SHA2_256", "digest": "T1PNoYwrqgw="}, "signature": "MEUC"},
            "padding": "x".repeat(imagelib_trust::referrer::MAX_SIGNATURE_BUNDLE_BYTES),
        }),
    );
    assert!(matches!(
        only(interpret(SUBJECT, &manifest, &blobs.0).evidence),
        Evidence::UnreadableSignature { reason, .. } if reason.contains("over the")
    ));

    // Not a bundle at all: an invalid signature, not "unsigned".
    let mut blobs = Blobs::default();
    let (_, manifest) = bundle_layer(&mut blobs, &json!({"mediaType": "x"}));
    assert!(matches!(
        only(interpret(SUBJECT, &manifest, &blobs.0).evidence),
        Evidence::UnreadableSignature {
            scheme: Scheme::Cosign,
            ..
        }
    ));
}

#[test]
fn an_unreadable_bundle_is_an_invalid_signature_unless_the_manifest_says_attestation() {
    let bundle =
        br#"{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","messageSignature":{}}"#;
    let layer = json!({"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
                       "size": bundle.len(), "digest": digest(bundle)});
    let manifest = |annotations: serde_json::Value| {
        serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2, "digest": EMPTY_CONFIG},
            "layers": [layer],
            "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1, "digest": SUBJECT},
            "annotations": annotations,
        }))
        .unwrap()
    };
    // The blob was not fetched (or did not match): a signature bundle is an invalid signature…
    for annotations in [
        json!({}),
        json!({"dev.sigstore.bundle.content": "message-signature"}),
        json!({"dev.sigstore.bundle.content": "dsse-envelope", "dev.sigstore.bundle.predicateType": "https://sigstore.dev/cosign/sign/v1"}),
    ] {
        let i = interpret(SUBJECT, &manifest(annotations.clone()), &Default::default());
        assert!(
            matches!(
                only(i.evidence),
                Evidence::UnreadableSignature {
                    scheme: Scheme::Cosign,
                    ..
                }
            ),
            "{annotations}"
        );
    }
    // …an attestation bundle is just skipped.
    let i = interpret(
        SUBJECT,
        &manifest(json!({"dev.sigstore.bundle.content": "dsse-envelope",
                         "dev.sigstore.bundle.predicateType": "https://slsa.dev/provenance/v1"})),
        &Default::default(),
    );
    assert!(i.evidence.is_empty());
    assert!(i.skipped[0].contains("not fetched"), "{:?}", i.skipped);
}

#[test]
fn notation_signatures_are_read_as_jws_or_cose_envelopes() {
    for media_type in ["application/jose+json", "application/cose"] {
        let envelope = br#"{"payload":"eyJ0YXJnZXRBcnRpZmFjdCI6e319","protected":"eyJhbGciOiJQUzI1NiJ9","header":{"x5c":["MIIB"]},"signature":"AAAA"}"#;
        let mut blobs = Blobs::default();
        let layer = blobs.layer(media_type, envelope, json!({}));
        let manifest = referrer_manifest(
            "application/vnd.cncf.notary.signature",
            vec![layer],
            SUBJECT,
        );
        assert_eq!(
            only(plan(&manifest).unwrap().fetch).kind,
            BlobKind::NotationEnvelope
        );
        let Evidence::Signature(s) = only(interpret(SUBJECT, &manifest, &blobs.0).evidence) else {
            panic!("not a signature")
        };
        assert_eq!(
            s.material,
            SignatureMaterial::Notation {
                media_type: media_type.into(),
                envelope: envelope.to_vec()
            }
        );
    }
    let mut blobs = Blobs::default();
    let layer = blobs.layer("application/octet-stream", b"x", json!({}));
    let manifest = referrer_manifest(
        "application/vnd.cncf.notary.signature",
        vec![layer],
        SUBJECT,
    );
    assert!(plan(&manifest).unwrap().fetch.is_empty());
    assert!(matches!(
        only(interpret(SUBJECT, &manifest, &blobs.0).evidence),
        Evidence::UnreadableSignature {
            scheme: Scheme::Notation,
            ..
        }
    ));
}

#[test]
fn cosign_att_attestations_become_reports_sboms_or_attestations() {
    let key = Key::generate();
    let mut blobs = Blobs::default();
    let layer = |blobs: &mut Blobs, pt: &str, predicate: serde_json::Value, subject: &str| {
        let env = dsse(&statement(pt, subject, predicate), &key);
        blobs.layer(
            "application/vnd.dsse.envelope.v1+json",
            &env,
            json!({"predicateType": pt, "dev.cosignproject.cosign/signature": ""}),
        )
    };
    let vuln = layer(
        &mut blobs,
        "https://cosign.sigstore.dev/attestation/vuln/v1",
        cosign_vuln_predicate(TRIVY, "2026-11-30T10:00:00Z"),
        SUBJECT,
    );
    let in_toto = layer(
        &mut blobs,
        "https://in-toto.io/attestation/vulns/v0.1",
        json!({"scanner": {"uri": "pkg:github/anchore/grype@0.84.0", "version": "0.84.0",
               "db": {"version": "v5"},
               "result": [{"id": "CVE-2024-1", "severity": [{"method": "nvd", "score": "HIGH"}]}]},
               "metadata": {"scanStartedOn": "2026-11-30T08:00:00Z"}}),
        SUBJECT,
    );
    let spdx = layer(
        &mut blobs,
        "https://spdx.dev/Document",
        serde_json::from_str(SPDX).unwrap(),
        SUBJECT,
    );
    let cdx = layer(
        &mut blobs,
        "https://cyclonedx.org/bom",
        serde_json::from_str(CYCLONEDX).unwrap(),
        SUBJECT,
    );
    let slsa = layer(
        &mut blobs,
        "https://slsa.dev/provenance/v1",
        json!({"buildDefinition": {}}),
        SUBJECT,
    );
    let elsewhere = layer(
        &mut blobs,
        "https://spdx.dev/Document",
        serde_json::from_str(SPDX).unwrap(),
        OTHER,
    );
    let manifest = tag_manifest(vec![vuln, in_toto, spdx, cdx, slsa, elsewhere]);
    let p = plan(&manifest).unwrap();
    assert_eq!(p.fetch.len(), 6);
    assert!(p.fetch.iter().all(|r| r.kind == BlobKind::DsseEnvelope));

    let i = interpret(SUBJECT, &manifest, &blobs.0);
    let source = digest(&manifest);
    assert_eq!(i.evidence.len(), 5, "{:?}", i.evidence);
    let Evidence::Vulnerabilities { summary, source: s } = &i.evidence[0] else {
        panic!("{:?}", i.evidence[0])
    };
    assert_eq!(s, &source);
    assert_eq!(summary.scanner.name, "trivy");
    assert_eq!(summary.counts, trivy_counts());
    assert_eq!(summary.fixable, Some(3));
    assert_eq!(summary.findings[0].id, "CVE-2024-45491");
    assert_eq!(summary.findings[0].severity, Severity::Critical);
    let Evidence::Vulnerabilities { summary, .. } = &i.evidence[1] else {
        panic!("{:?}", i.evidence[1])
    };
    assert_eq!(summary.scanner.name, "grype");
    assert_eq!(summary.counts.high, 1);
    assert_eq!(
        i.evidence[2],
        Evidence::Sbom {
            source: source.clone(),
            format: SbomFormat::Spdx
        }
    );
    assert_eq!(
        i.evidence[3],
        Evidence::Sbom {
            source: source.clone(),
            format: SbomFormat::CycloneDx
        }
    );
    assert_eq!(
        i.evidence[4],
        Evidence::Attestation {
            source,
            predicate_type: "https://slsa.dev/provenance/v1".into()
        }
    );
    assert_eq!(i.skipped.len(), 1);
    assert!(i.skipped[0].contains("is not about"), "{:?}", i.skipped);
}

#[test]
fn sbom_artifacts_need_no_blob() {
    // oras attach --artifact-type application/spdx+json (default layer media type).
    let manifest = referrer_manifest(
        "application/spdx+json",
        vec![
            json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "size": 4096,
                    "digest": digest(SPDX.as_bytes()),
                    "annotations": {"org.opencontainers.image.title": "sbom.spdx.json"}}),
        ],
        SUBJECT,
    );
    let p = plan(&manifest).unwrap();
    assert!(p.fetch.is_empty(), "{:?}", p.fetch);
    assert_eq!(p.artifact_type.as_deref(), Some("application/spdx+json"));
    assert_eq!(
        only(interpret(SUBJECT, &manifest, &Default::default()).evidence),
        Evidence::Sbom {
            source: digest(&manifest),
            format: SbomFormat::Spdx
        }
    );

    // cosign attach sbom: a `.sbom` tag with one layer per document.
    let manifest = tag_manifest(vec![
        json!({"mediaType": "text/spdx+json", "size": SPDX.len(), "digest": digest(SPDX.as_bytes())}),
        json!({"mediaType": "application/vnd.cyclonedx+json", "size": CYCLONEDX.len(), "digest": digest(CYCLONEDX.as_bytes())}),
        json!({"mediaType": "text/spdx", "size": 10, "digest": digest(b"tag-value")}),
    ]);
    assert!(plan(&manifest).unwrap().fetch.is_empty());
    let i = interpret(SUBJECT, &manifest, &Default::default());
    assert_eq!(
        i.evidence,
        [
            Evidence::Sbom {
                source: digest(&manifest),
                format: SbomFormat::Spdx
            },
            Evidence::Sbom {
                source: digest(&manifest),
                format: SbomFormat::CycloneDx
            },
        ]
    );
}

#[test]
fn trivy_json_reports_are_read_by_media_type_or_by_content() {
    for media_type in TRIVY_REPORT_MEDIA_TYPES {
        // oras attach --artifact-type <type> image report.json:<type>
        let mut blobs = Blobs::default();
        let layer = blobs.layer(media_type, TRIVY.as_bytes(), json!({}));
        let manifest = referrer_manifest(media_type, vec![layer], SUBJECT);
        assert_eq!(
            only(plan(&manifest).unwrap().fetch).kind,
            BlobKind::TrivyReport
        );
        let Evidence::Vulnerabilities { summary, .. } =
            only(interpret(SUBJECT, &manifest, &blobs.0).evidence)
        else {
            panic!("not a report")
        };
        assert_eq!(summary.counts, trivy_counts());
        assert_eq!(
            summary.scanned_at.as_deref(),
            Some("2026-11-30T10:00:00.123456789Z")
        );
        // …and by artifact type alone, with oras's default layer media type.
        let mut blobs = Blobs::default();
        let layer = blobs.layer(
            "application/vnd.oci.image.layer.v1.tar",
            TRIVY.as_bytes(),
            json!({}),
        );
        let manifest = referrer_manifest(media_type, vec![layer], SUBJECT);
        assert!(matches!(
            only(interpret(SUBJECT, &manifest, &blobs.0).evidence),
            Evidence::Vulnerabilities { .. }
        ));
    }

    // Plain application/json, recognised by SchemaVersion + ArtifactName.
    let mut blobs = Blobs::default();
    let layer = blobs.layer("application/json", TRIVY.as_bytes(), json!({}));
    let manifest = referrer_manifest("application/json", vec![layer], SUBJECT);
    assert_eq!(only(plan(&manifest).unwrap().fetch).kind, BlobKind::Json);
    assert!(matches!(
        only(interpret(SUBJECT, &manifest, &blobs.0).evidence),
        Evidence::Vulnerabilities { .. }
    ));

    // trivy-plugin-referrer: a bare cosign-vuln predicate, config and layer application/json.
    let predicate = cosign_vuln_predicate(TRIVY, "2026-11-30T09:59:58Z").to_string();
    let mut blobs = Blobs::default();
    let layer = blobs.layer("application/json", predicate.as_bytes(), json!({}));
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/json", "size": 233, "digest": digest(b"{}")},
        "layers": [layer],
        "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1, "digest": SUBJECT},
        "annotations": {"org.opencontainers.artifact.description": "Cosign Vulnerability Data", "created-by": "trivy"},
    }))
    .unwrap();
    let Evidence::Vulnerabilities { summary, .. } =
        only(interpret(SUBJECT, &manifest, &blobs.0).evidence)
    else {
        panic!("not a report")
    };
    assert_eq!(summary.scanned_at.as_deref(), Some("2026-11-30T09:59:58Z"));
    assert_eq!(summary.counts, trivy_counts());

    // Plain JSON that is an SBOM, and plain JSON that is neither.
    let mut blobs = Blobs::default();
    let sbom = blobs.layer("application/json", CYCLONEDX.as_bytes(), json!({}));
    let other = blobs.layer("application/json", br#"{"hello":"world"}"#, json!({}));
    let manifest = referrer_manifest("application/json", vec![sbom, other], SUBJECT);
    let i = interpret(SUBJECT, &manifest, &blobs.0);
    assert_eq!(
        i.evidence,
        [Evidence::Sbom {
            source: digest(&manifest),
            format: SbomFormat::CycloneDx
        }]
    );
    assert_eq!(i.skipped.len(), 1);
}

#[test]
fn a_blob_that_does_not_match_its_digest_is_skipped() {
    let key = Key::generate();
    let payload = cosign_payload(SUBJECT);
    let mut blobs = Blobs::default();
    let sig = blobs.layer(
        SIMPLE_SIGNING,
        &payload,
        json!({"dev.cosignproject.cosign/signature": key.sign(&payload)}),
    );
    let report = blobs.layer(
        "application/vnd.aquasec.trivy.report+json",
        TRIVY.as_bytes(),
        json!({}),
    );
    let manifest = tag_manifest(vec![sig, report]);
    // The registry served other bytes under both digests.
    for (d, bytes) in blobs.0.iter_mut() {
        let altered = String::from_utf8(bytes.clone())
            .unwrap()
            .replace("CRITICAL", "LOW")
            .replace("registry.example", "registry.exampl3");
        assert_ne!(&digest(altered.as_bytes()), d);
        *bytes = altered.into_bytes();
    }
    let i = interpret(SUBJECT, &manifest, &blobs.0);
    let e = only(i.evidence);
    assert!(
        matches!(&e, Evidence::UnreadableSignature { reason, .. } if reason.contains("does not match its digest")),
        "{e:?}"
    );
    assert!(
        i.skipped[0].contains("does not match its digest"),
        "{:?}",
        i.skipped
    );

    // Not fetched at all: also never taken on trust.
    let i = interpret(SUBJECT, &manifest, &Default::default());
    assert!(matches!(
        only(i.evidence),
        Evidence::UnreadableSignature { .. }
    ));
    assert!(i.skipped[0].contains("not fetched"));
}

#[test]
fn oversized_blobs_are_not_fetched() {
    let manifest = tag_manifest(vec![
        json!({"mediaType": SIMPLE_SIGNING, "size": MAX_SIGNATURE_BLOB_BYTES + 1,
               "digest": digest(b"big"), "annotations": {"dev.cosignproject.cosign/signature": "MEUC"}}),
        json!({"mediaType": "application/vnd.dsse.envelope.v1+json", "size": 17u64 << 20, "digest": digest(b"att")}),
    ]);
    let p = plan(&manifest).unwrap();
    assert!(p.fetch.is_empty());
    assert_eq!(p.skipped.len(), 2);
    assert!(p.skipped.iter().all(|s| s.contains("over the")));
    // Even if a scanner passed the bytes, they are not read.
    let mut blobs = std::collections::BTreeMap::new();
    blobs.insert(digest(b"big"), b"big".to_vec());
    let i = interpret(SUBJECT, &manifest, &blobs);
    assert!(matches!(
        only(i.evidence),
        Evidence::UnreadableSignature { reason, .. } if reason.contains("over the")
    ));
    assert_eq!(i.skipped.len(), 1);
}

#[test]
fn what_is_not_a_manifest_is_an_error_for_plan_and_nothing_for_interpret() {
    let index = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
    for bytes in [
        &b"not json"[..],
        &b"[]"[..],
        &index[..],
        br#"{"schemaVersion":1,"layers":[]}"#,
        br#"{"schemaVersion":2,"mediaType":"text/plain","layers":[]}"#,
        br#"{"schemaVersion":2,"layers":[{"mediaType":"x","size":-1,"digest":"sha256:00"}]}"#,
    ] {
        assert!(
            matches!(plan(bytes), Err(ReferrerError::NotAManifest(_))),
            "{}",
            String::from_utf8_lossy(bytes)
        );
        let i = interpret(SUBJECT, bytes, &Default::default());
        assert!(i.evidence.is_empty());
        assert_eq!(i.skipped.len(), 1);
    }
    let huge = vec![b' '; imagelib_trust::referrer::MAX_MANIFEST_BYTES + 1];
    assert!(matches!(plan(&huge), Err(ReferrerError::TooLarge { .. })));
}

#[test]
fn interpreted_evidence_round_trips_through_json() {
    let key = Key::generate();
    let payload = cosign_payload(SUBJECT);
    let mut blobs = Blobs::default();
    let sig = blobs.layer(
        SIMPLE_SIGNING,
        &payload,
        json!({"dev.cosignproject.cosign/signature": key.sign(&payload)}),
    );
    let att = blobs.layer(
        "application/vnd.dsse.envelope.v1+json",
        &dsse(
            &statement(
                "https://cosign.sigstore.dev/attestation/vuln/v1",
                SUBJECT,
                cosign_vuln_predicate(TRIVY, "2026-11-30T10:00:00Z"),
            ),
            &key,
        ),
        json!({}),
    );
    let manifest = tag_manifest(vec![
        sig,
        att,
        json!({"mediaType": "text/spdx+json", "size": 1, "digest": digest(b"x")}),
    ]);
    let evidence = interpret(SUBJECT, &manifest, &blobs.0).evidence;
    assert_eq!(evidence.len(), 3);
    let json = serde_json::to_string(&evidence).unwrap();
    assert_eq!(
        serde_json::from_str::<Vec<Evidence>>(&json).unwrap(),
        evidence
    );
}

fn arb_layer() -> impl Strategy<Value = serde_json::Value> {
    let media = prop_oneof![
        Just(SIMPLE_SIGNING.to_owned()),
        Just("application/vnd.dsse.envelope.v1+json".to_owned()),
        Just("application/vnd.dev.sigstore.bundle.v0.3+json".to_owned()),
        Just("application/jose+json".to_owned()),
        Just("application/json".to_owned()),
        Just("application/vnd.in-toto+json".to_owned()),
        Just("text/spdx+json".to_owned()),
        ".{0,20}",
    ];
    (
        media,
        proptest::collection::vec(any::<u8>(), 0..200),
        any::<bool>(),
    )
        .prop_map(|(mt, bytes, annotate)| {
            let mut l = json!({"mediaType": mt, "size": bytes.len(), "digest": digest(&bytes)});
            if annotate {
                l["annotations"] = json!({"dev.cosignproject.cosign/signature": "AAAA"});
            }
            l
        })
}

proptest! {
    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = plan(&bytes);
        let i = interpret(SUBJECT, &bytes, &Default::default());
        prop_assert!(i.evidence.is_empty());
    }

    #[test]
    fn manifests_with_garbage_blobs_never_panic(
        layers in proptest::collection::vec(arb_layer(), 0..6),
        artifact_type in prop_oneof![
            Just("application/vnd.cncf.notary.signature".to_owned()),
            Just("application/vnd.dev.cosign.artifact.sig.v1+json".to_owned()),
            Just("application/spdx+json".to_owned()),
            Just("application/vnd.aquasec.trivy.report+json".to_owned()),
            ".{0,30}",
        ],
        blob_bytes in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..6),
    ) {
        let manifest = referrer_manifest(&artifact_type, layers.clone(), SUBJECT);
        let p = plan(&manifest).unwrap();
        // Hand over garbage under each requested digest, and the right-looking bytes too.
        let mut blobs = std::collections::BTreeMap::new();
        for (req, bytes) in p.fetch.iter().zip(blob_bytes.iter().cycle()) {
            blobs.insert(req.digest.clone(), bytes.clone());
        }
        let i = interpret(SUBJECT, &manifest, &blobs);
        for e in &i.evidence {
            prop_assert_eq!(e.source(), digest(&manifest));
        }
        prop_assert!(i.evidence.len() <= layers.len().max(1));
    }

    #[test]
    fn a_flipped_byte_in_a_manifest_never_panics(at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let payload = cosign_payload(SUBJECT);
        let mut blobs = Blobs::default();
        let layer = blobs.layer(SIMPLE_SIGNING, &payload, json!({"dev.cosignproject.cosign/signature": "MEUC"}));
        let mut manifest = tag_manifest(vec![layer]);
        let i = at.index(manifest.len());
        manifest[i] = byte;
        let _ = plan(&manifest);
        let _ = interpret(SUBJECT, &manifest, &blobs.0);
    }
}
