//! From referrer manifests to verdicts with real signatures: keyless cosign (test Fulcio
//! and Rekor), Sigstore bundles (message signature and cosign 3 DSSE), Notation JWS with a
//! CA trust store — read by `referrer::interpret`, judged by `policy::evaluate` through
//! `check_signature`.

mod evidence_kit;

use chrono::{Duration, Utc};
use evidence_kit::{
    Blobs, OTHER, SUBJECT, TRIVY, cosign_vuln_predicate, referrer_manifest, tag_manifest,
};
use imagelib_testkit::signing::{
    NOTATION_LEAF_SUBJECT, San, TestFulcio, TestNotation, TestRekor, cosign_payload,
    sigstore_bundle, sigstore_dsse_bundle, trusted_root_json,
};
use imagelib_trust::evidence::{Evidence, Outcome};
use imagelib_trust::notation::NotationTrustStore;
use imagelib_trust::policy::{
    Evaluation, IdentitySpec, Mode, Policy, PolicySpec, Reason, SeverityLimit, Verdict, evaluate,
};
use imagelib_trust::referrer::{COSIGN_SIGN_PREDICATE, interpret, plan};
use imagelib_trust::trust_root::TrustRoot;
use serde_json::json;

const ISSUER: &str = "https://token.actions.example";

struct Sigstore {
    fulcio: TestFulcio,
    rekor: TestRekor,
    root: TrustRoot,
}

impl Sigstore {
    fn new() -> Self {
        let fulcio = TestFulcio::new();
        let rekor = TestRekor::new();
        let root = TrustRoot::from_json(trusted_root_json(&fulcio, &rekor).as_bytes()).unwrap();
        Self {
            fulcio,
            rekor,
            root,
        }
    }

    fn leaf(&self) -> imagelib_testkit::signing::TestLeaf {
        let now = Utc::now();
        self.fulcio.issue(
            San::Email("ci@example.com".into()),
            ISSUER,
            now - Duration::minutes(1),
            now + Duration::minutes(9),
        )
    }
}

fn keyless_policy(subject: &str) -> PolicySpec {
    PolicySpec {
        mode: Mode::Enforce,
        keys: Vec::new(),
        identities: vec![IdentitySpec::Keyless {
            issuer: ISSUER.into(),
            subject: subject.into(),
        }],
        max_severity: None,
        allow_cves: Vec::new(),
        require_sbom: false,
    }
}

/// Reads each manifest with the blobs its plan asks for, then evaluates.
fn judge(
    spec: &PolicySpec,
    sigstore: Option<&TrustRoot>,
    notation: Option<&NotationTrustStore>,
    manifests: &[(Vec<u8>, &Blobs)],
) -> Evaluation {
    let mut own = Vec::new();
    for (manifest, blobs) in manifests {
        let mut fetched = std::collections::BTreeMap::new();
        for req in plan(manifest).unwrap().fetch {
            if let Some(b) = blobs.0.get(&req.digest) {
                fetched.insert(req.digest, b.clone());
            }
        }
        own.extend(interpret(SUBJECT, manifest, &fetched).evidence);
    }
    let policy = Policy::compile(spec).unwrap();
    let mut verifier = policy.verifier(Utc::now());
    if let Some(root) = sigstore {
        verifier = verifier.trust_root(root);
    }
    if let Some(store) = notation {
        verifier = verifier.notation_roots(store);
    }
    evaluate(
        &policy,
        &verifier,
        SUBJECT,
        &own,
        &[],
        Utc::now().date_naive(),
    )
}

fn keyless_sig_manifest(s: &Sigstore, digest: &str, blobs: &mut Blobs) -> Vec<u8> {
    let leaf = s.leaf();
    let payload = cosign_payload("registry.example/team/app", digest);
    let sig = leaf.key.sign(&payload);
    let bundle = s
        .rekor
        .rekor_bundle(&payload, &sig, &leaf.cert_pem, Utc::now().timestamp());
    let layer = blobs.layer(
        "application/vnd.dev.cosign.simplesigning.v1+json",
        &payload,
        json!({
            "dev.cosignproject.cosign/signature": sig,
            "dev.sigstore.cosign/certificate": leaf.cert_pem,
            "dev.sigstore.cosign/chain": leaf.chain_pem,
            "dev.sigstore.cosign/bundle": bundle,
        }),
    );
    tag_manifest(vec![layer])
}

