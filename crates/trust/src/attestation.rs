//! DSSE envelopes and in-toto Statements, the wrapping around every attestation.
//!
//! `cosign attest` stores a DSSE envelope whose base64 payload is an in-toto Statement;
//! the Statement names the subject images by digest and carries a typed predicate (a
//! vulnerability scan, an SBOM, …). This module only unwraps: the envelope's signatures
//! are not verified here yet, so a caller must not treat the content as vouched for.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

/// The DSSE `payloadType` of an in-toto Statement.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// Largest envelope or Statement accepted (scan results of big images run to megabytes).
pub const MAX_ATTESTATION_BYTES: usize = 16 * 1024 * 1024;

/// Why an attestation could not be unwrapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttestationError {
    #[error("attestation is {len} bytes, over the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("not a DSSE envelope: {0}")]
    Envelope(String),
    #[error("DSSE payloadType is `{0}`, not `{IN_TOTO_PAYLOAD_TYPE}`")]
    PayloadType(String),
    #[error("DSSE payload is not valid base64")]
    PayloadEncoding,
    #[error("not an in-toto Statement: {0}")]
    Statement(String),
}

/// An in-toto Statement, reduced to what imagelib uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub predicate_type: String,
    /// `sha256:<hex>` of every subject that carries a sha256 digest.
    pub subject_digests: Vec<String>,
    pub predicate: serde_json::Value,
}

impl Statement {
    /// True when `image_digest` (`sha256:<hex>`) is one of the subjects.
    pub fn is_about(&self, image_digest: &str) -> bool {
        self.subject_digests
            .iter()
            .any(|d| d.eq_ignore_ascii_case(image_digest))
    }
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "payloadType")]
    payload_type: String,
    payload: String,
}

#[derive(Deserialize)]
struct RawStatement {
    #[serde(rename = "predicateType")]
    predicate_type: String,
    #[serde(default)]
    subject: Vec<Subject>,
    #[serde(default)]
    predicate: serde_json::Value,
}

#[derive(Deserialize)]
struct Subject {
    #[serde(default)]
    digest: std::collections::BTreeMap<String, String>,
}

fn bounded(bytes: &[u8]) -> Result<(), AttestationError> {
    if bytes.len() > MAX_ATTESTATION_BYTES {
        return Err(AttestationError::TooLarge {
            len: bytes.len(),
            max: MAX_ATTESTATION_BYTES,
        });
    }
    Ok(())
}

/// Unwraps a DSSE envelope (JSON) holding an in-toto Statement. Signatures are not checked.
pub fn parse_envelope(bytes: &[u8]) -> Result<Statement, AttestationError> {
    bounded(bytes)?;
    let env: Envelope =
        serde_json::from_slice(bytes).map_err(|e| AttestationError::Envelope(e.to_string()))?;
    if env.payload_type != IN_TOTO_PAYLOAD_TYPE {
        return Err(AttestationError::PayloadType(env.payload_type));
    }
    let payload = STANDARD
        .decode(env.payload.trim())
        .map_err(|_| AttestationError::PayloadEncoding)?;
    parse_statement(&payload)
}

/// Parses an in-toto Statement (JSON).
pub fn parse_statement(bytes: &[u8]) -> Result<Statement, AttestationError> {
    bounded(bytes)?;
    let raw: RawStatement =
        serde_json::from_slice(bytes).map_err(|e| AttestationError::Statement(e.to_string()))?;
    let subject_digests = raw
        .subject
        .iter()
        .filter_map(|s| s.digest.get("sha256"))
        .map(|hex| format!("sha256:{hex}"))
        .collect();
    Ok(Statement {
        predicate_type: raw.predicate_type,
        subject_digests,
        predicate: raw.predicate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945";

    fn statement() -> String {
        format!(
            r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[{{"name":"registry.example/app","digest":{{"sha256":"{HEX}"}}}}],"predicateType":"https://spdx.dev/Document","predicate":{{"spdxVersion":"SPDX-2.3"}}}}"#
        )
    }

    #[test]
    fn envelope_unwraps_to_statement_with_subjects() {
        let env = format!(
            r#"{{"payloadType":"application/vnd.in-toto+json","payload":"{}","signatures":[{{"keyid":"","sig":"AAAA"}}]}}"#,
            STANDARD.encode(statement())
        );
        let st = parse_envelope(env.as_bytes()).unwrap();
        assert_eq!(st.predicate_type, "https://spdx.dev/Document");
        assert_eq!(st.subject_digests, vec![format!("sha256:{HEX}")]);
        assert!(st.is_about(&format!("sha256:{HEX}")));
        assert!(!st.is_about("sha256:00"));
        assert_eq!(st.predicate["spdxVersion"], "SPDX-2.3");
    }

    #[test]
    fn wrong_payload_type_and_bad_base64_are_refused() {
        let env = r#"{"payloadType":"text/plain","payload":"AAAA","signatures":[]}"#;
        assert_eq!(
            parse_envelope(env.as_bytes()).unwrap_err(),
            AttestationError::PayloadType("text/plain".into())
        );
        let env =
            r#"{"payloadType":"application/vnd.in-toto+json","payload":"!!","signatures":[]}"#;
        assert_eq!(
            parse_envelope(env.as_bytes()).unwrap_err(),
            AttestationError::PayloadEncoding
        );
        assert!(matches!(
            parse_envelope(b"[]").unwrap_err(),
            AttestationError::Envelope(_)
        ));
        assert!(matches!(
            parse_statement(b"{\"subject\":[]}").unwrap_err(),
            AttestationError::Statement(_)
        ));
    }
}
