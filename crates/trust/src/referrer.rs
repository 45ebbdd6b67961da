//! Reading one referrer manifest of a subject digest into [`Evidence`].
//!
//! A referrer is whatever a registry lists for a digest (OCI 1.1 referrers API, the
//! `sha256-<hex>` tag schema, or cosign's `sha256-<hex>.sig` / `.att` / `.sbom` tags):
//! an OCI image manifest (or Docker v2 / OCI 1.1-rc artifact manifest) whose layers hold a
//! signature, an attestation, an SBOM or a scan report. It is untrusted in every byte, so
//! reading it is two steps with nothing fetched on trust:
//!
//! 1. [`plan`] says which layer blobs must be fetched to interpret the manifest, each with
//!    a per-kind bound ([`MAX_SIGNATURE_BLOB_BYTES`], [`MAX_ATTESTATION_BLOB_BYTES`],
//!    [`MAX_REPORT_BLOB_BYTES`]); a blob declared larger is not requested. SBOM artifacts
//!    need no blob: the media type says the format, and "an SBOM exists" is all policy asks.
//! 2. [`interpret`] turns the manifest and the fetched blobs into evidence. It never fails:
//!    a part that cannot be used is skipped with a reason. Each blob must hash to its
//!    descriptor's digest before it is read. A signature layer that cannot be read becomes
//!    [`Evidence::UnreadableSignature`] — an invalid signature, never "unsigned".
//!
//! Formats recognised (the README's "What imagelib reads" table lists them):
//! - cosign signatures: layers `application/vnd.dev.cosign.simplesigning.v1+json` with the
//!   annotations `dev.cosignproject.cosign/signature`, `dev.sigstore.cosign/certificate`,
//!   `/chain` and `/bundle` (cosign `specs/SIGNATURE_SPEC.md`), in `.sig` tag manifests or
//!   OCI 1.1 referrers with artifactType `application/vnd.dev.cosign.artifact.sig.v1+json`;
//! - Sigstore bundles (`application/vnd.dev.sigstore.bundle.v0.3+json`, also the older
//!   `application/vnd.dev.sigstore.bundle+json;version=0.x`; cosign `specs/BUNDLE_SPEC.md`):
//!   a `messageSignature` bundle, or a `dsseEnvelope` holding a simple-signing payload or an
//!   in-toto statement of cosign 3's image-signature predicate
//!   `https://sigstore.dev/cosign/sign/v1`, is a signature; a bundle with any other DSSE
//!   statement is an attestation (its DSSE signature vouches for the statement, not for the
//!   image) and is read like one;
//! - Notation: artifactType (or config media type) `application/vnd.cncf.notary.signature`
//!   with a layer `application/jose+json` or `application/cose`;
//! - attestations: DSSE layers `application/vnd.dsse.envelope.v1+json` (cosign `.att`,
//!   `specs/ATTESTATION_SPEC.md`) and bare in-toto statements `application/vnd.in-toto+json`;
//!   the statement must name the subject digest. Predicates: cosign vuln and in-toto vulns
//!   become vulnerability reports, SPDX / CycloneDX become SBOMs, others are recorded;
//! - SBOM artifacts: layer or artifact type `application/spdx+json`,
//!   `application/vnd.cyclonedx+json`, and cosign's `.sbom` layer types (`text/spdx`,
//!   `text/spdx+json`, `text/spdx+xml`, `application/vnd.cyclonedx[+json|+xml]`,
//!   cosign `specs/SBOM_SPEC.md`);
//! - Trivy JSON reports: layer or artifact type in [`TRIVY_REPORT_MEDIA_TYPES`]; and a layer
//!   of plain `application/json` recognised by content — a Trivy report (`SchemaVersion` and
//!   `ArtifactName`), a bare cosign vuln predicate (what aquasecurity/trivy-plugin-referrer
//!   attaches, with media type `application/json`), or an SPDX / CycloneDX JSON document.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::attestation::{self, Statement};
use crate::cosign;
use crate::evidence::{Evidence, Scheme, SignatureEvidence, SignatureMaterial};
use crate::sbom::{self, SbomFormat};
use crate::vuln;

