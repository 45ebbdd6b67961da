//! Cosign keyless signatures: a short-lived Fulcio certificate names the signer (SAN and
//! OIDC issuer), and a Rekor entry proves the signature existed while that certificate
//! was valid.
//!
//! Verified offline against a [`TrustRoot`]: the leaf chains to a Fulcio CA of the root,
//! carries the codeSigning EKU, and its key verifies the signature over the payload. The
//! signing time is the Rekor bundle's `integratedTime`, trusted only after its
//! SignedEntryTimestamp (an ECDSA signature by a Rekor key of the root over the canonical
//! JSON of the entry) verifies and the entry body (hashedrekord, dsse or intoto) names this
//! very signature, payload hash and certificate. Without a SET the certificate must be
//! valid now — Fulcio certificates live ten minutes, so that mostly fails, and says so.
//! A Merkle inclusion proof (Sigstore bundles) is verified when present: the path from the
//! entry to the root hash (RFC 9162) and the checkpoint naming that root, signed by the
//! log's key. SCTs are not checked.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, TimeZone as _, Utc};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use spki::ObjectIdentifier;

use crate::trust_root::TrustRoot;
use crate::x509::{self, Cert, VerifyKey, hex};

/// Fulcio's OIDC issuer extension (v2, DER UTF8String).
pub const OID_ISSUER_V2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.8");
/// Fulcio's legacy OIDC issuer extension (raw string).
pub const OID_ISSUER_V1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.1");
/// Most RFC 3161 timestamps tried for one signature.
const MAX_TIMESTAMPS: usize = 4;
/// Largest Rekor bundle or entry body accepted.
pub const MAX_BUNDLE_BYTES: usize = 64 * 1024;

/// Why a keyless signature is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeylessError {
    #[error("no keyless trust root configured")]
    NoTrustRoot,
    #[error("certificate: {0}")]
    Cert(#[from] x509::CertError),
    #[error("certificate chain: {0}")]
    Chain(x509::ChainError),
    #[error(
        "certificate is not valid now and no Rekor SignedEntryTimestamp or RFC 3161 timestamp proves when it signed (Fulcio certificates last 10 minutes): {0}"
    )]
    NoBundleExpired(x509::ChainError),
    #[error("certificate expired before the signature was logged: {0}")]
    ExpiredAtLogTime(x509::ChainError),
    #[error("leaf certificate has no codeSigning extended key usage")]
    NotCodeSigning,
    #[error("signature is not valid base64")]
    SignatureEncoding,
    #[error("signature does not verify with the certificate's key")]
    BadSignature,
    #[error("Rekor bundle is malformed: {0}")]
    MalformedBundle(String),
    #[error("Rekor log {0} is not in the trust root")]
    UnknownLog(String),
    #[error("Rekor SignedEntryTimestamp does not verify")]
    BadSet,
    #[error("RFC 3161 timestamp: {0}")]
    Timestamp(crate::timestamp::TimestampError),
    #[error("Rekor inclusion proof does not verify: {0}")]
    BadInclusionProof(String),
    #[error("Rekor log key was not valid at the entry's time")]
    LogKeyNotValid,
    #[error("Rekor entry does not match the signature: {0}")]
    EntryMismatch(String),
    #[error("Rekor entry kind `{0}` is not supported")]
    UnsupportedEntry(String),
}

/// What a verified keyless certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeylessSigner {
    /// The first email or URI SAN.
    pub san: String,
    pub issuer: Option<String>,
    /// The Rekor integrated time, or `now` when there was no bundle.
    pub signed_at: DateTime<Utc>,
    /// True when a Rekor entry (SET) vouched for the signing time.
    pub logged: bool,
}

/// A Rekor entry as carried by a signature, not yet verified.
#[derive(Debug, Clone)]
pub(crate) struct LogEntry {
    /// Base64 of the canonicalized entry body, as signed.
    pub body_b64: String,
    pub integrated_time: i64,
    pub log_index: i64,
    pub log_id: Vec<u8>,
    /// The SignedEntryTimestamp (inclusion promise): what makes `integrated_time` true.
    pub set: Option<Vec<u8>>,
    /// A Merkle inclusion proof with its signed checkpoint (Sigstore bundles).
    pub proof: Option<InclusionProof>,
}

