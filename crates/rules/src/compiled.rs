//! One rule, validated and compiled for matching.

use imagelib_events::event::RuleSet;
use imagelib_events::model::{HmTag, RuleKind};
use imagelib_events::{RepositoryName, RuleId, Tag};

use imagelib_events::model::TrustPolicy;
use imagelib_trust::cosign::PublicKey;

use crate::error::{RuleError, RuleErrorReason};
use crate::mutability::{TagClass, is_default_immutable};
use crate::pattern::{RepoMatcher, TagMatcher, is_artifact_tag};
use crate::retention::check_retention;
use crate::trust::{CheckedPolicy, check_policy};
use crate::version::{NewestKey, newest_first};

/// The most patterns one list of a rule (repositories, include, exclude, mutable,
/// immutable) holds.
pub const MAX_PATTERNS: usize = 256;

/// Whether a tag moves when no `mutable` patterns are given: `latest` (also as one
/// `-`/`.`/`_`-separated word of the tag, as in `latest-gpu`), and any tag without a digit
/// (`stable`, `edge`, `bookworm`), since it cannot name a fixed version.
pub fn is_default_mutable(tag: &str) -> bool {
    !tag.bytes().any(|b| b.is_ascii_digit())
        || tag
            .split(['-', '.', '_'])
            .any(|word| word.eq_ignore_ascii_case("latest"))
}

/// A [`RuleSet`] whose patterns are compiled. Compiling is also the validation
/// registry-registry runs before it accepts a rule, so a `rule.set` event always compiles
/// (should a limit ever be tightened, a consumer skips and reports the rules that no
/// longer do).
#[derive(Debug, Clone)]
pub struct CompiledRule {
    rule: RuleSet,
    repositories: Vec<RepoMatcher>,
    include: Vec<TagMatcher>,
    exclude: Vec<TagMatcher>,
    mutable: Option<Vec<TagMatcher>>,
    immutable: Option<Vec<TagMatcher>>,
    trust: Option<CheckedPolicy>,
}

impl CompiledRule {
    /// Validates and compiles `rule`; the error names the field as a JSON pointer into the
    /// rule's JSON (`/repositories/0`, `/tags/include/1`, `/tags/newest`).
    pub fn compile(rule: &RuleSet) -> Result<Self, RuleError> {
        if rule.repositories.is_empty() {
            return Err(RuleError::new(
                "/repositories",
                RuleErrorReason::NoRepositories,
            ));
        }
        check_count("/repositories", rule.repositories.len())?;
        let repositories = rule
            .repositories
            .iter()
            .enumerate()
            .map(|(i, p)| RepoMatcher::compile(p, &format!("/repositories/{i}")))
            .collect::<Result<_, _>>()?;
        let tags = &rule.tags;
        let include = compile_tags("/tags/include", &tags.include)?;
        let exclude = compile_tags("/tags/exclude", &tags.exclude)?;
        let mutable = tags
            .mutable
            .as_deref()
            .map(|m| compile_tags("/tags/mutable", m))
            .transpose()?;
        let immutable = tags
            .immutable
            .as_deref()
            .map(|m| compile_tags("/tags/immutable", m))
            .transpose()?;
        if tags.newest == Some(0) {
            return Err(RuleError::new("/tags/newest", RuleErrorReason::NewestZero));
        }
        let trust = rule
            .trust
            .as_ref()
            .map(|t| check_policy(t, "/trust"))
            .transpose()?;
        if let Some(retention) = &rule.retention {
            check_retention(retention, "/retention")?;
        }
        Ok(Self {
            rule: rule.clone(),
            repositories,
            include,
            exclude,
            mutable,
            immutable,
            trust,
        })
    }

    /// The rule as it was set.
    pub fn rule(&self) -> &RuleSet {
        &self.rule
    }

    pub fn id(&self) -> &RuleId {
        &self.rule.rule_id
    }

    pub fn enabled(&self) -> bool {
        self.rule.enabled
    }

    pub fn kind(&self) -> RuleKind {
        self.rule.kind
    }

    pub fn description(&self) -> &str {
        &self.rule.description
    }

    pub fn hm_tags(&self) -> &[HmTag] {
        &self.rule.hm_tags
    }

    /// The rule's trust policy, when it has one (whatever its mode).
    pub fn trust(&self) -> Option<&TrustPolicy> {
        self.rule.trust.as_ref()
    }

    /// The policy's trusted keys, parsed, in list order (empty without a policy).
    pub fn trusted_keys(&self) -> &[PublicKey] {
        self.trust.as_ref().map_or(&[], |t| &t.keys)
    }

