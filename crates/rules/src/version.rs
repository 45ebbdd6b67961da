//! Lenient versions read from tags, and the "newest first" order.
//!
//! Registry tags are rarely strict semver: `16`, `16.4`, `v1.2.3`, `16.4-bookworm`,
//! `17.4-2503310734`. A tag is read as a version when, after an optional `v`, it starts with
//! one to three dot-separated numbers followed by nothing or by a separator (`-`, `_`, `+`,
//! `.`) and a suffix. Missing numbers are zero (`16.4` is 16.4.0). The suffix is a
//! *variant* (`-bookworm`, a build stamp), not a pre-release, except when its first word is
//! a pre-release marker (`alpha`, `beta`, `rc`, `pre`, `preview`, `dev`, `snapshot`): then
//! the version is a semver pre-release, sorts below its release, and semver requirements
//! treat it as semver does (`>=1.0` does not match `1.1.0-rc1`).
//!
//! Newest first: version tags before all others, by version descending; for one version,
//! the tag without a suffix first, then by suffix descending; tags that are not versions
//! after them, by name descending. Names and suffixes compare "naturally" (digit runs as
//! numbers: `b10` after `b9`). The order is total, so a `newest N` selection is
//! deterministic.

use std::cmp::Ordering;

use semver::{BuildMetadata, Prerelease, Version, VersionReq};

const PRERELEASE_MARKERS: [&str; 7] = ["alpha", "beta", "rc", "pre", "preview", "dev", "snapshot"];

/// A tag read as a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagVersion {
    /// The version; its pre-release is set only for pre-release suffixes.
    pub version: Version,
    /// Everything after the numbers, with its leading separator (`-bookworm`), or `""`.
    pub suffix: String,
}

impl TagVersion {
    /// Whether this version satisfies `req` (semver rules, pre-releases included).
    pub fn satisfies(&self, req: &VersionReq) -> bool {
        req.matches(&self.version)
    }
}

/// Reads `tag` as a version, or `None` when it is not one (`latest`, `bookworm`, `1a`).
pub fn parse_tag_version(tag: &str) -> Option<TagVersion> {
    let s = tag
        .strip_prefix('v')
        .or_else(|| tag.strip_prefix('V'))
        .unwrap_or(tag);
    let mut numbers = [0u64; 3];
    let mut count = 0;
    let mut rest = s;
    loop {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            break;
        }
        numbers[count] = rest[..digits].parse().ok()?;
        count += 1;
        rest = &rest[digits..];
        if count == 3 {
            break;
        }
        match rest.strip_prefix('.') {
            Some(after) if after.starts_with(|c: char| c.is_ascii_digit()) => rest = after,
            _ => break,
        }
    }
    if count == 0 {
        return None;
    }
    if !rest.is_empty() && !rest.starts_with(['-', '_', '+', '.']) {
        return None;
    }
    let pre = prerelease_of(rest);
    Some(TagVersion {
        version: Version {
            major: numbers[0],
            minor: numbers[1],
            patch: numbers[2],
            pre,
            build: BuildMetadata::EMPTY,
        },
        suffix: rest.to_owned(),
    })
}

fn prerelease_of(suffix: &str) -> Prerelease {
    let body = suffix.get(1..).unwrap_or_default();
    let word: String = body
        .chars()
        .take_while(char::is_ascii_alphabetic)
        .collect::<String>()
        .to_ascii_lowercase();
    if !PRERELEASE_MARKERS.contains(&word.as_str()) {
        return Prerelease::EMPTY;
    }
    let cleaned: String = body
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let cleaned = cleaned
        .split('.')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(".");
    Prerelease::new(&cleaned).unwrap_or_else(|_| {
        // e.g. a numeric identifier with a leading zero (`rc.01`); the marker alone still
        // makes it a pre-release.
        Prerelease::new(&word).unwrap_or(Prerelease::EMPTY)
    })
}

/// Compares strings with digit runs compared as numbers (`b9` < `b10`).
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let da = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let db = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (na, nb) = (trim_zeros(&a[..da]), trim_zeros(&b[..db]));
                let ord = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[da..];
                b = &b[db..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let zeros = digits.iter().take_while(|&&c| c == b'0').count();
    &digits[zeros..]
}

/// A tag's position in the newest-first order, computed once per tag.
#[derive(Debug, Clone)]
pub(crate) struct NewestKey<'a> {
    name: &'a str,
    version: Option<TagVersion>,
}

impl<'a> NewestKey<'a> {
    pub(crate) fn new(name: &'a str) -> Self {
        Self {
            name,
            version: parse_tag_version(name),
        }
    }
}

/// `Greater` when `a` is newer than `b`.
fn newer(a: &NewestKey<'_>, b: &NewestKey<'_>) -> Ordering {
    let by_version = match (&a.version, &b.version) {
        (Some(x), Some(y)) => x.version.cmp(&y.version).then_with(|| {
            match (x.suffix.is_empty(), y.suffix.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => natural_cmp(&x.suffix, &y.suffix),
            }
        }),
        (Some(_), None) => Ordering::Greater,
        (None, Some(_)) => Ordering::Less,
        (None, None) => Ordering::Equal,
    };
    by_version
        .then_with(|| natural_cmp(a.name, b.name))
        .then_with(|| a.name.cmp(b.name))
}

