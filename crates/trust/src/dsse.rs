//! DSSE envelope signatures (what `cosign attest` and Sigstore bundles wrap in-toto
//! statements in): the signature covers the pre-authentication encoding
//! `DSSEv1 <len(type)> <type> <len(body)> <body>`, never the bare payload, so a payload
//! cannot be replayed under another type.
//!
//! [`verify_envelope`] checks the envelope with the policy's keys; [`verify_envelope_keyless`]
//! with a Fulcio certificate, its chain and Rekor bundle (as cosign attaches them to the
//! attestation layer).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::evidence::{Outcome, Verifier};
use crate::keyless::{self, LogEntry};
use crate::x509::{self, VerifyKey};

/// Largest envelope accepted (SBOM attestations can be large).
pub const MAX_ENVELOPE_BYTES: usize = 16 * 1024 * 1024;
/// Most signatures read from one envelope.
pub const MAX_SIGNATURES: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DsseError {
    #[error("envelope is {len} bytes, over the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("not a DSSE envelope: {0}")]
    Json(String),
    #[error("envelope payload is not base64")]
    PayloadEncoding,
    #[error("envelope has no signature")]
    NoSignature,
}

/// A parsed envelope. Signatures that are not base64 are dropped (they can't verify).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub payload_type: String,
    pub payload: Vec<u8>,
    pub signatures: Vec<Vec<u8>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawEnvelope {
    pub payload_type: String,
    pub payload: String,
    #[serde(default)]
    pub signatures: Vec<RawSignature>,
}

#[derive(Deserialize)]
pub(crate) struct RawSignature {
    #[serde(default)]
    pub sig: String,
}

impl Envelope {
    pub fn parse(bytes: &[u8]) -> Result<Self, DsseError> {
        if bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(DsseError::TooLarge {
                len: bytes.len(),
                max: MAX_ENVELOPE_BYTES,
            });
        }
        let raw: RawEnvelope =
            serde_json::from_slice(bytes).map_err(|e| DsseError::Json(e.to_string()))?;
        Self::from_raw(raw)
    }

    pub(crate) fn from_raw(raw: RawEnvelope) -> Result<Self, DsseError> {
        let payload = STANDARD
            .decode(raw.payload.trim())
            .map_err(|_| DsseError::PayloadEncoding)?;
        let signatures: Vec<Vec<u8>> = raw
            .signatures
            .iter()
            .take(MAX_SIGNATURES)
            .filter_map(|s| STANDARD.decode(s.sig.trim()).ok())
            .collect();
        if signatures.is_empty() {
            return Err(DsseError::NoSignature);
        }
        Ok(Self {
            payload_type: raw.payload_type,
            payload,
            signatures,
        })
    }

    /// The bytes every signature covers.
    pub fn pae(&self) -> Vec<u8> {
        pae(&self.payload_type, &self.payload)
    }

    /// The first signature `key` verifies over the PAE.
    pub(crate) fn signature_by(&self, key: &VerifyKey) -> Option<&[u8]> {
        let pae = self.pae();
        self.signatures
            .iter()
            .find(|s| key.verify_message(&pae, s))
            .map(Vec::as_slice)
    }
}

/// DSSE pre-authentication encoding.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
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

/// What checking an envelope found. `payload` is only meaningful when the outcome is
/// not [`Outcome::Invalid`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DsseCheck {
    /// Key id, or the certificate's SAN.
    pub signer: String,
    pub issuer: Option<String>,
    pub outcome: Outcome,
    pub payload_type: String,
    pub payload: Vec<u8>,
}

fn invalid(reason: String) -> DsseCheck {
    DsseCheck {
        signer: String::new(),
        issuer: None,
        outcome: Outcome::Invalid(reason),
        payload_type: String::new(),
        payload: Vec::new(),
    }
}

/// Checks an envelope against the verifier's keys: trusted when one of them signed it.
pub fn verify_envelope(envelope: &[u8], verifier: &Verifier<'_>) -> DsseCheck {
    let env = match Envelope::parse(envelope) {
        Ok(env) => env,
        Err(e) => return invalid(e.to_string()),
    };
    let signer = verifier
        .keys
        .iter()
        .find(|k| env.signature_by(&k.verify_key()).is_some());
    let (signer, outcome) = match (signer, verifier.keys.is_empty()) {
        (Some(k), _) => (k.id().to_string(), Outcome::Trusted),
        (None, true) => (
            String::new(),
            Outcome::Untrusted("no trusted key configured".into()),
        ),
        (None, false) => (
            String::new(),
            Outcome::Untrusted("envelope signature does not verify with any trusted key".into()),
        ),
    };
    DsseCheck {
        signer,
        issuer: None,
        outcome,
        payload_type: env.payload_type,
        payload: env.payload,
    }
}

