//! The current version of every tag, as a bulk replay keeps it in memory.
//!
//! A million tags are a million entries, so their size is the replay's peak memory. One
//! table per repository: a tag is looked up by repository anyway, a table grows on its own
//! (one table of a million entries doubles to 2^21 slots and holds both copies while it
//! does: that transient was most of the replay's peak), and the key is the tag alone. An
//! entry is the tag inline (up to 22 bytes, almost every tag) and the version packed: the
//! sha256 digest as its 32 bytes, the opening sequence in 5 bytes, the time as microseconds (what PostgreSQL keeps, so what the live path reads back), the
//! kind as an index into the few kinds there are. A version that does not pack (another
//! digest algorithm, a long tag) is kept as it is, beside.

use std::collections::HashMap;

use chrono::DateTime;
use uuid::Uuid;

use super::images::Current;

/// A tag name, inline when short.
#[derive(Debug, Clone)]
enum TagBuf {
    Inline { len: u8, buf: [u8; 22] },
    Heap(Box<str>),
}

impl TagBuf {
    fn new(tag: &str) -> Self {
        let bytes = tag.as_bytes();
        if bytes.len() <= 22 {
            let mut buf = [0u8; 22];
            buf[..bytes.len()].copy_from_slice(bytes);
            TagBuf::Inline {
                len: bytes.len() as u8,
                buf,
            }
        } else {
            TagBuf::Heap(tag.into())
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            TagBuf::Inline { len, buf } => &buf[..usize::from(*len)],
            TagBuf::Heap(s) => s.as_bytes(),
        }
    }
}

// A name is always held the same way (by its length), so its bytes decide both.
impl PartialEq for TagBuf {
    fn eq(&self, other: &Self) -> bool {
        self.bytes() == other.bytes()
    }
}

impl Eq for TagBuf {}

impl std::hash::Hash for TagBuf {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.bytes().hash(state);
    }
}

/// A current version that packs: a lower-case sha256 digest, a known kind and an opening
/// sequence below 2^40 (in what the alignment leaves unused).
#[derive(Debug, Clone, Copy)]
struct Packed {
    sha256: [u8; 32],
    first_seen_us: i64,
    sequence_low: u32,
    sequence_high: u8,
    kind: u8,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct TagMap {
    repos: HashMap<Uuid, HashMap<TagBuf, Packed>>,
    /// Versions that do not pack.
    spill: HashMap<(Uuid, Box<str>), Current>,
    kinds: Vec<Box<str>>,
}

impl TagMap {
    pub(crate) fn get(&self, repo: Uuid, tag: &str) -> Option<Current> {
        if let Some(p) = self.repos.get(&repo).and_then(|r| r.get(&TagBuf::new(tag))) {
            let first_seen = DateTime::from_timestamp_micros(p.first_seen_us)?;
            return Some(Current {
                sequence: u64::from(p.sequence_high) << 32 | u64::from(p.sequence_low),
                digest: unhex(&p.sha256),
                kind: self.kinds.get(usize::from(p.kind))?.to_string(),
                first_seen,
            });
        }
        if self.spill.is_empty() {
            return None;
        }
        self.spill.get(&(repo, Box::from(tag))).cloned()
    }

    pub(crate) fn insert(&mut self, repo: Uuid, tag: &str, current: &Current) {
        match self.pack(current) {
            Some(packed) => {
                self.repos
                    .entry(repo)
                    .or_default()
                    .insert(TagBuf::new(tag), packed);
                if !self.spill.is_empty() {
                    self.spill.remove(&(repo, Box::from(tag)));
                }
            }
            None => {
                if let Some(r) = self.repos.get_mut(&repo) {
                    r.remove(&TagBuf::new(tag));
                }
                self.spill.insert((repo, Box::from(tag)), current.clone());
            }
        }
    }

    pub(crate) fn remove(&mut self, repo: Uuid, tag: &str) {
        if let Some(r) = self.repos.get_mut(&repo) {
            r.remove(&TagBuf::new(tag));
        }
        if !self.spill.is_empty() {
            self.spill.remove(&(repo, Box::from(tag)));
        }
    }

