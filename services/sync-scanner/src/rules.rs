//! A registry's rules as the scanner applies them: the `rule.set` events of the stream,
//! plus the rules of the beacon agent YAML (DESIGN section 6) for the registry it names.
//!
//! Precedence: a rule from the stream replaces the agent file's rule of the same id (an
//! admin who `PUT`s `db-postgresql` overrides the file; removing it through the API brings
//! the file's back). Rules of different ids all apply, as `imagelib_rules::RuleSetIndex`
//! describes: the union of their tags, the first matching rule in rule-id order governing
//! kind and description.

use std::path::Path;

use imagelib_events::RegistryId;
use imagelib_events::event::RuleSet;
use imagelib_rules::RuleSetIndex;

use crate::store::{Store, StoreError};

/// Rules read from the agent YAML, for one registry.
#[derive(Debug, Clone, Default)]
pub struct AgentRules {
    registry: Option<RegistryId>,
    rules: Vec<RuleSet>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentConfigError {
    #[error("IMAGELIB_SCANNER__AGENT_CONFIG {path}: {message}")]
    File { path: String, message: String },
    #[error(
        "IMAGELIB_SCANNER__AGENT_CONFIG is set but IMAGELIB_SCANNER__AGENT_REGISTRY (the registry id it applies to) is not"
    )]
    NoRegistry,
}

impl AgentRules {
    pub fn none() -> Self {
        Self::default()
    }

    /// Reads `path` (when set) as rules of `registry`. A file that is not a valid agent
    /// configuration is refused at start, with the pointer of the offending entry.
    pub fn load(
        path: Option<&Path>,
        registry: Option<RegistryId>,
    ) -> Result<Self, AgentConfigError> {
        let Some(path) = path else {
            return Ok(Self::none());
        };
        let registry = registry.ok_or(AgentConfigError::NoRegistry)?;
        let err = |message: String| AgentConfigError::File {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        Self::parse(&text, registry).map_err(err)
    }

    pub fn parse(yaml: &str, registry: RegistryId) -> Result<Self, String> {
        let imported = imagelib_rules::parse_agent_yaml(yaml).map_err(|e| e.to_string())?;
        let rules = imported
            .iter()
            .map(|r| r.to_rule_set(registry).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AgentRules {
            registry: Some(registry),
            rules,
        })
    }

    pub fn registry(&self) -> Option<RegistryId> {
        self.registry
    }

    pub fn rules_for(&self, registry: RegistryId) -> &[RuleSet] {
        if self.registry == Some(registry) {
            &self.rules
        } else {
            &[]
        }
    }
}

/// The compiled rules of `registry`. Rules that do not compile (which registry-registry
/// refuses before they become events) are skipped with a warning.
pub async fn index_for(
    store: &Store,
    agent: &AgentRules,
    registry: RegistryId,
) -> Result<RuleSetIndex, StoreError> {
    let mut index = RuleSetIndex::new();
    for rule in agent
        .rules_for(registry)
        .iter()
        .chain(&store.rules(registry).await?)
    {
        if let Err(e) = index.apply_set(rule) {
            tracing::warn!(%registry, rule = %rule.rule_id, error = %e, "rule skipped");
        }
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use imagelib_events::model::RuleKind;

    #[test]
    fn agent_yaml_becomes_rules_of_its_registry() {
        let id = RegistryId::new();
        let yaml = "dispatcher:\n  capabilities:\n    provisioning:\n      images:\n        discovery:\n          registry:\n            postgres_repositories:\n              - name: postgresql\n                description: Community PostgreSQL\n            model_repositories:\n              - name: nvidia/nim/*\n";
        let agent = AgentRules::parse(yaml, id).unwrap();
        let rules = agent.rules_for(id);
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].kind, RuleKind::Database);
        assert_eq!(rules[0].rule_id.as_str(), "db-postgresql");
        assert_eq!(rules[1].kind, RuleKind::Model);
        assert!(agent.rules_for(RegistryId::new()).is_empty());
        assert!(AgentRules::parse("nope: 1", id).is_err());
    }
}
