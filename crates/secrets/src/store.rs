use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex};

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures::TryStreamExt;
use imagelib_events::RegistryId;
use serde::{Deserialize, Serialize};

use crate::envelope::{DataKey, WrappedKey};
use crate::error::{Result, SecretsError};
use crate::keyring::MasterKeyring;

/// The bucket both services use unless configured otherwise.
pub const DEFAULT_BUCKET: &str = "IMAGELIB_KEYS";

/// The bucket that goes with an event stream name (`IMAGELIB` → `IMAGELIB_KEYS`), so
/// a deployment or a test that isolates its stream isolates its keys too.
pub fn bucket_for_stream(stream: &str) -> String {
    format!("{stream}_KEYS")
}

const TOMBSTONE_PREFIX: &str = "shredded.";
const MAX_ATTEMPTS: usize = 16;

/// The value stored under a registry's KV key.
#[derive(Serialize, Deserialize)]
struct StoredKey {
    version: u32,
    key_id: String,
    wrapped: WrappedKey,
}

/// The per-registry data keys, wrapped by the master key, in a NATS KV bucket that
/// registry-registry and sync-scanner both reach (neither reads the other's database,
/// and the append-only event stream cannot forget). Destroying a key erases every
/// stream message that held it, so credentials sealed with it are dead for good.
///
/// Nothing unwrapped is cached: every read goes to the bucket, so a key destroyed by
/// any process is gone for every process at once. A key destroyed through this handle
/// (or a clone) is never served again by it, whatever the bucket says later.
#[derive(Clone)]
pub struct KeyStore {
    kv: kv::Store,
    destroyed: Arc<Mutex<HashSet<RegistryId>>>,
}

impl fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyStore")
            .field("bucket", &self.kv.name)
            .finish_non_exhaustive()
    }
}

fn data_key_aad(registry_id: RegistryId, key_id: &str) -> Vec<u8> {
    format!("imagelib/data-key/v1/{registry_id}/{key_id}").into_bytes()
}

fn tombstone(registry_id: RegistryId) -> String {
    format!("{TOMBSTONE_PREFIX}{registry_id}")
}

impl KeyStore {
    /// Opens the bucket, creating it if missing (history 1, file storage).
    ///
    /// The bucket's stream is created here rather than through `create_key_value`: it
    /// must allow deleting single messages, which is how `destroy` securely erases a key
    /// (and `create_key_value` needs an account-info reply that NATS 2.9 does not give).
    pub async fn open(js: &jetstream::Context, bucket: &str, replicas: usize) -> Result<Self> {
        let kv = match js.get_key_value(bucket).await {
            Ok(kv) => kv,
            Err(_) => {
                let config = jetstream::stream::Config {
                    name: format!("KV_{bucket}"),
                    description: Some(
                        "imagelib: registry data keys, wrapped by the master key".into(),
                    ),
                    subjects: vec![format!("$KV.{bucket}.>")],
                    max_messages_per_subject: 1,
                    storage: jetstream::stream::StorageType::File,
                    num_replicas: replicas.max(1),
                    allow_rollup: true,
                    deny_delete: false,
                    deny_purge: false,
                    allow_direct: true,
                    discard: jetstream::stream::DiscardPolicy::New,
                    ..Default::default()
                };
                if let Err(create) = js.get_or_create_stream(config).await {
                    return Err(SecretsError::store("create bucket", create));
                }
                js.get_key_value(bucket)
                    .await
                    .map_err(|e| SecretsError::store("open bucket", e))?
            }
        };
        let config = &kv.stream.cached_info().config;
        if config.deny_delete {
            tracing::warn!(
                bucket,
                "the key bucket denies message deletes: destroy can purge keys but not \
                 securely erase them on disk"
            );
        }
        let history = config.max_messages_per_subject;
        if history != 1 {
            tracing::warn!(
                bucket,
                history,
                "the key bucket keeps more than one revision; destroy still erases them all"
            );
        }
        Ok(KeyStore {
            kv,
            destroyed: Arc::default(),
        })
    }

    pub fn bucket(&self) -> &str {
        &self.kv.name
    }

