//! Recognising SBOMs: which format, which spec version, how many packages.
//!
//! An image's SBOM arrives either as an OCI artifact (referrer or attached blob, told apart
//! by media type) or as an in-toto predicate. The catalog only needs to know that one
//! exists and roughly what it covers; the documents themselves stay in the registry.

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const SPDX_MEDIA_TYPE: &str = "application/spdx+json";
pub const CYCLONEDX_MEDIA_TYPE: &str = "application/vnd.cyclonedx+json";
/// in-toto predicate types; a version suffix (`/v2.3`, `/v1.5`) is accepted.
pub const SPDX_PREDICATE: &str = "https://spdx.dev/Document";
pub const CYCLONEDX_PREDICATE: &str = "https://cyclonedx.org/bom";
/// Largest SBOM accepted.
pub const MAX_SBOM_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SbomFormat {
    Spdx,
    CycloneDx,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SbomSummary {
    pub format: SbomFormat,
    /// `SPDX-2.3`, `1.5`, … as written in the document.
    pub spec_version: String,
    /// SPDX `packages[]`, or CycloneDX `components[]` including nested components.
    pub packages: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SbomError {
    #[error("SBOM is {len} bytes, over the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("not JSON: {0}")]
    Json(String),
    #[error("neither SPDX (`spdxVersion`) nor CycloneDX (`bomFormat`) JSON")]
    Unrecognised,
    #[error("media type `{0}` is not an SBOM")]
    NotSbomMediaType(String),
    #[error("predicate type `{0}` is not an SBOM")]
    NotSbomPredicate(String),
    #[error("document is {found:?}, but was labelled {labelled:?}")]
    FormatMismatch {
        labelled: SbomFormat,
        found: SbomFormat,
    },
}

#[derive(Deserialize)]
struct Spdx {
    #[serde(rename = "spdxVersion")]
    spdx_version: String,
    #[serde(default)]
    packages: Vec<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct CycloneDx {
    #[serde(rename = "specVersion", default)]
    spec_version: String,
    #[serde(default)]
    components: Vec<Component>,
}

#[derive(Deserialize)]
struct Component {
    #[serde(default)]
    components: Vec<Component>,
}

fn count(components: &[Component]) -> u64 {
    components
        .iter()
        .map(|c| 1 + count(&c.components))
        .sum::<u64>()
}

/// Recognises an SBOM document by its content.
pub fn parse_value(doc: &Value) -> Result<SbomSummary, SbomError> {
    // cosign's older `--type spdx` stored the document as a JSON string.
    if let Value::String(inner) = doc {
        return parse_document(inner.as_bytes());
    }
    if doc.get("spdxVersion").is_some() {
        let spdx = Spdx::deserialize(doc).map_err(|e| SbomError::Json(e.to_string()))?;
        return Ok(SbomSummary {
            format: SbomFormat::Spdx,
            spec_version: spdx.spdx_version,
            packages: spdx.packages.len() as u64,
        });
    }
    if doc.get("bomFormat").and_then(Value::as_str) == Some("CycloneDX") {
        let bom = CycloneDx::deserialize(doc).map_err(|e| SbomError::Json(e.to_string()))?;
        return Ok(SbomSummary {
            format: SbomFormat::CycloneDx,
            spec_version: bom.spec_version,
            packages: count(&bom.components),
        });
    }
    Err(SbomError::Unrecognised)
}

/// Recognises an SBOM document (JSON bytes) by its content.
pub fn parse_document(bytes: &[u8]) -> Result<SbomSummary, SbomError> {
    if bytes.len() > MAX_SBOM_BYTES {
        return Err(SbomError::TooLarge {
            len: bytes.len(),
            max: MAX_SBOM_BYTES,
        });
    }
    let doc: Value = serde_json::from_slice(bytes).map_err(|e| SbomError::Json(e.to_string()))?;
    parse_value(&doc)
}

/// The SBOM format a media type names, if any (parameters and case ignored): the IANA
/// types `application/spdx+json` and `application/vnd.cyclonedx+json`, and the ones
/// cosign's SBOM spec lists for `.sbom` layers (`text/spdx`, `text/spdx+json`,
/// `text/spdx+xml`, `application/vnd.cyclonedx`, `application/vnd.cyclonedx+xml`).
pub fn format_of_media_type(media_type: &str) -> Option<SbomFormat> {
    let essence = media_type.split(';').next().unwrap_or("").trim();
    match essence.to_ascii_lowercase().as_str() {
        "application/spdx+json" | "text/spdx" | "text/spdx+json" | "text/spdx+xml" => {
            Some(SbomFormat::Spdx)
        }
        "application/vnd.cyclonedx"
        | "application/vnd.cyclonedx+json"
        | "application/vnd.cyclonedx+xml" => Some(SbomFormat::CycloneDx),
        _ => None,
    }
}

/// The SBOM format an in-toto predicate type names, if any (a version suffix is allowed).
pub fn format_of_predicate(predicate_type: &str) -> Option<SbomFormat> {
    if predicate_type.starts_with(SPDX_PREDICATE) {
        Some(SbomFormat::Spdx)
    } else if predicate_type.starts_with(CYCLONEDX_PREDICATE) {
        Some(SbomFormat::CycloneDx)
    } else {
        None
    }
}

fn check(labelled: SbomFormat, summary: SbomSummary) -> Result<SbomSummary, SbomError> {
    if summary.format != labelled {
        return Err(SbomError::FormatMismatch {
            labelled,
            found: summary.format,
        });
    }
    Ok(summary)
}

/// Parses an SBOM stored as an OCI artifact with `media_type` (parameters allowed).
pub fn parse_artifact(media_type: &str, bytes: &[u8]) -> Result<SbomSummary, SbomError> {
    let essence = media_type.split(';').next().unwrap_or("").trim();
    let labelled = match essence.to_ascii_lowercase().as_str() {
        SPDX_MEDIA_TYPE => SbomFormat::Spdx,
        CYCLONEDX_MEDIA_TYPE => SbomFormat::CycloneDx,
        _ => return Err(SbomError::NotSbomMediaType(media_type.to_owned())),
    };
    check(labelled, parse_document(bytes)?)
}

/// Parses the predicate of an in-toto Statement whose type is an SBOM type.
pub fn parse_predicate(predicate_type: &str, predicate: &Value) -> Result<SbomSummary, SbomError> {
    let labelled = if predicate_type.starts_with(SPDX_PREDICATE) {
        SbomFormat::Spdx
    } else if predicate_type.starts_with(CYCLONEDX_PREDICATE) {
        SbomFormat::CycloneDx
    } else {
        return Err(SbomError::NotSbomPredicate(predicate_type.to_owned()));
    };
    check(labelled, parse_value(predicate)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPDX: &str = r#"{"spdxVersion":"SPDX-2.3","dataLicense":"CC0-1.0","SPDXID":"SPDXRef-DOCUMENT",
      "name":"registry.example/team/app","documentNamespace":"https://example.invalid/app-1",
      "creationInfo":{"created":"2026-11-30T10:00:00Z","creators":["Tool: syft-1.16.0"]},
      "packages":[{"name":"openssl","SPDXID":"SPDXRef-Package-1","versionInfo":"3.0.1","downloadLocation":"NOASSERTION"},
                  {"name":"zlib","SPDXID":"SPDXRef-Package-2","versionInfo":"1.2","downloadLocation":"NOASSERTION"}],
      "relationships":[]}"#;

    const CDX: &str = r#"{"bomFormat":"CycloneDX","specVersion":"1.5","serialNumber":"urn:uuid:3e671687-395b-41f5-a30f-a58921a69b79","version":1,
      "metadata":{"component":{"type":"container","name":"app"}},
      "components":[{"type":"library","name":"requests","version":"2.32.0",
                     "components":[{"type":"library","name":"urllib3","version":"2.2.0"}]},
                    {"type":"operating-system","name":"debian","version":"12.8"}]}"#;

    #[test]
    fn spdx_artifact_is_recognised() {
        let s = parse_artifact(SPDX_MEDIA_TYPE, SPDX.as_bytes()).unwrap();
        assert_eq!(
            s,
            SbomSummary {
                format: SbomFormat::Spdx,
                spec_version: "SPDX-2.3".into(),
                packages: 2
            }
        );
    }

    #[test]
    fn cyclonedx_artifact_counts_nested_components() {
        let s = parse_artifact(
            "application/vnd.cyclonedx+json; version=1.5",
            CDX.as_bytes(),
        )
        .unwrap();
        assert_eq!(
            s,
            SbomSummary {
                format: SbomFormat::CycloneDx,
                spec_version: "1.5".into(),
                packages: 3
            }
        );
    }

    #[test]
    fn predicates_are_recognised_including_string_wrapped_spdx() {
        let cdx: Value = serde_json::from_str(CDX).unwrap();
        assert_eq!(
            parse_predicate("https://cyclonedx.org/bom/v1.5", &cdx)
                .unwrap()
                .packages,
            3
        );
        let wrapped = Value::String(SPDX.into());
        assert_eq!(
            parse_predicate(SPDX_PREDICATE, &wrapped).unwrap().format,
            SbomFormat::Spdx
        );
    }

    #[test]
    fn media_and_predicate_types_name_formats() {
        for (mt, f) in [
            ("application/spdx+json", Some(SbomFormat::Spdx)),
            ("text/spdx", Some(SbomFormat::Spdx)),
            ("Text/SPDX+JSON; charset=utf-8", Some(SbomFormat::Spdx)),
            (
                "application/vnd.cyclonedx+json; version=1.5",
                Some(SbomFormat::CycloneDx),
            ),
            ("application/vnd.cyclonedx+xml", Some(SbomFormat::CycloneDx)),
            ("application/json", None),
            ("application/vnd.syft+json", None),
        ] {
            assert_eq!(format_of_media_type(mt), f, "{mt}");
        }
        assert_eq!(
            format_of_predicate("https://spdx.dev/Document/v2.3"),
            Some(SbomFormat::Spdx)
        );
        assert_eq!(
            format_of_predicate("https://cyclonedx.org/bom/v1.5"),
            Some(SbomFormat::CycloneDx)
        );
        assert_eq!(format_of_predicate("https://slsa.dev/provenance/v1"), None);
    }

    #[test]
    fn mislabelled_and_foreign_documents_are_refused() {
        assert_eq!(
            parse_artifact(SPDX_MEDIA_TYPE, CDX.as_bytes()).unwrap_err(),
            SbomError::FormatMismatch {
                labelled: SbomFormat::Spdx,
                found: SbomFormat::CycloneDx
            }
        );
        assert_eq!(
            parse_artifact("application/json", SPDX.as_bytes()).unwrap_err(),
            SbomError::NotSbomMediaType("application/json".into())
        );
        assert_eq!(
            parse_document(br#"{"bomFormat":"Other"}"#).unwrap_err(),
            SbomError::Unrecognised
        );
        assert!(matches!(parse_document(b"\xff"), Err(SbomError::Json(_))));
        assert!(matches!(
            parse_predicate("https://slsa.dev/provenance/v1", &Value::Null),
            Err(SbomError::NotSbomPredicate(_))
        ));
    }
}
