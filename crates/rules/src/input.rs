//! The rule shapes people write: `PUT /v1/registries/{id}/rules/{rule_id}` bodies and the
//! agent YAML entries.
//!
//! They are friendlier than the `rule.set` event:
//! - `repositories` is a string, a list of strings, or (lists of) single-key objects
//!   `{"exact"|"glob"|"regex": "…"}`. A plain string is a **regex** when written `/…/` or
//!   starting with `^`, a **glob** when it holds `*`, `?` or `[`, and otherwise an
//!   **exact** name, which must then be a valid repository name;
//! - a `tags.include` / `tags.exclude` / `tags.mutable` entry is a plain string, read as a
//!   regex (searched, so `^1\.` selects `1.x`; `/…/` is accepted too), or a single-key
//!   object `{"exact"|"prefix"|"regex"|"semver": "…"}`; `tags.semver` is shorthand for one
//!   more semver include; `tags.newest` and `tags.exclude_artifact_tags` (default `true`)
//!   are as in the event;
//! - `kind` defaults to `auto`, `description` to `""`, `enabled` to `true`;
//! - `trust` is the optional trust policy ([`crate::trust`]), `retention` the optional
//!   retention policy ([`crate::retention`]);
//! - `registry_id` and `rule_id` may be sent (a rule as `GET` returns it is a valid body)
//!   but must be the path's.
//!
//! Unknown fields are refused so that a typo (`"exlude"`) is an error, not a silently
//! broader rule. Every error carries the JSON pointer of the field in the input.

use std::fmt;

use imagelib_events::event::RuleSet;
use imagelib_events::model::{HmTag, RepositoryPattern, RuleKind, TagPattern, TagSelector};
use imagelib_events::{RegistryId, RepositoryName, RuleId, Tag};
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::compiled::CompiledRule;
use crate::error::{RuleError, RuleErrorReason, pointer_of};
use crate::pattern::{RepoMatcher, TagMatcher};
use crate::retention::RetentionInput;
use crate::trust::TrustInput;

/// A `PUT /v1/registries/{id}/rules/{rule_id}` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleInput {
    pub repositories: RepositoriesInput,
    #[serde(default, skip_serializing_if = "TagsInput::is_default")]
    pub tags: TagsInput,
    #[serde(default)]
    pub kind: RuleKind,
    #[serde(default)]
    pub description: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hm_tags: Vec<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The trust policy of the images the rule selects (see [`crate::trust`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<TrustInput>,
    /// The retention policy previewed for the rule's tags (see [`crate::retention`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionInput>,
    /// What `GET` returns names the rule; sent back, the ids must be the path's.
    #[serde(default, skip_serializing)]
    pub registry_id: Option<String>,
    #[serde(default, skip_serializing)]
    pub rule_id: Option<String>,
}

/// The `tags` object of a [`RuleInput`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagsInput {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<PatternInput>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<PatternInput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest: Option<u32>,
    /// Shorthand for one more `{"semver": …}` include.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutable: Option<Vec<PatternInput>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<Vec<PatternInput>>,
    #[serde(default = "yes")]
    pub exclude_artifact_tags: bool,
}

impl Default for TagsInput {
    fn default() -> Self {
        Self {
            include: vec![],
            exclude: vec![],
            newest: None,
            semver: None,
            mutable: None,
            immutable: None,
            exclude_artifact_tags: true,
        }
    }
}

impl TagsInput {
    fn is_default(&self) -> bool {
        self == &Self::default()
    }
}

fn yes() -> bool {
    true
}

/// `repositories`: one pattern or a list of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepositoriesInput {
    One(PatternInput),
    Many(Vec<PatternInput>),
}

/// One pattern as written: a plain string, whose meaning depends on the field, or a
/// single-key object naming its kind (`{"glob": "nvidia/*"}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatternInput {
    Plain(String),
    Tagged { kind: String, value: String },
}

