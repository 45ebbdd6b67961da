//! Untrusted registry bytes must never panic the verifier or the key parser.

use imagelib_trust::cosign::{PublicKey, verify};
use proptest::prelude::*;

const DIGEST: &str = "sha256:4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945";
const KEY: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=
-----END PUBLIC KEY-----";

proptest! {
    #[test]
    fn verify_never_panics(payload in proptest::collection::vec(any::<u8>(), 0..2048), sig in ".{0,200}") {
        let key = PublicKey::from_pem(KEY).unwrap();
        prop_assert!(!verify(&[key], &payload, &sig, DIGEST).is_verified());
    }

    #[test]
    fn report_parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = imagelib_trust::vuln::parse_trivy(&bytes);
        let _ = imagelib_trust::vuln::parse_envelope(&bytes);
        let _ = imagelib_trust::attestation::parse_statement(&bytes);
        let _ = imagelib_trust::sbom::parse_document(&bytes);
    }

    #[test]
    fn report_parsers_never_panic_on_json_shaped_text(text in "[\\[\\]{}\":,0-9a-zA-Z .-]{0,400}") {
        let _ = imagelib_trust::vuln::parse_trivy(text.as_bytes());
        let _ = imagelib_trust::vuln::parse_envelope(text.as_bytes());
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
            let _ = imagelib_trust::vuln::parse_predicate(imagelib_trust::vuln::COSIGN_VULN_PREDICATE, &v);
            let _ = imagelib_trust::vuln::parse_predicate(imagelib_trust::vuln::IN_TOTO_VULNS_PREDICATE, &v);
            let _ = imagelib_trust::sbom::parse_predicate(imagelib_trust::sbom::CYCLONEDX_PREDICATE, &v);
        }
    }

    #[test]
    fn key_parser_never_panics(pem in ".{0,600}") {
        let _ = PublicKey::from_pem(&pem);
    }

    #[test]
    fn key_parser_never_panics_on_pem_framed_bytes(der in proptest::collection::vec(any::<u8>(), 0..300)) {
        use base64::Engine as _;
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(der)
        );
        let _ = PublicKey::from_pem(&pem);
    }
}
