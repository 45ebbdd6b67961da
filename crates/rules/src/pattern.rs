//! Compiled repository and tag patterns.
//!
//! Matching semantics:
//! - a repository **regex** must match the whole name: it is compiled as `^(?:…)$`, so
//!   `nvidia/.*` selects `nvidia/nim/llm` but `nim` selects only `nim`;
//! - a repository **glob** is translated to such an anchored regex: `*` matches within one
//!   path component, `**` across components (`a/**/b` also matches `a/b`, `**/x` also
//!   matches `x`), `?` one character other than `/`, `[abc]`, `[a-z]` and `[!abc]` (or
//!   `[^abc]`) one character of (or not of) a class;
//! - a **tag regex** is searched for, like `grep`: anchor it yourself (`^1\.` selects the
//!   tags that start with `1.`, as in the DESIGN example; `^1\.2$` only `1.2`);
//! - a **tag prefix** is a plain string prefix, a **semver** requirement matches tags that
//!   read as versions (see [`crate::version`]) satisfying it.
//!
//! Every regex is built with a compiled-size limit of [`REGEX_SIZE_LIMIT`], so a
//! pathological pattern is refused when the rule is written rather than exhausting memory
//! in the scanner.

use imagelib_events::model::{RepositoryPattern, TagPattern};
use imagelib_events::{RepositoryName, Tag};
use regex::{Regex, RegexBuilder};
use semver::VersionReq;

use crate::error::{RuleError, RuleErrorReason};
use crate::version::parse_tag_version;

/// The compiled-size limit of every regex a rule holds (1 MiB).
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// The longest pattern source accepted.
pub const MAX_PATTERN_LEN: usize = 1024;

/// Whether `tag` is a signature, attestation or SBOM tag rather than an image: it ends in
/// `.sig`, `.att` or `.sbom`, or it is a cosign/referrers-fallback digest tag
/// (`sha256-<64 hex>`, `sha512-<128 hex>`), with or without such a suffix.
pub fn is_artifact_tag(tag: &str) -> bool {
    if [".sig", ".att", ".sbom"].iter().any(|s| tag.ends_with(s)) {
        return true;
    }
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    tag.strip_prefix("sha256-").is_some_and(|h| hex(h, 64))
        || tag.strip_prefix("sha512-").is_some_and(|h| hex(h, 128))
}

#[derive(Debug, Clone)]
pub(crate) enum RepoMatcher {
    Exact(RepositoryName),
    Regex(Regex),
}

impl RepoMatcher {
    pub(crate) fn compile(pattern: &RepositoryPattern, pointer: &str) -> Result<Self, RuleError> {
        match pattern {
            RepositoryPattern::Exact(name) => Ok(Self::Exact(name.clone())),
            RepositoryPattern::Glob(glob) => {
                check_source(glob, pointer)?;
                let source = glob_to_regex(glob).map_err(|message| {
                    RuleError::new(
                        pointer,
                        RuleErrorReason::Glob {
                            glob: glob.clone(),
                            message,
                        },
                    )
                })?;
                Ok(Self::Regex(build_regex(&source, pointer)?))
            }
            RepositoryPattern::Regex(source) => {
                check_source(source, pointer)?;
                build_regex(source, pointer)?;
                Ok(Self::Regex(build_regex(
                    &format!("^(?:{source})$"),
                    pointer,
                )?))
            }
        }
    }