impl RuleInput {
    /// Parses a JSON body; errors point at the offending field.
    pub fn from_json_slice(body: &[u8]) -> Result<Self, RuleError> {
        let mut de = serde_json::Deserializer::from_slice(body);
        let input = serde_path_to_error::deserialize(&mut de).map_err(path_error)?;
        de.end()
            .map_err(|e| RuleError::new("", RuleErrorReason::Invalid(e.to_string())))?;
        Ok(input)
    }

    /// Parses an already-decoded JSON value; errors point at the offending field.
    pub fn from_json_value(value: serde_json::Value) -> Result<Self, RuleError> {
        serde_path_to_error::deserialize(value).map_err(path_error)
    }

    /// Validates everything and builds the `rule.set` event data.
    pub fn into_rule_set(
        self,
        registry_id: RegistryId,
        rule_id: RuleId,
    ) -> Result<RuleSet, RuleError> {
        self.to_rule_set(registry_id, rule_id)
    }

    /// [`Self::into_rule_set`] without consuming the input.
    pub fn to_rule_set(
        &self,
        registry_id: RegistryId,
        rule_id: RuleId,
    ) -> Result<RuleSet, RuleError> {
        for (field, given, path) in [
            ("registry_id", &self.registry_id, registry_id.to_string()),
            ("rule_id", &self.rule_id, rule_id.to_string()),
        ] {
            if let Some(given) = given
                && given.trim() != path
            {
                return Err(RuleError::new(
                    format!("/{field}"),
                    RuleErrorReason::Invalid(format!(
                        "the body names `{given}` but the path `{path}`; drop `{field}` or fix it"
                    )),
                ));
            }
        }
        let repositories = self.repository_patterns()?;
        let tags = self.tags.to_selector("/tags")?;
        let mut hm_tags: Vec<HmTag> = Vec::with_capacity(self.hm_tags.len());
        for (i, raw) in self.hm_tags.iter().enumerate() {
            let tag: HmTag = raw
                .parse()
                .map_err(|e: imagelib_events::model::HmTagError| {
                    RuleError::new(
                        format!("/hm_tags/{i}"),
                        RuleErrorReason::HmTag(e.to_string()),
                    )
                })?;
            if !hm_tags.contains(&tag) {
                hm_tags.push(tag);
            }
        }
        let rule = RuleSet {
            registry_id,
            rule_id,
            repositories,
            tags,
            kind: self.kind,
            description: self.description.clone(),
            hm_tags,
            enabled: self.enabled,
            trust: self
                .trust
                .as_ref()
                .map(|t| t.to_policy("/trust"))
                .transpose()?,
            retention: self
                .retention
                .as_ref()
                .map(|r| r.to_policy("/retention"))
                .transpose()?,
        };
        CompiledRule::compile(&rule)?;
        Ok(rule)
    }

    fn repository_patterns(&self) -> Result<Vec<RepositoryPattern>, RuleError> {
        let convert = |p: &PatternInput, pointer: String| {
            let (pattern, value_pointer) = p.to_repository_pattern(&pointer)?;
            RepoMatcher::compile(&pattern, &value_pointer)?;
            Ok(pattern)
        };
        match &self.repositories {
            RepositoriesInput::One(p) => Ok(vec![convert(p, "/repositories".into())?]),
            RepositoriesInput::Many(list) => list
                .iter()
                .enumerate()
                .map(|(i, p)| convert(p, format!("/repositories/{i}")))
                .collect(),
        }
    }
}