    /// The repositories this rule names exactly: what a scanner lists for a registry
    /// without `_catalog`.
    pub fn exact_repositories(&self) -> impl Iterator<Item = &RepositoryName> {
        self.repositories.iter().filter_map(|m| match m {
            RepoMatcher::Exact(name) => Some(name),
            RepoMatcher::Regex(_) => None,
        })
    }

    /// Whether any repository pattern matches `name`. Ignores `enabled`;
    /// [`crate::RuleSetIndex`] applies it.
    pub fn matches_repository(&self, name: &RepositoryName) -> bool {
        self.repositories.iter().any(|m| m.matches(name))
    }

    /// Whether `tag` passes the include, exclude and artifact-tag filters (everything but
    /// `newest`, which depends on the other tags).
    pub fn admits_tag(&self, tag: &Tag) -> bool {
        (self.include.is_empty() || self.include.iter().any(|m| m.matches(tag)))
            && !self.exclude.iter().any(|m| m.matches(tag))
            && !(self.rule.tags.exclude_artifact_tags && is_artifact_tag(tag.as_str()))
    }

    /// The tags of one repository this rule discovers: include (any pattern; every tag when
    /// there is none), then exclude, then the artifact tags when `exclude_artifact_tags`,
    /// then the newest N in the order of [`crate::version`]. The result keeps the order of
    /// `tags`.
    pub fn select_tags<'a>(&self, tags: &'a [Tag]) -> Vec<&'a Tag> {
        self.select_indices(tags)
            .into_iter()
            .map(|i| &tags[i])
            .collect()
    }

    /// [`Self::select_tags`] as ascending indices into `tags`.
    pub(crate) fn select_indices(&self, tags: &[Tag]) -> Vec<usize> {
        let admitted: Vec<usize> = (0..tags.len())
            .filter(|&i| self.admits_tag(&tags[i]))
            .collect();
        match self.rule.tags.newest.map(|n| n as usize) {
            Some(limit) if admitted.len() > limit => {
                let mut keyed: Vec<(usize, NewestKey<'_>)> = admitted
                    .into_iter()
                    .map(|i| (i, NewestKey::new(tags[i].as_str())))
                    .collect();
                keyed.sort_by(|a, b| newest_first(&a.1, &b.1));
                keyed.truncate(limit);
                let mut kept: Vec<usize> = keyed.into_iter().map(|(i, _)| i).collect();
                kept.sort_unstable();
                kept
            }
            _ => admitted,
        }
    }

    /// Whether `tag` can move and must be re-checked on every scan: the `mutable` patterns
    /// when given, else [`is_default_mutable`].
    pub fn is_mutable(&self, tag: &Tag) -> bool {
        match &self.mutable {
            Some(patterns) => patterns.iter().any(|m| m.matches(tag)),
            None => is_default_mutable(tag.as_str()),
        }
    }

    /// The tag's class under this rule ([`crate::mutability`]): floating when
    /// [`Self::is_mutable`], else immutable when the `immutable` patterns match (when
    /// given; else [`is_default_immutable`]), else neither. Filters are not applied: ask
    /// only about tags the rule takes.
    pub fn tag_class(&self, tag: &Tag) -> TagClass {
        if self.is_mutable(tag) {
            return TagClass::Floating;
        }
        let immutable = match &self.immutable {
            Some(patterns) => patterns.iter().any(|m| m.matches(tag)),
            None => is_default_immutable(tag.as_str()),
        };
        if immutable {
            TagClass::Immutable
        } else {
            TagClass::Neither
        }
    }
}

fn check_count(pointer: &str, len: usize) -> Result<(), RuleError> {
    if len > MAX_PATTERNS {
        return Err(RuleError::new(
            pointer,
            RuleErrorReason::TooManyPatterns {
                len,
                max: MAX_PATTERNS,
            },
        ));
    }
    Ok(())
}