/// Largest referrer manifest read.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;
/// Layers of one manifest considered; the rest are skipped.
pub const MAX_LAYERS: usize = 64;
/// Bound of a signature blob: a simple-signing payload or a Notation envelope.
pub const MAX_SIGNATURE_BLOB_BYTES: u64 = 64 * 1024;
/// Bound of an attestation blob: a DSSE envelope, in-toto statement or Sigstore bundle.
pub const MAX_ATTESTATION_BLOB_BYTES: u64 = 16 * 1024 * 1024;
/// Bound of a scan report blob (Trivy JSON, or plain JSON read by content).
pub const MAX_REPORT_BLOB_BYTES: u64 = 16 * 1024 * 1024;
/// Largest Sigstore bundle kept as a signature (one of an attestation is read, not kept;
/// real signature bundles are a few KiB).
pub const MAX_SIGNATURE_BUNDLE_BYTES: usize = 1024 * 1024;
/// Bound of a certificate, chain or Rekor bundle annotation.
pub const MAX_ANNOTATION_CHARS: usize = 64 * 1024;
/// Longest predicate type recorded.
const MAX_PREDICATE_TYPE_CHARS: usize = 512;

pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const COSIGN_SIGNATURE_ARTIFACT_TYPE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
/// Prefix of every Sigstore bundle media type (`…bundle.v0.3+json`, `…bundle+json;version=0.2`).
pub const SIGSTORE_BUNDLE_MEDIA_TYPE_PREFIX: &str = "application/vnd.dev.sigstore.bundle";
pub const NOTATION_ARTIFACT_TYPE: &str = "application/vnd.cncf.notary.signature";
pub const JWS_MEDIA_TYPE: &str = "application/jose+json";
pub const COSE_MEDIA_TYPE: &str = "application/cose";
pub const DSSE_MEDIA_TYPE: &str = "application/vnd.dsse.envelope.v1+json";
pub const IN_TOTO_MEDIA_TYPE: &str = "application/vnd.in-toto+json";
/// The in-toto predicate of a cosign 3 image signature (a DSSE Sigstore bundle).
pub const COSIGN_SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";
/// Media / artifact types taken as a Trivy JSON report: those seen with `oras attach` of
/// `trivy image -f json` output (there is no registered type).
pub const TRIVY_REPORT_MEDIA_TYPES: [&str; 3] = [
    "application/vnd.aquasec.trivy.report+json",
    "application/vnd.aquasecurity.trivy.report+json",
    "application/vnd.aquasecurity.trivy.report.json.v1",
];

const JSON_MEDIA_TYPE: &str = "application/json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_ARTIFACT_MANIFEST: &str = "application/vnd.oci.artifact.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const IMAGE_CONFIG_TYPES: [&str; 3] = [
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.oci.empty.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// Why a referrer manifest cannot be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferrerError {
    #[error("referrer manifest is {len} bytes, over the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("referrer is not a manifest: {0}")]
    NotAManifest(String),
}

/// What a blob holds, which decides its bound and how it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobKind {
    CosignPayload,
    NotationEnvelope,
    SigstoreBundle,
    DsseEnvelope,
    InTotoStatement,
    TrivyReport,
    /// Plain `application/json`, recognised by content.
    Json,
}

impl BlobKind {
    pub fn limit(self) -> u64 {
        match self {
            Self::CosignPayload | Self::NotationEnvelope => MAX_SIGNATURE_BLOB_BYTES,
            Self::SigstoreBundle | Self::DsseEnvelope | Self::InTotoStatement => {
                MAX_ATTESTATION_BLOB_BYTES
            }
            Self::TrivyReport | Self::Json => MAX_REPORT_BLOB_BYTES,
        }
    }

    /// The scheme of the signature this blob holds, when it holds one. A Sigstore bundle
    /// is taken as a signature unless the manifest says it is an attestation (cosign's
    /// `dev.sigstore.bundle.content` / `.predicateType` annotations), so an unreadable one
    /// is an invalid signature rather than nothing.
    fn signature_scheme(self, bundle_is_attestation: bool) -> Option<Scheme> {
        match self {
            Self::CosignPayload => Some(Scheme::Cosign),
            Self::NotationEnvelope => Some(Scheme::Notation),
            Self::SigstoreBundle if !bundle_is_attestation => Some(Scheme::Cosign),
            _ => None,
        }
    }
}

