//! Signing material made in Rust for tests: cosign key-based signatures, DSSE envelopes,
//! a Fulcio-like CA, a Rekor-like log key, Sigstore bundles and Notation JWS envelopes.
//!
//! The formats are the ones cosign and Notation write, so the verifier in `imagelib-trust`
//! is tested against what a registry really holds — without a network or the real tools.
//! Test-only code: it panics on its own bugs (never on registry data, which it doesn't read).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use p256::ecdsa::signature::Signer as _;
use p256::pkcs8::{EncodePublicKey as _, LineEnding};
use rand_core::OsRng;
use sha2::{Digest as _, Sha256};

/// An ECDSA P-256 signing key, like `cosign generate-key-pair` makes.
#[derive(Clone)]
pub struct TestKey {
    key: p256::ecdsa::SigningKey,
}

impl std::fmt::Debug for TestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestKey").finish_non_exhaustive()
    }
}

impl TestKey {
    pub fn generate() -> Self {
        Self {
            key: p256::ecdsa::SigningKey::random(&mut OsRng),
        }
    }

    /// The PEM `PUBLIC KEY` (SubjectPublicKeyInfo), as `cosign.pub` holds it.
    pub fn public_pem(&self) -> String {
        self.key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("P-256 public key encodes")
    }

    /// The SubjectPublicKeyInfo DER.
    pub fn public_der(&self) -> Vec<u8> {
        self.key
            .verifying_key()
            .to_public_key_der()
            .expect("P-256 public key encodes")
            .into_vec()
    }

    /// `sha256:` + hex of the SubjectPublicKeyInfo DER: the key id imagelib reports.
    pub fn key_id(&self) -> String {
        format!("sha256:{}", hex(&Sha256::digest(self.public_der())))
    }

    /// ECDSA-SHA256 signature over `msg`, ASN.1 DER, base64 — cosign's
    /// `dev.cosignproject.cosign/signature` annotation value.
    pub fn sign(&self, msg: &[u8]) -> String {
        STANDARD.encode(self.sign_der(msg))
    }

    /// ECDSA-SHA256 signature over `msg`, ASN.1 DER bytes.
    pub fn sign_der(&self, msg: &[u8]) -> Vec<u8> {
        let sig: p256::ecdsa::Signature = self.key.sign(msg);
        sig.to_der().as_bytes().to_vec()
    }

    pub fn signing_key(&self) -> &p256::ecdsa::SigningKey {
        &self.key
    }
}

/// The simple-signing payload exactly as `cosign sign` writes it (Go's `json.Marshal` of
/// `payload.SimpleContainerImage` with no annotations: keys in struct order, `optional`
/// null, no trailing newline).
pub fn cosign_payload(docker_reference: &str, digest: &str) -> Vec<u8> {
    format!(
        r#"{{"critical":{{"identity":{{"docker-reference":{}}},"image":{{"docker-manifest-digest":{}}},"type":"cosign container image signature"}},"optional":null}}"#,
        json_str(docker_reference),
        json_str(digest)
    )
    .into_bytes()
}

/// DSSE pre-authentication encoding: `DSSEv1 <len> <type> <len> <body>`.
pub fn dsse_pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// A DSSE envelope signed by `key`, as cosign attaches attestations
/// (`{"payloadType","payload","signatures":[{"keyid","sig"}]}`).
pub fn dsse_envelope(payload_type: &str, payload: &[u8], key: &TestKey) -> Vec<u8> {
    let sig = key.sign(&dsse_pae(payload_type, payload));
    serde_json::json!({
        "payloadType": payload_type,
        "payload": STANDARD.encode(payload),
        "signatures": [{"keyid": "", "sig": sig}],
    })
    .to_string()
    .into_bytes()
}

fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosign_payload_is_goes_marshal_shape() {
        let p = cosign_payload("reg.example/app", "sha256:ab");
        assert_eq!(
            String::from_utf8(p).unwrap(),
            r#"{"critical":{"identity":{"docker-reference":"reg.example/app"},"image":{"docker-manifest-digest":"sha256:ab"},"type":"cosign container image signature"},"optional":null}"#
        );
    }

    #[test]
    fn signature_verifies_with_the_public_key() {
        use p256::ecdsa::signature::Verifier as _;
        use p256::pkcs8::DecodePublicKey as _;
        let k = TestKey::generate();
        let vk = p256::ecdsa::VerifyingKey::from_public_key_pem(&k.public_pem()).unwrap();
        let der = STANDARD.decode(k.sign(b"hello")).unwrap();
        let sig = p256::ecdsa::Signature::from_der(&der).unwrap();
        assert!(vk.verify(b"hello", &sig).is_ok());
        assert!(vk.verify(b"hellO", &sig).is_err());
        assert!(k.key_id().starts_with("sha256:"));
    }

    #[test]
    fn dsse_envelope_signs_the_pae() {
        assert_eq!(dsse_pae("t", b"ab"), b"DSSEv1 1 t 2 ab");
        let k = TestKey::generate();
        let env: serde_json::Value =
            serde_json::from_slice(&dsse_envelope("application/vnd.in-toto+json", b"{}", &k))
                .unwrap();
        assert_eq!(env["payload"], "e30=");
        assert!(env["signatures"][0]["sig"].as_str().is_some());
    }
}