#[test]
fn a_keyless_cosign_signature_passes_for_its_identity_only() {
    let s = Sigstore::new();
    let mut blobs = Blobs::default();
    let manifest = keyless_sig_manifest(&s, SUBJECT, &mut blobs);

    let e = judge(
        &keyless_policy(r"^ci@example\.com$"),
        Some(&s.root),
        None,
        &[(manifest.clone(), &blobs)],
    );
    assert_eq!(e.findings, [], "{:?}", e.signatures);
    assert_eq!(e.signatures[0].signer, "ci@example.com");
    assert_eq!(e.signatures[0].issuer.as_deref(), Some(ISSUER));
    assert_eq!(e.verdict(Mode::Enforce), Some(Verdict::Pass));

    let e = judge(
        &keyless_policy(r"^release@example\.com$"),
        Some(&s.root),
        None,
        &[(manifest, &blobs)],
    );
    assert_eq!(e.reasons(), [Reason::SignerNotTrusted]);
    assert!(e.findings[0].detail.contains("ci@example.com"));
}

#[test]
fn a_keyless_signature_of_another_digest_or_another_root_is_signature_invalid() {
    let s = Sigstore::new();
    let mut blobs = Blobs::default();
    let copied = keyless_sig_manifest(&s, OTHER, &mut blobs);
    let e = judge(
        &keyless_policy(".*"),
        Some(&s.root),
        None,
        &[(copied, &blobs)],
    );
    assert_eq!(e.reasons(), [Reason::SignatureInvalid]);

    let elsewhere = Sigstore::new();
    let mut blobs = Blobs::default();
    let manifest = keyless_sig_manifest(&elsewhere, SUBJECT, &mut blobs);
    let e = judge(
        &keyless_policy(".*"),
        Some(&s.root),
        None,
        &[(manifest, &blobs)],
    );
    assert_eq!(e.reasons(), [Reason::SignatureInvalid]);
}

#[test]
fn a_payload_altered_and_repushed_under_its_new_digest_is_signature_invalid() {
    let s = Sigstore::new();
    let mut blobs = Blobs::default();
    let leaf = s.leaf();
    let payload = cosign_payload("registry.example/team/app", SUBJECT);
    let sig = leaf.key.sign(&payload);
    let bundle = s
        .rekor
        .rekor_bundle(&payload, &sig, &leaf.cert_pem, Utc::now().timestamp());
    let tampered = String::from_utf8(payload)
        .unwrap()
        .replace("registry.example/team/app", "registry.example/team/evil")
        .into_bytes();
    let layer = blobs.layer(
        "application/vnd.dev.cosign.simplesigning.v1+json",
        &tampered,
        json!({
            "dev.cosignproject.cosign/signature": sig,
            "dev.sigstore.cosign/certificate": leaf.cert_pem,
            "dev.sigstore.cosign/chain": leaf.chain_pem,
            "dev.sigstore.cosign/bundle": bundle,
        }),
    );
    let e = judge(
        &keyless_policy(".*"),
        Some(&s.root),
        None,
        &[(tag_manifest(vec![layer]), &blobs)],
    );
    assert_eq!(e.reasons(), [Reason::SignatureInvalid]);
}

fn bundle_referrer(bundle: &[u8], blobs: &mut Blobs) -> Vec<u8> {
    let layer = blobs.layer(
        "application/vnd.dev.sigstore.bundle.v0.3+json",
        bundle,
        json!({"org.opencontainers.image.title": "sha256-x.sigstore.json"}),
    );
    referrer_manifest(
        "application/vnd.dev.sigstore.bundle.v0.3+json",
        vec![layer],
        SUBJECT,
    )
}

