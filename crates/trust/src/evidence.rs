//! What a referrer says about its subject, before any policy, and how one signature is
//! checked against the signers a policy trusts.
//!
//! The split is the contract between the scanner and the policy: the scanner turns referrer
//! manifests into [`Evidence`] once (content-addressed, so a digest is read once), keeps
//! it, and re-runs [`check_signature`] and the policy whenever the policy changes, with no
//! registry request. [`Evidence`] serialises (serde, byte fields as base64) so the scanner
//! can keep it as JSON next to the referrer's digest.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::cosign::{self, FailureReason, PublicKey};
use crate::notation::NotationTrustStore;
use crate::sbom::SbomFormat;
use crate::trust_root::TrustRoot;
use crate::vuln::VulnSummary;

/// One fact read from a referrer of the subject. `source` is the referrer manifest's
/// digest (`sha256:<hex>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Evidence {
    Signature(SignatureEvidence),
    /// A signature referrer whose signature could not be read (its blob over the size
    /// limit, not fetched, not matching its digest, or not parseable). It counts as a
    /// signature that is invalid, never as no signature.
    UnreadableSignature {
        source: String,
        scheme: Scheme,
        reason: String,
    },
    Vulnerabilities {
        source: String,
        summary: VulnSummary,
    },
    Sbom {
        source: String,
        format: SbomFormat,
    },
    /// An attestation of another predicate (SLSA provenance, …): recorded, not judged.
    Attestation {
        source: String,
        predicate_type: String,
    },
}

impl Evidence {
    pub fn source(&self) -> &str {
        match self {
            Evidence::Signature(s) => &s.source,
            Evidence::UnreadableSignature { source, .. }
            | Evidence::Vulnerabilities { source, .. }
            | Evidence::Sbom { source, .. }
            | Evidence::Attestation { source, .. } => source,
        }
    }
}

/// One signature as stored in the registry, not yet verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureEvidence {
    /// The digest of the referrer manifest holding it.
    pub source: String,
    pub material: SignatureMaterial,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SignatureMaterial {
    /// A cosign simple-signing layer: the layer blob and its annotations.
    Cosign {
        #[serde(with = "base64_bytes")]
        payload: Vec<u8>,
        /// `dev.cosignproject.cosign/signature` (base64).
        signature: String,
        /// `dev.sigstore.cosign/certificate` (PEM), for keyless signatures.
        certificate: Option<String>,
        /// `dev.sigstore.cosign/chain` (PEM), intermediates then root.
        chain: Option<String>,
        /// `dev.sigstore.cosign/bundle` (the Rekor bundle JSON).
        bundle: Option<String>,
    },
    /// A Sigstore bundle (`application/vnd.dev.sigstore.bundle.v0.3+json`).
    SigstoreBundle {
        #[serde(with = "base64_bytes")]
        bundle: Vec<u8>,
    },
    /// A Notation envelope (`application/jose+json` or `application/cose`).
    Notation {
        media_type: String,
        #[serde(with = "base64_bytes")]
        envelope: Vec<u8>,
    },
}

mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

/// The signing scheme of a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    Cosign,
    Notation,
}

impl SignatureMaterial {
    pub fn scheme(&self) -> Scheme {
        match self {
            SignatureMaterial::Cosign { .. } | SignatureMaterial::SigstoreBundle { .. } => {
                Scheme::Cosign
            }
            SignatureMaterial::Notation { .. } => Scheme::Notation,
        }
    }
}

/// A signer identity a policy trusts, compiled.
#[derive(Debug, Clone)]
pub enum Identity {
    /// Keyless: the certificate's OIDC issuer (exact) and SAN (regex).
    Keyless {
        issuer: String,
        subject: regex::Regex,
    },
    /// Notation: the leaf certificate's subject DN (regex).
    X509 { subject: regex::Regex },
}

/// Whom a policy trusts, and the time to check certificates at.
#[derive(Debug, Clone)]
pub struct Verifier<'a> {
    pub keys: &'a [PublicKey],
    pub identities: &'a [Identity],
    pub now: DateTime<Utc>,
    /// Fulcio CAs and Rekor keys for keyless signatures and Sigstore bundles.
    pub trust_root: Option<&'a TrustRoot>,
    /// CA certificates for Notation signatures.
    pub notation_roots: Option<&'a NotationTrustStore>,
}

