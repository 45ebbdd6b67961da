//! A rule's retention policy (issue 14) as people write it, and its validation.
//!
//! The policy only ever feeds a dry run (`GET /v1/lifecycle/preview`, [`crate::lifecycle`]):
//! imagelib deletes nothing. A mistake in it still misleads whoever runs the deletion script
//! the preview prints, so it is checked as strictly as a trust policy, when the rule is
//! written, with the JSON pointer of the field:
//! - at most [`MAX_RETENTION_RULES`] rules (as Harbor), and at least one: a policy without
//!   rules would keep nothing, which is never what was meant (leave `retention` out instead);
//! - each template takes exactly its parameter: `count` (1 to [`MAX_RETAIN_COUNT`]) for
//!   `latest_pushed` / `latest_pulled`, `days` (1 to [`MAX_RETAIN_DAYS`]) for
//!   `pushed_within_days` / `pulled_within_days`, nothing for `always`; the other one is
//!   refused rather than ignored, and so is `per: major` where nothing is counted;
//! - tag patterns (`tags.include`, `tags.exclude`) are written and compiled like a rule's
//!   (a plain string is a regex, or `{"exact"|"prefix"|"regex"|"semver": …}`);
//! - `protect_hm_tags` are valid HM tags (default `["approved-production"]`; `[]` protects
//!   by HM tag nothing).
//!
//! [`RetentionInput`] also accepts the event's [`RetentionPolicy`] JSON, which is what `GET`
//! shows, so `GET` then `PUT` round-trips. [`check_retention`] is the part that applies to a
//! `rule.set` event's policy as well, and compiles it for [`crate::lifecycle::preview`].

use imagelib_events::Tag;
use imagelib_events::model::{
    HmTag, RetentionPolicy, RetentionRule, RetentionScope, RetentionTemplate, TagFilter, TagPattern,
};
use serde::{Deserialize, Serialize};

use crate::compiled::MAX_PATTERNS;
use crate::error::{RuleError, RuleErrorReason};
use crate::input::PatternInput;
use crate::pattern::TagMatcher;

/// The most rules one policy holds (Harbor's limit per project).
pub const MAX_RETENTION_RULES: usize = 15;
/// The largest `count` of `latest_pushed` / `latest_pulled`.
pub const MAX_RETAIN_COUNT: u32 = 10_000;
/// The largest `days` of `pushed_within_days` / `pulled_within_days` (a hundred years).
pub const MAX_RETAIN_DAYS: u32 = 36_500;
/// The most protected HM tags one policy lists.
pub const MAX_PROTECTED_HM_TAGS: usize = 64;

/// The `retention` object of a rule, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionInput {
    pub rules: Vec<RetentionRuleInput>,
    /// Absent: `["approved-production"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protect_hm_tags: Option<Vec<String>>,
}

/// One retention rule, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionRuleInput {
    pub template: RetentionTemplate,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<u32>,
    /// Absent: `repository`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per: Option<RetentionScope>,
    #[serde(default, skip_serializing_if = "RetentionTagsInput::is_empty")]
    pub tags: RetentionTagsInput,
}

/// The tags one retention rule considers: included (all when empty), then excluded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionTagsInput {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<PatternInput>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<PatternInput>,
}

impl RetentionTagsInput {
    fn is_empty(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }
}

impl From<&TagPattern> for PatternInput {
    /// The tagged form (`{"regex": …}`), which reads back as the same pattern.
    fn from(p: &TagPattern) -> Self {
        let (kind, value) = match p {
            TagPattern::Exact(t) => ("exact", t.to_string()),
            TagPattern::Prefix(s) => ("prefix", s.clone()),
            TagPattern::Regex(s) => ("regex", s.clone()),
            TagPattern::Semver(s) => ("semver", s.clone()),
        };
        PatternInput::Tagged {
            kind: kind.into(),
            value,
        }
    }
}

/// The snake_case name of a template, as written in a rule.
pub fn template_name(t: RetentionTemplate) -> &'static str {
    match t {
        RetentionTemplate::LatestPushed => "latest_pushed",
        RetentionTemplate::LatestPulled => "latest_pulled",
        RetentionTemplate::PushedWithinDays => "pushed_within_days",
        RetentionTemplate::PulledWithinDays => "pulled_within_days",
        RetentionTemplate::Always => "always",
    }
}

