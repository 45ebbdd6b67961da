//! Cosign "simple signing" verification with a public key.
//!
//! A cosign signature manifest carries one layer per signature: the layer blob is the
//! simple-signing JSON payload, and the layer annotation [`SIGNATURE_ANNOTATION`] is the
//! base64 signature over exactly those bytes. A signature only vouches for the image whose
//! digest is named in `critical.image.docker-manifest-digest`, so a valid signature copied
//! onto another image must fail: [`verify`] checks both.
//!
//! Keyless (Fulcio certificate) signatures are verified in [`crate::keyless`]; this module
//! also reads the simple-signing payload for them ([`signed_digest`]).

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use spki::der::Decode as _;
use spki::{DecodePublicKey as _, ObjectIdentifier, SubjectPublicKeyInfoRef};

/// Layer annotation holding the base64 signature over the layer's payload.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// Layer annotation holding a PEM Fulcio leaf certificate (keyless signing).
pub const CERTIFICATE_ANNOTATION: &str = "dev.sigstore.cosign/certificate";
/// Layer annotation holding the PEM chain up to the Fulcio root (keyless signing).
pub const CHAIN_ANNOTATION: &str = "dev.sigstore.cosign/chain";
/// Layer annotation holding the Rekor transparency-log bundle.
pub const BUNDLE_ANNOTATION: &str = "dev.sigstore.cosign/bundle";
/// The `critical.type` every cosign simple-signing payload carries.
pub const PAYLOAD_TYPE: &str = "cosign container image signature";

/// Largest payload accepted; real ones are a few hundred bytes.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
/// Largest base64 signature accepted (an RSA-8192 signature is ~1.4 KiB of base64).
pub const MAX_SIGNATURE_CHARS: usize = 4096;
/// Largest PEM public key accepted.
pub const MAX_KEY_PEM_BYTES: usize = 16 * 1024;
/// RSA keys below this modulus size are refused.
pub const MIN_RSA_BITS: usize = 2048;

const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// Identifies a public key: `sha256:` + hex of its SubjectPublicKeyInfo DER.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyId(String);

impl KeyId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a PEM public key was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("public key PEM is {len} bytes, over the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("not a PEM `PUBLIC KEY` block: {0}")]
    Pem(String),
    #[error("unsupported key algorithm {0} (supported: ECDSA P-256/P-384, Ed25519, RSA)")]
    UnsupportedAlgorithm(String),
    #[error("invalid {algorithm} key: {detail}")]
    Invalid {
        algorithm: &'static str,
        detail: String,
    },
    #[error("RSA key of {bits} bits is below the {min}-bit minimum")]
    RsaTooSmall { bits: usize, min: usize },
}

#[derive(Clone)]
enum KeyKind {
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
    Rsa(rsa::RsaPublicKey),
}

/// A trusted verification key, parsed from a PEM `PUBLIC KEY` (SubjectPublicKeyInfo).
#[derive(Clone)]
pub struct PublicKey {
    id: KeyId,
    kind: KeyKind,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("id", &self.id)
            .field("algorithm", &self.algorithm())
            .finish()
    }
}

