use std::fmt;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use imagelib_events::model::SealedCredential;
use rand::TryRngCore;
use secrecy::{ExposeSecret, SecretBox};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{Result, SecretsError};

/// The AEAD of every seal and wrap, as written in `SealedCredential::algorithm`.
pub const ALGORITHM: &str = "AES-256-GCM";
pub(crate) const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;

/// Bytes from the operating system's CSPRNG. A failing `getrandom` means a broken
/// system: panicking beats sealing with a predictable nonce.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    rand::rngs::OsRng
        .try_fill_bytes(&mut out)
        .expect("the operating system's random number generator failed");
    out
}

/// A registry's 256-bit data key. Zeroized on drop; `Debug` shows nothing.
pub struct DataKey(SecretBox<[u8; KEY_LEN]>);

impl DataKey {
    pub fn generate() -> Self {
        DataKey(SecretBox::init_with_mut(|k: &mut [u8; KEY_LEN]| {
            *k = random_bytes()
        }))
    }

    pub(crate) fn from_slice(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; KEY_LEN] = bytes.try_into().ok()?;
        Some(DataKey(SecretBox::init_with_mut(
            |k: &mut [u8; KEY_LEN]| k.copy_from_slice(bytes),
        )))
    }

    pub(crate) fn expose(&self) -> &[u8; KEY_LEN] {
        self.0.expose_secret()
    }

    fn cipher(&self) -> Aes256Gcm {
        aead_cipher(self.expose())
    }
}

impl Clone for DataKey {
    fn clone(&self) -> Self {
        DataKey(SecretBox::init_with_mut(|k: &mut [u8; KEY_LEN]| {
            k.copy_from_slice(self.expose())
        }))
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey([REDACTED])")
    }
}

/// A data key encrypted under a master key: safe to store (in the KV bucket).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedKey {
    /// The id of the master key that wrapped it (`MasterKeyring::primary_id` at the time).
    pub master_key_id: String,
    /// Base64 nonce.
    pub nonce: String,
    /// Base64 ciphertext with its tag.
    pub ciphertext: String,
}

pub(crate) fn aead_cipher(key: &[u8; KEY_LEN]) -> Aes256Gcm {
    Aes256Gcm::new(key.into())
}

/// Encrypts `plaintext` bound to `aad`; returns (nonce, ciphertext) as base64.
pub(crate) fn encrypt(cipher: &Aes256Gcm, plaintext: &[u8], aad: &[u8]) -> (String, String) {
    let nonce: [u8; NONCE_LEN] = random_bytes();
    let mut buffer = Zeroizing::new(plaintext.to_vec());
    cipher
        .encrypt_in_place(Nonce::from_slice(&nonce), aad, &mut *buffer)
        .expect("AES-GCM encryption cannot fail below its 64 GiB message limit");
    (STANDARD.encode(nonce), STANDARD.encode(&*buffer))
}

/// Decrypts base64 (nonce, ciphertext); the plaintext buffer is zeroized on every path.
pub(crate) fn decrypt(
    cipher: &Aes256Gcm,
    nonce: &str,
    ciphertext: &str,
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    let nonce = STANDARD
        .decode(nonce)
        .ok()
        .filter(|n| n.len() == NONCE_LEN)
        .ok_or(SecretsError::Malformed(
            "nonce (expected base64 of 12 bytes)",
        ))?;
    let mut buffer = Zeroizing::new(
        STANDARD
            .decode(ciphertext)
            .map_err(|_| SecretsError::Malformed("ciphertext (expected base64)"))?,
    );
    cipher
        .decrypt_in_place(Nonce::from_slice(&nonce), aad, &mut *buffer)
        .map_err(|_| SecretsError::Decrypt)?;
    Ok(buffer)
}

/// Seals `plaintext` with a data key. `aad` (the registry id) is authenticated but not
/// stored: opening with any other `aad` fails, so a sealed credential cannot be moved to
/// another registry.
pub fn seal(data_key: &DataKey, key_id: &str, plaintext: &[u8], aad: &[u8]) -> SealedCredential {
    let (nonce, ciphertext) = encrypt(&data_key.cipher(), plaintext, aad);
    SealedCredential {
        key_id: key_id.to_owned(),
        algorithm: ALGORITHM.to_owned(),
        nonce,
        ciphertext,
    }
}

