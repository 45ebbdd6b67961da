use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aes_gcm::Aes256Gcm;
use base64::Engine as _;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::envelope::{DataKey, KEY_LEN, WrappedKey, aead_cipher, decrypt, encrypt, random_bytes};
use crate::error::{Result, SecretsError};

/// The environment variable that names the master key file (DESIGN section 10).
pub const MASTER_KEY_FILE_ENV: &str = "IMAGELIB_MASTER_KEY_FILE";

const MAX_FILE_LEN: u64 = 64 * 1024;
const HEADER: &str = "\
# imagelib master keyring (IMAGELIB_MASTER_KEY_FILE): one base64 32-byte key a line.
# The first key wraps data keys; the others only unwrap them until rewrap_all has moved
# every data key to the first. Keep this file secret (mode 0600) and backed up: without
# it no registry credential can be opened.
";

const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const BASE64_STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
const BASE64_URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

type KeyBytes = Zeroizing<[u8; KEY_LEN]>;

struct MasterKey {
    id: String,
    bytes: KeyBytes,
    cipher: Aes256Gcm,
}

/// The master keys that wrap the registries' data keys. The first is the primary (it
/// wraps); the others are older keys kept so data keys wrapped before a rotation still
/// unwrap until [`crate::KeyStore::rewrap_all`] has moved them to the primary.
pub struct MasterKeyring {
    keys: Vec<MasterKey>,
}

impl MasterKeyring {
    /// Loads the keyring at `path`, creating it (and its parent directories) with one fresh
    /// key and mode 0600 if it does not exist.
    pub fn load_or_create(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        match Self::load(path) {
            Err(SecretsError::MasterKeyIo { source, .. })
                if source.kind() == io::ErrorKind::NotFound =>
            {
                create(path)?;
                Self::load(path)
            }
            other => other,
        }
    }

    /// Loads the keyring at `path`, which must exist: text with one base64 key a line
    /// (`#` comments, blank lines allowed), or exactly 32 raw bytes.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let io_err = |source| SecretsError::MasterKeyIo {
            path: path.to_owned(),
            source,
        };
        let mut file = File::open(path).map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        if !meta.is_file() {
            return Err(file_error(path, "is not a regular file"));
        }
        if meta.len() > MAX_FILE_LEN {
            return Err(file_error(path, "is too large to be a keyring"));
        }
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format_args!("{:o}", mode & 0o777),
                "the master key file is readable by other users; chmod 600 it"
            );
        }
        let mut content = Zeroizing::new(Vec::with_capacity(meta.len() as usize));
        file.read_to_end(&mut content).map_err(io_err)?;
        let keys = parse(&content, path)?;
        Ok(Self::from_keys(keys))
    }

    /// An in-memory keyring with one fresh key (tests, ephemeral setups).
    pub fn generate() -> Self {
        Self::from_keys(vec![Zeroizing::new(random_bytes())])
    }

    /// Master-key rotation, step one: puts a fresh key first in the file at `path`,
    /// keeping the existing keys after it, and returns the new keyring. Step two is
    /// [`crate::KeyStore::rewrap_all`] in every process that has the new file; only then
    /// may the old keys be removed from the file. Not for concurrent use.
    pub fn rotate_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let old = Self::load(path)?;
        let mut keys: Vec<KeyBytes> = vec![Zeroizing::new(random_bytes())];
        keys.extend(old.keys.iter().map(|k| k.bytes.clone()));
        let content = render(&keys);
        let dir = parent_dir(path);
        let tmp = temp_path(path);
        let replaced = write_new(&tmp, content.as_bytes()).and_then(|()| fs::rename(&tmp, path));
        if replaced.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        replaced.map_err(|source| SecretsError::MasterKeyIo {
            path: path.to_owned(),
            source,
        })?;
        sync_dir(&dir);
        Ok(Self::from_keys(keys))
    }

    fn from_keys(keys: Vec<KeyBytes>) -> Self {
        let mut out: Vec<MasterKey> = Vec::with_capacity(keys.len());
        for bytes in keys {
            let id = key_id(&bytes);
            if out.iter().all(|k| k.id != id) {
                out.push(MasterKey {
                    id,
                    cipher: aead_cipher(&bytes),
                    bytes,
                });
            }
        }
        assert!(!out.is_empty(), "a keyring has at least one key");
        MasterKeyring { keys: out }
    }

    /// The id of the key that wraps: hex of the first 8 bytes of its SHA-256 (not secret).
    pub fn primary_id(&self) -> &str {
        &self.keys[0].id
    }

    /// Every key's id, the primary first.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }

    pub fn contains(&self, master_key_id: &str) -> bool {
        self.keys.iter().any(|k| k.id == master_key_id)
    }

    /// Wraps a data key with the primary key.
    pub fn wrap(&self, data_key: &DataKey) -> WrappedKey {
        self.wrap_with_aad(data_key, b"")
    }

    /// Unwraps with whichever key of the ring wrapped it.
    pub fn unwrap(&self, wrapped: &WrappedKey) -> Result<DataKey> {
        self.unwrap_with_aad(wrapped, b"")
    }

    /// Like [`Self::wrap`], bound to `aad` (the store binds a data key to its registry).
    pub fn wrap_with_aad(&self, data_key: &DataKey, aad: &[u8]) -> WrappedKey {
        let primary = &self.keys[0];
        let (nonce, ciphertext) = encrypt(&primary.cipher, data_key.expose(), aad);
        WrappedKey {
            master_key_id: primary.id.clone(),
            nonce,
            ciphertext,
        }
    }

    pub fn unwrap_with_aad(&self, wrapped: &WrappedKey, aad: &[u8]) -> Result<DataKey> {
        let key = self
            .keys
            .iter()
            .find(|k| k.id == wrapped.master_key_id)
            .ok_or_else(|| SecretsError::UnknownMasterKey(wrapped.master_key_id.clone()))?;
        let bytes = decrypt(&key.cipher, &wrapped.nonce, &wrapped.ciphertext, aad)?;
        DataKey::from_slice(&bytes).ok_or(SecretsError::Malformed("wrapped data key length"))
    }
}