impl TagsInput {
    /// Validates and converts; `base` is the pointer of this object in its document.
    pub(crate) fn to_selector(&self, base: &str) -> Result<TagSelector, RuleError> {
        let list = |items: &[PatternInput], field: &str| -> Result<Vec<TagPattern>, RuleError> {
            items
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let (pattern, pointer) = p.to_tag_pattern(&format!("{base}/{field}/{i}"))?;
                    TagMatcher::compile(&pattern, &pointer)?;
                    Ok(pattern)
                })
                .collect()
        };
        let mut include = list(&self.include, "include")?;
        if let Some(requirement) = &self.semver {
            let pattern = TagPattern::Semver(requirement.clone());
            TagMatcher::compile(&pattern, &format!("{base}/semver"))?;
            include.push(pattern);
        }
        let exclude = list(&self.exclude, "exclude")?;
        let mutable = self
            .mutable
            .as_deref()
            .map(|m| list(m, "mutable"))
            .transpose()?;
        let immutable = self
            .immutable
            .as_deref()
            .map(|m| list(m, "immutable"))
            .transpose()?;
        if self.newest == Some(0) {
            return Err(RuleError::new(
                format!("{base}/newest"),
                RuleErrorReason::NewestZero,
            ));
        }
        Ok(TagSelector {
            include,
            exclude,
            newest: self.newest,
            mutable,
            immutable,
            exclude_artifact_tags: self.exclude_artifact_tags,
        })
    }
}

const REPOSITORY_KINDS: &str = "`exact`, `glob`, `regex`";
const TAG_KINDS: &str = "`exact`, `prefix`, `regex`, `semver`";

impl PatternInput {
    /// The repository pattern, and the pointer of its value (for compile errors).
    fn to_repository_pattern(
        &self,
        pointer: &str,
    ) -> Result<(RepositoryPattern, String), RuleError> {
        match self {
            PatternInput::Plain(s) => Ok((
                classify_repository(s).map_err(|r| RuleError::new(pointer, r))?,
                pointer.to_owned(),
            )),
            PatternInput::Tagged { kind, value } => {
                let value_pointer = format!("{pointer}/{kind}");
                let pattern = match kind.as_str() {
                    "exact" => RepositoryPattern::Exact(
                        parse_repository(value)
                            .map_err(|r| RuleError::new(value_pointer.clone(), r))?,
                    ),
                    "glob" => RepositoryPattern::Glob(value.clone()),
                    "regex" => RepositoryPattern::Regex(value.clone()),
                    _ => return Err(unknown_kind(pointer, kind, REPOSITORY_KINDS)),
                };
                Ok((pattern, value_pointer))
            }
        }
    }

    pub(crate) fn to_tag_pattern(&self, pointer: &str) -> Result<(TagPattern, String), RuleError> {
        match self {
            PatternInput::Plain(s) => {
                let s = s.trim();
                let regex = match s.strip_prefix('/').and_then(|r| r.strip_suffix('/')) {
                    Some(inner) => inner,
                    None => s,
                };
                Ok((TagPattern::Regex(regex.to_owned()), pointer.to_owned()))
            }
            PatternInput::Tagged { kind, value } => {
                let value_pointer = format!("{pointer}/{kind}");
                let pattern = match kind.as_str() {
                    "exact" => TagPattern::Exact(value.parse::<Tag>().map_err(|e| {
                        RuleError::new(value_pointer.clone(), RuleErrorReason::Tag(e.to_string()))
                    })?),
                    "prefix" => TagPattern::Prefix(value.clone()),
                    "regex" => TagPattern::Regex(value.clone()),
                    "semver" => TagPattern::Semver(value.clone()),
                    _ => return Err(unknown_kind(pointer, kind, TAG_KINDS)),
                };
                Ok((pattern, value_pointer))
            }
        }
    }
}

fn unknown_kind(pointer: &str, kind: &str, expected: &'static str) -> RuleError {
    RuleError::new(
        pointer,
        RuleErrorReason::UnknownPatternKind {
            found: kind.to_owned(),
            expected,
        },
    )
}

/// How a plain repository string is read (see the module docs).
pub fn classify_repository(raw: &str) -> Result<RepositoryPattern, RuleErrorReason> {
    let s = raw.trim();
    if let Some(inner) = s
        .strip_prefix('/')
        .and_then(|r| r.strip_suffix('/'))
        .filter(|_| s.len() >= 2)
    {
        return Ok(RepositoryPattern::Regex(inner.to_owned()));
    }
    if s.starts_with('^') {
        return Ok(RepositoryPattern::Regex(s.to_owned()));
    }
    if s.contains(['*', '?', '[']) {
        return Ok(RepositoryPattern::Glob(s.to_owned()));
    }
    parse_repository(s).map(RepositoryPattern::Exact)
}