impl RetentionInput {
    /// Converts to the event's policy and validates it; `base` is this object's pointer.
    pub fn to_policy(&self, base: &str) -> Result<RetentionPolicy, RuleError> {
        check_rule_count(base, self.rules.len())?;
        let mut rules = Vec::with_capacity(self.rules.len());
        for (i, r) in self.rules.iter().enumerate() {
            let pointer = format!("{base}/rules/{i}");
            let patterns = |list: &[PatternInput], field: &str| {
                let list_pointer = format!("{pointer}/tags/{field}");
                check_pattern_count(&list_pointer, list.len())?;
                list.iter()
                    .enumerate()
                    .map(|(j, p)| {
                        let (pattern, value_pointer) =
                            p.to_tag_pattern(&format!("{list_pointer}/{j}"))?;
                        TagMatcher::compile(&pattern, &value_pointer)?;
                        Ok(pattern)
                    })
                    .collect::<Result<Vec<TagPattern>, RuleError>>()
            };
            rules.push(RetentionRule {
                template: r.template,
                count: r.count,
                days: r.days,
                per: r.per.unwrap_or_default(),
                tags: TagFilter {
                    include: patterns(&r.tags.include, "include")?,
                    exclude: patterns(&r.tags.exclude, "exclude")?,
                },
            });
        }
        let protect_hm_tags = match &self.protect_hm_tags {
            None => vec![HmTag::approved_production()],
            Some(list) => {
                check_hm_tag_count(base, list.len())?;
                let mut out: Vec<HmTag> = Vec::with_capacity(list.len());
                for (i, raw) in list.iter().enumerate() {
                    let tag: HmTag =
                        raw.trim()
                            .parse()
                            .map_err(|e: imagelib_events::model::HmTagError| {
                                RuleError::new(
                                    format!("{base}/protect_hm_tags/{i}"),
                                    RuleErrorReason::HmTag(e.to_string()),
                                )
                            })?;
                    if !out.contains(&tag) {
                        out.push(tag);
                    }
                }
                out
            }
        };
        let policy = RetentionPolicy {
            rules,
            protect_hm_tags,
        };
        check_retention(&policy, base)?;
        Ok(policy)
    }
}

impl From<&RetentionPolicy> for RetentionInput {
    /// The input that sets `policy` again (what `GET` can return, as a `PUT` body).
    fn from(policy: &RetentionPolicy) -> Self {
        let patterns = |list: &[TagPattern]| list.iter().map(PatternInput::from).collect();
        RetentionInput {
            rules: policy
                .rules
                .iter()
                .map(|r| RetentionRuleInput {
                    template: r.template,
                    count: r.count,
                    days: r.days,
                    per: Some(r.per),
                    tags: RetentionTagsInput {
                        include: patterns(&r.tags.include),
                        exclude: patterns(&r.tags.exclude),
                    },
                })
                .collect(),
            protect_hm_tags: Some(
                policy
                    .protect_hm_tags
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            ),
        }
    }
}

/// A validated policy with its tag patterns compiled.
#[derive(Debug, Clone)]
pub struct CompiledRetention {
    policy: RetentionPolicy,
    filters: Vec<(Vec<TagMatcher>, Vec<TagMatcher>)>,
}

impl CompiledRetention {
    /// Validates and compiles an event-shaped policy; `base` is its pointer (`/retention`).
    pub fn compile(policy: &RetentionPolicy, base: &str) -> Result<Self, RuleError> {
        check_retention(policy, base)
    }

    pub fn policy(&self) -> &RetentionPolicy {
        &self.policy
    }

    /// Whether retention rule `rule` considers `tag` (its include, then its exclude).
    pub fn selects(&self, rule: usize, tag: &Tag) -> bool {
        self.filters.get(rule).is_some_and(|(include, exclude)| {
            (include.is_empty() || include.iter().any(|m| m.matches(tag)))
                && !exclude.iter().any(|m| m.matches(tag))
        })
    }

    /// Whether `hm_tag` protects an image under this policy.
    pub fn protects(&self, hm_tag: &str) -> bool {
        self.policy
            .protect_hm_tags
            .iter()
            .any(|p| p.as_str() == hm_tag)
    }
}

