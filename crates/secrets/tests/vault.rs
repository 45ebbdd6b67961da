//! The vault against a real NATS JetStream: sealing, shredding (checked in the raw
//! stream), master-key rotation and concurrent re-wrapping.

use std::sync::Arc;

use anyhow::{Context as _, Result, ensure};
use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use imagelib_events::RegistryId;
use imagelib_secrets::{
    ExposeSecret, KeyStore, MasterKeyring, SealedCredential, SecretsError, Vault,
};

const CANARY: &str = "canary-P4ssw0rd-7f3e";

/// A KV bucket of this test's own, deleted on drop (also when the test panics).
struct Bucket {
    name: String,
    js: jetstream::Context,
}

impl Bucket {
    async fn new() -> Result<Self> {
        imagelib_testkit::init_tracing();
        let client = async_nats::connect(imagelib_testkit::nats_url()).await?;
        Ok(Bucket {
            name: format!("T_{}", imagelib_testkit::unique_id()),
            js: jetstream::new(client),
        })
    }

    /// A store on a connection of its own, as another process would have.
    async fn store(&self) -> Result<KeyStore> {
        let client = async_nats::connect(imagelib_testkit::nats_url()).await?;
        Ok(KeyStore::open(&jetstream::new(client), &self.name, 1).await?)
    }

    async fn vault(&self, keyring: &Arc<MasterKeyring>) -> Result<Vault> {
        Ok(Vault::new(keyring.clone(), self.store().await?))
    }

    fn subject(&self, registry: RegistryId) -> String {
        format!("$KV.{}.{registry}", self.name)
    }

    async fn stream(&self) -> Result<jetstream::stream::Stream> {
        Ok(self.js.get_stream(format!("KV_{}", self.name)).await?)
    }

    /// Every message still in the bucket's stream, as (subject, payload).
    async fn raw_messages(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let mut stream = self.stream().await?;
        let state = stream.info().await?.state.clone();
        let mut out = Vec::new();
        if state.messages == 0 {
            return Ok(out);
        }
        for seq in state.first_sequence..=state.last_sequence {
            if let Ok(m) = stream.get_raw_message(seq).await {
                out.push((m.subject.to_string(), m.payload.to_vec()));
            }
        }
        Ok(out)
    }
}

impl Drop for Bucket {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let client = async_nats::connect(imagelib_testkit::nats_url())
                    .await
                    .ok()?;
                jetstream::new(client).delete_key_value(&name).await.ok()
            })
        })
        .join();
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn text(sealed: &imagelib_secrets::SecretBox<Vec<u8>>) -> String {
    String::from_utf8(sealed.expose_secret().clone()).unwrap()
}

#[tokio::test]
async fn seal_and_open_across_processes() -> Result<()> {
    let bucket = Bucket::new().await?;
    let keyring = Arc::new(MasterKeyring::generate());
    let scanner_side = bucket.vault(&keyring).await?;
    let registry_side = bucket.vault(&keyring).await?;
    let registry = RegistryId::new();

    let sealed = registry_side.seal_for(registry, CANARY.as_bytes()).await?;
    assert_eq!(sealed.algorithm, "AES-256-GCM");
    let again = registry_side.seal_for(registry, b"second").await?;
    assert_eq!(again.key_id, sealed.key_id, "one data key per registry");

    assert_eq!(
        text(&scanner_side.open_for(registry, &sealed).await?),
        CANARY
    );
    assert_eq!(
        text(&registry_side.open_for(registry, &again).await?),
        "second"
    );

    // A field-bound secret opens only as that field.
    let hook = registry_side
        .seal_field(registry, "webhook_secret", b"hook")
        .await?;
    assert_eq!(
        text(
            &scanner_side
                .open_field(registry, "webhook_secret", &hook)
                .await?
        ),
        "hook"
    );
    assert!(matches!(
        scanner_side.open_for(registry, &hook).await,
        Err(SecretsError::Decrypt)
    ));

    // The bucket holds wrapped keys only, never the plaintext.
    assert!(
        registry_side
            .store()
            .data_key(&keyring, registry)
            .await?
            .is_some()
    );
    for (_, payload) in bucket.raw_messages().await? {
        assert!(!contains(&payload, CANARY.as_bytes()));
    }
    Ok(())
}