impl fmt::Debug for MasterKeyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKeyring")
            .field("key_ids", &self.key_ids().collect::<Vec<_>>())
            .finish()
    }
}

fn key_id(key: &[u8; KEY_LEN]) -> String {
    Sha256::digest(key)[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn file_error(path: &Path, reason: &'static str) -> SecretsError {
    SecretsError::MasterKeyFile {
        path: path.to_owned(),
        reason,
    }
}

/// A 32-byte file is a raw key unless it is all printable text: then it is a (bad) text
/// keyring, so a truncated or mistyped text file is refused, not taken as a key.
fn parse(content: &[u8], path: &Path) -> Result<Vec<KeyBytes>> {
    let printable = content
        .iter()
        .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace());
    if content.len() == KEY_LEN && !printable {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        key.copy_from_slice(content);
        return Ok(vec![key]);
    }
    match std::str::from_utf8(content).map(parse_text) {
        Ok(Ok(keys)) if keys.is_empty() => Err(file_error(path, "holds no key")),
        Ok(Ok(keys)) => Ok(keys),
        Ok(Err(line)) => Err(SecretsError::MasterKeyLine {
            path: path.to_owned(),
            line,
        }),
        Err(_) => Err(file_error(
            path,
            "is neither text with base64 keys nor a 32-byte binary key",
        )),
    }
}

/// Keys of a text keyring, or the 1-based number of the first bad line.
fn parse_text(text: &str) -> std::result::Result<Vec<KeyBytes>, usize> {
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let mut buf = Zeroizing::new([0u8; 48]);
        let decoded = BASE64_STANDARD
            .decode_slice(line, &mut buf[..])
            .or_else(|_| BASE64_URL_SAFE.decode_slice(line, &mut buf[..]));
        match decoded {
            Ok(KEY_LEN) => {
                let mut key = Zeroizing::new([0u8; KEY_LEN]);
                key.copy_from_slice(&buf[..KEY_LEN]);
                keys.push(key);
            }
            _ => return Err(n + 1),
        }
    }
    Ok(keys)
}

fn render(keys: &[KeyBytes]) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::from(HEADER));
    for key in keys {
        out.push_str(&Zeroizing::new(STANDARD.encode(&key[..])));
        out.push('\n');
    }
    out
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent_dir(path).join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()))
}

