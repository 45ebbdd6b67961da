//! Registry credentials, sealed so they never appear in the clear, and destroyable
//! although the event log that carries them is append-only.
//!
//! Envelope encryption: each registry has its own AES-256-GCM **data key** that seals
//! its credentials ([`SealedCredential`] in the events, bound to the registry id as AAD
//! so a sealed value cannot be moved to another registry). Data keys are stored
//! **wrapped** by the **master key** ([`MasterKeyring`], the file named by
//! `IMAGELIB_MASTER_KEY_FILE`) in a NATS KV bucket ([`KeyStore`]): both services that
//! open credentials (registry-registry, sync-scanner) reach NATS but never each other's
//! database. Removing a registry destroys its data key (crypto-shredding): the ciphertext
//! left in the event log can then never be opened again. Rotating the master key means
//! putting a new key first in the file and re-wrapping the data keys
//! ([`KeyStore::rewrap_all`]); the credentials themselves are untouched.
//!
//! Secrets are held in `secrecy` types and zeroized on drop; `Debug` and error messages
//! never show key material or plaintext.

mod envelope;
mod error;
mod keyring;
mod store;
mod token;
mod vault;

pub use envelope::{ALGORITHM, DataKey, WrappedKey, open, seal};
pub use error::{Result, SecretsError};
pub use imagelib_events::model::SealedCredential;
pub use keyring::{MASTER_KEY_FILE_ENV, MasterKeyring};
pub use secrecy::{ExposeSecret, SecretBox, SecretString};
pub use store::{DEFAULT_BUCKET, KeyStore, bucket_for_stream};
pub use token::{constant_time_eq, generate_token, token_digest, verify_token};
pub use vault::Vault;
