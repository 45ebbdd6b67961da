//! Notation (Notary Project) signatures.
//!
//! JWS envelopes (`application/jose+json`, flattened JWS JSON serialization) are verified
//! as the Notary Project specification describes: the protected header must declare the
//! Notary payload type and a known signing scheme, list `io.cncf.notary.signingScheme` in
//! `crit`, and name no critical header this verifier does not understand; the `x5c` chain
//! (leaf first) must reach a CA of the [`NotationTrustStore`] (a PEM bundle, like a Notation
//! trust store directory's certificates), the leaf must be a code-signing certificate (an
//! extended key usage, if any, lists codeSigning and no TLS/email/timestamping/any usage;
//! a key usage, if any, allows digitalSignature) whose key matches `alg` (ES256/ES384, PS256/384/512), the signature must verify over
//! `BASE64URL(protected).BASE64URL(payload)`, the payload's `targetArtifact.digest` must be
//! the subject, and the signature must not be past `io.cncf.notary.expiry`. Certificates
//! are checked at the authentic signing time (`notary.x509.signingAuthority`) or now
//! (`notary.x509`; RFC 3161 countersignatures are not read). Signer = the leaf's subject
//! DN (RFC 4514), trusted when an [`Identity::X509`] pattern of the policy matches it.
//!
//! COSE envelopes (`application/cose`) are detected but not verified: they come back as
//! untrusted with that reason, never as valid.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::evidence::{Identity, Outcome, Verifier};
use crate::x509::{self, Cert, CertError, Hash, SigScheme};

pub const JWS_MEDIA_TYPE: &str = "application/jose+json";
pub const COSE_MEDIA_TYPE: &str = "application/cose";
pub const PAYLOAD_CONTENT_TYPE: &str = "application/vnd.cncf.notary.payload.v1+json";
/// Largest envelope accepted (real ones are a few KiB plus the chain).
pub const MAX_ENVELOPE_BYTES: usize = 256 * 1024;
/// Critical headers this verifier understands.
const KNOWN_CRITICAL: &[&str] = &[
    "io.cncf.notary.signingScheme",
    "io.cncf.notary.authenticSigningTime",
    "io.cncf.notary.expiry",
];

/// The CA certificates Notation signatures must chain to.
#[derive(Debug, Clone, Default)]
pub struct NotationTrustStore {
    pub(crate) roots: Vec<Cert>,
}

impl NotationTrustStore {
    /// Reads a PEM bundle of CA certificates.
    pub fn from_pem(pem: &str) -> Result<Self, CertError> {
        Ok(Self {
            roots: x509::certs_from_pem(pem)?,
        })
    }

    pub fn len(&self) -> usize {
        self.roots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }
}

/// What a Notation check found: the leaf subject DN (empty when unreadable) and outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotationCheck {
    pub signer: String,
    pub outcome: Outcome,
}

#[derive(Deserialize)]
struct RawJws {
    payload: String,
    protected: String,
    #[serde(default)]
    header: RawUnprotected,
    signature: String,
}

#[derive(Deserialize, Default)]
struct RawUnprotected {
    #[serde(default)]
    x5c: Vec<String>,
}

