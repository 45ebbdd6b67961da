//! Reading a referrer once: its manifest, then only the blobs its interpretation needs,
//! each within the size limit, and what they say ([`Evidence`]).
//!
//! A referrer is content-addressed, so what is read is kept for good (`referrer_content`)
//! and re-read from there on every evaluation. Nothing here fails a scan: an unreadable
//! manifest is stored as nothing to say, an oversized blob is skipped with a finding.

use std::collections::HashMap;

use imagelib_events::{Digest, RepositoryName};
use imagelib_trust::evidence::{Evidence, Scheme, SignatureEvidence, SignatureMaterial};
use imagelib_trust::{attestation, cosign, sbom, vuln};
use registry_client::{Descriptor, Manifest, Reference, RegistryClient};

use super::state::StoredReferrer;

/// At most this many blobs of one referrer are read.
pub const MAX_BLOBS_PER_REFERRER: usize = 16;

const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const DSSE: &str = "application/vnd.dsse.envelope.v1+json";
const SIGSTORE_BUNDLE: &str = "application/vnd.dev.sigstore.bundle";
const NOTARY_SIGNATURE: &str = "application/vnd.cncf.notary.signature";
const JWS: &str = "application/jose+json";
const COSE: &str = "application/cose";

/// What a layer of a referrer is, for reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LayerKind {
    CosignSignature,
    Attestation,
    Bundle,
    Notation,
    Sbom,
    Trivy,
}

fn essence(media_type: &str) -> String {
    media_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn layer_kind(artifact_type: Option<&str>, layer: &Descriptor) -> Option<LayerKind> {
    let m = essence(&layer.media_type);
    let a = artifact_type.map(essence).unwrap_or_default();
    Some(match m.as_str() {
        SIMPLE_SIGNING => LayerKind::CosignSignature,
        DSSE => LayerKind::Attestation,
        _ if m.starts_with(SIGSTORE_BUNDLE) => LayerKind::Bundle,
        JWS | COSE if a == NOTARY_SIGNATURE => LayerKind::Notation,
        sbom::SPDX_MEDIA_TYPE | sbom::CYCLONEDX_MEDIA_TYPE => LayerKind::Sbom,
        _ if m.contains("trivy") || (a.contains("trivy") && m.ends_with("json")) => {
            LayerKind::Trivy
        }
        _ => return None,
    })
}

/// The layers of a referrer manifest worth reading.
pub fn plan(manifest: &Manifest) -> Vec<&Descriptor> {
    let Manifest::Image(m) = manifest else {
        return Vec::new();
    };
    let artifact_type = m.effective_artifact_type();
    m.layers
        .iter()
        .filter(|l| layer_kind(artifact_type, l).is_some())
        .take(MAX_BLOBS_PER_REFERRER)
        .collect()
}

/// Whether a referrer (by its manifest) is a signature.
pub fn is_signature(manifest: &Manifest) -> bool {
    let Manifest::Image(m) = manifest else {
        return false;
    };
    let artifact_type = m.effective_artifact_type();
    m.layers.iter().any(|l| {
        matches!(
            layer_kind(artifact_type, l),
            Some(LayerKind::CosignSignature | LayerKind::Bundle | LayerKind::Notation)
        )
    })
}

/// Why a referrer was not read (the scan goes on; the referrer is retried later).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("referrer {digest}: {source}")]
    Registry {
        digest: Digest,
        #[source]
        source: registry_client::Error,
    },
    #[error("referrer {0}: the scan's referrer byte budget is spent")]
    Budget(Digest),
}

/// Reads `digest` (a referrer of something in `repository`): its manifest and the blobs
/// [`plan`] asks for, none over `max_blob_bytes`. `budget` is decremented by what was
/// read; a blob that would exceed it is skipped.
pub async fn fetch(
    client: &RegistryClient,
    repository: &RepositoryName,
    digest: &Digest,
    max_blob_bytes: u64,
    budget: &std::sync::atomic::AtomicU64,
) -> Result<StoredReferrer, FetchError> {
    use std::sync::atomic::Ordering;
    let err = |source| FetchError::Registry {
        digest: digest.clone(),
        source,
    };
    let fetched = client
        .get_manifest(repository, &Reference::Digest(digest.clone()))
        .await
        .map_err(err)?;
    let take = |n: u64| {
        budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(n)
            })
            .is_ok()
    };
    let _ = take(fetched.raw.len() as u64);
    let mut stored = StoredReferrer {
        digest: digest.clone(),
        media_type: fetched.media_type.clone(),
        manifest: fetched.raw.to_vec(),
        blobs: HashMap::new(),
        skipped: Vec::new(),
        stored_at: chrono::Utc::now(),
    };
    for layer in plan(&fetched.manifest) {
        if layer.size > max_blob_bytes {
            stored.skipped.push(format!(
                "blob {} ({}) is {} bytes, over the {max_blob_bytes}-byte limit",
                layer.digest, layer.media_type, layer.size
            ));
            continue;
        }
        if !take(layer.size) {
            return Err(FetchError::Budget(digest.clone()));
        }
        match client
            .get_blob_bounded(repository, &layer.digest, max_blob_bytes)
            .await
        {
            Ok(body) => {
                stored.blobs.insert(layer.digest.to_string(), body.to_vec());
            }
            Err(e) if e.cap().is_some() => stored.skipped.push(format!(
                "blob {} ({}) is over the size limit: {e}",
                layer.digest, layer.media_type
            )),
            Err(e) => return Err(err(e)),
        }
    }
    Ok(stored)
}