    pub(crate) fn matches(&self, name: &RepositoryName) -> bool {
        match self {
            Self::Exact(exact) => exact == name,
            Self::Regex(re) => re.is_match(name.as_str()),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum TagMatcher {
    Exact(Tag),
    Prefix(String),
    Regex(Regex),
    Semver(VersionReq),
}

impl TagMatcher {
    pub(crate) fn compile(pattern: &TagPattern, pointer: &str) -> Result<Self, RuleError> {
        match pattern {
            TagPattern::Exact(tag) => Ok(Self::Exact(tag.clone())),
            TagPattern::Prefix(prefix) => {
                check_source(prefix, pointer)?;
                // Every non-empty prefix of a valid tag is itself a valid tag.
                prefix.parse::<Tag>().map_err(|e| {
                    RuleError::new(
                        pointer,
                        RuleErrorReason::Tag(format!("prefix can never match a tag: {e}")),
                    )
                })?;
                Ok(Self::Prefix(prefix.clone()))
            }
            TagPattern::Regex(source) => {
                check_source(source, pointer)?;
                Ok(Self::Regex(build_regex(source, pointer)?))
            }
            TagPattern::Semver(requirement) => {
                check_source(requirement, pointer)?;
                VersionReq::parse(requirement.trim())
                    .map(Self::Semver)
                    .map_err(|e| {
                        RuleError::new(
                            pointer,
                            RuleErrorReason::Semver {
                                requirement: requirement.clone(),
                                message: e.to_string(),
                            },
                        )
                    })
            }
        }
    }

    pub(crate) fn matches(&self, tag: &Tag) -> bool {
        match self {
            Self::Exact(exact) => exact == tag,
            Self::Prefix(prefix) => tag.as_str().starts_with(prefix.as_str()),
            Self::Regex(re) => re.is_match(tag.as_str()),
            Self::Semver(req) => parse_tag_version(tag.as_str()).is_some_and(|v| v.satisfies(req)),
        }
    }
}

pub(crate) fn check_source(source: &str, pointer: &str) -> Result<(), RuleError> {
    if source.trim().is_empty() {
        return Err(RuleError::new(pointer, RuleErrorReason::EmptyPattern));
    }
    let len = source.chars().count();
    if len > MAX_PATTERN_LEN {
        return Err(RuleError::new(
            pointer,
            RuleErrorReason::PatternTooLong {
                len,
                max: MAX_PATTERN_LEN,
            },
        ));
    }
    Ok(())
}

/// Builds `source` with the size limit. Callers validate the user's own pattern with this
/// before wrapping it, so a pattern like `a)|(b` cannot escape the anchors.
pub(crate) fn build_regex(source: &str, pointer: &str) -> Result<Regex, RuleError> {
    RegexBuilder::new(source)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| {
            let reason = match e {
                regex::Error::CompiledTooBig(limit) => RuleErrorReason::RegexTooLarge { limit },
                regex::Error::Syntax(message) => RuleErrorReason::Regex(message),
                other => RuleErrorReason::Regex(other.to_string()),
            };
            RuleError::new(pointer, reason)
        })
}

/// Translates a repository glob to an anchored regex (see the module docs).
pub(crate) fn glob_to_regex(glob: &str) -> Result<String, String> {
    let chars: Vec<char> = glob.chars().collect();
    let mut out = String::from("^");
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '*' if chars.get(i + 1) == Some(&'*') => {
                let at_component_start = i == 0 || chars[i - 1] == '/';
                if at_component_start && chars.get(i + 2) == Some(&'/') {
                    out.push_str("(?:[^/]+/)*");
                    i += 3;
                } else {
                    out.push_str(".*");
                    i += 2;
                }
                continue;
            }
            '*' => out.push_str("[^/]*"),
            '?' => out.push_str("[^/]"),
            '[' => {
                let (class, next) = glob_class(&chars, i)?;
                out.push_str(&class);
                i = next;
                continue;
            }
            ']' => return Err("`]` without a matching `[`".into()),
            c if c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || matches!(c, '.' | '_' | '-' | '/') =>
            {
                out.push_str(&regex::escape(&c.to_string()));
            }
            c => {
                return Err(format!(
                    "`{c}` can never appear in a repository name (lower-case letters, digits, \
                     `.`, `_`, `-` and `/`); use a regex for anything else"
                ));
            }
        }
        i += 1;
    }
    out.push('$');
    Ok(out)
}

