use std::sync::Arc;

use async_nats::jetstream;
use imagelib_events::RegistryId;
use imagelib_events::model::SealedCredential;
use secrecy::{ExposeSecret, SecretBox};
use serde::Serialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use crate::envelope::{ALGORITHM, open, seal};
use crate::error::{Result, SecretsError};
use crate::keyring::MasterKeyring;
use crate::store::KeyStore;

/// What services use: seal a registry's secrets for the event log, open them where
/// needed, shred them when the registry is removed.
#[derive(Debug, Clone)]
pub struct Vault {
    keyring: Arc<MasterKeyring>,
    store: KeyStore,
}

/// The AAD of a registry's sealed secrets: its id, plus the field name when one registry
/// holds several secrets, so one cannot be swapped for another.
fn aad(registry_id: RegistryId, field: &str) -> Vec<u8> {
    if field.is_empty() {
        registry_id.to_string().into_bytes()
    } else {
        format!("{registry_id}#{field}").into_bytes()
    }
}

impl Vault {
    pub fn new(keyring: Arc<MasterKeyring>, store: KeyStore) -> Self {
        Vault { keyring, store }
    }

    /// Opens (creating if needed) the key bucket and pairs it with `keyring`.
    pub async fn connect(
        js: &jetstream::Context,
        bucket: &str,
        replicas: usize,
        keyring: Arc<MasterKeyring>,
    ) -> Result<Self> {
        Ok(Vault::new(
            keyring,
            KeyStore::open(js, bucket, replicas).await?,
        ))
    }

    pub fn keyring(&self) -> &MasterKeyring {
        &self.keyring
    }

    pub fn store(&self) -> &KeyStore {
        &self.store
    }

    /// Seals `plaintext` with the registry's data key (created on first use), bound to
    /// the registry id.
    pub async fn seal_for(
        &self,
        registry_id: RegistryId,
        plaintext: &[u8],
    ) -> Result<SealedCredential> {
        self.seal_field(registry_id, "", plaintext).await
    }

    pub async fn open_for(
        &self,
        registry_id: RegistryId,
        sealed: &SealedCredential,
    ) -> Result<SecretBox<Vec<u8>>> {
        self.open_field(registry_id, "", sealed).await
    }

    /// Like [`Self::seal_for`], also bound to `field` (e.g. `webhook_secret`): it opens
    /// only with [`Self::open_field`] and the same field.
    pub async fn seal_field(
        &self,
        registry_id: RegistryId,
        field: &str,
        plaintext: &[u8],
    ) -> Result<SealedCredential> {
        let (key_id, data_key) = self
            .store
            .create_data_key(&self.keyring, registry_id)
            .await?;
        Ok(seal(
            &data_key,
            &key_id,
            plaintext,
            &aad(registry_id, field),
        ))
    }

    /// Opens what [`Self::seal_field`] sealed. `Shredded` once the registry's data key
    /// was destroyed; `Decrypt` for another registry's, another field's or tampered data.
    pub async fn open_field(
        &self,
        registry_id: RegistryId,
        field: &str,
        sealed: &SealedCredential,
    ) -> Result<SecretBox<Vec<u8>>> {
        if sealed.algorithm != ALGORITHM {
            return Err(SecretsError::UnsupportedAlgorithm);
        }
        let Some((key_id, data_key)) = self.store.data_key(&self.keyring, registry_id).await?
        else {
            return Err(SecretsError::Shredded(registry_id));
        };
        if key_id != sealed.key_id {
            return Err(SecretsError::Decrypt);
        }
        open(&data_key, sealed, &aad(registry_id, field))
    }

    /// Seals a value as JSON (the serialized bytes are zeroized after sealing).
    pub async fn seal_json_for<T: Serialize>(
        &self,
        registry_id: RegistryId,
        value: &T,
    ) -> Result<SealedCredential> {
        let json = Zeroizing::new(
            serde_json::to_vec(value).map_err(|_| SecretsError::Malformed("secret value"))?,
        );
        self.seal_for(registry_id, &json).await
    }

    /// Opens and parses what [`Self::seal_json_for`] sealed. A parse error says nothing of
    /// the content (serde's messages may quote it).
    pub async fn open_json_for<T: DeserializeOwned>(
        &self,
        registry_id: RegistryId,
        sealed: &SealedCredential,
    ) -> Result<T> {
        let plaintext = self.open_for(registry_id, sealed).await?;
        serde_json::from_slice(plaintext.expose_secret())
            .map_err(|_| SecretsError::Malformed("secret value (not the expected JSON shape)"))
    }

    /// Whether the registry's data key opens with this vault's keyring (see
    /// [`KeyStore::check`]): an `UnknownMasterKey` error names the master key that is missing.
    pub async fn check(&self, registry_id: RegistryId) -> Result<bool> {
        self.store.check(&self.keyring, registry_id).await
    }

    /// Replaces the registry's data key if it cannot be opened (the master key that wrapped
    /// it is lost), so new credentials can be sealed; see [`KeyStore::replace_unopenable`].
    pub async fn replace_unopenable(&self, registry_id: RegistryId) -> Result<bool> {
        self.store
            .replace_unopenable(&self.keyring, registry_id)
            .await
    }

    /// Destroys the registry's data key: everything sealed for it becomes unrecoverable.
    pub async fn shred(&self, registry_id: RegistryId) -> Result<()> {
        self.store.destroy(registry_id).await
    }

    /// Re-wraps every data key with the keyring's primary key (after a rotation).
    pub async fn rewrap_all(&self) -> Result<usize> {
        self.store.rewrap_all(&self.keyring).await
    }
}
