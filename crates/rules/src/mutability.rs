//! A tag's mutability class: whether it may move, must never move, or neither.
//!
//! Registries let anyone with push rights re-point any tag, so "immutable" is a promise
//! the publisher makes, and imagelib watches it rather than trusting it (issue 14). The
//! class decides what the scanner spends requests on:
//! - **floating** tags (`latest`, `stable`, `main`, …) are expected to move: re-checked by
//!   `HEAD` on every scan, and a move is an ordinary `image.tag_moved`;
//! - **immutable** tags (semantic versions by default) must never move: re-checked by
//!   `HEAD` on a push webhook for their repository and by the rolling integrity sweep, and
//!   a move is an `image.tag_mutated` besides the `tag_moved`;
//! - tags that are **neither** (`sha-3f2a1b`, `17rc1`: a digit but no version) are looked
//!   at once, when discovered.
//!
//! Per rule ([`crate::CompiledRule::tag_class`]): the `mutable` patterns (default:
//! [`crate::is_default_mutable`]) decide first, so a floating tag is never immutable; then
//! the `immutable` patterns (default: [`is_default_immutable`]). Across the rules of a
//! registry ([`crate::RuleSetIndex::tag_class`]) the class is the strongest claim of any
//! rule that takes the tag: floating over immutable over neither — a needless `HEAD` is
//! cheap, a mutation nobody looked for is not.

use crate::compiled::is_default_mutable;
use crate::version::parse_tag_version;

/// What a tag is expected to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TagClass {
    /// Neither floating nor immutable: looked at when discovered only.
    Neither,
    /// Must never move: a move is a mutation.
    Immutable,
    /// Expected to move: re-checked on every scan.
    Floating,
}

impl TagClass {
    /// The class of a tag several rules take: the strongest claim (floating, then
    /// immutable, then neither).
    pub fn merge(self, other: TagClass) -> TagClass {
        self.max(other)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TagClass::Neither => "neither",
            TagClass::Immutable => "immutable",
            TagClass::Floating => "floating",
        }
    }
}

/// Whether a tag is immutable when a rule gives no `immutable` patterns: it reads as a
/// version ([`crate::version`]: `1`, `1.2`, `v1.2.3`, `16.4-bookworm`, `1.2.3-rc1`) and
/// does not float by default (`16-latest` floats).
pub fn is_default_immutable(tag: &str) -> bool {
    parse_tag_version(tag).is_some() && !is_default_mutable(tag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn default_immutable_tags_are_versions() {
        for tag in [
            "1",
            "1.2",
            "1.2.3",
            "v1.2.3",
            "V2",
            "16.4-bookworm",
            "1.2.3-rc1",
            "17.4-2503310734",
            "3.12_slim",
            "1.0+build5",
        ] {
            assert!(is_default_immutable(tag), "{tag}");
        }
        for tag in [
            "latest",
            "stable",
            "main",
            "16-latest",
            "1.2-latest",
            "sha-3f2a1b",
            "17rc1",
            "1a",
            "edge",
        ] {
            assert!(!is_default_immutable(tag), "{tag}");
        }
    }

    #[test]
    fn merge_is_the_strongest_claim() {
        use TagClass::*;
        assert_eq!(Neither.merge(Immutable), Immutable);
        assert_eq!(Immutable.merge(Floating), Floating);
        assert_eq!(Floating.merge(Neither), Floating);
        assert_eq!(Neither.merge(Neither), Neither);
        assert_eq!(Floating.as_str(), "floating");
    }

    proptest! {
        #[test]
        fn formatted_versions_are_immutable_by_default(
            a in 0u64..100_000,
            b in proptest::option::of(0u64..1000),
            c in 0u64..1000,
            v in any::<bool>(),
            suffix in proptest::option::of("[a-z]{1,8}[0-9]{0,3}"),
        ) {
            let mut tag = format!("{}{a}", if v { "v" } else { "" });
            if let Some(b) = b {
                tag.push_str(&format!(".{b}.{c}"));
            }
            if let Some(s) = &suffix {
                tag.push('-');
                tag.push_str(s);
            }
            let floats = suffix.as_deref() == Some("latest");
            prop_assert_eq!(is_default_immutable(&tag), !floats, "{}", tag);
        }

        #[test]
        fn tags_without_a_digit_are_never_immutable(tag in "[a-zA-Z_][a-zA-Z._-]{0,20}") {
            prop_assert!(!is_default_immutable(&tag));
            prop_assert!(is_default_mutable(&tag));
        }

        #[test]
        fn default_classes_never_overlap(tag in "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,20}") {
            prop_assert!(!(is_default_immutable(&tag) && is_default_mutable(&tag)), "{}", tag);
        }
    }
}