/// An RFC 6962 inclusion proof of an entry in a log shard, and the checkpoint (signed
/// note) that commits the log to its root hash.
#[derive(Debug, Clone)]
pub(crate) struct InclusionProof {
    pub index: u64,
    pub tree_size: u64,
    pub root_hash: Vec<u8>,
    pub hashes: Vec<Vec<u8>>,
    pub checkpoint: String,
}

/// Most proof hashes accepted (a tree of 2^64 leaves needs 64).
pub(crate) const MAX_PROOF_HASHES: usize = 64;
/// Largest checkpoint text accepted.
const MAX_CHECKPOINT_BYTES: usize = 8 * 1024;

fn node_hash(left: &[u8], right: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

impl InclusionProof {
    /// RFC 9162 section 2.1.3.2: recomputes the root from the leaf and the path.
    fn root_for(&self, leaf_hash: [u8; 32]) -> Option<[u8; 32]> {
        if self.index >= self.tree_size || self.hashes.len() > MAX_PROOF_HASHES {
            return None;
        }
        let (mut f, mut s) = (self.index, self.tree_size - 1);
        let mut r = leaf_hash;
        for p in &self.hashes {
            if s == 0 {
                return None;
            }
            if f & 1 == 1 || f == s {
                r = node_hash(p, &r);
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            } else {
                r = node_hash(&r, p);
            }
            f >>= 1;
            s >>= 1;
        }
        (s == 0).then_some(r)
    }

    /// Verifies the path from `body` to the root hash, and that the checkpoint names this
    /// tree size and root and is signed by `key`.
    fn verify(&self, body: &[u8], key: &VerifyKey) -> Result<(), KeylessError> {
        let bad = |what: &str| KeylessError::BadInclusionProof(what.to_owned());
        let mut leaf = Sha256::new();
        leaf.update([0u8]);
        leaf.update(body);
        let root = self
            .root_for(leaf.finalize().into())
            .ok_or_else(|| bad("path"))?;
        if root.as_slice() != self.root_hash.as_slice() {
            return Err(bad("root hash"));
        }
        if self.checkpoint.len() > MAX_CHECKPOINT_BYTES {
            return Err(bad("checkpoint too large"));
        }
        // A signed note: the text up to the blank line, then `— <name> <base64>` lines
        // whose base64 is a 4-byte key hint and the signature over the text.
        let (text, sigs) = self
            .checkpoint
            .split_once("\n\n")
            .ok_or_else(|| bad("checkpoint is not a signed note"))?;
        let text = format!("{text}\n");
        let mut lines = text.lines();
        let _origin = lines.next();
        let size = lines.next().and_then(|l| l.parse::<u64>().ok());
        let hash = lines.next().and_then(|l| STANDARD.decode(l).ok());
        if size != Some(self.tree_size) || hash.as_deref() != Some(self.root_hash.as_slice()) {
            return Err(bad("checkpoint does not name this tree"));
        }
        let signed = sigs.lines().take(8).any(|line| {
            line.strip_prefix("\u{2014} ")
                .and_then(|rest| rest.rsplit_once(' '))
                .and_then(|(_, b64)| STANDARD.decode(b64).ok())
                .is_some_and(|raw| raw.len() > 4 && key.verify_message(text.as_bytes(), &raw[4..]))
        });
        if signed {
            Ok(())
        } else {
            Err(bad("checkpoint signature"))
        }
    }
}

#[derive(Deserialize)]
struct CosignBundle {
    #[serde(rename = "SignedEntryTimestamp")]
    set: String,
    #[serde(rename = "Payload")]
    payload: CosignBundlePayload,
}

#[derive(Deserialize)]
struct CosignBundlePayload {
    body: String,
    #[serde(rename = "integratedTime")]
    integrated_time: i64,
    #[serde(rename = "logIndex")]
    log_index: i64,
    #[serde(rename = "logID")]
    log_id: String,
}

impl LogEntry {
    /// Parses cosign's `dev.sigstore.cosign/bundle` annotation.
    pub(crate) fn from_cosign_bundle(json: &str) -> Result<Self, KeylessError> {
        if json.len() > MAX_BUNDLE_BYTES {
            return Err(KeylessError::MalformedBundle(format!(
                "{} bytes, over the {MAX_BUNDLE_BYTES}-byte limit",
                json.len()
            )));
        }
        let b: CosignBundle =
            serde_json::from_str(json).map_err(|e| KeylessError::MalformedBundle(e.to_string()))?;
        let set = STANDARD
            .decode(b.set.trim())
            .map_err(|_| KeylessError::MalformedBundle("SET is not base64".into()))?;
        let log_id = x509::unhex(&b.payload.log_id)
            .ok_or_else(|| KeylessError::MalformedBundle("logID is not hex".into()))?;
        Ok(Self {
            body_b64: b.payload.body,
            integrated_time: b.payload.integrated_time,
            log_index: b.payload.log_index,
            log_id,
            set: Some(set),
            proof: None,
        })
    }

    /// The exact bytes the SET signs: RFC 8785 canonical JSON of the entry (keys sorted,
    /// no whitespace), as Rekor computes it.
    pub(crate) fn canonical_payload(&self) -> Vec<u8> {
        format!(
            r#"{{"body":{},"integratedTime":{},"logID":"{}","logIndex":{}}}"#,
            serde_json::Value::String(self.body_b64.clone()),
            self.integrated_time,
            hex(&self.log_id),
            self.log_index
        )
        .into_bytes()
    }

    pub(crate) fn time(&self) -> Result<DateTime<Utc>, KeylessError> {
        Utc.timestamp_opt(self.integrated_time, 0)
            .single()
            .ok_or_else(|| KeylessError::MalformedBundle("integratedTime out of range".into()))
    }

    /// Verifies what the entry carries with the root's key for its log — the SET, the
    /// inclusion proof, or both (at least one is required) — and returns the entry body.
    pub(crate) fn verify(&self, root: &TrustRoot) -> Result<Vec<u8>, KeylessError> {
        let log = root
            .tlog(&self.log_id)
            .ok_or_else(|| KeylessError::UnknownLog(hex(&self.log_id)))?;
        if self.set.is_none() && self.proof.is_none() {
            return Err(KeylessError::MalformedBundle(
                "tlog entry has neither an inclusion promise nor an inclusion proof".into(),
            ));
        }
        if let Some(set) = &self.set {
            if !log.key.verify_message(&self.canonical_payload(), set) {
                return Err(KeylessError::BadSet);
            }
            if !log.valid_for.contains(self.time()?) {
                return Err(KeylessError::LogKeyNotValid);
            }
        }
        let body = STANDARD
            .decode(self.body_b64.trim())
            .map_err(|_| KeylessError::MalformedBundle("entry body is not base64".into()))?;
        if body.len() > MAX_BUNDLE_BYTES {
            return Err(KeylessError::MalformedBundle("entry body too large".into()));
        }
        if let Some(proof) = &self.proof {
            proof.verify(&body, &log.key)?;
        }
        Ok(body)
    }
}

/// What the signed Rekor entry must agree with.
pub(crate) struct EntryExpectation<'a> {
    /// SHA-256 of the signed payload (message signature) or of the DSSE payload.
    pub payload_sha256: [u8; 32],
    /// The signature bytes.
    pub signature: &'a [u8],
    /// The leaf certificate (or key-only signature: its SPKI DER).
    pub cert: &'a Cert,
}