impl PublicKey {
    /// Parses a PEM `PUBLIC KEY` block holding an ECDSA P-256/P-384, Ed25519 or RSA key.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        if pem.len() > MAX_KEY_PEM_BYTES {
            return Err(KeyError::TooLarge {
                len: pem.len(),
                max: MAX_KEY_PEM_BYTES,
            });
        }
        let (label, doc) =
            spki::Document::from_pem(pem.trim()).map_err(|e| KeyError::Pem(e.to_string()))?;
        if label != "PUBLIC KEY" {
            return Err(KeyError::Pem(format!("label is `{label}`")));
        }
        let der = doc.as_bytes();
        let info =
            SubjectPublicKeyInfoRef::from_der(der).map_err(|e| KeyError::Pem(e.to_string()))?;
        let oid = info.algorithm.oid;
        let kind = if oid == OID_EC_PUBLIC_KEY {
            if let Ok(key) = p384::ecdsa::VerifyingKey::from_public_key_der(der) {
                KeyKind::P384(key)
            } else {
                let key = p256::ecdsa::VerifyingKey::from_public_key_der(der).map_err(|e| {
                    KeyError::Invalid {
                        algorithm: "ECDSA P-256/P-384",
                        detail: e.to_string(),
                    }
                })?;
                KeyKind::P256(key)
            }
        } else if oid == OID_ED25519 {
            let key = ed25519_dalek::VerifyingKey::from_public_key_der(der).map_err(|e| {
                KeyError::Invalid {
                    algorithm: "Ed25519",
                    detail: e.to_string(),
                }
            })?;
            KeyKind::Ed25519(key)
        } else if oid == OID_RSA {
            use rsa::traits::PublicKeyParts as _;
            let key =
                rsa::RsaPublicKey::from_public_key_der(der).map_err(|e| KeyError::Invalid {
                    algorithm: "RSA",
                    detail: e.to_string(),
                })?;
            let bits = key.n().bits();
            if bits < MIN_RSA_BITS {
                return Err(KeyError::RsaTooSmall {
                    bits,
                    min: MIN_RSA_BITS,
                });
            }
            KeyKind::Rsa(key)
        } else {
            return Err(KeyError::UnsupportedAlgorithm(oid.to_string()));
        };
        let id = KeyId(format!("sha256:{}", hex(&Sha256::digest(der))));
        Ok(Self { id, kind })
    }

    pub fn id(&self) -> &KeyId {
        &self.id
    }

    pub fn algorithm(&self) -> &'static str {
        match self.kind {
            KeyKind::P256(_) => "ecdsa-p256-sha256",
            KeyKind::P384(_) => "ecdsa-p384-sha384",
            KeyKind::Ed25519(_) => "ed25519",
            KeyKind::Rsa(_) => "rsa-sha256",
        }
    }

    /// The same key for the verification code keyless and bundles share.
    pub(crate) fn verify_key(&self) -> crate::x509::VerifyKey {
        use crate::x509::VerifyKey;
        match &self.kind {
            KeyKind::P256(k) => VerifyKey::P256(*k),
            KeyKind::P384(k) => VerifyKey::P384(*k),
            KeyKind::Ed25519(k) => VerifyKey::Ed25519(*k),
            KeyKind::Rsa(k) => VerifyKey::Rsa(k.clone()),
        }
    }

    /// True when `signature` is a valid signature by this key over `payload`.
    pub(crate) fn verifies(&self, payload: &[u8], signature: &[u8]) -> bool {
        use p256::ecdsa::signature::Verifier as _;
        match &self.kind {
            KeyKind::P256(key) => {
                let sig = p256::ecdsa::Signature::from_der(signature)
                    .or_else(|_| p256::ecdsa::Signature::from_slice(signature));
                sig.is_ok_and(|sig| key.verify(payload, &sig).is_ok())
            }
            KeyKind::P384(key) => {
                let sig = p384::ecdsa::Signature::from_der(signature)
                    .or_else(|_| p384::ecdsa::Signature::from_slice(signature));
                sig.is_ok_and(|sig| key.verify(payload, &sig).is_ok())
            }
            KeyKind::Ed25519(key) => ed25519_dalek::Signature::from_slice(signature)
                .is_ok_and(|sig| key.verify_strict(payload, &sig).is_ok()),
            KeyKind::Rsa(key) => {
                let pkcs1 = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key.clone());
                let pss = rsa::pss::VerifyingKey::<Sha256>::new(key.clone());
                rsa::pkcs1v15::Signature::try_from(signature)
                    .is_ok_and(|sig| pkcs1.verify(payload, &sig).is_ok())
                    || rsa::pss::Signature::try_from(signature)
                        .is_ok_and(|sig| pss.verify(payload, &sig).is_ok())
            }
        }
    }
}

/// Who vouched for an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signer {
    /// A configured public key.
    Key(KeyId),
}

