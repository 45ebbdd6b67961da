//! The X.509 work keyless cosign and Notation share: parsing certificates from PEM/DER
//! within bounds, verifying a signature with a certificate's key, and building a chain from
//! a leaf to a configured root at a given time.
//!
//! Deliberately small: path building walks issuer names and checks each signature with the
//! issuer's key (ECDSA P-256/P-384 with SHA-256/384/512, RSA PKCS#1 v1.5, Ed25519), the
//! validity window of every certificate at the signing time, and that issuers are CAs. No
//! revocation (air-gapped users have no CRL/OCSP), no name constraints or policies.

use chrono::{DateTime, TimeZone as _, Utc};
use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
use sha2::{Digest as _, Sha256, Sha384, Sha512};
use spki::der::{Decode as _, Encode as _};
use spki::{DecodePublicKey as _, ObjectIdentifier};
use x509_cert::Certificate;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAltName};

/// Most certificates accepted in one chain or trust store.
pub const MAX_CERTS: usize = 32;
/// Largest DER certificate accepted.
pub const MAX_CERT_DER_BYTES: usize = 16 * 1024;
/// Largest PEM text (chain or trust store) accepted.
pub const MAX_PEM_BYTES: usize = 256 * 1024;
/// Longest issuer path walked from a leaf.
const MAX_DEPTH: usize = 6;

pub(crate) const OID_CODE_SIGNING: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.3");
const OID_EKU: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
/// Fulcio's otherName SAN for usernames (identities that are neither email nor URI).
const OID_FULCIO_USERNAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.7");
const OID_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");
const OID_SAN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");
const OID_BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
const OID_ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const OID_ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const OID_ECDSA_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.4");
const OID_RSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const OID_RSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
const OID_RSA_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// Why certificate material was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("{what} is {len} bytes, over the {max}-byte limit")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("more than {MAX_CERTS} certificates")]
    TooMany,
    #[error("no certificate found")]
    Empty,
    #[error("malformed PEM: {0}")]
    Pem(String),
    #[error("malformed certificate: {0}")]
    Der(String),
    #[error("unsupported public key: {0}")]
    UnsupportedKey(String),
}

/// A parsed certificate and its DER.
#[derive(Debug, Clone)]
pub struct Cert {
    pub(crate) der: Vec<u8>,
    pub(crate) cert: Certificate,
}

impl Cert {
    pub fn from_der(der: &[u8]) -> Result<Self, CertError> {
        if der.len() > MAX_CERT_DER_BYTES {
            return Err(CertError::TooLarge {
                what: "certificate",
                len: der.len(),
                max: MAX_CERT_DER_BYTES,
            });
        }
        let cert = Certificate::from_der(der).map_err(|e| CertError::Der(e.to_string()))?;
        Ok(Self {
            der: der.to_vec(),
            cert,
        })
    }

    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The subject DN as an RFC 4514 string (`CN=…,O=…,C=…`).
    pub fn subject(&self) -> String {
        self.cert.tbs_certificate.subject.to_string()
    }

