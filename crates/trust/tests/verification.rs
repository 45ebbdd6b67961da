//! Signature verification against material the test kit signs the way cosign, Fulcio,
//! Rekor and Notation do: keyless cosign with a Rekor bundle, Sigstore bundles, DSSE and
//! Notation JWS — every outcome the policy relies on, and no panic on garbage.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Duration, Utc};
use imagelib_testkit::signing::{
    self, NOTATION_LEAF_SUBJECT, San, TestFulcio, TestKey, TestLeaf, TestNotation, TestRekor,
    TestTsa,
};
use imagelib_trust::cosign::PublicKey;
use imagelib_trust::evidence::{
    Identity, Outcome, Scheme, SignatureCheck, SignatureEvidence, SignatureMaterial, Verifier,
    check_signature,
};
use imagelib_trust::notation::NotationTrustStore;
use imagelib_trust::trust_root::{TrustRoot, TrustRootError};
use proptest::prelude::*;

const DIGEST: &str = "sha256:4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945";
const OTHER: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000001";
const ISSUER: &str = "https://token.actions.githubusercontent.com";
const SAN_URI: &str = "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main";

struct Sigstore {
    fulcio: TestFulcio,
    rekor: TestRekor,
    root: TrustRoot,
}

impl Sigstore {
    fn new() -> Self {
        let fulcio = TestFulcio::new();
        let rekor = TestRekor::new();
        let root = TrustRoot::from_json(signing::trusted_root_json(&fulcio, &rekor).as_bytes())
            .expect("trusted_root.json parses");
        Self {
            fulcio,
            rekor,
            root,
        }
    }

    /// A leaf valid for ten minutes around `at`, like Fulcio issues.
    fn leaf(&self, san: San, at: DateTime<Utc>) -> TestLeaf {
        self.fulcio.issue(
            san,
            ISSUER,
            at - Duration::minutes(1),
            at + Duration::minutes(9),
        )
    }
}

fn logged_at() -> DateTime<Utc> {
    Utc::now() - Duration::days(2)
}

fn identities(issuer: &str, subject: &str) -> Vec<Identity> {
    vec![Identity::Keyless {
        issuer: issuer.into(),
        subject: regex::Regex::new(subject).unwrap(),
    }]
}

fn cosign_keyless(
    payload: &[u8],
    signature: &str,
    leaf: &TestLeaf,
    bundle: Option<String>,
) -> SignatureEvidence {
    SignatureEvidence {
        source: "sha256:feed".into(),
        material: SignatureMaterial::Cosign {
            payload: payload.to_vec(),
            signature: signature.into(),
            certificate: Some(leaf.cert_pem.clone()),
            chain: Some(leaf.chain_pem.clone()),
            bundle,
        },
    }
}

fn check(ev: &SignatureEvidence, subject: &str, verifier: &Verifier<'_>) -> SignatureCheck {
    check_signature(ev, subject, verifier)
}

fn invalid_reason(c: &SignatureCheck) -> &str {
    match &c.outcome {
        Outcome::Invalid(r) => r,
        other => panic!("expected invalid, got {other:?}"),
    }
}

/// A keyless cosign signature of DIGEST with a Rekor bundle.
fn signed_keyless(s: &Sigstore, san: San) -> (Vec<u8>, String, TestLeaf, String) {
    let at = logged_at();
    let leaf = s.leaf(san, at);
    let payload = signing::cosign_payload("registry.test/acme/app", DIGEST);
    let sig = leaf.key.sign(&payload);
    let bundle = s
        .rekor
        .rekor_bundle(&payload, &sig, &leaf.cert_pem, at.timestamp());
    (payload, sig, leaf, bundle)
}

#[test]
fn keyless_signature_with_rekor_bundle_is_trusted_with_san_and_issuer() {
    let s = Sigstore::new();
    let (payload, sig, leaf, bundle) = signed_keyless(&s, San::Uri(SAN_URI.into()));
    let ids = identities(ISSUER, "^https://github.com/acme/");
    let v = Verifier::new(Utc::now())
        .trust_root(&s.root)
        .identities(&ids);
    let c = check(
        &cosign_keyless(&payload, &sig, &leaf, Some(bundle.clone())),
        DIGEST,
        &v,
    );
    assert_eq!(c.outcome, Outcome::Trusted, "{c:?}");
    assert_eq!(c.signer, SAN_URI);
    assert_eq!(c.issuer.as_deref(), Some(ISSUER));
    assert_eq!(c.scheme, Scheme::Cosign);
    // Without the chain annotation the trust root's intermediates complete the path.
    let mut ev = cosign_keyless(&payload, &sig, &leaf, Some(bundle));
    if let SignatureMaterial::Cosign { chain, .. } = &mut ev.material {
        *chain = None;
    }
    assert_eq!(check(&ev, DIGEST, &v).outcome, Outcome::Trusted);
}

#[test]
fn keyless_email_identity_and_the_public_keyless_api() {
    let s = Sigstore::new();
    let (payload, sig, leaf, bundle) = signed_keyless(&s, San::Email("dev@acme.test".into()));
    let signer = imagelib_trust::keyless::verify_cosign(
        &s.root,
        &payload,
        &sig,
        &leaf.cert_pem,
        Some(&leaf.chain_pem),
        Some(&bundle),
        Utc::now(),
    )
    .expect("verifies");
    assert_eq!(signer.san, "dev@acme.test");
    assert_eq!(signer.issuer.as_deref(), Some(ISSUER));
    assert!(signer.logged);
    let logged: serde_json::Value = serde_json::from_str(&bundle).unwrap();
    assert_eq!(
        Some(signer.signed_at.timestamp()),
        logged["Payload"]["integratedTime"].as_i64()
    );
}

#[test]
fn keyless_username_san_is_the_identity() {
    let s = Sigstore::new();
    let (payload, sig, leaf, bundle) = signed_keyless(&s, San::Username("ci-robot".into()));
    let ids = identities(ISSUER, "^ci-robot$");
    let v = Verifier::new(Utc::now())
        .trust_root(&s.root)
        .identities(&ids);
    let c = check(
        &cosign_keyless(&payload, &sig, &leaf, Some(bundle)),
        DIGEST,
        &v,
    );
    assert_eq!(c.outcome, Outcome::Trusted, "{c:?}");
    assert_eq!(c.signer, "ci-robot");
}

#[test]
fn keyless_identity_not_in_policy_is_untrusted() {
    let s = Sigstore::new();
    let (payload, sig, leaf, bundle) = signed_keyless(&s, San::Uri(SAN_URI.into()));
    let ev = cosign_keyless(&payload, &sig, &leaf, Some(bundle));
    for ids in [
        identities(ISSUER, "^https://github.com/other/"),
        identities("https://accounts.google.com", ".*"),
        Vec::new(),
    ] {
        let v = Verifier::new(Utc::now())
            .trust_root(&s.root)
            .identities(&ids);
        let c = check(&ev, DIGEST, &v);
        assert!(matches!(c.outcome, Outcome::Untrusted(_)), "{c:?}");
        assert_eq!(c.signer, SAN_URI);
    }
}