#[tokio::test]
async fn another_registry_or_tampering_cannot_open() -> Result<()> {
    let bucket = Bucket::new().await?;
    let keyring = Arc::new(MasterKeyring::generate());
    let vault = bucket.vault(&keyring).await?;
    let (a, b) = (RegistryId::new(), RegistryId::new());
    let sealed_a = vault.seal_for(a, CANARY.as_bytes()).await?;
    let sealed_b = vault.seal_for(b, b"b's secret").await?;
    assert_ne!(sealed_a.key_id, sealed_b.key_id);

    // Moved to another registry, as is or relabelled with that registry's key id.
    let moved = sealed_a.clone();
    let relabelled = SealedCredential {
        key_id: sealed_b.key_id.clone(),
        ..sealed_a.clone()
    };
    for wrong in [&moved, &relabelled] {
        let err = vault.open_for(b, wrong).await.unwrap_err();
        assert!(matches!(err, SecretsError::Decrypt), "{err}");
        assert!(!err.to_string().contains(CANARY));
    }

    let mut tampered = sealed_a.clone();
    let mut chars: Vec<char> = tampered.ciphertext.chars().collect();
    chars[3] = if chars[3] == 'A' { 'B' } else { 'A' };
    tampered.ciphertext = chars.into_iter().collect();
    assert!(matches!(
        vault.open_for(a, &tampered).await,
        Err(SecretsError::Decrypt)
    ));
    assert_eq!(text(&vault.open_for(a, &sealed_a).await?), CANARY);
    Ok(())
}

#[tokio::test]
async fn shredding_removes_every_trace_of_the_key() -> Result<()> {
    let bucket = Bucket::new().await?;
    let keyring = Arc::new(MasterKeyring::generate());
    let vault = bucket.vault(&keyring).await?;
    let (gone, kept) = (RegistryId::new(), RegistryId::new());
    let sealed = vault.seal_for(gone, CANARY.as_bytes()).await?;
    let other = vault.seal_for(kept, b"kept").await?;

    let stream = bucket.stream().await?;
    let before = stream
        .get_last_raw_message_by_subject(&bucket.subject(gone))
        .await?;
    let wrapped: serde_json::Value = serde_json::from_slice(&before.payload)?;
    let wrapped_ciphertext = wrapped["wrapped"]["ciphertext"]
        .as_str()
        .context("stored wrapped key")?
        .to_owned();

    vault.shred(gone).await?;

    let err = vault.open_for(gone, &sealed).await.unwrap_err();
    assert!(
        matches!(err, SecretsError::Shredded(id) if id == gone),
        "{err}"
    );
    assert!(!err.to_string().contains(CANARY));

    // Nothing left through the KV API...
    let kv = bucket.js.get_key_value(&bucket.name).await?;
    assert!(kv.get(gone.to_string()).await?.is_none());
    assert!(kv.entry(gone.to_string()).await?.is_none());
    let history: Vec<kv::Entry> = kv
        .history(gone.to_string())
        .await?
        .filter_map(|e| async { e.ok() })
        .collect()
        .await;
    assert!(history.is_empty(), "history: {history:?}");
    // ...nor in the raw stream: no message on the key's subject, nothing anywhere that
    // holds the wrapped key.
    let last = stream
        .get_last_raw_message_by_subject(&bucket.subject(gone))
        .await;
    assert!(
        matches!(&last, Err(e) if e.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound),
        "{last:?}"
    );
    for (subject, payload) in bucket.raw_messages().await? {
        assert_ne!(subject, bucket.subject(gone));
        assert!(
            !contains(&payload, wrapped_ciphertext.as_bytes()),
            "{subject}"
        );
    }

    // Another process never gets it back, and cannot create a fresh key for it either.
    let elsewhere = bucket.vault(&keyring).await?;
    assert!(matches!(
        elsewhere.open_for(gone, &sealed).await,
        Err(SecretsError::Shredded(_))
    ));
    assert!(elsewhere.store().data_key(&keyring, gone).await?.is_none());
    assert!(elsewhere.store().is_shredded(gone).await?);
    assert!(matches!(
        elsewhere.seal_for(gone, b"again").await,
        Err(SecretsError::Shredded(_))
    ));
    assert!(matches!(
        vault.store().create_data_key(&keyring, gone).await,
        Err(SecretsError::Shredded(_))
    ));
    // Idempotent, and the other registry is untouched.
    elsewhere.shred(gone).await?;
    vault.shred(gone).await?;
    assert_eq!(text(&elsewhere.open_for(kept, &other).await?), "kept");
    assert!(!elsewhere.store().is_shredded(kept).await?);
    Ok(())
}

