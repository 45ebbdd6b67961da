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