    pub(crate) fn spki_der(&self) -> Result<Vec<u8>, CertError> {
        self.cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| CertError::Der(e.to_string()))
    }

    pub(crate) fn key(&self) -> Result<VerifyKey, CertError> {
        VerifyKey::from_spki_der(&self.spki_der()?)
    }

    pub fn not_before(&self) -> DateTime<Utc> {
        to_chrono(self.cert.tbs_certificate.validity.not_before)
    }

    pub fn not_after(&self) -> DateTime<Utc> {
        to_chrono(self.cert.tbs_certificate.validity.not_after)
    }

    pub(crate) fn valid_at(&self, at: DateTime<Utc>) -> bool {
        self.not_before() <= at && at <= self.not_after()
    }

    /// The raw `extnValue` of extension `oid`, if present.
    pub(crate) fn extension(&self, oid: ObjectIdentifier) -> Option<&[u8]> {
        self.cert
            .tbs_certificate
            .extensions
            .as_ref()?
            .iter()
            .find(|e| e.extn_id == oid)
            .map(|e| e.extn_value.as_bytes())
    }

    /// The extended key usages; `None` when the extension is absent.
    pub(crate) fn extended_key_usage(&self) -> Option<Vec<ObjectIdentifier>> {
        let raw = self.extension(OID_EKU)?;
        Some(
            ExtendedKeyUsage::from_der(raw)
                .map(|e| e.0)
                .unwrap_or_default(),
        )
    }

    pub(crate) fn has_code_signing(&self) -> bool {
        self.extended_key_usage()
            .is_some_and(|ekus| ekus.contains(&OID_CODE_SIGNING))
    }

    /// Notation's code-signing leaf rule: the extended key usage is optional, but when
    /// present it lists codeSigning and none of any/serverAuth/emailProtection/
    /// timeStamping; a key usage, when present, allows digitalSignature.
    pub(crate) fn is_notation_code_signer(&self) -> bool {
        const FORBIDDEN: [ObjectIdentifier; 4] = [
            ObjectIdentifier::new_unwrap("2.5.29.37.0"),
            ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.1"),
            ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.4"),
            ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.8"),
        ];
        let eku_ok = self.extended_key_usage().is_none_or(|ekus| {
            ekus.contains(&OID_CODE_SIGNING) && !ekus.iter().any(|e| FORBIDDEN.contains(e))
        });
        let ku_ok = self
            .extension(OID_KEY_USAGE)
            .is_none_or(|raw| KeyUsage::from_der(raw).is_ok_and(|ku| ku.digital_signature()));
        eku_ok && ku_ok
    }

    fn is_ca(&self) -> bool {
        self.extension(OID_BASIC_CONSTRAINTS)
            .and_then(|raw| BasicConstraints::from_der(raw).ok())
            .is_some_and(|bc| bc.ca)
    }

    /// Email, URI and Fulcio username (otherName `1.3.6.1.4.1.57264.1.7`) subject
    /// alternative names, in certificate order.
    pub(crate) fn san_values(&self) -> Vec<String> {
        let Some(raw) = self.extension(OID_SAN) else {
            return Vec::new();
        };
        let Ok(san) = SubjectAltName::from_der(raw) else {
            return Vec::new();
        };
        san.0
            .iter()
            .filter_map(|name| match name {
                GeneralName::Rfc822Name(s) => Some(s.to_string()),
                GeneralName::UniformResourceIdentifier(s) => Some(s.to_string()),
                GeneralName::OtherName(other) if other.type_id == OID_FULCIO_USERNAME => other
                    .value
                    .decode_as::<spki::der::asn1::Utf8StringRef<'_>>()
                    .ok()
                    .map(|u| u.as_str().to_owned()),
                _ => None,
            })
            .collect()
    }

    /// True when `issuer`'s key verifies this certificate's signature.
    fn signed_by(&self, issuer: &Cert) -> bool {
        if self.cert.tbs_certificate.issuer != issuer.cert.tbs_certificate.subject {
            return false;
        }
        let Ok(key) = issuer.key() else {
            return false;
        };
        let Some(scheme) = cert_scheme(&self.cert.signature_algorithm.oid) else {
            return false;
        };
        let Ok(tbs) = self.cert.tbs_certificate.to_der() else {
            return false;
        };
        let Some(sig) = self.cert.signature.as_bytes() else {
            return false;
        };
        key.verify(scheme, &tbs, sig)
    }
}