fn parse_repository(s: &str) -> Result<RepositoryName, RuleErrorReason> {
    s.parse::<RepositoryName>().map_err(|e| {
        RuleErrorReason::RepositoryName(format!(
            "{e}; to match several repositories write a glob (with `*`, `?` or `[`) or a \
             regex (`/…/` or starting with `^`)"
        ))
    })
}

fn path_error<E: fmt::Display>(e: serde_path_to_error::Error<E>) -> RuleError {
    let mut pointer = pointer_of(e.path());
    let message = e.inner().to_string();
    // serde reports a missing field at its parent; point at the field itself.
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|r| r.split('`').next())
    {
        pointer.push('/');
        pointer.push_str(field);
    }
    RuleError::new(pointer, RuleErrorReason::Invalid(message))
}

impl From<&RuleSet> for RuleInput {
    /// The input that sets `rule` again: what `GET` can return so that `GET` then `PUT`
    /// round-trips.
    fn from(rule: &RuleSet) -> Self {
        let tag = |p: &TagPattern| {
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
        };
        let repositories = rule
            .repositories
            .iter()
            .map(|p| {
                let (kind, value) = match p {
                    RepositoryPattern::Exact(n) => ("exact", n.to_string()),
                    RepositoryPattern::Glob(s) => ("glob", s.clone()),
                    RepositoryPattern::Regex(s) => ("regex", s.clone()),
                };
                PatternInput::Tagged {
                    kind: kind.into(),
                    value,
                }
            })
            .collect();
        RuleInput {
            repositories: RepositoriesInput::Many(repositories),
            tags: TagsInput {
                include: rule.tags.include.iter().map(tag).collect(),
                exclude: rule.tags.exclude.iter().map(tag).collect(),
                newest: rule.tags.newest,
                semver: None,
                mutable: rule
                    .tags
                    .mutable
                    .as_ref()
                    .map(|m| m.iter().map(tag).collect()),
                immutable: rule
                    .tags
                    .immutable
                    .as_ref()
                    .map(|m| m.iter().map(tag).collect()),
                exclude_artifact_tags: rule.tags.exclude_artifact_tags,
            },
            kind: rule.kind,
            description: rule.description.clone(),
            hm_tags: rule.hm_tags.iter().map(ToString::to_string).collect(),
            enabled: rule.enabled,
            trust: rule.trust.as_ref().map(TrustInput::from),
            retention: rule.retention.as_ref().map(RetentionInput::from),
            registry_id: None,
            rule_id: None,
        }
    }
}

// ------------------------------------------------------------------- serde

const PATTERN_EXPECTING: &str = "a pattern: a string, or an object with one key naming its kind (e.g. {\"glob\": \"nvidia/*\"})";

struct PatternVisitor;

impl<'de> Visitor<'de> for PatternVisitor {
    type Value = PatternInput;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(PATTERN_EXPECTING)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(PatternInput::Plain(v.to_owned()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(PatternInput::Plain(v.to_string()))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(PatternInput::Plain(v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Err(E::custom(format!(
            "the number {v} may have lost digits (`16.10` reads as 16.1); write it as a string"
        )))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let Some(kind) = map.next_key::<String>()? else {
            return Err(de::Error::custom(
                "empty object: name the pattern's kind, e.g. {\"glob\": \"nvidia/*\"}",
            ));
        };
        let value = map.next_value::<PatternValue>()?.0;
        if let Some(extra) = map.next_key::<String>()? {
            return Err(de::Error::custom(format!(
                "a pattern object has exactly one key; found `{kind}` and `{extra}`"
            )));
        }
        Ok(PatternInput::Tagged { kind, value })
    }
}

/// A pattern object's value: a string (or an integer, read as its digits).
struct PatternValue(String);

impl<'de> Deserialize<'de> for PatternValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match d.deserialize_any(PatternVisitor)? {
            PatternInput::Plain(s) => Ok(PatternValue(s)),
            PatternInput::Tagged { .. } => Err(de::Error::custom(
                "a pattern's value must be a string, not an object",
            )),
        }
    }
}

impl<'de> Deserialize<'de> for PatternInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(PatternVisitor)
    }
}

