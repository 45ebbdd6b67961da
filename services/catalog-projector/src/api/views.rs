//! What the API answers with, and how rows become it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::value::RawValue;
use sqlx::Row;
use sqlx::postgres::PgRow;
use utoipa::ToSchema;
use uuid::Uuid;

pub use crate::projection::trust::TrustView;

/// One tag of one repository: a row of the Image Library.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImageView {
    pub registry_id: Uuid,
    /// The registry's label.
    pub registry: String,
    pub repository: String,
    pub tag: String,
    /// `<registry_id>/<repository>:<tag>`, as deployments name images.
    pub reference: String,
    pub digest: String,
    pub media_type: String,
    pub artifact_type: Option<String>,
    /// `database`, `model` or `other`.
    pub kind: String,
    /// For models: `text-completion`, `text-embedding`, `image-embedding`, `ocr`, `reranker`.
    pub model_type: Option<String>,
    pub architectures: Vec<String>,
    #[schema(value_type = Vec<Object>)]
    pub platforms: Box<RawValue>,
    /// Bytes: manifest, config and layers (of every platform for an index).
    pub size: i64,
    pub created: Option<DateTime<Utc>>,
    /// When the tag was first seen at all.
    pub first_seen: DateTime<Utc>,
    /// When the tag was last seen at this digest.
    pub last_seen: DateTime<Utc>,
    /// When the tag started pointing at this digest.
    pub updated_at: DateTime<Utc>,
    /// When it stopped (only in `as_of` answers, for versions since replaced or removed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_to: Option<DateTime<Utc>>,
    #[schema(value_type = Object)]
    pub labels: Box<RawValue>,
    #[schema(value_type = Object)]
    pub annotations: Box<RawValue>,
    /// PostgreSQL extensions the image declares.
    #[schema(value_type = Vec<Object>)]
    pub extensions: Box<RawValue>,
    /// Signatures, SBOMs and attestations attached to it.
    #[schema(value_type = Vec<Object>)]
    pub referrers: Box<RawValue>,
    /// HM tags of the tag and of its repository.
    pub hm_tags: Vec<String>,
    /// `approved`, `rejected`, or absent when no decision applies to this digest.
    pub approval: Option<String>,
    pub approved: bool,
    pub description: String,
    /// Signatures, vulnerabilities, SBOMs and the policy verdict of its digest.
    pub trust: TrustView,
    /// The tag's latest mutation, when it was ever found moved although policy calls it
    /// immutable (`image.tag_mutated`); `null` otherwise. The repository detail lists every
    /// one on the tag (`mutations`).
    pub mutated: Option<MutationView>,
    /// Pulls counted under this tag (at every digest it pointed at), from registries that
    /// report pulls; 0 when none were counted.
    pub pulls: i64,
    /// The latest pull under this tag.
    pub last_pulled_at: Option<DateTime<Utc>>,
    /// Pulls of the current digest, under any tag or by digest.
    pub digest_pulls: i64,
    /// The latest pull of the current digest.
    pub digest_last_pulled_at: Option<DateTime<Utc>>,
}

/// A tag found at another digest although policy calls it immutable.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, ToSchema)]
pub struct MutationView {
    /// What the tag pointed at before.
    pub old_digest: String,
    /// What it was found pointing at.
    pub new_digest: String,
    /// `scan`, `webhook`, `deploy` or `sweep`.
    pub found_by: String,
    /// When the scanner saw the new digest under the tag (when it said).
    pub seen_at: Option<DateTime<Utc>>,
    /// When the mutation was recorded.
    pub at: DateTime<Utc>,
}

fn mutation_of(json: Option<String>) -> Option<MutationView> {
    json.and_then(|s| {
        serde_json::from_str(&s)
            .map_err(|e| tracing::warn!(error = %e, "stored mutation unreadable; shown as none"))
            .ok()
    })
}

/// The composed trust of a row; none recorded (or unreadable, logged) is the empty view.
fn trust_of(json: Option<String>) -> TrustView {
    match json {
        None => TrustView::default(),
        Some(s) => serde_json::from_str(&s).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "stored trust unreadable; shown as none");
            TrustView::default()
        }),
    }
}