#[derive(Deserialize)]
struct EntryBody {
    kind: String,
    #[serde(rename = "apiVersion", default)]
    _api_version: String,
    spec: serde_json::Value,
}

/// Checks the (SET-verified) entry body names this signature, payload and certificate.
pub(crate) fn check_entry_body(
    body: &[u8],
    want: &EntryExpectation<'_>,
) -> Result<(), KeylessError> {
    let entry: EntryBody = serde_json::from_slice(body)
        .map_err(|e| KeylessError::MalformedBundle(format!("entry body: {e}")))?;
    let str_at = |ptr: &str| entry.spec.pointer(ptr).and_then(|v| v.as_str());
    let mismatch = |what: &str| KeylessError::EntryMismatch(what.to_owned());
    let want_hash = hex(&want.payload_sha256);
    // Rekor v2 (entry apiVersion 0.0.2) nests the spec and writes hashes as base64.
    if let Some(v2) = entry.spec.get("hashedRekordV002") {
        return check_v2_signature(v2.get("data"), v2.get("signature").into_iter(), want);
    }
    if let Some(v2) = entry.spec.get("dsseV002") {
        let sigs = v2
            .get("signatures")
            .and_then(|v| v.as_array())
            .map(Vec::as_slice)
            .unwrap_or_default();
        return check_v2_signature(v2.get("payloadHash"), sigs.iter().take(16), want);
    }
    match entry.kind.as_str() {
        "hashedrekord" => {
            if str_at("/data/hash/algorithm") != Some("sha256")
                || !str_at("/data/hash/value").is_some_and(|v| v.eq_ignore_ascii_case(&want_hash))
            {
                return Err(mismatch("payload hash"));
            }
            let sig = str_at("/signature/content").and_then(|s| STANDARD.decode(s).ok());
            if sig.as_deref() != Some(want.signature) {
                return Err(mismatch("signature"));
            }
            check_verifier(str_at("/signature/publicKey/content"), want.cert)
        }
        "dsse" => {
            if !str_at("/payloadHash/value").is_some_and(|v| v.eq_ignore_ascii_case(&want_hash)) {
                return Err(mismatch("payload hash"));
            }
            let sigs = entry
                .spec
                .get("signatures")
                .and_then(|v| v.as_array())
                .map(Vec::as_slice)
                .unwrap_or_default();
            let found = sigs.iter().take(16).any(|s| {
                let sig = s
                    .get("signature")
                    .and_then(|v| v.as_str())
                    .and_then(|v| STANDARD.decode(v).ok());
                sig.as_deref() == Some(want.signature)
                    && check_verifier(s.get("verifier").and_then(|v| v.as_str()), want.cert).is_ok()
            });
            if found {
                Ok(())
            } else {
                Err(mismatch("signature or certificate"))
            }
        }
        "intoto" => {
            if !str_at("/content/payloadHash/value")
                .is_some_and(|v| v.eq_ignore_ascii_case(&want_hash))
            {
                return Err(mismatch("payload hash"));
            }
            let sigs = entry
                .spec
                .pointer("/content/envelope/signatures")
                .and_then(|v| v.as_array())
                .map(Vec::as_slice)
                .unwrap_or_default();
            if sigs.iter().take(16).any(|s| {
                check_verifier(s.get("publicKey").and_then(|v| v.as_str()), want.cert).is_ok()
            }) {
                Ok(())
            } else {
                Err(mismatch("certificate"))
            }
        }
        other => Err(KeylessError::UnsupportedEntry(
            other.chars().take(64).collect(),
        )),
    }
}