impl Serialize for PatternInput {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PatternInput::Plain(v) => s.serialize_str(v),
            PatternInput::Tagged { kind, value } => {
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry(kind, value)?;
                map.end()
            }
        }
    }
}

struct RepositoriesVisitor;

impl<'de> Visitor<'de> for RepositoriesVisitor {
    type Value = RepositoriesInput;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a repository pattern or a list of them")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        PatternVisitor.visit_str(v).map(RepositoriesInput::One)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        PatternVisitor.visit_map(map).map(RepositoriesInput::One)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<PatternInput>()? {
            items.push(item);
        }
        Ok(RepositoriesInput::Many(items))
    }
}

impl<'de> Deserialize<'de> for RepositoriesInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RepositoriesVisitor)
    }
}

impl Serialize for RepositoriesInput {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            RepositoriesInput::One(p) => p.serialize(s),
            RepositoriesInput::Many(list) => list.serialize(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn registry() -> RegistryId {
        "0190f1d2-3c4b-7a5e-8f90-123456789abc".parse().unwrap()
    }

    fn rule_id() -> RuleId {
        "nim".parse().unwrap()
    }

    fn parse(v: serde_json::Value) -> Result<RuleSet, RuleError> {
        RuleInput::from_json_value(v)?.into_rule_set(registry(), rule_id())
    }

    fn err(v: serde_json::Value) -> RuleError {
        parse(v).expect_err("should be refused")
    }

    #[test]
    fn the_design_example() {
        let body =
            br#"{"repositories": "nvidia/nim/*", "tags": {"include": ["^1\\."], "exclude": []},
            "kind": "auto", "description": "NIM models", "hm_tags": ["gpu"], "enabled": true}"#;
        let rule = RuleInput::from_json_slice(body)
            .unwrap()
            .into_rule_set(registry(), rule_id())
            .unwrap();
        assert_eq!(
            rule.repositories,
            vec![RepositoryPattern::Glob("nvidia/nim/*".into())]
        );
        assert_eq!(rule.tags.include, vec![TagPattern::Regex("^1\\.".into())]);
        assert!(rule.tags.exclude.is_empty());
        assert!(rule.tags.exclude_artifact_tags);
        assert_eq!(rule.kind, RuleKind::Auto);
        assert_eq!(rule.description, "NIM models");
        assert_eq!(rule.hm_tags, vec!["gpu".parse::<HmTag>().unwrap()]);
        assert!(rule.enabled);
        assert_eq!(rule.registry_id, registry());
        assert_eq!(rule.rule_id, rule_id());

        let compiled = CompiledRule::compile(&rule).unwrap();
        let tags: Vec<Tag> = ["1.0", "1.2.3", "11.0", "2.0", "1.0.sig"]
            .iter()
            .map(|t| t.parse().unwrap())
            .collect();
        let selected: Vec<_> = compiled
            .select_tags(&tags)
            .iter()
            .map(|t| t.as_str())
            .collect();
        assert_eq!(selected, vec!["1.0", "1.2.3"]);
    }

