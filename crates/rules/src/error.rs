//! Why a rule was refused, and where.
//!
//! Every refusal names the offending field as a JSON pointer (RFC 6901) into the document
//! the caller sent: the `PUT` body, the `rule.set` event data, or the agent YAML. The HTTP
//! layer puts it in the problem details so a client can highlight the field.

use std::fmt;

/// A rule, rule input or agent file that was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{reason}", PointerPrefix(.pointer))]
pub struct RuleError {
    /// JSON pointer to the offending field (`""` is the whole document).
    pub pointer: String,
    pub reason: RuleErrorReason,
}

/// What was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleErrorReason {
    #[error("invalid regular expression: {0}")]
    Regex(String),
    #[error("regular expression is too large once compiled (limit {limit} bytes); simplify it")]
    RegexTooLarge { limit: usize },
    #[error("invalid glob `{glob}`: {message}")]
    Glob { glob: String, message: String },
    #[error("invalid semver requirement `{requirement}`: {message}")]
    Semver {
        requirement: String,
        message: String,
    },
    #[error("{0}")]
    RepositoryName(String),
    #[error("{0}")]
    Tag(String),
    #[error("{0}")]
    HmTag(String),
    #[error("{0}")]
    RuleId(String),
    #[error("a rule needs at least one repository pattern")]
    NoRepositories,
    #[error("`newest` must be at least 1 (leave it out to keep every tag)")]
    NewestZero,
    #[error("empty pattern: it would match nothing (or everything); leave the list empty instead")]
    EmptyPattern,
    #[error("pattern is {len} characters long; at most {max} are allowed")]
    PatternTooLong { len: usize, max: usize },
    #[error("{len} entries; at most {max} are allowed")]
    TooManyPatterns { len: usize, max: usize },
    #[error("unknown pattern kind `{found}`; expected one of {expected}")]
    UnknownPatternKind {
        found: String,
        expected: &'static str,
    },
    /// The document does not have the expected shape (wrong type, unknown field, …).
    #[error("{0}")]
    Invalid(String),
    #[error(
        "no repository list: expected `postgres_repositories` or `model_repositories` under \
         `dispatcher.capabilities.provisioning.images.discovery.registry`"
    )]
    NoAgentRepositories,
    #[error("`{name}` is listed twice (first at {first})")]
    Duplicate { name: String, first: String },
    #[error("{len} characters; at most {max} are allowed")]
    TooLong { len: usize, max: usize },
    #[error("invalid public key: {0}")]
    Key(String),
    #[error("`key_id` {given} is not the id of this key ({derived}); drop it or fix the PEM")]
    KeyIdMismatch { given: String, derived: String },
    #[error("invalid OIDC issuer: {0}")]
    Issuer(String),
    #[error(
        "anchor the regex: every alternative must start with `^` and end with `$` \
         (`^ci@acme\\.com$`, `^(a|b)$`), or a longer or other name would match too"
    )]
    Unanchored,
    #[error("the policy holds {len} bytes of text; at most {max} are allowed")]
    PolicyTooLarge { len: usize, max: usize },
    #[error("invalid vulnerability id: {0}")]
    VulnerabilityId(String),
    #[error("{0}")]
    Date(String),
    #[error(
        "a policy in `enforce` or `audit` mode must ask for something: `keys`, `identities`, \
         `max_severity` or `require_sbom` (or set `mode: off`)"
    )]
    MeaninglessPolicy,
    #[error("`allow_cves` only matters with `max_severity`: set a limit, or drop the allow list")]
    AllowListWithoutLimit,
}

impl RuleError {
    pub fn new(pointer: impl Into<String>, reason: RuleErrorReason) -> Self {
        Self {
            pointer: pointer.into(),
            reason,
        }
    }

    pub fn pointer(&self) -> &str {
        &self.pointer
    }

    /// The same error, located inside a larger document at `prefix`.
    pub(crate) fn within(mut self, prefix: &str) -> Self {
        self.pointer = format!("{prefix}{}", self.pointer);
        self
    }
}

struct PointerPrefix<'a>(&'a String);

impl fmt::Display for PointerPrefix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            Ok(())
        } else {
            write!(f, "{}: ", self.0)
        }
    }
}

/// Escapes one reference token of a JSON pointer (`~` → `~0`, `/` → `~1`).
pub(crate) fn escape_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// The JSON pointer of a `serde_path_to_error` path.
pub(crate) fn pointer_of(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("/{index}")),
            Segment::Map { key } => out.push_str(&format!("/{}", escape_token(key))),
            Segment::Enum { variant } => out.push_str(&format!("/{}", escape_token(variant))),
            Segment::Unknown => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_shows_pointer_then_reason() {
        let e = RuleError::new("/tags/newest", RuleErrorReason::NewestZero);
        assert_eq!(
            e.to_string(),
            "/tags/newest: `newest` must be at least 1 (leave it out to keep every tag)"
        );
        let root = RuleError::new("", RuleErrorReason::NoAgentRepositories);
        assert!(root.to_string().starts_with("no repository list"));
    }

    #[test]
    fn within_prefixes_the_pointer() {
        let e = RuleError::new("/tags", RuleErrorReason::EmptyPattern).within("/a/0");
        assert_eq!(e.pointer(), "/a/0/tags");
    }

    #[test]
    fn tokens_are_escaped() {
        assert_eq!(escape_token("a/b~c"), "a~1b~0c");
    }
}