#[tokio::test]
async fn master_key_rotation_rewraps_and_retires_the_old_key() -> Result<()> {
    let bucket = Bucket::new().await?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("master.key");
    let old = Arc::new(MasterKeyring::load_or_create(&path)?);
    let vault = bucket.vault(&old).await?;
    let mut sealed = Vec::new();
    for i in 0..3 {
        let registry = RegistryId::new();
        sealed.push((
            registry,
            vault
                .seal_for(registry, format!("secret-{i}").as_bytes())
                .await?,
        ));
    }

    // The file now holds [new, old]: both unwrap, the new one wraps.
    let rotated = Arc::new(MasterKeyring::rotate_file(&path)?);
    assert_eq!(rotated.key_ids().nth(1), Some(old.primary_id()));
    let vault = bucket.vault(&rotated).await?;
    for (i, (registry, s)) in sealed.iter().enumerate() {
        assert_eq!(
            text(&vault.open_for(*registry, s).await?),
            format!("secret-{i}")
        );
    }
    assert_eq!(vault.rewrap_all().await?, 3);
    assert_eq!(vault.rewrap_all().await?, 0, "nothing left to re-wrap");

    // Retire the old key: keep only the first key line.
    let content = std::fs::read_to_string(&path)?;
    let new_line = content
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty())
        .context("a key line")?;
    std::fs::write(&path, format!("{new_line}\n"))?;
    let retired = Arc::new(MasterKeyring::load(&path)?);
    assert_eq!(retired.key_ids().count(), 1);
    assert_eq!(retired.primary_id(), rotated.primary_id());
    let vault = bucket.vault(&retired).await?;
    for (i, (registry, s)) in sealed.iter().enumerate() {
        assert_eq!(
            text(&vault.open_for(*registry, s).await?),
            format!("secret-{i}")
        );
    }
    // Keys sealed after the rotation come out wrapped by the new key too.
    let late = RegistryId::new();
    let s = bucket
        .vault(&rotated)
        .await?
        .seal_for(late, b"late")
        .await?;
    assert_eq!(text(&vault.open_for(late, &s).await?), "late");

    // The old key alone no longer opens anything, and says why without leaking.
    let old_only = bucket.vault(&old).await?;
    let err = old_only
        .open_for(sealed[0].0, &sealed[0].1)
        .await
        .unwrap_err();
    assert!(matches!(err, SecretsError::UnknownMasterKey(ref id) if id == retired.primary_id()));
    assert!(!err.to_string().contains(new_line.trim()));
    Ok(())
}

