//! A registry's rules as the beacon agent's YAML, for the rules editor.
//!
//! A rule is shown in the editor only when the YAML gives it back exactly: a `database` or
//! `model` rule with one repository pattern whose id is the one an import derives from its
//! name (checked by parsing what is rendered, with the same parser `rules import` uses).
//! Other rules (`auto` rules, several patterns, ids chosen through the API) are listed but
//! left as they are by the editor.

use imagelib_events::RegistryId;
use imagelib_events::event::RuleSet;
use imagelib_events::model::{RepositoryPattern, RuleKind, TagSelector};
use imagelib_rules::RuleView;
use serde_json::{Map, Value};

const SECTION: [&str; 6] = [
    "dispatcher",
    "capabilities",
    "provisioning",
    "images",
    "discovery",
    "registry",
];

fn list_key(kind: RuleKind) -> Option<&'static str> {
    match kind {
        RuleKind::Database => Some("postgres_repositories"),
        RuleKind::Model => Some("model_repositories"),
        _ => None,
    }
}

/// The agent entry of a rule (its `name` and the rest of the rule), if it can have one.
fn entry(rule: &RuleSet) -> Option<(&'static str, Value)> {
    let list = list_key(rule.kind)?;
    let [pattern] = rule.repositories.as_slice() else {
        return None;
    };
    let name = match pattern {
        RepositoryPattern::Exact(n) => n.to_string(),
        RepositoryPattern::Glob(g) => g.clone(),
        RepositoryPattern::Regex(r) if r.starts_with('^') => r.clone(),
        RepositoryPattern::Regex(r) => format!("/{r}/"),
    };
    let Ok(Value::Object(view)) = serde_json::to_value(RuleView::from(rule)) else {
        return None;
    };
    let mut out = Map::new();
    out.insert("name".into(), Value::String(name));
    let default_tags = serde_json::to_value(TagSelector::default()).ok();
    for (k, v) in view {
        let skip = match k.as_str() {
            "registry_id" | "rule_id" | "repositories" | "kind" => true,
            "description" => v.as_str() == Some(""),
            "hm_tags" => v.as_array().is_some_and(Vec::is_empty),
            "enabled" => v == Value::Bool(true),
            "tags" => Some(&v) == default_tags.as_ref(),
            _ => v.is_null(),
        };
        if !skip {
            out.insert(k, v);
        }
    }
    Some((list, Value::Object(out)))
}

fn document(lists: &[(&str, Vec<Value>)]) -> String {
    let mut out = String::new();
    for (depth, key) in SECTION.iter().enumerate() {
        out.push_str(&"  ".repeat(depth));
        out.push_str(key);
        out.push_str(":\n");
    }
    let mut body = Map::new();
    for (key, entries) in lists {
        if !entries.is_empty() {
            body.insert((*key).to_owned(), Value::Array(entries.clone()));
        }
    }
    emit_map(&body, SECTION.len() * 2, &mut out);
    out
}

/// The rules the editor holds: the agent YAML of the rules that survive the round trip,
/// and their ids. Empty text when there are none.
pub(super) fn editable(registry: RegistryId, rules: &[RuleSet]) -> (String, Vec<String>) {
    let mut database = Vec::new();
    let mut model = Vec::new();
    let mut ids = Vec::new();
    for rule in rules {
        let Some((list, value)) = entry(rule) else {
            continue;
        };
        // The entry alone must import as this very rule.
        let alone = document(&[(list, vec![value.clone()])]);
        let same = imagelib_rules::parse_agent_yaml(&alone)
            .ok()
            .and_then(|mut v| v.pop())
            .and_then(|r| r.to_rule_set(registry).ok())
            .is_some_and(|r| &r == rule);
        if !same {
            continue;
        }
        ids.push(rule.rule_id.as_str().to_owned());
        match rule.kind {
            RuleKind::Database => database.push(value),
            _ => model.push(value),
        }
    }
    if ids.is_empty() {
        return (String::new(), ids);
    }
    (
        document(&[
            ("postgres_repositories", database),
            ("model_repositories", model),
        ]),
        ids,
    )
}

fn key(k: &str) -> String {
    if !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        k.to_owned()
    } else {
        scalar(&Value::String(k.to_owned()))
    }
}

/// A scalar in flow style: strings double-quoted with JSON's escapes, which YAML's
/// double-quoted scalars read the same way.
fn scalar(v: &Value) -> String {
    match v {
        Value::Array(a) if a.is_empty() => "[]".into(),
        Value::Object(o) if o.is_empty() => "{}".into(),
        other => serde_json::to_string(other).unwrap_or_else(|_| "null".into()),
    }
}

fn is_block(v: &Value) -> bool {
    matches!(v, Value::Array(a) if !a.is_empty()) || matches!(v, Value::Object(o) if !o.is_empty())
}

fn emit_map(map: &Map<String, Value>, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    for (k, v) in map {
        if is_block(v) {
            out.push_str(&format!("{pad}{}:\n", key(k)));
            emit(v, indent + 2, out);
        } else {
            out.push_str(&format!("{pad}{}: {}\n", key(k), scalar(v)));
        }
    }
}

fn emit(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(map) => emit_map(map, indent, out),
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::Object(map) if !map.is_empty() => {
                        let mut inner = String::new();
                        emit_map(map, indent + 2, &mut inner);
                        // The first key goes on the dash's line.
                        out.push_str(&pad);
                        out.push_str("- ");
                        out.push_str(&inner[indent + 2..]);
                    }
                    Value::Array(a) if !a.is_empty() => {
                        out.push_str(&format!("{pad}-\n"));
                        emit(item, indent + 2, out);
                    }
                    other => out.push_str(&format!("{pad}- {}\n", scalar(other))),
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", scalar(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imagelib_rules::parse_agent_yaml;

    const AGENT: &str = r#"
dispatcher:
  capabilities:
    provisioning:
      images:
        discovery:
          registry:
            postgres_repositories:
              - name: postgresql
                description: "Postgres \"images\""
                tags: {include: ['^1[67]\.'], newest: 3}
                hm_tags: [db]
              - "edb/*"
            model_repositories:
              - name: /nvidia/nim-.*/
                enabled: false
"#;

    #[test]
    fn imported_rules_round_trip_through_the_editor() {
        let id: RegistryId = "6f0c1a52-8a8e-4a43-9d4c-52a0e3f0f4a1".parse().unwrap();
        let rules: Vec<RuleSet> = parse_agent_yaml(AGENT)
            .unwrap()
            .iter()
            .map(|r| r.to_rule_set(id).unwrap())
            .collect();
        let (text, ids) = editable(id, &rules);
        assert_eq!(ids.len(), 3, "{text}");
        let again: Vec<RuleSet> = parse_agent_yaml(&text)
            .unwrap()
            .iter()
            .map(|r| r.to_rule_set(id).unwrap())
            .collect();
        assert_eq!(again, rules, "{text}");
    }

    #[test]
    fn rules_the_yaml_cannot_hold_are_left_out() {
        let id: RegistryId = "6f0c1a52-8a8e-4a43-9d4c-52a0e3f0f4a1".parse().unwrap();
        let mut rule = parse_agent_yaml(AGENT).unwrap()[0].to_rule_set(id).unwrap();
        rule.rule_id = "chosen-by-the-api".parse().unwrap();
        let (text, ids) = editable(id, &[rule]);
        assert!(ids.is_empty() && text.is_empty(), "{text}");
    }
}