#[test]
fn keyless_without_trust_root_is_untrusted_but_tampering_is_still_invalid() {
    let s = Sigstore::new();
    let (payload, sig, leaf, bundle) = signed_keyless(&s, San::Uri(SAN_URI.into()));
    let ids = identities(ISSUER, ".*");
    let v = Verifier::new(Utc::now()).identities(&ids);
    let c = check(
        &cosign_keyless(&payload, &sig, &leaf, Some(bundle.clone())),
        DIGEST,
        &v,
    );
    assert!(
        matches!(&c.outcome, Outcome::Untrusted(r) if r.contains("trust root")),
        "{c:?}"
    );
    let tampered = signing::cosign_payload("registry.test/acme/app", OTHER);
    let c = check(
        &cosign_keyless(&tampered, &sig, &leaf, Some(bundle)),
        OTHER,
        &v,
    );
    invalid_reason(&c);
}

#[test]
fn keyless_tampered_payload_is_invalid() {
    let s = Sigstore::new();
    let (_, sig, leaf, bundle) = signed_keyless(&s, San::Uri(SAN_URI.into()));
    let tampered = signing::cosign_payload("registry.test/acme/app", OTHER);
    let ids = identities(ISSUER, ".*");
    let v = Verifier::new(Utc::now())
        .trust_root(&s.root)
        .identities(&ids);
    let c = check(
        &cosign_keyless(&tampered, &sig, &leaf, Some(bundle)),
        OTHER,
        &v,
    );
    assert!(invalid_reason(&c).contains("signature"), "{c:?}");
}

#[test]
fn keyless_signature_of_another_image_is_invalid() {
    let s = Sigstore::new();
    let (payload, sig, leaf, bundle) = signed_keyless(&s, San::Uri(SAN_URI.into()));
    let ids = identities(ISSUER, ".*");
    let v = Verifier::new(Utc::now())
        .trust_root(&s.root)
        .identities(&ids);
    let c = check(
        &cosign_keyless(&payload, &sig, &leaf, Some(bundle)),
        OTHER,
        &v,
    );
    assert!(invalid_reason(&c).contains("not for image"), "{c:?}");
}

#[test]
fn keyless_leaf_expired_when_logged_is_invalid() {
    let s = Sigstore::new();
    let at = logged_at();
    // Valid for ten minutes an hour before the log entry.
    let leaf = s.fulcio.issue(
        San::Uri(SAN_URI.into()),
        ISSUER,
        at - Duration::minutes(70),
        at - Duration::minutes(60),
    );
    let payload = signing::cosign_payload("registry.test/acme/app", DIGEST);
    let sig = leaf.key.sign(&payload);
    let bundle = s
        .rekor
        .rekor_bundle(&payload, &sig, &leaf.cert_pem, at.timestamp());
    let ids = identities(ISSUER, ".*");
    let v = Verifier::new(Utc::now())
        .trust_root(&s.root)
        .identities(&ids);
    let c = check(
        &cosign_keyless(&payload, &sig, &leaf, Some(bundle)),
        DIGEST,
        &v,
    );
    assert!(
        invalid_reason(&c).contains("certificate expired before the signature was logged"),
        "{c:?}"
    );
}

#[test]
fn keyless_without_bundle_needs_a_certificate_valid_now() {
    let s = Sigstore::new();
    let (payload, sig, old_leaf, _) = signed_keyless(&s, San::Uri(SAN_URI.into()));
    let ids = identities(ISSUER, ".*");
    let v = Verifier::new(Utc::now())
        .trust_root(&s.root)
        .identities(&ids);
    let c = check(&cosign_keyless(&payload, &sig, &old_leaf, None), DIGEST, &v);
    assert!(invalid_reason(&c).contains("10 minutes"), "{c:?}");

    let fresh = s.leaf(San::Uri(SAN_URI.into()), Utc::now());
    let sig = fresh.key.sign(&payload);
    let c = check(&cosign_keyless(&payload, &sig, &fresh, None), DIGEST, &v);
    assert_eq!(c.outcome, Outcome::Trusted, "{c:?}");
}

#[test]
fn keyless_certificate_from_another_ca_is_invalid() {
    let s = Sigstore::new();
    let rogue = Sigstore {
        fulcio: TestFulcio::with_name("rogue"),
        rekor: TestRekor {
            key: s.rekor.key.clone(),
        },
        root: s.root.clone(),
    };
    let (payload, sig, leaf, bundle) = signed_keyless(&rogue, San::Uri(SAN_URI.into()));
    let ids = identities(ISSUER, ".*");
    let v = Verifier::new(Utc::now())
        .trust_root(&s.root)
        .identities(&ids);
    let c = check(
        &cosign_keyless(&payload, &sig, &leaf, Some(bundle.clone())),
        DIGEST,
        &v,
    );
    assert!(
        invalid_reason(&c).contains("does not chain to a trusted root"),
        "{c:?}"
    );
    // Same with a rogue CA of the same name: names match, signatures don't.
    let same_name = TestFulcio::new();
    let leaf = same_name.issue(
        San::Uri(SAN_URI.into()),
        ISSUER,
        logged_at() - Duration::minutes(1),
        logged_at() + Duration::minutes(9),
    );
    let sig = leaf.key.sign(&payload);
    let bundle = s
        .rekor
        .rekor_bundle(&payload, &sig, &leaf.cert_pem, logged_at().timestamp());
    let c = check(
        &cosign_keyless(&payload, &sig, &leaf, Some(bundle)),
        DIGEST,
        &v,
    );
    invalid_reason(&c);
}

#[test]
fn keyless_bad_signed_entry_timestamp_is_invalid() {
    let s = Sigstore::new();
    let (payload, sig, leaf, _) = signed_keyless(&s, San::Uri(SAN_URI.into()));
    let ids = identities(ISSUER, ".*");
    let v = Verifier::new(Utc::now())
        .trust_root(&s.root)
        .identities(&ids);
    let at = logged_at().timestamp();

    // A SET by a key that is not the trusted log's, under the trusted log's id.
    let forger = TestRekor::new();
    let mut bundle: serde_json::Value =
        serde_json::from_str(&forger.rekor_bundle(&payload, &sig, &leaf.cert_pem, at)).unwrap();
    bundle["Payload"]["logID"] = signing::hex(&s.rekor.log_id()).into();
    let c = check(
        &cosign_keyless(&payload, &sig, &leaf, Some(bundle.to_string())),
        DIGEST,
        &v,
    );
    assert!(invalid_reason(&c).contains("SignedEntryTimestamp"), "{c:?}");

    // The trusted log's SET with the time moved into the certificate's window.
    let mut bundle: serde_json::Value =
        serde_json::from_str(&s.rekor.rekor_bundle(&payload, &sig, &leaf.cert_pem, at)).unwrap();
    bundle["Payload"]["integratedTime"] = (at + 1).into();
    let c = check(
        &cosign_keyless(&payload, &sig, &leaf, Some(bundle.to_string())),
        DIGEST,
        &v,
    );
    assert!(invalid_reason(&c).contains("SignedEntryTimestamp"), "{c:?}");

    // An unknown log.
    let c = check(
        &cosign_keyless(
            &payload,
            &sig,
            &leaf,
            Some(forger.rekor_bundle(&payload, &sig, &leaf.cert_pem, at)),
        ),
        DIGEST,
        &v,
    );
    assert!(
        invalid_reason(&c).contains("not in the trust root"),
        "{c:?}"
    );
}