/// Validates an event-shaped policy (see the module docs) and compiles it; `base` is its
/// pointer (`/retention`).
pub fn check_retention(
    policy: &RetentionPolicy,
    base: &str,
) -> Result<CompiledRetention, RuleError> {
    if policy.rules.is_empty() {
        return Err(invalid(
            format!("{base}/rules"),
            "a retention policy needs at least one rule (without one, every tag would go); \
             leave `retention` out to have no policy",
        ));
    }
    check_rule_count(base, policy.rules.len())?;
    check_hm_tag_count(base, policy.protect_hm_tags.len())?;
    let mut filters = Vec::with_capacity(policy.rules.len());
    for (i, rule) in policy.rules.iter().enumerate() {
        let pointer = format!("{base}/rules/{i}");
        check_parameters(rule, &pointer)?;
        let compile = |list: &[TagPattern], field: &str| {
            let list_pointer = format!("{pointer}/tags/{field}");
            check_pattern_count(&list_pointer, list.len())?;
            list.iter()
                .enumerate()
                .map(|(j, p)| TagMatcher::compile(p, &format!("{list_pointer}/{j}")))
                .collect::<Result<Vec<_>, _>>()
        };
        filters.push((
            compile(&rule.tags.include, "include")?,
            compile(&rule.tags.exclude, "exclude")?,
        ));
    }
    Ok(CompiledRetention {
        policy: policy.clone(),
        filters,
    })
}

fn check_parameters(rule: &RetentionRule, pointer: &str) -> Result<(), RuleError> {
    let name = template_name(rule.template);
    let (wants_count, wants_days) = match rule.template {
        RetentionTemplate::LatestPushed | RetentionTemplate::LatestPulled => (true, false),
        RetentionTemplate::PushedWithinDays | RetentionTemplate::PulledWithinDays => (false, true),
        RetentionTemplate::Always => (false, false),
    };
    let takes = match (wants_count, wants_days) {
        (true, _) => "`count`",
        (_, true) => "`days`",
        _ => "no parameter",
    };
    check_param(
        pointer,
        "count",
        wants_count,
        rule.count,
        MAX_RETAIN_COUNT,
        || format!("`{name}` keeps the N most recent tags: set `count` (1 to {MAX_RETAIN_COUNT})"),
        || format!("`{name}` takes {takes}, not `count`; drop it"),
    )?;
    check_param(
        pointer,
        "days",
        wants_days,
        rule.days,
        MAX_RETAIN_DAYS,
        || format!("`{name}` keeps tags of the last D days: set `days` (1 to {MAX_RETAIN_DAYS})"),
        || format!("`{name}` takes {takes}, not `days`; drop it"),
    )?;
    if !wants_count && rule.per == RetentionScope::Major {
        return Err(invalid(
            format!("{pointer}/per"),
            format!(
                "`per: major` groups what `latest_pushed` and `latest_pulled` count; `{name}` \
                 counts nothing, so drop it"
            ),
        ));
    }
    Ok(())
}

/// One template parameter: required (1 to `max`) when the template takes it, absent otherwise.
fn check_param(
    pointer: &str,
    field: &str,
    wanted: bool,
    value: Option<u32>,
    max: u32,
    missing: impl FnOnce() -> String,
    unexpected: impl FnOnce() -> String,
) -> Result<(), RuleError> {
    let at = || format!("{pointer}/{field}");
    match (wanted, value) {
        (true, None) => Err(invalid(at(), missing())),
        (true, Some(n)) if !(1..=max).contains(&n) => Err(invalid(
            at(),
            format!("{n} is out of range: `{field}` is 1 to {max}"),
        )),
        (false, Some(_)) => Err(invalid(at(), unexpected())),
        _ => Ok(()),
    }
}

fn invalid(pointer: impl Into<String>, message: impl Into<String>) -> RuleError {
    RuleError::new(pointer, RuleErrorReason::Invalid(message.into()))
}

fn check_rule_count(base: &str, len: usize) -> Result<(), RuleError> {
    if len > MAX_RETENTION_RULES {
        return Err(RuleError::new(
            format!("{base}/rules"),
            RuleErrorReason::TooManyPatterns {
                len,
                max: MAX_RETENTION_RULES,
            },
        ));
    }
    Ok(())
}

fn check_hm_tag_count(base: &str, len: usize) -> Result<(), RuleError> {
    if len > MAX_PROTECTED_HM_TAGS {
        return Err(RuleError::new(
            format!("{base}/protect_hm_tags"),
            RuleErrorReason::TooManyPatterns {
                len,
                max: MAX_PROTECTED_HM_TAGS,
            },
        ));
    }
    Ok(())
}

