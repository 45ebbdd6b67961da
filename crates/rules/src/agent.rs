//! Rules from the beacon agent's YAML (DESIGN section 6), for `imagelib rules import`.
//!
//! Only `dispatcher.capabilities.provisioning.images.discovery.registry` is read; every
//! other key of the file is ignored, since the real agent configuration holds much more.
//! `postgres_repositories` entries become `database` rules and `model_repositories`
//! entries `model` rules, one rule per entry. An entry is a mapping with `name` (read like
//! a plain `repositories` string: exact, glob or regex), and optionally `description`,
//! `tags` (the shape of [`crate::TagsInput`]), `hm_tags`, `enabled`, `trust` (the shape of
//! [`crate::TrustInput`]) and `retention` (the shape of [`crate::RetentionInput`]); other keys
//! of an entry are ignored too. A bare string entry is a name.
//!
//! Rule ids are derived from the list and the name so that importing the same file again
//! updates the same rules: `db-` or `model-` and the name slugified (lower-case letters,
//! digits and `_` kept, `*` → `x`, `?` → `q`, anything else → `-`), e.g. `db-postgresql`,
//! `model-nvidia-nim-x`. An id longer than a rule id allows is cut and given an 8-hex-digit
//! hash of the list and name; when two entries slugify alike (`a.b`, `a-b`), the later one
//! in the file gets the hash suffix, so appending entries never renames existing rules.

use std::collections::BTreeMap;

use imagelib_events::event::RuleSet;
use imagelib_events::model::RuleKind;
use imagelib_events::{RegistryId, RuleId};
use serde_norway::Value;
use sha2::{Digest, Sha256};

use crate::error::{RuleError, RuleErrorReason, pointer_of};
use crate::input::{PatternInput, RepositoriesInput, RuleInput, TagsInput};
use crate::retention::RetentionInput;
use crate::trust::TrustInput;

const SECTION: [&str; 6] = [
    "dispatcher",
    "capabilities",
    "provisioning",
    "images",
    "discovery",
    "registry",
];
const LISTS: [(&str, RuleKind, &str); 2] = [
    ("postgres_repositories", RuleKind::Database, "db"),
    ("model_repositories", RuleKind::Model, "model"),
];
const MAX_RULE_ID: usize = 63;

/// One rule read from the agent YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedRule {
    /// The derived, stable rule id.
    pub rule_id: RuleId,
    pub kind: RuleKind,
    /// The entry's `name` as written.
    pub name: String,
    /// JSON pointer of the entry in the file.
    pub pointer: String,
    /// The validated rule, as a `PUT /v1/registries/{id}/rules/{rule_id}` body.
    pub input: RuleInput,
}

impl ImportedRule {
    /// The `rule.set` event data for `registry_id`. The input was validated when the file
    /// was parsed; errors point into the file.
    pub fn to_rule_set(&self, registry_id: RegistryId) -> Result<RuleSet, RuleError> {
        self.input
            .to_rule_set(registry_id, self.rule_id.clone())
            .map_err(|e| locate(e, &self.pointer))
    }
}

