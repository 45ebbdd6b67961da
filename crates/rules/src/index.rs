//! All the rules of one registry, as the scanner applies them.
//!
//! Precedence, when several enabled rules match one repository:
//! - the repository is in scope if any enabled rule matches it (disabled rules stay in
//!   the index, visible through [`RuleSetIndex::get`], but never match);
//! - the tags discovered are the union of what each matching rule selects (each rule
//!   applies its own filters and its own `newest N`);
//! - the rule that *governs* a repository (its kind, HM tags and description) is the first
//!   matching rule in rule-id order ([`RuleSetIndex::primary_rule`]); for one tag it is the
//!   first rule in rule-id order that selected that tag ([`SelectedTag::rule`]), which is
//!   the same rule unless the rules split the tags between them;
//! - a tag is mutable if any matching rule that selected it says so (a needless `HEAD` is
//!   cheap; a missed moved tag is not); its class ([`crate::mutability`]) is likewise the
//!   strongest claim of those rules: floating, then immutable, then neither;
//! - a tag's trust policy is that of the first enabled rule in rule-id order that admits
//!   the tag and has one ([`RuleSetIndex::trust_rule`]), which need not be the rule that
//!   governs the tag.

use std::collections::{BTreeMap, BTreeSet};

use imagelib_events::event::RuleSet;
use imagelib_events::{RepositoryName, RuleId, Tag};

use crate::compiled::CompiledRule;
use crate::error::RuleError;
use crate::mutability::TagClass;

/// One registry's rules, keyed and ordered by rule id.
#[derive(Debug, Clone, Default)]
pub struct RuleSetIndex {
    rules: BTreeMap<RuleId, CompiledRule>,
}

/// A tag one registry's rules discover, and the rule that governs it.
#[derive(Debug, Clone, Copy)]
pub struct SelectedTag<'r, 't> {
    pub tag: &'t Tag,
    /// The first rule in rule-id order that selected the tag.
    pub rule: &'r CompiledRule,
    /// Whether any rule that selected the tag says it can move.
    pub mutable: bool,
    /// Its class: the strongest claim of the rules that selected it (`Floating` exactly
    /// when `mutable`).
    pub class: TagClass,
}

