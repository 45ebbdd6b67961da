//! OCI distribution identifiers: digests, repository names and tags.
//!
//! These are parsed once at the edge (HTTP bodies, registry responses, events) and are
//! valid by construction afterwards, so the rest of the code never re-checks a string
//! or panics on a malformed one. The grammar is the one of the OCI distribution spec
//! (`distribution-spec/spec.md`, "Pulling manifests") and `image-spec/descriptor.md`.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why an OCI identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OciParseError {
    #[error("digest `{0}` is not `algorithm:encoded` (e.g. `sha256:<64 hex>`)")]
    DigestFormat(String),
    #[error("digest `{value}`: {reason}")]
    DigestEncoding { value: String, reason: &'static str },
    #[error("repository name is empty")]
    RepositoryEmpty,
    #[error("repository name is longer than {max} characters", max = RepositoryName::MAX_LEN)]
    RepositoryTooLong,
    #[error(
        "repository name `{0}` is not valid: path components are lower-case letters and digits, \
         separated by `.`, `_`, `__` or `-`, joined by `/`"
    )]
    RepositoryFormat(String),
    #[error(
        "tag `{0}` is not valid: 1 to 128 characters of `[A-Za-z0-9_.-]`, not starting with `.` or `-`"
    )]
    TagFormat(String),
}

macro_rules! string_newtype_serde {
    ($ty:ident, $pattern:expr, $desc:expr) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }

        impl JsonSchema for $ty {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($ty).into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "pattern": $pattern,
                    "description": $desc,
                })
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $ty {
            type Error = OciParseError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                s.parse()
            }
        }

        impl $ty {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
    };
}

/// A content digest such as `sha256:6c3c624b…`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    pub fn algorithm(&self) -> &str {
        self.0.split_once(':').map(|(a, _)| a).unwrap_or_default()
    }

    pub fn encoded(&self) -> &str {
        self.0.split_once(':').map(|(_, e)| e).unwrap_or_default()
    }
}

impl FromStr for Digest {
    type Err = OciParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((algorithm, encoded)) = s.split_once(':') else {
            return Err(OciParseError::DigestFormat(s.to_owned()));
        };
        // algorithm-component ([+._-] algorithm-component)*, component [a-z0-9]+
        let alg_ok = !algorithm.is_empty()
            && algorithm.split(['+', '.', '_', '-']).all(|c| {
                !c.is_empty()
                    && c.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            });
        if !alg_ok || encoded.is_empty() {
            return Err(OciParseError::DigestFormat(s.to_owned()));
        }
        let hex_len = match algorithm {
            "sha256" => Some(64),
            "sha512" => Some(128),
            _ => None,
        };
        match hex_len {
            Some(len) => {
                if encoded.len() != len {
                    return Err(OciParseError::DigestEncoding {
                        value: s.to_owned(),
                        reason: "wrong length for its algorithm",
                    });
                }
                if !encoded
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                {
                    return Err(OciParseError::DigestEncoding {
                        value: s.to_owned(),
                        reason: "encoded part must be lower-case hex",
                    });
                }
            }
            None => {
                if !encoded
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'))
                {
                    return Err(OciParseError::DigestEncoding {
                        value: s.to_owned(),
                        reason: "encoded part must be [a-zA-Z0-9=_-]",
                    });
                }
            }
        }
        Ok(Digest(s.to_owned()))
    }
}

string_newtype_serde!(
    Digest,
    "^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$",
    "An OCI content digest, `algorithm:encoded`."
);

/// A repository name within a registry, e.g. `nvidia/nim/llama-3.1-8b-instruct`.
///
/// Never used as a NATS subject token: it may hold `.` and `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepositoryName(String);

impl RepositoryName {
    pub const MAX_LEN: usize = 255;

    /// The last path component, which users read as the image's short name.
    pub fn short_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
}

fn valid_path_component(c: &str) -> bool {
    // [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
    let b = c.as_bytes();
    if b.is_empty() || !is_lower_alnum(b[0]) || !is_lower_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_lower_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_lower_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

impl FromStr for RepositoryName {
    type Err = OciParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(OciParseError::RepositoryEmpty);
        }
        if s.len() > Self::MAX_LEN {
            return Err(OciParseError::RepositoryTooLong);
        }
        if !s.split('/').all(valid_path_component) {
            return Err(OciParseError::RepositoryFormat(s.to_owned()));
        }
        Ok(RepositoryName(s.to_owned()))
    }
}

string_newtype_serde!(
    RepositoryName,
    "^[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*)*$",
    "An OCI repository name: lower-case path components joined by `/`."
);

/// A tag such as `16.4-bookworm` or `latest`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl FromStr for Tag {
    type Err = OciParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 128
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b.iter()
                .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
        if ok {
            Ok(Tag(s.to_owned()))
        } else {
            Err(OciParseError::TagFormat(s.to_owned()))
        }
    }
}

string_newtype_serde!(Tag, "^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$", "An OCI tag.");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests() {
        let d: Digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            .parse()
            .unwrap();
        assert_eq!(d.algorithm(), "sha256");
        assert!("sha256:abc".parse::<Digest>().is_err());
        assert!("sha256:".parse::<Digest>().is_err());
        assert!("nocolon".parse::<Digest>().is_err());
        assert!(
            "SHA256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
                .parse::<Digest>()
                .is_err()
        );
        assert!(
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"
                .parse::<Digest>()
                .is_err()
        );
        assert!(
            "multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8"
                .parse::<Digest>()
                .is_ok()
        );
    }

    #[test]
    fn repository_names() {
        for ok in [
            "postgres",
            "nvidia/nim/llama-3.1-8b-instruct",
            "a/b_c/d__e/f--g",
            "library/postgres",
            "x0",
        ] {
            assert!(ok.parse::<RepositoryName>().is_ok(), "{ok}");
        }
        for bad in [
            "", "Postgres", "a//b", "/a", "a/", "a___b", "a..b", "-a", "a-", "a b", "a:b", "a.*",
        ] {
            assert!(bad.parse::<RepositoryName>().is_err(), "{bad}");
        }
        assert!("a".repeat(256).parse::<RepositoryName>().is_err());
        assert_eq!(
            "nvidia/nim/llm"
                .parse::<RepositoryName>()
                .unwrap()
                .short_name(),
            "llm"
        );
    }

    #[test]
    fn tags() {
        for ok in ["latest", "16.4-bookworm", "_x", "V1", "sha256-abc.sig"] {
            assert!(ok.parse::<Tag>().is_ok(), "{ok}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", &"a".repeat(129)] {
            assert!(bad.parse::<Tag>().is_err(), "{bad}");
        }
    }

    #[test]
    fn serde_refuses_invalid_values() {
        assert!(serde_json::from_str::<Tag>("\"a/b\"").is_err());
        let t: Tag = serde_json::from_str("\"v1\"").unwrap();
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"v1\"");
    }
}
