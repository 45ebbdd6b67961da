//! Typed identifiers.
//!
//! Every aggregate id is a UUID so that it is always one valid NATS subject token; a
//! `RegistryId` can never be passed where a `DeploymentId` is expected. New ids are
//! UUIDv7 (time-ordered, good B-tree locality); an image id is a UUIDv5 of its registry
//! and repository, so every service derives the same id without asking anyone.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::oci::RepositoryName;

macro_rules! uuid_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
            JsonSchema,
        )]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(u: Uuid) -> Self {
                Self(u)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Uuid {
                id.0
            }
        }
    };
}

macro_rules! v7_constructor {
    ($name:ident) => {
        impl $name {
            /// A fresh, time-ordered id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }
    };
}

uuid_id!(
    /// The CloudEvent `id` and the JetStream `Nats-Msg-Id` of one fact.
    EventId
);
v7_constructor!(EventId);

uuid_id!(
    /// A registered container registry.
    RegistryId
);
v7_constructor!(RegistryId);

uuid_id!(
    /// A deployment of an image (a KServe InferenceService or a CNPG Cluster).
    DeploymentId
);
v7_constructor!(DeploymentId);

uuid_id!(
    /// One scan run of a registry.
    SyncId
);
v7_constructor!(SyncId);

uuid_id!(
    /// An outbound subscription: an HTTPS endpoint that receives matching events.
    SubscriptionId
);
v7_constructor!(SubscriptionId);

uuid_id!(
    /// An image: one repository in one registry. Derived, never random.
    ImageId
);

/// The UUIDv5 namespace of image ids (a fixed, random UUID of this project).
const IMAGE_NAMESPACE: Uuid = Uuid::from_u128(0x6c1f_0f2e_4a7b_4d2e_9a51_7f0c_3b8e_91d4);
/// The UUIDv5 namespace of event ids derived from facts.
const FACT_NAMESPACE: Uuid = Uuid::from_u128(0x0b0e_55c1_2d8f_4c6a_8e1b_42f6_a9d3_7c25);

impl ImageId {
    /// The id of `repository` in `registry`: the same in every service, forever.
    pub fn derive(registry: RegistryId, repository: &RepositoryName) -> Self {
        let mut name = Vec::with_capacity(16 + 1 + repository.as_str().len());
        name.extend_from_slice(registry.0.as_bytes());
        name.push(b'/');
        name.extend_from_slice(repository.as_str().as_bytes());
        Self(Uuid::new_v5(&IMAGE_NAMESPACE, &name))
    }
}

impl EventId {
    /// An id derived from the fact itself (e.g. "registry R saw tag T at digest D in scan
    /// S"), so that a producer that crashes and re-emits the same fact is deduplicated by
    /// JetStream instead of appending it twice.
    pub fn for_fact(fact: &str) -> Self {
        Self(Uuid::new_v5(&FACT_NAMESPACE, fact.as_bytes()))
    }
}

/// A repository rule's id: chosen by the admin (`PUT /v1/registries/{id}/rules/{rule_id}`),
/// so it is a short slug rather than a UUID.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, JsonSchema)]
#[serde(transparent)]
#[schemars(
    description = "A rule id: 1 to 63 characters of `[a-z0-9_-]`, starting with a letter or digit."
)]
pub struct RuleId(#[schemars(regex(pattern = r"^[a-z0-9][a-z0-9_-]{0,62}$"))] String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "rule id `{0}` is not valid: use 1 to 63 characters of `a-z`, `0-9`, `_` and `-`, starting with a letter or digit"
)]
pub struct RuleIdError(pub String);

impl RuleId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for RuleId {
    type Err = RuleIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 63
            && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
            && b.iter()
                .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(RuleIdError(s.to_owned()))
        }
    }
}

impl<'de> Deserialize<'de> for RuleId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_ids_are_stable_and_distinct() {
        let r = RegistryId(Uuid::from_u128(1));
        let a: RepositoryName = "nvidia/nim/llm".parse().unwrap();
        let b: RepositoryName = "nvidia/nim/embed".parse().unwrap();
        assert_eq!(ImageId::derive(r, &a), ImageId::derive(r, &a));
        assert_ne!(ImageId::derive(r, &a), ImageId::derive(r, &b));
        assert_ne!(
            ImageId::derive(r, &a),
            ImageId::derive(RegistryId(Uuid::from_u128(2)), &a)
        );
        assert_eq!(ImageId::derive(r, &a).0.get_version_num(), 5);
    }

    #[test]
    fn new_ids_are_v7() {
        assert_eq!(EventId::new().0.get_version_num(), 7);
        assert_eq!(
            EventId::for_fact("x"),
            EventId::for_fact("x"),
            "fact ids are deterministic"
        );
    }

    #[test]
    fn rule_ids() {
        assert!("nim-models".parse::<RuleId>().is_ok());
        assert!("0".parse::<RuleId>().is_ok());
        for bad in ["", "-x", "A", "a.b", "a b", &"a".repeat(64)] {
            assert!(bad.parse::<RuleId>().is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<RuleId>("\"Bad\"").is_err());
    }
}