impl RuleSetIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a compiled rule; returns the one it replaced.
    pub fn upsert(&mut self, rule: CompiledRule) -> Option<CompiledRule> {
        self.rules.insert(rule.id().clone(), rule)
    }

    /// Compiles and upserts a `rule.set` event's rule. On error the index is unchanged.
    pub fn apply_set(&mut self, rule: &RuleSet) -> Result<Option<CompiledRule>, RuleError> {
        Ok(self.upsert(CompiledRule::compile(rule)?))
    }

    /// Removes a rule (`rule.removed`); returns it.
    pub fn remove(&mut self, id: &RuleId) -> Option<CompiledRule> {
        self.rules.remove(id)
    }

    pub fn get(&self, id: &RuleId) -> Option<&CompiledRule> {
        self.rules.get(id)
    }

    /// Every rule, enabled or not, in rule-id order.
    pub fn iter(&self) -> impl Iterator<Item = &CompiledRule> {
        self.rules.values()
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether any rule is enabled (a registry without one has nothing to scan).
    pub fn has_enabled(&self) -> bool {
        self.rules.values().any(CompiledRule::enabled)
    }

    /// The enabled rules matching `repository`, in rule-id order.
    pub fn rules_for(&self, repository: &RepositoryName) -> Vec<&CompiledRule> {
        self.rules
            .values()
            .filter(|r| r.enabled() && r.matches_repository(repository))
            .collect()
    }

    /// Whether any enabled rule matches `repository`.
    pub fn in_scope(&self, repository: &RepositoryName) -> bool {
        self.rules
            .values()
            .any(|r| r.enabled() && r.matches_repository(repository))
    }

    /// The rule that governs `repository`: the first enabled matching rule in rule-id order.
    pub fn primary_rule(&self, repository: &RepositoryName) -> Option<&CompiledRule> {
        self.rules
            .values()
            .find(|r| r.enabled() && r.matches_repository(repository))
    }

    /// The rule whose trust policy applies to `tag` of `repository`: the first enabled rule
    /// in rule-id order that matches the repository, admits the tag (include, exclude and
    /// artifact-tag filters; `newest` is not applied) and has a `trust` policy, whatever its
    /// mode. `None`: no policy applies.
    pub fn trust_rule(&self, repository: &RepositoryName, tag: &Tag) -> Option<&CompiledRule> {
        self.rules.values().find(|r| {
            r.enabled()
                && r.trust().is_some()
                && r.matches_repository(repository)
                && r.admits_tag(tag)
        })
    }

    /// The class of `tag` of `repository` ([`crate::mutability`]): the strongest claim of
    /// the enabled rules that match the repository and admit the tag (`newest` is not
    /// applied: it needs the whole listing), `None` when no rule takes it. For a tag
    /// already discovered, such as the integrity sweep re-verifies.
    pub fn tag_class(&self, repository: &RepositoryName, tag: &Tag) -> Option<TagClass> {
        self.rules
            .values()
            .filter(|r| r.enabled() && r.matches_repository(repository) && r.admits_tag(tag))
            .map(|r| r.tag_class(tag))
            .reduce(TagClass::merge)
    }

    /// The repositories named exactly by enabled rules, for registries without `_catalog`.
    pub fn exact_repositories(&self) -> BTreeSet<&RepositoryName> {
        self.rules
            .values()
            .filter(|r| r.enabled())
            .flat_map(CompiledRule::exact_repositories)
            .collect()
    }

    /// The tags of `repository` that the enabled rules discover (their union), in the
    /// order of `tags`, each with its governing rule and mutability.
    pub fn select<'r, 't>(
        &'r self,
        repository: &RepositoryName,
        tags: &'t [Tag],
    ) -> Vec<SelectedTag<'r, 't>> {
        let mut chosen: Vec<Option<(&'r CompiledRule, TagClass)>> = vec![None; tags.len()];
        for rule in self.rules_for(repository) {
            for index in rule.select_indices(tags) {
                let class = rule.tag_class(&tags[index]);
                match &mut chosen[index] {
                    Some((_, c)) => *c = c.merge(class),
                    slot @ None => *slot = Some((rule, class)),
                }
            }
        }
        tags.iter()
            .zip(chosen)
            .filter_map(|(tag, c)| {
                c.map(|(rule, class)| SelectedTag {
                    tag,
                    rule,
                    mutable: class == TagClass::Floating,
                    class,
                })
            })
            .collect()
    }

    /// The union of the tags the enabled rules matching `repository` select, in the order
    /// of `tags`.
    pub fn select_tags<'t>(&self, repository: &RepositoryName, tags: &'t [Tag]) -> Vec<&'t Tag> {
        self.select(repository, tags)
            .into_iter()
            .map(|s| s.tag)
            .collect()
    }
}