/// Reads the rules of an agent YAML file (see the module docs). The file is refused, with
/// the pointer of the offending field, if it is not YAML, has neither list, or has an
/// entry that is not a valid rule.
pub fn parse_agent_yaml(yaml: &str) -> Result<Vec<ImportedRule>, RuleError> {
    let root: Value = serde_norway::from_str(yaml)
        .map_err(|e| RuleError::new("", RuleErrorReason::Invalid(format!("not YAML: {e}"))))?;
    let mut section = &root;
    let mut pointer = String::new();
    for key in SECTION {
        section = match section.get(key) {
            Some(v) if !v.is_null() => v,
            _ => {
                return Err(RuleError::new(
                    pointer,
                    RuleErrorReason::NoAgentRepositories,
                ));
            }
        };
        pointer.push('/');
        pointer.push_str(key);
    }
    let mut found_list = false;
    let mut rules = Vec::new();
    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    for (list_key, kind, prefix) in LISTS {
        let Some(list) = section.get(list_key).filter(|v| !v.is_null()) else {
            continue;
        };
        found_list = true;
        let list_pointer = format!("{pointer}/{list_key}");
        let Some(entries) = list.as_sequence() else {
            return Err(RuleError::new(
                list_pointer,
                RuleErrorReason::Invalid("expected a list of repositories".into()),
            ));
        };
        let mut names: BTreeMap<String, String> = BTreeMap::new();
        for (i, entry) in entries.iter().enumerate() {
            let entry_pointer = format!("{list_pointer}/{i}");
            let (name, input) = read_entry(entry, kind, &entry_pointer)?;
            if let Some(first) = names.get(name.trim()) {
                return Err(RuleError::new(
                    format!("{entry_pointer}/name"),
                    RuleErrorReason::Duplicate {
                        name,
                        first: first.clone(),
                    },
                ));
            }
            names.insert(name.trim().to_owned(), entry_pointer.clone());
            let rule_id = derive_rule_id(prefix, kind, &name, &ids);
            ids.insert(rule_id.as_str().to_owned(), entry_pointer.clone());
            rules.push(ImportedRule {
                rule_id,
                kind,
                name,
                pointer: entry_pointer,
                input,
            });
        }
    }
    if !found_list {
        return Err(RuleError::new(
            pointer,
            RuleErrorReason::NoAgentRepositories,
        ));
    }
    Ok(rules)
}

