//! Sigstore bundles (`application/vnd.dev.sigstore.bundle+json;version=0.1|0.2`,
//! `application/vnd.dev.sigstore.bundle.v0.3+json`): one JSON document carrying the
//! signature, the certificate (or a key hint) and the Rekor entry, as newer cosign
//! versions attach them as OCI referrers.
//!
//! The content is either a `messageSignature` (a signature over the artifact, given by its
//! SHA-256: for an image the manifest, so the digest must be the subject's) or a
//! `dsseEnvelope` (an in-toto statement naming the subject, or a simple-signing payload).
//! Certificates are verified exactly like cosign keyless signatures ([`crate::keyless`]);
//! a `publicKey` hint is verified with the policy's keys. Of the tlog entry, the inclusion
//! promise (SET) and the Merkle inclusion proof with its signed checkpoint are verified
//! when present (at least one must be), and the entry body matched; an entry without a
//! promise gives no signing time (so a short-lived certificate fails as not valid now).
//! RFC 3161 timestamps (`timestampVerificationData`) are verified against the trust root's
//! timestamp authorities and give the signing time when no promise does
//! ([`crate::timestamp`]).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::dsse::{self, Envelope, RawEnvelope};
use crate::evidence::{Outcome, Verifier};
use crate::keyless::{InclusionProof, LogEntry, MAX_PROOF_HASHES};
use crate::x509::{self, Cert, VerifyKey, hex};

/// Largest bundle accepted (DSSE bundles carry their statement).
pub const MAX_BUNDLE_BYTES: usize = 16 * 1024 * 1024;
/// The media type prefix every bundle version shares.
pub const MEDIA_TYPE_PREFIX: &str = "application/vnd.dev.sigstore.bundle";