/// Translates the class starting at `chars[start] == '['`; returns it and the index after `]`.
fn glob_class(chars: &[char], start: usize) -> Result<(String, usize), String> {
    let mut i = start + 1;
    let negated = matches!(chars.get(i), Some('!') | Some('^'));
    if negated {
        i += 1;
    }
    let mut body = String::new();
    let mut first = true;
    loop {
        let Some(&c) = chars.get(i) else {
            return Err("`[` without a closing `]`".into());
        };
        if c == ']' && !first {
            break;
        }
        first = false;
        match c {
            '-' if !body.is_empty() && chars.get(i + 1).is_some_and(|&n| n != ']') => {
                body.push('-');
            }
            '/' => return Err("a `[...]` class cannot match `/`".into()),
            c => body.push_str(&regex::escape(&c.to_string())),
        }
        i += 1;
    }
    let class = if negated {
        format!("[^/{body}]")
    } else {
        format!("[{body}]")
    };
    Ok((class, i + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn repo(s: &str) -> RepositoryName {
        s.parse().unwrap()
    }

    fn tag(s: &str) -> Tag {
        s.parse().unwrap()
    }

    fn glob(g: &str) -> RepoMatcher {
        RepoMatcher::compile(&RepositoryPattern::Glob(g.into()), "/p").unwrap()
    }

    fn regex(r: &str) -> RepoMatcher {
        RepoMatcher::compile(&RepositoryPattern::Regex(r.into()), "/p").unwrap()
    }

    fn tag_matcher(p: TagPattern) -> TagMatcher {
        TagMatcher::compile(&p, "/p").unwrap()
    }

    #[test]
    fn single_star_stays_within_a_component() {
        let m = glob("nvidia/nim/*");
        assert!(m.matches(&repo("nvidia/nim/llm")));
        assert!(m.matches(&repo("nvidia/nim/llama-3.1-8b-instruct")));
        assert!(!m.matches(&repo("nvidia/nim/a/b")));
        assert!(!m.matches(&repo("nvidia/nim")));
        assert!(!m.matches(&repo("other/nvidia/nim/llm")));
        let mid = glob("a/*/c");
        assert!(mid.matches(&repo("a/b/c")));
        assert!(!mid.matches(&repo("a/b/x/c")));
    }

    #[test]
    fn double_star_crosses_components() {
        let m = glob("nvidia/**");
        assert!(m.matches(&repo("nvidia/nim/llm")));
        assert!(m.matches(&repo("nvidia/x")));
        assert!(!m.matches(&repo("nvidia")));
        let mid = glob("a/**/c");
        assert!(mid.matches(&repo("a/c")));
        assert!(mid.matches(&repo("a/b/c")));
        assert!(mid.matches(&repo("a/b/x/c")));
        assert!(!mid.matches(&repo("a/bc")));
        let lead = glob("**/postgres");
        assert!(lead.matches(&repo("postgres")));
        assert!(lead.matches(&repo("library/postgres")));
        assert!(!lead.matches(&repo("library/postgresql")));
        let inner = glob("nim**llm");
        assert!(inner.matches(&repo("nim/x/llm")));
    }

    #[test]
    fn question_mark_and_classes() {
        let q = glob("pg1?");
        assert!(q.matches(&repo("pg16")));
        assert!(!q.matches(&repo("pg1")));
        assert!(!q.matches(&repo("pg161")));
        let class = glob("pg1[67]");
        assert!(class.matches(&repo("pg16")));
        assert!(!class.matches(&repo("pg15")));
        let range = glob("pg[0-9][0-9]");
        assert!(range.matches(&repo("pg15")));
        assert!(!range.matches(&repo("pgab")));
        let neg = glob("pg1[!6]");
        assert!(neg.matches(&repo("pg15")));
        assert!(!neg.matches(&repo("pg16")));
        let neg2 = glob("a[^b]");
        assert!(neg2.matches(&repo("ac")));
        assert!(!neg2.matches(&repo("ab")));
        let literal_dash = glob("a[-x]");
        assert!(literal_dash.matches(&repo("ax")));
        assert!(!literal_dash.matches(&repo("ay")));
    }

    #[test]
    fn glob_punctuation_is_literal() {
        let m = glob("a.b");
        assert!(m.matches(&repo("a.b")));
        assert!(!m.matches(&repo("axb")));
        let edb = glob("edb-postgres-*");
        assert!(edb.matches(&repo("edb-postgres-advanced")));
        assert!(!edb.matches(&repo("edb-postgresql")));
        let under = glob("a_b__c/*");
        assert!(under.matches(&repo("a_b__c/x")));
        assert!(!under.matches(&repo("axb__c/x")));
    }

    #[test]
    fn bad_globs_are_refused() {
        for (g, needle) in [
            ("pg[16", "without a closing"),
            ("pg]", "without a matching"),
            ("Nvidia/*", "`N` can never appear"),
            ("a{b,c}", "`{` can never appear"),
            ("a[/]", "cannot match `/`"),
        ] {
            let err = RepoMatcher::compile(&RepositoryPattern::Glob(g.into()), "/repositories/2")
                .unwrap_err();
            assert_eq!(err.pointer, "/repositories/2");
            assert!(
                matches!(&err.reason, RuleErrorReason::Glob { message, .. } if message.contains(needle)),
                "{g}: {err}"
            );
        }
    }

    #[test]
    fn repository_regexes_are_anchored() {
        let m = regex("nvidia/.*");
        assert!(m.matches(&repo("nvidia/nim/llm")));
        assert!(!m.matches(&repo("x/nvidia/nim")));
        let short = regex("nim");
        assert!(short.matches(&repo("nim")));
        assert!(!short.matches(&repo("nvidia/nim/llm")));
        let alt = regex("a|b");
        assert!(alt.matches(&repo("a")));
        assert!(!alt.matches(&repo("ab")));
    }

    #[test]
    fn anchors_cannot_be_escaped() {
        let err =
            RepoMatcher::compile(&RepositoryPattern::Regex("a)|(b".into()), "/r").unwrap_err();
        assert!(matches!(err.reason, RuleErrorReason::Regex(_)), "{err}");
    }

    #[test]
    fn bad_regexes_carry_the_regex_message() {
        let err =
            TagMatcher::compile(&TagPattern::Regex("(".into()), "/tags/include/1").unwrap_err();
        assert_eq!(err.pointer, "/tags/include/1");
        match err.reason {
            RuleErrorReason::Regex(m) => assert!(m.contains("unclosed group"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn huge_regexes_are_refused() {
        let err = RepoMatcher::compile(
            &RepositoryPattern::Regex("\\w{1000}".into()),
            "/repositories/0",
        )
        .unwrap_err();
        assert_eq!(
            err.reason,
            RuleErrorReason::RegexTooLarge {
                limit: REGEX_SIZE_LIMIT
            }
        );
        let err =
            TagMatcher::compile(&TagPattern::Regex("(a{1000}){1000}".into()), "/t").unwrap_err();
        assert!(
            matches!(err.reason, RuleErrorReason::RegexTooLarge { .. }),
            "{err}"
        );
    }

    #[test]
    fn empty_and_long_sources_are_refused() {
        for p in [
            TagPattern::Regex("".into()),
            TagPattern::Prefix(" ".into()),
            TagPattern::Semver("".into()),
        ] {
            assert_eq!(
                TagMatcher::compile(&p, "/x").unwrap_err().reason,
                RuleErrorReason::EmptyPattern
            );
        }
        let long = "a".repeat(MAX_PATTERN_LEN + 1);
        assert!(matches!(
            RepoMatcher::compile(&RepositoryPattern::Glob(long), "/x")
                .unwrap_err()
                .reason,
            RuleErrorReason::PatternTooLong { .. }
        ));
    }

    #[test]
    fn tag_regexes_are_searched() {
        let m = tag_matcher(TagPattern::Regex("^1\\.".into()));
        assert!(m.matches(&tag("1.2.3")));
        assert!(!m.matches(&tag("11.2")));
        assert!(!m.matches(&tag("v1.2")));
        let unanchored = tag_matcher(TagPattern::Regex("bookworm".into()));
        assert!(unanchored.matches(&tag("16.4-bookworm")));
        let whole = tag_matcher(TagPattern::Regex("^1\\.2$".into()));
        assert!(whole.matches(&tag("1.2")));
        assert!(!whole.matches(&tag("1.2.3")));
    }

    #[test]
    fn exact_and_prefix_tags() {
        let e = tag_matcher(TagPattern::Exact(tag("latest")));
        assert!(e.matches(&tag("latest")));
        assert!(!e.matches(&tag("latest-gpu")));
        let p = tag_matcher(TagPattern::Prefix("16.".into()));
        assert!(p.matches(&tag("16.4")));
        assert!(!p.matches(&tag("160")));
        let err = TagMatcher::compile(&TagPattern::Prefix("a/b".into()), "/p").unwrap_err();
        assert!(err.to_string().contains("prefix can never match"), "{err}");
    }

    #[test]
    fn semver_tags() {
        let m = tag_matcher(TagPattern::Semver(">=16, <18".into()));
        for ok in ["16", "16.4-bookworm", "v17.2.1", "17.4-2503310734"] {
            assert!(m.matches(&tag(ok)), "{ok}");
        }
        for no in ["15.9", "18.0", "latest", "bookworm", "17.0-rc1"] {
            assert!(!m.matches(&tag(no)), "{no}");
        }
        let caret = tag_matcher(TagPattern::Semver("^1.2".into()));
        assert!(caret.matches(&tag("1.9.0")));
        assert!(!caret.matches(&tag("1.1.9")));
        assert!(!caret.matches(&tag("2.0")));
        let tilde = tag_matcher(TagPattern::Semver("~15".into()));
        assert!(tilde.matches(&tag("15.7")));
        assert!(!tilde.matches(&tag("16.0")));
        let err = TagMatcher::compile(&TagPattern::Semver(">=sixteen".into()), "/tags/semver")
            .unwrap_err();
        assert_eq!(err.pointer, "/tags/semver");
        assert!(
            matches!(err.reason, RuleErrorReason::Semver { .. }),
            "{err}"
        );
    }

    #[test]
    fn artifact_tags() {
        let digest = "a".repeat(64);
        for t in [
            "sha256-abc.sig".to_owned(),
            "foo.att".to_owned(),
            "1.0.sbom".to_owned(),
            format!("sha256-{digest}"),
            format!("sha256-{digest}.sig"),
            format!("sha512-{}", "0".repeat(128)),
        ] {
            assert!(is_artifact_tag(&t), "{t}");
        }
        for t in [
            "latest",
            "1.0",
            "signature",
            "sha256-abc",
            "sig",
            &format!("sha256-{}", "A".repeat(64)),
        ] {
            assert!(!is_artifact_tag(t), "{t}");
        }
    }

    proptest! {
        #[test]
        fn literal_globs_match_only_themselves(a in "[a-z0-9]{1,8}", b in "[a-z0-9]{1,8}") {
            let name = format!("{a}/{b}");
            let m = glob(&name);
            prop_assert!(m.matches(&repo(&name)));
            let other = format!("{a}/{b}x");
            prop_assert!(!m.matches(&repo(&other)));
        }

        #[test]
        fn single_star_never_crosses_a_slash(parts in proptest::collection::vec("[a-z0-9]{1,6}", 1..5)) {
            let name = repo(&parts.join("/"));
            prop_assert_eq!(glob("*").matches(&name), parts.len() == 1);
            prop_assert!(glob("**").matches(&name));
        }

        #[test]
        fn glob_translation_never_panics(g in "[a-z/*?\\[\\]!^-]{0,12}") {
            let _ = glob_to_regex(&g);
        }
    }
}