#[derive(Deserialize)]
struct Protected {
    alg: String,
    #[serde(default)]
    cty: String,
    #[serde(default)]
    crit: Vec<String>,
    #[serde(rename = "io.cncf.notary.signingScheme", default)]
    signing_scheme: String,
    #[serde(rename = "io.cncf.notary.authenticSigningTime")]
    authentic_signing_time: Option<String>,
    #[serde(rename = "io.cncf.notary.expiry")]
    expiry: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload {
    target_artifact: TargetArtifact,
}

#[derive(Deserialize)]
struct TargetArtifact {
    digest: String,
}

fn invalid(signer: String, reason: impl Into<String>) -> NotationCheck {
    NotationCheck {
        signer,
        outcome: Outcome::Invalid(reason.into()),
    }
}

/// Checks a Notation envelope of `media_type` as a signature of `subject`.
pub fn verify(
    media_type: &str,
    envelope: &[u8],
    subject: &str,
    verifier: &Verifier<'_>,
) -> NotationCheck {
    if media_type == COSE_MEDIA_TYPE {
        return NotationCheck {
            signer: String::new(),
            outcome: Outcome::Untrusted(
                "COSE Notation signatures are detected, not verified".into(),
            ),
        };
    }
    if media_type != JWS_MEDIA_TYPE {
        return invalid(
            String::new(),
            format!(
                "unknown Notation envelope type `{}`",
                media_type.chars().take(128).collect::<String>()
            ),
        );
    }
    verify_jws(envelope, subject, verifier)
}

/// Checks a JWS Notation envelope as a signature of `subject` (`sha256:<hex>`).
pub fn verify_jws(envelope: &[u8], subject: &str, verifier: &Verifier<'_>) -> NotationCheck {
    if envelope.len() > MAX_ENVELOPE_BYTES {
        return invalid(
            String::new(),
            format!(
                "envelope is {} bytes, over the {MAX_ENVELOPE_BYTES}-byte limit",
                envelope.len()
            ),
        );
    }
    let jws: RawJws = match serde_json::from_slice(envelope) {
        Ok(j) => j,
        Err(e) => return invalid(String::new(), format!("not a JWS JSON envelope: {e}")),
    };
    if jws.header.x5c.is_empty() {
        return invalid(String::new(), "no x5c certificate chain");
    }
    if jws.header.x5c.len() > x509::MAX_CERTS {
        return invalid(String::new(), "x5c chain too long");
    }
    let mut chain = Vec::with_capacity(jws.header.x5c.len());
    for c in &jws.header.x5c {
        match STANDARD.decode(c.trim()).map(|der| Cert::from_der(&der)) {
            Ok(Ok(cert)) => chain.push(cert),
            Ok(Err(e)) => return invalid(String::new(), format!("x5c: {e}")),
            Err(_) => return invalid(String::new(), "x5c: not base64"),
        }
    }
    let leaf = chain.remove(0);
    let signer = leaf.subject();
    let protected_bytes = match URL_SAFE_NO_PAD.decode(jws.protected.trim_end_matches('=')) {
        Ok(b) => b,
        Err(_) => return invalid(signer, "protected header is not base64url"),
    };
    let header: Protected = match serde_json::from_slice(&protected_bytes) {
        Ok(h) => h,
        Err(e) => return invalid(signer, format!("protected header: {e}")),
    };
    if header.cty != PAYLOAD_CONTENT_TYPE {
        return invalid(
            signer,
            format!("content type is not {PAYLOAD_CONTENT_TYPE}"),
        );
    }
    if !matches!(
        header.signing_scheme.as_str(),
        "notary.x509" | "notary.x509.signingAuthority"
    ) {
        return invalid(signer, "unknown io.cncf.notary.signingScheme");
    }
    if !header
        .crit
        .iter()
        .any(|c| c == "io.cncf.notary.signingScheme")
    {
        return invalid(signer, "crit does not list io.cncf.notary.signingScheme");
    }
    if let Some(unknown) = header
        .crit
        .iter()
        .find(|c| !KNOWN_CRITICAL.contains(&c.as_str()))
    {
        return invalid(
            signer,
            format!(
                "critical header `{}` is not supported (verification plugins are not run)",
                unknown.chars().take(128).collect::<String>()
            ),
        );
    }
    let scheme = match header.alg.as_str() {
        "ES256" => SigScheme::EcdsaFixed(Hash::Sha256),
        "ES384" => SigScheme::EcdsaFixed(Hash::Sha384),
        "PS256" => SigScheme::RsaPss(Hash::Sha256),
        "PS384" => SigScheme::RsaPss(Hash::Sha384),
        "PS512" => SigScheme::RsaPss(Hash::Sha512),
        other => {
            return invalid(
                signer,
                format!(
                    "alg `{}` is not supported",
                    other.chars().take(16).collect::<String>()
                ),
            );
        }
    };
    let key = match leaf.key() {
        Ok(k) => k,
        Err(e) => return invalid(signer, format!("leaf certificate: {e}")),
    };
    if !key.jws_algs().contains(&header.alg.as_str()) {
        return invalid(signer, "alg does not match the signing certificate's key");
    }
    let Ok(signature) = URL_SAFE_NO_PAD.decode(jws.signature.trim_end_matches('=')) else {
        return invalid(signer, "signature is not base64url");
    };
    let signing_input = format!("{}.{}", jws.protected, jws.payload);
    if !key.verify(scheme, signing_input.as_bytes(), &signature) {
        return invalid(
            signer,
            "signature does not verify with the leaf certificate",
        );
    }
    if !leaf.is_notation_code_signer() {
        return invalid(signer, "leaf certificate is not a code-signing certificate");
    }
    let Ok(payload_bytes) = URL_SAFE_NO_PAD.decode(jws.payload.trim_end_matches('=')) else {
        return invalid(signer, "payload is not base64url");
    };
    let payload: Payload = match serde_json::from_slice(&payload_bytes) {
        Ok(p) => p,
        Err(e) => return invalid(signer, format!("payload: {e}")),
    };
    if !payload.target_artifact.digest.eq_ignore_ascii_case(subject) {
        return invalid(
            signer,
            format!(
                "signature is for {}, not this image",
                payload
                    .target_artifact
                    .digest
                    .chars()
                    .take(80)
                    .collect::<String>()
            ),
        );
    }
    let parse_time = |s: &str| DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc));
    if let Some(expiry) = &header.expiry {
        match parse_time(expiry) {
            Ok(t) if t < verifier.now => {
                return invalid(signer, format!("signature expired at {t}"));
            }
            Ok(_) => {}
            Err(_) => return invalid(signer, "io.cncf.notary.expiry is not an RFC 3339 time"),
        }
    }
    let at = if header.signing_scheme == "notary.x509.signingAuthority" {
        match header.authentic_signing_time.as_deref().map(parse_time) {
            Some(Ok(t)) => t,
            _ => return invalid(signer, "no valid io.cncf.notary.authenticSigningTime"),
        }
    } else {
        verifier.now
    };
    let Some(store) = verifier.notation_roots else {
        return NotationCheck {
            signer,
            outcome: Outcome::Untrusted("no Notation trust store configured".into()),
        };
    };
    if let Err(e) = x509::verify_chain(&leaf, &chain, &store.roots, at) {
        return invalid(signer, format!("certificate chain: {e}"));
    }
    let trusted = verifier.identities.iter().any(|id| match id {
        Identity::X509 { subject } => subject.is_match(&signer),
        Identity::Keyless { .. } => false,
    });
    let outcome = if trusted {
        Outcome::Trusted
    } else {
        Outcome::Untrusted(format!("signer `{signer}` is not trusted by the policy"))
    };
    NotationCheck { signer, outcome }
}