fn to_chrono(t: x509_cert::time::Time) -> DateTime<Utc> {
    let secs = i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX);
    Utc.timestamp_opt(secs, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Parses every `CERTIFICATE` block of a PEM text (other blocks are refused).
pub fn certs_from_pem(pem: &str) -> Result<Vec<Cert>, CertError> {
    if pem.len() > MAX_PEM_BYTES {
        return Err(CertError::TooLarge {
            what: "PEM text",
            len: pem.len(),
            max: MAX_PEM_BYTES,
        });
    }
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find(BEGIN) {
        let after = &rest[start..];
        let end = after
            .find(END)
            .ok_or_else(|| CertError::Pem("unterminated CERTIFICATE block".into()))?;
        let block = &after[..end + END.len()];
        let (label, der) = spki::der::pem::decode_vec(block.as_bytes())
            .map_err(|e| CertError::Pem(e.to_string()))?;
        if label != "CERTIFICATE" {
            return Err(CertError::Pem(format!("label is `{label}`")));
        }
        if out.len() == MAX_CERTS {
            return Err(CertError::TooMany);
        }
        out.push(Cert::from_der(&der)?);
        rest = &after[end + END.len()..];
    }
    if out.is_empty() {
        return Err(CertError::Empty);
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn digest(self, msg: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => Sha256::digest(msg).to_vec(),
            Hash::Sha384 => Sha384::digest(msg).to_vec(),
            Hash::Sha512 => Sha512::digest(msg).to_vec(),
        }
    }
}

/// How a signature is computed and encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SigScheme {
    /// ECDSA, signature ASN.1 DER (X.509, cosign, Rekor).
    EcdsaDer(Hash),
    /// ECDSA, signature fixed-size `r || s` (JWS).
    EcdsaFixed(Hash),
    RsaPkcs1(Hash),
    RsaPss(Hash),
    Ed25519,
}

fn cert_scheme(oid: &ObjectIdentifier) -> Option<SigScheme> {
    Some(match *oid {
        OID_ECDSA_SHA256 => SigScheme::EcdsaDer(Hash::Sha256),
        OID_ECDSA_SHA384 => SigScheme::EcdsaDer(Hash::Sha384),
        OID_ECDSA_SHA512 => SigScheme::EcdsaDer(Hash::Sha512),
        OID_RSA_SHA256 => SigScheme::RsaPkcs1(Hash::Sha256),
        OID_RSA_SHA384 => SigScheme::RsaPkcs1(Hash::Sha384),
        OID_RSA_SHA512 => SigScheme::RsaPkcs1(Hash::Sha512),
        OID_ED25519 => SigScheme::Ed25519,
        _ => return None,
    })
}