impl<'a> Verifier<'a> {
    pub fn new(now: DateTime<Utc>) -> Self {
        Self {
            keys: &[],
            identities: &[],
            now,
            trust_root: None,
            notation_roots: None,
        }
    }

    pub fn trust_root(mut self, root: &'a TrustRoot) -> Self {
        self.trust_root = Some(root);
        self
    }

    pub fn notation_roots(mut self, store: &'a NotationTrustStore) -> Self {
        self.notation_roots = Some(store);
        self
    }

    pub fn keys(mut self, keys: &'a [PublicKey]) -> Self {
        self.keys = keys;
        self
    }

    pub fn identities(mut self, identities: &'a [Identity]) -> Self {
        self.identities = identities;
        self
    }
}

/// What checking one signature found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureCheck {
    pub source: String,
    pub scheme: Scheme,
    /// The key id, the certificate's SAN (keyless) or subject DN (Notation); empty when
    /// nothing could be read.
    pub signer: String,
    /// The OIDC issuer of a keyless certificate.
    pub issuer: Option<String>,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Valid, and made by a key or identity the policy trusts.
    Trusted,
    /// Valid as far as can be told, but not by a trusted signer. A key-based cosign
    /// signature no trusted key verifies lands here: without the signer's key, another key
    /// and an altered payload look the same.
    Untrusted(String),
    /// Malformed, altered, for another digest, an expired or unchained certificate.
    Invalid(String),
}

/// Checks one signature of `subject` (`sha256:<hex>`, the digest it must name).
pub fn check_signature(
    evidence: &SignatureEvidence,
    subject: &str,
    verifier: &Verifier<'_>,
) -> SignatureCheck {
    let scheme = evidence.material.scheme();
    let mut check = SignatureCheck {
        source: evidence.source.clone(),
        scheme,
        signer: String::new(),
        issuer: None,
        outcome: Outcome::Invalid(String::new()),
    };
    match &evidence.material {
        SignatureMaterial::Cosign {
            payload,
            signature,
            certificate: None,
            ..
        } => match cosign::verify(verifier.keys, payload, signature, subject) {
            cosign::Verdict::Verified {
                signer: cosign::Signer::Key(id),
                ..
            } => {
                check.signer = id.to_string();
                check.outcome = Outcome::Trusted;
            }
            cosign::Verdict::Failed { reason } => {
                check.outcome = match reason {
                    FailureReason::NoKeys | FailureReason::BadSignature => {
                        Outcome::Untrusted(reason.to_string())
                    }
                    other => Outcome::Invalid(other.to_string()),
                };
            }
        },
        SignatureMaterial::Cosign {
            payload,
            signature,
            certificate: Some(certificate),
            chain,
            bundle,
        } => {
            // A certificate-carrying signature some trusted key verifies is trusted as
            // that key's (cosign sign --key --certificate).
            if let cosign::Verdict::Verified {
                signer: cosign::Signer::Key(id),
                ..
            } = cosign::verify(verifier.keys, payload, signature, subject)
            {
                check.signer = id.to_string();
                check.outcome = Outcome::Trusted;
                return check;
            }
            let (signer, issuer, outcome) = crate::keyless::check_cosign(
                payload,
                signature,
                certificate,
                chain.as_deref(),
                bundle.as_deref(),
                subject,
                verifier,
            );
            check.signer = signer;
            check.issuer = issuer;
            check.outcome = outcome;
        }
        SignatureMaterial::SigstoreBundle { bundle } => {
            let result = crate::bundle::verify_bundle(bundle, subject, verifier);
            check.signer = result.signer;
            check.issuer = result.issuer;
            check.outcome = result.outcome;
        }
        SignatureMaterial::Notation {
            media_type,
            envelope,
        } => {
            let result = crate::notation::verify(media_type, envelope, subject, verifier);
            check.signer = result.signer;
            check.outcome = result.outcome;
        }
    }
    check
}
