//! Signature envelopes from a registry: DSSE, Sigstore bundles, Notation JWS, and the
//! trust root and CA files an operator hands the scanner.
#![no_main]

use libfuzzer_sys::fuzz_target;

const SUBJECT: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

fuzz_target!(|data: &[u8]| {
    let verifier = imagelib_trust::evidence::Verifier::new(chrono::DateTime::UNIX_EPOCH);
    let _ = imagelib_trust::dsse::verify_envelope(data, &verifier);
    let _ = imagelib_trust::bundle::verify_bundle(data, SUBJECT, &verifier);
    let _ = imagelib_trust::notation::verify_jws(data, SUBJECT, &verifier);
    let _ = imagelib_trust::trust_root::TrustRoot::from_json(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = imagelib_trust::notation::NotationTrustStore::from_pem(text);
        let _ = imagelib_trust::cosign::PublicKey::from_pem(text);
    }
});