impl FromIterator<CompiledRule> for RuleSetIndex {
    fn from_iter<I: IntoIterator<Item = CompiledRule>>(iter: I) -> Self {
        let mut index = Self::new();
        for rule in iter {
            index.upsert(rule);
        }
        index
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compiled::tests::{rule, tags};
    use imagelib_events::model::{RepositoryPattern, RuleKind, TagPattern};

    fn compiled(id: &str, glob: &str, f: impl FnOnce(&mut RuleSet)) -> CompiledRule {
        let mut r = rule(id, vec![RepositoryPattern::Glob(glob.into())]);
        f(&mut r);
        CompiledRule::compile(&r).unwrap()
    }

    fn repo(s: &str) -> RepositoryName {
        s.parse().unwrap()
    }

    #[test]
    fn the_trust_rule_is_the_first_admitting_rule_with_a_policy() {
        use imagelib_events::model::{PolicyMode, TrustPolicy};
        let policy = |mode| TrustPolicy {
            mode,
            keys: vec![],
            identities: vec![],
            max_severity: Some(imagelib_events::model::SeverityLimit::High),
            allow_cves: vec![],
            require_sbom: false,
        };
        let index: RuleSetIndex = [
            compiled("a", "nvidia/**", |_| {}),
            compiled("b", "nvidia/**", |r| {
                r.tags.include = vec![TagPattern::Prefix("2".into())];
                r.trust = Some(policy(PolicyMode::Enforce));
            }),
            compiled("c", "nvidia/**", |r| {
                r.enabled = false;
                r.trust = Some(policy(PolicyMode::Audit));
            }),
            compiled("d", "**", |r| r.trust = Some(policy(PolicyMode::Off))),
        ]
        .into_iter()
        .collect();
        let tag = |s: &str| s.parse::<imagelib_events::Tag>().unwrap();
        let id = |r: Option<&CompiledRule>| r.map(|r| r.id().as_str().to_owned());
        assert_eq!(
            id(index.trust_rule(&repo("nvidia/nim"), &tag("2.0"))),
            Some("b".into())
        );
        assert_eq!(
            id(index.trust_rule(&repo("nvidia/nim"), &tag("1.0"))),
            Some("d".into())
        );
        assert_eq!(
            id(index.trust_rule(&repo("postgresql"), &tag("2.0"))),
            Some("d".into())
        );
        let none: RuleSetIndex = [compiled("a", "**", |_| {})].into_iter().collect();
        assert!(none.trust_rule(&repo("x"), &tag("1")).is_none());
        assert_eq!(
            index.get(&"b".parse().unwrap()).unwrap().trust(),
            Some(&policy(PolicyMode::Enforce))
        );
    }

    #[test]
    fn scope_needs_an_enabled_matching_rule() {
        let index: RuleSetIndex = [
            compiled("a", "nvidia/**", |_| {}),
            compiled("b", "postgresql", |r| r.enabled = false),
        ]
        .into_iter()
        .collect();
        assert!(index.in_scope(&repo("nvidia/nim/llm")));
        assert!(!index.in_scope(&repo("postgresql")));
        assert!(!index.in_scope(&repo("other")));
        assert!(index.rules_for(&repo("postgresql")).is_empty());
        assert!(index.has_enabled());
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn rules_come_in_rule_id_order_and_the_first_governs() {
        let mut index = RuleSetIndex::new();
        index.upsert(compiled("z-models", "nvidia/**", |r| {
            r.kind = RuleKind::Model
        }));
        index.upsert(compiled("a-auto", "nvidia/nim/*", |r| {
            r.description = "first".into();
        }));
        index.upsert(compiled("m-off", "nvidia/nim/*", |r| r.enabled = false));
        let ids: Vec<_> = index
            .rules_for(&repo("nvidia/nim/llm"))
            .iter()
            .map(|r| r.id().as_str())
            .collect();
        assert_eq!(ids, vec!["a-auto", "z-models"]);
        assert_eq!(
            index
                .primary_rule(&repo("nvidia/nim/llm"))
                .unwrap()
                .description(),
            "first"
        );
        assert_eq!(
            index.primary_rule(&repo("nvidia/x")).unwrap().kind(),
            RuleKind::Model
        );
        assert!(index.primary_rule(&repo("other")).is_none());
    }

    #[test]
    fn tags_are_the_union_with_the_first_selecting_rule_governing() {
        let index: RuleSetIndex = [
            compiled("a-16", "postgresql", |r| {
                r.tags.include = vec![TagPattern::Prefix("16".into())];
                r.kind = RuleKind::Database;
            }),
            compiled("b-newest", "postgresql", |r| {
                r.tags.newest = Some(1);
                r.kind = RuleKind::Auto;
            }),
            compiled("c-other", "other", |r| {
                r.tags.include = vec![TagPattern::Prefix("15".into())];
            }),
        ]
        .into_iter()
        .collect();
        let all = tags(&["15.1", "16.1", "16.2", "17.0", "latest"]);
        let selected = index.select(&repo("postgresql"), &all);
        let summary: Vec<_> = selected
            .iter()
            .map(|s| (s.tag.as_str(), s.rule.id().as_str(), s.mutable))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("16.1", "a-16", false),
                ("16.2", "a-16", false),
                ("17.0", "b-newest", false),
            ]
        );
        let union: Vec<_> = index
            .select_tags(&repo("postgresql"), &all)
            .iter()
            .map(|t| t.as_str())
            .collect();
        assert_eq!(union, vec!["16.1", "16.2", "17.0"]);
        assert!(index.select(&repo("nothing"), &all).is_empty());
    }