/// A Rekor v2 entry: `hash` is `{algorithm: SHA2_256, digest: base64}`, and one of
/// `signatures` (`{content, verifier: {x509Certificate | publicKey: {rawBytes}}}`) must be
/// this signature by this certificate.
fn check_v2_signature<'v>(
    hash: Option<&serde_json::Value>,
    mut signatures: impl Iterator<Item = &'v serde_json::Value>,
    want: &EntryExpectation<'_>,
) -> Result<(), KeylessError> {
    let mismatch = |what: &str| KeylessError::EntryMismatch(what.to_owned());
    let hash_ok = hash.is_some_and(|h| {
        h.get("algorithm").and_then(|a| a.as_str()) == Some("SHA2_256")
            && h.get("digest")
                .and_then(|d| d.as_str())
                .and_then(|d| STANDARD.decode(d).ok())
                .is_some_and(|d| d == want.payload_sha256)
    });
    if !hash_ok {
        return Err(mismatch("payload hash"));
    }
    let raw = |v: &serde_json::Value, ptr: &str| {
        v.pointer(ptr)
            .and_then(|r| r.as_str())
            .and_then(|r| STANDARD.decode(r).ok())
    };
    let found = signatures.any(|s| {
        raw(s, "/content").as_deref() == Some(want.signature)
            && (raw(s, "/verifier/x509Certificate/rawBytes").as_deref()
                == Some(want.cert.der.as_slice())
                || raw(s, "/verifier/publicKey/rawBytes")
                    .is_some_and(|k| want.cert.spki_der().is_ok_and(|d| d == k)))
    });
    if found {
        Ok(())
    } else {
        Err(mismatch("signature or certificate"))
    }
}