#[tokio::test]
async fn concurrent_rewraps_and_destroys_are_safe() -> Result<()> {
    let bucket = Bucket::new().await?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("k");
    let old = Arc::new(MasterKeyring::load_or_create(&path)?);
    let vault = bucket.vault(&old).await?;
    let mut sealed = Vec::new();
    for i in 0..24 {
        let registry = RegistryId::new();
        sealed.push((
            registry,
            vault.seal_for(registry, format!("s{i}").as_bytes()).await?,
        ));
    }
    // Two "processes" re-wrap at once: every key exactly once between them.
    let rotated = Arc::new(MasterKeyring::rotate_file(&path)?);
    let (one, two, three) = (
        bucket.store().await?,
        bucket.store().await?,
        bucket.store().await?,
    );
    let (n1, n2) = tokio::join!(one.rewrap_all(&rotated), two.rewrap_all(&rotated));
    assert_eq!(n1? + n2?, 24);

    // Again after a second rotation, while a third process destroys keys.
    let rotated = Arc::new(MasterKeyring::rotate_file(&path)?);
    let shredded: Vec<RegistryId> = sealed.iter().take(4).map(|(r, _)| *r).collect();
    let (n1, n2, destroyed) =
        tokio::join!(one.rewrap_all(&rotated), two.rewrap_all(&rotated), async {
            for r in &shredded {
                three.destroy(*r).await?;
            }
            Ok::<_, SecretsError>(())
        });
    destroyed?;
    let total = n1? + n2?;
    ensure!((20..=24).contains(&total), "re-wrapped {total}");
    // One more pass finds nothing: every surviving key is on the new master key.
    assert_eq!(one.rewrap_all(&rotated).await?, 0);

    // Only the new key from here on.
    let content = std::fs::read_to_string(&path)?;
    let first = content
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty())
        .context("a key line")?
        .to_owned();
    std::fs::write(&path, format!("{first}\n"))?;
    let retired = Arc::new(MasterKeyring::load(&path)?);
    let vault = bucket.vault(&retired).await?;
    let stream = bucket.stream().await?;
    for (i, (registry, s)) in sealed.iter().enumerate() {
        if shredded.contains(registry) {
            assert!(matches!(
                vault.open_for(*registry, s).await,
                Err(SecretsError::Shredded(_))
            ));
            assert!(
                stream
                    .get_last_raw_message_by_subject(&bucket.subject(*registry))
                    .await
                    .is_err(),
                "a re-wrap must not resurrect a destroyed key"
            );
        } else {
            assert_eq!(text(&vault.open_for(*registry, s).await?), format!("s{i}"));
        }
    }
    Ok(())
}

#[tokio::test]
async fn concurrent_registration_gets_one_key() -> Result<()> {
    let bucket = Bucket::new().await?;
    let keyring = Arc::new(MasterKeyring::generate());
    let (a, b) = (bucket.vault(&keyring).await?, bucket.vault(&keyring).await?);
    let registry = RegistryId::new();
    let (sa, sb) = tokio::join!(
        a.seal_for(registry, b"from a"),
        b.seal_for(registry, b"from b")
    );
    let (sa, sb) = (sa?, sb?);
    assert_eq!(sa.key_id, sb.key_id);
    assert_eq!(text(&b.open_for(registry, &sa).await?), "from a");
    assert_eq!(text(&a.open_for(registry, &sb).await?), "from b");

    // Opening the bucket again is fine, and it keeps one revision on disk.
    let store = KeyStore::open(&bucket.js, &bucket.name, 1).await?;
    assert_eq!(store.bucket(), bucket.name);
    let info = bucket.stream().await?.info().await?.config.clone();
    assert_eq!(info.max_messages_per_subject, 1);
    assert_eq!(info.storage, jetstream::stream::StorageType::File);
    assert!(
        !info.deny_delete,
        "destroy needs single-message (secure) deletes"
    );
    Ok(())
}