/// A public key from a SubjectPublicKeyInfo, for certificate and log signatures.
#[derive(Debug, Clone)]
pub(crate) enum VerifyKey {
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Rsa(rsa::RsaPublicKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl VerifyKey {
    pub(crate) fn from_spki_der(der: &[u8]) -> Result<Self, CertError> {
        if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_der(der) {
            return Ok(Self::P256(k));
        }
        if let Ok(k) = p384::ecdsa::VerifyingKey::from_public_key_der(der) {
            return Ok(Self::P384(k));
        }
        if let Ok(k) = ed25519_dalek::VerifyingKey::from_public_key_der(der) {
            return Ok(Self::Ed25519(k));
        }
        if let Ok(k) = rsa::RsaPublicKey::from_public_key_der(der) {
            use rsa::traits::PublicKeyParts as _;
            if k.n().bits() < crate::cosign::MIN_RSA_BITS {
                return Err(CertError::UnsupportedKey("RSA key under 2048 bits".into()));
            }
            return Ok(Self::Rsa(k));
        }
        Err(CertError::UnsupportedKey(
            "not ECDSA P-256/P-384, RSA or Ed25519".into(),
        ))
    }

    pub(crate) fn from_pem(pem: &str) -> Result<Self, CertError> {
        if pem.len() > MAX_PEM_BYTES {
            return Err(CertError::TooLarge {
                what: "PEM key",
                len: pem.len(),
                max: MAX_PEM_BYTES,
            });
        }
        let (label, der) = spki::der::pem::decode_vec(pem.trim().as_bytes())
            .map_err(|e| CertError::Pem(e.to_string()))?;
        if label != "PUBLIC KEY" {
            return Err(CertError::Pem(format!("label is `{label}`")));
        }
        Self::from_spki_der(&der)
    }

    /// The scheme a message signature (cosign payload, Rekor SET) by this key uses.
    pub(crate) fn default_scheme(&self) -> SigScheme {
        match self {
            VerifyKey::P256(_) => SigScheme::EcdsaDer(Hash::Sha256),
            VerifyKey::P384(_) => SigScheme::EcdsaDer(Hash::Sha384),
            VerifyKey::Rsa(_) => SigScheme::RsaPkcs1(Hash::Sha256),
            VerifyKey::Ed25519(_) => SigScheme::Ed25519,
        }
    }

    /// The JWS `alg` values this key can verify.
    pub(crate) fn jws_algs(&self) -> &'static [&'static str] {
        match self {
            VerifyKey::P256(_) => &["ES256"],
            VerifyKey::P384(_) => &["ES384"],
            VerifyKey::Rsa(_) => &["PS256", "PS384", "PS512"],
            VerifyKey::Ed25519(_) => &[],
        }
    }

    /// Verifies with the key's default scheme, accepting a DER or fixed ECDSA signature.
    /// A P-384 key is also accepted with SHA-256: sigstore-python signs that way (and the
    /// hashedrekord entry names SHA-256).
    pub(crate) fn verify_message(&self, msg: &[u8], sig: &[u8]) -> bool {
        let scheme = self.default_scheme();
        match scheme {
            SigScheme::EcdsaDer(h) => {
                let with = |h| {
                    self.verify(SigScheme::EcdsaDer(h), msg, sig)
                        || self.verify(SigScheme::EcdsaFixed(h), msg, sig)
                };
                with(h) || (h != Hash::Sha256 && with(Hash::Sha256))
            }
            SigScheme::RsaPkcs1(h) => {
                self.verify(scheme, msg, sig) || self.verify(SigScheme::RsaPss(h), msg, sig)
            }
            _ => self.verify(scheme, msg, sig),
        }
    }

    /// Verifies a signature over a message given only its SHA-256 (a Sigstore bundle's
    /// `messageSignature`): ECDSA over the digest, or RSA PKCS#1 v1.5 with SHA-256.
    pub(crate) fn verify_prehash(&self, digest: &[u8], sig: &[u8]) -> bool {
        match self {
            VerifyKey::P256(k) => p256::ecdsa::Signature::from_der(sig)
                .or_else(|_| p256::ecdsa::Signature::from_slice(sig))
                .is_ok_and(|s| k.verify_prehash(digest, &s).is_ok()),
            VerifyKey::P384(k) => p384::ecdsa::Signature::from_der(sig)
                .or_else(|_| p384::ecdsa::Signature::from_slice(sig))
                .is_ok_and(|s| k.verify_prehash(digest, &s).is_ok()),
            VerifyKey::Rsa(k) => {
                digest.len() == 32
                    && k.verify(rsa::Pkcs1v15Sign::new::<Sha256>(), digest, sig)
                        .is_ok()
            }
            VerifyKey::Ed25519(_) => false,
        }
    }

    pub(crate) fn verify(&self, scheme: SigScheme, msg: &[u8], sig: &[u8]) -> bool {
        match (self, scheme) {
            (VerifyKey::P256(k), SigScheme::EcdsaDer(h) | SigScheme::EcdsaFixed(h)) => {
                let parsed = if matches!(scheme, SigScheme::EcdsaDer(_)) {
                    p256::ecdsa::Signature::from_der(sig)
                } else {
                    p256::ecdsa::Signature::from_slice(sig)
                };
                parsed.is_ok_and(|s| k.verify_prehash(&h.digest(msg), &s).is_ok())
            }
            (VerifyKey::P384(k), SigScheme::EcdsaDer(h) | SigScheme::EcdsaFixed(h)) => {
                let parsed = if matches!(scheme, SigScheme::EcdsaDer(_)) {
                    p384::ecdsa::Signature::from_der(sig)
                } else {
                    p384::ecdsa::Signature::from_slice(sig)
                };
                parsed.is_ok_and(|s| k.verify_prehash(&h.digest(msg), &s).is_ok())
            }
            (VerifyKey::Rsa(k), SigScheme::RsaPkcs1(h)) => {
                let padding = match h {
                    Hash::Sha256 => rsa::Pkcs1v15Sign::new::<Sha256>(),
                    Hash::Sha384 => rsa::Pkcs1v15Sign::new::<Sha384>(),
                    Hash::Sha512 => rsa::Pkcs1v15Sign::new::<Sha512>(),
                };
                k.verify(padding, &h.digest(msg), sig).is_ok()
            }
            (VerifyKey::Rsa(k), SigScheme::RsaPss(h)) => {
                let padding = match h {
                    Hash::Sha256 => rsa::Pss::new::<Sha256>(),
                    Hash::Sha384 => rsa::Pss::new::<Sha384>(),
                    Hash::Sha512 => rsa::Pss::new::<Sha512>(),
                };
                k.verify(padding, &h.digest(msg), sig).is_ok()
            }
            (VerifyKey::Ed25519(k), SigScheme::Ed25519) => {
                ed25519_dalek::Signature::from_slice(sig)
                    .is_ok_and(|s| k.verify_strict(msg, &s).is_ok())
            }
            _ => false,
        }
    }
}

/// Why a certificate chain was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("certificate `{subject}` is not valid at {at} (valid {not_before} to {not_after})")]
    NotValidAt {
        subject: String,
        at: DateTime<Utc>,
        not_before: DateTime<Utc>,
        not_after: DateTime<Utc>,
    },
    #[error("certificate `{0}` does not chain to a trusted root")]
    Unchained(String),
    #[error("issuer `{0}` is not a CA certificate")]
    NotCa(String),
}