    /// The registry's data key and its id, created and stored if it has none yet (so
    /// registration can be retried). Fails with `Shredded` once the key was destroyed.
    pub async fn create_data_key(
        &self,
        keyring: &MasterKeyring,
        registry_id: RegistryId,
    ) -> Result<(String, DataKey)> {
        if self.is_shredded(registry_id).await? {
            return Err(SecretsError::Shredded(registry_id));
        }
        if let Some(found) = self.data_key(keyring, registry_id).await? {
            return Ok(found);
        }
        let key_id = format!("dk-{}", uuid::Uuid::new_v4());
        let data_key = DataKey::generate();
        let value = encode(&StoredKey {
            version: 1,
            wrapped: keyring.wrap_with_aad(&data_key, &data_key_aad(registry_id, &key_id)),
            key_id: key_id.clone(),
        })?;
        match self.kv.create(registry_id.to_string(), value).await {
            Ok(_) => {}
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                return self
                    .data_key(keyring, registry_id)
                    .await?
                    .ok_or(SecretsError::Shredded(registry_id));
            }
            Err(e) => return Err(SecretsError::store("create data key", e)),
        }
        // `destroy` writes its tombstone before erasing: either it erases what was
        // just created, or this check sees the tombstone and erases it here.
        if self.is_shredded(registry_id).await? {
            self.destroy(registry_id).await?;
            return Err(SecretsError::Shredded(registry_id));
        }
        Ok((key_id, data_key))
    }

    /// The registry's data key and its id, unwrapped with whichever master key of
    /// `keyring` wrapped it; `None` if it has none (never created, or destroyed).
    pub async fn data_key(
        &self,
        keyring: &MasterKeyring,
        registry_id: RegistryId,
    ) -> Result<Option<(String, DataKey)>> {
        if self.destroyed_here(registry_id) {
            return Ok(None);
        }
        let Some((stored, _)) = self.read(registry_id).await? else {
            return Ok(None);
        };
        let aad = data_key_aad(registry_id, &stored.key_id);
        let data_key = keyring.unwrap_with_aad(&stored.wrapped, &aad)?;
        // Re-checked after the read: a concurrent `destroy` on this handle wins.
        if self.destroyed_here(registry_id) {
            return Ok(None);
        }
        Ok(Some((stored.key_id, data_key)))
    }

    /// Destroys the registry's data key for good (crypto-shredding). Every stream message
    /// that held it is securely erased and the key's subject purged, so neither `get`,
    /// `history` nor the raw stream can return it. A tombstone keeps it from being
    /// created again. Idempotent.
    pub async fn destroy(&self, registry_id: RegistryId) -> Result<()> {
        self.destroyed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(registry_id);
        self.kv
            .put(tombstone(registry_id), Bytes::from_static(b"shredded"))
            .await
            .map_err(|e| SecretsError::store("write tombstone", e))?;
        let key = registry_id.to_string();
        // Secure erase (the server overwrites the message on disk) of every revision
        // still there; the purge below only drops what is left.
        for _ in 0..MAX_ATTEMPTS {
            let entry = self
                .kv
                .entry(key.as_str())
                .await
                .map_err(|e| SecretsError::store("read data key", e))?;
            match entry {
                Some(e) if e.operation == kv::Operation::Put => {
                    if let Err(err) = self.kv.stream.delete_message(e.revision).await {
                        tracing::warn!(%registry_id, error = %err, "secure erase failed; purging only");
                        break;
                    }
                }
                _ => break,
            }
        }
        self.kv
            .purge(key.as_str())
            .await
            .map_err(|e| SecretsError::store("purge data key", e))?;
        // The purge leaves a marker message behind; remove that as well.
        self.kv
            .stream
            .purge()
            .filter(format!("{}{key}", self.kv.prefix))
            .await
            .map_err(|e| SecretsError::store("purge data key subject", e))?;
        tracing::info!(%registry_id, bucket = %self.kv.name, "data key destroyed");
        Ok(())
    }

    /// Whether the registry's data key was destroyed (by any process).
    pub async fn is_shredded(&self, registry_id: RegistryId) -> Result<bool> {
        if self.destroyed_here(registry_id) {
            return Ok(true);
        }
        let entry = self
            .kv
            .entry(tombstone(registry_id))
            .await
            .map_err(|e| SecretsError::store("read tombstone", e))?;
        Ok(entry.is_some_and(|e| e.operation == kv::Operation::Put))
    }

    /// Master-key rotation: re-wraps with the primary key every data key that another key
    /// of `keyring` wrapped, and returns how many this call re-wrapped. Safe to run from
    /// several processes at once: each write is conditional on the revision it read, and
    /// a key someone else re-wrapped (or destroyed) meanwhile is skipped.
    pub async fn rewrap_all(&self, keyring: &MasterKeyring) -> Result<usize> {
        let keys: Vec<String> = self
            .kv
            .keys()
            .await
            .map_err(|e| SecretsError::store("list data keys", e))?
            .try_collect()
            .await
            .map_err(|e| SecretsError::store("list data keys", e))?;
        let mut rewrapped = 0;
        for key in keys {
            let Ok(registry_id) = key.parse::<RegistryId>() else {
                continue;
            };
            match self.rewrap_one(keyring, registry_id).await {
                Ok(true) => rewrapped += 1,
                Ok(false) => {}
                // A key no master key of the ring opens stays as it is (a restored key file
                // may open it later); the registries' credentials are unavailable meanwhile.
                Err(SecretsError::UnknownMasterKey(master_key_id)) => {
                    tracing::error!(
                        %registry_id,
                        master_key_id,
                        bucket = %self.kv.name,
                        "the registry's data key is wrapped by master key {master_key_id}, which \
                         is not in the keyring: its credentials are unavailable until the key \
                         file holding {master_key_id} is restored or its credentials are entered \
                         again (PUT /v1/registries/{registry_id}/credentials)"
                    );
                }
                Err(SecretsError::Decrypt) => {
                    tracing::error!(%registry_id, bucket = %self.kv.name, "the registry's data key does not unwrap (tampered, or a different key with the same id); enter its credentials again");
                }
                Err(e) => return Err(e),
            }
        }
        tracing::info!(
            rewrapped,
            primary = keyring.primary_id(),
            bucket = %self.kv.name,
            "data keys re-wrapped"
        );
        Ok(rewrapped)
    }

    /// Whether the registry's data key can be opened with `keyring`: `Ok(true)` if it
    /// can, `Ok(false)` if there is none (never created, or destroyed), and the error
    /// (`UnknownMasterKey` naming the missing master key, or `Decrypt`) if it cannot.
    pub async fn check(&self, keyring: &MasterKeyring, registry_id: RegistryId) -> Result<bool> {
        Ok(self.data_key(keyring, registry_id).await?.is_some())
    }

    /// Recovery after a lost master key: replaces the registry's data key with a fresh one
    /// wrapped by the primary master key, but only if the stored one cannot be opened
    /// (`UnknownMasterKey` or `Decrypt`). Everything sealed with the old key is dead; the
    /// caller seals the credentials (and any other secret of the registry) again. Returns
    /// whether a key was replaced. A destroyed key is never replaced.
    pub async fn replace_unopenable(
        &self,
        keyring: &MasterKeyring,
        registry_id: RegistryId,
    ) -> Result<bool> {
        if self.is_shredded(registry_id).await? {
            return Err(SecretsError::Shredded(registry_id));
        }
        for _ in 0..MAX_ATTEMPTS {
            let Some((stored, revision)) = self.read(registry_id).await? else {
                return Ok(false);
            };
            let aad = data_key_aad(registry_id, &stored.key_id);
            match keyring.unwrap_with_aad(&stored.wrapped, &aad) {
                Ok(_) => return Ok(false),
                Err(SecretsError::UnknownMasterKey(_) | SecretsError::Decrypt) => {}
                Err(e) => return Err(e),
            }
            let key_id = format!("dk-{}", uuid::Uuid::new_v4());
            let data_key = DataKey::generate();
            let value = encode(&StoredKey {
                version: 1,
                wrapped: keyring.wrap_with_aad(&data_key, &data_key_aad(registry_id, &key_id)),
                key_id,
            })?;
            match self
                .kv
                .update(registry_id.to_string(), value, revision)
                .await
            {
                Ok(_) => {
                    tracing::warn!(
                        %registry_id,
                        lost_master_key = %stored.wrapped.master_key_id,
                        primary = keyring.primary_id(),
                        "the registry's unopenable data key was replaced by a new one"
                    );
                    if self.is_shredded(registry_id).await? {
                        self.destroy(registry_id).await?;
                        return Err(SecretsError::Shredded(registry_id));
                    }
                    return Ok(true);
                }
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(SecretsError::store("replace data key", e)),
            }
        }
        Err(SecretsError::store(
            "replace data key",
            "the key kept changing under concurrent writers",
        ))
    }

    async fn rewrap_one(&self, keyring: &MasterKeyring, registry_id: RegistryId) -> Result<bool> {
        for _ in 0..MAX_ATTEMPTS {
            let Some((stored, revision)) = self.read(registry_id).await? else {
                return Ok(false);
            };
            if stored.wrapped.master_key_id == keyring.primary_id() {
                return Ok(false);
            }
            let aad = data_key_aad(registry_id, &stored.key_id);
            let data_key = keyring.unwrap_with_aad(&stored.wrapped, &aad)?;
            let value = encode(&StoredKey {
                version: 1,
                wrapped: keyring.wrap_with_aad(&data_key, &aad),
                key_id: stored.key_id,
            })?;
            match self
                .kv
                .update(registry_id.to_string(), value, revision)
                .await
            {
                Ok(_) => return Ok(true),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(SecretsError::store("rewrap data key", e)),
            }
        }
        Err(SecretsError::store(
            "rewrap data key",
            "the key kept changing under concurrent writers",
        ))
    }

    async fn read(&self, registry_id: RegistryId) -> Result<Option<(StoredKey, u64)>> {
        let entry = self
            .kv
            .entry(registry_id.to_string())
            .await
            .map_err(|e| SecretsError::store("read data key", e))?;
        match entry {
            Some(e) if e.operation == kv::Operation::Put => {
                let stored: StoredKey = serde_json::from_slice(&e.value)
                    .map_err(|_| SecretsError::Malformed("stored data key"))?;
                Ok(Some((stored, e.revision)))
            }
            _ => Ok(None),
        }
    }

    fn destroyed_here(&self, registry_id: RegistryId) -> bool {
        self.destroyed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&registry_id)
    }
}

fn encode(stored: &StoredKey) -> Result<Bytes> {
    serde_json::to_vec(stored)
        .map(Bytes::from)
        .map_err(|_| SecretsError::Malformed("stored data key"))
}