    #[test]
    fn mutable_if_any_selecting_rule_says_so() {
        let index: RuleSetIndex = [
            compiled("a", "r", |r| r.tags.mutable = Some(vec![])),
            compiled("b", "r", |_| {}),
        ]
        .into_iter()
        .collect();
        let all = tags(&["latest", "1.0"]);
        let selected = index.select(&repo("r"), &all);
        assert_eq!(selected[0].rule.id().as_str(), "a");
        assert!(selected[0].mutable, "rule b's default marks latest mutable");
        assert!(!selected[1].mutable);
    }

    #[test]
    fn class_is_the_strongest_claim_of_the_rules_that_take_the_tag() {
        let index: RuleSetIndex = [
            // Floats nothing, calls `sha-` tags immutable.
            compiled("a", "r", |r| {
                r.tags.mutable = Some(vec![]);
                r.tags.immutable = Some(vec![TagPattern::Prefix("sha-".into())]);
            }),
            // The defaults, but only for tags starting with 1 or l.
            compiled("b", "r", |r| {
                r.tags.include = vec![TagPattern::Regex("^[1l]".into())];
            }),
            compiled("c", "other", |r| r.enabled = false),
        ]
        .into_iter()
        .collect();
        let all = tags(&["latest", "1.0", "2.0", "sha-abc1", "x1"]);
        let classes: Vec<_> = index
            .select(&repo("r"), &all)
            .iter()
            .map(|s| (s.tag.as_str(), s.class, s.mutable))
            .collect();
        assert_eq!(
            classes,
            vec![
                ("latest", TagClass::Floating, true),
                ("1.0", TagClass::Immutable, false),
                ("2.0", TagClass::Neither, false),
                ("sha-abc1", TagClass::Immutable, false),
                ("x1", TagClass::Neither, false),
            ]
        );
        let class = |r: &str, t: &str| index.tag_class(&repo(r), &t.parse().unwrap());
        assert_eq!(class("r", "latest"), Some(TagClass::Floating));
        assert_eq!(class("r", "1.0"), Some(TagClass::Immutable));
        assert_eq!(class("r", "2.0"), Some(TagClass::Neither));
        assert_eq!(class("other", "1.0"), None, "disabled rule");
        assert_eq!(class("nothing", "1.0"), None);
    }

    #[test]
    fn upsert_replace_remove_and_apply() {
        let mut index = RuleSetIndex::new();
        assert!(index.is_empty());
        assert!(!index.has_enabled());
        assert!(index.upsert(compiled("a", "x", |_| {})).is_none());
        assert!(index.upsert(compiled("a", "y", |_| {})).is_some());
        assert!(index.in_scope(&repo("y")));
        assert!(!index.in_scope(&repo("x")));

        let mut bad = rule("b", vec![]);
        assert!(index.apply_set(&bad).is_err());
        assert!(index.get(&"b".parse().unwrap()).is_none());
        bad.repositories = vec![RepositoryPattern::Exact("z".parse().unwrap())];
        index.apply_set(&bad).unwrap();
        assert!(index.in_scope(&repo("z")));
        let exact: Vec<_> = index
            .exact_repositories()
            .into_iter()
            .map(|r| r.as_str())
            .collect();
        assert_eq!(exact, vec!["z"]);

        assert!(index.remove(&"a".parse().unwrap()).is_some());
        assert!(!index.in_scope(&repo("y")));
        assert_eq!(index.iter().count(), 1);
    }
}
