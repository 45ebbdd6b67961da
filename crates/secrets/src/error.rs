use std::path::PathBuf;

use imagelib_events::RegistryId;

/// Every failure of this crate. Messages name files, ids and operations, never key
/// material, file content or plaintext: no variant carries any.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretsError {
    /// The master key file is unusable; `reason` is one of a fixed set of phrases.
    #[error("master key file {path}: {reason}")]
    MasterKeyFile { path: PathBuf, reason: &'static str },
    #[error("master key file {path}: line {line} is not the base64 encoding of a 32-byte key")]
    MasterKeyLine { path: PathBuf, line: usize },
    #[error("master key file {path}: {source}")]
    MasterKeyIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A data key is wrapped by a master key that is not in the keyring (the key file was
    /// lost or replaced): what it sealed stays unreadable until the file holding that key is
    /// restored, or the credentials are entered again (a new data key).
    #[error(
        "data key wrapped by master key {0}, which is not in the keyring: restore the master \
         key file that holds key {0} (keep old keys in the file until rewrap_all has run), or \
         enter the registry's credentials again"
    )]
    UnknownMasterKey(String),
    /// The registry's data key was destroyed: its sealed credentials are gone for good.
    #[error("the data key of registry {0} was destroyed (crypto-shredded)")]
    Shredded(RegistryId),
    /// Authentication failed: wrong key, wrong registry (AAD) or tampered data.
    #[error("decryption failed: wrong key, wrong registry or tampered data")]
    Decrypt,
    #[error("unsupported sealing algorithm (expected {})", crate::ALGORITHM)]
    UnsupportedAlgorithm,
    /// Stored or sealed data does not have the expected shape.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// The NATS key-value store failed.
    #[error("key store: {op}: {source}")]
    Store {
        op: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl SecretsError {
    pub(crate) fn store(
        op: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        SecretsError::Store {
            op,
            source: source.into(),
        }
    }
}

pub type Result<T, E = SecretsError> = std::result::Result<T, E>;