/// Opens what [`seal`] sealed with the same data key and `aad`.
pub fn open(
    data_key: &DataKey,
    sealed: &SealedCredential,
    aad: &[u8],
) -> Result<SecretBox<Vec<u8>>> {
    if sealed.algorithm != ALGORITHM {
        return Err(SecretsError::UnsupportedAlgorithm);
    }
    let mut plaintext = decrypt(&data_key.cipher(), &sealed.nonce, &sealed.ciphertext, aad)?;
    Ok(SecretBox::new(Box::new(std::mem::take(&mut *plaintext))))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGISTRY: &[u8] = b"0b8e3c1e-5a57-4f55-9b1f-1b0d7cf5a001";
    const OTHER: &[u8] = b"0b8e3c1e-5a57-4f55-9b1f-1b0d7cf5a002";

    #[test]
    fn seal_and_open_round_trip() {
        let key = DataKey::generate();
        let sealed = seal(&key, "dk-1", b"robot$ai+scanner:s3cr3t", REGISTRY);
        assert_eq!(sealed.algorithm, ALGORITHM);
        assert_eq!(sealed.key_id, "dk-1");
        assert!(!sealed.ciphertext.contains("s3cr3t"));
        let opened = open(&key, &sealed, REGISTRY).unwrap();
        assert_eq!(
            opened.expose_secret().as_slice(),
            b"robot$ai+scanner:s3cr3t"
        );
    }

    #[test]
    fn nonces_are_fresh() {
        let key = DataKey::generate();
        let a = seal(&key, "k", b"same", REGISTRY);
        let b = seal(&key, "k", b"same", REGISTRY);
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn another_registry_cannot_open_it() {
        let key = DataKey::generate();
        let sealed = seal(&key, "k", b"password", REGISTRY);
        assert!(matches!(
            open(&key, &sealed, OTHER),
            Err(SecretsError::Decrypt)
        ));
    }

    #[test]
    fn another_key_cannot_open_it() {
        let sealed = seal(&DataKey::generate(), "k", b"password", REGISTRY);
        assert!(matches!(
            open(&DataKey::generate(), &sealed, REGISTRY),
            Err(SecretsError::Decrypt)
        ));
    }

    #[test]
    fn tampering_is_detected() {
        let key = DataKey::generate();
        let sealed = seal(&key, "k", b"password", REGISTRY);
        let mut bytes = STANDARD.decode(&sealed.ciphertext).unwrap();
        for i in [0, bytes.len() - 1] {
            bytes[i] ^= 1;
            let tampered = SealedCredential {
                ciphertext: STANDARD.encode(&bytes),
                ..sealed.clone()
            };
            assert!(matches!(
                open(&key, &tampered, REGISTRY),
                Err(SecretsError::Decrypt)
            ));
            bytes[i] ^= 1;
        }
        let mut nonce = STANDARD.decode(&sealed.nonce).unwrap();
        nonce[0] ^= 1;
        let tampered = SealedCredential {
            nonce: STANDARD.encode(&nonce),
            ..sealed.clone()
        };
        assert!(matches!(
            open(&key, &tampered, REGISTRY),
            Err(SecretsError::Decrypt)
        ));
        let wrong_alg = SealedCredential {
            algorithm: "ROT13".into(),
            ..sealed.clone()
        };
        assert!(matches!(
            open(&key, &wrong_alg, REGISTRY),
            Err(SecretsError::UnsupportedAlgorithm)
        ));
        let garbage = SealedCredential {
            nonce: "!!".into(),
            ..sealed
        };
        assert!(matches!(
            open(&key, &garbage, REGISTRY),
            Err(SecretsError::Malformed(_))
        ));
    }

    #[test]
    fn debug_shows_no_key_bytes() {
        let key = DataKey::from_slice(&[0xAB; KEY_LEN]).unwrap();
        let debug = format!("{key:?} {:?}", key.clone());
        assert_eq!(debug, "DataKey([REDACTED]) DataKey([REDACTED])");
        assert!(!debug.to_lowercase().contains("ab"));
        assert!(!debug.contains("171"));
        let sealed = seal(&key, "k", b"hunter2-plaintext", REGISTRY);
        let opened = open(&key, &sealed, REGISTRY).unwrap();
        let debug = format!("{opened:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(!debug.contains("104"), "{debug}");
    }

    #[test]
    fn errors_never_show_the_plaintext() {
        let key = DataKey::generate();
        let sealed = seal(&key, "k", b"hunter2-plaintext", REGISTRY);
        let err = open(&key, &sealed, OTHER).unwrap_err();
        for text in [err.to_string(), format!("{err:?}")] {
            assert!(!text.contains("hunter2"), "{text}");
        }
    }
}