/// Why a signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FailureReason {
    #[error("no trusted key configured")]
    NoKeys,
    #[error("signature layer has no `{SIGNATURE_ANNOTATION}` annotation")]
    MissingSignature,
    #[error("payload is {len} bytes, over the {max}-byte limit")]
    PayloadTooLarge { len: usize, max: usize },
    #[error("signature is {len} characters, over the {max} limit")]
    SignatureTooLarge { len: usize, max: usize },
    #[error("signature is not valid base64")]
    SignatureEncoding,
    #[error("signature does not verify with any trusted key")]
    BadSignature,
    /// A keyless (Fulcio certificate) signature no configured key verifies: it needs
    /// [`crate::keyless::verify_cosign`] and a trust root.
    #[error(
        "keyless (certificate) signature: no trusted key verifies it, it needs a keyless trust root"
    )]
    KeylessNotSupported,
    #[error("payload is not a simple-signing document: {0}")]
    MalformedPayload(String),
    #[error("payload type is `{0}`, not `{PAYLOAD_TYPE}`")]
    WrongPayloadType(String),
    #[error("signature is for {signed}, not for image {image}")]
    DigestMismatch { image: String, signed: String },
}

/// Outcome of verifying one signature. A refusal is a value: the input is untrusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Verified {
        signer: Signer,
        /// `critical.identity.docker-reference` as signed (informational, not checked).
        docker_reference: String,
    },
    Failed {
        reason: FailureReason,
    },
}

impl Verdict {
    pub fn is_verified(&self) -> bool {
        matches!(self, Verdict::Verified { .. })
    }
}

/// The simple-signing payload's fields this library relies on.
#[derive(Debug, Deserialize)]
struct SimpleSigning {
    critical: Critical,
}

#[derive(Debug, Deserialize)]
struct Critical {
    identity: Identity,
    image: ImageRef,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Debug, Deserialize)]
struct Identity {
    #[serde(rename = "docker-reference", default)]
    docker_reference: String,
}

#[derive(Debug, Deserialize)]
struct ImageRef {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

/// Verifies a cosign signature (`signature_b64`, the layer annotation's value) over
/// `payload` (the layer blob) with any of `keys`, and that it names `image_digest`
/// (`sha256:<hex>`, the digest of the image manifest being checked).
pub fn verify(
    keys: &[PublicKey],
    payload: &[u8],
    signature_b64: &str,
    image_digest: &str,
) -> Verdict {
    match verify_inner(keys, payload, signature_b64, image_digest) {
        Ok(verdict) => verdict,
        Err(reason) => Verdict::Failed { reason },
    }
}

/// [`verify`] taking the signature from a signature layer's annotations.
pub fn verify_layer(
    keys: &[PublicKey],
    annotations: &BTreeMap<String, String>,
    payload: &[u8],
    image_digest: &str,
) -> Verdict {
    let Some(sig) = annotations.get(SIGNATURE_ANNOTATION) else {
        return Verdict::Failed {
            reason: FailureReason::MissingSignature,
        };
    };
    match verify(keys, payload, sig, image_digest) {
        Verdict::Failed {
            reason: FailureReason::BadSignature,
        } if annotations.contains_key(CERTIFICATE_ANNOTATION) => Verdict::Failed {
            reason: FailureReason::KeylessNotSupported,
        },
        verdict => verdict,
    }
}

fn verify_inner(
    keys: &[PublicKey],
    payload: &[u8],
    signature_b64: &str,
    image_digest: &str,
) -> Result<Verdict, FailureReason> {
    if keys.is_empty() {
        return Err(FailureReason::NoKeys);
    }
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(FailureReason::PayloadTooLarge {
            len: payload.len(),
            max: MAX_PAYLOAD_BYTES,
        });
    }
    let signature_b64 = signature_b64.trim();
    if signature_b64.len() > MAX_SIGNATURE_CHARS {
        return Err(FailureReason::SignatureTooLarge {
            len: signature_b64.len(),
            max: MAX_SIGNATURE_CHARS,
        });
    }
    let signature = STANDARD
        .decode(signature_b64)
        .map_err(|_| FailureReason::SignatureEncoding)?;
    // Authenticate before interpreting: the payload's content means nothing unsigned.
    let key = keys
        .iter()
        .find(|k| k.verifies(payload, &signature))
        .ok_or(FailureReason::BadSignature)?;
    let doc: SimpleSigning = serde_json::from_slice(payload)
        .map_err(|e| FailureReason::MalformedPayload(e.to_string()))?;
    if doc.critical.kind != PAYLOAD_TYPE {
        return Err(FailureReason::WrongPayloadType(doc.critical.kind));
    }
    let signed = doc.critical.image.docker_manifest_digest;
    if !signed.eq_ignore_ascii_case(image_digest) {
        return Err(FailureReason::DigestMismatch {
            image: image_digest.to_owned(),
            signed,
        });
    }
    Ok(Verdict::Verified {
        signer: Signer::Key(key.id.clone()),
        docker_reference: doc.critical.identity.docker_reference,
    })
}