fn raw(s: String) -> Result<Box<RawValue>, sqlx::Error> {
    RawValue::from_string(s).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

impl ImageView {
    /// From a row of [`crate::query::IMAGE_COLUMNS`].
    pub fn from_row(row: &PgRow) -> Result<(Self, Uuid), sqlx::Error> {
        let registry_id: Uuid = row.try_get(0)?;
        let repository: String = row.try_get(2)?;
        let tag: String = row.try_get(3)?;
        let mut hm_tags: Vec<String> = row.try_get(21)?;
        let repo_hm: Vec<String> = row.try_get(22)?;
        if !repo_hm.is_empty() {
            hm_tags.extend(repo_hm);
            hm_tags.sort();
            hm_tags.dedup();
        }
        let approval: Option<String> = row.try_get(23)?;
        let view = ImageView {
            reference: format!("{registry_id}/{repository}:{tag}"),
            registry_id,
            registry: row.try_get(1)?,
            repository,
            tag,
            digest: row.try_get(4)?,
            media_type: row.try_get(5)?,
            artifact_type: row.try_get(6)?,
            kind: row.try_get(7)?,
            model_type: row.try_get(8)?,
            architectures: row.try_get(9)?,
            platforms: raw(row.try_get(10)?)?,
            size: row.try_get(11)?,
            created: row.try_get(12)?,
            first_seen: row.try_get(13)?,
            last_seen: row.try_get(14)?,
            updated_at: row.try_get(15)?,
            valid_to: row.try_get(16)?,
            labels: raw(row.try_get(17)?)?,
            annotations: raw(row.try_get(18)?)?,
            extensions: raw(row.try_get(19)?)?,
            referrers: raw(row.try_get(20)?)?,
            hm_tags,
            approved: approval.as_deref() == Some("approved"),
            approval,
            description: row.try_get(24)?,
            trust: trust_of(row.try_get(26)?),
            mutated: mutation_of(row.try_get(27)?),
            pulls: row.try_get(28)?,
            last_pulled_at: row.try_get(29)?,
            digest_pulls: row.try_get(30)?,
            digest_last_pulled_at: row.try_get(31)?,
        };
        Ok((view, row.try_get(25)?))
    }
}

/// A page of images.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImagePage {
    pub items: Vec<ImageView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A curator's approval decision.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct ApprovalView {
    /// `approved` or `rejected`.
    pub decision: String,
    pub reason: String,
    pub by: Option<String>,
    pub at: DateTime<Utc>,
    /// For a tag: the digest decided on (a moved tag is no longer covered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// A repository in lists.
#[derive(Debug, Serialize, ToSchema)]
pub struct RepositoryView {
    pub registry_id: Uuid,
    pub registry: String,
    pub name: String,
    /// The kind of its most recently discovered tag.
    pub kind: String,
    pub model_type: Option<String>,
    pub description: String,
    /// From its rule and from curators.
    pub hm_tags: Vec<String>,
    pub tag_count: i32,
    pub database_tags: i32,
    pub model_tags: i32,
    pub first_seen: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The repository-level decision, if any.
    pub approval: Option<ApprovalView>,
}

impl RepositoryView {
    /// From a row of [`crate::query::REPOSITORY_COLUMNS`].
    pub fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        let decision: Option<String> = row.try_get(13)?;
        let approval = match decision {
            Some(decision) => Some(ApprovalView {
                decision,
                reason: row.try_get(14)?,
                by: row.try_get(15)?,
                at: row.try_get(16)?,
                digest: None,
            }),
            None => None,
        };
        Ok(RepositoryView {
            registry_id: row.try_get(1)?,
            registry: row.try_get(2)?,
            name: row.try_get(3)?,
            kind: row.try_get(4)?,
            model_type: row.try_get(5)?,
            description: row.try_get(6)?,
            hm_tags: row.try_get(7)?,
            tag_count: row.try_get(8)?,
            database_tags: row.try_get(9)?,
            model_tags: row.try_get(10)?,
            first_seen: row.try_get(11)?,
            updated_at: row.try_get(12)?,
            approval,
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RepositoryPage {
    pub items: Vec<RepositoryView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct ReadmeView {
    /// Markdown.
    pub readme: String,
    pub updated_by: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// A deployment using an image ("used by").
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct DeploymentView {
    pub deployment_id: Uuid,
    pub name: String,
    pub namespace: String,
    pub tag: String,
    pub digest: String,
    /// `inference_service` or `postgres_cluster`.
    pub workload: String,
    /// `gitops` or `kubernetes`.
    pub target: String,
    pub replicas: i32,
    /// `requested`, `rendered`, `applied` or `failed`.
    pub status: String,
    pub status_detail: Option<String>,
    pub revision: Option<String>,
    pub requested_by: Option<String>,
    pub requested_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The latest trust policy violation recorded on it (audited at deploy, or found
    /// while running).
    #[serde(default, deserialize_with = "unless_unreadable")]
    pub policy_violation: Option<PolicyViolationView>,
}

/// A value read back from the catalog's JSON, or `None` where it is not one (a record
/// written by an older version): one unreadable member does not hide the rest.
fn unless_unreadable<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let value = <serde_json::Value as serde::Deserialize>::deserialize(d)?;
    Ok(serde_json::from_value(value).ok())
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct PolicyViolationView {
    pub digest: String,
    /// `audited` (deployed under an audit policy) or `running` (found after deploy).
    pub stage: String,
    pub reasons: Vec<String>,
    #[schema(value_type = Vec<Object>)]
    pub findings: Vec<imagelib_events::model::PolicyFinding>,
    /// The rule whose policy was applied.
    pub rule: Option<String>,
    pub at: DateTime<Utc>,
}

/// The referrers of one digest of a repository (a tag's, or a platform manifest's).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DigestReferrers {
    pub digest: String,
    /// The tags pointing at it (for a platform manifest: at its index).
    pub tags: Vec<String>,
    /// `os/architecture[/variant]` for a platform manifest.
    pub platform: Option<String>,
    /// Signatures, SBOMs and attestations attached to it, as last listed.
    pub referrers: Vec<ReferrerView>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReferrerView {
    pub digest: String,
    /// `signature`, `sbom`, `attestation` or `other`.
    pub kind: String,
    pub artifact_type: Option<String>,
}

/// One tag in a repository's detail: the API description's shape of what
/// [`super::rows::TagRow`] writes (its image row's JSON, then the tag's own fields).
#[allow(dead_code)]
#[derive(Debug, Serialize, ToSchema)]
pub struct TagDetail {
    #[serde(flatten)]
    pub image: ImageView,
    /// The tag's own decision (the effective one is `approval`).
    pub tag_approval: Option<ApprovalView>,
    /// Every mutation of the tag, newest first (at most 100): each names the digest the
    /// tag pointed at before and the one it was found at.
    pub mutations: Vec<MutationView>,
    pub readme: Option<ReadmeView>,
    pub used_by: Vec<DeploymentView>,
}

/// A repository with its tags, README, HM tags and the deployments that use it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RepositoryDetail {
    #[serde(flatten)]
    pub repository: RepositoryView,
    pub rule_id: Option<String>,
    /// HM tags from the rule that governs the repository.
    pub rule_hm_tags: Vec<String>,
    /// HM tags curators put on the repository.
    pub curator_hm_tags: Vec<String>,
    pub readme: Option<ReadmeView>,
    #[schema(value_type = Vec<TagDetail>)]
    pub(crate) tags: Vec<super::rows::TagRow>,
    pub used_by: Vec<DeploymentView>,
    /// The referrers of each digest its tags point at (and of their platform manifests).
    #[schema(value_type = Vec<DigestReferrers>)]
    #[serde(serialize_with = "super::rows::listed_seq")]
    pub(crate) referrers: Vec<std::sync::Arc<super::rows::Listed>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deployment_reads_back_without_an_unreadable_violation() {
        let deployment = |violation: &str| {
            format!(
                r#"{{"deployment_id":"00000000-0000-0000-0000-000000000001","name":"d",
                "namespace":"ns","tag":"1","digest":"sha256:00","workload":"postgres_cluster",
                "target":"gitops","replicas":2,"status":"applied","status_detail":null,
                "revision":null,"requested_by":"ci",
                "requested_at":"2026-12-05T22:17:29.123456+00:00",
                "updated_at":"2026-12-05T22:17:30+00:00"{violation}}}"#
            )
        };
        let read = |json: String| serde_json::from_str::<DeploymentView>(&json).expect("a view");
        let ok = read(deployment(
            r#","policy_violation":{"digest":"sha256:00","stage":"audited","reasons":["unsigned"],
            "findings":[],"rule":null,"at":"2026-12-05T22:17:29+00:00"}"#,
        ));
        assert_eq!(ok.replicas, 2);
        assert_eq!(ok.requested_at.timestamp_subsec_micros(), 123_456);
        assert_eq!(ok.policy_violation.expect("a violation").stage, "audited");
        let unreadable = read(deployment(r#","policy_violation":{"stage":7}"#));
        assert!(unreadable.policy_violation.is_none());
        assert_eq!(unreadable.name, "d");
        assert!(
            read(deployment(r#","policy_violation":null"#))
                .policy_violation
                .is_none()
        );
        assert!(read(deployment("")).policy_violation.is_none());
    }
}