fn read_entry(
    entry: &Value,
    kind: RuleKind,
    pointer: &str,
) -> Result<(String, RuleInput), RuleError> {
    let field = |key: &str| entry.get(key).filter(|v| !v.is_null());
    let invalid = |suffix: &str, why: &str| {
        RuleError::new(
            format!("{pointer}{suffix}"),
            RuleErrorReason::Invalid(why.to_owned()),
        )
    };
    let name = match entry {
        Value::String(s) => s.clone(),
        Value::Mapping(_) => match field("name") {
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(invalid("/name", "expected a string")),
            None => return Err(invalid("/name", "missing: every entry needs a `name`")),
        },
        _ => return Err(invalid("", "expected a mapping with a `name`, or a string")),
    };
    let description = match field("description") {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(invalid("/description", "expected a string")),
    };
    let tags = match field("tags") {
        None => TagsInput::default(),
        Some(v) => serde_path_to_error::deserialize::<_, TagsInput>(v.clone()).map_err(|e| {
            RuleError::new(
                format!("{pointer}/tags{}", pointer_of(e.path())),
                RuleErrorReason::Invalid(e.inner().to_string()),
            )
        })?,
    };
    let hm_tags = match field("hm_tags") {
        None => vec![],
        Some(Value::Sequence(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(invalid(&format!("/hm_tags/{i}"), "expected a string")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(invalid("/hm_tags", "expected a list of strings")),
    };
    let enabled = match field("enabled") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("/enabled", "expected true or false")),
    };
    let trust = match field("trust") {
        None => None,
        Some(v) => Some(
            serde_path_to_error::deserialize::<_, TrustInput>(v.clone()).map_err(|e| {
                RuleError::new(
                    format!("{pointer}/trust{}", pointer_of(e.path())),
                    RuleErrorReason::Invalid(e.inner().to_string()),
                )
            })?,
        ),
    };
    let retention = match field("retention") {
        None => None,
        Some(v) => Some(
            serde_path_to_error::deserialize::<_, RetentionInput>(v.clone()).map_err(|e| {
                RuleError::new(
                    format!("{pointer}/retention{}", pointer_of(e.path())),
                    RuleErrorReason::Invalid(e.inner().to_string()),
                )
            })?,
        ),
    };
    let input = RuleInput {
        repositories: RepositoriesInput::One(PatternInput::Plain(name.clone())),
        tags,
        kind,
        description,
        hm_tags,
        enabled,
        trust,
        retention,
        registry_id: None,
        rule_id: None,
    };
    // Validate now, so a bad file is refused whole before any rule is written.
    let placeholder = "00000000-0000-0000-0000-000000000000"
        .parse()
        .expect("the nil UUID parses");
    input
        .to_rule_set(placeholder, "x".parse().expect("a valid rule id"))
        .map_err(|e| locate(e, pointer))?;
    Ok((name, input))
}

/// Moves an error about a generated [`RuleInput`] to the entry field it came from.
fn locate(e: RuleError, entry_pointer: &str) -> RuleError {
    if e.pointer.starts_with("/repositories") {
        RuleError::new(format!("{entry_pointer}/name"), e.reason)
    } else {
        e.within(entry_pointer)
    }
}

fn slugify(name: &str) -> String {
    let mut slug = String::new();
    for c in name.trim().chars() {
        let mapped = match c {
            'a'..='z' | '0'..='9' | '_' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            '*' => 'x',
            '?' => 'q',
            _ => '-',
        };
        if mapped == '-' && (slug.is_empty() || slug.ends_with('-')) {
            continue;
        }
        slug.push(mapped);
    }
    while slug.ends_with('-') {
        slug.pop();
    }
    slug
}

fn short_hash(kind: RuleKind, name: &str, hex_len: usize) -> String {
    let kind = match kind {
        RuleKind::Database => "database",
        RuleKind::Model => "model",
        RuleKind::Auto => "auto",
    };
    let digest = Sha256::digest(format!("{kind}\n{}", name.trim()).as_bytes());
    digest
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()[..hex_len]
        .to_owned()
}

fn derive_rule_id(
    prefix: &str,
    kind: RuleKind,
    name: &str,
    taken: &BTreeMap<String, String>,
) -> RuleId {
    let slug = slugify(name);
    let base = if slug.is_empty() {
        prefix.to_owned()
    } else {
        format!("{prefix}-{slug}")
    };
    let with_hash = |hex_len: usize| {
        let keep = MAX_RULE_ID - hex_len - 1;
        let mut cut: String = base.chars().take(keep).collect();
        while cut.ends_with('-') {
            cut.pop();
        }
        format!("{cut}-{}", short_hash(kind, name, hex_len))
    };
    let candidates = [
        (base.len() <= MAX_RULE_ID && !slug.is_empty()).then(|| base.clone()),
        Some(with_hash(8)),
        Some(with_hash(16)),
        Some(with_hash(32)),
    ];
    let id = candidates
        .into_iter()
        .flatten()
        .find(|c| !taken.contains_key(c))
        .unwrap_or_else(|| with_hash(40));
    id.parse().expect("derived rule ids are valid")
}

#[cfg(test)]
mod tests {
    use super::*;
    use imagelib_events::model::{RepositoryPattern, TagPattern};
    use proptest::prelude::*;

    const DESIGN_EXAMPLE: &str = "
dispatcher:
  capabilities:
    provisioning:
      images:
        discovery:
          registry:
            postgres_repositories:
              - name: postgresql
                description: Community PostgreSQL
";

    fn registry() -> RegistryId {
        "0190f1d2-3c4b-7a5e-8f90-123456789abc".parse().unwrap()
    }

    fn ids(rules: &[ImportedRule]) -> Vec<&str> {
        rules.iter().map(|r| r.rule_id.as_str()).collect()
    }

    #[test]
    fn the_design_example() {
        let rules = parse_agent_yaml(DESIGN_EXAMPLE).unwrap();
        assert_eq!(ids(&rules), vec!["db-postgresql"]);
        let rule = rules[0].to_rule_set(registry()).unwrap();
        assert_eq!(rule.kind, RuleKind::Database);
        assert_eq!(rule.description, "Community PostgreSQL");
        assert_eq!(
            rule.repositories,
            vec![RepositoryPattern::Exact("postgresql".parse().unwrap())]
        );
        assert!(rule.enabled);
        assert!(rule.tags.exclude_artifact_tags);
        assert_eq!(rule.rule_id.as_str(), "db-postgresql");
        assert_eq!(
            rules[0].pointer,
            "/dispatcher/capabilities/provisioning/images/discovery/registry/postgres_repositories/0"
        );
    }

    #[test]
    fn both_lists_the_seed_entries_and_other_keys() {
        let yaml = "
version: 3
dispatcher:
  log_level: debug
  capabilities:
    metrics: {enabled: true}
    provisioning:
      clusters: []
      images:
        pull_secret: acme
        discovery:
          interval: 5m
          registry:
            url: upmdev.azurecr.io
            postgres_repositories:
              - name: postgresql
                description: Community PostgreSQL
              - name: edb-postgres-advanced
                description: EPAS
              - name: edb-postgres-extended
                description: PGE
              - name: postgresql-torsten
                description: Custom PG Build with AIDB
                owner: torsten
            model_repositories:
              - name: nvidia/nim/*
                description: NIM models
                hm_tags: [gpu, nim]
                tags:
                  include: ['^1\\.']
                  newest: 3
              - meta/llama-3.1-8b-instruct
";
        let rules = parse_agent_yaml(yaml).unwrap();
        assert_eq!(
            ids(&rules),
            vec![
                "db-postgresql",
                "db-edb-postgres-advanced",
                "db-edb-postgres-extended",
                "db-postgresql-torsten",
                "model-nvidia-nim-x",
                "model-meta-llama-3-1-8b-instruct",
            ]
        );
        let kinds: Vec<_> = rules.iter().map(|r| r.kind).collect();
        assert_eq!(&kinds[..4], &[RuleKind::Database; 4]);
        assert_eq!(&kinds[4..], &[RuleKind::Model; 2]);
        let nim = rules[4].to_rule_set(registry()).unwrap();
        assert_eq!(
            nim.repositories,
            vec![RepositoryPattern::Glob("nvidia/nim/*".into())]
        );
        assert_eq!(nim.tags.include, vec![TagPattern::Regex("^1\\.".into())]);
        assert_eq!(nim.tags.newest, Some(3));
        assert_eq!(nim.hm_tags.len(), 2);
        assert_eq!(nim.description, "NIM models");
        assert_eq!(rules[5].to_rule_set(registry()).unwrap().description, "");
        let body = serde_json::to_value(&rules[4].input).unwrap();
        assert_eq!(body["repositories"], "nvidia/nim/*");
        assert_eq!(body["kind"], "model");
    }

    #[test]
    fn enabled_and_model_only() {
        let yaml = "
dispatcher: {capabilities: {provisioning: {images: {discovery: {registry: {
  model_repositories: [{name: '/models/.*/', enabled: false}]}}}}}}
";
        let rules = parse_agent_yaml(yaml).unwrap();
        assert_eq!(ids(&rules), vec!["model-models-x"]);
        let rule = rules[0].to_rule_set(registry()).unwrap();
        assert!(!rule.enabled);
        assert_eq!(
            rule.repositories,
            vec![RepositoryPattern::Regex("models/.*".into())]
        );
    }

    #[test]
    fn neither_list_is_refused() {
        for yaml in [
            "dispatcher: {capabilities: {provisioning: {images: {discovery: {registry: {url: x}}}}}}",
            "dispatcher: {capabilities: {provisioning: {images: {discovery: {registry: {postgres_repositories: }}}}}}",
            "dispatcher: {capabilities: {}}",
            "other: 1",
            "",
        ] {
            let e = parse_agent_yaml(yaml).unwrap_err();
            assert_eq!(e.reason, RuleErrorReason::NoAgentRepositories, "{yaml}");
        }
        let e = parse_agent_yaml("dispatcher: {capabilities: {}}").unwrap_err();
        assert_eq!(e.pointer, "/dispatcher/capabilities");
        assert!(e.to_string().contains("postgres_repositories"), "{e}");
    }

    #[test]
    fn entries_carry_trust_policies() {
        let pem = include_str!("../testdata/p256.pub");
        let indented: String = pem.lines().map(|l| format!("{:24}{l}\n", "")).collect();
        let yaml = format!(
            "dispatcher:
  capabilities:
    provisioning:
      images:
        discovery:
          registry:
            model_repositories:
              - name: nvidia/nim/*
                trust:
                  mode: enforce
                  keys:
                    - name: release
                      pem: |
{indented}                  identities:
                    - issuer: https://token.actions.githubusercontent.com
                      subject: ^https://github\\.com/acme/.*$
                  max_severity: high
                  allow_cves:
                    - CVE-2024-1234 until 2027-01-31
                    - {{id: CVE-2024-5678, expires: 2027-02-28, reason: not reachable}}
                  require_sbom: true
              - name: plain
"
        );
        let rules = parse_agent_yaml(&yaml).unwrap();
        let rule = rules[0].to_rule_set(registry()).unwrap();
        let trust = rule.trust.expect("a policy");
        assert_eq!(trust.mode, imagelib_events::model::PolicyMode::Enforce);
        assert_eq!(trust.keys[0].name, "release");
        assert_eq!(trust.keys[0].pem, pem);
        assert_eq!(trust.identities.len(), 1);
        assert_eq!(trust.allow_cves[1].reason, "not reachable");
        assert_eq!(trust.allow_cves[1].expires.to_string(), "2027-02-28");
        assert!(trust.require_sbom);
        assert_eq!(rules[1].to_rule_set(registry()).unwrap().trust, None);

        let base =
            "/dispatcher/capabilities/provisioning/images/discovery/registry/model_repositories/0";
        for (bad, pointer, needle) in [
            (
                "trust: {keys: [nope]}",
                "/trust/keys/0",
                "invalid public key",
            ),
            ("trust: {mode: enforce}", "/trust", "must ask for something"),
            (
                "trust: {max_severity: high, allow_cves: [CVE-1]}",
                "/trust/allow_cves/0",
                "write an allowance",
            ),
            (
                "trust: {require_sbom: true, sbom: true}",
                "/trust/sbom",
                "unknown field `sbom`",
            ),
            (
                "trust: {identities: [{issuer: 'http://x.example', subject: '^a$'}]}",
                "/trust/identities/0/issuer",
                "https",
            ),
        ] {
            let yaml = format!(
                "dispatcher: {{capabilities: {{provisioning: {{images: {{discovery: {{registry: {{model_repositories: [{{name: a, {bad}}}]}}}}}}}}}}}}"
            );
            let e = parse_agent_yaml(&yaml).unwrap_err();
            assert_eq!(e.pointer, format!("{base}{pointer}"), "{bad}: {e}");
            assert!(e.to_string().contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let rules = parse_agent_yaml(include_str!(
            "../../../deploy/examples/beacon-agent-rules.yaml"
        ))
        .unwrap();
        assert_eq!(ids(&rules), vec!["db-postgresql", "model-nvidia-nim-x"]);
        let db = rules[0].to_rule_set(registry()).unwrap();
        let db_trust = db.trust.expect("a policy");
        assert_eq!(db_trust.mode, imagelib_events::model::PolicyMode::Audit);
        assert!(db_trust.require_sbom);
        let models = rules[1].to_rule_set(registry()).unwrap();
        let trust = models.trust.expect("a policy");
        assert_eq!(trust.mode, imagelib_events::model::PolicyMode::Enforce);
        assert_eq!(trust.keys.len(), 1);
        assert_eq!(trust.identities.len(), 1);
        assert_eq!(trust.allow_cves.len(), 2);
        assert_eq!(trust.allow_cves[1].id, "CVE-2024-5678");
    }

    #[test]
    fn empty_lists_give_no_rules() {
        let yaml = "dispatcher: {capabilities: {provisioning: {images: {discovery: {registry: {model_repositories: []}}}}}}";
        assert!(parse_agent_yaml(yaml).unwrap().is_empty());
    }

    #[test]
    fn invalid_files_point_at_the_field() {
        let base = "/dispatcher/capabilities/provisioning/images/discovery/registry";
        let wrap = |list: &str| {
            format!(
                "dispatcher: {{capabilities: {{provisioning: {{images: {{discovery: {{registry: {{{list}}}}}}}}}}}}}"
            )
        };
        let cases = [
            (
                wrap("postgres_repositories: [{name: Bad Name}]"),
                "/postgres_repositories/0/name",
            ),
            (
                wrap("postgres_repositories: [{description: x}]"),
                "/postgres_repositories/0/name",
            ),
            (
                wrap("postgres_repositories: [{name: [a]}]"),
                "/postgres_repositories/0/name",
            ),
            (
                wrap("postgres_repositories: [42]"),
                "/postgres_repositories/0",
            ),
            (
                wrap("postgres_repositories: {name: a}"),
                "/postgres_repositories",
            ),
            (
                wrap("model_repositories: [{name: a, tags: {include: ['(']}}]"),
                "/model_repositories/0/tags/include/0",
            ),
            (
                wrap("model_repositories: [{name: a, tags: {inclde: []}}]"),
                "/model_repositories/0/tags/inclde",
            ),
            (
                wrap("model_repositories: [{name: a, tags: {newest: 0}}]"),
                "/model_repositories/0/tags/newest",
            ),
            (
                wrap("model_repositories: [{name: a, hm_tags: [ok, BAD]}]"),
                "/model_repositories/0/hm_tags/1",
            ),
            (
                wrap("model_repositories: [{name: a, hm_tags: [{x: 1}]}]"),
                "/model_repositories/0/hm_tags/0",
            ),
            (
                wrap("model_repositories: [{name: a, enabled: maybe}]"),
                "/model_repositories/0/enabled",
            ),
            (
                wrap("model_repositories: [{name: a, description: [x]}]"),
                "/model_repositories/0/description",
            ),
            (
                wrap("model_repositories: [a, b, a]"),
                "/model_repositories/2/name",
            ),
        ];
        for (yaml, pointer) in cases {
            let e = parse_agent_yaml(&yaml).expect_err(&yaml);
            assert_eq!(e.pointer, format!("{base}{pointer}"), "{yaml}: {e}");
        }
        let dup = parse_agent_yaml(&wrap("model_repositories: [a, b, a]")).unwrap_err();
        assert!(dup.to_string().contains("listed twice"), "{dup}");
        let e = parse_agent_yaml("a: [unclosed").unwrap_err();
        assert!(e.to_string().starts_with("not YAML"), "{e}");
    }

    #[test]
    fn colliding_and_long_names_get_hash_suffixes() {
        let long = format!(
            "acme/{}",
            "very-long-model-name-".repeat(4).trim_end_matches('-')
        );
        let yaml = format!(
            "dispatcher: {{capabilities: {{provisioning: {{images: {{discovery: {{registry: {{
               model_repositories: [a.b, a-b, a/b, '{long}', '^$']}}}}}}}}}}}}"
        );
        let rules = parse_agent_yaml(&yaml).unwrap();
        let got = ids(&rules);
        assert_eq!(got[0], "model-a-b");
        for (i, id) in got.iter().enumerate().skip(1).take(2) {
            assert!(
                id.starts_with("model-a-b-") && id.len() == "model-a-b-".len() + 8,
                "{i}: {id}"
            );
        }
        assert_ne!(got[1], got[2]);
        assert_eq!(got[3].len(), MAX_RULE_ID);
        assert!(
            got[3].starts_with("model-acme-very-long-model-name"),
            "{}",
            got[3]
        );
        assert!(
            got[4].starts_with("model-") && got[4].len() == "model-".len() + 8,
            "{}",
            got[4]
        );

        let again = parse_agent_yaml(&yaml).unwrap();
        assert_eq!(ids(&again), got, "ids are stable");
        let appended = yaml.replace("'^$']", "'^$', c]");
        let more = parse_agent_yaml(&appended).unwrap();
        assert_eq!(&ids(&more)[..5], &got[..], "appending keeps existing ids");
    }

    #[test]
    fn slugs() {
        assert_eq!(slugify("nvidia/nim/*"), "nvidia-nim-x");
        assert_eq!(slugify("PostgreSQL"), "postgresql");
        assert_eq!(slugify("^edb-.*$"), "edb-x");
        assert_eq!(slugify("pg1?"), "pg1q");
        assert_eq!(slugify("a__b"), "a__b");
        assert_eq!(slugify("//"), "");
    }

    proptest! {
        #[test]
        fn derived_ids_are_valid_rule_ids(name in "\\PC{0,120}") {
            let id = derive_rule_id("model", RuleKind::Model, &name, &BTreeMap::new());
            prop_assert!(id.as_str().parse::<RuleId>().is_ok());
            prop_assert!(id.as_str().starts_with("model"));
        }
    }
}