fn compile_tags(
    pointer: &str,
    patterns: &[imagelib_events::model::TagPattern],
) -> Result<Vec<TagMatcher>, RuleError> {
    check_count(pointer, patterns.len())?;
    patterns
        .iter()
        .enumerate()
        .map(|(i, p)| TagMatcher::compile(p, &format!("{pointer}/{i}")))
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use imagelib_events::RegistryId;
    use imagelib_events::model::{RepositoryPattern, TagPattern, TagSelector};
    use proptest::prelude::*;

    pub(crate) fn rule(id: &str, repositories: Vec<RepositoryPattern>) -> RuleSet {
        RuleSet {
            registry_id: uuid_nil(),
            rule_id: id.parse().unwrap(),
            repositories,
            tags: TagSelector {
                exclude_artifact_tags: true,
                ..TagSelector::default()
            },
            kind: RuleKind::Auto,
            description: String::new(),
            hm_tags: vec![],
            enabled: true,
            trust: None,
            retention: None,
        }
    }

    fn uuid_nil() -> RegistryId {
        serde_json::from_str("\"00000000-0000-0000-0000-000000000000\"").unwrap()
    }

    pub(crate) fn tags(names: &[&str]) -> Vec<Tag> {
        names.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn names<'a>(selected: &[&'a Tag]) -> Vec<&'a str> {
        selected.iter().map(|t| t.as_str()).collect()
    }

    fn glob(g: &str) -> RepositoryPattern {
        RepositoryPattern::Glob(g.into())
    }

    #[test]
    fn empty_repositories_are_refused() {
        let err = CompiledRule::compile(&rule("r", vec![])).unwrap_err();
        assert_eq!(err.pointer, "/repositories");
        assert_eq!(err.reason, RuleErrorReason::NoRepositories);
    }

    #[test]
    fn errors_point_at_the_field() {
        let r = rule("r", vec![glob("a/*"), RepositoryPattern::Regex("(".into())]);
        assert_eq!(
            CompiledRule::compile(&r).unwrap_err().pointer,
            "/repositories/1"
        );

        let mut r = rule("r", vec![glob("a/*")]);
        r.tags.include = vec![
            TagPattern::Prefix("1".into()),
            TagPattern::Regex("[".into()),
        ];
        assert_eq!(
            CompiledRule::compile(&r).unwrap_err().pointer,
            "/tags/include/1"
        );

        let mut r = rule("r", vec![glob("a/*")]);
        r.tags.exclude = vec![TagPattern::Semver("nope".into())];
        assert_eq!(
            CompiledRule::compile(&r).unwrap_err().pointer,
            "/tags/exclude/0"
        );

        let mut r = rule("r", vec![glob("a/*")]);
        r.tags.mutable = Some(vec![TagPattern::Regex("".into())]);
        assert_eq!(
            CompiledRule::compile(&r).unwrap_err().pointer,
            "/tags/mutable/0"
        );

        let mut r = rule("r", vec![glob("a/*")]);
        r.tags.newest = Some(0);
        let err = CompiledRule::compile(&r).unwrap_err();
        assert_eq!(
            (err.pointer.as_str(), err.reason),
            ("/tags/newest", RuleErrorReason::NewestZero)
        );

        let r = rule("r", vec![glob("a"); MAX_PATTERNS + 1]);
        let err = CompiledRule::compile(&r).unwrap_err();
        assert_eq!(err.pointer, "/repositories");
        assert!(matches!(
            err.reason,
            RuleErrorReason::TooManyPatterns { .. }
        ));
    }

    #[test]
    fn repositories_any_pattern() {
        let r = CompiledRule::compile(&rule(
            "r",
            vec![
                RepositoryPattern::Exact("postgresql".parse().unwrap()),
                glob("nvidia/nim/*"),
                RepositoryPattern::Regex("edb-postgres-(advanced|extended)".into()),
            ],
        ))
        .unwrap();
        for yes in ["postgresql", "nvidia/nim/llm", "edb-postgres-advanced"] {
            assert!(r.matches_repository(&yes.parse().unwrap()), "{yes}");
        }
        for no in [
            "postgresql-torsten",
            "nvidia/other",
            "edb-postgres-advanced2",
        ] {
            assert!(!r.matches_repository(&no.parse().unwrap()), "{no}");
        }
        let exact: Vec<_> = r.exact_repositories().map(|n| n.as_str()).collect();
        assert_eq!(exact, vec!["postgresql"]);
    }

    #[test]
    fn all_tags_when_include_is_empty_but_artifacts_dropped() {
        let r = CompiledRule::compile(&rule("r", vec![glob("a")])).unwrap();
        let digest = format!("sha256-{}", "b".repeat(64));
        let sig = format!("{digest}.sig");
        let all = tags(&["1.0", "latest", &sig, &digest, "x.att", "x.sbom", "2.0"]);
        assert_eq!(names(&r.select_tags(&all)), vec!["1.0", "latest", "2.0"]);
    }

    #[test]
    fn artifact_tags_kept_when_asked() {
        let mut rs = rule("r", vec![glob("a")]);
        rs.tags.exclude_artifact_tags = false;
        let r = CompiledRule::compile(&rs).unwrap();
        let all = tags(&["1.0", "x.sig"]);
        assert_eq!(names(&r.select_tags(&all)), vec!["1.0", "x.sig"]);
    }

    #[test]
    fn include_then_exclude() {
        let mut rs = rule("r", vec![glob("a")]);
        rs.tags.include = vec![
            TagPattern::Regex("^16\\.".into()),
            TagPattern::Exact("latest".parse().unwrap()),
        ];
        rs.tags.exclude = vec![
            TagPattern::Regex("-rc".into()),
            TagPattern::Prefix("16.0".into()),
        ];
        let r = CompiledRule::compile(&rs).unwrap();
        let all = tags(&["16.1", "16.2-rc1", "16.0", "17.0", "latest", "16.3.sig"]);
        assert_eq!(names(&r.select_tags(&all)), vec!["16.1", "latest"]);
        assert!(r.admits_tag(&"16.9".parse().unwrap()));
        assert!(!r.admits_tag(&"17.9".parse().unwrap()));
    }

    #[test]
    fn newest_keeps_the_highest_versions_in_input_order() {
        let mut rs = rule("r", vec![glob("a")]);
        rs.tags.newest = Some(3);
        let r = CompiledRule::compile(&rs).unwrap();
        let all = tags(&[
            "latest",
            "9.6",
            "16.4-bookworm",
            "16.10",
            "16.4",
            "v17",
            "edge",
            "x.sig",
        ]);
        assert_eq!(names(&r.select_tags(&all)), vec!["16.10", "16.4", "v17"]);

        rs.tags.newest = Some(6);
        let r = CompiledRule::compile(&rs).unwrap();
        assert_eq!(
            names(&r.select_tags(&all)),
            vec!["latest", "9.6", "16.4-bookworm", "16.10", "16.4", "v17"],
            "after the versions, non-version tags by name descending: latest before edge"
        );

        rs.tags.newest = Some(100);
        let r = CompiledRule::compile(&rs).unwrap();
        assert_eq!(r.select_tags(&all).len(), 7);
    }

    #[test]
    fn newest_applies_after_the_filters() {
        let mut rs = rule("r", vec![glob("a")]);
        rs.tags.newest = Some(1);
        rs.tags.exclude = vec![TagPattern::Exact("3.0".parse().unwrap())];
        let r = CompiledRule::compile(&rs).unwrap();
        let all = tags(&["1.0", "3.0", "2.0", "3.0.sig"]);
        assert_eq!(names(&r.select_tags(&all)), vec!["2.0"]);
    }

    #[test]
    fn semver_include() {
        let mut rs = rule("r", vec![glob("a")]);
        rs.tags.include = vec![TagPattern::Semver(">=16, <18".into())];
        let r = CompiledRule::compile(&rs).unwrap();
        let all = tags(&["15.8", "16.4-bookworm", "17", "18.0", "latest"]);
        assert_eq!(names(&r.select_tags(&all)), vec!["16.4-bookworm", "17"]);
    }

    #[test]
    fn mutable_defaults() {
        let r = CompiledRule::compile(&rule("r", vec![glob("a")])).unwrap();
        for m in [
            "latest",
            "stable",
            "edge",
            "bookworm",
            "latest-gpu",
            "16-latest",
        ] {
            assert!(r.is_mutable(&m.parse().unwrap()), "{m}");
        }
        for i in ["16.4", "1", "v1.2.3", "16.4-bookworm", "sha-abc123"] {
            assert!(!r.is_mutable(&i.parse().unwrap()), "{i}");
        }
    }

    #[test]
    fn mutable_patterns_replace_the_default() {
        let mut rs = rule("r", vec![glob("a")]);
        rs.tags.mutable = Some(vec![TagPattern::Regex("^\\d+$".into())]);
        let r = CompiledRule::compile(&rs).unwrap();
        assert!(r.is_mutable(&"16".parse().unwrap()));
        assert!(!r.is_mutable(&"16.4".parse().unwrap()));
        assert!(!r.is_mutable(&"latest".parse().unwrap()));
        rs.tags.mutable = Some(vec![]);
        let none = CompiledRule::compile(&rs).unwrap();
        assert!(!none.is_mutable(&"latest".parse().unwrap()));
    }

    #[test]
    fn tag_classes_by_default() {
        let r = CompiledRule::compile(&rule("r", vec![glob("a")])).unwrap();
        let class = |t: &str| r.tag_class(&t.parse().unwrap());
        for t in [
            "latest",
            "stable",
            "main",
            "edge",
            "latest-gpu",
            "16-latest",
        ] {
            assert_eq!(class(t), TagClass::Floating, "{t}");
        }
        for t in [
            "1",
            "1.2",
            "1.2.3",
            "v1.2.3",
            "16.4-bookworm",
            "1.2.3-rc1",
            "17.4-2503310734",
        ] {
            assert_eq!(class(t), TagClass::Immutable, "{t}");
        }
        for t in ["sha-abc123", "17rc1", "1a"] {
            assert_eq!(class(t), TagClass::Neither, "{t}");
        }
    }

    #[test]
    fn immutable_patterns_replace_the_default_but_never_win_over_floating() {
        let mut rs = rule("r", vec![glob("a")]);
        rs.tags.immutable = Some(vec![
            TagPattern::Prefix("sha-".into()),
            TagPattern::Regex("latest".into()),
        ]);
        let r = CompiledRule::compile(&rs).unwrap();
        let class = |t: &str| r.tag_class(&t.parse().unwrap());
        assert_eq!(class("sha-abc123"), TagClass::Immutable);
        assert_eq!(class("1.2.3"), TagClass::Neither, "the default is replaced");
        assert_eq!(class("latest"), TagClass::Floating, "floating wins");

        rs.tags.mutable = Some(vec![TagPattern::Regex("^\\d+$".into())]);
        rs.tags.immutable = None;
        let r = CompiledRule::compile(&rs).unwrap();
        assert_eq!(r.tag_class(&"16".parse().unwrap()), TagClass::Floating);
        assert_eq!(r.tag_class(&"16.4".parse().unwrap()), TagClass::Immutable);
        assert_eq!(
            r.tag_class(&"latest".parse().unwrap()),
            TagClass::Neither,
            "mutable patterns replaced the default; latest is no version"
        );

        rs.tags.immutable = Some(vec![TagPattern::Regex("(".into())]);
        assert_eq!(
            CompiledRule::compile(&rs).unwrap_err().pointer,
            "/tags/immutable/0"
        );
    }

    #[test]
    fn accessors_reflect_the_rule() {
        let mut rs = rule("nim", vec![glob("a")]);
        rs.kind = RuleKind::Model;
        rs.description = "NIM".into();
        rs.hm_tags = vec!["gpu".parse().unwrap()];
        rs.enabled = false;
        let r = CompiledRule::compile(&rs).unwrap();
        assert_eq!(r.id().as_str(), "nim");
        assert_eq!(r.kind(), RuleKind::Model);
        assert_eq!(r.description(), "NIM");
        assert_eq!(r.hm_tags()[0].as_str(), "gpu");
        assert!(!r.enabled());
        assert_eq!(r.rule(), &rs);
    }

    proptest! {
        #[test]
        fn a_floating_tag_is_never_immutable(
            tag in "[a-z0-9][a-z0-9._-]{0,12}",
            mutable in proptest::option::of(proptest::collection::vec("[a-z0-9]{1,3}", 0..4)),
            immutable in proptest::option::of(proptest::collection::vec("[a-z0-9]{1,3}", 0..4)),
        ) {
            let prefixes = |v: Vec<String>| v.into_iter().map(TagPattern::Prefix).collect::<Vec<_>>();
            let mut rs = rule("r", vec![glob("a")]);
            rs.tags.mutable = mutable.map(prefixes);
            rs.tags.immutable = immutable.clone().map(prefixes);
            let r = CompiledRule::compile(&rs).unwrap();
            let t: Tag = tag.parse().unwrap();
            let class = r.tag_class(&t);
            prop_assert_eq!(class == TagClass::Floating, r.is_mutable(&t));
            if class == TagClass::Immutable {
                let claimed = match &immutable {
                    Some(p) => p.iter().any(|p| tag.starts_with(p.as_str())),
                    None => is_default_immutable(&tag),
                };
                prop_assert!(claimed);
            }
        }

        #[test]
        fn selection_is_an_ordered_subset_of_bounded_size(
            raw in proptest::collection::vec("[a-z0-9][a-z0-9._-]{0,10}", 0..30),
            newest in proptest::option::of(1u32..10),
        ) {
            let mut rs = rule("r", vec![glob("a")]);
            rs.tags.newest = newest;
            let r = CompiledRule::compile(&rs).unwrap();
            let all: Vec<Tag> = raw.iter().map(|s| s.parse().unwrap()).collect();
            let selected = r.select_tags(&all);
            let admitted = all.iter().filter(|t| r.admits_tag(t)).count();
            let expected = newest.map_or(admitted, |n| admitted.min(n as usize));
            prop_assert_eq!(selected.len(), expected);
            let mut last = None;
            for s in &selected {
                let pos = all.iter().position(|t| std::ptr::eq(t, *s)).unwrap();
                prop_assert!(last.is_none_or(|l| pos > l));
                last = Some(pos);
            }
        }
    }
}