#[test]
fn keyless_log_entry_of_another_signature_is_invalid() {
    let s = Sigstore::new();
    let (payload, sig, leaf, _) = signed_keyless(&s, San::Uri(SAN_URI.into()));
    let other_payload = signing::cosign_payload("registry.test/acme/app", OTHER);
    let other_sig = leaf.key.sign(&other_payload);
    let bundle = s.rekor.rekor_bundle(
        &other_payload,
        &other_sig,
        &leaf.cert_pem,
        logged_at().timestamp(),
    );
    let ids = identities(ISSUER, ".*");
    let v = Verifier::new(Utc::now())
        .trust_root(&s.root)
        .identities(&ids);
    let c = check(
        &cosign_keyless(&payload, &sig, &leaf, Some(bundle)),
        DIGEST,
        &v,
    );
    assert!(
        invalid_reason(&c).contains("Rekor entry does not match"),
        "{c:?}"
    );
}

#[test]
fn keyless_certificate_signature_verified_by_a_trusted_key_is_trusted_as_the_key() {
    let key = TestKey::generate();
    let trusted = [PublicKey::from_pem(&key.public_pem()).unwrap()];
    let s = Sigstore::new();
    let leaf = s.leaf(San::Uri(SAN_URI.into()), Utc::now());
    let payload = signing::cosign_payload("registry.test/acme/app", DIGEST);
    let sig = key.sign(&payload);
    let v = Verifier::new(Utc::now()).keys(&trusted);
    let c = check(&cosign_keyless(&payload, &sig, &leaf, None), DIGEST, &v);
    assert_eq!(c.outcome, Outcome::Trusted);
    assert_eq!(c.signer, key.key_id());
}

#[test]
fn trust_root_reads_json_and_pem_and_refuses_garbage() {
    let s = Sigstore::new();
    assert_eq!(s.root.authorities().len(), 1);
    assert_eq!(s.root.tlogs().len(), 1);
    assert_eq!(s.root.tlogs()[0].log_id, s.rekor.log_id());
    let pem_root = TrustRoot::from_pem(&s.fulcio.chain_pem(), Some(&s.rekor.public_pem())).unwrap();
    let (payload, sig, leaf, bundle) = signed_keyless(&s, San::Uri(SAN_URI.into()));
    let ids = identities(ISSUER, ".*");
    let v = Verifier::new(Utc::now())
        .trust_root(&pem_root)
        .identities(&ids);
    let c = check(
        &cosign_keyless(&payload, &sig, &leaf, Some(bundle)),
        DIGEST,
        &v,
    );
    assert_eq!(c.outcome, Outcome::Trusted, "{c:?}");

    assert!(matches!(
        TrustRoot::from_json(b"{}"),
        Err(TrustRootError::MediaType(_))
    ));
    assert!(matches!(
        TrustRoot::from_json(
            br#"{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}"#
        ),
        Err(TrustRootError::NoAuthority)
    ));
    assert!(matches!(
        TrustRoot::from_json(br#"{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1","certificateAuthorities":[{"certChain":{"certificates":[{"rawBytes":"AAAA"}]}}]}"#),
        Err(TrustRootError::Cert { .. })
    ));
    assert!(matches!(
        TrustRoot::from_json(&vec![b' '; 2 * 1024 * 1024]),
        Err(TrustRootError::TooLarge { .. })
    ));
    assert!(TrustRoot::from_pem("not pem", None).is_err());
}

#[test]
fn trust_root_leaves_out_logs_with_unusable_keys() {
    let s = Sigstore::new();
    let mut doc: serde_json::Value =
        serde_json::from_str(&signing::trusted_root_json(&s.fulcio, &s.rekor)).unwrap();
    doc["tlogs"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "baseUrl": "https://example.test/unsupported",
            "hashAlgorithm": "SHA2_256",
            "publicKey": {"rawBytes": "", "keyDetails": "PKIX_ED25519"},
            "logId": {"keyId": "xNI9atQGlz+VWfO6LRygH4QUfY/8W4RFwiT5i5WRgB0="}
        }));
    let root = TrustRoot::from_json(doc.to_string().as_bytes()).unwrap();
    assert_eq!(root.tlogs().len(), 1);
    assert_eq!(root.skipped_tlogs, 1);
}

#[test]
fn trust_root_ca_validity_window_is_enforced() {
    let s = Sigstore::new();
    let mut doc: serde_json::Value =
        serde_json::from_str(&signing::trusted_root_json(&s.fulcio, &s.rekor)).unwrap();
    // The CA stopped issuing before the signature was logged.
    doc["certificateAuthorities"][0]["validFor"]["end"] =
        (logged_at() - Duration::days(1)).to_rfc3339().into();
    let root = TrustRoot::from_json(doc.to_string().as_bytes()).unwrap();
    let (payload, sig, leaf, bundle) = signed_keyless(&s, San::Uri(SAN_URI.into()));
    let ids = identities(ISSUER, ".*");
    let v = Verifier::new(Utc::now()).trust_root(&root).identities(&ids);
    let c = check(
        &cosign_keyless(&payload, &sig, &leaf, Some(bundle)),
        DIGEST,
        &v,
    );
    invalid_reason(&c);
}

// ---- Sigstore bundles ----

fn bundle_evidence(bytes: Vec<u8>) -> SignatureEvidence {
    SignatureEvidence {
        source: "sha256:b0d1e".into(),
        material: SignatureMaterial::SigstoreBundle { bundle: bytes },
    }
}

#[test]
fn sigstore_bundle_v03_message_signature_is_trusted() {
    let s = Sigstore::new();
    let leaf = s.leaf(San::Email("dev@acme.test".into()), logged_at());
    let b = signing::sigstore_bundle(&leaf, &s.rekor, DIGEST, logged_at().timestamp());
    let ids = identities(ISSUER, "^dev@acme\\.test$");
    let v = Verifier::new(Utc::now())
        .trust_root(&s.root)
        .identities(&ids);
    let c = check(&bundle_evidence(b.clone()), DIGEST, &v);
    assert_eq!(c.outcome, Outcome::Trusted, "{c:?}");
    assert_eq!(c.signer, "dev@acme.test");
    assert_eq!(c.issuer.as_deref(), Some(ISSUER));
    // The same bundle checked for another image.
    let c = check(&bundle_evidence(b), OTHER, &v);
    assert!(invalid_reason(&c).contains("not this image"), "{c:?}");
}

#[test]
fn sigstore_bundle_v01_with_certificate_chain_is_trusted() {
    let s = Sigstore::new();
    let leaf = s.leaf(San::Email("dev@acme.test".into()), logged_at());
    let b = signing::sigstore_bundle(&leaf, &s.rekor, DIGEST, logged_at().timestamp());
    let mut doc: serde_json::Value = serde_json::from_slice(&b).unwrap();
    doc["mediaType"] = "application/vnd.dev.sigstore.bundle+json;version=0.1".into();
    let material = doc["verificationMaterial"].as_object_mut().unwrap();
    let cert = material.remove("certificate").unwrap();
    material.insert(
        "x509CertificateChain".into(),
        serde_json::json!({"certificates": [
            cert,
            {"rawBytes": STANDARD.encode(s.fulcio.intermediate_der())},
        ]}),
    );
    // Some writers put int64 fields as JSON numbers rather than protobuf strings.
    let entry = &mut doc["verificationMaterial"]["tlogEntries"][0];
    let time: i64 = entry["integratedTime"].as_str().unwrap().parse().unwrap();
    entry["integratedTime"] = time.into();
    let ids = identities(ISSUER, "acme");
    let v = Verifier::new(Utc::now())
        .trust_root(&s.root)
        .identities(&ids);
    let c = check(&bundle_evidence(doc.to_string().into_bytes()), DIGEST, &v);
    assert_eq!(c.outcome, Outcome::Trusted, "{c:?}");
    assert_eq!(c.signer, "dev@acme.test");
}