/// Checks an envelope signed by a Fulcio certificate (`cert_pem`, `chain_pem`) whose
/// time a Rekor bundle (`dsse` or `intoto` entry) vouches for.
pub fn verify_envelope_keyless(
    envelope: &[u8],
    cert_pem: &str,
    chain_pem: Option<&str>,
    bundle: Option<&str>,
    verifier: &Verifier<'_>,
) -> DsseCheck {
    let env = match Envelope::parse(envelope) {
        Ok(env) => env,
        Err(e) => return invalid(e.to_string()),
    };
    let leaf = match x509::certs_from_pem(cert_pem) {
        Ok(certs) => match certs.into_iter().next() {
            Some(c) => c,
            None => return invalid("no certificate".into()),
        },
        Err(e) => return invalid(format!("certificate: {e}")),
    };
    let extra = match chain_pem {
        Some(pem) if !pem.trim().is_empty() => match x509::certs_from_pem(pem) {
            Ok(c) => c,
            Err(e) => return invalid(format!("certificate chain: {e}")),
        },
        _ => Vec::new(),
    };
    let entry = match bundle.map(LogEntry::from_cosign_bundle).transpose() {
        Ok(e) => e,
        Err(e) => return invalid(e.to_string()),
    };
    let key = match leaf.key() {
        Ok(k) => k,
        Err(e) => return invalid(format!("certificate: {e}")),
    };
    let Some(signature) = env.signature_by(&key).map(<[u8]>::to_vec) else {
        return invalid(keyless::KeylessError::BadSignature.to_string());
    };
    let payload_sha: [u8; 32] = Sha256::digest(&env.payload).into();
    let (signer, issuer, outcome) = keyless_outcome(
        &leaf,
        &extra,
        &|_| true,
        &signature,
        entry.as_ref().map(|e| (e, payload_sha)),
        &[],
        verifier,
    );
    DsseCheck {
        signer,
        issuer,
        outcome,
        payload_type: env.payload_type,
        payload: env.payload,
    }
}

/// The shared tail of every keyless check: chain and log against the trust root, then
/// the identity against the policy. Returns (SAN, issuer, outcome).
pub(crate) fn keyless_outcome(
    leaf: &x509::Cert,
    extra: &[x509::Cert],
    sig_ok: &dyn Fn(&VerifyKey) -> bool,
    signature: &[u8],
    entry: Option<(&LogEntry, [u8; 32])>,
    timestamps: &[Vec<u8>],
    verifier: &Verifier<'_>,
) -> (String, Option<String>, Outcome) {
    let san = leaf.san_values().into_iter().next().unwrap_or_default();
    let issuer = keyless::oidc_issuer(leaf);
    let Some(root) = verifier.trust_root else {
        let crypto_ok = leaf.key().is_ok_and(|k| sig_ok(&k));
        let outcome = if crypto_ok {
            Outcome::Untrusted(keyless::KeylessError::NoTrustRoot.to_string())
        } else {
            Outcome::Invalid(keyless::KeylessError::BadSignature.to_string())
        };
        return (san, issuer, outcome);
    };
    match keyless::verify_cert_signature(
        root,
        leaf,
        extra,
        sig_ok,
        signature,
        keyless::TimeProof { entry, timestamps },
        verifier.now,
    ) {
        Err(e) => (san, issuer, Outcome::Invalid(e.to_string())),
        Ok(signer) => {
            let outcome = identity_outcome(&signer.san, signer.issuer.as_deref(), verifier);
            (signer.san, signer.issuer, outcome)
        }
    }
}

/// Trusted when a keyless identity of the policy names this issuer (exactly) and SAN
/// (regex).
pub(crate) fn identity_outcome(
    san: &str,
    issuer: Option<&str>,
    verifier: &Verifier<'_>,
) -> Outcome {
    let trusted = verifier.identities.iter().any(|id| match id {
        crate::evidence::Identity::Keyless {
            issuer: want,
            subject,
        } => issuer == Some(want.as_str()) && subject.is_match(san),
        crate::evidence::Identity::X509 { .. } => false,
    });
    if trusted {
        Outcome::Trusted
    } else {
        Outcome::Untrusted(format!(
            "identity `{san}` from issuer `{}` is not trusted by the policy",
            issuer.unwrap_or("(none)")
        ))
    }
}