    #[test]
    fn defaults() {
        let rule = parse(json!({"repositories": "postgresql"})).unwrap();
        assert_eq!(
            rule.repositories,
            vec![RepositoryPattern::Exact("postgresql".parse().unwrap())]
        );
        assert_eq!(rule.kind, RuleKind::Auto);
        assert_eq!(rule.description, "");
        assert!(rule.enabled);
        assert!(rule.hm_tags.is_empty());
        assert!(rule.tags.include.is_empty() && rule.tags.exclude.is_empty());
        assert!(rule.tags.exclude_artifact_tags);
        assert_eq!(rule.tags.newest, None);
        assert_eq!(rule.tags.mutable, None);
    }

    #[test]
    fn plain_repository_strings() {
        let cases = [
            (
                "postgresql",
                RepositoryPattern::Exact("postgresql".parse().unwrap()),
            ),
            (
                " nvidia/nim/llm ",
                RepositoryPattern::Exact("nvidia/nim/llm".parse().unwrap()),
            ),
            (
                "nvidia/nim/*",
                RepositoryPattern::Glob("nvidia/nim/*".into()),
            ),
            ("pg1?", RepositoryPattern::Glob("pg1?".into())),
            ("pg1[67]", RepositoryPattern::Glob("pg1[67]".into())),
            ("/nvidia/.*/", RepositoryPattern::Regex("nvidia/.*".into())),
            ("^edb-.*", RepositoryPattern::Regex("^edb-.*".into())),
        ];
        for (raw, expected) in cases {
            assert_eq!(classify_repository(raw).unwrap(), expected, "{raw}");
        }
        assert!(matches!(
            classify_repository("Postgres"),
            Err(RuleErrorReason::RepositoryName(m)) if m.contains("write a glob")
        ));
        assert!(classify_repository("/").is_err());
    }

    #[test]
    fn repository_lists_and_tagged_objects() {
        let rule = parse(json!({"repositories": [
            "postgresql",
            "nvidia/*",
            {"exact": "edb-postgres-advanced"},
            {"glob": "models/**"},
            {"regex": "pg[0-9]+"},
        ]}))
        .unwrap();
        assert_eq!(
            rule.repositories,
            vec![
                RepositoryPattern::Exact("postgresql".parse().unwrap()),
                RepositoryPattern::Glob("nvidia/*".into()),
                RepositoryPattern::Exact("edb-postgres-advanced".parse().unwrap()),
                RepositoryPattern::Glob("models/**".into()),
                RepositoryPattern::Regex("pg[0-9]+".into()),
            ]
        );
        let single = parse(json!({"repositories": {"regex": "a|b"}})).unwrap();
        assert_eq!(
            single.repositories,
            vec![RepositoryPattern::Regex("a|b".into())]
        );
    }

    #[test]
    fn tag_entry_shapes() {
        let rule = parse(json!({"repositories": "a", "tags": {
            "include": ["^16\\.", "/bookworm$/", {"exact": "latest"}, {"prefix": "17."},
                        {"regex": "x"}, {"semver": "~15"}, 18],
            "exclude": [{"regex": "-rc"}],
            "semver": ">=16, <18",
            "newest": 5,
            "mutable": ["^\\d+$"],
            "exclude_artifact_tags": false,
        }}))
        .unwrap();
        assert_eq!(
            rule.tags.include,
            vec![
                TagPattern::Regex("^16\\.".into()),
                TagPattern::Regex("bookworm$".into()),
                TagPattern::Exact("latest".parse().unwrap()),
                TagPattern::Prefix("17.".into()),
                TagPattern::Regex("x".into()),
                TagPattern::Semver("~15".into()),
                TagPattern::Regex("18".into()),
                TagPattern::Semver(">=16, <18".into()),
            ]
        );
        assert_eq!(rule.tags.exclude, vec![TagPattern::Regex("-rc".into())]);
        assert_eq!(rule.tags.newest, Some(5));
        assert_eq!(
            rule.tags.mutable,
            Some(vec![TagPattern::Regex("^\\d+$".into())])
        );
        assert!(!rule.tags.exclude_artifact_tags);
    }

