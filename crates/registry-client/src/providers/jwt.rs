//! RS256 JWTs signed with a PEM RSA private key, shared by the providers that sign their
//! own assertions (a Google service account's JWT bearer grant, a GitHub App's JWT).
//! `ring` does the signing: it is already in the tree (rustls) and constant-time.

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use secrecy::SecretString;

use crate::error::{Error, Result};

/// A parsed RSA private key and the randomness its signatures need.
pub(crate) struct RsaSigner {
    key: RsaKeyPair,
    rng: SystemRandom,
    /// What the key is, for errors (`the GitHub App private_key`); never the key.
    what: &'static str,
}

impl RsaSigner {
    /// A PEM RSA key: PKCS#8 (`PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`). Errors name
    /// `what` and never quote the key.
    pub(crate) fn from_pem(pem: &str, what: &'static str) -> Result<Self> {
        let refused = |why: &str| Error::Config(format!("{what} {why}"));
        let (label, der) = pem_body(pem).ok_or_else(|| refused("is not a PEM block"))?;
        let key = match label {
            "PRIVATE KEY" => RsaKeyPair::from_pkcs8(&der),
            "RSA PRIVATE KEY" => RsaKeyPair::from_der(&der),
            _ => return Err(refused("is not an RSA private key")),
        }
        .map_err(|e| refused(&format!("is not a usable RSA key ({e})")))?;
        Ok(RsaSigner {
            key,
            rng: SystemRandom::new(),
            what,
        })
    }

    /// `base64url(header).base64url(claims).base64url(RS256 signature)`.
    pub(crate) fn sign(
        &self,
        header: &serde_json::Value,
        claims: &serde_json::Value,
    ) -> Result<SecretString> {
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let signing_input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &self.rng,
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| Error::Config(format!("cannot sign the JWT with {}", self.what)))?;
        Ok(SecretString::from(format!(
            "{signing_input}.{}",
            b64(&signature)
        )))
    }
}

/// The label and DER bytes of the first PEM block of `pem`.
pub(crate) fn pem_body(pem: &str) -> Option<(&str, Vec<u8>)> {
    let start = pem.find("-----BEGIN ")?;
    let rest = &pem[start + "-----BEGIN ".len()..];
    let (label, rest) = rest.split_once("-----")?;
    let end = rest.find(&format!("-----END {label}-----"))?;
    let body: String = rest[..end].chars().filter(|c| !c.is_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .ok()?;
    Some((label, der))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_bodies() {
        let (label, der) =
            pem_body("x\n-----BEGIN PRIVATE KEY-----\nAAEC\nAw==\n-----END PRIVATE KEY-----\n")
                .unwrap();
        assert_eq!(label, "PRIVATE KEY");
        assert_eq!(der, [0, 1, 2, 3]);
        assert!(
            pem_body("-----BEGIN PRIVATE KEY-----\nAAEC\n-----END RSA PRIVATE KEY-----").is_none()
        );
    }

    #[test]
    fn keys_that_are_not_rsa_are_refused_without_quoting_them() {
        for pem in [
            "canary",
            "-----BEGIN PRIVATE KEY-----\nY2FuYXJ5\n-----END PRIVATE KEY-----\n",
            "-----BEGIN EC PRIVATE KEY-----\nY2FuYXJ5\n-----END EC PRIVATE KEY-----\n",
        ] {
            let Err(err) = RsaSigner::from_pem(pem, "the key") else {
                panic!("{pem} accepted");
            };
            let text = err.to_string();
            assert!(text.starts_with("config: the key "), "{text}");
            assert!(
                !text.contains("canary") && !text.contains("Y2FuYXJ5"),
                "{text}"
            );
        }
    }
}