/// The image digest a simple-signing payload names, once its signature was verified.
pub fn signed_digest(payload: &[u8]) -> Result<(String, String), FailureReason> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(FailureReason::PayloadTooLarge {
            len: payload.len(),
            max: MAX_PAYLOAD_BYTES,
        });
    }
    let doc: SimpleSigning = serde_json::from_slice(payload)
        .map_err(|e| FailureReason::MalformedPayload(e.to_string()))?;
    if doc.critical.kind != PAYLOAD_TYPE {
        return Err(FailureReason::WrongPayloadType(doc.critical.kind));
    }
    Ok((
        doc.critical.image.docker_manifest_digest,
        doc.critical.identity.docker_reference,
    ))
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::pkcs8::{EncodePublicKey as _, LineEnding};
    use rand_core::OsRng;

    const DIGEST: &str = "sha256:4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945";
    const OTHER: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000001";

    fn payload(digest: &str) -> Vec<u8> {
        format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"registry.example/team/app"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":{{"creator":"test"}}}}"#
        )
        .into_bytes()
    }

    fn p256_key() -> (p256::ecdsa::SigningKey, PublicKey) {
        let sk = p256::ecdsa::SigningKey::random(&mut OsRng);
        let pem = sk
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        (sk, PublicKey::from_pem(&pem).unwrap())
    }

    fn sign_p256(sk: &p256::ecdsa::SigningKey, msg: &[u8]) -> String {
        use p256::ecdsa::signature::Signer as _;
        let sig: p256::ecdsa::Signature = sk.sign(msg);
        STANDARD.encode(sig.to_der().as_bytes())
    }

    fn failed(v: Verdict) -> FailureReason {
        match v {
            Verdict::Failed { reason } => reason,
            other => panic!("expected failure, got {other:?}"),
        }
    }

    #[test]
    fn p256_der_signature_over_matching_digest_verifies() {
        let (sk, key) = p256_key();
        let body = payload(DIGEST);
        let v = verify(
            std::slice::from_ref(&key),
            &body,
            &sign_p256(&sk, &body),
            DIGEST,
        );
        assert_eq!(
            v,
            Verdict::Verified {
                signer: Signer::Key(key.id().clone()),
                docker_reference: "registry.example/team/app".into(),
            }
        );
        assert!(key.id().as_str().starts_with("sha256:"));
        assert_eq!(key.algorithm(), "ecdsa-p256-sha256");
    }

    #[test]
    fn p256_fixed_size_signature_verifies() {
        use p256::ecdsa::signature::Signer as _;
        let (sk, key) = p256_key();
        let body = payload(DIGEST);
        let sig: p256::ecdsa::Signature = sk.sign(&body);
        let b64 = STANDARD.encode(sig.to_bytes());
        assert!(verify(&[key], &body, &b64, DIGEST).is_verified());
    }

    #[test]
    fn tampered_payload_fails_as_bad_signature() {
        let (sk, key) = p256_key();
        let body = payload(DIGEST);
        let sig = sign_p256(&sk, &body);
        let tampered = payload(OTHER);
        assert_eq!(
            failed(verify(&[key], &tampered, &sig, OTHER)),
            FailureReason::BadSignature
        );
    }

    #[test]
    fn wrong_key_fails_as_bad_signature() {
        let (sk, _) = p256_key();
        let (_, other_key) = p256_key();
        let body = payload(DIGEST);
        assert_eq!(
            failed(verify(&[other_key], &body, &sign_p256(&sk, &body), DIGEST)),
            FailureReason::BadSignature
        );
    }

    #[test]
    fn signature_copied_from_another_image_fails_as_digest_mismatch() {
        let (sk, key) = p256_key();
        let body = payload(OTHER);
        assert_eq!(
            failed(verify(&[key], &body, &sign_p256(&sk, &body), DIGEST)),
            FailureReason::DigestMismatch {
                image: DIGEST.into(),
                signed: OTHER.into()
            }
        );
    }

    #[test]
    fn any_of_several_keys_may_sign() {
        let (_, k1) = p256_key();
        let (sk, k2) = p256_key();
        let body = payload(DIGEST);
        match verify(&[k1, k2.clone()], &body, &sign_p256(&sk, &body), DIGEST) {
            Verdict::Verified { signer, .. } => assert_eq!(signer, Signer::Key(k2.id().clone())),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn signed_but_not_simple_signing_is_refused() {
        let (sk, key) = p256_key();
        let body = br#"{"critical":{"identity":{"docker-reference":"x"},"image":{"docker-manifest-digest":"sha256:00"},"type":"something else"}}"#;
        assert_eq!(
            failed(verify(
                std::slice::from_ref(&key),
                body,
                &sign_p256(&sk, body),
                DIGEST
            )),
            FailureReason::WrongPayloadType("something else".into())
        );
        let junk = b"not json";
        assert!(matches!(
            failed(verify(&[key], junk, &sign_p256(&sk, junk), DIGEST)),
            FailureReason::MalformedPayload(_)
        ));
    }

    #[test]
    fn encoding_and_size_limits_are_reasons() {
        let (_, key) = p256_key();
        let body = payload(DIGEST);
        assert_eq!(
            failed(verify(std::slice::from_ref(&key), &body, "!!!", DIGEST)),
            FailureReason::SignatureEncoding
        );
        assert!(matches!(
            failed(verify(
                std::slice::from_ref(&key),
                &body,
                &"A".repeat(MAX_SIGNATURE_CHARS + 4),
                DIGEST
            )),
            FailureReason::SignatureTooLarge { .. }
        ));
        let big = vec![b' '; MAX_PAYLOAD_BYTES + 1];
        assert!(matches!(
            failed(verify(&[key], &big, "AAAA", DIGEST)),
            FailureReason::PayloadTooLarge { .. }
        ));
        assert_eq!(
            failed(verify(&[], &body, "AAAA", DIGEST)),
            FailureReason::NoKeys
        );
    }

    #[test]
    fn verify_layer_reads_the_signature_annotation() {
        let (sk, key) = p256_key();
        let body = payload(DIGEST);
        let mut ann = BTreeMap::new();
        assert_eq!(
            failed(verify_layer(
                std::slice::from_ref(&key),
                &ann,
                &body,
                DIGEST
            )),
            FailureReason::MissingSignature
        );
        ann.insert(SIGNATURE_ANNOTATION.to_owned(), sign_p256(&sk, &body));
        assert!(verify_layer(&[key], &ann, &body, DIGEST).is_verified());
    }

    #[test]
    fn keyless_signature_no_key_verifies_says_so() {
        let (sk, _) = p256_key();
        let (_, configured) = p256_key();
        let body = payload(DIGEST);
        let mut ann = BTreeMap::new();
        ann.insert(SIGNATURE_ANNOTATION.to_owned(), sign_p256(&sk, &body));
        assert_eq!(
            failed(verify_layer(
                std::slice::from_ref(&configured),
                &ann,
                &body,
                DIGEST
            )),
            FailureReason::BadSignature
        );
        ann.insert(
            CERTIFICATE_ANNOTATION.to_owned(),
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".to_owned(),
        );
        assert_eq!(
            failed(verify_layer(&[configured], &ann, &body, DIGEST)),
            FailureReason::KeylessNotSupported
        );
    }

    #[test]
    fn p384_signature_verifies_with_sha384() {
        use p384::ecdsa::signature::Signer as _;
        let sk = p384::ecdsa::SigningKey::random(&mut OsRng);
        let pem = sk
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let key = PublicKey::from_pem(&pem).unwrap();
        assert_eq!(key.algorithm(), "ecdsa-p384-sha384");
        let body = payload(DIGEST);
        let sig: p384::ecdsa::Signature = sk.sign(&body);
        let b64 = STANDARD.encode(sig.to_der().as_bytes());
        assert!(verify(std::slice::from_ref(&key), &body, &b64, DIGEST).is_verified());
        assert_eq!(
            failed(verify(&[key], &payload(OTHER), &b64, OTHER)),
            FailureReason::BadSignature
        );
    }

    #[test]
    fn ed25519_signature_verifies_and_wrong_digest_fails() {
        use ed25519_dalek::Signer as _;
        let sk = ed25519_dalek::SigningKey::generate(&mut OsRng);
        let pem = sk
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let key = PublicKey::from_pem(&pem).unwrap();
        assert_eq!(key.algorithm(), "ed25519");
        let body = payload(DIGEST);
        let sig = STANDARD.encode(sk.sign(&body).to_bytes());
        assert!(verify(std::slice::from_ref(&key), &body, &sig, DIGEST).is_verified());
        assert!(matches!(
            failed(verify(&[key], &body, &sig, OTHER)),
            FailureReason::DigestMismatch { .. }
        ));
    }

    #[test]
    fn rsa_pkcs1v15_and_pss_signatures_verify() {
        use rsa::signature::{RandomizedSigner as _, SignatureEncoding as _, Signer as _};
        let sk = rsa::RsaPrivateKey::new(&mut OsRng, 2048).unwrap();
        let pem = sk
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let key = PublicKey::from_pem(&pem).unwrap();
        assert_eq!(key.algorithm(), "rsa-sha256");
        let body = payload(DIGEST);
        let pkcs1 = rsa::pkcs1v15::SigningKey::<Sha256>::new(sk.clone()).sign(&body);
        let pss = rsa::pss::SigningKey::<Sha256>::new(sk).sign_with_rng(&mut OsRng, &body);
        for sig in [pkcs1.to_vec(), pss.to_vec()] {
            let b64 = STANDARD.encode(sig);
            assert!(verify(std::slice::from_ref(&key), &body, &b64, DIGEST).is_verified());
            assert_eq!(
                failed(verify(
                    std::slice::from_ref(&key),
                    &payload(OTHER),
                    &b64,
                    OTHER
                )),
                FailureReason::BadSignature
            );
        }
    }

    #[test]
    fn bad_keys_are_refused_with_reasons() {
        assert!(matches!(
            PublicKey::from_pem("hello"),
            Err(KeyError::Pem(_))
        ));
        let (sk, _) = p256_key();
        let private = p256::pkcs8::EncodePrivateKey::to_pkcs8_pem(&sk, LineEnding::LF).unwrap();
        assert!(matches!(
            PublicKey::from_pem(&private),
            Err(KeyError::Pem(_))
        ));
        assert!(matches!(
            PublicKey::from_pem(&"A".repeat(MAX_KEY_PEM_BYTES + 1)),
            Err(KeyError::TooLarge { .. })
        ));
        let small = rsa::RsaPrivateKey::new(&mut OsRng, 1024).unwrap();
        let pem = small
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        assert_eq!(
            PublicKey::from_pem(&pem).unwrap_err(),
            KeyError::RsaTooSmall {
                bits: 1024,
                min: MIN_RSA_BITS
            }
        );
    }
}