/// Newest first (see the module docs).
pub(crate) fn newest_first(a: &NewestKey<'_>, b: &NewestKey<'_>) -> Ordering {
    newer(b, a)
}

/// Sorts tag names newest first (see the module docs).
pub fn sort_newest_first<S: AsRef<str>>(tags: &mut [S]) {
    tags.sort_by(|a, b| newest_first(&NewestKey::new(a.as_ref()), &NewestKey::new(b.as_ref())));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(tag: &str) -> (u64, u64, u64, String) {
        let t = parse_tag_version(tag).unwrap_or_else(|| panic!("{tag} should be a version"));
        (t.version.major, t.version.minor, t.version.patch, t.suffix)
    }

    #[test]
    fn lenient_versions() {
        assert_eq!(v("1"), (1, 0, 0, "".into()));
        assert_eq!(v("1.2"), (1, 2, 0, "".into()));
        assert_eq!(v("v1.2.3"), (1, 2, 3, "".into()));
        assert_eq!(v("V2"), (2, 0, 0, "".into()));
        assert_eq!(v("16.4-bookworm"), (16, 4, 0, "-bookworm".into()));
        assert_eq!(v("17.4-2503310734"), (17, 4, 0, "-2503310734".into()));
        assert_eq!(v("1.2.3.4"), (1, 2, 3, ".4".into()));
        assert_eq!(v("3.12_slim"), (3, 12, 0, "_slim".into()));
        assert_eq!(v("1.0+build5"), (1, 0, 0, "+build5".into()));
        assert_eq!(v("1."), (1, 0, 0, ".".into()));
    }

    #[test]
    fn non_versions() {
        for tag in [
            "latest",
            "bookworm",
            "1a",
            "v",
            "",
            "17rc1",
            "sha256-abc",
            "99999999999999999999999",
        ] {
            assert!(parse_tag_version(tag).is_none(), "{tag}");
        }
    }

    #[test]
    fn prerelease_suffixes_are_semver_prereleases() {
        let rc = parse_tag_version("1.1.0-rc1").unwrap();
        assert_eq!(rc.version.pre.as_str(), "rc1");
        let rc_dot = parse_tag_version("2.0-RC.01").unwrap();
        assert!(!rc_dot.version.pre.is_empty());
        let variant = parse_tag_version("1.1.0-bookworm").unwrap();
        assert!(variant.version.pre.is_empty());
        let req = VersionReq::parse(">=1.0").unwrap();
        assert!(!rc.satisfies(&req));
        assert!(variant.satisfies(&req));
    }

    #[test]
    fn natural_order() {
        assert_eq!(natural_cmp("b9", "b10"), Ordering::Less);
        assert_eq!(natural_cmp("b010", "b10"), Ordering::Equal);
        assert_eq!(natural_cmp("abc", "abd"), Ordering::Less);
        assert_eq!(natural_cmp("ab", "abc"), Ordering::Less);
        assert_eq!(natural_cmp("2", "10"), Ordering::Less);
    }

    #[test]
    fn newest_first_order() {
        let mut tags = vec![
            "latest",
            "16.4-bookworm",
            "16.4",
            "1.0.0-rc1",
            "9.6",
            "16.10",
            "v17",
            "edge",
            "16.4-alpine",
            "1.0.0",
            "stable",
        ];
        sort_newest_first(&mut tags);
        assert_eq!(
            tags,
            vec![
                "v17",
                "16.10",
                "16.4",
                "16.4-bookworm",
                "16.4-alpine",
                "9.6",
                "1.0.0",
                "1.0.0-rc1",
                "stable",
                "latest",
                "edge",
            ]
        );
    }

    proptest! {
        #[test]
        fn formatted_versions_round_trip(a in 0u64..100_000, b in 0u64..1000, c in 0u64..1000, v in any::<bool>()) {
            let tag = format!("{}{a}.{b}.{c}", if v { "v" } else { "" });
            let t = parse_tag_version(&tag).unwrap();
            prop_assert_eq!((t.version.major, t.version.minor, t.version.patch), (a, b, c));
            prop_assert!(t.suffix.is_empty());
        }

        #[test]
        fn higher_versions_sort_first(a in 0u64..1000, b in 0u64..1000, s in "[a-z]{0,6}") {
            let (x, y) = (format!("{a}.0"), format!("{b}.1-{s}"));
            let mut tags = vec![x.clone(), y.clone()];
            sort_newest_first(&mut tags);
            let expect_y_first = b >= a;
            prop_assert_eq!(tags[0] == y, expect_y_first);
        }

        #[test]
        fn order_is_total_and_consistent(mut tags in proptest::collection::vec("[a-z0-9._-]{1,8}", 0..20)) {
            sort_newest_first(&mut tags);
            for w in tags.windows(2) {
                let (a, b) = (NewestKey::new(&w[0]), NewestKey::new(&w[1]));
                prop_assert_ne!(newest_first(&a, &b), Ordering::Greater);
                prop_assert_eq!(newest_first(&a, &b), newest_first(&b, &a).reverse());
            }
        }
    }
}
