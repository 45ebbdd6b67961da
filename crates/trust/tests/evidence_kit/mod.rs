//! Referrer manifests and blobs laid out exactly as cosign, Notation, oras and
//! trivy-plugin-referrer push them, signed with real test keys.
#![allow(dead_code)]

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use p256::ecdsa::SigningKey;
use p256::ecdsa::signature::Signer as _;
use p256::pkcs8::{EncodePublicKey as _, LineEnding};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

pub const SUBJECT: &str = "sha256:4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945";
pub const OTHER: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000001";
pub const EMPTY_CONFIG: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

pub const TRIVY: &str = include_str!("../fixtures/trivy-report.json");
pub const SPDX: &str = include_str!("../fixtures/spdx-2.3.json");
pub const CYCLONEDX: &str = include_str!("../fixtures/cyclonedx-1.5.json");

pub fn digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    format!(
        "sha256:{}",
        hash.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

pub struct Key(SigningKey);

impl Key {
    pub fn generate() -> Self {
        Self(SigningKey::random(&mut rand_core::OsRng))
    }

    pub fn pem(&self) -> String {
        self.0
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("PEM")
    }

    /// base64 of an ASN.1 DER ECDSA-SHA256 signature, as cosign writes it.
    pub fn sign(&self, msg: &[u8]) -> String {
        let sig: p256::ecdsa::Signature = self.0.sign(msg);
        STANDARD.encode(sig.to_der().as_bytes())
    }
}

/// The simple-signing payload as `cosign sign` writes it.
pub fn cosign_payload(digest: &str) -> Vec<u8> {
    format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"registry.example/team/app"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
    )
    .into_bytes()
}

/// An in-toto Statement v1 about `subject`.
pub fn statement(predicate_type: &str, subject: &str, predicate: Value) -> Vec<u8> {
    let hex = subject.trim_start_matches("sha256:");
    json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "registry.example/team/app", "digest": {"sha256": hex}}],
        "predicateType": predicate_type,
        "predicate": predicate,
    })
    .to_string()
    .into_bytes()
}

/// A DSSE envelope (`cosign attest`), signed by `key` over the PAE.
pub fn dsse(payload: &[u8], key: &Key) -> Vec<u8> {
    let pt = "application/vnd.in-toto+json";
    let mut pae = format!("DSSEv1 {} {pt} {} ", pt.len(), payload.len()).into_bytes();
    pae.extend_from_slice(payload);
    json!({
        "payloadType": pt,
        "payload": STANDARD.encode(payload),
        "signatures": [{"keyid": "", "sig": key.sign(&pae)}],
    })
    .to_string()
    .into_bytes()
}

/// The cosign vuln predicate `trivy image -f cosign-vuln` writes around a Trivy report.
pub fn cosign_vuln_predicate(report: &str, started: &str) -> Value {
    let result: Value = serde_json::from_str(report).expect("report JSON");
    json!({
        "invocation": {"parameters": null, "uri": "", "event_id": "", "builder.id": ""},
        "scanner": {
            "uri": "pkg:github/aquasecurity/trivy@v0.57.1",
            "version": "0.57.1",
            "db": {"uri": "", "version": ""},
            "result": result,
        },
        "metadata": {"scanStartedOn": started, "scanFinishedOn": started},
    })
}

/// Blobs by digest, as a scanner hands them to `interpret`.
#[derive(Default)]
pub struct Blobs(pub BTreeMap<String, Vec<u8>>);

impl Blobs {
    /// Stores `bytes` and returns its descriptor.
    pub fn layer(&mut self, media_type: &str, bytes: &[u8], annotations: Value) -> Value {
        let d = digest(bytes);
        self.0.insert(d.clone(), bytes.to_vec());
        let mut desc = json!({"mediaType": media_type, "size": bytes.len(), "digest": d});
        if annotations.as_object().is_some_and(|a| !a.is_empty()) {
            desc["annotations"] = annotations;
        }
        desc
    }
}

/// An OCI image manifest as cosign's legacy `.sig` / `.att` / `.sbom` tags hold it.
pub fn tag_manifest(layers: Vec<Value>) -> Vec<u8> {
    json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "size": 233,
            "digest": "sha256:83bd5fb5b39f65f28e50a86d48fa79c07880befc292d92eebdc18531054b070c",
        },
        "layers": layers,
    })
    .to_string()
    .into_bytes()
}

/// An OCI 1.1 referrer (artifactType, empty config, subject), as `oras attach`, cosign's
/// OCI 1.1 mode and Notation push them.
pub fn referrer_manifest(artifact_type: &str, layers: Vec<Value>, subject: &str) -> Vec<u8> {
    json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": artifact_type,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2, "digest": EMPTY_CONFIG},
        "layers": layers,
        "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1234, "digest": subject},
        "annotations": {"org.opencontainers.image.created": "2026-11-30T10:00:00Z"},
    })
    .to_string()
    .into_bytes()
}