/// A new file (never an existing one) with mode 0600, written and synced.
fn write_new(path: &Path, content: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    file.write_all(content)?;
    file.sync_all()
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Creates the keyring file with one fresh key. The content is written to a private
/// temporary file and hard-linked into place, so a concurrent loader never sees a
/// half-written file; if another process created it first, theirs is kept.
fn create(path: &Path) -> Result<()> {
    let io_err = |source| SecretsError::MasterKeyIo {
        path: path.to_owned(),
        source,
    };
    let dir = parent_dir(path);
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(io_err)?;
    let content = render(&[Zeroizing::new(random_bytes())]);
    let tmp = temp_path(path);
    write_new(&tmp, content.as_bytes()).map_err(io_err)?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        // A filesystem without hard links: create in place.
        Err(_) => match write_new(path, content.as_bytes()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
            Err(e) => return Err(io_err(e)),
        },
    }
    sync_dir(&dir);
    tracing::info!(path = %path.display(), "created a new master key file");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    fn b64(key: &[u8; KEY_LEN]) -> String {
        STANDARD.encode(key)
    }

    #[test]
    fn creates_a_private_file_and_reloads_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dir/master.key");
        let ring = MasterKeyring::load_or_create(&path).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let again = MasterKeyring::load_or_create(&path).unwrap();
        assert_eq!(ring.primary_id(), again.primary_id());
        assert_eq!(again.key_ids().count(), 1);
        assert_eq!(ring.primary_id().len(), 16);
        // What one wraps, the reloaded ring unwraps.
        let dk = DataKey::generate();
        let back = again.unwrap(&ring.wrap(&dk)).unwrap();
        assert_eq!(back.expose(), dk.expose());
        // No temporary file left behind.
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("master.key")]);
    }

    #[test]
    fn concurrent_creators_agree_on_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = Arc::new(dir.path().join("master.key"));
        let barrier = Arc::new(Barrier::new(8));
        let ids: Vec<String> = (0..8)
            .map(|_| {
                let (path, barrier) = (path.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    MasterKeyring::load_or_create(&*path)
                        .unwrap()
                        .primary_id()
                        .to_owned()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    }

    #[test]
    fn text_format_with_comments_and_order() {
        let (new, old) = ([7u8; KEY_LEN], [9u8; KEY_LEN]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        fs::write(
            &path,
            format!("# rotated\n\n{}  # new\n{}\n", b64(&new), b64(&old)),
        )
        .unwrap();
        let ring = MasterKeyring::load(&path).unwrap();
        let ids: Vec<_> = ring.key_ids().collect();
        assert_eq!(ids, vec![key_id(&new).as_str(), key_id(&old).as_str()]);
        assert_eq!(ring.primary_id(), key_id(&new));
    }

    #[test]
    fn binary_32_byte_file_is_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raw");
        let raw: [u8; KEY_LEN] = std::array::from_fn(|i| (i * 37) as u8);
        fs::write(&path, raw).unwrap();
        let ring = MasterKeyring::load(&path).unwrap();
        assert_eq!(ring.primary_id(), key_id(&raw));
        // The same key written as text has the same id.
        let text = dir.path().join("text");
        fs::write(&text, format!("{}\n", b64(&raw))).unwrap();
        assert_eq!(
            MasterKeyring::load(&text).unwrap().primary_id(),
            key_id(&raw)
        );
    }

    #[test]
    fn malformed_files_are_refused_without_echoing_them() {
        let dir = tempfile::tempdir().unwrap();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("short", b"c3VwZXJzZWNyZXRtYXN0ZXJrZXk=\n".to_vec()),
            ("notb64", b"supersecretmasterkey-not-base64!!\n".to_vec()),
            ("empty", b"# nothing here\n\n".to_vec()),
            (
                "second",
                format!("{}\nsupersecret\n", b64(&[1; KEY_LEN])).into_bytes(),
            ),
            ("binary", vec![0xFF; 33]),
            ("printable32", b"supersecret-masterkey-32-bytes!!".to_vec()),
        ];
        for (name, content) in cases {
            let path = dir.path().join(name);
            fs::write(&path, &content).unwrap();
            let err = MasterKeyring::load(&path).unwrap_err();
            let text = format!("{err} {err:?}");
            assert!(
                matches!(
                    err,
                    SecretsError::MasterKeyFile { .. } | SecretsError::MasterKeyLine { .. }
                ),
                "{name}: {text}"
            );
            assert!(!text.contains("supersecret"), "{name}: {text}");
            assert!(
                !text.contains("c3VwZXJzZWNyZXRtYXN0ZXJrZXk"),
                "{name}: {text}"
            );
            assert!(!text.contains(&b64(&[1; KEY_LEN])), "{name}: {text}");
            assert!(text.contains(name), "names the file: {text}");
        }
        let err = MasterKeyring::load(dir.path().join("second")).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        // A malformed file is never replaced by load_or_create.
        let path = dir.path().join("notb64");
        assert!(MasterKeyring::load_or_create(&path).is_err());
        assert_eq!(
            fs::read(&path).unwrap(),
            b"supersecretmasterkey-not-base64!!\n"
        );
    }

    #[test]
    fn rotate_file_puts_a_new_key_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let before = MasterKeyring::load_or_create(&path).unwrap();
        let after = MasterKeyring::rotate_file(&path).unwrap();
        let ids: Vec<_> = after.key_ids().collect();
        assert_eq!(ids.len(), 2);
        assert_ne!(ids[0], before.primary_id());
        assert_eq!(ids[1], before.primary_id());
        let reloaded = MasterKeyring::load(&path).unwrap();
        assert_eq!(reloaded.key_ids().collect::<Vec<_>>(), ids);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let dk = DataKey::generate();
        assert_eq!(
            after.unwrap(&before.wrap(&dk)).unwrap().expose(),
            dk.expose()
        );
    }

    #[test]
    fn unwrap_needs_the_right_master_key_and_aad() {
        let ring = MasterKeyring::generate();
        let other = MasterKeyring::generate();
        let dk = DataKey::generate();
        let wrapped = ring.wrap_with_aad(&dk, b"registry-a");
        assert!(matches!(
            other.unwrap_with_aad(&wrapped, b"registry-a"),
            Err(SecretsError::UnknownMasterKey(_))
        ));
        assert!(matches!(
            ring.unwrap_with_aad(&wrapped, b"registry-b"),
            Err(SecretsError::Decrypt)
        ));
        let json = serde_json::to_string(&wrapped).unwrap();
        let back: WrappedKey = serde_json::from_str(&json).unwrap();
        assert_eq!(
            ring.unwrap_with_aad(&back, b"registry-a").unwrap().expose(),
            dk.expose()
        );
        assert!(!format!("{ring:?}").contains(&b64(&ring.keys[0].bytes)));
    }
}