#[tokio::test]
async fn nothing_secret_in_errors_or_debug() -> Result<()> {
    let bucket = Bucket::new().await?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("master.key");
    let keyring = Arc::new(MasterKeyring::load_or_create(&path)?);
    let file_content = std::fs::read_to_string(&path)?;
    let key_line = file_content
        .lines()
        .find(|l| !l.starts_with('#'))
        .context("key line")?
        .trim()
        .to_owned();
    let vault = bucket.vault(&keyring).await?;
    let (registry, other) = (RegistryId::new(), RegistryId::new());

    #[derive(serde::Serialize)]
    struct Basic<'a> {
        username: &'a str,
        password: &'a str,
    }
    let sealed = vault
        .seal_json_for(
            registry,
            &Basic {
                username: "robot$ai+scanner",
                password: CANARY,
            },
        )
        .await?;
    vault.seal_for(other, b"x").await?;

    let mut messages = Vec::new();
    let mut collect = |e: SecretsError| messages.push(format!("{e} | {e:?}"));
    // serde would quote the password in "invalid type: string ..., expected u32".
    collect(
        vault
            .open_json_for::<u32>(registry, &sealed)
            .await
            .unwrap_err(),
    );
    collect(vault.open_for(other, &sealed).await.unwrap_err());
    let stranger = bucket.vault(&Arc::new(MasterKeyring::generate())).await?;
    collect(stranger.open_for(registry, &sealed).await.unwrap_err());
    std::fs::write(dir.path().join("bad.key"), format!("{key_line}{CANARY}\n"))?;
    collect(MasterKeyring::load(dir.path().join("bad.key")).unwrap_err());
    vault.shred(registry).await?;
    collect(vault.open_for(registry, &sealed).await.unwrap_err());
    assert_eq!(messages.len(), 5);

    messages.push(format!("{vault:?} {keyring:?} {:?}", vault.store()));
    let (_, dk) = vault
        .store()
        .data_key(&keyring, other)
        .await?
        .context("data key")?;
    messages.push(format!("{dk:?}"));
    for m in &messages {
        assert!(!m.contains(CANARY), "{m}");
        assert!(!m.contains(&key_line), "{m}");
        assert!(!m.contains(&key_line[..16]), "{m}");
    }
    // The master key never reaches NATS either.
    for (_, payload) in bucket.raw_messages().await? {
        assert!(!contains(&payload, key_line.as_bytes()));
        assert!(!contains(&payload, CANARY.as_bytes()));
    }
    Ok(())
}

/// The master key file is lost and a new one created: the old data keys neither stop a
/// re-wrap nor get silently replaced; a registry whose credentials are entered again gets
/// a new data key under the new master key, and a destroyed key is never brought back.
#[tokio::test]
async fn a_lost_master_key_leaves_other_keys_working_and_new_credentials_recover() -> Result<()> {
    let bucket = Bucket::new().await?;
    let lost = Arc::new(MasterKeyring::generate());
    let before = bucket.vault(&lost).await?;
    let stranded = RegistryId::new();
    let old_sealed = before.seal_for(stranded, CANARY.as_bytes()).await?;
    let shredded = RegistryId::new();
    before.seal_for(shredded, b"gone").await?;
    before.shred(shredded).await?;

    let replaced = Arc::new(MasterKeyring::generate());
    let vault = bucket.vault(&replaced).await?;
    let fresh = RegistryId::new();
    let fresh_sealed = vault.seal_for(fresh, b"fresh").await?;
    // A re-wrap skips what it cannot open instead of failing.
    assert_eq!(vault.rewrap_all().await?, 0);
    let err = vault.check(stranded).await.unwrap_err();
    assert!(
        matches!(err, SecretsError::UnknownMasterKey(ref id) if id == lost.primary_id()),
        "{err}"
    );
    let text_of = err.to_string();
    assert!(
        text_of.contains(lost.primary_id()) && text_of.contains("credentials again"),
        "{text_of}"
    );
    assert!(!text_of.contains(CANARY));
    assert!(vault.check(fresh).await?);
    assert!(!vault.check(RegistryId::new()).await?);
    assert!(
        !vault.replace_unopenable(fresh).await?,
        "an openable key stays"
    );
    assert_eq!(text(&vault.open_for(fresh, &fresh_sealed).await?), "fresh");

    // Recovery: a new data key, then the credentials sealed again.
    assert!(vault.replace_unopenable(stranded).await?);
    assert!(vault.check(stranded).await?);
    let resealed = vault.seal_for(stranded, b"re-entered").await?;
    assert_eq!(
        text(&vault.open_for(stranded, &resealed).await?),
        "re-entered"
    );
    assert!(matches!(
        vault.open_for(stranded, &old_sealed).await.unwrap_err(),
        SecretsError::Decrypt
    ));
    assert!(matches!(
        vault.replace_unopenable(shredded).await.unwrap_err(),
        SecretsError::Shredded(_)
    ));
    Ok(())
}