/// The entry's verifier: base64 of a PEM certificate (or PEM public key) that must be
/// the signing certificate.
fn check_verifier(b64_pem: Option<&str>, cert: &Cert) -> Result<(), KeylessError> {
    let mismatch = || KeylessError::EntryMismatch("certificate".into());
    let pem = b64_pem
        .and_then(|s| STANDARD.decode(s).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(mismatch)?;
    if pem.contains("BEGIN CERTIFICATE") {
        let certs = x509::certs_from_pem(&pem).map_err(|_| mismatch())?;
        if certs.first().is_some_and(|c| c.der == cert.der) {
            return Ok(());
        }
    } else if let Ok((_, der)) = spki::der::pem::decode_vec(pem.trim().as_bytes())
        && cert.spki_der().is_ok_and(|d| d == der)
    {
        return Ok(());
    }
    Err(mismatch())
}

/// Reads the OIDC issuer from Fulcio's extensions (v2 DER UTF8String, else legacy raw).
pub fn oidc_issuer(cert: &Cert) -> Option<String> {
    use spki::der::Decode as _;
    if let Some(raw) = cert.extension(OID_ISSUER_V2)
        && let Ok(s) = spki::der::asn1::Utf8StringRef::from_der(raw)
    {
        return Some(s.as_str().to_owned());
    }
    cert.extension(OID_ISSUER_V1)
        .and_then(|raw| std::str::from_utf8(raw).ok())
        .map(str::to_owned)
}

/// What can prove when a signature was made: a Rekor entry (with the hash its body must
/// name) and RFC 3161 timestamp tokens.
#[derive(Clone, Copy, Default)]
pub(crate) struct TimeProof<'a> {
    pub entry: Option<(&'a LogEntry, [u8; 32])>,
    pub timestamps: &'a [Vec<u8>],
}

/// The signing certificate, its chain checked at the signing time, and the identity in
/// it. `sig_ok` checks `signature` with the leaf's key over whatever it covers; `entry`
/// carries the hash the Rekor entry must name (the signed message for cosign, the DSSE
/// payload for DSSE).
pub(crate) fn verify_cert_signature(
    root: &TrustRoot,
    leaf: &Cert,
    extra: &[Cert],
    sig_ok: &dyn Fn(&VerifyKey) -> bool,
    signature: &[u8],
    time: TimeProof<'_>,
    now: DateTime<Utc>,
) -> Result<KeylessSigner, KeylessError> {
    let TimeProof { entry, timestamps } = time;
    let key = leaf.key()?;
    if !sig_ok(&key) {
        return Err(KeylessError::BadSignature);
    }
    if !leaf.has_code_signing() {
        return Err(KeylessError::NotCodeSigning);
    }
    let (signed_at, logged) = match entry {
        Some((entry, payload_sha256)) => {
            let body = entry.verify(root)?;
            check_entry_body(
                &body,
                &EntryExpectation {
                    payload_sha256,
                    signature,
                    cert: leaf,
                },
            )?;
            // Only the SET vouches for the time; a proof alone says "logged", not when.
            match entry.set {
                Some(_) => (entry.time()?, true),
                None => (now, false),
            }
        }
        None => (now, false),
    };
    let (signed_at, logged) = if logged || timestamps.is_empty() {
        (signed_at, logged)
    } else {
        let mut last = None;
        let mut at = None;
        for token in timestamps.iter().take(MAX_TIMESTAMPS) {
            match crate::timestamp::verify(token, signature, root) {
                Ok(t) => {
                    at = Some(t);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        match (at, last) {
            (Some(t), _) => (t, true),
            (None, Some(e)) => return Err(KeylessError::Timestamp(e)),
            (None, None) => (signed_at, logged),
        }
    };
    root.verify_leaf(leaf, extra, signed_at)
        .map_err(|e| match e {
            x509::ChainError::NotValidAt { .. } if !logged => KeylessError::NoBundleExpired(e),
            x509::ChainError::NotValidAt { .. } => KeylessError::ExpiredAtLogTime(e),
            other => KeylessError::Chain(other),
        })?;
    Ok(KeylessSigner {
        san: leaf.san_values().into_iter().next().unwrap_or_default(),
        issuer: oidc_issuer(leaf),
        signed_at,
        logged,
    })
}

/// Verifies a cosign keyless signature layer: `payload` (the layer blob),
/// `signature_b64` (`dev.cosignproject.cosign/signature`), `cert_pem`
/// (`dev.sigstore.cosign/certificate`), `chain_pem` (`dev.sigstore.cosign/chain`) and
/// `bundle` (`dev.sigstore.cosign/bundle`). The payload's digest is not checked here.
pub fn verify_cosign(
    root: &TrustRoot,
    payload: &[u8],
    signature_b64: &str,
    cert_pem: &str,
    chain_pem: Option<&str>,
    bundle: Option<&str>,
    now: DateTime<Utc>,
) -> Result<KeylessSigner, KeylessError> {
    if payload.len() > crate::cosign::MAX_PAYLOAD_BYTES
        || signature_b64.len() > crate::cosign::MAX_SIGNATURE_CHARS
    {
        return Err(KeylessError::BadSignature);
    }
    let signature = STANDARD
        .decode(signature_b64.trim())
        .map_err(|_| KeylessError::SignatureEncoding)?;
    let leaf = x509::certs_from_pem(cert_pem)?
        .into_iter()
        .next()
        .ok_or(x509::CertError::Empty)?;
    let extra = match chain_pem {
        Some(pem) if !pem.trim().is_empty() => x509::certs_from_pem(pem)?,
        _ => Vec::new(),
    };
    let entry = bundle.map(LogEntry::from_cosign_bundle).transpose()?;
    let digest: [u8; 32] = Sha256::digest(payload).into();
    verify_cert_signature(
        root,
        &leaf,
        &extra,
        &|key: &VerifyKey| key.verify_message(payload, &signature),
        &signature,
        TimeProof {
            entry: entry.as_ref().map(|e| (e, digest)),
            timestamps: &[],
        },
        now,
    )
}

/// The full keyless check of a cosign signature layer for `subject`, as
/// [`crate::evidence::check_signature`] reports it: (SAN, issuer, outcome).
pub(crate) fn check_cosign(
    payload: &[u8],
    signature_b64: &str,
    cert_pem: &str,
    chain_pem: Option<&str>,
    bundle: Option<&str>,
    subject: &str,
    verifier: &crate::evidence::Verifier<'_>,
) -> (String, Option<String>, crate::evidence::Outcome) {
    use crate::evidence::Outcome;
    let fail = |e: KeylessError| (String::new(), None, Outcome::Invalid(e.to_string()));
    if payload.len() > crate::cosign::MAX_PAYLOAD_BYTES
        || signature_b64.len() > crate::cosign::MAX_SIGNATURE_CHARS
    {
        return fail(KeylessError::BadSignature);
    }
    let Ok(signature) = STANDARD.decode(signature_b64.trim()) else {
        return fail(KeylessError::SignatureEncoding);
    };
    let leaf = match x509::certs_from_pem(cert_pem) {
        Ok(certs) => match certs.into_iter().next() {
            Some(c) => c,
            None => return fail(x509::CertError::Empty.into()),
        },
        Err(e) => return fail(e.into()),
    };
    let extra = match chain_pem {
        Some(pem) if !pem.trim().is_empty() => match x509::certs_from_pem(pem) {
            Ok(c) => c,
            Err(e) => return fail(e.into()),
        },
        _ => Vec::new(),
    };
    let entry = match bundle.map(LogEntry::from_cosign_bundle).transpose() {
        Ok(e) => e,
        Err(e) => return fail(e),
    };
    let digest: [u8; 32] = Sha256::digest(payload).into();
    let (san, issuer, outcome) = crate::dsse::keyless_outcome(
        &leaf,
        &extra,
        &|key: &VerifyKey| key.verify_message(payload, &signature),
        &signature,
        entry.as_ref().map(|e| (e, digest)),
        &[],
        verifier,
    );
    if matches!(outcome, Outcome::Invalid(_)) {
        return (san, issuer, outcome);
    }
    // Authenticated: now what the payload names counts.
    match crate::cosign::signed_digest(payload) {
        Ok((signed, _)) if signed.eq_ignore_ascii_case(subject) => (san, issuer, outcome),
        Ok((signed, _)) => {
            let reason = crate::cosign::FailureReason::DigestMismatch {
                image: subject.to_owned(),
                signed,
            };
            (san, issuer, Outcome::Invalid(reason.to_string()))
        }
        Err(e) => (san, issuer, Outcome::Invalid(e.to_string())),
    }
}