    fn pack(&mut self, c: &Current) -> Option<Packed> {
        let sha256 = dehex(c.digest.strip_prefix("sha256:")?)?;
        let sequence_high = u8::try_from(c.sequence >> 32).ok()?;
        // Microseconds, as PostgreSQL keeps it: what the live path reads back from the
        // table it wrote, so a rebuild folds with the same times.
        let first_seen_us = c.first_seen.timestamp_micros();
        let kind = match self.kinds.iter().position(|k| **k == *c.kind) {
            Some(i) => i,
            None if self.kinds.len() < usize::from(u8::MAX) => {
                self.kinds.push(c.kind.as_str().into());
                self.kinds.len() - 1
            }
            None => return None,
        };
        Some(Packed {
            sha256,
            first_seen_us,
            sequence_low: c.sequence as u32,
            sequence_high,
            kind: u8::try_from(kind).ok()?,
        })
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// 64 lower-case hex digits as 32 bytes.
fn dehex(hex: &str) -> Option<[u8; 32]> {
    let nibble = |c: u8| HEX.iter().position(|h| *h == c).map(|n| n as u8);
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.as_bytes().chunks_exact(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

fn unhex(bytes: &[u8; 32]) -> String {
    let mut s = String::with_capacity(71);
    s.push_str("sha256:");
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 15)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current(digest: &str, kind: &str, micros: i64) -> Current {
        Current {
            sequence: micros as u64 % (1 << 40),
            digest: digest.to_owned(),
            kind: kind.to_owned(),
            first_seen: DateTime::from_timestamp_micros(micros).unwrap(),
        }
    }

    #[test]
    fn what_goes_in_comes_out_packed_or_not() {
        let mut map = TagMap::default();
        let repo = Uuid::now_v7();
        let other = Uuid::now_v7();
        let long = "v".repeat(100);
        let cases = [
            (
                "16.4",
                format!("sha256:{}", "0123456789abcdef".repeat(4)),
                "database",
            ),
            (
                "exactly-22-characters!",
                format!("sha256:{}", "f".repeat(64)),
                "model",
            ),
            (
                long.as_str(),
                format!("sha256:{}", "0".repeat(64)),
                "database",
            ),
            // Not lower-case sha256: kept beside, as it came.
            (
                "upper",
                format!("sha256:{}", "ABCDEF0123456789".repeat(4)),
                "model",
            ),
            ("sha512", format!("sha512:{}", "ab".repeat(64)), "model"),
            ("short", "sha256:abc".to_owned(), "database"),
        ];
        for (i, (tag, digest, kind)) in cases.iter().enumerate() {
            map.insert(
                repo,
                tag,
                &current(digest, kind, 1_764_000_000_123_456 + i as i64),
            );
        }
        for (i, (tag, digest, kind)) in cases.iter().enumerate() {
            let c = map.get(repo, tag).unwrap();
            assert_eq!(c.digest, *digest, "{tag}");
            assert_eq!(c.kind, *kind);
            assert_eq!(
                c.first_seen.timestamp_micros(),
                1_764_000_000_123_456 + i as i64
            );
            assert_eq!(c.sequence, (1_764_000_000_123_456 + i as u64) % (1 << 40));
            assert!(map.get(other, tag).is_none(), "another repository's");
        }
        assert_eq!(map.kinds.len(), 2, "kinds are shared");
        assert_eq!(map.spill.len(), 3);
        assert!(map.get(repo, "16.40").is_none());
        assert!(map.get(repo, &"v".repeat(99)).is_none());

        // A tag that moves between packed and not is found once, as last put.
        map.insert(repo, "16.4", &current("sha256:odd", "database", 1));
        assert_eq!(map.get(repo, "16.4").unwrap().digest, "sha256:odd");
        let back = format!("sha256:{}", "e".repeat(64));
        map.insert(repo, "16.4", &current(&back, "database", 1));
        assert_eq!(map.get(repo, "16.4").unwrap().digest, back);
        assert_eq!(map.spill.len(), 3);
        for (tag, _, _) in &cases {
            map.remove(repo, tag);
            assert!(map.get(repo, tag).is_none(), "{tag}");
        }
        assert!(map.spill.is_empty());

        // An opening sequence past 2^40 does not pack: kept beside, whole.
        let mut far = current(&format!("sha256:{}", "c".repeat(64)), "model", 5);
        far.sequence = (1 << 40) + 3;
        map.insert(repo, "far", &far);
        assert_eq!(map.get(repo, "far").unwrap().sequence, (1 << 40) + 3);
        assert_eq!(map.spill.len(), 1);
        far.sequence = (1 << 40) - 1;
        map.insert(repo, "far", &far);
        assert_eq!(map.get(repo, "far").unwrap().sequence, (1 << 40) - 1);
        assert!(map.spill.is_empty());
    }

    #[test]
    fn times_are_kept_to_the_microsecond_like_postgresql() {
        let mut map = TagMap::default();
        let repo = Uuid::now_v7();
        let at = DateTime::from_timestamp(1_764_000_000, 123_456_789).unwrap();
        let c = Current {
            sequence: 1,
            digest: format!("sha256:{}", "a".repeat(64)),
            kind: "model".into(),
            first_seen: at,
        };
        map.insert(repo, "1", &c);
        assert_eq!(
            map.get(repo, "1").unwrap().first_seen,
            DateTime::from_timestamp(1_764_000_000, 123_456_000).unwrap()
        );
        assert!(map.spill.is_empty());
    }

    #[test]
    fn entries_stay_small() {
        assert!(std::mem::size_of::<TagBuf>() <= 24);
        assert!(std::mem::size_of::<Packed>() <= 48);
    }
}
