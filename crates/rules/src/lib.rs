//! Repository rules: which repositories and tags of a registry imagelib discovers, and what
//! the images found are.
//!
//! registry-registry and sync-scanner must agree exactly on what a rule means, or the
//! scanner would skip (or scan) what the admin was told it would not, so both use this
//! crate:
//! - registry-registry parses `PUT` bodies ([`RuleInput`]) and agent YAML
//!   ([`parse_agent_yaml`]) and refuses a bad rule with the JSON pointer of the field and
//!   the reason ([`RuleError`]) before any `rule.set` event exists;
//! - sync-scanner compiles the `rule.set` events ([`CompiledRule`], [`RuleSetIndex`]),
//!   decides which repositories and tags to look at, which tags to re-check and how
//!   ([`mutability`]: floating, immutable or neither), and classifies what it finds
//!   ([`classify()`], [`parse_extensions`]).
//!
//! Matching semantics are in [`pattern`], the version order used by `newest N` and semver
//! ranges in [`version`], and the precedence between several rules in [`index`]. A rule's
//! retention policy is validated in [`retention`] and evaluated as a dry run in
//! [`lifecycle`] (catalog-projector's preview), so what was accepted is what is previewed.

pub mod agent;
pub mod classify;
pub mod compiled;
pub mod error;
pub mod index;
pub mod input;
pub mod lifecycle;
pub mod mutability;
pub mod pattern;
pub mod retention;
pub mod trust;
pub mod version;

pub use agent::{ImportedRule, parse_agent_yaml};
pub use classify::{classify, model_type_from_hints, parse_extensions};
pub use compiled::{CompiledRule, MAX_PATTERNS, is_default_mutable};
pub use error::{RuleError, RuleErrorReason};
pub use index::{RuleSetIndex, SelectedTag};
pub use input::{PatternInput, RepositoriesInput, RuleInput, TagsInput, classify_repository};
pub use mutability::{TagClass, is_default_immutable};
pub use pattern::{MAX_PATTERN_LEN, REGEX_SIZE_LIMIT, is_artifact_tag};
pub use retention::{
    CompiledRetention, RetentionInput, RetentionRuleInput, RetentionTagsInput, check_retention,
};
pub use trust::{CveInput, IdentityInput, KeyInput, RuleView, TrustInput, check_policy};
pub use version::{TagVersion, natural_cmp, parse_tag_version, sort_newest_first};