/// Builds a path from `leaf` through `intermediates` to one of `roots`, checking each
/// signature and that every certificate on it is valid at `at`. Returns the index of the
/// root reached.
pub(crate) fn verify_chain(
    leaf: &Cert,
    intermediates: &[Cert],
    roots: &[Cert],
    at: DateTime<Utc>,
) -> Result<usize, ChainError> {
    let not_valid = |c: &Cert| ChainError::NotValidAt {
        subject: c.subject(),
        at,
        not_before: c.not_before(),
        not_after: c.not_after(),
    };
    if !leaf.valid_at(at) {
        return Err(not_valid(leaf));
    }
    if let Some(i) = roots.iter().position(|r| r.der == leaf.der) {
        return Ok(i);
    }
    let mut current = leaf;
    for _ in 0..MAX_DEPTH {
        if let Some(i) = roots.iter().position(|r| current.signed_by(r)) {
            let root = &roots[i];
            if !root.is_ca() {
                return Err(ChainError::NotCa(root.subject()));
            }
            if !root.valid_at(at) {
                return Err(not_valid(root));
            }
            return Ok(i);
        }
        let Some(next) = intermediates
            .iter()
            .find(|c| c.der != current.der && current.signed_by(c))
        else {
            break;
        };
        if !next.is_ca() {
            return Err(ChainError::NotCa(next.subject()));
        }
        if !next.valid_at(at) {
            return Err(not_valid(next));
        }
        current = next;
    }
    Err(ChainError::Unchained(leaf.subject()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use p384::ecdsa::signature::hazmat::PrehashSigner as _;

    #[test]
    fn p384_message_signatures_verify_with_sha384_or_sha256_only() {
        let sk = p384::ecdsa::SigningKey::random(&mut rand_core::OsRng);
        let key = VerifyKey::P384(*sk.verifying_key());
        let msg = b"hashedrekord payload";
        for digest in [Sha384::digest(msg).to_vec(), Sha256::digest(msg).to_vec()] {
            let sig: p384::ecdsa::Signature = sk.sign_prehash(&digest).unwrap();
            assert!(key.verify_message(msg, sig.to_der().as_bytes()));
            assert!(key.verify_message(msg, &sig.to_bytes()));
            assert!(!key.verify_message(b"other", sig.to_der().as_bytes()));
        }
        let sig: p384::ecdsa::Signature = sk.sign_prehash(&Sha512::digest(msg)[..48]).unwrap();
        assert!(!key.verify_message(msg, sig.to_der().as_bytes()));
    }

    #[test]
    fn hex_round_trips_and_refuses_garbage() {
        assert_eq!(unhex(&hex(&[0, 1, 254, 255])), Some(vec![0, 1, 254, 255]));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("é1"), None);
    }
}