/// One blob to fetch: fetch at most `limit` bytes (`size` ≤ `limit` is guaranteed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRequest {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    pub kind: BlobKind,
    pub limit: u64,
}

/// The blobs a referrer needs, and the layers that will not be read (with why).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The referrer's artifact type (`artifactType`, else a non-image config media type).
    pub artifact_type: Option<String>,
    pub fetch: Vec<BlobRequest>,
    pub skipped: Vec<String>,
}

/// What a referrer says: evidence, and the parts that were skipped (with why).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interpretation {
    pub evidence: Vec<Evidence>,
    pub skipped: Vec<String>,
}

#[derive(Deserialize)]
struct RawManifest {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<u64>,
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    #[serde(rename = "artifactType")]
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    /// OCI 1.1-rc artifact manifests listed `blobs` instead of `layers`.
    #[serde(default)]
    blobs: Vec<Descriptor>,
    subject: Option<Descriptor>,
    manifests: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    annotations: serde_json::Value,
}

#[derive(Deserialize, Clone)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    #[serde(default)]
    digest: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// What to do with one layer.
enum Action {
    Fetch(BlobKind),
    Sbom(SbomFormat),
    /// A layer of a signature referrer that cannot hold a readable signature.
    BadSignature(Scheme, String),
    Skip(String),
}

struct Layout {
    artifact_type: Option<String>,
    bundle_is_attestation: bool,
    subject: Option<String>,
    layers: Vec<(Descriptor, Action)>,
    skipped: Vec<String>,
}

fn essence(media_type: &str) -> String {
    media_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Cuts untrusted text for a message.
fn shown(text: &str) -> String {
    const MAX: usize = 120;
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    match clean.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", &clean[..at]),
        None => clean,
    }
}