fn check_pattern_count(pointer: &str, len: usize) -> Result<(), RuleError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::RuleInput;
    use crate::trust::RuleView;
    use imagelib_events::event::RuleSet;
    use imagelib_events::{RegistryId, RuleId};
    use serde_json::{Value, json};

    fn registry() -> RegistryId {
        "0190f1d2-3c4b-7a5e-8f90-123456789abc".parse().unwrap()
    }

    fn rule_id() -> RuleId {
        "apps".parse().unwrap()
    }

    fn rule(retention: Value) -> Result<RuleSet, RuleError> {
        RuleInput::from_json_value(json!({"repositories": "apps/*", "retention": retention}))?
            .into_rule_set(registry(), rule_id())
    }

    fn policy(retention: Value) -> RetentionPolicy {
        rule(retention)
            .expect("accepted")
            .retention
            .expect("a policy")
    }

    fn refused(retention: Value, pointer: &str, needle: &str) {
        let e = rule(retention.clone()).expect_err("refused");
        assert_eq!(e.pointer, pointer, "{retention}: {e}");
        assert!(e.to_string().contains(needle), "{retention}: {e}");
    }

    #[test]
    fn a_full_policy_converts_to_the_event() {
        let p = policy(json!({
            "rules": [
                {"template": "latest_pushed", "count": 3, "per": "major",
                 "tags": {"include": ["^[0-9]"], "exclude": [{"exact": "1.0-rc1"}]}},
                {"template": "latest_pulled", "count": 10},
                {"template": "pushed_within_days", "days": 30,
                 "tags": {"include": [{"semver": ">=2"}]}},
                {"template": "pulled_within_days", "days": 90},
                {"template": "always", "tags": {"include": [{"prefix": "release-"}]}},
            ],
            "protect_hm_tags": ["approved-production", " gold ", "gold"],
        }));
        assert_eq!(p.rules.len(), 5);
        assert_eq!(
            p.rules[0],
            RetentionRule {
                template: RetentionTemplate::LatestPushed,
                count: Some(3),
                days: None,
                per: RetentionScope::Major,
                tags: TagFilter {
                    include: vec![TagPattern::Regex("^[0-9]".into())],
                    exclude: vec![TagPattern::Exact("1.0-rc1".parse().unwrap())],
                },
            }
        );
        assert_eq!(p.rules[1].per, RetentionScope::Repository);
        assert_eq!(p.rules[1].tags, TagFilter::default());
        assert_eq!(p.rules[2].days, Some(30));
        assert_eq!(
            p.rules[2].tags.include,
            vec![TagPattern::Semver(">=2".into())]
        );
        assert_eq!(p.rules[4].template, RetentionTemplate::Always);
        assert_eq!(
            p.protect_hm_tags,
            vec![
                HmTag::approved_production(),
                "gold".parse::<HmTag>().unwrap()
            ]
        );
    }

    #[test]
    fn protected_hm_tags_default_to_approved_production() {
        let p = policy(json!({"rules": [{"template": "always"}]}));
        assert_eq!(p.protect_hm_tags, vec![HmTag::approved_production()]);
        let p = policy(json!({"rules": [{"template": "always"}], "protect_hm_tags": []}));
        assert!(p.protect_hm_tags.is_empty());
        // The event's default is the same.
        let event: RetentionPolicy =
            serde_json::from_value(json!({"rules": [{"template": "always"}]})).unwrap();
        assert_eq!(event.protect_hm_tags, vec![HmTag::approved_production()]);
        assert_eq!(rule(Value::Null).unwrap().retention, None);
    }

    #[test]
    fn template_parameters_are_required_and_exclusive() {
        refused(
            json!({"rules": [{"template": "latest_pushed"}]}),
            "/retention/rules/0/count",
            "set `count` (1 to 10000)",
        );
        refused(
            json!({"rules": [{"template": "always"}, {"template": "latest_pulled", "days": 3}]}),
            "/retention/rules/1/count",
            "set `count`",
        );
        refused(
            json!({"rules": [{"template": "latest_pushed", "count": 3, "days": 3}]}),
            "/retention/rules/0/days",
            "takes `count`, not `days`",
        );
        refused(
            json!({"rules": [{"template": "pushed_within_days"}]}),
            "/retention/rules/0/days",
            "set `days` (1 to 36500)",
        );
        refused(
            json!({"rules": [{"template": "pulled_within_days", "days": 7, "count": 1}]}),
            "/retention/rules/0/count",
            "takes `days`, not `count`",
        );
        refused(
            json!({"rules": [{"template": "always", "count": 1}]}),
            "/retention/rules/0/count",
            "takes no parameter",
        );
        refused(
            json!({"rules": [{"template": "always", "days": 1}]}),
            "/retention/rules/0/days",
            "takes no parameter",
        );
        refused(
            json!({"rules": [{"template": "pushed_within_days", "days": 7, "per": "major"}]}),
            "/retention/rules/0/per",
            "counts nothing",
        );
        // `per: repository` is the default and shown by GET on every rule: accepted.
        policy(json!({"rules": [{"template": "always", "per": "repository"}]}));
    }

    #[test]
    fn bounds() {
        refused(
            json!({"rules": [{"template": "latest_pushed", "count": 0}]}),
            "/retention/rules/0/count",
            "0 is out of range: `count` is 1 to 10000",
        );
        refused(
            json!({"rules": [{"template": "latest_pushed", "count": 10001}]}),
            "/retention/rules/0/count",
            "out of range",
        );
        policy(json!({"rules": [{"template": "latest_pushed", "count": 10000}]}));
        refused(
            json!({"rules": [{"template": "pushed_within_days", "days": 0}]}),
            "/retention/rules/0/days",
            "0 is out of range: `days` is 1 to 36500",
        );
        refused(
            json!({"rules": [{"template": "pulled_within_days", "days": 36501}]}),
            "/retention/rules/0/days",
            "out of range",
        );
        policy(json!({"rules": [{"template": "pulled_within_days", "days": 36500}]}));
        refused(
            json!({"rules": [{"template": "latest_pushed", "count": -1}]}),
            "/retention/rules/0/count",
            "invalid value",
        );
        refused(
            json!({"rules": [{"template": "latest_pushed", "count": 5_000_000_000u64}]}),
            "/retention/rules/0/count",
            "invalid value",
        );
        let many: Vec<Value> = (0..=MAX_RETENTION_RULES)
            .map(|_| json!({"template": "always"}))
            .collect();
        refused(
            json!({"rules": many}),
            "/retention/rules",
            "16 entries; at most 15",
        );
        let fifteen: Vec<Value> = many.into_iter().take(MAX_RETENTION_RULES).collect();
        assert_eq!(policy(json!({"rules": fifteen})).rules.len(), 15);
        refused(
            json!({"rules": []}),
            "/retention/rules",
            "at least one rule",
        );
        let hm: Vec<String> = (0..=MAX_PROTECTED_HM_TAGS)
            .map(|i| format!("h{i}"))
            .collect();
        refused(
            json!({"rules": [{"template": "always"}], "protect_hm_tags": hm}),
            "/retention/protect_hm_tags",
            "65 entries; at most 64",
        );
    }

    #[test]
    fn shape_errors_point_at_the_field() {
        refused(
            json!({"rules": [{"template": "keep_most"}]}),
            "/retention/rules/0/template",
            "unknown variant `keep_most`",
        );
        refused(
            json!({"rules": [{"count": 3}]}),
            "/retention/rules/0/template",
            "missing field `template`",
        );
        refused(
            json!({"rules": [{"template": "always", "scope": "major"}]}),
            "/retention/rules/0/scope",
            "unknown field `scope`",
        );
        refused(
            json!({"rules": [{"template": "latest_pushed", "count": 2, "per": "minor"}]}),
            "/retention/rules/0/per",
            "unknown variant `minor`",
        );
        refused(
            json!({"rules": [{"template": "always", "tags": {"only": ["x"]}}]}),
            "/retention/rules/0/tags/only",
            "unknown field `only`",
        );
        refused(
            json!({"rule": []}),
            "/retention/rule",
            "unknown field `rule`",
        );
        refused(json!({}), "/retention/rules", "missing field `rules`");
        refused(
            json!({"rules": [{"template": "always"}], "protect_hm_tags": ["Not Valid"]}),
            "/retention/protect_hm_tags/0",
            "is not valid",
        );
    }

    #[test]
    fn tag_patterns_are_compiled_with_pointers() {
        refused(
            json!({"rules": [{"template": "always", "tags": {"include": ["("]}}]}),
            "/retention/rules/0/tags/include/0",
            "invalid regular expression",
        );
        refused(
            json!({"rules": [{"template": "always"},
                             {"template": "always", "tags": {"exclude": ["x", {"semver": "not a range"}]}}]}),
            "/retention/rules/1/tags/exclude/1/semver",
            "invalid semver requirement",
        );
        refused(
            json!({"rules": [{"template": "always", "tags": {"include": [{"glob": "1.*"}]}}]}),
            "/retention/rules/0/tags/include/0",
            "unknown pattern kind `glob`",
        );
        refused(
            json!({"rules": [{"template": "always", "tags": {"include": [""]}}]}),
            "/retention/rules/0/tags/include/0",
            "empty pattern",
        );
        let many: Vec<String> = (0..=MAX_PATTERNS).map(|i| format!("^{i}$")).collect();
        refused(
            json!({"rules": [{"template": "always", "tags": {"include": many}}]}),
            "/retention/rules/0/tags/include",
            "257 entries; at most 256",
        );
    }

    #[test]
    fn get_shows_the_policy_and_put_takes_it_back() {
        let set = rule(json!({
            "rules": [
                {"template": "latest_pushed", "count": 3, "per": "major",
                 "tags": {"include": ["^v?[0-9]"], "exclude": [{"semver": "<1"}]}},
                {"template": "pulled_within_days", "days": 30},
                {"template": "always", "tags": {"include": [{"exact": "stable"}]}},
            ],
            "protect_hm_tags": ["approved-production", "keep"],
        }))
        .unwrap();
        let view = serde_json::to_value(RuleView::from(&set)).unwrap();
        assert_eq!(
            view["retention"],
            json!({
                "rules": [
                    {"template": "latest_pushed", "count": 3, "per": "major",
                     "tags": {"include": [{"regex": "^v?[0-9]"}], "exclude": [{"semver": "<1"}]}},
                    {"template": "pulled_within_days", "days": 30, "per": "repository",
                     "tags": {"include": [], "exclude": []}},
                    {"template": "always", "per": "repository",
                     "tags": {"include": [{"exact": "stable"}], "exclude": []}},
                ],
                "protect_hm_tags": ["approved-production", "keep"],
            })
        );
        // The view, as GET returns it, is a valid PUT body for the same rule.
        let mut body = view;
        let fields = body.as_object_mut().unwrap();
        fields.remove("registry_id");
        fields.remove("rule_id");
        let again = RuleInput::from_json_value(body)
            .unwrap()
            .into_rule_set(registry(), rule_id())
            .unwrap();
        assert_eq!(again, set);
        // And so is the input `From<&RuleSet>` rebuilds.
        let input = RuleInput::from(&set);
        let again = RuleInput::from_json_slice(&serde_json::to_vec(&input).unwrap())
            .unwrap()
            .into_rule_set(registry(), rule_id())
            .unwrap();
        assert_eq!(again, set);
    }

    #[test]
    fn event_policies_are_checked_too() {
        let mut set = rule(json!({"rules": [{"template": "latest_pushed", "count": 2}]})).unwrap();
        crate::CompiledRule::compile(&set).unwrap();
        if let Some(p) = set.retention.as_mut() {
            p.rules[0].count = None;
        }
        let e = crate::CompiledRule::compile(&set).unwrap_err();
        assert_eq!(e.pointer, "/retention/rules/0/count");
        if let Some(p) = set.retention.as_mut() {
            p.rules.clear();
        }
        let e = crate::CompiledRule::compile(&set).unwrap_err();
        assert_eq!(e.pointer, "/retention/rules");
        if let Some(p) = set.retention.as_mut() {
            p.rules.push(RetentionRule {
                template: RetentionTemplate::Always,
                count: None,
                days: None,
                per: RetentionScope::Repository,
                tags: TagFilter {
                    include: vec![TagPattern::Regex("[".into())],
                    exclude: vec![],
                },
            });
        }
        let e = crate::CompiledRule::compile(&set).unwrap_err();
        assert_eq!(e.pointer, "/retention/rules/0/tags/include/0");
    }

    #[test]
    fn agent_entries_carry_retention_policies() {
        let yaml = "dispatcher:
  capabilities:
    provisioning:
      images:
        discovery:
          registry:
            postgres_repositories:
              - name: postgresql
                retention:
                  rules:
                    - {template: latest_pushed, count: 3, per: major}
                    - template: always
                      tags: {include: [{exact: stable}]}
                  protect_hm_tags: [gold]
              - name: timescale
                retention:
                  rules:
                    - {template: pushed_within_days}
";
        let e = crate::parse_agent_yaml(yaml).unwrap_err();
        assert_eq!(
            e.pointer,
            "/dispatcher/capabilities/provisioning/images/discovery/registry/postgres_repositories/1/retention/rules/0/days"
        );
        let fixed = yaml.replace(
            "{template: pushed_within_days}",
            "{template: pushed_within_days, days: 7}",
        );
        let rules = crate::parse_agent_yaml(&fixed).unwrap();
        let p = rules[0]
            .to_rule_set(registry())
            .unwrap()
            .retention
            .expect("a policy");
        assert_eq!(p.rules[0].per, RetentionScope::Major);
        assert_eq!(
            p.rules[1].tags.include,
            vec![TagPattern::Exact("stable".parse().unwrap())]
        );
        assert_eq!(p.protect_hm_tags, vec!["gold".parse::<HmTag>().unwrap()]);
    }

    #[test]
    fn compiled_filters_select_tags() {
        let p = policy(json!({"rules": [
            {"template": "always", "tags": {"include": ["^1\\."], "exclude": ["-rc"]}},
            {"template": "latest_pushed", "count": 1},
        ]}));
        let c = CompiledRetention::compile(&p, "/retention").unwrap();
        let tag = |t: &str| t.parse::<Tag>().unwrap();
        assert!(c.selects(0, &tag("1.2")));
        assert!(!c.selects(0, &tag("1.3-rc1")));
        assert!(!c.selects(0, &tag("2.0")));
        assert!(c.selects(1, &tag("anything")));
        assert!(!c.selects(2, &tag("1.2")), "no such rule");
        assert!(c.protects("approved-production"));
        assert!(!c.protects("gpu"));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn any_rule() -> impl Strategy<Value = Value> {
            (
                prop::sample::select(vec![
                    "latest_pushed",
                    "latest_pulled",
                    "pushed_within_days",
                    "pulled_within_days",
                    "always",
                    "never",
                ]),
                prop::option::of(0u64..12_000),
                prop::option::of(0u64..40_000),
                prop::option::of(prop::sample::select(vec!["repository", "major", "tag"])),
                prop::collection::vec(
                    prop::sample::select(vec!["^1\\.", "(", "latest", "", "x{2,1}"]),
                    0..3,
                ),
            )
                .prop_map(|(template, count, days, per, include)| {
                    let mut r = json!({"template": template});
                    if let Some(c) = count {
                        r["count"] = json!(c);
                    }
                    if let Some(d) = days {
                        r["days"] = json!(d);
                    }
                    if let Some(p) = per {
                        r["per"] = json!(p);
                    }
                    if !include.is_empty() {
                        r["tags"] = json!({"include": include});
                    }
                    r
                })
        }

        proptest! {
            /// Any policy is accepted or refused with a pointer into it, never a panic; an
            /// accepted one shows and reads back as itself, and compiles as an event.
            #[test]
            fn policies_are_refused_or_round_trip(
                rules in prop::collection::vec(any_rule(), 0..17),
                hm in prop::option::of(prop::collection::vec(
                    prop::sample::select(vec!["approved-production", "gold", "Bad Tag"]), 0..3)),
            ) {
                let mut retention = json!({"rules": rules});
                if let Some(hm) = hm {
                    retention["protect_hm_tags"] = json!(hm);
                }
                match rule(retention) {
                    Err(e) => prop_assert!(e.pointer.starts_with("/retention"), "{e}"),
                    Ok(set) => {
                        let mut body = serde_json::to_value(RuleView::from(&set)).unwrap();
                        let fields = body.as_object_mut().unwrap();
                        fields.remove("registry_id");
                        fields.remove("rule_id");
                        let again = RuleInput::from_json_value(body)
                            .unwrap()
                            .into_rule_set(registry(), rule_id())
                            .unwrap();
                        prop_assert_eq!(&again, &set);
                        prop_assert!(crate::CompiledRule::compile(&set).is_ok());
                    }
                }
            }
        }
    }
}