    #[test]
    fn error_pointers() {
        let cases = [
            (json!({"repositories": "Bad Name"}), "/repositories"),
            (json!({"repositories": ["a", "b["]}), "/repositories/1"),
            (
                json!({"repositories": ["a", {"regex": "("}]}),
                "/repositories/1/regex",
            ),
            (
                json!({"repositories": [{"exact": "UP"}]}),
                "/repositories/0/exact",
            ),
            (json!({"repositories": [{"glb": "x"}]}), "/repositories/0"),
            (json!({"repositories": []}), "/repositories"),
            (
                json!({"repositories": "a", "tags": {"include": ["ok", "("]}}),
                "/tags/include/1",
            ),
            (
                json!({"repositories": "a", "tags": {"exclude": [{"semver": "nope"}]}}),
                "/tags/exclude/0/semver",
            ),
            (
                json!({"repositories": "a", "tags": {"include": [{"exact": "a/b"}]}}),
                "/tags/include/0/exact",
            ),
            (
                json!({"repositories": "a", "tags": {"include": [{"prefix": "x"}, {"pre": "x"}]}}),
                "/tags/include/1",
            ),
            (
                json!({"repositories": "a", "tags": {"mutable": [""]}}),
                "/tags/mutable/0",
            ),
            (
                json!({"repositories": "a", "tags": {"semver": ">>1"}}),
                "/tags/semver",
            ),
            (
                json!({"repositories": "a", "tags": {"newest": 0}}),
                "/tags/newest",
            ),
            (
                json!({"repositories": "a", "hm_tags": ["ok", "Not OK"]}),
                "/hm_tags/1",
            ),
        ];
        for (body, pointer) in cases {
            let e = err(body.clone());
            assert_eq!(e.pointer, pointer, "{body}: {e}");
        }
    }

    #[test]
    fn error_reasons() {
        let e = err(json!({"repositories": [{"glb": "x"}]}));
        assert_eq!(
            e.reason,
            RuleErrorReason::UnknownPatternKind {
                found: "glb".into(),
                expected: REPOSITORY_KINDS
            }
        );
        let e = err(json!({"repositories": "a", "tags": {"include": ["("]}}));
        assert!(matches!(e.reason, RuleErrorReason::Regex(_)), "{e}");
        let e = err(json!({"repositories": "a", "hm_tags": ["Not OK"]}));
        assert!(
            e.to_string().contains("HM tag `Not OK` is not valid"),
            "{e}"
        );
        let e = err(json!({"repositories": "a", "tags": {"include": [{"regex": "\\w{1000}"}]}}));
        assert!(
            matches!(e.reason, RuleErrorReason::RegexTooLarge { .. }),
            "{e}"
        );
    }