fn is_sha256_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn sha256_digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let mut out = String::with_capacity(71);
    out.push_str("sha256:");
    for b in hash {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn classify(layer: &Descriptor, artifact_type: &str) -> Action {
    let mt = essence(&layer.media_type);
    let is_trivy = |t: &str| TRIVY_REPORT_MEDIA_TYPES.contains(&t);
    if mt == SIMPLE_SIGNING_MEDIA_TYPE {
        return Action::Fetch(BlobKind::CosignPayload);
    }
    if mt.starts_with(SIGSTORE_BUNDLE_MEDIA_TYPE_PREFIX) {
        return Action::Fetch(BlobKind::SigstoreBundle);
    }
    if mt == DSSE_MEDIA_TYPE {
        return Action::Fetch(BlobKind::DsseEnvelope);
    }
    if mt == IN_TOTO_MEDIA_TYPE {
        return Action::Fetch(BlobKind::InTotoStatement);
    }
    if artifact_type == NOTATION_ARTIFACT_TYPE {
        return if mt == JWS_MEDIA_TYPE || mt == COSE_MEDIA_TYPE {
            Action::Fetch(BlobKind::NotationEnvelope)
        } else {
            Action::BadSignature(
                Scheme::Notation,
                format!(
                    "Notation envelope of media type `{}` (expected {JWS_MEDIA_TYPE} or {COSE_MEDIA_TYPE})",
                    shown(&layer.media_type)
                ),
            )
        };
    }
    if let Some(format) = sbom::format_of_media_type(&mt) {
        return Action::Sbom(format);
    }
    if is_trivy(&mt) {
        return Action::Fetch(BlobKind::TrivyReport);
    }
    if let Some(format) = sbom::format_of_media_type(artifact_type) {
        return Action::Sbom(format);
    }
    if is_trivy(artifact_type) {
        return Action::Fetch(BlobKind::TrivyReport);
    }
    if artifact_type.starts_with(SIGSTORE_BUNDLE_MEDIA_TYPE_PREFIX) {
        return Action::Fetch(BlobKind::SigstoreBundle);
    }
    if artifact_type == COSIGN_SIGNATURE_ARTIFACT_TYPE {
        return Action::BadSignature(
            Scheme::Cosign,
            format!(
                "cosign signature layer of media type `{}` (expected {SIMPLE_SIGNING_MEDIA_TYPE})",
                shown(&layer.media_type)
            ),
        );
    }
    if mt == JSON_MEDIA_TYPE {
        return Action::Fetch(BlobKind::Json);
    }
    Action::Skip(format!(
        "layer {} of media type `{}` is not a format imagelib reads",
        shown(&layer.digest),
        shown(&layer.media_type)
    ))
}

fn layout(manifest: &[u8]) -> Result<Layout, ReferrerError> {
    if manifest.len() > MAX_MANIFEST_BYTES {
        return Err(ReferrerError::TooLarge {
            len: manifest.len(),
            max: MAX_MANIFEST_BYTES,
        });
    }
    let raw: RawManifest = serde_json::from_slice(manifest)
        .map_err(|e| ReferrerError::NotAManifest(shown(&e.to_string())))?;
    if raw.manifests.is_some() {
        return Err(ReferrerError::NotAManifest(
            "an index, not a manifest".into(),
        ));
    }
    if let Some(v) = raw.schema_version
        && v != 2
    {
        return Err(ReferrerError::NotAManifest(format!("schemaVersion {v}")));
    }
    if let Some(mt) = &raw.media_type {
        let mt = essence(mt);
        if ![OCI_MANIFEST, OCI_ARTIFACT_MANIFEST, DOCKER_MANIFEST].contains(&mt.as_str()) {
            return Err(ReferrerError::NotAManifest(format!(
                "media type `{}`",
                shown(&mt)
            )));
        }
    }
    let artifact_type = raw
        .artifact_type
        .as_deref()
        .map(essence)
        .filter(|t| !t.is_empty())
        .or_else(|| {
            raw.config
                .as_ref()
                .map(|c| essence(&c.media_type))
                .filter(|t| !t.is_empty() && !IMAGE_CONFIG_TYPES.contains(&t.as_str()))
        });
    let at = artifact_type.clone().unwrap_or_default();
    let annotation = |key: &str| raw.annotations.get(key).and_then(serde_json::Value::as_str);
    let bundle_is_attestation = annotation("dev.sigstore.bundle.content") == Some("dsse-envelope")
        && annotation("dev.sigstore.bundle.predicateType")
            .is_some_and(|p| p != COSIGN_SIGN_PREDICATE);
    let mut all = raw.layers;
    all.extend(raw.blobs);
    let mut skipped = Vec::new();
    if all.len() > MAX_LAYERS {
        skipped.push(format!(
            "{} layers past the first {MAX_LAYERS} not read",
            all.len() - MAX_LAYERS
        ));
        all.truncate(MAX_LAYERS);
    }
    let mut layers = Vec::with_capacity(all.len());
    let mut sbom_by_artifact_type = false;
    for layer in all {
        let mut action = classify(&layer, &at);
        if let Action::Sbom(_) = action
            && sbom::format_of_media_type(&layer.media_type).is_none()
        {
            // Labelled by artifact type only: one SBOM per manifest, whatever its layers.
            if sbom_by_artifact_type {
                continue;
            }
            sbom_by_artifact_type = true;
        }
        if let Action::Fetch(kind) = action {
            if !is_sha256_digest(&layer.digest) {
                let reason = format!("layer digest `{}` is not sha256", shown(&layer.digest));
                action = match kind.signature_scheme(bundle_is_attestation) {
                    Some(scheme) => Action::BadSignature(scheme, reason),
                    None => Action::Skip(reason),
                };
            } else if layer.size > kind.limit() {
                let reason = format!(
                    "layer {} is {} bytes, over the {}-byte limit",
                    layer.digest,
                    layer.size,
                    kind.limit()
                );
                action = match kind.signature_scheme(bundle_is_attestation) {
                    Some(scheme) => Action::BadSignature(scheme, reason),
                    None => Action::Skip(reason),
                };
            }
        }
        layers.push((layer, action));
    }
    if layers.is_empty() && skipped.is_empty() {
        skipped.push("no layers".into());
    }
    Ok(Layout {
        artifact_type,
        bundle_is_attestation,
        subject: raw.subject.map(|s| s.digest),
        layers,
        skipped,
    })
}

/// Which blobs of `manifest` must be fetched to interpret it, each within its bound.
pub fn plan(manifest: &[u8]) -> Result<Plan, ReferrerError> {
    let layout = layout(manifest)?;
    let mut plan = Plan {
        artifact_type: layout.artifact_type,
        fetch: Vec::new(),
        skipped: layout.skipped,
    };
    let mut seen = BTreeSet::new();
    for (layer, action) in layout.layers {
        match action {
            Action::Fetch(kind) => {
                if seen.insert(layer.digest.clone()) {
                    plan.fetch.push(BlobRequest {
                        digest: layer.digest,
                        media_type: layer.media_type,
                        size: layer.size,
                        kind,
                        limit: kind.limit(),
                    });
                }
            }
            Action::Sbom(_) => {}
            Action::BadSignature(_, reason) | Action::Skip(reason) => plan.skipped.push(reason),
        }
    }
    Ok(plan)
}

/// Reads `manifest`, a referrer of `subject` (`sha256:<hex>`), with the blobs fetched for
/// its [`plan`] (by digest; missing or altered blobs are skipped). Evidence `source` is the
/// manifest's own digest.
pub fn interpret(
    subject: &str,
    manifest: &[u8],
    blobs: &BTreeMap<String, Vec<u8>>,
) -> Interpretation {
    let mut out = Interpretation::default();
    let layout = match layout(manifest) {
        Ok(layout) => layout,
        Err(e) => {
            out.skipped.push(e.to_string());
            return out;
        }
    };
    if let Some(named) = &layout.subject
        && !named.eq_ignore_ascii_case(subject)
    {
        out.skipped.push(format!(
            "referrer's subject is {}, not {}",
            shown(named),
            shown(subject)
        ));
        return out;
    }
    let source = sha256_digest(manifest);
    out.skipped.extend(layout.skipped);
    let reader = Reader {
        subject,
        source: &source,
    };
    for (layer, action) in layout.layers {
        match action {
            Action::Skip(reason) => out.skipped.push(reason),
            Action::BadSignature(scheme, reason) => {
                out.evidence
                    .push(reader.unreadable(scheme, format!("{}: {reason}", shown(&layer.digest))));
            }
            Action::Sbom(format) => out.evidence.push(Evidence::Sbom {
                source: source.clone(),
                format,
            }),
            Action::Fetch(kind) => match checked_blob(&layer, kind, blobs) {
                Ok(bytes) => reader.read(&layer, kind, bytes, &mut out),
                Err(reason) => match kind.signature_scheme(layout.bundle_is_attestation) {
                    Some(scheme) => out.evidence.push(reader.unreadable(scheme, reason)),
                    None => out.skipped.push(reason),
                },
            },
        }
    }
    let mut seen = Vec::new();
    out.evidence.retain(|e| {
        if seen.contains(e) {
            false
        } else {
            seen.push(e.clone());
            true
        }
    });
    out
}

/// The blob of `layer`, if it was fetched, is within its bound and is what its digest says.
fn checked_blob<'b>(
    layer: &Descriptor,
    kind: BlobKind,
    blobs: &'b BTreeMap<String, Vec<u8>>,
) -> Result<&'b [u8], String> {
    let Some(bytes) = blobs.get(&layer.digest) else {
        return Err(format!("blob {} was not fetched", layer.digest));
    };
    if bytes.len() as u64 > kind.limit() {
        return Err(format!(
            "blob {} is {} bytes, over the {}-byte limit",
            layer.digest,
            bytes.len(),
            kind.limit()
        ));
    }
    if sha256_digest(bytes) != layer.digest {
        return Err(format!(
            "blob {} does not match its digest (content altered)",
            layer.digest
        ));
    }
    if bytes.len() as u64 != layer.size {
        return Err(format!(
            "blob {} is {} bytes, its descriptor says {}",
            layer.digest,
            bytes.len(),
            layer.size
        ));
    }
    Ok(bytes)
}