#[test]
fn sigstore_bundles_sign_but_attestation_bundles_do_not() {
    let s = Sigstore::new();
    let now = Utc::now().timestamp();
    let spec = keyless_policy(r"ci@example\.com");

    let mut blobs = Blobs::default();
    let message = bundle_referrer(
        &sigstore_bundle(&s.leaf(), &s.rekor, SUBJECT, now),
        &mut blobs,
    );
    let e = judge(&spec, Some(&s.root), None, &[(message, &blobs)]);
    assert_eq!(e.findings, [], "{:?}", e.signatures);

    // cosign 3: the image signature is a DSSE bundle of the sign predicate.
    let mut blobs = Blobs::default();
    let signed = bundle_referrer(
        &sigstore_dsse_bundle(
            &s.leaf(),
            &s.rekor,
            SUBJECT,
            COSIGN_SIGN_PREDICATE,
            json!({}),
            now,
        ),
        &mut blobs,
    );
    let e = judge(&spec, Some(&s.root), None, &[(signed, &blobs)]);
    assert_eq!(e.findings, [], "{:?}", e.signatures);
    assert_eq!(e.signatures[0].outcome, Outcome::Trusted);

    // A signed vulnerability attestation vouches for the report, not for the image.
    let mut blobs = Blobs::default();
    let attested = bundle_referrer(
        &sigstore_dsse_bundle(
            &s.leaf(),
            &s.rekor,
            SUBJECT,
            "https://cosign.sigstore.dev/attestation/vuln/v1",
            cosign_vuln_predicate(TRIVY, "2026-11-30T10:00:00Z"),
            now,
        ),
        &mut blobs,
    );
    let spec = PolicySpec {
        max_severity: Some(SeverityLimit::Critical),
        ..spec
    };
    let e = judge(&spec, Some(&s.root), None, &[(attested, &blobs)]);
    assert_eq!(e.reasons(), [Reason::Unsigned]);
    assert_eq!(e.vulnerabilities.unwrap().counts.critical, 2);
}

#[test]
fn a_notation_jws_passes_with_its_ca_and_subject_and_fails_without() {
    let signer = TestNotation::new();
    let envelope = signer.sign_jws(SUBJECT, "application/vnd.oci.image.manifest.v1+json", 1234);
    let mut blobs = Blobs::default();
    let layer = blobs.layer("application/jose+json", &envelope, json!({}));
    let manifest = referrer_manifest(
        "application/vnd.cncf.notary.signature",
        vec![layer],
        SUBJECT,
    );
    let store = NotationTrustStore::from_pem(&signer.ca_pem()).unwrap();
    let spec = |dn: &str| PolicySpec {
        identities: vec![IdentitySpec::X509 {
            x509_subject: regex::escape(dn),
        }],
        ..keyless_policy("unused")
    };

    let e = judge(
        &spec(NOTATION_LEAF_SUBJECT),
        None,
        Some(&store),
        &[(manifest.clone(), &blobs)],
    );
    assert_eq!(e.findings, [], "{:?}", e.signatures);
    assert_eq!(e.signatures[0].signer, NOTATION_LEAF_SUBJECT);

    let e = judge(
        &spec("CN=someone else"),
        None,
        Some(&store),
        &[(manifest.clone(), &blobs)],
    );
    assert_eq!(e.reasons(), [Reason::SignerNotTrusted]);

    let other_ca = NotationTrustStore::from_pem(&TestNotation::new().ca_pem()).unwrap();
    let e = judge(
        &spec(NOTATION_LEAF_SUBJECT),
        None,
        Some(&other_ca),
        &[(manifest, &blobs)],
    );
    // A chain that does not reach a trusted CA is invalid (the agreed semantics).
    assert_eq!(e.reasons(), [Reason::SignatureInvalid], "{:?}", e.findings);
    assert_eq!(e.verdict(Mode::Enforce), Some(Verdict::Fail));
}

#[test]
fn evidence_kept_as_json_judges_the_same() {
    let s = Sigstore::new();
    let mut blobs = Blobs::default();
    let manifest = keyless_sig_manifest(&s, SUBJECT, &mut blobs);
    let evidence = interpret(SUBJECT, &manifest, &blobs.0).evidence;
    let stored: Vec<Evidence> =
        serde_json::from_str(&serde_json::to_string(&evidence).unwrap()).unwrap();
    let policy = Policy::compile(&keyless_policy(r"ci@example\.com")).unwrap();
    let verifier = policy.verifier(Utc::now()).trust_root(&s.root);
    let e = evaluate(
        &policy,
        &verifier,
        SUBJECT,
        &stored,
        &[],
        Utc::now().date_naive(),
    );
    assert_eq!(e.findings, []);
}