    #[test]
    fn shape_errors_point_at_the_field() {
        let cases = [
            (
                json!({"repositories": "a", "tags": {"exlude": []}}),
                "/tags/exlude",
                "unknown field `exlude`",
            ),
            (
                json!({"repositories": "a", "enabeld": false}),
                "/enabeld",
                "unknown field `enabeld`",
            ),
            (
                json!({"tags": {}}),
                "/repositories",
                "missing field `repositories`",
            ),
            (
                json!({"repositories": "a", "kind": "db"}),
                "/kind",
                "unknown variant `db`",
            ),
            (
                json!({"repositories": "a", "tags": {"newest": -1}}),
                "/tags/newest",
                "u32",
            ),
            (
                json!({"repositories": 5.5}),
                "/repositories",
                "a repository pattern",
            ),
            (
                json!({"repositories": [true]}),
                "/repositories/0",
                "a pattern",
            ),
            (
                json!({"repositories": [{}]}),
                "/repositories/0",
                "empty object",
            ),
            (
                json!({"repositories": [{"glob": "a", "regex": "b"}]}),
                "/repositories/0",
                "exactly one key",
            ),
            (
                json!({"repositories": [{"glob": {"x": "y"}}]}),
                "/repositories/0/glob",
                "not an object",
            ),
            (
                json!({"repositories": "a", "tags": {"include": [16.10]}}),
                "/tags/include/0",
                "write it as a string",
            ),
            (
                json!({"repositories": "a", "enabled": "yes"}),
                "/enabled",
                "boolean",
            ),
        ];
        for (body, pointer, needle) in cases {
            let e = RuleInput::from_json_value(body.clone()).expect_err("refused");
            assert_eq!(e.pointer, pointer, "{body}: {e}");
            assert!(e.to_string().contains(needle), "{body}: {e}");
        }
        let e = RuleInput::from_json_slice(b"{not json").unwrap_err();
        assert!(matches!(e.reason, RuleErrorReason::Invalid(_)));
        let e = RuleInput::from_json_slice(br#"{"repositories": "a"} trailing"#).unwrap_err();
        assert!(e.to_string().contains("trailing"), "{e}");
    }

    #[test]
    fn hm_tags_are_deduplicated_in_order() {
        let rule = parse(json!({"repositories": "a", "hm_tags": ["b", "a", "b"]})).unwrap();
        let tags: Vec<_> = rule.hm_tags.iter().map(|t| t.as_str()).collect();
        assert_eq!(tags, vec!["b", "a"]);
    }

    #[test]
    fn serialises_back_to_an_equivalent_input() {
        let input = RuleInput::from_json_value(json!({
            "repositories": ["a", {"glob": "b/*"}],
            "tags": {"include": ["^1", {"semver": "^1"}], "newest": 2},
            "kind": "model", "hm_tags": ["gpu"], "enabled": false
        }))
        .unwrap();
        let json = serde_json::to_value(&input).unwrap();
        assert_eq!(
            json,
            json!({
                "repositories": ["a", {"glob": "b/*"}],
                "tags": {"include": ["^1", {"semver": "^1"}], "newest": 2, "exclude_artifact_tags": true},
                "kind": "model", "description": "", "hm_tags": ["gpu"], "enabled": false
            })
        );
        assert_eq!(RuleInput::from_json_value(json).unwrap(), input);
    }

    #[test]
    fn round_trips_from_a_rule_set() {
        let rule = parse(json!({
            "repositories": ["postgresql", "nvidia/*", "^x.*"],
            "tags": {"include": ["^1", {"exact": "latest"}, {"prefix": "2"}],
                     "exclude": [{"semver": "<1"}], "mutable": [], "newest": 3,
                     "exclude_artifact_tags": false},
            "kind": "database", "description": "d", "hm_tags": ["gpu"], "enabled": false
        }))
        .unwrap();
        let input = RuleInput::from(&rule);
        let body = serde_json::to_vec(&input).unwrap();
        let again = RuleInput::from_json_slice(&body)
            .unwrap()
            .into_rule_set(registry(), rule_id())
            .unwrap();
        assert_eq!(again, rule);
    }

    #[test]
    fn ids_in_the_body_must_be_the_paths() {
        let rule = parse(json!({"repositories": "a"})).unwrap();
        let event = serde_json::to_value(&rule).unwrap();
        assert_eq!(parse(event.clone()).unwrap(), rule);
        let mut other = event.clone();
        other["rule_id"] = json!("other");
        let e = err(other);
        assert_eq!(e.pointer, "/rule_id");
        assert!(
            e.to_string()
                .contains("the body names `other` but the path `nim`"),
            "{e}"
        );
        let mut other = event;
        other["registry_id"] = json!("0190f1d2-3c4b-7a5e-8f90-000000000000");
        assert_eq!(err(other).pointer, "/registry_id");
    }

    #[test]
    fn the_event_json_shape_is_accepted_too() {
        let rule =
            parse(json!({"repositories": "a/*", "tags": {"include": [{"semver": "^2"}]}})).unwrap();
        let mut event = serde_json::to_value(&rule).unwrap();
        let obj = event.as_object_mut().unwrap();
        obj.remove("registry_id");
        obj.remove("rule_id");
        let again = parse(event).unwrap();
        assert_eq!(again, rule);
    }
}