/// The scheme of a signature referrer's layers.
fn scheme_of(manifest: &Manifest) -> Scheme {
    let Manifest::Image(m) = manifest else {
        return Scheme::Cosign;
    };
    let artifact_type = m.effective_artifact_type();
    if m.layers
        .iter()
        .any(|l| layer_kind(artifact_type, l) == Some(LayerKind::Notation))
    {
        Scheme::Notation
    } else {
        Scheme::Cosign
    }
}

/// Interprets a stored referrer. Never fails: what cannot be read says nothing, or (for
/// a signature) says it is an invalid signature.
pub fn interpret(stored: &StoredReferrer) -> Vec<Evidence> {
    let source = stored.digest.to_string();
    let Ok((manifest, _)) = Manifest::parse(Some(&stored.media_type), &stored.manifest) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if is_signature(&manifest) && !stored.skipped.is_empty() {
        out.push(Evidence::UnreadableSignature {
            source: source.clone(),
            scheme: scheme_of(&manifest),
            reason: stored.skipped.join("; "),
        });
    }
    let Manifest::Image(m) = &manifest else {
        return out;
    };
    let artifact_type = m.effective_artifact_type();
    for layer in &m.layers {
        let Some(kind) = layer_kind(artifact_type, layer) else {
            continue;
        };
        let Some(body) = stored.blobs.get(layer.digest.as_str()) else {
            continue;
        };
        let annotation = |k: &str| layer.annotations.get(k).cloned();
        match kind {
            LayerKind::CosignSignature => {
                let Some(signature) = annotation(cosign::SIGNATURE_ANNOTATION) else {
                    out.push(Evidence::UnreadableSignature {
                        source: source.clone(),
                        scheme: Scheme::Cosign,
                        reason: format!("layer {} has no signature annotation", layer.digest),
                    });
                    continue;
                };
                out.push(Evidence::Signature(SignatureEvidence {
                    source: source.clone(),
                    material: SignatureMaterial::Cosign {
                        payload: body.clone(),
                        signature,
                        certificate: annotation(cosign::CERTIFICATE_ANNOTATION),
                        chain: annotation(cosign::CHAIN_ANNOTATION),
                        bundle: annotation(cosign::BUNDLE_ANNOTATION),
                    },
                }));
            }
            LayerKind::Bundle => out.push(Evidence::Signature(SignatureEvidence {
                source: source.clone(),
                material: SignatureMaterial::SigstoreBundle {
                    bundle: body.clone(),
                },
            })),
            LayerKind::Notation => out.push(Evidence::Signature(SignatureEvidence {
                source: source.clone(),
                material: SignatureMaterial::Notation {
                    media_type: essence(&layer.media_type),
                    envelope: body.clone(),
                },
            })),
            LayerKind::Attestation => {
                let Ok(statement) = attestation::parse_envelope(body) else {
                    continue;
                };
                if let Ok(summary) = vuln::parse_statement(&statement) {
                    out.push(Evidence::Vulnerabilities {
                        source: source.clone(),
                        summary,
                    });
                } else if let Ok(s) =
                    sbom::parse_predicate(&statement.predicate_type, &statement.predicate)
                {
                    out.push(Evidence::Sbom {
                        source: source.clone(),
                        format: s.format,
                    });
                } else {
                    out.push(Evidence::Attestation {
                        source: source.clone(),
                        predicate_type: statement.predicate_type.chars().take(256).collect(),
                    });
                }
            }
            LayerKind::Sbom => {
                if let Ok(s) = sbom::parse_artifact(&layer.media_type, body) {
                    out.push(Evidence::Sbom {
                        source: source.clone(),
                        format: s.format,
                    });
                }
            }
            LayerKind::Trivy => {
                if let Ok(summary) = vuln::parse_trivy(body) {
                    out.push(Evidence::Vulnerabilities {
                        source: source.clone(),
                        summary,
                    });
                }
            }
        }
    }
    out
}