struct Reader<'a> {
    subject: &'a str,
    source: &'a str,
}

#[derive(Deserialize)]
struct Bundle {
    #[serde(rename = "dsseEnvelope")]
    dsse_envelope: Option<serde_json::Value>,
    #[serde(rename = "messageSignature")]
    message_signature: Option<serde::de::IgnoredAny>,
}

impl Reader<'_> {
    fn unreadable(&self, scheme: Scheme, reason: String) -> Evidence {
        Evidence::UnreadableSignature {
            source: self.source.to_owned(),
            scheme,
            reason,
        }
    }

    fn signature(&self, material: SignatureMaterial) -> Evidence {
        Evidence::Signature(SignatureEvidence {
            source: self.source.to_owned(),
            material,
        })
    }

    fn read(&self, layer: &Descriptor, kind: BlobKind, bytes: &[u8], out: &mut Interpretation) {
        match kind {
            BlobKind::CosignPayload => out.evidence.push(self.cosign(layer, bytes)),
            BlobKind::NotationEnvelope => {
                out.evidence
                    .push(self.signature(SignatureMaterial::Notation {
                        media_type: essence(&layer.media_type),
                        envelope: bytes.to_vec(),
                    }))
            }
            BlobKind::SigstoreBundle => self.bundle(layer, bytes, out),
            BlobKind::DsseEnvelope => match attestation::parse_envelope(bytes) {
                Ok(statement) => self.statement(&layer.digest, statement, out),
                Err(e) => out.skipped.push(format!(
                    "attestation {}: {}",
                    layer.digest,
                    shown(&e.to_string())
                )),
            },
            BlobKind::InTotoStatement => match attestation::parse_statement(bytes) {
                Ok(statement) => self.statement(&layer.digest, statement, out),
                Err(e) => out.skipped.push(format!(
                    "statement {}: {}",
                    layer.digest,
                    shown(&e.to_string())
                )),
            },
            BlobKind::TrivyReport => {
                match vuln::parse_trivy(bytes).or_else(|_| vuln::parse_json_report(bytes)) {
                    Ok(summary) => out.evidence.push(Evidence::Vulnerabilities {
                        source: self.source.to_owned(),
                        summary,
                    }),
                    Err(e) => out.skipped.push(format!(
                        "report {}: {}",
                        layer.digest,
                        shown(&e.to_string())
                    )),
                }
            }
            BlobKind::Json => {
                if let Ok(summary) = vuln::parse_json_report(bytes) {
                    out.evidence.push(Evidence::Vulnerabilities {
                        source: self.source.to_owned(),
                        summary,
                    });
                } else if let Ok(sbom) = sbom::parse_document(bytes) {
                    out.evidence.push(Evidence::Sbom {
                        source: self.source.to_owned(),
                        format: sbom.format,
                    });
                } else {
                    out.skipped.push(format!(
                        "JSON layer {} is neither a vulnerability report nor an SBOM",
                        layer.digest
                    ));
                }
            }
        }
    }

    fn cosign(&self, layer: &Descriptor, payload: &[u8]) -> Evidence {
        let get = |key: &str| layer.annotations.get(key).filter(|v| !v.trim().is_empty());
        let Some(signature) = get(cosign::SIGNATURE_ANNOTATION) else {
            return self.unreadable(
                Scheme::Cosign,
                format!(
                    "{}: no `{}` annotation",
                    layer.digest,
                    cosign::SIGNATURE_ANNOTATION
                ),
            );
        };
        if signature.len() > cosign::MAX_SIGNATURE_CHARS {
            return self.unreadable(
                Scheme::Cosign,
                format!(
                    "{}: signature is {} characters, over the {} limit",
                    layer.digest,
                    signature.len(),
                    cosign::MAX_SIGNATURE_CHARS
                ),
            );
        }
        for key in [
            cosign::CERTIFICATE_ANNOTATION,
            cosign::CHAIN_ANNOTATION,
            cosign::BUNDLE_ANNOTATION,
        ] {
            if let Some(v) = get(key)
                && v.len() > MAX_ANNOTATION_CHARS
            {
                return self.unreadable(
                    Scheme::Cosign,
                    format!(
                        "{}: `{key}` is {} characters, over the {MAX_ANNOTATION_CHARS} limit",
                        layer.digest,
                        v.len()
                    ),
                );
            }
        }
        self.signature(SignatureMaterial::Cosign {
            payload: payload.to_vec(),
            signature: signature.clone(),
            certificate: get(cosign::CERTIFICATE_ANNOTATION).cloned(),
            chain: get(cosign::CHAIN_ANNOTATION).cloned(),
            bundle: get(cosign::BUNDLE_ANNOTATION).cloned(),
        })
    }

    fn bundle(&self, layer: &Descriptor, bytes: &[u8], out: &mut Interpretation) {
        let unreadable =
            |why: String| self.unreadable(Scheme::Cosign, format!("{}: {why}", layer.digest));
        let bundle: Bundle = match serde_json::from_slice(bytes) {
            Ok(b) => b,
            Err(e) => {
                out.evidence.push(unreadable(format!(
                    "not a Sigstore bundle: {}",
                    shown(&e.to_string())
                )));
                return;
            }
        };
        let is_signature = match bundle.dsse_envelope {
            Some(envelope) => {
                let payload_type = envelope
                    .get("payloadType")
                    .and_then(serde_json::Value::as_str)
                    .map(essence)
                    .unwrap_or_default();
                if payload_type == SIMPLE_SIGNING_MEDIA_TYPE {
                    // A DSSE-wrapped simple-signing payload.
                    true
                } else {
                    let statement = serde_json::to_vec(&envelope)
                        .ok()
                        .and_then(|e| attestation::parse_envelope(&e).ok());
                    match statement {
                        Some(st) if st.predicate_type == COSIGN_SIGN_PREDICATE => true,
                        Some(st) => {
                            // An attestation: its DSSE signature vouches for the statement.
                            self.statement(&layer.digest, st, out);
                            return;
                        }
                        None => {
                            out.evidence.push(unreadable(
                                "the bundle's DSSE envelope holds neither an in-toto statement nor a simple-signing payload".into(),
                            ));
                            return;
                        }
                    }
                }
            }
            None => bundle.message_signature.is_some(),
        };
        if !is_signature {
            out.evidence.push(unreadable(
                "Sigstore bundle with neither messageSignature nor dsseEnvelope".into(),
            ));
        } else if bytes.len() > MAX_SIGNATURE_BUNDLE_BYTES {
            out.evidence.push(unreadable(format!(
                "a signature bundle of {} bytes, over the {MAX_SIGNATURE_BUNDLE_BYTES}-byte limit",
                bytes.len()
            )));
        } else {
            out.evidence
                .push(self.signature(SignatureMaterial::SigstoreBundle {
                    bundle: bytes.to_vec(),
                }));
        }
    }

    fn statement(&self, blob: &str, statement: Statement, out: &mut Interpretation) {
        if !statement.is_about(self.subject) {
            out.skipped.push(format!(
                "statement {blob} ({}) is not about {}",
                shown(&statement.predicate_type),
                self.subject
            ));
            return;
        }
        let pt = statement.predicate_type.as_str();
        if let Some(format) = sbom::format_of_predicate(pt) {
            out.evidence.push(Evidence::Sbom {
                source: self.source.to_owned(),
                format,
            });
            return;
        }
        match vuln::parse_statement(&statement) {
            Ok(summary) => out.evidence.push(Evidence::Vulnerabilities {
                source: self.source.to_owned(),
                summary,
            }),
            Err(vuln::VulnError::NotVulnPredicate(_)) => {
                if pt.chars().count() > MAX_PREDICATE_TYPE_CHARS {
                    out.skipped.push(format!(
                        "statement {blob}: predicate type over {MAX_PREDICATE_TYPE_CHARS} characters"
                    ));
                } else {
                    out.evidence.push(Evidence::Attestation {
                        source: self.source.to_owned(),
                        predicate_type: pt.to_owned(),
                    });
                }
            }
            Err(e) => out
                .skipped
                .push(format!("statement {blob}: {}", shown(&e.to_string()))),
        }
    }
}
