use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::envelope::random_bytes;

/// A fresh random token (32 bytes from the OS CSPRNG, URL-safe base64 without padding),
/// e.g. a registry's webhook secret.
pub fn generate_token() -> SecretString {
    let bytes = zeroize::Zeroizing::new(random_bytes::<32>());
    SecretString::from(URL_SAFE_NO_PAD.encode(&bytes[..]))
}

/// Equality whose time does not depend on where the inputs differ (only on their
/// lengths): for comparing presented secrets.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// `sha256:<hex>` of a high-entropy token, for storing a token that only needs to be
/// recognised, never shown again.
pub fn token_digest(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Whether `presented` is the token whose [`token_digest`] is `digest`, compared in
/// constant time.
pub fn verify_token(presented: &str, digest: &str) -> bool {
    constant_time_eq(token_digest(presented).as_bytes(), digest.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn tokens_are_random_url_safe_and_redacted() {
        let a = generate_token();
        let b = generate_token();
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert_eq!(a.expose_secret().len(), 43);
        assert_eq!(URL_SAFE_NO_PAD.decode(a.expose_secret()).unwrap().len(), 32);
        assert!(
            a.expose_secret()
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        let debug = format!("{a:?}");
        assert!(!debug.contains(a.expose_secret()), "{debug}");
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn digests_verify_only_their_token() {
        let token = generate_token();
        let digest = token_digest(token.expose_secret());
        assert!(digest.starts_with("sha256:"));
        assert_eq!(digest.len(), 7 + 64);
        assert!(!digest.contains(token.expose_secret()));
        assert!(verify_token(token.expose_secret(), &digest));
        assert!(!verify_token(generate_token().expose_secret(), &digest));
        assert!(!verify_token("", &digest));
    }
}