/// A v0.3 bundle of DIGEST by `leaf` whose tlog entry carries an inclusion proof.
fn bundle_with_proof(
    s: &Sigstore,
    leaf: &TestLeaf,
    at: i64,
    index: usize,
    size: usize,
    with_promise: bool,
) -> serde_json::Value {
    let b = signing::sigstore_bundle(leaf, &s.rekor, DIGEST, at);
    let mut doc: serde_json::Value = serde_json::from_slice(&b).unwrap();
    let body = STANDARD
        .decode(
            doc["verificationMaterial"]["tlogEntries"][0]["canonicalizedBody"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    doc["verificationMaterial"]["tlogEntries"][0] =
        s.rekor
            .tlog_entry_with_proof(&body, "hashedrekord", at, index, size, with_promise);
    doc
}

#[test]
fn sigstore_bundle_inclusion_proofs_verify_for_every_tree_shape() {
    let s = Sigstore::new();
    let at = logged_at();
    let leaf = s.leaf(San::Email("dev@acme.test".into()), at);
    let ids = identities(ISSUER, ".*");
    let v = Verifier::new(Utc::now())
        .trust_root(&s.root)
        .identities(&ids);
    for (index, size) in [
        (0, 1),
        (0, 2),
        (1, 2),
        (3, 7),
        (6, 7),
        (4, 8),
        (5, 11),
        (10, 11),
    ] {
        let doc = bundle_with_proof(&s, &leaf, at.timestamp(), index, size, true);
        let c = check(&bundle_evidence(doc.to_string().into_bytes()), DIGEST, &v);
        assert_eq!(c.outcome, Outcome::Trusted, "{index}/{size}: {c:?}");
    }
}

#[test]
fn sigstore_bundle_bad_inclusion_proof_or_checkpoint_is_invalid() {
    let s = Sigstore::new();
    let at = logged_at();
    let leaf = s.leaf(San::Email("dev@acme.test".into()), at);
    let ids = identities(ISSUER, ".*");
    let v = Verifier::new(Utc::now())
        .trust_root(&s.root)
        .identities(&ids);
    let doc = bundle_with_proof(&s, &leaf, at.timestamp(), 3, 7, true);
    let proof = &doc["verificationMaterial"]["tlogEntries"][0]["inclusionProof"];

    let mut bad_hash = doc.clone();
    bad_hash["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]["hashes"][1] =
        STANDARD.encode([7u8; 32]).into();
    let c = check(
        &bundle_evidence(bad_hash.to_string().into_bytes()),
        DIGEST,
        &v,
    );
    assert!(invalid_reason(&c).contains("inclusion proof"), "{c:?}");

    let mut bad_index = doc.clone();
    bad_index["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]["logIndex"] = "2".into();
    let c = check(
        &bundle_evidence(bad_index.to_string().into_bytes()),
        DIGEST,
        &v,
    );
    assert!(invalid_reason(&c).contains("inclusion proof"), "{c:?}");

    // The checkpoint signed by another log key.
    let forger = TestRekor::new();
    let mut forged = doc.clone();
    let text = proof["checkpoint"]["envelope"]
        .as_str()
        .unwrap()
        .split_once("\n\n")
        .unwrap()
        .0
        .to_owned()
        + "\n";
    let mut sig = vec![0u8; 4];
    sig.extend(forger.key.sign_der(text.as_bytes()));
    forged["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]["checkpoint"]["envelope"] =
        format!(
            "{text}\n\u{2014} rekor.test.invalid {}\n",
            STANDARD.encode(sig)
        )
        .into();
    let c = check(
        &bundle_evidence(forged.to_string().into_bytes()),
        DIGEST,
        &v,
    );
    assert!(invalid_reason(&c).contains("checkpoint signature"), "{c:?}");
}

#[test]
fn sigstore_bundle_with_proof_but_no_promise_has_no_signing_time() {
    let s = Sigstore::new();
    let ids = identities(ISSUER, ".*");
    let v = Verifier::new(Utc::now())
        .trust_root(&s.root)
        .identities(&ids);
    let old = s.leaf(San::Email("dev@acme.test".into()), logged_at());
    let doc = bundle_with_proof(&s, &old, logged_at().timestamp(), 2, 5, false);
    let c = check(&bundle_evidence(doc.to_string().into_bytes()), DIGEST, &v);
    assert!(invalid_reason(&c).contains("10 minutes"), "{c:?}");

    let fresh = s.leaf(San::Email("dev@acme.test".into()), Utc::now());
    let doc = bundle_with_proof(&s, &fresh, Utc::now().timestamp(), 2, 5, false);
    let c = check(&bundle_evidence(doc.to_string().into_bytes()), DIGEST, &v);
    assert_eq!(c.outcome, Outcome::Trusted, "{c:?}");
}

/// A v0.3 bundle of DIGEST by `leaf` with no tlog promise, timestamped by `tsa` at `at`
/// (over `stamped`, the bundle's own signature unless another is given).
fn bundle_with_timestamp(
    s: &Sigstore,
    leaf: &TestLeaf,
    tsa: &TestTsa,
    at: DateTime<Utc>,
    stamped: Option<&[u8]>,
) -> Vec<u8> {
    let b = signing::sigstore_bundle(leaf, &s.rekor, DIGEST, at.timestamp());
    let mut doc: serde_json::Value = serde_json::from_slice(&b).unwrap();
    let sig = STANDARD
        .decode(doc["messageSignature"]["signature"].as_str().unwrap())
        .unwrap();
    doc["verificationMaterial"]["tlogEntries"] = serde_json::json!([]);
    doc["verificationMaterial"]["timestampVerificationData"] = serde_json::json!({
        "rfc3161Timestamps": [{"signedTimestamp": STANDARD.encode(tsa.timestamp(stamped.unwrap_or(&sig), at))}]
    });
    doc.to_string().into_bytes()
}

#[test]
fn sigstore_bundle_rfc3161_timestamp_gives_the_signing_time() {
    let s = Sigstore::new();
    let tsa = TestTsa::new();
    let root = TrustRoot::from_json(
        signing::trusted_root_json_with_tsa(&s.fulcio, &s.rekor, &tsa).as_bytes(),
    )
    .unwrap();
    assert_eq!(root.timestamp_authorities().len(), 1);
    let ids = identities(ISSUER, ".*");
    let v = Verifier::new(Utc::now()).trust_root(&root).identities(&ids);
    let at = logged_at();
    let leaf = s.leaf(San::Email("dev@acme.test".into()), at);

    let c = check(
        &bundle_evidence(bundle_with_timestamp(&s, &leaf, &tsa, at, None)),
        DIGEST,
        &v,
    );
    assert_eq!(c.outcome, Outcome::Trusted, "{c:?}");

    // A timestamp of another signature.
    let c = check(
        &bundle_evidence(bundle_with_timestamp(&s, &leaf, &tsa, at, Some(b"other"))),
        DIGEST,
        &v,
    );
    assert!(invalid_reason(&c).contains("another signature"), "{c:?}");

    // A time outside the certificate's ten minutes.
    let late = at + Duration::hours(1);
    let c = check(
        &bundle_evidence(bundle_with_timestamp(&s, &leaf, &tsa, late, None)),
        DIGEST,
        &v,
    );
    assert!(invalid_reason(&c).contains("expired"), "{c:?}");

    // The TSTInfo's time altered after signing: its digest no longer matches.
    let mut doc: serde_json::Value =
        serde_json::from_slice(&bundle_with_timestamp(&s, &leaf, &tsa, at, None)).unwrap();
    let ts = &mut doc["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"][0]
        ["signedTimestamp"];
    let mut token = STANDARD.decode(ts.as_str().unwrap()).unwrap();
    let time = at.format("%Y%m%d%H%M%SZ").to_string().into_bytes();
    let i = token.windows(time.len()).position(|w| w == time).unwrap() + time.len() - 2;
    token[i] = if token[i] == b'0' { b'1' } else { b'0' };
    *ts = STANDARD.encode(&token).into();
    let c = check(&bundle_evidence(doc.to_string().into_bytes()), DIGEST, &v);
    assert!(invalid_reason(&c).contains("timestamp signature"), "{c:?}");

    // A TSA the trust root does not name.
    let rogue = TestTsa::new();
    let c = check(
        &bundle_evidence(bundle_with_timestamp(&s, &leaf, &rogue, at, None)),
        DIGEST,
        &v,
    );
    assert!(invalid_reason(&c).contains("RFC 3161"), "{c:?}");

    // No TSA in the root at all.
    let v = Verifier::new(Utc::now())
        .trust_root(&s.root)
        .identities(&ids);
    let c = check(
        &bundle_evidence(bundle_with_timestamp(&s, &leaf, &tsa, at, None)),
        DIGEST,
        &v,
    );
    assert!(invalid_reason(&c).contains("RFC 3161"), "{c:?}");
}

/// A Rekor v2 (`hashedrekord` 0.0.2) body for `leaf_der`'s signature over DIGEST.
fn hashedrekord_v2_body(sig_b64: &str, leaf_der: &[u8]) -> Vec<u8> {
    serde_json::json!({
        "apiVersion": "0.0.2",
        "kind": "hashedrekord",
        "spec": {"hashedRekordV002": {
            "data": {"algorithm": "SHA2_256", "digest": STANDARD.encode(hex_bytes(DIGEST))},
            "signature": {
                "content": sig_b64,
                "verifier": {
                    "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    "x509Certificate": {"rawBytes": STANDARD.encode(leaf_der)}
                }
            }
        }}
    })
    .to_string()
    .into_bytes()
}

#[test]
fn sigstore_bundle_rekor_v2_entry_with_proof_and_timestamp_is_trusted() {
    let s = Sigstore::new();
    let tsa = TestTsa::new();
    let root = TrustRoot::from_json(
        signing::trusted_root_json_with_tsa(&s.fulcio, &s.rekor, &tsa).as_bytes(),
    )
    .unwrap();
    let ids = identities(ISSUER, ".*");
    let v = Verifier::new(Utc::now()).trust_root(&root).identities(&ids);
    let at = logged_at();
    let leaf = s.leaf(San::Email("dev@acme.test".into()), at);
    let build = |cert_der: &[u8]| {
        let mut doc: serde_json::Value =
            serde_json::from_slice(&bundle_with_timestamp(&s, &leaf, &tsa, at, None)).unwrap();
        let sig = doc["messageSignature"]["signature"]
            .as_str()
            .unwrap()
            .to_owned();
        let body = hashedrekord_v2_body(&sig, cert_der);
        let mut entry = s
            .rekor
            .tlog_entry_with_proof(&body, "hashedrekord", 0, 5, 9, false);
        entry["kindVersion"]["version"] = "0.0.2".into();
        entry.as_object_mut().unwrap().remove("integratedTime");
        doc["verificationMaterial"]["tlogEntries"] = serde_json::json!([entry]);
        doc.to_string().into_bytes()
    };
    let c = check(&bundle_evidence(build(&leaf.cert_der())), DIGEST, &v);
    assert_eq!(c.outcome, Outcome::Trusted, "{c:?}");
    // The logged entry names another certificate.
    let other = s.leaf(San::Email("dev@acme.test".into()), at);
    let c = check(&bundle_evidence(build(&other.cert_der())), DIGEST, &v);
    assert!(
        invalid_reason(&c).contains("Rekor entry does not match"),
        "{c:?}"
    );
}

#[test]
fn sigstore_bundle_tampered_is_invalid() {
    let s = Sigstore::new();
    let leaf = s.leaf(San::Email("dev@acme.test".into()), logged_at());
    let b = signing::sigstore_bundle(&leaf, &s.rekor, DIGEST, logged_at().timestamp());
    let ids = identities(ISSUER, ".*");
    let v = Verifier::new(Utc::now())
        .trust_root(&s.root)
        .identities(&ids);
    let mut doc: serde_json::Value = serde_json::from_slice(&b).unwrap();

    // The digest swapped for another image's: the signature no longer verifies.
    let mut swapped = doc.clone();
    swapped["messageSignature"]["messageDigest"]["digest"] =
        STANDARD.encode(hex_bytes(OTHER)).into();
    let c = check(
        &bundle_evidence(swapped.to_string().into_bytes()),
        OTHER,
        &v,
    );
    invalid_reason(&c);

    // The SET altered.
    let set =
        doc["verificationMaterial"]["tlogEntries"][0]["inclusionPromise"]["signedEntryTimestamp"]
            .as_str()
            .unwrap()
            .to_owned();
    let forged = TestRekor::new().key.sign(set.as_bytes());
    doc["verificationMaterial"]["tlogEntries"][0]["inclusionPromise"]["signedEntryTimestamp"] =
        forged.into();
    let c = check(&bundle_evidence(doc.to_string().into_bytes()), DIGEST, &v);
    assert!(invalid_reason(&c).contains("SignedEntryTimestamp"), "{c:?}");

    // Not a bundle at all.
    let c = check(
        &bundle_evidence(b"{\"mediaType\":\"x\"}".to_vec()),
        DIGEST,
        &v,
    );
    invalid_reason(&c);
}

#[test]
fn sigstore_bundle_with_dsse_statement_is_trusted_for_its_subject() {
    let s = Sigstore::new();
    let leaf = s.leaf(San::Uri(SAN_URI.into()), logged_at());
    let b = signing::sigstore_dsse_bundle(
        &leaf,
        &s.rekor,
        DIGEST,
        "https://sigstore.dev/cosign/sign/v1",
        serde_json::json!({}),
        logged_at().timestamp(),
    );
    let ids = identities(ISSUER, "acme");
    let v = Verifier::new(Utc::now())
        .trust_root(&s.root)
        .identities(&ids);
    let c = check(&bundle_evidence(b.clone()), DIGEST, &v);
    assert_eq!(c.outcome, Outcome::Trusted, "{c:?}");
    let c = check(&bundle_evidence(b.clone()), OTHER, &v);
    invalid_reason(&c);
    // Payload altered inside the envelope.
    let mut doc: serde_json::Value = serde_json::from_slice(&b).unwrap();
    let statement = signing::in_toto_statement(OTHER, "x", serde_json::json!({}));
    doc["dsseEnvelope"]["payload"] = STANDARD.encode(statement).into();
    let c = check(&bundle_evidence(doc.to_string().into_bytes()), OTHER, &v);
    invalid_reason(&c);
}

#[test]
fn sigstore_bundle_with_public_key_uses_the_policy_keys() {
    use p256::ecdsa::signature::hazmat::PrehashSigner as _;
    let key = TestKey::generate();
    let digest = hex_bytes(DIGEST);
    let sig: p256::ecdsa::Signature = key.signing_key().sign_prehash(&digest).unwrap();
    let b = serde_json::json!({
        "mediaType": "application/vnd.dev.sigstore.bundle+json;version=0.2",
        "verificationMaterial": {"publicKey": {"hint": "k"}, "tlogEntries": []},
        "messageSignature": {
            "messageDigest": {"algorithm": "SHA2_256", "digest": STANDARD.encode(&digest)},
            "signature": STANDARD.encode(sig.to_der().as_bytes()),
        }
    })
    .to_string()
    .into_bytes();
    let keys = [PublicKey::from_pem(&key.public_pem()).unwrap()];
    let c = check(
        &bundle_evidence(b.clone()),
        DIGEST,
        &Verifier::new(Utc::now()).keys(&keys),
    );
    assert_eq!(c.outcome, Outcome::Trusted, "{c:?}");
    assert_eq!(c.signer, key.key_id());
    let other = [PublicKey::from_pem(&TestKey::generate().public_pem()).unwrap()];
    let c = check(
        &bundle_evidence(b),
        DIGEST,
        &Verifier::new(Utc::now()).keys(&other),
    );
    assert!(matches!(c.outcome, Outcome::Untrusted(_)), "{c:?}");
}

fn hex_bytes(digest: &str) -> Vec<u8> {
    let h = digest.strip_prefix("sha256:").unwrap();
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
        .collect()
}

// ---- DSSE ----

#[test]
fn dsse_envelope_valid_tampered_and_wrong_key() {
    let key = TestKey::generate();
    let keys = [PublicKey::from_pem(&key.public_pem()).unwrap()];
    let statement = signing::in_toto_statement(
        DIGEST,
        "https://slsa.dev/provenance/v1",
        serde_json::json!({}),
    );
    let env = signing::dsse_envelope("application/vnd.in-toto+json", &statement, &key);
    let v = Verifier::new(Utc::now()).keys(&keys);

    let c = imagelib_trust::dsse::verify_envelope(&env, &v);
    assert_eq!(c.outcome, Outcome::Trusted);
    assert_eq!(c.signer, key.key_id());
    assert_eq!(c.payload, statement);
    assert_eq!(c.payload_type, "application/vnd.in-toto+json");

    let mut doc: serde_json::Value = serde_json::from_slice(&env).unwrap();
    doc["payload"] = STANDARD
        .encode(signing::in_toto_statement(
            OTHER,
            "x",
            serde_json::json!({}),
        ))
        .into();
    let c = imagelib_trust::dsse::verify_envelope(doc.to_string().as_bytes(), &v);
    assert!(matches!(c.outcome, Outcome::Untrusted(_)), "{c:?}");

    // The type is covered by the signature too.
    let mut doc: serde_json::Value = serde_json::from_slice(&env).unwrap();
    doc["payloadType"] = "application/json".into();
    let c = imagelib_trust::dsse::verify_envelope(doc.to_string().as_bytes(), &v);
    assert!(matches!(c.outcome, Outcome::Untrusted(_)), "{c:?}");

    let wrong = [PublicKey::from_pem(&TestKey::generate().public_pem()).unwrap()];
    let c = imagelib_trust::dsse::verify_envelope(&env, &Verifier::new(Utc::now()).keys(&wrong));
    assert!(matches!(c.outcome, Outcome::Untrusted(_)), "{c:?}");

    let c = imagelib_trust::dsse::verify_envelope(b"{\"payload\":1}", &v);
    assert!(matches!(c.outcome, Outcome::Invalid(_)), "{c:?}");
}

#[test]
fn dsse_envelope_keyless_with_rekor_dsse_entry() {
    let s = Sigstore::new();
    let at = logged_at();
    let leaf = s.leaf(San::Uri(SAN_URI.into()), at);
    let statement = signing::in_toto_statement(
        DIGEST,
        "https://slsa.dev/provenance/v1",
        serde_json::json!({}),
    );
    let env = signing::dsse_envelope("application/vnd.in-toto+json", &statement, &leaf.key);
    let sig = serde_json::from_slice::<serde_json::Value>(&env).unwrap()["signatures"][0]["sig"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = TestRekor::dsse_body(&env, &statement, &sig, &leaf.cert_pem);
    let bundle = s
        .rekor
        .bundle_for_body(&STANDARD.encode(body), at.timestamp());
    let ids = identities(ISSUER, "acme");
    let v = Verifier::new(Utc::now())
        .trust_root(&s.root)
        .identities(&ids);
    let c = imagelib_trust::dsse::verify_envelope_keyless(
        &env,
        &leaf.cert_pem,
        Some(&leaf.chain_pem),
        Some(&bundle),
        &v,
    );
    assert_eq!(c.outcome, Outcome::Trusted, "{c:?}");
    assert_eq!(c.signer, SAN_URI);
    // Another key's envelope under this certificate.
    let other = signing::dsse_envelope(
        "application/vnd.in-toto+json",
        &statement,
        &TestKey::generate(),
    );
    let c = imagelib_trust::dsse::verify_envelope_keyless(
        &other,
        &leaf.cert_pem,
        Some(&leaf.chain_pem),
        Some(&bundle),
        &v,
    );
    assert!(matches!(c.outcome, Outcome::Invalid(_)), "{c:?}");
}

// ---- Notation ----

fn notation_evidence(media_type: &str, envelope: Vec<u8>) -> SignatureEvidence {
    SignatureEvidence {
        source: "sha256:4e7a".into(),
        material: SignatureMaterial::Notation {
            media_type: media_type.into(),
            envelope,
        },
    }
}

fn x509_ids(pattern: &str) -> Vec<Identity> {
    vec![Identity::X509 {
        subject: regex::Regex::new(pattern).unwrap(),
    }]
}

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

#[test]
fn notation_jws_valid_is_trusted_by_subject_dn() {
    let n = TestNotation::new();
    let store = NotationTrustStore::from_pem(&n.ca_pem()).unwrap();
    let ids = x509_ids("^CN=imagelib signer,O=imagelib-test,");
    let v = Verifier::new(Utc::now())
        .notation_roots(&store)
        .identities(&ids);
    let env = n.sign_jws(DIGEST, MANIFEST, 1234);
    let c = check(&notation_evidence("application/jose+json", env), DIGEST, &v);
    assert_eq!(c.outcome, Outcome::Trusted, "{c:?}");
    assert_eq!(c.signer, NOTATION_LEAF_SUBJECT);
    assert_eq!(c.scheme, Scheme::Notation);
}

#[test]
fn notation_rsa_pss_signature_is_trusted() {
    let n = TestNotation::new_rsa();
    assert_eq!(n.alg(), "PS256");
    let store = NotationTrustStore::from_pem(&n.ca_pem()).unwrap();
    let ids = x509_ids("CN=imagelib signer");
    let v = Verifier::new(Utc::now())
        .notation_roots(&store)
        .identities(&ids);
    let env = n.sign_jws(DIGEST, MANIFEST, 99);
    let c = check(
        &notation_evidence("application/jose+json", env.clone()),
        DIGEST,
        &v,
    );
    assert_eq!(c.outcome, Outcome::Trusted, "{c:?}");
    // The same envelope claiming ES256 for the RSA key is refused.
    let mut doc: serde_json::Value = serde_json::from_slice(&env).unwrap();
    let protected = URL_SAFE_NO_PAD
        .decode(doc["protected"].as_str().unwrap())
        .unwrap();
    let mut header: serde_json::Value = serde_json::from_slice(&protected).unwrap();
    header["alg"] = "ES256".into();
    doc["protected"] = URL_SAFE_NO_PAD.encode(header.to_string()).into();
    let c = check(
        &notation_evidence("application/jose+json", doc.to_string().into_bytes()),
        DIGEST,
        &v,
    );
    invalid_reason(&c);
}

#[test]
fn notation_signing_authority_scheme_checks_the_chain_at_the_authentic_time() {
    let n = TestNotation::new();
    let store = NotationTrustStore::from_pem(&n.ca_pem()).unwrap();
    let ids = x509_ids(".*");
    let v = Verifier::new(Utc::now())
        .notation_roots(&store)
        .identities(&ids);
    let payload = format!(
        r#"{{"targetArtifact":{{"mediaType":"{MANIFEST}","digest":"{DIGEST}","size":1}}}}"#
    );
    let header = |t: DateTime<Utc>| {
        serde_json::json!({
            "alg": "ES256",
            "cty": "application/vnd.cncf.notary.payload.v1+json",
            "io.cncf.notary.signingScheme": "notary.x509.signingAuthority",
            "io.cncf.notary.authenticSigningTime": t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "crit": ["io.cncf.notary.signingScheme", "io.cncf.notary.authenticSigningTime"],
        })
        .to_string()
    };
    let env = n.sign_jws_raw(
        header(Utc::now() - Duration::days(1)).as_bytes(),
        payload.as_bytes(),
    );
    let c = check(&notation_evidence("application/jose+json", env), DIGEST, &v);
    assert_eq!(c.outcome, Outcome::Trusted, "{c:?}");
    // Before the leaf was issued (the test CA's leaves start 30 days ago).
    let env = n.sign_jws_raw(
        header(Utc::now() - Duration::days(60)).as_bytes(),
        payload.as_bytes(),
    );
    let c = check(&notation_evidence("application/jose+json", env), DIGEST, &v);
    assert!(invalid_reason(&c).contains("not valid at"), "{c:?}");
}

#[test]
fn notation_identity_mismatch_is_untrusted_and_no_store_is_untrusted() {
    let n = TestNotation::new();
    let store = NotationTrustStore::from_pem(&n.ca_pem()).unwrap();
    let env = n.sign_jws(DIGEST, MANIFEST, 1234);
    let ids = x509_ids("^CN=someone else");
    let v = Verifier::new(Utc::now())
        .notation_roots(&store)
        .identities(&ids);
    let c = check(
        &notation_evidence("application/jose+json", env.clone()),
        DIGEST,
        &v,
    );
    assert!(matches!(c.outcome, Outcome::Untrusted(_)), "{c:?}");
    assert_eq!(c.signer, NOTATION_LEAF_SUBJECT);
    let ids = x509_ids(".*");
    let v = Verifier::new(Utc::now()).identities(&ids);
    let c = check(&notation_evidence("application/jose+json", env), DIGEST, &v);
    assert!(
        matches!(&c.outcome, Outcome::Untrusted(r) if r.contains("trust store")),
        "{c:?}"
    );
}

#[test]
fn notation_wrong_ca_is_invalid() {
    let n = TestNotation::new();
    let other = TestNotation::new();
    let store = NotationTrustStore::from_pem(&other.ca_pem()).unwrap();
    let ids = x509_ids(".*");
    let v = Verifier::new(Utc::now())
        .notation_roots(&store)
        .identities(&ids);
    let c = check(
        &notation_evidence("application/jose+json", n.sign_jws(DIGEST, MANIFEST, 1)),
        DIGEST,
        &v,
    );
    assert!(invalid_reason(&c).contains("chain"), "{c:?}");
}

#[test]
fn notation_tampered_payload_and_other_digest_are_invalid() {
    let n = TestNotation::new();
    let store = NotationTrustStore::from_pem(&n.ca_pem()).unwrap();
    let ids = x509_ids(".*");
    let v = Verifier::new(Utc::now())
        .notation_roots(&store)
        .identities(&ids);
    let env = n.sign_jws(DIGEST, MANIFEST, 1234);
    let mut doc: serde_json::Value = serde_json::from_slice(&env).unwrap();
    doc["payload"] = URL_SAFE_NO_PAD
        .encode(format!(
            r#"{{"targetArtifact":{{"mediaType":"{MANIFEST}","digest":"{OTHER}","size":1234}}}}"#
        ))
        .into();
    let c = check(
        &notation_evidence("application/jose+json", doc.to_string().into_bytes()),
        OTHER,
        &v,
    );
    assert!(invalid_reason(&c).contains("does not verify"), "{c:?}");

    let c = check(&notation_evidence("application/jose+json", env), OTHER, &v);
    assert!(invalid_reason(&c).contains("not this image"), "{c:?}");
}

#[test]
fn notation_expired_signature_and_unknown_critical_header_are_invalid() {
    let n = TestNotation::new();
    let store = NotationTrustStore::from_pem(&n.ca_pem()).unwrap();
    let ids = x509_ids(".*");
    let v = Verifier::new(Utc::now())
        .notation_roots(&store)
        .identities(&ids);
    let payload = format!(
        r#"{{"targetArtifact":{{"mediaType":"{MANIFEST}","digest":"{DIGEST}","size":1}}}}"#
    );
    let expired = serde_json::json!({
        "alg": "ES256",
        "cty": "application/vnd.cncf.notary.payload.v1+json",
        "io.cncf.notary.signingScheme": "notary.x509",
        "io.cncf.notary.signingTime": "2024-01-01T00:00:00Z",
        "io.cncf.notary.expiry": "2024-02-01T00:00:00Z",
        "crit": ["io.cncf.notary.signingScheme", "io.cncf.notary.expiry"],
    });
    let env = n.sign_jws_raw(expired.to_string().as_bytes(), payload.as_bytes());
    let c = check(&notation_evidence("application/jose+json", env), DIGEST, &v);
    assert!(invalid_reason(&c).contains("expired"), "{c:?}");

    let plugin = serde_json::json!({
        "alg": "ES256",
        "cty": "application/vnd.cncf.notary.payload.v1+json",
        "io.cncf.notary.signingScheme": "notary.x509",
        "io.cncf.notary.verificationPlugin": "com.example.plugin",
        "crit": ["io.cncf.notary.signingScheme", "io.cncf.notary.verificationPlugin"],
    });
    let env = n.sign_jws_raw(plugin.to_string().as_bytes(), payload.as_bytes());
    let c = check(&notation_evidence("application/jose+json", env), DIGEST, &v);
    assert!(invalid_reason(&c).contains("not supported"), "{c:?}");

    // alg must match the key: ES384 claimed for a P-256 leaf.
    let wrong_alg = serde_json::json!({
        "alg": "ES384",
        "cty": "application/vnd.cncf.notary.payload.v1+json",
        "io.cncf.notary.signingScheme": "notary.x509",
        "crit": ["io.cncf.notary.signingScheme"],
    });
    let env = n.sign_jws_raw(wrong_alg.to_string().as_bytes(), payload.as_bytes());
    let c = check(&notation_evidence("application/jose+json", env), DIGEST, &v);
    invalid_reason(&c);
}

#[test]
fn notation_tls_leaf_is_not_a_code_signer() {
    let n = TestNotation::new_tls_leaf();
    let store = NotationTrustStore::from_pem(&n.ca_pem()).unwrap();
    let ids = x509_ids(".*");
    let v = Verifier::new(Utc::now())
        .notation_roots(&store)
        .identities(&ids);
    let c = check(
        &notation_evidence("application/jose+json", n.sign_jws(DIGEST, MANIFEST, 1)),
        DIGEST,
        &v,
    );
    assert!(invalid_reason(&c).contains("code-signing"), "{c:?}");
}

#[test]
fn notation_cose_is_detected_not_verified() {
    let v = Verifier::new(Utc::now());
    let c = check(
        &notation_evidence("application/cose", vec![0xd2, 0x84, 0x40]),
        DIGEST,
        &v,
    );
    assert_eq!(
        c.outcome,
        Outcome::Untrusted("COSE Notation signatures are detected, not verified".into())
    );
    assert_eq!(c.scheme, Scheme::Notation);
}

// ---- garbage never panics ----

fn json_ish() -> impl Strategy<Value = String> {
    "[\\[\\]{}\":,0-9a-zA-Z+/=._ -]{0,300}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn trust_root_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1024), text in json_ish()) {
        let _ = TrustRoot::from_json(&bytes);
        let _ = TrustRoot::from_json(text.as_bytes());
        let _ = TrustRoot::from_pem(&text, Some(&text));
        let _ = NotationTrustStore::from_pem(&text);
        let _ = imagelib_trust::x509::certs_from_pem(&format!("-----BEGIN CERTIFICATE-----\n{text}\n-----END CERTIFICATE-----"));
        let _ = imagelib_trust::x509::Cert::from_der(&bytes);
    }

    #[test]
    fn signature_checks_never_panic_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..1024), text in json_ish()) {
        let s = fixture();
        let ids = identities(ISSUER, ".*");
        let keys = [PublicKey::from_pem(&s.1.public_pem()).unwrap()];
        let v = Verifier::new(Utc::now()).trust_root(&s.0.root).identities(&ids).keys(&keys);
        let pem = format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----", STANDARD.encode(&bytes));
        for material in [
            SignatureMaterial::SigstoreBundle { bundle: bytes.clone() },
            SignatureMaterial::SigstoreBundle { bundle: text.clone().into_bytes() },
            SignatureMaterial::Notation { media_type: "application/jose+json".into(), envelope: bytes.clone() },
            SignatureMaterial::Notation { media_type: "application/jose+json".into(), envelope: text.clone().into_bytes() },
            SignatureMaterial::Cosign { payload: bytes.clone(), signature: text.clone(), certificate: Some(pem.clone()), chain: Some(text.clone()), bundle: Some(text.clone()) },
            SignatureMaterial::Cosign { payload: bytes.clone(), signature: STANDARD.encode(&bytes), certificate: Some(s.2.cert_pem.clone()), chain: None, bundle: Some(text.clone()) },
        ] {
            let c = check(&SignatureEvidence { source: "sha256:x".into(), material }, DIGEST, &v);
            prop_assert_ne!(c.outcome, Outcome::Trusted);
        }
        let c = imagelib_trust::dsse::verify_envelope(&bytes, &v);
        prop_assert_ne!(c.outcome, Outcome::Trusted);
        let c = imagelib_trust::dsse::verify_envelope(text.as_bytes(), &v);
        prop_assert_ne!(c.outcome, Outcome::Trusted);
        let c = imagelib_trust::dsse::verify_envelope_keyless(text.as_bytes(), &s.2.cert_pem, Some(&text), Some(&text), &v);
        prop_assert_ne!(c.outcome, Outcome::Trusted);
    }

    #[test]
    fn random_inclusion_proofs_never_panic_nor_pass(
        index in any::<i64>(),
        size in any::<i64>(),
        hashes in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..70),
        checkpoint in "[ -~\n\u{2014}]{0,300}",
    ) {
        let s = fixture();
        let ids = identities(ISSUER, ".*");
        let v = Verifier::new(Utc::now()).trust_root(&s.0.root).identities(&ids);
        let mut doc: serde_json::Value = serde_json::from_slice(&s.3).unwrap();
        doc["verificationMaterial"]["tlogEntries"][0]["inclusionProof"] = serde_json::json!({
            "logIndex": index.to_string(),
            "treeSize": size.to_string(),
            "rootHash": STANDARD.encode([0u8; 32]),
            "hashes": hashes.iter().map(|h| STANDARD.encode(h)).collect::<Vec<_>>(),
            "checkpoint": {"envelope": checkpoint},
        });
        let c = check(&bundle_evidence(doc.to_string().into_bytes()), DIGEST, &v);
        prop_assert!(matches!(c.outcome, Outcome::Invalid(_)), "{:?}", c);
    }

    #[test]
    fn random_timestamp_tokens_never_panic_nor_pass(token in proptest::collection::vec(any::<u8>(), 0..600)) {
        let s = fixture();
        let ids = identities(ISSUER, ".*");
        let v = Verifier::new(Utc::now()).trust_root(&s.0.root).identities(&ids);
        let mut doc: serde_json::Value = serde_json::from_slice(&s.3).unwrap();
        doc["verificationMaterial"]["tlogEntries"] = serde_json::json!([]);
        doc["verificationMaterial"]["timestampVerificationData"] =
            serde_json::json!({"rfc3161Timestamps": [{"signedTimestamp": STANDARD.encode(&token)}]});
        let c = check(&bundle_evidence(doc.to_string().into_bytes()), DIGEST, &v);
        prop_assert!(matches!(c.outcome, Outcome::Invalid(_)), "{:?}", c);
    }

    #[test]
    fn mutated_valid_bundle_never_panics(flip in 0usize..4096, byte in any::<u8>()) {
        let s = fixture();
        let ids = identities(ISSUER, ".*");
        let v = Verifier::new(Utc::now()).trust_root(&s.0.root).identities(&ids);
        let mut b = s.3.clone();
        let i = flip % b.len();
        prop_assume!(b[i] != byte);
        b[i] = byte;
        let c = check(&bundle_evidence(b), DIGEST, &v);
        prop_assert_eq!(c.scheme, Scheme::Cosign);
    }
}

/// One Sigstore, key, leaf and valid bundle for all proptest cases (keys are slow to make).
fn fixture() -> &'static (Sigstore, TestKey, TestLeaf, Vec<u8>) {
    static F: std::sync::OnceLock<(Sigstore, TestKey, TestLeaf, Vec<u8>)> =
        std::sync::OnceLock::new();
    F.get_or_init(|| {
        let s = Sigstore::new();
        let leaf = s.leaf(San::Email("dev@acme.test".into()), logged_at());
        let b = signing::sigstore_bundle(&leaf, &s.rekor, DIGEST, logged_at().timestamp());
        (s, TestKey::generate(), leaf, b)
    })
}