/// What a bundle check found: signer (key id or SAN), OIDC issuer, outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleCheck {
    pub signer: String,
    pub issuer: Option<String>,
    pub outcome: Outcome,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBundle {
    media_type: String,
    verification_material: RawMaterial,
    message_signature: Option<RawMessageSignature>,
    dsse_envelope: Option<RawEnvelope>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMaterial {
    certificate: Option<RawCert>,
    x509_certificate_chain: Option<RawChain>,
    public_key: Option<serde_json::Value>,
    #[serde(default)]
    tlog_entries: Vec<RawTlogEntry>,
    timestamp_verification_data: Option<RawTimestamps>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTimestamps {
    #[serde(default)]
    rfc3161_timestamps: Vec<RawTimestamp>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTimestamp {
    #[serde(default)]
    signed_timestamp: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCert {
    raw_bytes: String,
}

#[derive(Deserialize)]
struct RawChain {
    #[serde(default)]
    certificates: Vec<RawCert>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTlogEntry {
    #[serde(default)]
    log_index: Option<serde_json::Value>,
    log_id: Option<RawLogId>,
    #[serde(default)]
    integrated_time: Option<serde_json::Value>,
    inclusion_promise: Option<RawPromise>,
    inclusion_proof: Option<RawProof>,
    #[serde(default)]
    canonicalized_body: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawProof {
    log_index: Option<serde_json::Value>,
    #[serde(default)]
    root_hash: String,
    tree_size: Option<serde_json::Value>,
    #[serde(default)]
    hashes: Vec<String>,
    checkpoint: Option<RawCheckpoint>,
}

#[derive(Deserialize)]
struct RawCheckpoint {
    #[serde(default)]
    envelope: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLogId {
    key_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPromise {
    signed_entry_timestamp: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMessageSignature {
    message_digest: Option<RawDigest>,
    signature: String,
}

#[derive(Deserialize)]
struct RawDigest {
    algorithm: String,
    digest: String,
}

/// protobuf JSON writes int64 as a string; older writers used numbers.
fn int64(v: Option<&serde_json::Value>) -> Option<i64> {
    match v? {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn invalid(reason: impl Into<String>) -> BundleCheck {
    BundleCheck {
        signer: String::new(),
        issuer: None,
        outcome: Outcome::Invalid(reason.into()),
    }
}

fn b64(s: &str) -> Option<Vec<u8>> {
    STANDARD.decode(s.trim()).ok()
}

/// The first tlog entry (one with an inclusion promise preferred), as a checkable entry.
fn log_entry(entries: &[RawTlogEntry]) -> Result<Option<LogEntry>, String> {
    let entries = &entries[..entries.len().min(8)];
    let Some(e) = entries
        .iter()
        .find(|e| e.inclusion_promise.is_some())
        .or_else(|| entries.first())
    else {
        return Ok(None);
    };
    let set = match &e.inclusion_promise {
        Some(p) => Some(
            b64(&p.signed_entry_timestamp).ok_or("tlog entry: inclusion promise is not base64")?,
        ),
        None => None,
    };
    let proof = match &e.inclusion_proof {
        Some(p) => Some(inclusion_proof(p)?),
        None => None,
    };
    let log_id = e
        .log_id
        .as_ref()
        .and_then(|l| b64(&l.key_id))
        .ok_or("tlog entry: no base64 logId.keyId")?;
    Ok(Some(LogEntry {
        body_b64: e.canonicalized_body.clone(),
        integrated_time: int64(e.integrated_time.as_ref()).unwrap_or_default(),
        log_index: int64(e.log_index.as_ref()).ok_or("tlog entry: no logIndex")?,
        log_id,
        set,
        proof,
    }))
}

fn inclusion_proof(p: &RawProof) -> Result<InclusionProof, String> {
    let index = int64(p.log_index.as_ref())
        .and_then(|i| u64::try_from(i).ok())
        .ok_or("inclusion proof: no logIndex")?;
    let tree_size = int64(p.tree_size.as_ref())
        .and_then(|i| u64::try_from(i).ok())
        .ok_or("inclusion proof: no treeSize")?;
    if p.hashes.len() > MAX_PROOF_HASHES {
        return Err("inclusion proof: too many hashes".into());
    }
    let hashes = p
        .hashes
        .iter()
        .map(|h| b64(h))
        .collect::<Option<Vec<_>>>()
        .ok_or("inclusion proof: hash is not base64")?;
    Ok(InclusionProof {
        index,
        tree_size,
        root_hash: b64(&p.root_hash).ok_or("inclusion proof: root hash is not base64")?,
        hashes,
        checkpoint: p
            .checkpoint
            .as_ref()
            .map(|c| c.envelope.clone())
            .unwrap_or_default(),
    })
}

/// What the bundle signs, reduced to how to check a key against it.
enum Content {
    /// SHA-256 of the artifact and the signature over it.
    Message {
        digest: Vec<u8>,
        signature: Vec<u8>,
    },
    Dsse(Envelope),
}

/// Verifies a Sigstore bundle as a signature of `subject` (`sha256:<hex>`).
pub fn verify_bundle(bundle: &[u8], subject: &str, verifier: &Verifier<'_>) -> BundleCheck {
    if bundle.len() > MAX_BUNDLE_BYTES {
        return invalid(format!(
            "bundle is {} bytes, over the {MAX_BUNDLE_BYTES}-byte limit",
            bundle.len()
        ));
    }
    let raw: RawBundle = match serde_json::from_slice(bundle) {
        Ok(r) => r,
        Err(e) => return invalid(format!("not a Sigstore bundle: {e}")),
    };
    if !raw.media_type.starts_with(MEDIA_TYPE_PREFIX) {
        return invalid(format!(
            "media type `{}` is not a Sigstore bundle",
            raw.media_type.chars().take(128).collect::<String>()
        ));
    }
    let subject_hex = subject.strip_prefix("sha256:").unwrap_or(subject);
    let content = match (raw.message_signature, raw.dsse_envelope) {
        (Some(m), None) => {
            let Some(d) = m.message_digest else {
                return invalid("message signature has no digest");
            };
            if d.algorithm != "SHA2_256" {
                return invalid(format!(
                    "message digest algorithm `{}` is not SHA2_256",
                    d.algorithm.chars().take(32).collect::<String>()
                ));
            }
            let (Some(digest), Some(signature)) = (b64(&d.digest), b64(&m.signature)) else {
                return invalid("message signature is not base64");
            };
            Content::Message { digest, signature }
        }
        (None, Some(env)) => match Envelope::from_raw(env) {
            Ok(env) => Content::Dsse(env),
            Err(e) => return invalid(e.to_string()),
        },
        _ => return invalid("bundle has neither exactly one messageSignature nor dsseEnvelope"),
    };
    let entry = match log_entry(&raw.verification_material.tlog_entries) {
        Ok(e) => e,
        Err(e) => return invalid(e),
    };
    let material = &raw.verification_material;
    let certs: Vec<&RawCert> = match (&material.certificate, &material.x509_certificate_chain) {
        (Some(c), _) => vec![c],
        (None, Some(chain)) => chain.certificates.iter().take(x509::MAX_CERTS).collect(),
        (None, None) => Vec::new(),
    };
    let check = if certs.is_empty() {
        if material.public_key.is_none() {
            return invalid("bundle has no certificate or public key");
        }
        check_with_keys(&content, verifier)
    } else {
        let mut parsed = Vec::with_capacity(certs.len());
        for c in certs {
            match b64(&c.raw_bytes).map(|der| Cert::from_der(&der)) {
                Some(Ok(cert)) => parsed.push(cert),
                Some(Err(e)) => return invalid(format!("certificate: {e}")),
                None => return invalid("certificate is not base64"),
            }
        }
        let leaf = parsed.remove(0);
        let timestamps: Vec<Vec<u8>> = material
            .timestamp_verification_data
            .as_ref()
            .map(|t| {
                t.rfc3161_timestamps
                    .iter()
                    .take(8)
                    .filter_map(|t| b64(&t.signed_timestamp))
                    .collect()
            })
            .unwrap_or_default();
        check_with_cert(
            &content,
            &leaf,
            &parsed,
            entry.as_ref(),
            &timestamps,
            verifier,
        )
    };
    if check.outcome == Outcome::Trusted || matches!(check.outcome, Outcome::Untrusted(_)) {
        // Only now, with the signature authenticated, does what it names count.
        if let Err(reason) = names_subject(&content, subject_hex) {
            return BundleCheck {
                outcome: Outcome::Invalid(reason),
                ..check
            };
        }
    }
    check
}

fn signature_ok(content: &Content, key: &VerifyKey) -> bool {
    match content {
        Content::Message { digest, signature } => key.verify_prehash(digest, signature),
        Content::Dsse(env) => env.signature_by(key).is_some(),
    }
}

fn check_with_keys(content: &Content, verifier: &Verifier<'_>) -> BundleCheck {
    if verifier.keys.is_empty() {
        return BundleCheck {
            signer: String::new(),
            issuer: None,
            outcome: Outcome::Untrusted("no trusted key configured".into()),
        };
    }
    match verifier
        .keys
        .iter()
        .find(|k| signature_ok(content, &k.verify_key()))
    {
        Some(k) => BundleCheck {
            signer: k.id().to_string(),
            issuer: None,
            outcome: Outcome::Trusted,
        },
        None => BundleCheck {
            signer: String::new(),
            issuer: None,
            outcome: Outcome::Untrusted("signature does not verify with any trusted key".into()),
        },
    }
}

fn check_with_cert(
    content: &Content,
    leaf: &Cert,
    extra: &[Cert],
    entry: Option<&LogEntry>,
    timestamps: &[Vec<u8>],
    verifier: &Verifier<'_>,
) -> BundleCheck {
    let (signature, entry_hash): (Vec<u8>, [u8; 32]) = match content {
        Content::Message { digest, signature } => {
            let Ok(hash) = <[u8; 32]>::try_from(digest.as_slice()) else {
                return invalid("message digest is not 32 bytes");
            };
            (signature.clone(), hash)
        }
        Content::Dsse(env) => {
            let sig = leaf
                .key()
                .ok()
                .and_then(|k| env.signature_by(&k).map(<[u8]>::to_vec))
                .unwrap_or_else(|| env.signatures.first().cloned().unwrap_or_default());
            (sig, Sha256::digest(&env.payload).into())
        }
    };
    let (signer, issuer, outcome) = dsse::keyless_outcome(
        leaf,
        extra,
        &|key| signature_ok(content, key),
        &signature,
        entry.map(|e| (e, entry_hash)),
        timestamps,
        verifier,
    );
    BundleCheck {
        signer,
        issuer,
        outcome,
    }
}

/// The signed content must be about `subject_hex`.
fn names_subject(content: &Content, subject_hex: &str) -> Result<(), String> {
    match content {
        Content::Message { digest, .. } => {
            if hex(digest).eq_ignore_ascii_case(subject_hex) {
                Ok(())
            } else {
                Err(format!(
                    "bundle signs sha256:{}, not this image",
                    hex(digest)
                ))
            }
        }
        Content::Dsse(env) => {
            if env.payload_type == "application/vnd.in-toto+json" {
                let doc: serde_json::Value = serde_json::from_slice(&env.payload)
                    .map_err(|e| format!("in-toto statement is not JSON: {e}"))?;
                let subjects = doc
                    .get("subject")
                    .and_then(|s| s.as_array())
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let named = subjects.iter().take(1024).any(|s| {
                    s.pointer("/digest/sha256")
                        .and_then(|d| d.as_str())
                        .is_some_and(|d| d.eq_ignore_ascii_case(subject_hex))
                });
                if named {
                    Ok(())
                } else {
                    Err("in-toto statement does not name this image".into())
                }
            } else {
                let (signed, _) = crate::cosign::signed_digest(&env.payload)
                    .map_err(|e| format!("DSSE payload: {e}"))?;
                let signed_hex = signed.strip_prefix("sha256:").unwrap_or(&signed);
                if signed_hex.eq_ignore_ascii_case(subject_hex) {
                    Ok(())
                } else {
                    Err(format!("signature is for {signed}, not this image"))
                }
            }
        }
    }
}
